// The protect threshold (Nacos) / panic threshold (Envoy, healthy_panic_threshold): when the
// share of available instances (reported healthy, not ejected, breaker closed) falls below the
// threshold, the router stops excluding anything and spreads load over every instance. The
// reasoning: if most of a service looks down, the detectors are as likely wrong as the
// instances, and concentrating all traffic on the few survivors would take them down too.
// Envoy's default is 50 %; a threshold of 0 disables it (then an all-excluded set yields no
// instance at all).

import { invariant } from "./errors.js";

export function isPanic(total: number, available: number, threshold: number): boolean {
  invariant(available >= 0 && available <= total, "available must be in 0..total");
  invariant(threshold >= 0 && threshold <= 1, "threshold must be in 0..1");
  if (total === 0 || threshold === 0) return false;
  return available / total < threshold;
}
