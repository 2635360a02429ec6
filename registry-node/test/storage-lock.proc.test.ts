// Lives in test/ (not test/storage/): the vitest `proc` project only picks up test/*.proc.test.ts.
// Exclusive open across processes: a live holder gives a typed error; after kill -9 of the
// holder, the stale lock is recovered with a log line and the committed data is there.
// Runs the built engine (registry-node/dist) in the child: `npx tsc -b registry-node` first.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { NodeFileSystem } from "../src/io/index.js";
import { DB } from "../src/storage/index.js";
import { type Child, kill, start, waitFor } from "./storage/proc-helpers.js";

const dist = new URL("../dist/storage/index.js", import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), "regmesh-lock-"));
const children: Child[] = [];

afterAll(async () => {
  for (const c of children) await kill(c);
  rmSync(dir, { recursive: true, force: true });
});

describe("lock file", () => {
  it("a live holder is a typed error; a stale lock after kill -9 is recovered", async () => {
    expect(existsSync(dist), `build first: npx tsc -b registry-node (${dist})`).toBe(true);
    const path = join(dir, "db");
    const script = `
      import { DB } from ${JSON.stringify(dist)};
      const db = await DB.open(${JSON.stringify(path)});
      await db.update((tx) => tx.createBucket(new TextEncoder().encode("b")).put(new TextEncoder().encode("k"), new TextEncoder().encode("v")));
      console.log("ready");
      setInterval(() => {}, 1000);
    `;
    const child = start(process.execPath, ["--input-type=module", "-e", script]);
    children.push(child);
    await waitFor(() => child.output().includes("ready"), 20_000, `child ready (output: ${child.output()})`);
    const fs = new NodeFileSystem();
    await expect(DB.open(path, { fs, log: () => {} })).rejects.toThrow(
      expect.objectContaining({
        code: "STORAGE_ERR_LOCKED",
        message: expect.stringContaining(`pid ${child.proc.pid}`),
      }),
    );
    await kill(child, "SIGKILL");
    expect(existsSync(`${path}.lock`)).toBe(true);
    const logs: string[] = [];
    const db = await DB.open(path, { fs, log: (m) => logs.push(m) });
    expect(logs.join("\n")).toMatch(/stale lock/);
    expect(
      await db.view((tx) => tx.bucket(new TextEncoder().encode("b"))?.get(new TextEncoder().encode("k"))),
    ).toEqual(new TextEncoder().encode("v"));
    await db.close();
    expect(existsSync(`${path}.lock`)).toBe(false);
  });
});
