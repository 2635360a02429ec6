// `mesher --embedded-registry`: a one-member registry-node as a child process, for local
// development; other meshers use it as their registry; it stops with the mesher.
import { afterAll, describe, expect, it } from "vitest";
import { call, startApp, startMesher, until, waitLine, workDir } from "./helpers.js";

const dir = workDir();
const stops: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const s of stops.reverse()) await s();
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("mesher --embedded-registry", () => {
  it("runs registry-node as a child, serves other meshers, and stops it on SIGTERM", async () => {
    const app = await startApp("emb", dir.path);
    stops.push(() => app.proc.stop());
    const m = await startMesher("emb", dir.path, [
      "--embedded-registry",
      "--service=demo",
      "--instance-id=emb-1",
      `--app-port=${app.port}`,
      "--health-check=tcp",
    ]);
    stops.push(() => m.proc.stop());
    const reg = await waitLine(m.proc.logPath, (o) =>
      o.msg === "embedded registry started" ? (o as unknown as { pid: number; endpoint: string }) : undefined,
    );
    expect(alive(reg.pid)).toBe(true);
    const caller = await startMesher("emb-caller", dir.path, [`--registry-endpoints=http://${reg.endpoint}`]);
    stops.push(() => caller.proc.stop());
    await until(
      async () => (await call(caller.ports.outbound, { host: "demo" })).json?.name === "emb",
      20_000,
      "demo via the embedded registry",
    );
    await caller.proc.stop();
    const exit = await m.proc.stop(15_000);
    expect(exit.code).toBe(0);
    await until(() => !alive(reg.pid), 5_000, "embedded registry gone");
  });
});
