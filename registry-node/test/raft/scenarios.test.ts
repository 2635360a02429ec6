// Runs every testdata/*.txt scenario (REGMESH_REWRITE=1 rewrites the expectations).

import { readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { runDataDriven } from "./datadriven.js";
import { Env } from "./harness.js";

const dir = join(import.meta.dirname, "testdata");

describe("raft scenarios (testdata)", () => {
  for (const file of readdirSync(dir)
    .filter((f) => f.endsWith(".txt"))
    .sort()) {
    test(file.replace(/\.txt$/, "").replace(/_/g, " "), () => {
      const env = new Env();
      const failures = runDataDriven(join(dir, file), (c) => env.handle(c));
      const report = failures
        .map((f) => `${f.pos}:\n${f.commands}\n--- expected\n${f.expected}\n--- actual\n${f.actual}`)
        .join("\n\n");
      expect(report).toBe("");
    });
  }
});
