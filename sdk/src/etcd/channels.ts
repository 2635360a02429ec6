// Observability goes out through named diagnostics_channel channels (STYLE.md §4): subscribers
// (metrics, tracing, tests) never touch the client. Publishing is cheap when nobody listens.

import diagnostics from "node:diagnostics_channel";

export const channels = {
  /** { endpoint, attempt, delayMs, reason }: the watch stream broke and is being re-opened. */
  watchReconnect: diagnostics.channel("sdk:watch:reconnect"),
  /** { watcherId, compactRevision }: a watcher's resume revision was compacted; it must re-list. */
  watchCompacted: diagnostics.channel("sdk:watch:compacted"),
  /** { leaseId, reason, atMs }: a lease was declared lost. */
  leaseLost: diagnostics.channel("sdk:lease:lost"),
  /** { leaseId, ttlS }: a lease was granted. */
  leaseGranted: diagnostics.channel("sdk:lease:granted"),
  /** { from, to, reason }: the client moved to another endpoint. */
  endpoint: diagnostics.channel("sdk:registry:endpoint"),
  /** { from, to, reason }: the client moved to the other registry group (primary or standby). */
  group: diagnostics.channel("sdk:registry:group"),
  /** { leaseId, instances }: every instance was written again under a new lease. */
  reregistered: diagnostics.channel("sdk:registry:reregistered"),
  /** { service, added, removed, changed }: anti-entropy found the cache differed from the registry. */
  drift: diagnostics.channel("sdk:discovery:drift"),
  /** { service, stale }: a service's cached set became stale or fresh. */
  stale: diagnostics.channel("sdk:discovery:stale"),
  /** { path, reason }: a disk cache file was rejected. */
  cacheRejected: diagnostics.channel("sdk:cache:rejected"),
  /** { service, modRevision }: a service's policy was read, validated and put in force. */
  policyApplied: diagnostics.channel("sdk:policy:applied"),
  /** { service, modRevision, errors }: a policy failed validation; the last good one stays. */
  policyRejected: diagnostics.channel("sdk:policy:rejected"),
  /** { service, instanceId, reason, ejected }: outlier ejection ejected or returned a host. */
  ejection: diagnostics.channel("sdk:mesh:ejection"),
  /** { service, instanceId, state }: an instance's breaker opened, half-opened or closed. */
  breaker: diagnostics.channel("sdk:mesh:breaker"),
  /** { service, added, removed }: a routed service's instance set changed. */
  instances: diagnostics.channel("sdk:mesh:instances"),
} as const;

export function publish(ch: diagnostics.Channel, message: unknown): void {
  if (ch.hasSubscribers) ch.publish(message);
}
