import diagnostics from "node:diagnostics_channel";
import client from "prom-client";
import { describe, expect, it } from "vitest";
import { sdkMetrics } from "../../src/mesh/metrics.js";

describe("sdkMetrics", () => {
  it("turns diagnostics channel messages into Prometheus series, and stops", async () => {
    const registry = new client.Registry();
    const stop = sdkMetrics(registry);
    diagnostics.channel("sdk:mesh:breaker").publish({ service: "orders", instanceId: "o-1", state: "open" });
    diagnostics.channel("sdk:mesh:ejection").publish({
      service: "orders",
      instanceId: "o-2",
      type: "ejected",
      id: "o-2",
      reason: "consecutive-failures",
    });
    diagnostics
      .channel("sdk:registry:group")
      .publish({ from: "primary", to: "standby", reason: "primary unreachable" });
    diagnostics.channel("sdk:policy:rejected").publish({ service: "orders", modRevision: 5n, errors: [] });
    diagnostics.channel("sdk:lease:lost").publish({ leaseId: 1n, reason: "deadline", atMs: 0 });
    const text = await registry.metrics();
    expect(text).toContain('regmesh_sdk_breaker_open{service="orders",instance="o-1"} 1');
    expect(text).toContain('regmesh_sdk_ejections_total{service="orders",reason="consecutive-failures"} 1');
    expect(text).toContain('regmesh_sdk_registry_group{group="standby"} 1');
    expect(text).toContain('regmesh_sdk_registry_group{group="primary"} 0');
    expect(text).toContain('regmesh_sdk_policies_total{service="orders",result="rejected"} 1');
    expect(text).toContain('regmesh_sdk_events_total{channel="sdk:lease:lost"} 1');
    stop();
    diagnostics.channel("sdk:lease:lost").publish({ leaseId: 2n, reason: "deadline", atMs: 0 });
    expect(await registry.metrics()).toContain('regmesh_sdk_events_total{channel="sdk:lease:lost"} 1');
  });
});
