// Invariant checks for the core (TigerBeetle style): a failed assertion means a bug in
// this code, never a bad input from the network, so it throws rather than returning.

export class RaftAssertionError extends Error {
  override name = "RaftAssertionError";
}

export function assert(condition: boolean, message: string | (() => string)): asserts condition {
  if (!condition) throw new RaftAssertionError(typeof message === "string" ? message : message());
}
