import { FaultFileSystem } from "./fault-fs.js";
import { NodeFileSystem } from "./node-fs.js";
import type { FileSystem } from "./types.js";

export {
  type CrashMode,
  FaultFileSystem,
  type FaultOptions,
  SECTOR_BYTES,
  SimulatedCrashError,
} from "./fault-fs.js";
export { MemFileSystem } from "./mem-fs.js";
export { NodeFileSystem } from "./node-fs.js";
export { Rng } from "./rng.js";
export { type FileHandle, type FileSystem, FsError, type OpenOptions } from "./types.js";

let defaultFs: FileSystem | undefined;

/**
 * The process's file system: the real disk, or, when REGMESH_FAULT_FS=1, a FaultFileSystem
 * over it, with a SIGUSR2 handler that drops every write not yet fsynced (tears them when
 * REGMESH_FAULT_TEAR=1, seeded by REGMESH_FAULT_SEED) and exits at once by SIGKILL. This is
 * how an end-to-end test simulates power loss: kill -9 alone leaves unsynced writes in the
 * OS page cache, where they survive.
 */
export function defaultFileSystem(env: NodeJS.ProcessEnv = process.env): FileSystem {
  if (defaultFs) return defaultFs;
  if (env.REGMESH_FAULT_FS === "1") {
    const fault = new FaultFileSystem(new NodeFileSystem(), { seed: Number(env.REGMESH_FAULT_SEED ?? 1) });
    const mode = env.REGMESH_FAULT_TEAR === "1" ? "tear" : "drop";
    process.on("SIGUSR2", () => {
      fault.crash(mode);
      process.kill(process.pid, "SIGKILL");
    });
    defaultFs = fault;
  } else {
    defaultFs = new NodeFileSystem();
  }
  return defaultFs;
}
