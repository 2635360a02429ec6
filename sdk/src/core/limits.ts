// Every bound the SDK's decision cores enforce, in one place (STYLE.md §3, after TigerBeetle's
// constants file). A limit that is not written down is a limit nobody chose. The JSON Schema in
// sdk/schema/policy.schema.json repeats the policy-related numbers; a test checks that they agree.

/** Instances one service (one route() call) may hold; the registry can hold more services. */
export const INSTANCES_PER_SERVICE_MAX = 100_000;
/** Service names and instance ids: bytes of UTF-16 code units, no "/" (it separates key parts). */
export const SERVICE_NAME_LENGTH_MAX = 128;
export const INSTANCE_ID_LENGTH_MAX = 128;
/** An etcd value holding one instance record; etcd's own default request limit is 1.5 MiB. */
export const INSTANCE_VALUE_BYTES_MAX = 16 * 1024;
export const INSTANCE_TAGS_MAX = 32;
export const INSTANCE_METADATA_ENTRIES_MAX = 64;
export const INSTANCE_WEIGHT_DEFAULT = 100;
/** Weights are integers so that smooth WRR is exact and periodic (nginx uses integers too). */
export const INSTANCE_WEIGHT_MAX = 10_000;

/** Policy value, as stored at <prefix>/policies/<service>. */
export const POLICY_BYTES_MAX = 256 * 1024;
export const POLICY_ROUTES_MAX = 64;
export const POLICY_SUBSETS_MAX = 32;
export const POLICY_SPLITS_PER_ROUTE_MAX = 8;
export const POLICY_HEADER_MATCHES_PER_ROUTE_MAX = 16;
export const POLICY_CALLERS_MAX = 256;
export const POLICY_NAME_LENGTH_MAX = 64;
export const POLICY_STRING_LENGTH_MAX = 1024;
/** Regex source length cap: JS regexes backtrack, so a short source is the cheap half of the defence. */
export const POLICY_REGEX_LENGTH_MAX = 256;
/**
 * Header values longer than this are not matched against regexes (a non-match): it bounds the
 * polynomial backtracking that survives policy.ts regexProblem (e.g. `.*.*x`) per request.
 */
export const HEADER_VALUE_MATCH_LENGTH_MAX = 2 * 1024;
export const POLICY_RETRY_ATTEMPTS_MAX = 10;
export const POLICY_TIMEOUT_MS_MAX = 10 * 60 * 1000;

/** Ring hash points in total (Envoy's max_ring_size is 8M; ours bounds memory at 12 MiB). */
export const RING_SIZE_MAX = 1 << 20;
/** Points of the lightest member; heavier members get proportionally more. */
export const RING_VNODES_PER_INSTANCE = 160;
/** Ring positions probed clockwise past excluded instances before a bounded linear fallback. */
export const HASH_PROBES_MAX = 64;

/** Maglev: the paper and Envoy use the prime 65537; M should stay well above the instance count. */
export const MAGLEV_TABLE_SIZE_DEFAULT = 65_537;
export const MAGLEV_TABLE_SIZE_MAX = 2_000_003;
export const MAGLEV_ENTRIES_PER_INSTANCE_MIN = 20;

/** Smooth WRR groups instances by weight; above this many distinct weights it uses EDF instead. */
export const SWRR_DISTINCT_WEIGHTS_MAX = 64;

/** Random and P2C re-draw this many times when they land on an excluded instance. */
export const RANDOM_REDRAWS_MAX = 8;

/** Peak EWMA decay time (Finagle's default, 10 s). */
export const PEAK_EWMA_DECAY_MS_DEFAULT = 10_000;

/** Outlier detection defaults: Envoy's outlier_detection.proto. */
export const EJECTION_CONSECUTIVE_FAILURES_DEFAULT = 5;
export const EJECTION_INTERVAL_MS_DEFAULT = 10_000;
export const EJECTION_BASE_TIME_MS_DEFAULT = 30_000;
export const EJECTION_MAX_TIME_MS_DEFAULT = 300_000;
export const EJECTION_MAX_PERCENT_DEFAULT = 10;
export const EJECTION_SUCCESS_RATE_MIN_HOSTS_DEFAULT = 5;
export const EJECTION_SUCCESS_RATE_REQUEST_VOLUME_DEFAULT = 100;
export const EJECTION_SUCCESS_RATE_STDEV_FACTOR_DEFAULT = 1.9;
export const EJECTION_FAILURE_PERCENT_THRESHOLD_DEFAULT = 85;
export const EJECTION_FAILURE_PERCENT_MIN_HOSTS_DEFAULT = 5;
export const EJECTION_FAILURE_PERCENT_REQUEST_VOLUME_DEFAULT = 50;
/** Hosts the ejection core tracks; one per instance of the service. */
export const EJECTION_HOSTS_MAX = INSTANCES_PER_SERVICE_MAX;

/** Retry budget defaults: Finagle's RetryBudget (ttl 10 s, 10 retries/s minimum, 20 %). */
export const RETRY_BUDGET_WINDOW_MS_DEFAULT = 10_000;
export const RETRY_BUDGET_BUCKETS = 10;
export const RETRY_BUDGET_RATIO_DEFAULT = 0.2;
export const RETRY_BUDGET_MIN_PER_SECOND_DEFAULT = 10;

export const RATE_LIMIT_PER_SECOND_MAX = 1_000_000;

/** Protect (panic) threshold: Envoy's healthy_panic_threshold defaults to 50 %. */
export const PROTECT_THRESHOLD_DEFAULT = 0.5;
/** Zone-aware routing: the local zone is used while this share of it is available. */
export const ZONE_MIN_HEALTHY_FRACTION_DEFAULT = 0.7;

/** The explain output lists at most this many skipped instances (it also gives the total). */
export const EXPLAIN_SKIPPED_MAX = 100;
