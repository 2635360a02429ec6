// Prometheus metrics with etcd's names where etcd has them.

import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";
import type { EtcdServer } from "../server/node.js";

export class Metrics {
  readonly registry = new Registry();
  readonly contentType = this.registry.contentType;
  readonly proposalsApplied: Counter;
  readonly proposalsFailed: Counter;

  constructor(server: EtcdServer) {
    const r = this.registry;
    collectDefaultMetrics({ register: r });
    new Gauge({
      name: "etcd_server_has_leader",
      help: "Whether or not a leader exists. 1 is existence, 0 is not.",
      registers: [r],
      collect() {
        this.set(1);
      },
    });
    new Gauge({
      name: "etcd_server_is_leader",
      help: "Whether or not this member is a leader. 1 if is, 0 otherwise.",
      registers: [r],
      collect() {
        this.set(1);
      },
    });
    new Gauge({
      name: "etcd_mvcc_db_total_size_in_bytes",
      help: "Total size of the underlying database physically allocated in bytes.",
      registers: [r],
      collect() {
        this.set(server.dbSize());
      },
    });
    new Gauge({
      name: "etcd_debugging_mvcc_keys_total",
      help: "Total number of keys.",
      registers: [r],
      collect() {
        this.set(server.kv.index.size);
      },
    });
    new Gauge({
      name: "etcd_debugging_mvcc_watcher_total",
      help: "Total number of watchers.",
      registers: [r],
      collect() {
        const c = server.watchable.counts;
        this.set(c.synced + c.unsynced);
      },
    });
    new Gauge({
      name: "etcd_debugging_mvcc_slow_watcher_total",
      help: "Total number of unsynced slow watchers.",
      registers: [r],
      collect() {
        this.set(server.watchable.counts.unsynced);
      },
    });
    new Gauge({
      name: "etcd_debugging_lease_total",
      help: "The number of leases.",
      registers: [r],
      collect() {
        this.set(server.lessor.size);
      },
    });
    new Gauge({
      name: "etcd_mvcc_current_revision",
      help: "The current revision of the store.",
      registers: [r],
      collect() {
        this.set(server.rev);
      },
    });
    this.proposalsApplied = new Counter({
      name: "etcd_server_proposals_applied_total",
      help: "The total number of consensus proposals applied.",
      registers: [r],
    });
    this.proposalsFailed = new Counter({
      name: "etcd_server_proposals_failed_total",
      help: "The total number of failed proposals seen.",
      registers: [r],
    });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
