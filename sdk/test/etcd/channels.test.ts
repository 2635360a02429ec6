// Typed events: the map of channel names to message types names exactly the channels the SDK
// has, and the messages the etcd/registry shells publish carry exactly the documented fields.
// They are provoked against the mock registry.

import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "@regmesh/testkit";
import { afterEach, describe, expect, expectTypeOf, it } from "vitest";
import { channels } from "../../src/etcd/channels.js";
import { EtcdClient, type EtcdClientOptions } from "../../src/etcd/client.js";
import {
  SDK_CHANNEL_FIELDS,
  SDK_CHANNEL_NAMES,
  type SdkChannelMessages,
  type SdkChannelName,
  subscribeChannel,
} from "../../src/etcd/events.js";
import type { GroupChange } from "../../src/etcd/groups.js";
import { Discovery } from "../../src/registry/discovery.js";
import { Registrar } from "../../src/registry/registrar.js";
import { MockRegistry } from "../../src/testing/mock-registry.js";
import { until } from "./helpers.js";

const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

/** Records every message of every SDK channel while the test runs. */
function recordAll(): { name: SdkChannelName; message: Record<string, unknown> }[] {
  const seen: { name: SdkChannelName; message: Record<string, unknown> }[] = [];
  for (const name of SDK_CHANNEL_NAMES) {
    closers.push(subscribeChannel(name, (m) => seen.push({ name, message: m as Record<string, unknown> })));
  }
  return seen;
}

async function mock(): Promise<MockRegistry> {
  const reg = await MockRegistry.start();
  closers.push(() => reg.stop());
  return reg;
}

function client(opts: EtcdClientOptions): EtcdClient {
  const c = new EtcdClient({
    requestTimeoutMs: 5_000,
    retryDeadlineMs: 15_000,
    watchProgressIntervalMs: 200,
    watchIdleTimeoutMs: 5_000,
    ...opts,
  });
  closers.push(() => c.close());
  return c;
}

describe("typed diagnostics channels", () => {
  it("the map names exactly the channels in channels.ts, and no name changed", () => {
    const names = Object.values(channels)
      .map((c) => String(c.name))
      .sort();
    expect([...SDK_CHANNEL_NAMES].sort()).toEqual(names);
    for (const name of SDK_CHANNEL_NAMES) expect(name).toMatch(/^sdk:[a-z]+:[a-z]+$/);
  });

  it("subscribers get typed messages; unknown names do not compile", () => {
    const off = subscribeChannel("sdk:registry:group", (m, name) => {
      expectTypeOf(m).toEqualTypeOf<GroupChange>();
      expectTypeOf(name).toEqualTypeOf<"sdk:registry:group">();
    });
    off();
    subscribeChannel("sdk:lease:lost", (m) => {
      expectTypeOf(m.leaseId).toEqualTypeOf<bigint>();
    })();
    expectTypeOf<SdkChannelMessages["sdk:discovery:stale"]>().toEqualTypeOf<{
      service: string;
      stale: boolean;
    }>();
    // @ts-expect-error: not an SDK channel
    subscribeChannel("sdk:no:such", () => {})();
    // A listener is removed by the function returned.
    let calls = 0;
    const off2 = subscribeChannel("sdk:lease:granted", () => calls++);
    channels.leaseGranted.publish({ leaseId: 1n, ttlS: 1 });
    off2();
    channels.leaseGranted.publish({ leaseId: 1n, ttlS: 1 });
    expect(calls).toBe(1);
  });

  it("messages published by the etcd client, registrar and discovery carry exactly the documented fields", async () => {
    const seen = recordAll();
    const reg = await mock();
    const standby = await mock();
    const dead = `127.0.0.1:${await freePort()}`;
    // endpoint: the first endpoint refuses, the client moves on.
    const c = client({
      endpoints: [dead, reg.endpoint],
      standby: {
        endpoints: [standby.endpoint],
        probeIntervalMs: 50,
        probeTimeoutMs: 5_000,
        badProbesToSwitch: 2,
        goodProbesToReturn: 2,
        latencyMsMax: 5_000,
      },
    });
    // lease:granted, then registry:reregistered and lease:lost after the lease is expired.
    const r = new Registrar({ client: c, ttlS: 3 });
    closers.push(() => r.close());
    await r.register({ service: "api", id: "a", address: "127.0.0.1", port: 1 });
    reg.expireLease(r.leaseId!);
    await until(
      () => seen.some((s) => s.name === "sdk:registry:reregistered"),
      15_000,
      () => "re-registration",
    );
    // watch:compacted.
    const head = (await c.put("w", "1")).header!.revision;
    await c.put("w", "2");
    await c.compact(head + 1n);
    c.watch({ key: "w", startRevision: head }, { events: () => {} });
    // cache:rejected.
    const cacheFile = join(tmpdir(), `regmesh-bad-cache-${process.pid}-${Date.now()}.bin`);
    writeFileSync(cacheFile, "not a cache file");
    // discovery:stale and watch:reconnect, then registry:group, when the primary goes away.
    const d = new Discovery({ client: c, cacheFile });
    closers.push(() => d.close());
    await d.resolve("api");
    d.watch("api", () => {});
    reg.setUnavailable(true);
    await until(
      () => seen.some((s) => s.name === "sdk:registry:group"),
      15_000,
      () => "group switch",
    );
    const want: SdkChannelName[] = [
      "sdk:registry:endpoint",
      "sdk:lease:granted",
      "sdk:lease:lost",
      "sdk:registry:reregistered",
      "sdk:watch:compacted",
      "sdk:cache:rejected",
      "sdk:discovery:stale",
      "sdk:watch:reconnect",
      "sdk:registry:group",
    ];
    await until(
      () => want.every((n) => seen.some((s) => s.name === n)),
      15_000,
      () => `every channel (missing: ${want.filter((n) => !seen.some((s) => s.name === n))})`,
    );
    for (const { name, message } of seen) {
      expect(Object.keys(message).sort(), name).toEqual([...SDK_CHANNEL_FIELDS[name]].sort());
    }
    const granted = seen.find((s) => s.name === "sdk:lease:granted")!.message;
    expect(typeof granted.leaseId).toBe("bigint");
    const group = seen.find((s) => s.name === "sdk:registry:group")!.message;
    expect(group).toMatchObject({ from: "primary", to: "standby" });
  });
});
