// Test scaffolding for the bridge: a real etcd, a real EtcdClient and Discovery, a simple
// BridgeRouter on the SDK's route() core, the bridge on a loopback HTTP server, and clients:
// curl, a Server-Sent Events reader, and etcd read directly.

import http from "node:http";
import type { AddressInfo } from "node:net";
import {
  type CallOutcome,
  createRouterState,
  Discovery,
  defaultPolicy,
  EtcdClient,
  type Instance,
  type Policy,
  parsePolicy,
  policyKey,
  type RouteRequest,
  type RouterState,
  route,
} from "@regmesh/sdk";
import { runCommand } from "@regmesh/testkit";
import pino from "pino";
import { type Bridge, type BridgeOptions, type BridgeRouter, createBridge } from "../../src/bridge/index.js";

/** Parsed JSON answers, read by assertions (which fail clearly when a field is missing). */
// biome-ignore lint/suspicious/noExplicitAny: tests index into answers whose shape they assert.
export type Json = Record<string, any>;

export interface Reported {
  service: string;
  instanceId: string;
  outcome: CallOutcome;
  latencyMs: number | undefined;
}

/** A router as the mesher's would be, minus breakers: policy from the registry, route() to pick. */
export class TestRouter implements BridgeRouter {
  readonly reports: Reported[] = [];
  private readonly states = new Map<string, RouterState>();

  constructor(
    private readonly client: EtcdClient,
    private readonly discovery: Discovery,
    private readonly prefix: string,
  ) {}

  async policy(service: string): Promise<{ policy: Policy; modRevision: bigint } | undefined> {
    const kv = await this.client.get(policyKey(this.prefix, service));
    if (kv === undefined) return undefined;
    const v = parsePolicy(kv.value, { service });
    if (!v.ok) throw new Error(`bad policy: ${v.errors.map((e) => `${e.path}: ${e.message}`).join("; ")}`);
    return { policy: v.policy, modRevision: kv.modRevision };
  }

  async pick(service: string, req: RouteRequest) {
    const snap = await this.discovery.resolve(service);
    const policy = (await this.policy(service))?.policy ?? defaultPolicy(service);
    let state = this.states.get(service);
    if (state === undefined) this.states.set(service, (state = createRouterState()));
    const decision = route(policy, req, snap.instances, state, Date.now(), Math.random);
    if (decision.instance === undefined) {
      return { error: { reason: decision.reason, message: `no instance of ${service}: ${decision.reason}` } };
    }
    return { instance: decision.instance as Instance, decision };
  }

  report(service: string, instanceId: string, outcome: CallOutcome, latencyMs?: number): void {
    this.reports.push({ service, instanceId, outcome, latencyMs });
  }
}

export interface BridgeHarness {
  url: string;
  port: number;
  prefix: string;
  client: EtcdClient;
  discovery: Discovery;
  router: TestRouter;
  bridge: Bridge;
  close(): Promise<void>;
}

export async function startBridge(
  endpoints: string[],
  prefix: string,
  opts: Partial<BridgeOptions> = {},
): Promise<BridgeHarness> {
  const client = new EtcdClient({ endpoints, requestTimeoutMs: 3_000 });
  const discovery = new Discovery({ client, prefix });
  const router = new TestRouter(client, discovery, prefix);
  const logger = pino({ level: process.env.BRIDGE_TEST_LOG ?? "silent" });
  const bridge = createBridge({ client, prefix, discovery, router, logger, ...opts });
  const server = http.createServer((req, res) => bridge.handle(req, res));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    prefix,
    client,
    discovery,
    router,
    bridge,
    async close() {
      await bridge.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await discovery.close();
      client.close();
    },
  };
}

export interface CurlResult {
  status: number;
  body: unknown;
  text: string;
  headers: string;
}

/** curl with -i; returns status, raw text and parsed JSON body (undefined when not JSON). */
export async function curl(args: string[], stdin?: string): Promise<CurlResult> {
  const r = await runCommand("curl", ["-sS", "-i", "--max-time", "20", ...args], {
    timeoutMs: 30_000,
    stdin,
  });
  if (r.code !== 0) throw new Error(`curl ${args.join(" ")} failed (${r.code}): ${r.stderr}`);
  // Skip "HTTP/1.1 100 Continue" blocks.
  let out = r.stdout;
  while (/^HTTP\/1\.1 100/.test(out)) out = out.slice(out.indexOf("\r\n\r\n") + 4);
  const split = out.indexOf("\r\n\r\n");
  const headers = out.slice(0, split);
  const text = out.slice(split + 4);
  const status = Number(/^HTTP\/[0-9.]+ ([0-9]{3})/.exec(headers)?.[1]);
  let body: unknown;
  try {
    body = text === "" ? undefined : JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status, body, text, headers };
}

export function curlJson(
  method: string,
  url: string,
  body?: unknown,
  extra: string[] = [],
): Promise<CurlResult> {
  const args = ["-X", method, ...extra];
  if (body !== undefined) {
    args.push(
      "-H",
      "content-type: application/json",
      "--data-binary",
      typeof body === "string" ? body : JSON.stringify(body),
    );
  }
  args.push(url);
  return curl(args);
}

export interface SseEvent {
  event: string;
  id: string | undefined;
  data: unknown;
}

/** A Server-Sent Events reader over node:http (what an EventSource does, minus reconnects). */
export class SseClient {
  readonly events: SseEvent[] = [];
  comments = 0;
  status = 0;
  private req: http.ClientRequest | undefined;
  private buffer = "";
  ended = false;

  static open(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
    const c = new SseClient();
    return new Promise((resolve, reject) => {
      c.req = http.get(url, { headers: { accept: "text/event-stream", ...headers } }, (res) => {
        c.status = res.statusCode ?? 0;
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => c.feed(chunk));
        res.on("end", () => (c.ended = true));
        res.on("error", () => (c.ended = true));
        resolve(c);
      });
      c.req.on("error", reject);
    });
  }

  private feed(chunk: string): void {
    this.buffer += chunk;
    for (;;) {
      const end = this.buffer.indexOf("\n\n");
      if (end < 0) return;
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      let event = "message";
      let id: string | undefined;
      const data: string[] = [];
      let fields = 0;
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) {
          this.comments += 1;
          continue;
        }
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (name === "event") event = value;
        else if (name === "id") id = value;
        else if (name === "data") data.push(value);
        else continue;
        fields += 1;
      }
      if (fields > 0 && data.length > 0) this.events.push({ event, id, data: JSON.parse(data.join("\n")) });
    }
  }

  close(): void {
    this.req?.destroy();
  }
}

/** Polls until `check` holds. Generous timeouts: the machine is shared (2 cores). */
export async function until(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
