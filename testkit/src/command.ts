import { spawn } from "node:child_process";

export type CommandResult = { stdout: string; stderr: string; code: number; signal: NodeJS.Signals | null };

export type RunOptions = {
  stdin?: string;
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Killed (SIGKILL) after this long; the result then has code -1 (default 30 s). */
  timeoutMs?: number;
};

/** Runs a command to completion and captures its output and exit code (never throws for a non-zero exit). */
export function runCommand(command: string, args: string[], opts: RunOptions = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 30_000);
    child.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      resolve({
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
        code: code ?? -1,
        signal,
      });
    });
    child.stdin.on("error", () => {
      // The command may exit before reading its input; that is its answer, not ours to fail on.
    });
    child.stdin.end(opts.stdin ?? "");
  });
}

export type EtcdctlOptions = RunOptions & {
  /** host:port endpoints, as `Cluster.endpoints` gives them. */
  endpoints: string[];
};

/** Runs `etcdctl` (API v3) against the given endpoints. */
export function runEtcdctl(args: string[], opts: EtcdctlOptions): Promise<CommandResult> {
  return runCommand("etcdctl", [`--endpoints=${opts.endpoints.join(",")}`, ...args], {
    ...opts,
    env: { ETCDCTL_API: "3", ...opts.env },
  });
}
