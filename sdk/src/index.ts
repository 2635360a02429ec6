// @regmesh/sdk public surface: the pure decision cores (core/: balancing, ejection, retry
// budget, rate limit, policy, routing), shared by the SDK shell, the mesher and users' tests;
// and the shells: etcd v3 client (KV, Txn, Lease keep-alive, multiplexed Watch, failover,
// auth), registration and discovery over the key layout, and the discovery cache on disk.
// Exports are sorted by path (Biome's organizeImports).
export * from "./cache/index.js";
export {
  BALANCER_KINDS,
  type BalancerKind,
  type BalancerState,
  createBalancer,
  type PickInput,
  pick,
  pickIndex,
} from "./core/balancer.js";
export { type IsExcluded, membersFingerprint } from "./core/balancers/common.js";
export { isPrime, maglevTableSize } from "./core/balancers/maglev.js";
export {
  createLoadTracker,
  forgetInstance,
  type InstanceLoad,
  type LoadTracker,
  onRequestEnd,
  onRequestStart,
  PEAK_EWMA_PENALTY,
  peakEwmaLoad,
} from "./core/balancers/p2c-peak-ewma.js";
export {
  createEjectionState,
  type EjectionConfig,
  type EjectionConfigInput,
  type EjectionEvent,
  type EjectionReason,
  type EjectionState,
  ejectedIds,
  ejectionConfig,
  isEjected,
  nextDeadlineMs,
  onOutcome,
  syncHosts,
  tick,
} from "./core/ejection.js";
export { invariant, type Result, SdkError, SdkErrorCode } from "./core/errors.js";
export { fmix32, hash32 } from "./core/hash.js";
export {
  checkInstance,
  checkName,
  decodeInstance,
  decodeInstanceEntry,
  encodeInstance,
  type Instance,
  type InstanceHealth,
  type InstanceMetadataJson,
  instanceKey,
  isReportedHealthy,
  joinHostPort,
  NAMING_OP_ADD,
  type NamingRecordJson,
  normalizePrefix,
  type ParsedKey,
  parseKey,
  policiesPrefix,
  policyKey,
  serviceInstancesPrefix,
  servicesPrefix,
  splitHostPort,
} from "./core/instance.js";
export * as limits from "./core/limits.js";
export {
  compileHeaderRegex,
  defaultPolicy,
  type HeaderMatch,
  type LoadBalancerPolicy,
  type OutlierDetectionPolicy,
  type PathMatch,
  type Policy,
  type PolicyError,
  type PolicyValidation,
  parsePolicy,
  pointerToPath,
  policyError,
  type RetryCondition,
  type RetryPolicy,
  type RouteMatch,
  type RouteRule,
  type SplitEntry,
  type Subset,
  validatePolicy,
} from "./core/policy.js";
export { POLICY_SCHEMA } from "./core/policy-schema.js";
export { isPanic } from "./core/protect.js";
export { type Rand, randInt, seededRand } from "./core/random.js";
export {
  type Acquire,
  availableTokens,
  createTokenBucket,
  type TokenBucket,
  tryAcquire,
} from "./core/rate-limit.js";
export {
  BREAKER_DEFAULTS,
  type BreakerOptions,
  breakerOptions,
  type CallOutcome,
  decideRetry,
  GRPC_RESOURCE_EXHAUSTED,
  GRPC_UNAVAILABLE,
  isRetriable,
  RETRY_ON_DEFAULT,
  type RetryDecision,
  rateLimitParams,
} from "./core/retry.js";
export {
  createRetryBudget,
  type RetryBudgetConfig,
  type RetryBudgetState,
  recordRequest,
  retryBalance,
  tryRetry,
} from "./core/retry-budget.js";
export {
  createRouterState,
  describeDecision,
  pruneBalancers,
  type RouteDecision,
  type RouteReason,
  type RouteRequest,
  type RouterState,
  type RouteSignals,
  route,
  type Skipped,
  type SkipReason,
} from "./core/route.js";
export * from "./etcd/index.js";
export * from "./integrations/index.js";
export * from "./mesh/index.js";
export * from "./registry/index.js";
export * from "./testing/index.js";
