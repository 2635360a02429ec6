// Test helpers for users of the SDK: a mock registry (an in-process etcd v3 server) to run
// EtcdClient, Registrar and Discovery against in unit tests, with lease expiry on a clock the test
// drives. Also importable on its own as `@regmesh/sdk/testing/index`.
export { type MockLeaseInfo, MockRegistry, type MockRegistryOptions } from "./mock-registry.js";
export { MockEtcdError, MockStore } from "./mock-store.js";
