// Remediation hooks (--webhooks, --webhook-secret): the mesher tells operators' automation when
// something needs a hand, by POSTing a small JSON event to each configured URL.
//
// - `Webhooks` delivers. Each (event, URL) pair is one delivery with its own id
//   (x-mesher-delivery, kept across retries so receivers can deduplicate), signed GitHub-style
//   (x-mesher-signature: sha256=<hex HMAC-SHA256 of the exact body>) when a secret is set.
//   Network errors, timeouts, 5xx and 429 are retried with exponential back-off and jitter up
//   to maxAttempts; any other status is the receiver's final answer. `fire()` never waits and
//   never throws: deliveries sit in a bounded queue (the oldest is dropped, with a log line,
//   when it is full), a few go out at a time, and `close()` waits for them up to a deadline.
// - `watchRemediation` decides when to fire: an instance's breaker opens (the
//   `sdk:mesh:breaker` channel), a routed service's healthy instances drop under
//   --webhook-min-instances, or the registry answers slower than --webhook-registry-latency
//   (or not at all). Each condition fires once when it starts and re-arms only after it ended,
//   so a flapping breaker or a long outage does not flood the receiver.
//
// Every limit is a named constant below (STYLE.md §3); time goes through the SDK's Clock so
// tests can replace it.

import { createHmac, randomUUID } from "node:crypto";
import diagnostics from "node:diagnostics_channel";
import { type Clock, isReportedHealthy, type Logger, type Mesh, systemClock, type Timer } from "@regmesh/sdk";
import { mesherVersion } from "./version.js";

/** Deliveries waiting (queued or backing off) before the oldest is dropped. */
export const WEBHOOK_QUEUE_MAX_DEFAULT = 1_000;
/** Deliveries on the wire at once, over all URLs. */
export const WEBHOOK_CONCURRENCY_DEFAULT = 4;
/** Tries of one delivery, the first included. */
export const WEBHOOK_ATTEMPTS_MAX_DEFAULT = 5;
/** Deadline of one POST, response headers included. */
export const WEBHOOK_REQUEST_TIMEOUT_MS_DEFAULT = 5_000;
/** Back-off before the second try; doubles per try up to the max, with jitter. */
export const WEBHOOK_BACKOFF_INITIAL_MS_DEFAULT = 500;
export const WEBHOOK_BACKOFF_MAX_MS_DEFAULT = 30_000;
/** How long close() waits for pending deliveries unless told otherwise. */
export const WEBHOOK_CLOSE_DEADLINE_MS_DEFAULT = 5_000;
/** How often watchRemediation checks instance counts and probes the registry. */
export const REMEDIATION_INTERVAL_MS_DEFAULT = 5_000;
/** Breaker states remembered for once-per-opening; beyond this the oldest are forgotten. */
export const REMEDIATION_BREAKERS_MAX = 10_000;
/** Unhealthy instance ids listed in a low-instances event. */
const UNHEALTHY_IDS_LISTED_MAX = 20;

export type RemediationEventType = "breaker-open" | "low-instances" | "registry-latency";

export interface RemediationEvent {
  type: RemediationEventType;
  service?: string;
  instanceId?: string;
  detail: Record<string, unknown>;
}

/** The JSON body of every delivery. */
export interface WebhookPayload {
  type: RemediationEventType;
  service: string | null;
  instanceId: string | null;
  detail: Record<string, unknown>;
  /** When the mesher saw the condition (ISO 8601, UTC). */
  at: string;
  /** The mesher that sent it: its local app's service and instance id, when it has one. */
  mesher: { service: string | null; instance: string | null };
}

export interface WebhooksOptions {
  urls: readonly string[];
  /** HMAC-SHA256 key; absent means deliveries are not signed. */
  secret?: string;
  logger: Logger;
  /** Timers for back-off and request deadlines. */
  clock?: Clock;
  /** Wall-clock time in ms since the epoch, for `at` (the Clock is monotonic). */
  wallClockMs?: () => number;
  maxAttempts?: number;
  fetchImpl?: typeof fetch;
  /** This mesher's identity, sent as `mesher` in every payload. */
  self?: { service?: string; instance?: string };
  queueMax?: number;
  concurrency?: number;
  requestTimeoutMs?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** Random source for jitter (tests pass a fixed one). */
  random?: () => number;
}

export interface WebhookStats {
  queued: number;
  waiting: number;
  inflight: number;
  delivered: number;
  failed: number;
  dropped: number;
}

/** `{ deliveryId, type, url, outcome, attempts, status? }` per finished delivery. */
export const webhookDeliveryChannel = diagnostics.channel("mesher:webhook:delivery");

export type DeliveryOutcome = "delivered" | "failed" | "dropped" | "abandoned";

interface Delivery {
  readonly id: string;
  readonly seq: number;
  readonly url: string;
  readonly type: RemediationEventType;
  readonly body: string;
  attempts: number;
  timer: Timer | undefined;
  abort: AbortController | undefined;
}

/** URLs in logs without query or credentials, which may carry tokens. */
function redact(url: string): string {
  const u = new URL(url);
  return `${u.protocol}//${u.host}${u.pathname}`;
}

/** GitHub's X-Hub-Signature-256 form: "sha256=" and the hex HMAC-SHA256 of the raw body. */
export function webhookSignature(secret: string, body: string): string {
  return `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
}

export class Webhooks {
  private readonly urls: readonly string[];
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly fetchImpl: typeof fetch;
  private readonly maxAttempts: number;
  private readonly queueMax: number;
  private readonly concurrency: number;
  private readonly requestTimeoutMs: number;
  private readonly backoffInitialMs: number;
  private readonly backoffMaxMs: number;
  private readonly random: () => number;
  private readonly wallClockMs: () => number;
  /** Ready to send, oldest first. */
  private readonly queue: Delivery[] = [];
  /** Backing off before their next try. */
  private readonly waiting = new Set<Delivery>();
  private readonly inflight = new Set<Delivery>();
  private readonly idle = new Set<() => void>();
  private seq = 0;
  private closed = false;
  private readonly counts = { delivered: 0, failed: 0, dropped: 0 };

  constructor(private readonly opts: WebhooksOptions) {
    for (const u of opts.urls) {
      let url: URL | undefined;
      try {
        url = new URL(u);
      } catch {
        url = undefined;
      }
      if (url === undefined || (url.protocol !== "http:" && url.protocol !== "https:")) {
        throw new Error(`webhook URL ${JSON.stringify(u)}: want an http:// or https:// URL`);
      }
    }
    this.urls = [...opts.urls];
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger;
    this.fetchImpl = opts.fetchImpl ?? globalThis.fetch;
    this.maxAttempts = Math.max(1, opts.maxAttempts ?? WEBHOOK_ATTEMPTS_MAX_DEFAULT);
    this.queueMax = Math.max(1, opts.queueMax ?? WEBHOOK_QUEUE_MAX_DEFAULT);
    this.concurrency = Math.max(1, opts.concurrency ?? WEBHOOK_CONCURRENCY_DEFAULT);
    this.requestTimeoutMs = opts.requestTimeoutMs ?? WEBHOOK_REQUEST_TIMEOUT_MS_DEFAULT;
    this.backoffInitialMs = opts.backoffInitialMs ?? WEBHOOK_BACKOFF_INITIAL_MS_DEFAULT;
    this.backoffMaxMs = opts.backoffMaxMs ?? WEBHOOK_BACKOFF_MAX_MS_DEFAULT;
    this.random = opts.random ?? Math.random;
    this.wallClockMs = opts.wallClockMs ?? Date.now;
  }

  /** Queues `event` for every URL and returns at once. Never throws. */
  fire(event: RemediationEvent): void {
    if (this.urls.length === 0) return;
    if (this.closed) {
      this.logger.warn({ type: event.type, service: event.service }, "webhook event after close; not sent");
      return;
    }
    const payload: WebhookPayload = {
      type: event.type,
      service: event.service ?? null,
      instanceId: event.instanceId ?? null,
      detail: event.detail,
      at: new Date(this.wallClockMs()).toISOString(),
      mesher: { service: this.opts.self?.service ?? null, instance: this.opts.self?.instance ?? null },
    };
    let body: string;
    try {
      body = JSON.stringify(payload);
    } catch (err) {
      this.logger.error(
        { type: event.type, err: (err as Error).message },
        "webhook event is not JSON; not sent",
      );
      return;
    }
    for (const url of this.urls) {
      while (this.queue.length + this.waiting.size >= this.queueMax) this.dropOldest();
      this.queue.push({
        id: randomUUID(),
        seq: ++this.seq,
        url,
        type: event.type,
        body,
        attempts: 0,
        timer: undefined,
        abort: undefined,
      });
    }
    this.pump();
  }

  stats(): WebhookStats {
    return {
      queued: this.queue.length,
      waiting: this.waiting.size,
      inflight: this.inflight.size,
      ...this.counts,
    };
  }

  /**
   * Stops taking events and waits up to `deadlineMs` for pending deliveries (retries due before
   * the deadline still go). What is left then is abandoned, with a log line; resolves with how many.
   */
  async close(deadlineMs = WEBHOOK_CLOSE_DEADLINE_MS_DEFAULT): Promise<{ abandoned: number }> {
    this.closed = true;
    if (!this.busy()) return { abandoned: 0 };
    let timer: Timer | undefined;
    let done!: () => void;
    const drained = new Promise<void>((r) => (done = r));
    this.idle.add(done);
    await Promise.race([drained, new Promise<void>((r) => (timer = this.clock.setTimer(r, deadlineMs)))]);
    timer?.cancel();
    this.idle.delete(done);
    const left = [...this.queue, ...this.waiting, ...this.inflight];
    this.queue.length = 0;
    for (const d of this.waiting) d.timer?.cancel();
    this.waiting.clear();
    for (const d of this.inflight) d.abort?.abort();
    this.inflight.clear();
    for (const d of left) this.finish(d, "abandoned");
    if (left.length > 0) {
      this.logger.warn({ abandoned: left.length, deadlineMs }, "webhooks: deliveries abandoned at close");
    }
    return { abandoned: left.length };
  }

  // -------------------------------------------------------------------------------------------

  private busy(): boolean {
    return this.queue.length + this.waiting.size + this.inflight.size > 0;
  }

  private dropOldest(): void {
    let oldest: Delivery | undefined = this.queue[0];
    for (const d of this.waiting) if (oldest === undefined || d.seq < oldest.seq) oldest = d;
    if (oldest === undefined) return;
    if (this.waiting.delete(oldest)) oldest.timer?.cancel();
    else this.queue.shift();
    this.counts.dropped += 1;
    this.logger.warn(
      { deliveryId: oldest.id, type: oldest.type, url: redact(oldest.url), queueMax: this.queueMax },
      "webhook delivery dropped: queue full, oldest goes",
    );
    this.finish(oldest, "dropped");
  }

  private pump(): void {
    while (this.inflight.size < this.concurrency && this.queue.length > 0) {
      const d = this.queue.shift()!;
      this.inflight.add(d);
      void this.send(d);
    }
    if (!this.busy()) for (const f of [...this.idle]) f();
  }

  private async send(d: Delivery): Promise<void> {
    d.attempts += 1;
    const abort = new AbortController();
    d.abort = abort;
    const deadline = this.clock.setTimer(() => abort.abort(new Error("timed out")), this.requestTimeoutMs);
    const headers: Record<string, string> = {
      "content-type": "application/json",
      "user-agent": `mesher/${mesherVersion}`,
      "x-mesher-event": d.type,
      "x-mesher-delivery": d.id,
    };
    if (this.opts.secret !== undefined)
      headers["x-mesher-signature"] = webhookSignature(this.opts.secret, d.body);
    let status: number | undefined;
    let retryAfterMs: number | undefined;
    let error: string | undefined;
    try {
      const res = await this.fetchImpl(d.url, {
        method: "POST",
        headers,
        body: d.body,
        signal: abort.signal,
        // A redirect is the receiver's configuration problem; following it would re-send (or,
        // for 301/302, turn the POST into a GET).
        redirect: "manual",
      });
      status = res.status;
      const ra = res.headers.get("retry-after");
      if (ra !== null && /^\d{1,6}$/.test(ra.trim())) retryAfterMs = Number(ra.trim()) * 1_000;
      await res.body?.cancel().catch(() => {});
    } catch (err) {
      error = abort.signal.aborted ? `timed out after ${this.requestTimeoutMs} ms` : (err as Error).message;
    } finally {
      deadline.cancel();
      d.abort = undefined;
    }
    // close() may have abandoned this delivery while it was on the wire.
    if (!this.inflight.delete(d)) return;
    const ok = status !== undefined && status >= 200 && status < 300;
    const retryable = status === undefined || status >= 500 || status === 429;
    if (ok) {
      this.counts.delivered += 1;
      this.logger.debug(
        { deliveryId: d.id, type: d.type, url: redact(d.url), attempts: d.attempts },
        "webhook delivered",
      );
      this.finish(d, "delivered", status);
    } else if (retryable && d.attempts < this.maxAttempts) {
      const cap = Math.min(this.backoffMaxMs, this.backoffInitialMs * 2 ** Math.min(d.attempts - 1, 20));
      // Half fixed, half random ("equal jitter"): spreads retries without ever retrying at once.
      let delayMs = Math.floor(cap / 2 + (this.random() * cap) / 2);
      if (retryAfterMs !== undefined) delayMs = Math.max(delayMs, Math.min(retryAfterMs, this.backoffMaxMs));
      this.logger.info(
        { deliveryId: d.id, type: d.type, url: redact(d.url), attempts: d.attempts, status, error, delayMs },
        "webhook delivery failed; retrying",
      );
      this.waiting.add(d);
      d.timer = this.clock.setTimer(() => {
        d.timer = undefined;
        if (!this.waiting.delete(d)) return;
        this.queue.push(d);
        this.pump();
      }, delayMs);
    } else {
      this.counts.failed += 1;
      this.logger.warn(
        { deliveryId: d.id, type: d.type, url: redact(d.url), attempts: d.attempts, status, error },
        retryable
          ? "webhook delivery failed; giving up after the last attempt"
          : "webhook delivery refused by the receiver",
      );
      this.finish(d, "failed", status);
    }
    this.pump();
  }

  private finish(d: Delivery, outcome: DeliveryOutcome, status?: number): void {
    if (webhookDeliveryChannel.hasSubscribers) {
      webhookDeliveryChannel.publish({
        deliveryId: d.id,
        type: d.type,
        url: redact(d.url),
        outcome,
        attempts: d.attempts,
        status,
      });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// When to fire

export interface RemediationOptions {
  webhooks: Pick<Webhooks, "fire">;
  mesh: Pick<Mesh, "tracked" | "snapshot" | "breakerStates">;
  /** Fire "low-instances" when a routed service has fewer healthy instances (0: never). */
  minInstances: number;
  /** Fire "registry-latency" when a probe takes longer than this, or fails. */
  registryLatencyMs: number;
  /** One registry round trip; resolves with its latency in ms, rejects when the registry is down. */
  probeRegistry: () => Promise<number>;
  intervalMs?: number;
  clock?: Clock;
  logger?: Logger;
}

interface BreakerMessage {
  service: string;
  instanceId: string;
  state: "open" | "half-open" | "closed";
}

const BREAKER_CHANNEL = "sdk:mesh:breaker";
const INSTANCES_CHANNEL = "sdk:mesh:instances";

/** Starts watching; returns the function that stops it. */
export function watchRemediation(opts: RemediationOptions): () => void {
  const clock = opts.clock ?? systemClock;
  const intervalMs = opts.intervalMs ?? REMEDIATION_INTERVAL_MS_DEFAULT;
  const log = opts.logger;
  let stopped = false;

  const fire = (event: RemediationEvent): void => {
    try {
      opts.webhooks.fire(event);
    } catch (err) {
      log?.error({ type: event.type, err: (err as Error).message }, "remediation: webhook fire threw");
    }
  };

  // Breakers: fire when one opens from closed. A failed half-open trial re-opens it; that is the
  // same outage, so it does not fire again until the breaker has closed.
  const breakers = new Map<string, BreakerMessage["state"]>();
  // A channel subscriber that throws surfaces as an uncaught exception (node:diagnostics_channel),
  // so the handlers below catch everything.
  const onBreaker = (message: unknown): void => {
    try {
      breakerEvent(message as BreakerMessage);
    } catch (err) {
      log?.error({ err: (err as Error).message }, "remediation: breaker event failed");
    }
  };
  const breakerEvent = (m: BreakerMessage): void => {
    if (stopped || typeof m?.service !== "string" || !opts.mesh.tracked().includes(m.service)) return;
    const k = `${m.service}\u0000${m.instanceId}`;
    const prev = breakers.get(k);
    if (m.state === "closed") {
      breakers.delete(k);
      return;
    }
    breakers.delete(k);
    breakers.set(k, m.state);
    if (breakers.size > REMEDIATION_BREAKERS_MAX) breakers.delete(breakers.keys().next().value!);
    if (m.state !== "open" || prev === "open" || prev === "half-open") return;
    const info = opts.mesh
      .breakerStates()
      .find((b) => b.service === m.service && b.instanceId === m.instanceId);
    const inst = opts.mesh.snapshot(m.service)?.instances.find((i) => i.id === m.instanceId);
    fire({
      type: "breaker-open",
      service: m.service,
      instanceId: m.instanceId,
      detail: {
        state: "open",
        ...(inst === undefined
          ? {}
          : { address: inst.address, port: inst.port, zone: inst.zone, version: inst.version }),
        ...(info === undefined
          ? {}
          : { failures: info.failures, successes: info.successes, rejects: info.rejects, fires: info.fires }),
      },
    });
  };
  diagnostics.subscribe(BREAKER_CHANNEL, onBreaker);

  // Instance counts: once per crossing under minInstances, re-armed when back at or above it.
  // Checked every interval (health changes arrive only as snapshots) and at once when the
  // mesh's instance set of a service changes (`sdk:mesh:instances`, published after the
  // snapshot routing uses was replaced).
  const low = new Set<string>();
  const checkService = (service: string): void => {
    const snap = opts.mesh.snapshot(service);
    if (snap === undefined) return; // not loaded yet: no evidence either way
    const unhealthy = snap.instances.filter((i) => !isReportedHealthy(i));
    const healthy = snap.instances.length - unhealthy.length;
    if (healthy < opts.minInstances) {
      if (low.has(service)) return;
      low.add(service);
      fire({
        type: "low-instances",
        service,
        detail: {
          healthy,
          total: snap.instances.length,
          minInstances: opts.minInstances,
          unhealthy: unhealthy.slice(0, UNHEALTHY_IDS_LISTED_MAX).map((i) => i.id),
          revision: String(snap.revision),
          stale: snap.stale,
        },
      });
    } else if (low.delete(service)) {
      log?.info({ service, healthy, minInstances: opts.minInstances }, "remediation: instances recovered");
    }
  };
  const checkInstances = (): void => {
    const tracked = new Set(opts.mesh.tracked());
    for (const s of low) if (!tracked.has(s)) low.delete(s);
    if (opts.minInstances <= 0) return;
    for (const service of tracked) checkService(service);
  };
  const onInstances = (message: unknown): void => {
    const service = (message as { service?: unknown })?.service;
    if (stopped || opts.minInstances <= 0 || typeof service !== "string") return;
    if (!opts.mesh.tracked().includes(service)) return;
    try {
      checkService(service);
    } catch (err) {
      log?.error({ err: (err as Error).message }, "remediation: instance check failed");
    }
  };
  diagnostics.subscribe(INSTANCES_CHANNEL, onInstances);

  // The mesh drops breakers without a "closed" event (instance gone, LRU, new breaker options);
  // forget those, so the next opening of a new breaker for the same instance fires.
  const pruneBreakers = (): void => {
    if (breakers.size === 0) return;
    const live = new Set<string>();
    for (const b of opts.mesh.breakerStates()) {
      if (b.state !== "closed") live.add(`${b.service}\u0000${b.instanceId}`);
    }
    for (const k of [...breakers.keys()]) if (!live.has(k)) breakers.delete(k);
  };

  // Registry latency: one probe at a time; a probe still out after the threshold counts as slow.
  let registryBad = false;
  let probeStartedMs: number | undefined;
  const registryBadNow = (detail: Record<string, unknown>): void => {
    if (registryBad) return;
    registryBad = true;
    fire({ type: "registry-latency", detail: { thresholdMs: opts.registryLatencyMs, ...detail } });
  };
  const probe = (): void => {
    if (probeStartedMs !== undefined) {
      const waitedMs = Math.round(clock.now() - probeStartedMs);
      if (waitedMs > opts.registryLatencyMs)
        registryBadNow({ latencyMs: waitedMs, down: false, pending: true });
      return;
    }
    const started = clock.now();
    probeStartedMs = started;
    let p: Promise<number>;
    try {
      p = opts.probeRegistry();
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(
      (latencyMs) => {
        probeStartedMs = undefined;
        if (stopped) return;
        if (latencyMs > opts.registryLatencyMs) registryBadNow({ latencyMs, down: false });
        else if (registryBad) {
          registryBad = false;
          log?.info(
            { latencyMs, thresholdMs: opts.registryLatencyMs },
            "remediation: registry latency recovered",
          );
        }
      },
      (err: unknown) => {
        probeStartedMs = undefined;
        if (stopped) return;
        registryBadNow({ down: true, error: err instanceof Error ? err.message : String(err) });
      },
    );
  };

  let timer: Timer | undefined;
  const tick = (): void => {
    if (stopped) return;
    try {
      pruneBreakers();
      checkInstances();
      probe();
    } catch (err) {
      log?.error({ err: (err as Error).message }, "remediation: check failed");
    }
    timer = clock.setTimer(tick, intervalMs);
  };
  timer = clock.setTimer(tick, intervalMs);

  return () => {
    stopped = true;
    timer?.cancel();
    diagnostics.unsubscribe(BREAKER_CHANNEL, onBreaker);
    diagnostics.unsubscribe(INSTANCES_CHANNEL, onInstances);
  };
}
