// Every bound and default of the HTTP/JSON-RPC bridge, in one place (STYLE.md §3). Units last.

/** Request bodies larger than this are refused with 413 before they are parsed. */
export const BODY_BYTES_MAX = 1024 * 1024;
/** After a 413, up to this much of the refused body is read and dropped before the connection is cut. */
export const BODY_DISCARD_BYTES_MAX = 16 * 1024 * 1024;
/** Registrations one bridge holds; one per app process that registers through it. */
export const REGISTRATIONS_MAX = 10_000;
/** TTL used when a registration does not give one (the SDK's default lease TTL). */
export const REGISTER_TTL_S_DEFAULT = 10;
/** Upper bound on a registration's TTL unless BridgeOptions.maxTtlS says otherwise. */
export const REGISTER_TTL_S_MAX_DEFAULT = 3_600;
/** Requests one JSON-RPC batch may carry. */
export const JSONRPC_BATCH_MAX = 100;
/**
 * resolve and pick wait at most this long for the discovery cache to reach the revision of the
 * bridge's own last write to the service (read-your-writes; ops.ts catchUp).
 */
export const CATCH_UP_MS_MAX = 2_000;
/** Time one heartbeat waits for the registry's LeaseKeepAlive answer. */
export const HEARTBEAT_TIMEOUT_MS = 5_000;
/** SSE: a comment line this often keeps proxies and idle timers from closing the stream. */
export const SSE_HEARTBEAT_INTERVAL_MS_DEFAULT = 15_000;
/**
 * SSE: bytes queued for one slow client before the bridge closes its stream. The client
 * reconnects with Last-Event-ID and resumes without a gap, so closing is safe; buffering
 * without a bound is not.
 */
export const SSE_BUFFER_BYTES_MAX = 4 * 1024 * 1024;
/** SSE streams one bridge serves at once. */
export const SSE_STREAMS_MAX = 1_000;
/** How often registrations past their expected expiry are checked against the registry. */
export const SWEEP_INTERVAL_MS = 30_000;
/** Registrations checked (one LeaseTimeToLive each) per sweep. */
export const SWEEP_CHECKS_MAX = 100;
