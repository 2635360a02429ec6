// Lease keep-alive (etcd clientv3's lessor, made explicit about time).
//
// The keeper sends LeaseKeepAlive at TTL/3 and tracks a deadline: the send time of the request
// whose answer last arrived, plus the TTL that answer granted. The server's expiry is no earlier
// than that (it restarts the TTL when it *receives* the request), so when the deadline passes
// without a newer answer the lease may already be gone on the server: the keeper declares it LOST
// then, not later, and emits `lost`. An answer with TTL <= 0 means the lease is gone (revoked or
// expired) and is LOST at once. A broken stream is re-opened with back-off; the deadline keeps
// running meanwhile. Time comes from an injected Clock, so tests drive the deadline exactly.

import { EventEmitter } from "node:events";
import { channels, publish } from "./channels.js";
import { backoffMs, type Clock, type Timer } from "./clock.js";
import { EtcdError, EtcdErrorCode } from "./errors.js";
import { BACKOFF_INITIAL_MS, BACKOFF_MAX_MS, KEEPALIVES_PER_TTL } from "./limits.js";
import type { Logger } from "./logger.js";

/** One open keep-alive stream, as the keeper needs it (the client adapts grpc-js's duplex). */
export interface KeepAliveStream {
  send(id: bigint): void;
  close(): void;
}

export interface KeepAliveTransport {
  open(handlers: {
    onResponse(res: { ID: bigint; TTL: bigint }): void;
    onError(err: EtcdError): void;
  }): KeepAliveStream;
}

export type LeaseState = "alive" | "lost" | "closed";

export interface LeaseKeeperEvents {
  lost: [EtcdError];
  /** close() was called: the keeper stopped without a loss. */
  closed: [];
  keepalive: [{ ttlS: number; deadlineMs: number }];
}

export class LeaseKeeper extends EventEmitter<LeaseKeeperEvents> {
  private stateValue: LeaseState = "alive";
  private ttlS: number;
  private deadline: number;
  private stream: KeepAliveStream | undefined;
  /** Send times of requests not yet answered; answers come back in order on one stream. */
  private inflight: number[] = [];
  private sendTimer: Timer | undefined;
  private deadlineTimer: Timer | undefined;
  private reopenAttempt = 0;
  private lostError: EtcdError | undefined;

  /**
   * @param grantSentAtMs when the LeaseGrant request was sent: the first deadline is that + TTL.
   */
  constructor(
    readonly id: bigint,
    ttlS: number,
    grantSentAtMs: number,
    private readonly transport: KeepAliveTransport,
    private readonly clock: Clock,
    private readonly logger: Logger,
  ) {
    super();
    if (!(ttlS > 0)) throw new EtcdError(EtcdErrorCode.BAD_REQUEST, `lease TTL must be > 0, got ${ttlS}`);
    this.ttlS = ttlS;
    this.deadline = grantSentAtMs + ttlS * 1000;
    this.armDeadline();
    this.sendNow();
  }

  get state(): LeaseState {
    return this.stateValue;
  }
  /** The clock time at which the lease is declared lost unless a keep-alive answer arrives first. */
  get deadlineMs(): number {
    return this.deadline;
  }
  get ttlSeconds(): number {
    return this.ttlS;
  }
  /** Why the lease was lost, once it is. */
  get error(): EtcdError | undefined {
    return this.lostError;
  }

  private intervalMs(): number {
    return Math.max(1, Math.floor((this.ttlS * 1000) / KEEPALIVES_PER_TTL));
  }

  private sendNow(): void {
    if (this.stateValue !== "alive") return;
    this.sendTimer?.cancel();
    this.sendTimer = undefined;
    try {
      if (this.stream === undefined) {
        this.inflight = [];
        this.stream = this.transport.open({
          onResponse: (res) => this.onResponse(res),
          onError: (err) => this.onStreamError(err),
        });
      }
      this.inflight.push(this.clock.now());
      this.stream.send(this.id);
    } catch (err) {
      this.onStreamError(
        err instanceof EtcdError
          ? err
          : new EtcdError(EtcdErrorCode.UNAVAILABLE, String(err), { cause: err }),
      );
      return;
    }
    this.sendTimer = this.clock.setTimer(() => this.sendNow(), this.intervalMs());
  }

  private onResponse(res: { ID: bigint; TTL: bigint }): void {
    if (this.stateValue !== "alive") return;
    const sentAt = this.inflight.shift() ?? this.clock.now();
    if (res.TTL <= 0n) {
      this.lose(
        new EtcdError(EtcdErrorCode.LEASE_LOST, `lease ${this.id.toString(16)} is gone (revoked or expired)`),
      );
      return;
    }
    this.reopenAttempt = 0;
    this.ttlS = Number(res.TTL);
    const deadline = sentAt + this.ttlS * 1000;
    if (deadline > this.deadline) {
      this.deadline = deadline;
      this.armDeadline();
    }
    this.emit("keepalive", { ttlS: this.ttlS, deadlineMs: this.deadline });
  }

  private onStreamError(err: EtcdError): void {
    if (this.stateValue !== "alive") return;
    this.stream?.close();
    this.stream = undefined;
    this.inflight = [];
    if (err.code === EtcdErrorCode.LEASE_NOT_FOUND) {
      this.lose(new EtcdError(EtcdErrorCode.LEASE_LOST, `lease ${this.id.toString(16)}: ${err.message}`));
      return;
    }
    const delayMs = backoffMs(this.reopenAttempt++, BACKOFF_INITIAL_MS, BACKOFF_MAX_MS);
    this.logger.debug(
      { lease: this.id.toString(16), err: err.message, delayMs },
      "lease: keep-alive stream broke",
    );
    this.sendTimer?.cancel();
    this.sendTimer = this.clock.setTimer(() => this.sendNow(), Math.min(delayMs, this.intervalMs()));
  }

  private armDeadline(): void {
    this.deadlineTimer?.cancel();
    this.deadlineTimer = this.clock.setTimer(() => this.onDeadline(), this.deadline - this.clock.now());
  }

  private onDeadline(): void {
    if (this.stateValue !== "alive") return;
    if (this.clock.now() < this.deadline) {
      this.armDeadline();
      return;
    }
    this.lose(
      new EtcdError(
        EtcdErrorCode.LEASE_LOST,
        `lease ${this.id.toString(16)}: no keep-alive answer before its ${this.ttlS}s deadline`,
      ),
    );
  }

  private lose(err: EtcdError): void {
    this.stateValue = "lost";
    this.lostError = err;
    this.stop();
    this.logger.warn({ lease: this.id.toString(16), err: err.message }, "lease: lost");
    publish(channels.leaseLost, { leaseId: this.id, reason: err.message, atMs: this.clock.now() });
    this.emit("lost", err);
  }

  private stop(): void {
    this.sendTimer?.cancel();
    this.deadlineTimer?.cancel();
    this.sendTimer = undefined;
    this.deadlineTimer = undefined;
    this.stream?.close();
    this.stream = undefined;
  }

  /**
   * Declares the lease lost now, with `err` (the client moved to another registry group, where the
   * lease does not exist). Emits `lost` as any other loss does.
   */
  declareLost(err: EtcdError): void {
    if (this.stateValue !== "alive") return;
    this.lose(err);
  }

  /** Stops keeping the lease alive (it then expires on the server unless revoked). */
  close(): void {
    if (this.stateValue !== "alive") return;
    this.stateValue = "closed";
    this.stop();
    this.emit("closed");
  }
}
