import { runCommand } from "@regmesh/testkit";
import { describe, expect, it } from "vitest";

const repoRoot = new URL("../../", import.meta.url).pathname;

describe("registry-node command", () => {
  it("npx registry-node --help answers with etcd's flag names", async () => {
    const r = await runCommand("npx", ["registry-node", "--help"], { cwd: repoRoot });
    expect(r.code).toBe(0);
    for (const flag of [
      "--name",
      "--data-dir",
      "--initial-cluster",
      "--heartbeat-interval",
      "--snapshot-count",
    ]) {
      expect(r.stdout).toContain(flag);
    }
  });

  it("a bad flag exits 2 with a message naming it", async () => {
    const r = await runCommand("npx", ["registry-node", "--election-timeout=10"], { cwd: repoRoot });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      "--election-timeout[10ms] should be at least as 5 times as --heartbeat-interval[100ms]",
    );
  });
});
