// Registry groups in-process: two mock registries as primary and standby. The whole
// follow-the-switch path (watchers re-list, leases re-granted, registrations re-done) runs here in
// a second; groups.proc.test.ts proves the same against real clusters.

import type { mvccpb } from "@regmesh/proto";
import { afterEach, describe, expect, it } from "vitest";
import { EtcdClient } from "../../src/etcd/client.js";
import { EtcdError, EtcdErrorCode } from "../../src/etcd/errors.js";
import type { GroupChange } from "../../src/etcd/groups.js";
import { Discovery, type ServiceSnapshot } from "../../src/registry/discovery.js";
import { Registrar } from "../../src/registry/registrar.js";
import { MockRegistry } from "../../src/testing/mock-registry.js";
import { until } from "./helpers.js";

const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

async function setup() {
  const primary = await MockRegistry.start();
  closers.push(() => primary.stop());
  const standby = await MockRegistry.start();
  closers.push(() => standby.stop());
  const c = new EtcdClient({
    endpoints: [primary.endpoint],
    requestTimeoutMs: 5_000,
    retryDeadlineMs: 15_000,
    watchProgressIntervalMs: 200,
    watchIdleTimeoutMs: 5_000,
    standby: {
      endpoints: [standby.endpoint],
      probeIntervalMs: 50,
      probeTimeoutMs: 5_000,
      latencyMsMax: 5_000,
      badProbesToSwitch: 2,
      goodProbesToReturn: 2,
    },
  });
  closers.push(() => c.close());
  const changes: GroupChange[] = [];
  c.on("group", (g) => changes.push(g));
  return { primary, standby, c, changes };
}

const record = (port: number) => JSON.stringify({ Op: 0, Addr: `127.0.0.1:${port}` });

describe("registry groups against two mock registries", () => {
  it("registrations, leases and discovery follow the client to the standby and back", async () => {
    const { primary, standby, c, changes } = await setup();
    const r = new Registrar({ client: c, ttlS: 5 });
    closers.push(() => r.close());
    const d = new Discovery({ client: c });
    closers.push(() => d.close());
    await r.register({ service: "api", id: "me", address: "127.0.0.1", port: 1 });
    primary.put("/services/api/p-only", record(2));
    // The standby's revisions run far ahead of the primary's: a watch resumed "by revision" across
    // the groups would skip the primary's next events.
    for (let i = 0; i < 50; i++) standby.put("/filler", String(i));
    standby.put("/services/api/s-only", record(3));
    const snaps: ServiceSnapshot[] = [];
    d.watch("api", (s) => snaps.push(s));
    const ids = () =>
      snaps
        .at(-1)
        ?.instances.map((i) => i.id)
        .join() ?? "";
    await until(
      () => ids() === "me,p-only",
      15_000,
      () => `first set (${ids()})`,
    );
    const firstLease = r.leaseId!;

    primary.setUnavailable(true);
    await until(
      () => c.group === "standby",
      15_000,
      () => "move to the standby",
    );
    expect(changes.map((g) => g.to)).toEqual(["standby"]);
    expect(c.groupEpoch).toBe(1);
    await until(
      () => standby.instances("api").some((i) => i.id === "me"),
      15_000,
      () => "registration on the standby",
    );
    expect(standby.leases().map((l) => l.id)).toEqual([r.leaseId]);
    expect(r.leaseId).not.toBe(firstLease);
    await until(
      () => ids() === "me,s-only",
      15_000,
      () => `discovery from the standby (${ids()})`,
    );

    primary.setUnavailable(false);
    await until(
      () => c.group === "primary",
      15_000,
      () => "move back",
    );
    expect(changes.map((g) => g.to)).toEqual(["standby", "primary"]);
    await until(
      () => primary.leases().some((l) => l.id === r.leaseId && l.keys.includes("/services/api/me")),
      15_000,
      () => "registration back on the primary under a new lease",
    );
    await until(
      () => ids() === "me,p-only",
      15_000,
      () => `discovery from the primary (${ids()})`,
    );
    // The watch on the primary is live from the primary's own revision.
    primary.put("/services/api/p-new", record(4));
    await until(
      () => ids() === "me,p-new,p-only",
      15_000,
      () => `a new event on the primary (${ids()})`,
    );
  });

  it("a raw watcher is told to re-list (groupSwitched, else canceled with GROUP_SWITCHED); an old lease is lost", async () => {
    const { primary, c } = await setup();
    const lease = await c.grant(30);
    let switched: EtcdError | undefined;
    let canceled: EtcdError | undefined;
    let connected = 0;
    const seen: mvccpb.Event[] = [];
    c.watch(
      { key: "a" },
      {
        events: (evs) => seen.push(...evs),
        groupSwitched: (err) => (switched = err),
        connected: () => connected++,
      },
    );
    c.watch(
      { key: "b" },
      { events: () => {}, canceled: (err) => (canceled = err), connected: () => connected++ },
    );
    await until(
      () => connected === 2,
      15_000,
      () => "watchers connected",
    );
    primary.setUnavailable(true);
    await until(
      () => switched !== undefined && canceled !== undefined,
      15_000,
      () => "watchers told",
    );
    expect(switched!.code).toBe(EtcdErrorCode.GROUP_SWITCHED);
    expect(canceled!.code).toBe(EtcdErrorCode.GROUP_SWITCHED);
    expect(canceled!.message).toMatch(/from primary to standby: primary unreachable/);
    // A lease granted in the primary is not kept alive in the standby: lost at once.
    const keeper = c.keepAlive(lease);
    const lost = await new Promise<EtcdError>((resolve) => keeper.once("lost", resolve));
    expect(lost.code).toBe(EtcdErrorCode.GROUP_SWITCHED);
    expect(seen).toEqual([]);
  });

  it("standby endpoints must differ from the primary's", () => {
    expect(
      () => new EtcdClient({ endpoints: ["127.0.0.1:1"], standby: { endpoints: ["127.0.0.1:1"] } }),
    ).toThrow(EtcdError);
  });
});
