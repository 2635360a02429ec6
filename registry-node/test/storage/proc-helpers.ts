// Helpers of the storage process tests: free loopback ports and child processes killed by pid.
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";

/** A free loopback port, never etcd's 2379/2380. */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = createServer();
      s.once("error", reject);
      s.listen({ host: "127.0.0.1", port: 0 }, () => {
        const a = s.address();
        const p = typeof a === "object" && a ? a.port : 0;
        s.close(() => resolve(p));
      });
    });
    if (port !== 2379 && port !== 2380) return port;
  }
}

export type Child = { proc: ChildProcess; output: () => string; exited: Promise<number | null> };

export function start(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Child {
  const proc = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: env ?? process.env });
  let out = "";
  proc.stdout!.on("data", (d) => (out += d));
  proc.stderr!.on("data", (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => proc.on("exit", (code) => resolve(code)));
  return { proc, output: () => out, exited };
}

/** Waits until `cond` holds, polling, for at most `ms`. */
export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  ms: number,
  what: string,
): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

/** Kills a child we started, by its pid, and waits for it to exit. */
export async function kill(c: Child, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
  if (c.proc.exitCode !== null || c.proc.signalCode !== null) return;
  process.kill(c.proc.pid!, signal);
  await c.exited;
}
