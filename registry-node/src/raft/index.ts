export * from "./assert.js";
export * from "./constants.js";
export { RaftLog } from "./log.js";
export { Inflights, Progress, ProgressState, ProgressTracker } from "./progress.js";
export { type DropReason, ProposalDroppedError, Raft, type RaftConfig, type StepResult } from "./raft.js";
export { type RandomSource, Xoshiro128 } from "./random.js";
export { RawNode, type Ready, type Status } from "./rawnode.js";
export * from "./storage.js";
export * from "./types.js";
