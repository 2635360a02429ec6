// Prometheus metrics for the SDK, fed by its diagnostics channels (events.ts), so the code that
// publishes never knows about metrics (STYLE.md §4). `sdkMetrics(registry)` registers the
// counters and gauges below on a prom-client registry and returns the function that stops it.

import client from "prom-client";
import { SDK_CHANNEL_NAMES, subscribeChannel } from "../etcd/events.js";

export function sdkMetrics(registry: client.Registry): () => void {
  const r = [registry];
  const events = new client.Counter({
    name: "regmesh_sdk_events_total",
    help: "SDK events by diagnostics channel (sdk:lease:lost, sdk:watch:reconnect, ...).",
    labelNames: ["channel"],
    registers: r,
  });
  const breaker = new client.Gauge({
    name: "regmesh_sdk_breaker_open",
    help: "1 when an instance's breaker is open, 0.5 half-open, 0 closed.",
    labelNames: ["service", "instance"],
    registers: r,
  });
  const ejections = new client.Counter({
    name: "regmesh_sdk_ejections_total",
    help: "Outlier ejections by service and reason.",
    labelNames: ["service", "reason"],
    registers: r,
  });
  const group = new client.Gauge({
    name: "regmesh_sdk_registry_group",
    help: "1 for the registry group in use (primary or standby).",
    labelNames: ["group"],
    registers: r,
  });
  const stale = new client.Gauge({
    name: "regmesh_sdk_discovery_stale",
    help: "1 while a service's cached instance set is stale.",
    labelNames: ["service"],
    registers: r,
  });
  const policies = new client.Counter({
    name: "regmesh_sdk_policies_total",
    help: "Policies read from the registry, by service and result (applied or rejected).",
    labelNames: ["service", "result"],
    registers: r,
  });
  group.set({ group: "primary" }, 1);
  const offs = SDK_CHANNEL_NAMES.map((name) => subscribeChannel(name, () => events.inc({ channel: name })));
  offs.push(
    subscribeChannel("sdk:mesh:breaker", (m) =>
      breaker.set(
        { service: m.service, instance: m.instanceId },
        m.state === "open" ? 1 : m.state === "half-open" ? 0.5 : 0,
      ),
    ),
    subscribeChannel("sdk:mesh:ejection", (m) => {
      if (m.type === "ejected") ejections.inc({ service: m.service, reason: m.reason });
    }),
    subscribeChannel("sdk:registry:group", (m) => {
      group.set({ group: m.from }, 0);
      group.set({ group: m.to }, 1);
    }),
    subscribeChannel("sdk:discovery:stale", (m) => stale.set({ service: m.service }, m.stale ? 1 : 0)),
    subscribeChannel("sdk:policy:applied", (m) => policies.inc({ service: m.service, result: "applied" })),
    subscribeChannel("sdk:policy:rejected", (m) => policies.inc({ service: m.service, result: "rejected" })),
  );
  return () => {
    for (const off of offs) off();
  };
}
