// Election and Lock services: the same gRPC calls (and JSON gateway calls) against a real
// etcd and against registry-node give equivalent results, including a crashed holder whose
// lease expires.

import { credentials, type ServiceError } from "@grpc/grpc-js";
import { etcdserverpb, v3electionpb, v3lockpb } from "@regmesh/proto";
import { type Cluster, startCluster } from "@regmesh/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const kinds = ["etcd", "registry-node"] as const;
const clusters = new Map<string, Cluster>();

beforeAll(async () => {
  await Promise.all(kinds.map(async (k) => clusters.set(k, await startCluster({ kind: k }))));
});
afterAll(async () => {
  await Promise.all([...clusters.values()].map((c) => c.stop({ remove: true })));
});

function call<Req, Res>(client: object, method: string, req: Req): Promise<Res> {
  return new Promise((resolve, reject) => {
    // biome-ignore lint/suspicious/noExplicitAny: grpc-js client methods are looked up by name
    (client as any)[method](req, (err: ServiceError | null, res: Res) => (err ? reject(err) : resolve(res)));
  });
}

function clients(c: Cluster) {
  const ep = c.endpoints[0]!;
  const creds = credentials.createInsecure();
  return {
    lease: new etcdserverpb.LeaseClient(ep, creds),
    kv: new etcdserverpb.KVClient(ep, creds),
    lock: new v3lockpb.LockClient(ep, creds),
    election: new v3electionpb.ElectionClient(ep, creds),
  };
}

const grant = async (c: ReturnType<typeof clients>, ttl: number) =>
  (
    await call<etcdserverpb.LeaseGrantRequest, etcdserverpb.LeaseGrantResponse>(c.lease, "leaseGrant", {
      TTL: BigInt(ttl),
      ID: 0n,
    })
  ).ID;

describe.each(kinds)("Lock and Election services on %s", (kind) => {
  it("Lock: the first caller holds; a second waits until Unlock; keys are <name>/<lease hex>", async () => {
    const c = clients(clusters.get(kind)!);
    const l1 = await grant(c, 30);
    const l2 = await grant(c, 30);
    const a = await call<v3lockpb.LockRequest, v3lockpb.LockResponse>(c.lock, "lock", {
      name: Buffer.from("lk"),
      lease: l1,
    });
    expect(a.key.toString()).toBe(`lk/${l1.toString(16)}`);
    let bDone = false;
    const b = call<v3lockpb.LockRequest, v3lockpb.LockResponse>(c.lock, "lock", {
      name: Buffer.from("lk"),
      lease: l2,
    }).then((r) => {
      bDone = true;
      return r;
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(bDone).toBe(false);
    await call(c.lock, "unlock", { key: a.key });
    const rb = await b;
    expect(rb.key.toString()).toBe(`lk/${l2.toString(16)}`);
    await call(c.lock, "unlock", { key: rb.key });
  });

  it("Lock: a crashed holder (lease not kept alive) releases within its TTL", async () => {
    const c = clients(clusters.get(kind)!);
    const dead = await grant(c, 2);
    const live = await grant(c, 30);
    await call(c.lock, "lock", { name: Buffer.from("crash"), lease: dead });
    const t0 = Date.now();
    const r = await call<v3lockpb.LockRequest, v3lockpb.LockResponse>(c.lock, "lock", {
      name: Buffer.from("crash"),
      lease: live,
    });
    const waitedMs = Date.now() - t0;
    expect(r.key.toString()).toBe(`crash/${live.toString(16)}`);
    expect(waitedMs).toBeLessThan(2000 + 1500);
  });

  it("Election: campaign, leader, proclaim, observe-free leader changes, resign", async () => {
    const c = clients(clusters.get(kind)!);
    const l1 = await grant(c, 30);
    const l2 = await grant(c, 30);
    const name = Buffer.from("el");
    const c1 = await call<v3electionpb.CampaignRequest, v3electionpb.CampaignResponse>(
      c.election,
      "campaign",
      {
        name,
        lease: l1,
        value: Buffer.from("one"),
      },
    );
    expect(c1.leader!.key.toString()).toBe(`el/${l1.toString(16)}`);
    const leader = await call<v3electionpb.LeaderRequest, v3electionpb.LeaderResponse>(c.election, "leader", {
      name,
    });
    expect(leader.kv!.value.toString()).toBe("one");
    await call(c.election, "proclaim", { leader: c1.leader, value: Buffer.from("uno") });
    expect(
      (
        await call<v3electionpb.LeaderRequest, v3electionpb.LeaderResponse>(c.election, "leader", { name })
      ).kv!.value.toString(),
    ).toBe("uno");
    const second = call<v3electionpb.CampaignRequest, v3electionpb.CampaignResponse>(c.election, "campaign", {
      name,
      lease: l2,
      value: Buffer.from("two"),
    });
    await new Promise((r) => setTimeout(r, 200));
    await call(c.election, "resign", { leader: c1.leader });
    const c2 = await second;
    expect(c2.leader!.lease).toBe(l2);
    expect(
      (
        await call<v3electionpb.LeaderRequest, v3electionpb.LeaderResponse>(c.election, "leader", { name })
      ).kv!.value.toString(),
    ).toBe("two");
    // Proclaiming with the resigned leader key is refused.
    await expect(
      call(c.election, "proclaim", { leader: c1.leader, value: Buffer.from("x") }),
    ).rejects.toThrow("election: not leader");
    await call(c.election, "resign", { leader: c2.leader });
    await expect(call(c.election, "leader", { name })).rejects.toThrow("election: no leader");
  });

  it("the JSON gateway serves /v3/lock/lock and /v3/lock/unlock", async () => {
    const cluster = clusters.get(kind)!;
    const c = clients(cluster);
    const l = await grant(c, 30);
    const base = cluster.clientUrls[0]!;
    const r = await fetch(`${base}/v3/lock/lock`, {
      method: "POST",
      body: JSON.stringify({ name: Buffer.from("gwlock").toString("base64"), lease: l.toString() }),
    });
    const body = (await r.json()) as { key: string };
    expect(Buffer.from(body.key, "base64").toString()).toBe(`gwlock/${l.toString(16)}`);
    const u = await fetch(`${base}/v3/lock/unlock`, {
      method: "POST",
      body: JSON.stringify({ key: body.key }),
    });
    expect(u.status).toBe(200);
  });
});
