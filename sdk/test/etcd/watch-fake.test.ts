// The watch multiplexer against a scripted in-process Watch server (loopback, random port):
// cases a real etcd produces rarely or never on demand (fragments, a server that repeats events
// after a resume, a stream the server ends).
import { Server, ServerCredentials, type ServerDuplexStream } from "@grpc/grpc-js";
import { etcdserverpb, mvccpb } from "@regmesh/proto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EtcdClient } from "../../src/etcd/client.js";
import { until } from "./helpers.js";

type Call = ServerDuplexStream<etcdserverpb.WatchRequest, etcdserverpb.WatchResponse>;

let server: Server;
let calls: { call: Call; creates: etcdserverpb.WatchCreateRequest[] }[];
let client: EtcdClient;
let endpoint: string;

beforeEach(async () => {
  calls = [];
  server = new Server();
  server.addService(etcdserverpb.WatchService, {
    watch: (call: Call) => {
      const entry = { call, creates: [] as etcdserverpb.WatchCreateRequest[] };
      calls.push(entry);
      call.on("data", (req: etcdserverpb.WatchRequest) => {
        if (req.createRequest) entry.creates.push(req.createRequest);
      });
      call.on("error", () => {});
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  endpoint = `127.0.0.1:${port}`;
  client = new EtcdClient({
    endpoints: [endpoint],
    watchProgressIntervalMs: 60_000,
    watchIdleTimeoutMs: 120_000,
  });
});
afterEach(async () => {
  client.close();
  await new Promise<void>((r) => server.tryShutdown(() => r()));
});

const header = (revision: number) => ({
  clusterId: 1n,
  memberId: 1n,
  revision: BigInt(revision),
  raftTerm: 1n,
});
const put = (key: string, rev: number) =>
  mvccpb.Event.create({
    type: mvccpb.Event_EventType.PUT,
    kv: {
      key: Buffer.from(key),
      value: Buffer.from(`v${rev}`),
      modRevision: BigInt(rev),
      createRevision: BigInt(rev),
      version: 1n,
    },
  });
// Created answers carry revision 1 (a watch "from now" then delivers everything after 1).
const send = (call: Call, r: Partial<etcdserverpb.WatchResponse>) =>
  call.write(etcdserverpb.WatchResponse.create({ header: header(r.created ? 1 : 100), ...r }));

describe("watch multiplexer (scripted server)", () => {
  it("reassembles fragments into one delivery of whole revisions", async () => {
    const got: bigint[][] = [];
    client.watch(
      { key: "k/", prefix: true },
      { events: (evs) => got.push(evs.map((e) => e.kv!.modRevision)) },
    );
    await until(() => calls[0]?.creates.length === 1, 5_000);
    const { call, creates } = calls[0]!;
    expect(creates[0]!.fragment).toBe(true);
    expect(call.metadata.get("hasleader")).toEqual(["true"]);
    send(call, { created: true, watchId: 7n });
    send(call, { watchId: 7n, fragment: true, events: [put("k/a", 5), put("k/b", 5)] });
    send(call, { watchId: 7n, fragment: true, events: [put("k/c", 5)] });
    send(call, { watchId: 7n, events: [put("k/d", 5)] });
    await until(() => got.length === 1, 5_000);
    expect(got).toEqual([[5n, 5n, 5n, 5n]]);
  });

  it("after a broken stream, resumes at last revision + 1 and drops events it already delivered", async () => {
    const got: bigint[] = [];
    const states: string[] = [];
    client.watch(
      { key: "k/", prefix: true, startRevision: 3n },
      {
        events: (evs) => got.push(...evs.map((e) => e.kv!.modRevision)),
        connected: () => states.push("connected"),
        disconnected: () => states.push("disconnected"),
      },
    );
    await until(() => calls[0]?.creates.length === 1, 5_000);
    expect(calls[0]!.creates[0]!.startRevision).toBe(3n);
    send(calls[0]!.call, { created: true, watchId: 1n });
    send(calls[0]!.call, { watchId: 1n, events: [put("k/a", 5)] });
    send(calls[0]!.call, { watchId: 1n, events: [put("k/b", 6)] });
    await until(() => got.length === 2, 5_000);
    calls[0]!.call.end(); // the server ends the stream
    await until(
      () => calls[1]?.creates.length === 1,
      5_000,
      () => "re-created on a new stream",
    );
    expect(calls[1]!.creates[0]!.startRevision).toBe(7n);
    // A server that repeats revision 6 after the resume: it must not be delivered twice.
    send(calls[1]!.call, { created: true, watchId: 9n });
    send(calls[1]!.call, { watchId: 9n, events: [put("k/b", 6), put("k/c", 7)] });
    await until(() => got.length === 3, 5_000);
    expect(got).toEqual([5n, 6n, 7n]);
    expect(states).toEqual(["connected", "disconnected", "connected"]);
  });

  it("server-chosen ids: creates are matched to answers in order; cancel before created is sent after", async () => {
    const a: string[] = [];
    const b: string[] = [];
    const wa = client.watch(
      { key: "a" },
      { events: (evs) => a.push(...evs.map((e) => e.kv!.key.toString())) },
    );
    client.watch({ key: "b" }, { events: (evs) => b.push(...evs.map((e) => e.kv!.key.toString())) });
    await until(() => calls[0]?.creates.length === 2, 5_000);
    const { call } = calls[0]!;
    const cancels: bigint[] = [];
    call.on("data", (req: etcdserverpb.WatchRequest) => {
      if (req.cancelRequest) cancels.push(req.cancelRequest.watchId);
    });
    wa.cancel();
    send(call, { created: true, watchId: 40n });
    send(call, { created: true, watchId: 41n });
    send(call, { watchId: 40n, events: [put("a", 8)] });
    send(call, { watchId: 41n, events: [put("b", 9)] });
    await until(() => b.length === 1 && cancels.length === 1, 5_000);
    expect(a).toEqual([]);
    expect(cancels).toEqual([40n]);
  });

  it("progress notify: the listener hears the revision, and a resume starts after it", async () => {
    const progress: bigint[] = [];
    client.watch({ key: "k", progressNotify: true }, { events: () => {}, progress: (r) => progress.push(r) });
    await until(() => calls[0]?.creates.length === 1, 5_000);
    expect(calls[0]!.creates[0]!.progressNotify).toBe(true);
    send(calls[0]!.call, { created: true, watchId: 1n });
    send(calls[0]!.call, { watchId: 1n }); // no events: a progress notification at revision 100
    await until(() => progress.length === 1, 5_000);
    expect(progress).toEqual([100n]);
    calls[0]!.call.end();
    await until(
      () => calls[1]?.creates.length === 1,
      5_000,
      () => "re-created",
    );
    expect(calls[1]!.creates[0]!.startRevision).toBe(101n);
  });

  it("a compacted resume revision closes the watcher and asks for a re-list", async () => {
    let compactedAt = 0n;
    const w = client.watch(
      { key: "k", startRevision: 2n },
      { events: () => {}, compacted: (r) => (compactedAt = r) },
    );
    await until(() => calls[0]?.creates.length === 1, 5_000);
    send(calls[0]!.call, { created: true, watchId: 3n });
    send(calls[0]!.call, { watchId: 3n, canceled: true, compactRevision: 50n });
    await until(() => compactedAt === 50n, 5_000);
    expect(w.closed).toBe(true);
  });

  it("a silent stream (paused member, black-holed link) is torn down after the idle timeout and re-opened", async () => {
    const quick = new EtcdClient({
      endpoints: [endpoint],
      watchProgressIntervalMs: 100,
      watchIdleTimeoutMs: 400,
    });
    try {
      const reasons: string[] = [];
      quick.watch({ key: "k" }, { events: () => {}, disconnected: (e) => reasons.push(e.code) });
      // The server never answers: no created, no progress.
      await until(
        () => calls.length >= 2 && calls[1]!.creates.length === 1,
        5_000,
        () => "second stream",
      );
      expect(reasons[0]).toBe("SDK_ERR_TIMEOUT");
    } finally {
      quick.close();
    }
  });
});
