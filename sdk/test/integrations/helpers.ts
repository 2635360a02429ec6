// Shared set-up for the integration tests: a Mesh on a real registry (Registrar + Discovery +
// PolicyStore + Mesh, as in mesh.proc.test.ts), each test under its own key prefix.
import type { Cluster } from "@regmesh/testkit";
import { seededRand } from "../../src/core/random.js";
import { EtcdClient } from "../../src/etcd/client.js";
import { systemClock } from "../../src/etcd/clock.js";
import { silentLogger } from "../../src/etcd/logger.js";
import { Mesh } from "../../src/mesh/mesh.js";
import { PolicyStore } from "../../src/mesh/policies.js";
import { Discovery } from "../../src/registry/discovery.js";
import { Registrar } from "../../src/registry/registrar.js";

let prefixSeq = 0;

export interface MeshSetup {
  prefix: string;
  client: EtcdClient;
  registrar: Registrar;
  discovery: Discovery;
  policies: PolicyStore;
  mesh: Mesh;
}

/** Builds the stack under a fresh prefix; pushes its closers (run in reverse) onto `closers`. */
export function meshSetup(cluster: Cluster, closers: (() => unknown)[], tag: string): MeshSetup {
  const prefix = `/${tag}${++prefixSeq}`;
  const client = new EtcdClient({ endpoints: cluster.endpoints, requestTimeoutMs: 2_000 });
  const registrar = new Registrar({ client, prefix, ttlS: 10 });
  const discovery = new Discovery({ client, prefix });
  const policies = new PolicyStore({ client, prefix });
  const mesh = new Mesh({
    discovery,
    policies,
    clock: systemClock,
    logger: silentLogger,
    rand: seededRand(prefixSeq),
  });
  closers.push(
    () => client.close(),
    () => registrar.close(),
    () => discovery.close(),
    () => policies.close(),
    () => mesh.close(),
  );
  return { prefix, client, registrar, discovery, policies, mesh };
}

export function tally(names: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const n of names) out[n] = (out[n] ?? 0) + 1;
  return out;
}
