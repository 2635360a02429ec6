// The version registry-node reports in /version, Status and --version. The etcd API
// version we implement is 3.4: clients such as etcdctl gate features on `etcdcluster`.
export const registryNodeVersion = "0.1.0";
export const etcdClusterVersion = "3.4.0";
export const etcdServerVersion = "3.4.23";
