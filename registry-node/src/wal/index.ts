// The Raft write-ahead log and snapshot metadata files (etcd's wal and snap packages).
export * from "./constants.js";
export { assert as walAssert, WalError, WalErrorCode } from "./errors.js";
export {
  loadIntoStorage,
  RaftDiskStorage,
  type RaftLogPaths,
  type RaftLogTarget,
  type RestoredRaftLog,
  restoreRaftLog,
} from "./raft-log-store.js";
export { RecordType, type SnapshotMarker } from "./record.js";
export { decodeSnapFile, encodeSnapFile, Snapshotter, snapName } from "./snapshotter.js";
export { listSegments, type ReadAllResult, type TailRepair, Wal, type WalOptions } from "./wal.js";
