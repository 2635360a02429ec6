import { runCommand } from "@regmesh/testkit";
import { describe, expect, it } from "vitest";

const repoRoot = new URL("../../", import.meta.url).pathname;

describe("mesher command", () => {
  it("npx mesher --help answers", async () => {
    const r = await runCommand("npx", ["mesher", "--help"], { cwd: repoRoot });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("mesher policy validate|apply|diff|rollback|history");
  });

  it("an unknown flag exits 2 naming it", async () => {
    const r = await runCommand("npx", ["mesher", "--frobnicate"], { cwd: repoRoot });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("unknown flag --frobnicate");
  });
});
