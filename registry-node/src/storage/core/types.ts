// Typed ids (bbolt page.go `pgid`, tx.go `txid`). Both are numbers: see PGID_NO_FREELIST in
// constants.ts for why 2^53 is plenty. The brand keeps a page id from being passed where a
// transaction id is expected.
export type Pgid = number & { readonly __brand?: "Pgid" };
export type Txid = number & { readonly __brand?: "Txid" };

/**
 * Throws a plain Error: a broken invariant is a bug, not bad input. Messages with values
 * are passed as a function so the hot paths do not build strings that are never used.
 */
export function assert(cond: unknown, msg: string | (() => string)): asserts cond {
  if (!cond) throw new Error(`storage assertion failed: ${typeof msg === "string" ? msg : msg()}`);
}
