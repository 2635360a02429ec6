import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";

export type ExitStatus = { code: number | null; signal: NodeJS.Signals | null };

export type StartOptions = {
  /** Name used in log file names and error messages. */
  name: string;
  command: string;
  args: string[];
  /** The child's stdout and stderr both go to this file (kept after the test for inspection). */
  logPath: string;
  env?: Record<string, string | undefined>;
  cwd?: string;
};

// Every process the kit started and has not seen exit. On exit of the test process
// they are killed by pid, so a failing test never leaves servers behind.
const live = new Set<ManagedProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const p of live) p.killNow("SIGKILL");
  });
}

/** A child process started by the test kit: stoppable, killable and pausable by pid. */
export class ManagedProcess {
  readonly name: string;
  readonly logPath: string;
  readonly pid: number;
  /** Resolves when the process exits, however it exits. */
  readonly exited: Promise<ExitStatus>;
  private readonly child: ChildProcess;
  private status: ExitStatus | undefined;

  private constructor(opts: StartOptions) {
    this.name = opts.name;
    this.logPath = opts.logPath;
    const fd = openSync(opts.logPath, "a");
    try {
      this.child = spawn(opts.command, opts.args, {
        cwd: opts.cwd,
        env: { ...process.env, ...opts.env },
        stdio: ["ignore", fd, fd],
      });
    } finally {
      closeSync(fd);
    }
    if (this.child.pid === undefined) throw new Error(`${opts.name}: could not start ${opts.command}`);
    this.pid = this.child.pid;
    this.exited = new Promise((resolve) => {
      this.child.once("exit", (code, signal) => {
        this.status = { code, signal };
        live.delete(this);
        resolve(this.status);
      });
      this.child.once("error", () => {
        this.status ??= { code: -1, signal: null };
        live.delete(this);
        resolve(this.status);
      });
    });
  }

  static start(opts: StartOptions): ManagedProcess {
    installExitHook();
    const p = new ManagedProcess(opts);
    live.add(p);
    return p;
  }

  get running(): boolean {
    return this.status === undefined;
  }

  get exitStatus(): ExitStatus | undefined {
    return this.status;
  }

  /** Sends a signal without waiting. Does nothing once the process has exited. */
  killNow(signal: NodeJS.Signals): void {
    if (!this.running) return;
    try {
      process.kill(this.pid, signal);
    } catch {
      // Already gone between the check and the signal.
    }
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 5000): Promise<ExitStatus> {
    if (!this.running) return this.status!;
    this.killNow("SIGCONT"); // a paused process cannot handle SIGTERM
    this.killNow("SIGTERM");
    const timer = setTimeout(() => this.killNow("SIGKILL"), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** kill -9: no chance to flush or clean up. */
  async kill9(): Promise<ExitStatus> {
    this.killNow("SIGKILL");
    return this.exited;
  }

  pause(): void {
    this.killNow("SIGSTOP");
  }

  resume(): void {
    this.killNow("SIGCONT");
  }

  /** The last `lines` lines of the process's log, for error messages. */
  logTail(lines = 30): string {
    try {
      return readFileSync(this.logPath, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "(no log)";
    }
  }
}

/** Stops every process the kit started that is still running. */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop()));
}

/** Polls `probe` until it returns true, or throws after `timeoutMs` with `describe()` in the message. */
export async function waitFor(
  probe: () => Promise<boolean> | boolean,
  opts: { timeoutMs: number; intervalMs?: number; describe: () => string },
): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    let ok = false;
    try {
      ok = await probe();
    } catch {
      ok = false;
    }
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${opts.timeoutMs} ms: ${opts.describe()}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 50));
  }
}
