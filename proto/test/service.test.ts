// The generated grpc-js definitions serve both sides: `server.addService(KVService, impl)`
// and `new KVClient(addr, creds)`. An in-process server on an ephemeral loopback port.
import {
  credentials,
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type ServiceError,
  type sendUnaryData,
} from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { etcdserverpb, health, v3electionpb, v3lockpb } from "../src/index.js";

const {
  AuthService,
  ClusterService,
  KVClient,
  KVService,
  LeaseClient,
  LeaseService,
  MaintenanceService,
  WatchClient,
  WatchService,
} = etcdserverpb;

/** The etcd 3.4 API surface: every service's gRPC method paths, in proto order. */
const expectedPaths: Record<string, { def: Record<string, { path: string }>; methods: string[] }> = {
  "etcdserverpb.KV": { def: KVService, methods: ["Range", "Put", "DeleteRange", "Txn", "Compact"] },
  "etcdserverpb.Watch": { def: WatchService, methods: ["Watch"] },
  "etcdserverpb.Lease": {
    def: LeaseService,
    methods: ["LeaseGrant", "LeaseRevoke", "LeaseKeepAlive", "LeaseTimeToLive", "LeaseLeases"],
  },
  "etcdserverpb.Cluster": {
    def: ClusterService,
    methods: ["MemberAdd", "MemberRemove", "MemberUpdate", "MemberList", "MemberPromote"],
  },
  "etcdserverpb.Maintenance": {
    def: MaintenanceService,
    methods: ["Alarm", "Status", "Defragment", "Hash", "HashKV", "Snapshot", "MoveLeader"],
  },
  "etcdserverpb.Auth": {
    def: AuthService,
    methods: [
      "AuthEnable",
      "AuthDisable",
      "Authenticate",
      "UserAdd",
      "UserGet",
      "UserList",
      "UserDelete",
      "UserChangePassword",
      "UserGrantRole",
      "UserRevokeRole",
      "RoleAdd",
      "RoleGet",
      "RoleList",
      "RoleDelete",
      "RoleGrantPermission",
      "RoleRevokePermission",
    ],
  },
  "v3electionpb.Election": {
    def: v3electionpb.ElectionService,
    methods: ["Campaign", "Proclaim", "Leader", "Observe", "Resign"],
  },
  "v3lockpb.Lock": { def: v3lockpb.LockService, methods: ["Lock", "Unlock"] },
  "grpc.health.v1.Health": { def: health.HealthService, methods: ["Check", "Watch"] },
};

describe("service definitions", () => {
  for (const [service, { def, methods }] of Object.entries(expectedPaths)) {
    it(`${service} has etcd 3.4's methods`, () => {
      expect(Object.values(def).map((m) => m.path)).toEqual(methods.map((m) => `/${service}/${m}`));
    });
  }

  it("stream shapes: Watch and LeaseKeepAlive are bidi, Snapshot and Observe server-streaming", () => {
    const shape = (m: { requestStream: boolean; responseStream: boolean }) => [
      m.requestStream,
      m.responseStream,
    ];
    expect(shape(WatchService.watch)).toEqual([true, true]);
    expect(shape(LeaseService.leaseKeepAlive)).toEqual([true, true]);
    expect(shape(MaintenanceService.snapshot)).toEqual([false, true]);
    expect(shape(v3electionpb.ElectionService.observe)).toEqual([false, true]);
    expect(shape(KVService.range)).toEqual([false, false]);
  });
});

describe("an in-process server and client built from the same definitions", () => {
  const server = new Server();
  let addr = "";
  const bigLease = 0x7fff_ffff_ffff_fff1n;

  const kvImpl: etcdserverpb.KVServer = {
    range(
      call: ServerUnaryCall<etcdserverpb.RangeRequest, etcdserverpb.RangeResponse>,
      cb: sendUnaryData<etcdserverpb.RangeResponse>,
    ) {
      cb(null, {
        header: { clusterId: 1n, memberId: 2n, revision: 3n, raftTerm: 4n },
        kvs: [
          {
            key: call.request.key,
            createRevision: 3n,
            modRevision: 3n,
            version: 1n,
            value: Buffer.from("v"),
            lease: bigLease,
          },
        ],
        more: false,
        count: 1n,
      });
    },
    put(_call, cb) {
      cb(null, {});
    },
    deleteRange(_call, cb) {
      cb(null, { deleted: 0n, prevKvs: [] });
    },
    txn(_call, cb) {
      cb(null, { succeeded: true, responses: [] });
    },
    compact(_call, cb) {
      cb(null, {});
    },
  };

  const watchImpl: etcdserverpb.WatchServer = {
    watch(call: ServerDuplexStream<etcdserverpb.WatchRequest, etcdserverpb.WatchResponse>) {
      call.on("data", (req: etcdserverpb.WatchRequest) => {
        if (req.createRequest === undefined) return;
        const base = {
          watchId: 7n,
          created: false,
          canceled: false,
          compactRevision: 0n,
          cancelReason: "",
          fragment: false,
        };
        call.write({ ...base, created: true, events: [] });
        const kv = {
          key: req.createRequest.key,
          createRevision: 5n,
          modRevision: 5n,
          version: 1n,
          value: Buffer.from("x"),
          lease: 0n,
        };
        call.write({ ...base, events: [{ type: 0, kv }] });
        call.end();
      });
    },
  };

  const leaseImpl: Pick<etcdserverpb.LeaseServer, "leaseGrant"> = {
    leaseGrant(call, cb) {
      cb(null, { ID: call.request.ID, TTL: call.request.TTL, error: "" });
    },
  };

  beforeAll(async () => {
    server.addService(KVService, kvImpl);
    server.addService(WatchService, watchImpl);
    // A partial implementation (typed with Pick, not Partial: optional members do not fit
    // grpc-js's index signature) is allowed; missing methods answer UNIMPLEMENTED.
    server.addService(LeaseService, leaseImpl);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    addr = `127.0.0.1:${port}`;
  });

  afterAll(() => {
    server.forceShutdown();
  });

  it("unary: bigint fields cross the wire exactly", async () => {
    const client = new KVClient(addr, credentials.createInsecure());
    try {
      const res = await new Promise<etcdserverpb.RangeResponse>((resolve, reject) =>
        client.range(etcdserverpb.RangeRequest.create({ key: Buffer.from("k") }), (err, r) =>
          err ? reject(err) : resolve(r),
        ),
      );
      expect(res.kvs[0]?.key.toString()).toBe("k");
      expect(res.kvs[0]?.lease).toBe(bigLease);
      expect(res.header?.raftTerm).toBe(4n);
    } finally {
      client.close();
    }
  });

  it("bidi stream: created, then an event", async () => {
    const client = new WatchClient(addr, credentials.createInsecure());
    try {
      const stream = client.watch();
      const got: etcdserverpb.WatchResponse[] = [];
      const done = new Promise<void>((resolve, reject) => {
        stream.on("data", (r: etcdserverpb.WatchResponse) => got.push(r));
        stream.on("end", resolve);
        stream.on("error", reject);
      });
      stream.write({ createRequest: etcdserverpb.WatchCreateRequest.create({ key: Buffer.from("w") }) });
      await done;
      expect(got.map((r) => r.created)).toEqual([true, false]);
      expect(got[1]?.events[0]?.kv?.key.toString()).toBe("w");
      expect(got[1]?.watchId).toBe(7n);
    } finally {
      client.close();
    }
  });

  it("partial service: implemented methods work, others are UNIMPLEMENTED", async () => {
    const client = new LeaseClient(addr, credentials.createInsecure());
    try {
      const res = await new Promise<etcdserverpb.LeaseGrantResponse>((resolve, reject) =>
        client.leaseGrant({ TTL: 5n, ID: bigLease }, (err, r) => (err ? reject(err) : resolve(r))),
      );
      expect(res.ID).toBe(bigLease);
      const err = await new Promise<ServiceError | null>((resolve) =>
        client.leaseRevoke({ ID: 1n }, (e) => resolve(e)),
      );
      expect(err?.code).toBe(12); // UNIMPLEMENTED
    } finally {
      client.close();
    }
  });
});
