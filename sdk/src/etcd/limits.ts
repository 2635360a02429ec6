// Every bound and default the SDK's etcd shell uses, in one place (STYLE.md §3).
// Units are last in the names. Numbers taken from etcd are cited.

/** etcd's --max-txn-ops default (embed.DefaultMaxTxnOps). */
export const TXN_OPS_MAX = 128;
/** etcd's --max-request-bytes default is 1.5 MiB; a Txn chunk stays below it with room for framing. */
export const REQUEST_BYTES_MAX = 1.5 * 1024 * 1024;
/** What one Txn chunk may carry in keys and values; the rest of REQUEST_BYTES_MAX is protobuf overhead. */
export const TXN_CHUNK_BYTES_MAX = 1024 * 1024;
/** gRPC's default receive limit (4 MiB); paged listings keep every response under it. */
export const GRPC_MESSAGE_BYTES_MAX = 4 * 1024 * 1024;

/** Keys per page in a paged listing; halved when a page is still too large for one message. */
export const LIST_PAGE_KEYS_DEFAULT = 500;
export const LIST_PAGE_KEYS_MIN = 1;
/** Pages one listing may take; a bound on memory and time, 100,000 pages x 500 keys is far past any service. */
export const LIST_PAGES_MAX = 100_000;

/** Deadline of one unary RPC attempt; a paused (SIGSTOP) member otherwise hangs a call forever. */
export const REQUEST_TIMEOUT_MS_DEFAULT = 5_000;
/** Total time a unary call may spend retrying over endpoints before it fails with SDK_ERR_UNAVAILABLE. */
export const RETRY_DEADLINE_MS_DEFAULT = 15_000;
/** Back-off between rounds over all endpoints, and between stream reconnects: exponential with jitter. */
export const BACKOFF_INITIAL_MS = 50;
export const BACKOFF_MAX_MS = 2_000;

/** Watch liveness: a progress request this often, and the stream is torn down when silent this long. */
export const WATCH_PROGRESS_INTERVAL_MS_DEFAULT = 5_000;
export const WATCH_IDLE_TIMEOUT_MS_DEFAULT = 15_000;
/** Watchers one client multiplexes on its stream. */
export const WATCHERS_MAX = 10_000;

/** Lease TTL bounds in seconds; etcd's minimum TTL is about 1.5 x election timeout, clamped by the server. */
export const LEASE_TTL_S_MIN = 1;
export const LEASE_TTL_S_DEFAULT = 10;
/** Keep-alive requests per TTL: etcd's clientv3 sends at TTL/3, so two may be lost before the lease is. */
export const KEEPALIVES_PER_TTL = 3;

/** Services the discovery cache holds without a listener (LRU over services). */
export const DISCOVERY_SERVICES_MAX_DEFAULT = 1_000;
/** Anti-entropy re-list period per watched service. */
export const ANTI_ENTROPY_INTERVAL_MS_DEFAULT = 5 * 60_000;
/** How long resolve() waits for a first listing before it falls back to the disk cache or fails. */
export const RESOLVE_TIMEOUT_MS_DEFAULT = 5_000;
/** Quiet time before the disk cache is rewritten after a change (coalesces bursts of events). */
export const DISK_CACHE_DEBOUNCE_MS_DEFAULT = 200;
/** A disk cache file larger than this is not read (a bound on memory at start). */
export const DISK_CACHE_BYTES_MAX = 256 * 1024 * 1024;

/** Registry groups (groups.ts): a probe of each group this often... */
export const GROUP_PROBE_INTERVAL_MS_DEFAULT = 1_000;
/** ...each endpoint given this long to answer (a group fails a probe when none answers in time)... */
export const GROUP_PROBE_TIMEOUT_MS_DEFAULT = 2_000;
/** ...and a primary answer slower than this counts as a bad probe. */
export const GROUP_LATENCY_MS_MAX_DEFAULT = 500;
/** Hysteresis: consecutive bad probes before leaving a group, good ones before returning to the primary. */
export const GROUP_BAD_PROBES_TO_SWITCH_DEFAULT = 3;
export const GROUP_GOOD_PROBES_TO_RETURN_DEFAULT = 5;
