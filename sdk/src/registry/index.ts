export { chunkOps } from "./chunk.js";
export {
  Discovery,
  type DiscoveryOptions,
  type Drift,
  type ServiceListener,
  type ServiceSnapshot,
} from "./discovery.js";
export { type Listing, listPrefix } from "./list.js";
export {
  type InstanceUpdate,
  installSigtermHandler,
  type RegisterInput,
  Registrar,
  type RegistrarEvents,
  type RegistrarOptions,
} from "./registrar.js";
