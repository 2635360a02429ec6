// One gRPC channel per endpoint, shared by the KV, Watch, Lease, Auth, Maintenance and Cluster
// clients of that endpoint, and a round-robin cursor over the endpoints. The cursor moves on
// Unavailable (etcd clientv3's balancer does the same); every move is published on
// `sdk:registry:endpoint`.

import { Channel, type ChannelCredentials, type ChannelOptions } from "@grpc/grpc-js";
import { etcdserverpb } from "@regmesh/proto";
import { channels, publish } from "./channels.js";
import { EtcdError, EtcdErrorCode } from "./errors.js";
import { GRPC_MESSAGE_BYTES_MAX } from "./limits.js";
import type { Logger } from "./logger.js";

export interface EndpointClients {
  readonly endpoint: string;
  readonly channel: Channel;
  readonly kv: etcdserverpb.KVClient;
  readonly watch: etcdserverpb.WatchClient;
  readonly lease: etcdserverpb.LeaseClient;
  readonly auth: etcdserverpb.AuthClient;
  readonly maintenance: etcdserverpb.MaintenanceClient;
  readonly cluster: etcdserverpb.ClusterClient;
}

export class EndpointPool {
  private readonly clients = new Map<string, EndpointClients>();
  private index = 0;
  private closed = false;

  constructor(
    readonly endpoints: readonly string[],
    private readonly credentials: ChannelCredentials,
    private readonly options: ChannelOptions,
    private readonly logger: Logger,
  ) {
    if (endpoints.length === 0) {
      throw new EtcdError(EtcdErrorCode.BAD_REQUEST, "at least one endpoint is required");
    }
  }

  get size(): number {
    return this.endpoints.length;
  }

  /** The endpoint calls go to now. */
  current(): EndpointClients {
    return this.clientsFor(this.endpoints[this.index]!);
  }

  /** Moves to the next endpoint (round robin) and returns it. */
  advance(reason: string): EndpointClients {
    const from = this.endpoints[this.index]!;
    this.index = (this.index + 1) % this.endpoints.length;
    const to = this.endpoints[this.index]!;
    if (from !== to) {
      this.logger.debug({ from, to, reason }, "etcd: switching endpoint");
      publish(channels.endpoint, { from, to, reason });
    }
    return this.current();
  }

  /** Moves away from `endpoint` if it is still the current one (a stream that broke there). */
  advanceFrom(endpoint: string, reason: string): EndpointClients {
    if (this.endpoints[this.index] === endpoint) return this.advance(reason);
    return this.current();
  }

  /** The clients of one endpoint of this pool (a probe tries each in turn, without moving the cursor). */
  clientsFor(endpoint: string): EndpointClients {
    if (this.closed) throw new EtcdError(EtcdErrorCode.CLOSED, "etcd client is closed");
    let c = this.clients.get(endpoint);
    if (c === undefined) {
      const options: ChannelOptions = {
        "grpc.max_receive_message_length": GRPC_MESSAGE_BYTES_MAX,
        "grpc.initial_reconnect_backoff_ms": 100,
        "grpc.max_reconnect_backoff_ms": 2_000,
        ...this.options,
      };
      const channel = new Channel(endpoint, this.credentials, options);
      const o = { channelOverride: channel };
      c = {
        endpoint,
        channel,
        kv: new etcdserverpb.KVClient(endpoint, this.credentials, o),
        watch: new etcdserverpb.WatchClient(endpoint, this.credentials, o),
        lease: new etcdserverpb.LeaseClient(endpoint, this.credentials, o),
        auth: new etcdserverpb.AuthClient(endpoint, this.credentials, o),
        maintenance: new etcdserverpb.MaintenanceClient(endpoint, this.credentials, o),
        cluster: new etcdserverpb.ClusterClient(endpoint, this.credentials, o),
      };
      this.clients.set(endpoint, c);
    }
    return c;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const c of this.clients.values()) c.channel.close();
    this.clients.clear();
  }
}
