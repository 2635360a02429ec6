// Lives in test/ (not test/storage/): the vitest `proc` project only picks up test/*.proc.test.ts.
// REGMESH_FAULT_FS=1 in a real process: SIGUSR2 drops every write that was not fsynced and
// kills the process at once, so what survives is exactly what was made durable (kill -9
// alone would leave unsynced writes in the OS page cache).
// Runs the built io layer (registry-node/dist) in the child: `npx tsc -b registry-node` first.
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type Child, kill, start, waitFor } from "./storage/proc-helpers.js";

const dist = new URL("../dist/io/index.js", import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), "regmesh-faultfs-"));
const children: Child[] = [];

afterAll(async () => {
  for (const c of children) await kill(c);
  rmSync(dir, { recursive: true, force: true });
});

describe("fault file system in a real process", () => {
  it("SIGUSR2 drops unsynced writes and exits; fsynced data survives", async () => {
    expect(existsSync(dist), `build first: npx tsc -b registry-node (${dist})`).toBe(true);
    const path = join(dir, "f");
    const script = `
      import { defaultFileSystem } from ${JSON.stringify(dist)};
      const fs = defaultFileSystem();
      const f = fs.open(${JSON.stringify(path)}, { create: true });
      f.write(new TextEncoder().encode("durable;"), 0);
      f.sync();
      f.write(new TextEncoder().encode("volatile"), 8);
      console.log("ready");
      setInterval(() => {}, 1000);
    `;
    const child = start(process.execPath, ["--input-type=module", "-e", script], {
      ...process.env,
      REGMESH_FAULT_FS: "1",
    });
    children.push(child);
    await waitFor(() => child.output().includes("ready"), 20_000, `child ready (output: ${child.output()})`);
    process.kill(child.proc.pid!, "SIGUSR2");
    await child.exited;
    expect(child.proc.signalCode).toBe("SIGKILL");
    expect(readFileSync(path, "utf8")).toBe("durable;");
  });
});
