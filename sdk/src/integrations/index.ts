// Client-library integrations, both routing through a Mesh (policy, balancer, breakers,
// ejection, outcomes fed back):
//
//   installRegistryResolver(mesh);                        // grpc-js: resolver + "regmesh" LB policy
//   const orders = new OrdersClient(registryTarget("orders"), credentials.createInsecure());
//
//   const dispatcher = createMeshDispatcher(mesh);        // undici: request(), fetch(), ...
//   await request("http://orders/v1/orders/42", { dispatcher });
export {
  installRegistryResolver,
  methodConfigOf,
  REGISTRY_SCHEME,
  REGMESH_LB_POLICY,
  type RegistryResolverOptions,
  registryTarget,
} from "./grpc.js";
export {
  createMeshDispatcher,
  MeshDispatchErrorCode,
  type MeshDispatcherOptions,
  MeshNoInstanceError,
  MeshTimeoutError,
  meshInterceptor,
  outcomeOfUndiciError,
  serviceOfOrigin,
} from "./undici.js";
