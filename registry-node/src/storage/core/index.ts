export { Bucket } from "./bucket.js";
export { type CheckResult, type CheckStats, checkSnapshot } from "./check.js";
export * from "./constants.js";
export { Cursor, type Entry } from "./cursor.js";
export * from "./errors.js";
export { Freelist } from "./freelist.js";
export {
  copyMeta,
  decodeMeta,
  encodeMeta,
  fnv64a,
  isValidPageSize,
  type Meta,
  newMeta,
  validateMeta,
} from "./meta.js";
export { Node } from "./node.js";
export * as page from "./page.js";
export { type CommitPlan, Tx, type TxHost } from "./tx.js";
export { assert, type Pgid, type Txid } from "./types.js";
