export { type BreakerInfo, BreakerOpenError, type BreakerStateName, Breakers } from "./breakers.js";
export {
  type Attempt,
  defaultClassifier,
  Mesh,
  type MeshOptions,
  NoInstanceError,
  type NoPickReason,
  type OutcomeClassifier,
  type PickResult,
} from "./mesh.js";
export { sdkMetrics } from "./metrics.js";
export { type PolicyListener, type PolicyState, PolicyStore, type PolicyStoreOptions } from "./policies.js";
