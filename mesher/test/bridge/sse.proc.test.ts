// GET /v1/watch/{service} as Server-Sent Events against a real etcd: the snapshot, live changes,
// resuming with Last-Event-ID after changes made while disconnected (each seen once, in revision
// order, checked against etcd's own history), a compacted resume revision, heartbeats, and curl.

import { instanceKey, Registrar } from "@regmesh/sdk";
import { type Cluster, runCommand, startEtcd } from "@regmesh/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type BridgeHarness,
  curlJson,
  type Json,
  SseClient as Sse,
  type SseClient,
  startBridge,
  until,
} from "./helpers.js";

let cluster: Cluster;
let h: BridgeHarness;
const PREFIX = "/sse";

beforeAll(async () => {
  cluster = await startEtcd({ members: 1 });
  h = await startBridge(cluster.endpoints, PREFIX, { sseHeartbeatIntervalMs: 300 });
});
afterAll(async () => {
  await h?.close();
  await cluster?.stop({ remove: true });
});

async function register(service: string, id: string, port = 1): Promise<Json> {
  const r = await curlJson("POST", `${h.url}/v1/register`, {
    service,
    id,
    address: "10.0.0.1",
    port,
    ttl: 30,
  });
  expect(r.status, r.text).toBe(201);
  return r.body as Json;
}
async function deregister(id: string): Promise<void> {
  const r = await curlJson("DELETE", `${h.url}/v1/register/${id}`);
  expect(r.status, r.text).toBe(200);
}

/** Every change (revision, type, id) under the service's prefix after `after`, from etcd itself. */
async function etcdHistory(service: string, after: bigint, upTo: bigint): Promise<string[]> {
  const seen: string[] = [];
  let last = after;
  const prefix = `${PREFIX}/services/${service}/`;
  const w = h.client.watch(
    { key: prefix, prefix: true, startRevision: after + 1n },
    {
      events(evs) {
        for (const e of evs) {
          const rev = e.kv!.modRevision;
          if (rev <= upTo)
            seen.push(
              `${rev} ${e.type === 1 ? "delete" : "put"} ${e.kv!.key.toString().slice(prefix.length)}`,
            );
          last = rev;
        }
      },
    },
  );
  await until(() => last >= upTo, 10_000, `etcd history up to ${upTo}`);
  w.cancel();
  return seen;
}

function changesOf(c: SseClient): string[] {
  return c.events
    .filter((e) => e.event === "change")
    .flatMap((e) => (e.data as Json).changes.map((x: Json) => `${e.id} ${x.type} ${x.id}`));
}

describe("watch over Server-Sent Events", () => {
  it("snapshot first, then one event per change, ids are revisions", async () => {
    await register("live", "l-1");
    const c = await Sse.open(`${h.url}/v1/watch/live`);
    try {
      expect(c.status).toBe(200);
      await until(() => c.events.length >= 1, 10_000, "the snapshot");
      const snap = c.events[0]!;
      expect(snap.event).toBe("snapshot");
      expect((snap.data as Json).instances.map((i: Json) => i.id)).toEqual(["l-1"]);
      expect(snap.id).toBe((snap.data as Json).revision);

      const r2 = await register("live", "l-2", 2);
      await until(() => c.events.length >= 2, 10_000, "the put event");
      const put = c.events[1]!;
      expect(put.event).toBe("change");
      const kv = await h.client.get(r2.key);
      expect(put.id).toBe(kv!.modRevision.toString());
      expect((put.data as Json).changes).toEqual([{ type: "put", id: "l-2", instance: r2.instance }]);

      await deregister("l-1");
      await until(() => c.events.length >= 3, 10_000, "the delete event");
      expect((c.events[2]!.data as Json).changes).toEqual([{ type: "delete", id: "l-1" }]);
      expect(BigInt(c.events[2]!.id!)).toBeGreaterThan(BigInt(put.id!));

      // Heartbeat comments (every 300 ms in this suite).
      await until(() => c.comments >= 2, 10_000, "heartbeat comments");
      await deregister("l-2");
    } finally {
      c.close();
    }
  });

  it("reconnecting with Last-Event-ID gets every change made while disconnected, once, in order", async () => {
    await register("resume", "r-0");
    const first = await Sse.open(`${h.url}/v1/watch/resume`);
    await until(() => first.events.length >= 1, 10_000, "the snapshot");
    const lastId = first.events.at(-1)!.id!;
    first.close();

    // While disconnected: bridge registrations, an SDK registration in one Txn with two
    // instances (one revision, two changes), deregistrations, and a change to another service.
    const registrar = new Registrar({ client: h.client, prefix: PREFIX, ttlS: 30 });
    try {
      await register("resume", "r-1");
      await register("resume", "r-2");
      await register("other", "o-1");
      await deregister("r-0");
      await registrar.registerMany([
        { service: "resume", id: "s-1", address: "10.0.0.2", port: 2 },
        { service: "resume", id: "s-2", address: "10.0.0.3", port: 3 },
      ]);
      await deregister("r-1");
      await register("resume", "r-3");
      const head = (await h.client.status()).header!.revision;
      const expected = await etcdHistory("resume", BigInt(lastId), head);
      expect(expected.length).toBe(7);

      const second = await Sse.open(`${h.url}/v1/watch/resume`, { "last-event-id": lastId });
      try {
        await until(() => changesOf(second).length >= expected.length, 10_000, "the missed changes");
        // A change after the reconnect arrives too, after the missed ones.
        await deregister("r-2");
        await until(() => changesOf(second).length >= expected.length + 1, 10_000, "a live change");
        await new Promise((r) => setTimeout(r, 500)); // room for duplicates to show up, if any
        const got = changesOf(second);
        expect(second.events.some((e) => e.event === "snapshot")).toBe(false);
        expect(got.slice(0, expected.length)).toEqual(expected);
        expect(got.length).toBe(expected.length + 1);
        expect(got.at(-1)).toMatch(/ delete r-2$/);
        const ids = second.events.map((e) => BigInt(e.id!));
        for (let i = 1; i < ids.length; i++) expect(ids[i]!).toBeGreaterThan(ids[i - 1]!);
        // The Txn's two instances share one event (one revision).
        const txn = second.events.find((e) => (e.data as Json).changes.length === 2);
        expect((txn!.data as Json).changes.map((x: Json) => x.id)).toEqual(["s-1", "s-2"]);
      } finally {
        second.close();
      }
    } finally {
      await registrar.close();
      for (const id of ["r-3", "o-1"]) await deregister(id);
    }
  });

  it("a compacted Last-Event-ID gets a fresh snapshot, then changes", async () => {
    await register("compact", "c-1");
    const first = await Sse.open(`${h.url}/v1/watch/compact`);
    await until(() => first.events.length >= 1, 10_000, "the snapshot");
    const lastId = first.events[0]!.id!;
    first.close();
    await register("compact", "c-2");
    await deregister("c-1");
    const head = (await h.client.status()).header!.revision;
    await h.client.compact(head, true);

    const second = await Sse.open(`${h.url}/v1/watch/compact`, { "last-event-id": lastId });
    try {
      await until(() => second.events.length >= 1, 10_000, "the snapshot after compaction");
      const snap = second.events[0]!;
      expect(snap.event).toBe("snapshot");
      expect((snap.data as Json).instances.map((i: Json) => i.id)).toEqual(["c-2"]);
      expect(BigInt(snap.id!)).toBeGreaterThanOrEqual(head);
      await register("compact", "c-3");
      await until(() => second.events.length >= 2, 10_000, "a change after the snapshot");
      expect((second.events[1]!.data as Json).changes.map((x: Json) => x.id)).toEqual(["c-3"]);
    } finally {
      second.close();
      for (const id of ["c-2", "c-3"]) await deregister(id);
    }
  });

  it("curl -N resumes with a Last-Event-ID header; a bad one is a 400", async () => {
    const a = await register("curlsse", "k-1");
    const kv = await h.client.get(instanceKey(PREFIX, "curlsse", "k-1"));
    await register("curlsse", "k-2");
    await deregister("k-1");
    const r = await runCommand(
      "curl",
      [
        "-sS",
        "-N",
        "--max-time",
        "5",
        "-H",
        `Last-Event-ID: ${kv!.modRevision}`,
        `${h.url}/v1/watch/curlsse`,
      ],
      { timeoutMs: 20_000 },
    );
    // --max-time ends the stream: exit code 28 with what arrived so far on stdout.
    expect(r.code, r.stderr).toBe(28);
    const ids = [...r.stdout.matchAll(/^id: ([0-9]+)$/gm)].map((m) => m[1]);
    expect(ids.length).toBe(2);
    expect(r.stdout).toContain('"type":"put","id":"k-2"');
    expect(r.stdout).toContain('"type":"delete","id":"k-1"');
    expect(r.stdout).not.toContain("event: snapshot");
    expect(r.stdout).toContain(": heartbeat");
    expect(a.id).toBe("k-1");

    const bad = await runCommand("curl", [
      "-sS",
      "-H",
      "Last-Event-ID: yesterday",
      `${h.url}/v1/watch/curlsse`,
    ]);
    const body = JSON.parse(bad.stdout) as Json;
    expect(body.error).toMatchObject({ code: "BRIDGE_ERR_BAD_REQUEST", field: "Last-Event-ID" });
    await deregister("k-2");
  });

  it("bridge.close() ends open streams", async () => {
    const other = await startBridge(cluster.endpoints, PREFIX);
    const c = await Sse.open(`${other.url}/v1/watch/closing`);
    await until(() => c.events.length >= 1, 10_000, "the snapshot");
    await other.close();
    await until(() => c.ended, 10_000, "the stream to end");
  });
});
