export {
  type CachedService,
  type CacheSnapshot,
  decodeSnapshot,
  encodeSnapshot,
  loadSnapshot,
  loadSnapshotSync,
  saveSnapshot,
  saveSnapshotSync,
} from "./disk-cache.js";
