// Round trips between our generated code and a real etcd 3.4: what our
// grpc-js clients write, etcdctl reads, and the other way round; and what
// our toJSON/fromJSON produce, etcd's JSON gateway accepts and answers with.
import { type ClientDuplexStream, credentials, type ServiceError, status } from "@grpc/grpc-js";
import { type Cluster, runEtcdctl, startEtcd } from "@regmesh/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { etcdserverpb, health, withProtoFieldNames } from "../src/index.js";

const {
  ClusterClient,
  Compare_CompareResult,
  Compare_CompareTarget,
  KVClient,
  LeaseClient,
  MaintenanceClient,
  WatchClient,
} = etcdserverpb;

const watchEventTimeoutMs = 10_000;

function call<Res>(start: (cb: (err: ServiceError | null, res: Res) => void) => unknown): Promise<Res> {
  return new Promise((resolve, reject) => {
    start((err, res) => (err ? reject(err) : resolve(res)));
  });
}

/** etcdctl's own JSON output (numbers, not strings; precision beyond 2^53 is lost by JSON.parse). */
type EtcdctlGet = {
  header: { revision: number };
  kvs?: {
    key: string;
    create_revision: number;
    mod_revision: number;
    version: number;
    value: string;
    lease?: number;
  }[];
};

let etcd: Cluster;
let kv: InstanceType<typeof KVClient>;
let lease: InstanceType<typeof LeaseClient>;
let maintenance: InstanceType<typeof MaintenanceClient>;
let cluster: InstanceType<typeof ClusterClient>;
let watch: InstanceType<typeof WatchClient>;
let healthClient: InstanceType<typeof health.HealthClient>;

const b = (s: string): Buffer => Buffer.from(s);

beforeAll(async () => {
  etcd = await startEtcd();
  const addr = etcd.endpoints[0] as string;
  const creds = credentials.createInsecure();
  kv = new KVClient(addr, creds);
  lease = new LeaseClient(addr, creds);
  maintenance = new MaintenanceClient(addr, creds);
  cluster = new ClusterClient(addr, creds);
  watch = new WatchClient(addr, creds);
  healthClient = new health.HealthClient(addr, creds);
});

afterAll(async () => {
  for (const c of [kv, lease, maintenance, cluster, watch, healthClient]) c?.close();
  await etcd?.stop({ remove: true });
});

function etcdctl(args: string[]) {
  return runEtcdctl(args, { endpoints: etcd.endpoints });
}

async function gateway(path: string, body: unknown): Promise<unknown> {
  const res = await fetch(`${etcd.clientUrls[0]}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const json: unknown = await res.json();
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status} ${JSON.stringify(json)}`);
  return json;
}

describe("gRPC round trips with etcdctl", () => {
  it("a Put through our KVClient is what etcdctl get shows", async () => {
    const res = await call<etcdserverpb.PutResponse>((cb) =>
      kv.put(
        {
          key: b("rt/put"),
          value: b("héllo"),
          lease: 0n,
          prevKv: false,
          ignoreValue: false,
          ignoreLease: false,
        },
        cb,
      ),
    );
    expect(res.header?.revision).toBeGreaterThan(1n);
    const out = await etcdctl(["get", "rt/put", "-w", "json"]);
    expect(out.code, out.stderr).toBe(0);
    const got = JSON.parse(out.stdout) as EtcdctlGet;
    expect(got.kvs).toHaveLength(1);
    const [first] = got.kvs ?? [];
    expect(Buffer.from(first?.key ?? "", "base64").toString()).toBe("rt/put");
    expect(Buffer.from(first?.value ?? "", "base64").toString()).toBe("héllo");
    expect(BigInt(first?.mod_revision ?? 0)).toBe(res.header?.revision);
  });

  it("etcdctl put, then our Range decodes revisions and version", async () => {
    for (const v of ["one", "two"]) {
      const out = await etcdctl(["put", "rt/ctl", v]);
      expect(out.code, out.stderr).toBe(0);
    }
    const ctl = JSON.parse((await etcdctl(["get", "rt/ctl", "-w", "json"])).stdout) as EtcdctlGet;
    const res = await call<etcdserverpb.RangeResponse>((cb) =>
      kv.range(etcdserverpb.RangeRequest.create({ key: b("rt/ctl") }), cb),
    );
    expect(res.count).toBe(1n);
    expect(res.more).toBe(false);
    const [got] = res.kvs;
    const [want] = ctl.kvs ?? [];
    expect(got?.key.toString()).toBe("rt/ctl");
    expect(got?.value.toString()).toBe("two");
    expect(got?.version).toBe(2n);
    expect(got?.createRevision).toBe(BigInt(want?.create_revision ?? -1));
    expect(got?.modRevision).toBe(BigInt(want?.mod_revision ?? -1));
    expect(got?.modRevision).toBe((got?.createRevision ?? 0n) + 1n);
    expect(res.header?.revision).toBe(BigInt(ctl.header.revision));
  });

  it("a Txn with compares and nested ops (including a nested Txn)", async () => {
    const key = b("rt/txn");
    const txn = etcdserverpb.TxnRequest.create({
      // The key does not exist yet: version == 0 (the oneof holds a default value on purpose).
      compare: [
        { result: Compare_CompareResult.EQUAL, target: Compare_CompareTarget.VERSION, key, version: 0n },
      ],
      success: [
        { requestPut: { key, value: b("first") } },
        { requestRange: { key } },
        {
          requestTxn: {
            compare: [
              {
                result: Compare_CompareResult.GREATER,
                target: Compare_CompareTarget.CREATE,
                key: b("rt/none"),
                createRevision: 0n,
              },
            ],
            success: [],
            failure: [{ requestPut: { key: b("rt/txn-nested"), value: b("n") } }],
          },
        },
      ],
      failure: [{ requestDeleteRange: { key } }],
    });
    const res = await call<etcdserverpb.TxnResponse>((cb) => kv.txn(txn, cb));
    expect(res.succeeded).toBe(true);
    expect(res.responses).toHaveLength(3);
    expect(res.responses[0]?.responsePut?.header).toBeDefined();
    expect(res.responses[1]?.responseRange?.kvs[0]?.value.toString()).toBe("first");
    expect(res.responses[2]?.responseTxn?.succeeded).toBe(false);
    expect(res.responses[2]?.responseTxn?.responses[0]?.responsePut).toBeDefined();
    const nested = JSON.parse((await etcdctl(["get", "rt/txn-nested", "-w", "json"])).stdout) as EtcdctlGet;
    expect(Buffer.from(nested.kvs?.[0]?.value ?? "", "base64").toString()).toBe("n");

    // The same Txn again: the compare now fails and the failure branch deletes the key.
    const again = await call<etcdserverpb.TxnResponse>((cb) => kv.txn(txn, cb));
    expect(again.succeeded).toBe(false);
    expect(again.responses[0]?.responseDeleteRange?.deleted).toBe(1n);
  });

  it("LeaseGrant ids above 2^53 survive (checked against etcdctl lease list)", async () => {
    // One id the server picks, one we pick that is certainly above 2^53.
    const chosen = 0x7abcdef012345678n;
    const picked = await call<etcdserverpb.LeaseGrantResponse>((cb) =>
      lease.leaseGrant({ TTL: 60n, ID: 0n }, cb),
    );
    const ours = await call<etcdserverpb.LeaseGrantResponse>((cb) =>
      lease.leaseGrant({ TTL: 60n, ID: chosen }, cb),
    );
    expect(ours.ID).toBe(chosen);
    expect(ours.TTL).toBe(60n);
    expect(picked.ID).toBeGreaterThan(0n);
    const out = await etcdctl(["lease", "list"]);
    expect(out.code, out.stderr).toBe(0);
    const listed = out.stdout
      .split("\n")
      .slice(1)
      .filter((l) => l.trim() !== "")
      .map((h) => BigInt(`0x${h.trim()}`));
    expect(listed).toContain(chosen);
    expect(listed).toContain(picked.ID);

    // A key attached to the lease shows the lease id through our Range too.
    await call((cb) =>
      kv.put(etcdserverpb.PutRequest.create({ key: b("rt/leased"), value: b("x"), lease: chosen }), cb),
    );
    const res = await call<etcdserverpb.RangeResponse>((cb) =>
      kv.range(etcdserverpb.RangeRequest.create({ key: b("rt/leased") }), cb),
    );
    expect(res.kvs[0]?.lease).toBe(chosen);

    const ttl = await call<etcdserverpb.LeaseTimeToLiveResponse>((cb) =>
      lease.leaseTimeToLive({ ID: chosen, keys: true }, cb),
    );
    expect(ttl.ID).toBe(chosen);
    expect(ttl.grantedTTL).toBe(60n);
    expect(ttl.keys.map((k) => k.toString())).toEqual(["rt/leased"]);
    await call((cb) => lease.leaseRevoke({ ID: chosen }, cb));
    await call((cb) => lease.leaseRevoke({ ID: picked.ID }, cb));
  });

  it("a Watch stream receives a created response, then the put event", async () => {
    const stream: ClientDuplexStream<etcdserverpb.WatchRequest, etcdserverpb.WatchResponse> = watch.watch();
    const responses: etcdserverpb.WatchResponse[] = [];
    const waitFor = (pred: () => boolean): Promise<void> =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("watch response timed out")), watchEventTimeoutMs);
        const check = (): void => {
          if (pred()) {
            clearTimeout(timer);
            stream.off("data", check);
            resolve();
          }
        };
        stream.on("data", check);
        check();
      });
    stream.on("data", (r: etcdserverpb.WatchResponse) => responses.push(r));
    stream.on("error", () => {
      // cancelled at the end of the test
    });
    try {
      stream.write(
        etcdserverpb.WatchRequest.create({
          createRequest: { key: b("rt/watch/"), rangeEnd: b("rt/watch0"), prevKv: true },
        }),
      );
      await waitFor(() => responses.some((r) => r.created));
      const created = responses.find((r) => r.created);
      expect(created?.events).toEqual([]);
      const put = await call<etcdserverpb.PutResponse>((cb) =>
        kv.put(etcdserverpb.PutRequest.create({ key: b("rt/watch/a"), value: b("1") }), cb),
      );
      await waitFor(() => responses.some((r) => r.events.length > 0));
      const withEvents = responses.find((r) => r.events.length > 0);
      expect(withEvents?.watchId).toBe(created?.watchId);
      const ev = withEvents?.events[0];
      expect(ev?.type).toBe(0); // PUT
      expect(ev?.kv?.key.toString()).toBe("rt/watch/a");
      expect(ev?.kv?.value.toString()).toBe("1");
      expect(ev?.kv?.modRevision).toBe(put.header?.revision);
      expect(ev?.prevKv).toBeUndefined(); // a new key has no previous value
    } finally {
      stream.cancel();
    }
  });

  it("Maintenance Status and Cluster MemberList", async () => {
    const st = await call<etcdserverpb.StatusResponse>((cb) => maintenance.status({}, cb));
    expect(st.version).toMatch(/^3\.4\./);
    expect(st.leader).toBe(st.header?.memberId);
    expect(st.dbSize).toBeGreaterThan(0n);
    expect(st.raftIndex).toBeGreaterThan(0n);
    const ml = await call<etcdserverpb.MemberListResponse>((cb) => cluster.memberList({}, cb));
    expect(ml.members).toHaveLength(1);
    expect(ml.members[0]?.name).toBe(etcd.members[0]?.name);
    expect(ml.members[0]?.ID).toBe(st.header?.memberId);
    expect(ml.members[0]?.clientURLs).toEqual(etcd.clientUrls);
    // Member ids are random uint64 values; compare with etcdctl's hex form.
    const out = await etcdctl(["member", "list"]);
    expect(out.stdout.split(",")[0]?.trim()).toBe(ml.members[0]?.ID.toString(16));
  });

  it("etcd 3.4 serves grpc.health.v1: SERVING for the server, NOT_FOUND for a named service", async () => {
    const res = await call<health.HealthCheckResponse>((cb) => healthClient.check({ service: "" }, cb));
    expect(res.status).toBe(health.HealthCheckResponse_ServingStatus.SERVING);
    const err = await call<health.HealthCheckResponse>((cb) =>
      healthClient.check({ service: "etcdserverpb.KV" }, cb),
    ).then(
      () => undefined,
      (e: ServiceError) => e,
    );
    expect(err?.code).toBe(status.NOT_FOUND);
  });
});

/** Replaces values that differ between two runs of the same operation. */
function normalise(json: unknown, keys: readonly string[]): unknown {
  if (Array.isArray(json)) return json.map((v) => normalise(v, keys));
  if (json !== null && typeof json === "object") {
    return Object.fromEntries(
      Object.entries(json).map(([k, v]) => [k, keys.includes(k) ? "<n>" : normalise(v, keys)]),
    );
  }
  return json;
}

describe("JSON mapping is etcd's gateway format", () => {
  it("Range: same request over gRPC and over the gateway gives the same JSON", async () => {
    await call((cb) => kv.put(etcdserverpb.PutRequest.create({ key: b("js/a"), value: b("1") }), cb));
    await call((cb) =>
      kv.put(etcdserverpb.PutRequest.create({ key: b("js/b"), value: Buffer.from([0, 255, 10]) }), cb),
    );
    const req = etcdserverpb.RangeRequest.create({
      key: b("js/"),
      rangeEnd: b("js0"),
      sortOrder: etcdserverpb.RangeRequest_SortOrder.DESCEND,
      sortTarget: etcdserverpb.RangeRequest_SortTarget.KEY,
      limit: 5n,
    });
    const body = etcdserverpb.RangeRequest.toJSON(req);
    expect(body).toEqual({ key: "anMv", range_end: "anMw", limit: "5", sort_order: "DESCEND" });
    const viaGateway = await gateway("/v3/kv/range", body);
    const viaGrpc = await call<etcdserverpb.RangeResponse>((cb) => kv.range(req, cb));
    // Nothing was written in between, so even the header is identical.
    expect(etcdserverpb.RangeResponse.toJSON(viaGrpc)).toEqual(viaGateway);
    expect(etcdserverpb.RangeResponse.toJSON(etcdserverpb.RangeResponse.fromJSON(viaGateway))).toEqual(
      viaGateway,
    );
    expect(etcdserverpb.RangeResponse.fromJSON(viaGateway)).toEqual(viaGrpc);
  });

  it("Put with prev_kv", async () => {
    const mk = (value: string) =>
      etcdserverpb.PutRequest.create({ key: b("js/put"), value: b(value), prevKv: true });
    await call((cb) => kv.put(mk("0"), cb));
    const viaGrpc = await call<etcdserverpb.PutResponse>((cb) => kv.put(mk("1"), cb));
    const viaGateway = await gateway("/v3/kv/put", etcdserverpb.PutRequest.toJSON(mk("2")));
    expect(etcdserverpb.PutRequest.toJSON(mk("2"))).toEqual({
      key: "anMvcHV0",
      value: "Mg==",
      prev_kv: true,
    });
    const norm = ["revision", "mod_revision", "version", "value"];
    expect(normalise(etcdserverpb.PutResponse.toJSON(viaGrpc), norm)).toEqual(normalise(viaGateway, norm));
    expect(etcdserverpb.PutResponse.fromJSON(viaGateway).prevKv?.value.toString()).toBe("1");
  });

  it("LeaseGrant and LeaseTimeToLive (ids as decimal strings, keys ID/TTL as written)", async () => {
    const grpcId = 0x7000000000000001n;
    const gwId = 0x7000000000000002n;
    const viaGrpc = await call<etcdserverpb.LeaseGrantResponse>((cb) =>
      lease.leaseGrant({ TTL: 30n, ID: grpcId }, cb),
    );
    const body = etcdserverpb.LeaseGrantRequest.toJSON({ TTL: 30n, ID: gwId });
    expect(body).toEqual({ TTL: "30", ID: "8070450532247928834" });
    const viaGateway = await gateway("/v3/lease/grant", body);
    expect(etcdserverpb.LeaseGrantResponse.fromJSON(viaGateway).ID).toBe(gwId);
    const norm = ["revision", "ID"];
    expect(normalise(etcdserverpb.LeaseGrantResponse.toJSON(viaGrpc), norm)).toEqual(
      normalise(viaGateway, norm),
    );

    const ttlReq = { ID: gwId, keys: true };
    const ttlGw = await gateway("/v3/lease/timetolive", etcdserverpb.LeaseTimeToLiveRequest.toJSON(ttlReq));
    const ttlGrpc = await call<etcdserverpb.LeaseTimeToLiveResponse>((cb) =>
      lease.leaseTimeToLive(ttlReq, cb),
    );
    expect(normalise(etcdserverpb.LeaseTimeToLiveResponse.toJSON(ttlGrpc), ["TTL"])).toEqual(
      normalise(ttlGw, ["TTL"]),
    );
    await gateway("/v3/lease/revoke", etcdserverpb.LeaseRevokeRequest.toJSON({ ID: gwId }));
    await call((cb) => lease.leaseRevoke({ ID: grpcId }, cb));
  });

  it("Txn with compares, a oneof and nested responses", async () => {
    const mk = (suffix: string) =>
      etcdserverpb.TxnRequest.create({
        compare: [
          {
            result: Compare_CompareResult.EQUAL,
            target: Compare_CompareTarget.VERSION,
            key: b(`js/txn${suffix}`),
            version: 0n,
          },
          {
            result: Compare_CompareResult.LESS,
            target: Compare_CompareTarget.MOD,
            key: b("js/a"),
            modRevision: 1_000_000n,
          },
        ],
        success: [
          { requestPut: { key: b(`js/txn${suffix}`), value: b("v") } },
          { requestRange: { key: b("js/a") } },
          { requestDeleteRange: { key: b("js/nothing"), prevKv: true } },
        ],
        failure: [],
      });
    const body = etcdserverpb.TxnRequest.toJSON(mk("g"));
    // The oneof holding 0 is still written, as jsonpb writes set oneof fields.
    expect((body as { compare: unknown[] }).compare[0]).toEqual({ key: "anMvdHhuZw==", version: "0" });
    const viaGateway = await gateway("/v3/kv/txn", body);
    const viaGrpc = await call<etcdserverpb.TxnResponse>((cb) => kv.txn(mk("r"), cb));
    expect(viaGrpc.succeeded).toBe(true);
    const norm = ["revision"];
    expect(normalise(etcdserverpb.TxnResponse.toJSON(viaGrpc), norm)).toEqual(normalise(viaGateway, norm));
  });

  it("DeleteRange, Status, MemberList, Alarm", async () => {
    const del = etcdserverpb.DeleteRangeRequest.create({ key: b("js/"), rangeEnd: b("js0"), prevKv: false });
    const gwDel = await gateway("/v3/kv/deleterange", etcdserverpb.DeleteRangeRequest.toJSON(del));
    expect(etcdserverpb.DeleteRangeResponse.fromJSON(gwDel).deleted).toBeGreaterThan(0n);
    const grpcDel = await call<etcdserverpb.DeleteRangeResponse>((cb) => kv.deleteRange(del, cb));
    // Nothing left to delete: `deleted` is 0 and so omitted, as the gateway omits defaults.
    expect(etcdserverpb.DeleteRangeResponse.toJSON(grpcDel)).not.toHaveProperty("deleted");

    const st = await call<etcdserverpb.StatusResponse>((cb) => maintenance.status({}, cb));
    const stGw = await gateway("/v3/maintenance/status", {});
    const stNorm = ["raftIndex", "raftAppliedIndex", "dbSize", "dbSizeInUse", "revision"];
    expect(normalise(etcdserverpb.StatusResponse.toJSON(st), stNorm)).toEqual(normalise(stGw, stNorm));

    const ml = await call<etcdserverpb.MemberListResponse>((cb) => cluster.memberList({}, cb));
    const mlGw = await gateway("/v3/cluster/member/list", {});
    expect(etcdserverpb.MemberListResponse.toJSON(ml)).toEqual(mlGw);

    const alarmReq = etcdserverpb.AlarmRequest.create({ action: etcdserverpb.AlarmRequest_AlarmAction.GET });
    const alarm = await call<etcdserverpb.AlarmResponse>((cb) => maintenance.alarm(alarmReq, cb));
    const alarmGw = await gateway("/v3/maintenance/alarm", etcdserverpb.AlarmRequest.toJSON(alarmReq));
    expect(etcdserverpb.AlarmResponse.toJSON(alarm)).toEqual(normalise(alarmGw, []));
  });

  it("the gateway also reads camelCase keys; withProtoFieldNames makes fromJSON read them the same way", async () => {
    await call((cb) => kv.put(etcdserverpb.PutRequest.create({ key: b("cc/a"), value: b("1") }), cb));
    await call((cb) => kv.put(etcdserverpb.PutRequest.create({ key: b("cc/b"), value: b("2") }), cb));
    const snake = { key: "Y2Mv", range_end: "Y2Mw", count_only: true };
    const camel = { key: "Y2Mv", rangeEnd: "Y2Mw", countOnly: true };
    const fromSnake = await gateway("/v3/kv/range", snake);
    const fromCamel = await gateway("/v3/kv/range", camel);
    expect(fromCamel).toEqual(fromSnake);
    expect(etcdserverpb.RangeResponse.fromJSON(fromCamel).count).toBe(2n);
    expect(
      etcdserverpb.RangeRequest.fromJSON(withProtoFieldNames("etcdserverpb.RangeRequest", camel)),
    ).toEqual(etcdserverpb.RangeRequest.fromJSON(snake));
  });

  it("gateway conventions: errors as {error, message, code}; streams as one {result} object per message", async () => {
    const res = await fetch(`${etcd.clientUrls[0]}/v3/kv/range`, {
      method: "POST",
      body: JSON.stringify(
        etcdserverpb.RangeRequest.toJSON(
          etcdserverpb.RangeRequest.create({ key: b("x"), revision: 1_000_000n }),
        ),
      ),
    });
    expect(res.ok).toBe(false);
    expect(await res.json()).toEqual({
      error: "etcdserver: mvcc: required revision is a future revision",
      message: "etcdserver: mvcc: required revision is a future revision",
      code: status.OUT_OF_RANGE,
    });

    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), watchEventTimeoutMs);
    try {
      const body = etcdserverpb.WatchRequest.toJSON({
        createRequest: etcdserverpb.WatchCreateRequest.create({ key: b("gw/w") }),
      });
      expect(body).toEqual({ create_request: { key: "Z3cvdw==" } });
      const watchRes = await fetch(`${etcd.clientUrls[0]}/v3/watch`, {
        method: "POST",
        body: JSON.stringify(body),
        signal: abort.signal,
      });
      const reader = watchRes.body?.getReader();
      if (reader === undefined) throw new Error("no body");
      let text = "";
      const nextMessage = async (): Promise<unknown> => {
        for (;;) {
          const nl = text.indexOf("\n");
          if (nl >= 0) {
            const line = text.slice(0, nl);
            text = text.slice(nl + 1);
            if (line.trim() !== "") return JSON.parse(line);
            continue;
          }
          const { value, done } = await reader.read();
          if (done) throw new Error("watch stream ended");
          text += Buffer.from(value).toString();
        }
      };
      const created = (await nextMessage()) as { result: unknown };
      expect(etcdserverpb.WatchResponse.fromJSON(created.result).created).toBe(true);
      const put = await call<etcdserverpb.PutResponse>((cb) =>
        kv.put(etcdserverpb.PutRequest.create({ key: b("gw/w"), value: b("v") }), cb),
      );
      const event = (await nextMessage()) as { result: unknown };
      const decoded = etcdserverpb.WatchResponse.fromJSON(event.result);
      expect(decoded.events[0]?.kv?.modRevision).toBe(put.header?.revision);
      // Enums are written by name, as our toJSON writes them.
      expect(etcdserverpb.WatchResponse.toJSON(decoded)).toEqual(event.result);
      await reader.cancel();
    } finally {
      clearTimeout(timer);
      abort.abort();
    }
  });
});
