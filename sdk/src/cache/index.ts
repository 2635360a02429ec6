export {
  type CachedService,
  type CacheSnapshot,
  decodeChecked,
  decodeSnapshot,
  encodeChecked,
  encodeSnapshot,
  loadSnapshot,
  loadSnapshotSync,
  saveSnapshot,
  saveSnapshotSync,
  writeFileAtomic,
  writeFileAtomicSync,
} from "./disk-cache.js";
