// `npm start` end to end: the built start script on a temp data dir and free ports. Traffic must
// flow on every edge (frontend -> orders -> inventory (Python) -> pricing, orders -> pricing,
// pricing (SDK, no mesher) -> inventory, frontend -> quotes over gRPC) without a single error as
// the meshers count them, the curl bridge client must pass, and a Ctrl-C (SIGINT) must stop every
// child and exit 0.

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const repo = fileURLToPath(new URL("../../", import.meta.url));
const startScript = join(repo, "examples/dist/start.js");

interface Edge {
  caller: string;
  callee: string;
  requests: number;
  errors: number;
  errorRatio: number;
}

/** The edges each mesher must see, named by the mesher's service. */
const EXPECTED: Record<string, string[]> = {
  frontend: ["loadgen->frontend", "frontend->orders", "frontend->quotes"],
  orders: ["frontend->orders", "orders->inventory", "orders->pricing"],
  inventory: ["orders->inventory", "pricing->inventory", "inventory->pricing"],
  quotes: ["frontend->quotes"],
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function json<T>(url: string): Promise<T> {
  const r = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  return (await r.json()) as T;
}

let dir: string | undefined;
let start: ChildProcess | undefined;
const pids = new Set<number>();

afterAll(() => {
  // Only on failure is anything left: no process outlives the test.
  if (start?.exitCode === null) start.kill("SIGKILL");
  for (const pid of pids) if (alive(pid)) process.kill(pid, "SIGKILL");
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

describe("npm start", () => {
  it("runs every example with traffic on every edge and no errors, and stops everything on Ctrl-C", async () => {
    expect(existsSync(startScript), `${startScript} (build with npx tsc -b)`).toBe(true);
    dir = mkdtempSync(join(tmpdir(), "regmesh-start-"));
    const proc = spawn(process.execPath, [startScript], {
      cwd: repo,
      env: {
        ...process.env,
        REGMESH_DATA_DIR: dir,
        REGMESH_CLIENT_PORT: "0",
        REGMESH_EXAMPLES_PORT: "0",
        REGMESH_LOAD_RPS: "4",
        REGMESH_SUMMARY_MS: "2000",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    start = proc;
    let out = "";
    proc.stdout!.on("data", (c: Buffer) => {
      out += c.toString();
      const lines = out.slice(0, out.lastIndexOf("\n") + 1);
      for (const m of lines.matchAll(/: pid (\d+)|mesher pid (\d+)/g)) {
        pids.add(Number(m[1] ?? m[2]));
      }
    });
    proc.stderr!.on("data", (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));

    // Up: every service registered, the bridge client passed, the load running.
    const upBy = Date.now() + 60_000;
    while (!/Ctrl-C to stop/.test(out)) {
      if (proc.exitCode !== null) throw new Error(`start exited ${proc.exitCode}:\n${out}`);
      if (Date.now() > upBy) throw new Error(`not running after 60 s:\n${out}`);
      await sleep(200);
    }
    expect(out, out).toContain("[start] bridge curl client: ok");
    const admins = new Map<string, string>();
    for (const m of out.matchAll(/^\[start\]\s+(\w+)\s+mesher admin\s+(http:\/\/\S+)/gm))
      admins.set(m[1]!, m[2]!);
    expect([...admins.keys()].sort()).toEqual(Object.keys(EXPECTED).sort());
    const stats = /^\[start\]\s+pricing\s+stats\s+(http:\/\/\S+)/m.exec(out)?.[1];
    expect(stats, out).toBeDefined();
    expect(pids.size).toBe(10); // registry, pricing, 4 apps, 4 meshers

    // Traffic on every edge, as each mesher counts it: a few calls each, and no error at all.
    let seen = new Map<string, Map<string, Edge>>();
    const flowingBy = Date.now() + 20_000;
    for (;;) {
      seen = new Map();
      for (const [service, admin] of admins) {
        const edges = await json<Edge[]>(`${admin}/v1/topology`);
        seen.set(service, new Map(edges.map((e) => [`${e.caller}->${e.callee}`, e])));
      }
      const flowing = Object.entries(EXPECTED).every(([service, names]) =>
        names.every((n) => (seen.get(service)?.get(n)?.requests ?? 0) >= 5),
      );
      if (flowing) break;
      if (Date.now() > flowingBy) break; // the assertions below say which edge is missing
      await sleep(500);
    }
    for (const [service, names] of Object.entries(EXPECTED)) {
      for (const n of names) {
        const e = seen.get(service)?.get(n);
        expect(e?.requests ?? 0, `${service}'s mesher: ${n}\n${out}`).toBeGreaterThanOrEqual(5);
      }
      for (const [n, e] of seen.get(service)!) {
        expect({ edge: n, errors: e.errors, errorRatio: e.errorRatio }, `${service}'s mesher`).toEqual({
          edge: n,
          errors: 0,
          errorRatio: 0,
        });
      }
    }
    const pricing = await json<{ inventoryOk: number; inventoryFailed: number; registered: boolean }>(stats!);
    expect(pricing.registered).toBe(true);
    expect(pricing.inventoryOk).toBeGreaterThan(0);
    expect(pricing.inventoryFailed).toBe(0);
    // The summary line comes every REGMESH_SUMMARY_MS; the edges above may be seen before the first.
    const summaryBy = Date.now() + 10_000;
    while (!/traffic: \d+ checkouts/.test(out) && Date.now() < summaryBy) await sleep(200);
    expect(out).toMatch(/traffic: \d+ checkouts, \d+ ok, 0 failed/);

    // Ctrl-C: every child stopped, exit 0.
    proc.kill("SIGINT");
    const code = await Promise.race([exited, sleep(30_000).then(() => "still running")]);
    expect(code, out).toBe(0);
    const left = [...pids].filter(alive);
    expect(left, out).toEqual([]);
    expect(out).toContain("[start] stopped 10 processes");
  }, 90_000);
});
