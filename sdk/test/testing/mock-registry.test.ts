// The mock registry: the etcd v3 basics through the SDK's own EtcdClient, then Registrar and
// Discovery against it unchanged, with lease expiry driven by a manual clock.

import type { mvccpb } from "@regmesh/proto";
import { afterEach, describe, expect, it } from "vitest";
import { EtcdClient } from "../../src/etcd/client.js";
import { ManualClock } from "../../src/etcd/clock.js";
import { EtcdError, EtcdErrorCode } from "../../src/etcd/errors.js";
import { compare, op } from "../../src/etcd/txn.js";
import { Discovery, type ServiceSnapshot } from "../../src/registry/discovery.js";
import { Registrar } from "../../src/registry/registrar.js";
import { MockRegistry } from "../../src/testing/mock-registry.js";
import { until } from "../etcd/helpers.js";

const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

async function setup(opts: { clock?: ManualClock } = {}) {
  const reg = await MockRegistry.start({ clock: opts.clock });
  closers.push(() => reg.stop());
  const c = new EtcdClient({
    endpoints: [reg.endpoint],
    requestTimeoutMs: 5_000,
    retryDeadlineMs: 15_000,
    watchProgressIntervalMs: 200,
    watchIdleTimeoutMs: 5_000,
  });
  closers.push(() => c.close());
  return { reg, c };
}

async function rejection(p: Promise<unknown>): Promise<EtcdError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(EtcdError);
    return err as EtcdError;
  }
  throw new Error("expected a rejection");
}

/** Collects watch events; `until` waits on `revs`. */
function collect() {
  const events: mvccpb.Event[] = [];
  let connected = false;
  return {
    events,
    get connected() {
      return connected;
    },
    listener: {
      events: (evs: mvccpb.Event[]) => events.push(...evs),
      connected: () => {
        connected = true;
      },
    },
  };
}

describe("mock registry: etcd v3 basics", () => {
  it("revisions, versions, prefix ranges with limit, count_only, keys_only and past revisions", async () => {
    const { c } = await setup();
    const r1 = (await c.put("a/1", "x")).header!.revision;
    expect(r1).toBe(2n); // an empty etcd is at revision 1
    await c.put("a/2", "y");
    await c.put("a/3", "z");
    const r4 = (await c.put("a/1", "x2")).header!.revision;
    await c.put("b/1", "other");
    const all = await c.range("a/", { prefix: true });
    expect(all.kvs.map((kv) => `${kv.key}=${kv.value}`)).toEqual(["a/1=x2", "a/2=y", "a/3=z"]);
    expect(all.count).toBe(3n);
    const a1 = all.kvs[0]!;
    expect([a1.createRevision, a1.modRevision, a1.version]).toEqual([r1, r4, 2n]);
    const page = await c.range("a/", { prefix: true, limit: 2 });
    expect(page.kvs.length).toBe(2);
    expect(page.more).toBe(true);
    expect(page.count).toBe(3n);
    const counted = await c.range("a/", { prefix: true, countOnly: true });
    expect([counted.kvs.length, counted.count]).toEqual([0, 3n]);
    const keys = await c.range("a/", { prefix: true, keysOnly: true });
    expect(keys.kvs.map((kv) => kv.value.length)).toEqual([0, 0, 0]);
    const old = await c.range("a/1", { revision: r1 });
    expect(old.kvs[0]!.value.toString()).toBe("x");
    const range = await c.range("a/2", { rangeEnd: "a/3" });
    expect(range.kvs.map((kv) => kv.key.toString())).toEqual(["a/2"]);
    expect((await rejection(c.range("a/1", { revision: 1_000n }))).code).toBe(EtcdErrorCode.FUTURE_REVISION);
    await c.compact(r4);
    expect((await rejection(c.range("a/1", { revision: r1 }))).code).toBe(EtcdErrorCode.COMPACTED);
    expect((await c.range("a/1", { revision: r4 })).kvs[0]!.value.toString()).toBe("x2");
  });

  it("put and delete with prev_kv; a delete of nothing makes no revision", async () => {
    const { c } = await setup();
    await c.put("k", "1");
    const p = await c.put("k", "2", { prevKv: true });
    expect(p.prevKv!.value.toString()).toBe("1");
    const before = p.header!.revision;
    const none = await c.delete("nope");
    expect([none.deleted, none.header!.revision]).toEqual([0n, before]);
    await c.put("k2", "3");
    const d = await c.delete("k", { prefix: true, prevKv: true });
    expect(d.deleted).toBe(2n);
    expect(d.prevKvs.map((kv) => kv.value.toString())).toEqual(["2", "3"]);
    expect(d.header!.revision).toBe(before + 2n);
    expect(await c.get("k")).toBeUndefined();
  });

  it("txn: compares on version, value, create and mod revision; all writes share one revision", async () => {
    const { c } = await setup();
    const create = () =>
      c
        .txn()
        .if(compare.version("lock", "=", 0))
        .onSuccess(op.put("lock", "me"), op.put("owner", "me"))
        .onFailure(op.get("lock"))
        .commit();
    const first = await create();
    expect(first.succeeded).toBe(true);
    const rev = first.header!.revision;
    const lock = (await c.get("lock"))!;
    expect([lock.modRevision, (await c.get("owner"))!.modRevision]).toEqual([rev, rev]);
    const second = await create();
    expect(second.succeeded).toBe(false);
    expect(second.responses[0]!.responseRange!.kvs[0]!.value.toString()).toBe("me");
    expect(second.header!.revision).toBe(rev); // a read-only branch makes no revision
    const ok = await c
      .txn()
      .if(
        compare.value("lock", "=", "me"),
        compare.modRevision("lock", "=", rev),
        compare.createRevision("lock", "<", rev + 1n),
      )
      .onSuccess(op.delete("lock"))
      .commit();
    expect(ok.succeeded).toBe(true);
    // A missing key compares as zeros, except on VALUE, which never holds.
    expect(
      (
        await c
          .txn()
          .if(compare.value("lock", "!=", "x"))
          .commit()
      ).succeeded,
    ).toBe(false);
    expect(
      (
        await c
          .txn()
          .if(compare.modRevision("lock", "=", 0))
          .commit()
      ).succeeded,
    ).toBe(true);
    // All or nothing: a put with an unknown lease fails the whole Txn.
    const err = await rejection(
      c
        .txn()
        .onSuccess(op.put("a", "1"), op.put("b", "2", { lease: 12345n }))
        .commit(),
    );
    expect(err.code).toBe(EtcdErrorCode.LEASE_NOT_FOUND);
    expect(await c.get("a")).toBeUndefined();
    expect((await rejection(c.txn().onSuccess(op.put("a", "1"), op.put("a", "2")).commit())).code).toBe(
      EtcdErrorCode.BAD_REQUEST,
    );
  });

  it("leases: grant, attach, time-to-live with keys, list, revoke deletes the keys", async () => {
    const { c, reg } = await setup();
    const lease = await c.grant(30);
    await c.put("l/1", "a", { lease: lease.id });
    await c.put("l/2", "b", { lease: lease.id });
    const ttl = await c.timeToLive(lease.id, true);
    expect(ttl.grantedTTL).toBe(30n);
    expect(ttl.TTL).toBeGreaterThan(25n);
    expect(ttl.keys.map(String)).toEqual(["l/1", "l/2"]);
    expect((await c.leases()).leases.map((l) => l.ID)).toEqual([lease.id]);
    expect(reg.leases()[0]!.keys).toEqual(["l/1", "l/2"]);
    await c.revoke(lease.id);
    expect((await c.range("l/", { prefix: true, countOnly: true })).count).toBe(0n);
    expect((await c.timeToLive(lease.id)).TTL).toBe(-1n);
    expect((await rejection(c.revoke(lease.id))).code).toBe(EtcdErrorCode.LEASE_NOT_FOUND);
    expect((await rejection(c.put("x", "y", { lease: lease.id }))).code).toBe(EtcdErrorCode.LEASE_NOT_FOUND);
  });

  it("leases expire on the registry's clock unless kept alive; the keep-alive stream renews them", async () => {
    const clock = new ManualClock();
    const { c, reg } = await setup({ clock });
    const kept = await c.grant(10);
    const dropped = await c.grant(10);
    await c.put("kept", "1", { lease: kept.id });
    await c.put("dropped", "1", { lease: dropped.id });
    const keeper = c.keepAlive(kept);
    clock.advance(6_000);
    // The keeper (on the real clock) sends at once; wait until the mock has renewed.
    await until(
      () => reg.leases().find((l) => l.id === kept.id)!.remainingMs === 10_000,
      15_000,
      () => "a keep-alive",
    );
    clock.advance(4_000);
    expect(reg.get("dropped")).toBeUndefined();
    expect(reg.get("kept")).toBe("1");
    keeper.close();
    clock.advance(10_000);
    expect(reg.get("kept")).toBeUndefined();
    expect(reg.leases()).toEqual([]);
  });

  it("watch: history from start_revision with prev_kv, live events in order, cancel, compaction", async () => {
    const { c } = await setup();
    const r1 = (await c.put("w/a", "1")).header!.revision;
    await c.put("w/a", "2");
    await c.delete("w/a");
    const h = collect();
    const w = c.watch({ key: "w/", prefix: true, startRevision: r1, prevKv: true }, h.listener);
    await until(
      () => h.events.length === 3,
      15_000,
      () => `history (${h.events.length})`,
    );
    expect(h.events.map((e) => [e.type, e.kv!.value.toString(), e.prevKv?.value.toString()])).toEqual([
      [0, "1", undefined],
      [0, "2", "1"],
      [1, "", "2"],
    ]);
    for (let i = 0; i < 20; i++) await c.put(`w/${i % 3}`, String(i));
    await until(
      () => h.events.length === 23,
      15_000,
      () => `live events (${h.events.length})`,
    );
    const revs = h.events.map((e) => e.kv!.modRevision);
    expect(revs).toEqual([...revs].sort((a, b) => (a < b ? -1 : 1)));
    w.cancel();
    await c.put("w/after", "x");
    // A watcher from a compacted revision is told to re-list.
    const head = (await c.put("w/z", "z")).header!.revision;
    await c.compact(head);
    let compactedAt = 0n;
    c.watch(
      { key: "w/", prefix: true, startRevision: r1 },
      { events: () => {}, compacted: (rev) => (compactedAt = rev) },
    );
    await until(
      () => compactedAt === head,
      15_000,
      () => "compacted",
    );
    expect(h.events.length).toBe(23);
  });
});

describe("mock registry: Registrar and Discovery run against it unchanged", () => {
  it("register, resolve, watch sees add, update and remove; services() shows the registrations", async () => {
    const { c, reg } = await setup();
    const r = new Registrar({ client: c, prefix: "/app", ttlS: 10 });
    closers.push(() => r.close());
    const d = new Discovery({ client: c, prefix: "/app" });
    closers.push(() => d.close());
    await r.register({ service: "orders", id: "o-1", address: "10.0.0.1", port: 80, zone: "z1" });
    expect((await d.resolve("orders")).instances.map((i) => i.id)).toEqual(["o-1"]);
    const snaps: ServiceSnapshot[] = [];
    d.watch("orders", (s) => snaps.push(s));
    await r.register({ service: "orders", id: "o-2", address: "10.0.0.2", port: 80 });
    await until(
      () => snaps.at(-1)?.instances.length === 2,
      15_000,
      () => "add seen",
    );
    expect(reg.services("/app").orders!.map((i) => [i.id, i.address, i.zone])).toEqual([
      ["o-1", "10.0.0.1", "z1"],
      ["o-2", "10.0.0.2", undefined],
    ]);
    await r.update("orders", "o-1", { weight: 5 });
    await until(
      () => snaps.at(-1)?.instances[0]?.weight === 5,
      15_000,
      () => "update seen",
    );
    await r.deregister("orders", "o-2");
    await until(
      () =>
        snaps
          .at(-1)
          ?.instances.map((i) => i.id)
          .join() === "o-1",
      15_000,
      () => "remove seen",
    );
    expect(reg.leases().map((l) => l.id)).toEqual([r.leaseId]);
    await r.close();
    await until(
      () => snaps.at(-1)?.instances.length === 0,
      15_000,
      () => "close seen",
    );
    expect(reg.services("/app")).toEqual({});
    expect(reg.leases()).toEqual([]);
  });

  it("a lease that expires removes its instances; the registrar re-registers under a new lease", async () => {
    const clock = new ManualClock();
    const { c, reg } = await setup({ clock });
    const r = new Registrar({ client: c, prefix: "", ttlS: 3 });
    closers.push(() => r.close());
    const d = new Discovery({ client: c });
    closers.push(() => d.close());
    const events: string[] = [];
    r.on("lost", () => events.push("lost"));
    r.on("reregistered", () => events.push("reregistered"));
    await r.register({ service: "api", id: "a-1", address: "127.0.0.1", port: 9000 });
    const snaps: ServiceSnapshot[] = [];
    d.watch("api", (s) => snaps.push(s));
    await until(
      () => snaps.at(-1)?.instances.length === 1,
      15_000,
      () => "first set",
    );
    const first = r.leaseId!;
    // The process stops answering (as far as the registry knows): the lease expires.
    clock.advance(3_000);
    expect(reg.instances("api")).toEqual([]);
    await until(
      () => snaps.some((s) => s.instances.length === 0),
      15_000,
      () => "removal seen by discovery",
    );
    // The keeper's next keep-alive is answered with TTL 0: lost, then re-registered.
    await until(
      () => events.join() === "lost,reregistered",
      15_000,
      () => `re-registration (${events})`,
    );
    expect(r.leaseId).not.toBe(first);
    expect(reg.instances("api").map((i) => i.id)).toEqual(["a-1"]);
    await until(
      () => snaps.at(-1)?.instances.length === 1,
      15_000,
      () => "instance back in discovery",
    );
    // expireLease does the same without moving time.
    const second = r.leaseId!;
    expect(reg.expireLease(second)).toBe(true);
    expect(reg.expireLease(second)).toBe(false);
    await until(
      () => r.leaseId !== undefined && r.leaseId !== second && reg.instances("api").length === 1,
      15_000,
      () => "second re-registration",
    );
  });

  it("setUnavailable: discovery keeps the last set, marked stale, and is fresh again after", async () => {
    const { c, reg } = await setup();
    reg.put("/services/web/w-1", JSON.stringify({ Op: 0, Addr: "127.0.0.1:1" }));
    const d = new Discovery({ client: c });
    closers.push(() => d.close());
    const snaps: ServiceSnapshot[] = [];
    d.watch("web", (s) => snaps.push(s));
    await until(
      () => snaps.at(-1)?.instances.length === 1,
      15_000,
      () => "first set",
    );
    reg.setUnavailable(true);
    await until(
      () => snaps.at(-1)?.stale === true,
      15_000,
      () => "stale",
    );
    expect(snaps.at(-1)!.instances.map((i) => i.id)).toEqual(["w-1"]);
    reg.put("/services/web/w-2", JSON.stringify({ Op: 0, Addr: "127.0.0.1:2" }));
    reg.setUnavailable(false);
    await until(
      () => snaps.at(-1)?.stale === false && snaps.at(-1)?.instances.length === 2,
      15_000,
      () => `fresh with w-2 (last: ${JSON.stringify(snaps.at(-1)?.instances.map((i) => i.id))})`,
    );
  });
});
