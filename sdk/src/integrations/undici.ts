// undici 7 integration: a Dispatcher that routes requests addressed to a service name
// (`http://orders/path`) straight to an instance the Mesh picks, for `request()`, `fetch()` and
// anything else that takes a dispatcher. Built as undici builds its own (STYLE.md §4): an
// interceptor `dispatch => (opts, handler) => ...` composed onto an Agent, its logic in a
// handler class, one error class per failure with a stable code.
//
// Per request:
// - The origin decides: a service origin (by default an http(s) origin whose host is a single
//   DNS label without a port, e.g. `http://orders`; `services` or `serviceOf` narrow it) is
//   routed; anything else passes through to the Agent untouched. A routed service with no
//   instance fails with MeshNoInstanceError; it never falls back to DNS.
// - Each try asks `mesh.pick()` (policy rules on method, path and headers; balancer; breakers;
//   ejection), rewrites the origin to `<scheme>://<address>:<port>` and sends the request there.
// - The Host header keeps the service name (`Host: orders`), as Envoy keeps the authority: the
//   instance sees what the caller addressed, virtual hosting keeps working, and connections are
//   still pooled per instance (the Agent keys pools by origin). Over https undici takes the TLS
//   server name from it too, so the instance's certificate must name the service.
//   `hostHeader: "instance"` sends `<address>:<port>` instead; a Host header the caller set is
//   never replaced.
// - A try ends when its response headers arrive, or when it fails before them: `attempt.end()`
//   gets `{kind: "response", status}`, or connect-failure / reset / timeout from the error. An
//   error in the body after the headers reached the caller is the caller's to see; it is not
//   retried (the caller already has the response).
// - Retries follow `mesh.retry()` (policy conditions, attempts, retry budget) and avoid the
//   instances already tried, and only while nothing was passed to the caller yet, the request
//   is idempotent (GET, HEAD, OPTIONS, PUT, DELETE, TRACE, or no body) unless
//   `retryNonIdempotent` is set, and the body can be sent again (none, a string or bytes).
// - Timeouts: each try is bounded by the policy's per-try timeout and by what is left of the
//   call's timeout (route or policy `timeoutMs`), both up to the response headers; the body is
//   under undici's own bodyTimeout.

import type { Duplex } from "node:stream";
import { Agent, type Dispatcher } from "undici";
import { joinHostPort } from "../core/instance.js";
import type { CallOutcome } from "../core/retry.js";
import type { RouteRequest } from "../core/route.js";
import { type Attempt, type Mesh, NoInstanceError } from "../mesh/mesh.js";

export interface MeshDispatcherOptions {
  /**
   * The service an origin addresses, or undefined to pass the request through. Default:
   * `serviceOfOrigin` (http/https, a single-label host such as `orders`, no explicit port).
   */
  serviceOf?: (origin: URL) => string | undefined;
  /** Shorthand for serviceOf: route only these service names (any other origin passes through). */
  services?: Iterable<string>;
  /** Retry requests that are not idempotent (POST, PATCH with a body) too. Default false. */
  retryNonIdempotent?: boolean;
  /** Host header sent to an instance: the service name (default) or the instance's address:port. */
  hostHeader?: "service" | "instance";
  /** The dispatcher requests go out through (instances and pass-through). Default: a new Agent. */
  agent?: Dispatcher;
}

/** Stable codes of the errors the mesh dispatcher produces (undici's own errors pass through). */
export const MeshDispatchErrorCode = {
  /** No instance could be picked; `reason` says why (no-instance, breaker-open, ...). */
  NO_INSTANCE: "MESH_ERR_NO_INSTANCE",
  /** The policy's per-try or call timeout passed before the response headers arrived. */
  TIMEOUT: "MESH_ERR_TIMEOUT",
} as const;

/** No instance of `service` could be picked. Extends the Mesh's NoInstanceError with a code. */
export class MeshNoInstanceError extends NoInstanceError {
  readonly code = MeshDispatchErrorCode.NO_INSTANCE;
}

export class MeshTimeoutError extends Error {
  readonly code = MeshDispatchErrorCode.TIMEOUT;
  constructor(
    readonly service: string,
    readonly timeoutMs: number,
    readonly scope: "try" | "call",
  ) {
    super(
      `service ${service}: no response within ${timeoutMs} ms (${scope === "try" ? "per-try" : "call"} timeout)`,
    );
    this.name = "MeshTimeoutError";
  }
}

const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]);
/** Error codes meaning no connection was made: the request never reached the instance. */
const CONNECT_FAILURE_CODES = new Set([
  "ECONNREFUSED",
  "UND_ERR_CONNECT_TIMEOUT",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "EHOSTDOWN",
  "ENETUNREACH",
  "ENETDOWN",
]);
/** The connection broke before a response: the instance may or may not have seen the request. */
const RESET_CODES = new Set(["ECONNRESET", "EPIPE", "UND_ERR_SOCKET", "UND_ERR_CLOSED"]);
const TIMEOUT_CODES = new Set(["UND_ERR_HEADERS_TIMEOUT"]);
/** nginx's "client closed request": how a try the caller abandoned is ended (not a failure of the instance). */
const CLIENT_CLOSED: CallOutcome = { kind: "response", status: 499 };
/** The reason a request undici starts after its try was given up is aborted with. */
const ABANDONED = new Error("mesh dispatcher: try abandoned (timed out, or the call was aborted)");

/** `http://orders/x` → "orders": http(s), a single DNS label that is not localhost, no port. */
export function serviceOfOrigin(origin: URL): string | undefined {
  if (origin.protocol !== "http:" && origin.protocol !== "https:") return undefined;
  if (origin.port !== "") return undefined;
  const host = origin.hostname;
  if (host === "localhost" || host.includes(".") || host.includes(":") || host.startsWith("["))
    return undefined;
  return host.length > 0 ? host : undefined;
}

/**
 * A dispatcher that routes service origins through `mesh` and passes the rest to an Agent:
 * `request("http://orders/x", { dispatcher })`, `fetch("http://orders/x", { dispatcher })`.
 * Closing it closes the Agent.
 */
export function createMeshDispatcher(mesh: Mesh, opts: MeshDispatcherOptions = {}): Dispatcher {
  return (opts.agent ?? new Agent()).compose(meshInterceptor(mesh, opts));
}

/** The interceptor alone, to compose onto a dispatcher of your own. */
export function meshInterceptor(
  mesh: Mesh,
  opts: MeshDispatcherOptions = {},
): Dispatcher.DispatcherComposeInterceptor {
  const named = opts.services === undefined ? undefined : new Set(opts.services);
  const serviceOf =
    opts.serviceOf ??
    (named === undefined
      ? serviceOfOrigin
      : (u: URL) => {
          const s = serviceOfOrigin(u);
          return s !== undefined && named.has(s) ? s : undefined;
        });
  return (dispatch) => (dopts, handler) => {
    const origin = dopts.origin;
    if (origin === undefined) return dispatch(dopts, handler);
    const url = typeof origin === "string" ? new URL(origin) : origin;
    const service = serviceOf(url);
    if (service === undefined) return dispatch(dopts, handler);
    new MeshCall(mesh, service, url, dopts, handler, dispatch, opts).start();
    return true;
  };
}

// ---------------------------------------------------------------------------------------------

type Headers = Dispatcher.DispatchOptions["headers"];

/** The controller the caller's handler sees: stable across tries, forwarding to the current one. */
class CallController implements Dispatcher.DispatchController {
  target: Dispatcher.DispatchController | undefined;
  private pausedFlag = false;
  private abortReason: Error | null = null;

  constructor(private readonly onAbort: (reason: Error) => void) {}

  setTarget(target: Dispatcher.DispatchController | undefined): void {
    this.target = target;
    if (this.pausedFlag) target?.pause();
  }
  abort(reason: Error): void {
    if (this.abortReason !== null) return;
    this.abortReason = reason;
    this.onAbort(reason);
  }
  pause(): void {
    this.pausedFlag = true;
    this.target?.pause();
  }
  resume(): void {
    this.pausedFlag = false;
    this.target?.resume();
  }
  get paused(): boolean {
    return this.pausedFlag;
  }
  get aborted(): boolean {
    return this.abortReason !== null;
  }
  get reason(): Error | null {
    return this.abortReason;
  }
}

class MeshCall {
  private readonly handler: Dispatcher.DispatchHandler;
  private readonly controller: CallController;
  private readonly tried = new Set<string>();
  private readonly route: RouteRequest;
  private readonly retryable: boolean;
  private tries = 0;
  private current: Try | undefined;
  /** Headers or an error went to the caller: no more retries, no second ending. */
  private committed = false;
  private done = false;
  private callDeadlineMs: number | undefined;
  private callTimeoutMs = 0;

  constructor(
    private readonly mesh: Mesh,
    private readonly service: string,
    private readonly url: URL,
    private readonly dopts: Dispatcher.DispatchOptions,
    handler: Dispatcher.DispatchHandler,
    private readonly dispatch: Dispatcher.Dispatch,
    private readonly opts: MeshDispatcherOptions,
  ) {
    this.handler = handler;
    this.controller = new CallController((reason) => this.abortedByCaller(reason));
    const method = (dopts.method ?? "GET").toUpperCase();
    this.route = { method, path: dopts.path, headers: headerRecord(dopts.headers) };
    const body = dopts.body;
    const replayable = body == null || typeof body === "string" || body instanceof Uint8Array;
    const idempotent = IDEMPOTENT.has(method) || body == null;
    this.retryable = replayable && (idempotent || opts.retryNonIdempotent === true);
  }

  start(): void {
    this.handler.onRequestStart?.(this.controller, {});
    if (this.controller.aborted) return;
    if (this.mesh.snapshot(this.service) !== undefined) {
      this.nextTry();
      return;
    }
    this.mesh.ready(this.service).then(
      () => this.nextTry(),
      (err: unknown) => this.fail(err instanceof Error ? err : new Error(String(err))),
    );
  }

  private nextTry(): void {
    if (this.done) return;
    const p = this.mesh.pick(this.service, this.route, this.tried);
    if (!p.ok) {
      this.fail(new MeshNoInstanceError(this.service, p.reason, p.message));
      return;
    }
    const attempt = p.attempt;
    this.tries += 1;
    this.tried.add(attempt.instance.id);
    const now = performance.now();
    if (this.callDeadlineMs === undefined && attempt.timeoutMs !== undefined) {
      this.callTimeoutMs = attempt.timeoutMs;
      this.callDeadlineMs = now + attempt.timeoutMs;
    }
    const left = this.callDeadlineMs === undefined ? undefined : Math.max(0, this.callDeadlineMs - now);
    const perTry = attempt.perTryTimeoutMs;
    let timeout: MeshTimeoutError | undefined;
    let timeoutMs: number | undefined;
    if (perTry !== undefined && (left === undefined || perTry < left)) {
      timeoutMs = perTry;
      timeout = new MeshTimeoutError(this.service, perTry, "try");
    } else if (left !== undefined) {
      timeoutMs = left;
      timeout = new MeshTimeoutError(this.service, this.callTimeoutMs, "call");
    }
    const inst = attempt.instance;
    const hostPort = joinHostPort(inst.address, inst.port);
    const host = this.opts.hostHeader === "instance" ? hostPort : this.url.host;
    const t = new Try(this, attempt, timeout, timeoutMs);
    this.current = t;
    try {
      this.dispatch(
        {
          ...this.dopts,
          origin: `${this.url.protocol}//${hostPort}`,
          headers: withHost(this.dopts.headers, host),
        },
        t,
      );
    } catch (err) {
      // Invalid options (undici validates synchronously): the request's fault, not the instance's.
      t.abandon();
      this.tryError(t, err instanceof Error ? err : new Error(String(err)), undefined);
    }
  }

  // Called by the current Try ------------------------------------------------------------------

  tryStarted(t: Try, controller: Dispatcher.DispatchController): void {
    if (t !== this.current) return;
    this.controller.setTarget(controller);
  }

  /** Response headers arrived: end the try, then retry or commit to this response. Returns whether to forward. */
  responseStart(t: Try, statusCode: number): boolean {
    if (t !== this.current || this.done) return false;
    const outcome: CallOutcome = { kind: "response", status: statusCode };
    const failed = t.attempt.end(outcome);
    if (failed && this.mayRetry(outcome)) {
      t.discard(new Error("retried on another instance"));
      this.retryLater();
      return false;
    }
    this.committed = true;
    return true;
  }

  /** The try failed before its response headers, or (committed) in the body. */
  tryError(t: Try, err: Error, outcomeIfNoResponse: CallOutcome | undefined): void {
    if (t !== this.current || this.done) return;
    if (this.committed) {
      this.finishWithError(err);
      return;
    }
    if (this.controller.aborted) {
      t.attempt.end(CLIENT_CLOSED);
      this.finishWithError(this.controller.reason ?? err);
      return;
    }
    const outcome = outcomeIfNoResponse ?? CLIENT_CLOSED;
    const failed = t.attempt.end(outcome);
    if (outcomeIfNoResponse !== undefined && failed && this.mayRetry(outcome)) {
      this.retryLater();
      return;
    }
    this.finishWithError(err);
  }

  forward(): Dispatcher.DispatchHandler {
    return this.handler;
  }

  get callerController(): CallController {
    return this.controller;
  }

  responseEnd(): void {
    this.done = true;
  }

  /** The next try starts outside the undici callback that ended this one (no re-entrant dispatch). */
  private retryLater(): void {
    this.current = undefined;
    this.controller.setTarget(undefined);
    queueMicrotask(() => this.nextTry());
  }

  private mayRetry(outcome: CallOutcome): boolean {
    if (!this.retryable || this.committed || this.controller.aborted) return false;
    if (this.callDeadlineMs !== undefined && performance.now() >= this.callDeadlineMs) return false;
    return this.mesh.retry(this.service, this.tries, outcome).retry;
  }

  private abortedByCaller(reason: Error): void {
    if (this.done) return;
    const t = this.current;
    if (t?.controller !== undefined && !t.abandoned) {
      t.controller.abort(reason); // its error comes back through tryError
      return;
    }
    if (t !== undefined && !t.abandoned) {
      // Not on a socket yet (queued or connecting): give it up now; Try.onRequestStart aborts
      // it if it ever starts.
      t.abandon();
      t.attempt.end(CLIENT_CLOSED);
    }
    this.finishWithError(reason);
  }

  private fail(err: Error): void {
    this.finishWithError(err);
  }

  private finishWithError(err: Error): void {
    if (this.done) return;
    this.done = true;
    this.committed = true;
    this.handler.onResponseError?.(this.controller, err);
  }
}

/** One try on one instance: the handler the Agent drives. */
class Try implements Dispatcher.DispatchHandler {
  controller: Dispatcher.DispatchController | undefined;
  /** Nothing more from this try reaches the call (it was retried, failed or given up). */
  private discarded = false;
  private timedOut = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly call: MeshCall,
    readonly attempt: Attempt,
    private readonly timeout: MeshTimeoutError | undefined,
    timeoutMs: number | undefined,
  ) {
    if (timeoutMs !== undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.timedOut = true;
        if (this.controller !== undefined) {
          this.controller.abort(this.timeout!); // the error comes back through onResponseError
        } else {
          // Still queued or connecting: the try is over now, whatever undici does with it later.
          this.abandon();
          this.call.tryError(this, this.timeout!, { kind: "timeout" });
        }
      }, timeoutMs);
      this.timer.unref();
    }
  }

  get abandoned(): boolean {
    return this.discarded;
  }

  /** Stops listening to this try; a request still to start is aborted when it does. */
  abandon(): void {
    this.discarded = true;
    this.clearTimer();
  }

  /** Abandons this try and aborts its request (a response being retried elsewhere). */
  discard(reason: Error): void {
    this.abandon();
    this.controller?.abort(reason);
  }

  onRequestStart(controller: Dispatcher.DispatchController, _context: unknown): void {
    this.controller = controller;
    if (this.discarded) {
      controller.abort(ABANDONED);
      return;
    }
    if (this.call.callerController.aborted) controller.abort(this.call.callerController.reason!);
    this.call.tryStarted(this, controller);
  }

  onRequestUpgrade(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    socket: Duplex,
  ): void {
    this.clearTimer();
    if (this.discarded || !this.call.responseStart(this, statusCode)) return;
    this.call.responseEnd();
    this.call.forward().onRequestUpgrade?.(this.call.callerController, statusCode, headers, socket);
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    statusMessage?: string,
  ): void {
    if (this.discarded) return;
    this.clearTimer();
    if (!this.call.responseStart(this, statusCode)) return;
    this.call.forward().onResponseStart?.(this.call.callerController, statusCode, headers, statusMessage);
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.discarded) return;
    this.call.forward().onResponseData?.(this.call.callerController, chunk);
  }

  onResponseEnd(
    _controller: Dispatcher.DispatchController,
    trailers: Record<string, string | string[] | undefined>,
  ): void {
    if (this.discarded) return;
    this.call.responseEnd();
    this.call.forward().onResponseEnd?.(this.call.callerController, trailers);
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    this.clearTimer();
    if (this.discarded) return;
    this.discarded = true; // nothing more from this try
    if (this.timedOut) {
      this.call.tryError(this, this.timeout!, { kind: "timeout" });
      return;
    }
    this.call.tryError(this, err, outcomeOfUndiciError(err));
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/** What a failure before the response says about the instance; undefined: nothing (the request's own fault). */
export function outcomeOfUndiciError(err: Error): CallOutcome | undefined {
  const code = (err as { code?: unknown }).code;
  const cause = (err as { cause?: { code?: unknown } }).cause?.code;
  for (const c of [code, cause]) {
    if (typeof c !== "string") continue;
    if (CONNECT_FAILURE_CODES.has(c)) return { kind: "connect-failure" };
    if (RESET_CODES.has(c)) return { kind: "reset" };
    if (TIMEOUT_CODES.has(c)) return { kind: "timeout" };
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Headers in any of the shapes undici accepts: a record, a flat [name, value, ...] array, or an
// iterable of [name, value] pairs.

function entriesOf(h: Headers): [string, string | string[] | undefined][] {
  if (h == null) return [];
  if (Array.isArray(h)) {
    if (h.length > 0 && Array.isArray(h[0])) return h as unknown as [string, string | string[]][];
    const out: [string, string][] = [];
    for (let i = 0; i + 1 < h.length; i += 2) out.push([String(h[i]), String(h[i + 1])]);
    return out;
  }
  if (typeof (h as Iterable<unknown>)[Symbol.iterator] === "function") {
    return [...(h as Iterable<[string, string | string[] | undefined]>)];
  }
  return Object.entries(h as Record<string, string | string[] | undefined>);
}

function headerRecord(h: Headers): Record<string, string | readonly string[] | undefined> {
  const out: Record<string, string | readonly string[] | undefined> = {};
  for (const [k, v] of entriesOf(h)) out[k.toLowerCase()] = v;
  return out;
}

function withHost(h: Headers, host: string): Headers {
  const entries = entriesOf(h);
  if (entries.some(([k]) => k.toLowerCase() === "host")) return h;
  const out: Record<string, string | string[] | undefined> = {};
  for (const [k, v] of entries) {
    const prev = out[k];
    out[k] = prev === undefined ? v : ([] as string[]).concat(prev, v ?? []);
  }
  out.host = host;
  return out;
}
