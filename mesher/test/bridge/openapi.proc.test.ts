// mesher/openapi.yaml against the running bridge: every documented path and method is served,
// nothing undocumented under /v1 or /jsonrpc is, every status the bridge answers is documented
// for its operation, and every answer validates against the documented schema (ajv, JSON
// Schema 2020-12 as OpenAPI 3.1 uses it).

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Registrar } from "@regmesh/sdk";
import { type Cluster, startEtcd } from "@regmesh/testkit";
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { BRIDGE_ROUTES } from "../../src/bridge/index.js";
import { type BridgeHarness, type Json, SseClient, startBridge, until } from "./helpers.js";

const DOC_ID = "https://regmesh.invalid/mesher/openapi.yaml";
const doc = parse(readFileSync(join(import.meta.dirname, "..", "..", "openapi.yaml"), "utf8")) as Json;
const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
ajv.addSchema({ ...doc, $id: DOC_ID });
const METHODS = ["get", "put", "post", "delete", "patch", "head", "options"] as const;

function documented(): { method: string; path: string }[] {
  const out: { method: string; path: string }[] = [];
  for (const [path, item] of Object.entries(doc.paths as Json)) {
    for (const m of METHODS) if (item[m] !== undefined) out.push({ method: m.toUpperCase(), path });
  }
  return out;
}

const esc = (s: string) => s.replace(/~/g, "~0").replace(/\//g, "~1");
const validators = new Map<string, ValidateFunction>();

/** The documented response of an operation for a status, and the JSON pointer of its schema. */
function documentedResponse(path: string, method: string, status: number, contentType: string) {
  const op = doc.paths[path]?.[method.toLowerCase()];
  if (op === undefined) return { error: `${method} ${path} is not documented` };
  let pointer = `/paths/${esc(path)}/${method.toLowerCase()}/responses/${status}`;
  let response = op.responses[String(status)];
  if (response === undefined) return { error: `${method} ${path}: status ${status} is not documented` };
  if (response.$ref !== undefined) {
    pointer = (response.$ref as string).slice(1);
    response = doc.components.responses[(response.$ref as string).split("/").pop()!];
  }
  if (response.content === undefined) return { pointer: undefined, contentType: undefined };
  const types = Object.keys(response.content);
  const type = types.find((t) => contentType.startsWith(t));
  if (type === undefined)
    return { error: `${method} ${path} ${status}: content-type ${contentType} not in ${types}` };
  return { pointer: `${pointer}/content/${esc(type)}/schema`, contentType: type };
}

function validatorAt(pointer: string): ValidateFunction {
  let v = validators.get(pointer);
  if (v === undefined) validators.set(pointer, (v = ajv.compile({ $ref: `${DOC_ID}#${pointer}` })));
  return v;
}

function schemaCheck(pointer: string, value: unknown): string | undefined {
  const v = validatorAt(pointer);
  return v(value) ? undefined : ajv.errorsText(v.errors);
}

let cluster: Cluster;
let h: BridgeHarness;
let registrar: Registrar;
const PREFIX = "/oa";
const covered = new Set<string>();

beforeAll(async () => {
  cluster = await startEtcd({ members: 1 });
  h = await startBridge(cluster.endpoints, PREFIX);
  registrar = new Registrar({ client: h.client, prefix: PREFIX, ttlS: 30 });
  await registrar.register({
    service: "known",
    id: "k-sdk",
    address: "10.0.0.1",
    port: 1,
    zone: "z",
    version: "1",
  });
});
afterAll(async () => {
  await registrar?.close();
  await h?.close();
  await cluster?.stop({ remove: true });
});

interface Probe {
  /** The documented template this request exercises. */
  op: string;
  method: string;
  url: string;
  body?: string;
  headers?: Record<string, string>;
  status: number;
}

/** Sends the request, checks status, content type and body against the document. */
async function check(p: Probe): Promise<unknown> {
  const [method, path] = p.op.split(" ") as [string, string];
  const res = await fetch(`${h.url}${p.url}`, { method: p.method, body: p.body, headers: p.headers });
  const text = await res.text();
  expect(res.status, `${p.method} ${p.url}: ${text}`).toBe(p.status);
  const ct = res.headers.get("content-type") ?? "";
  const d = documentedResponse(path, method, res.status, ct);
  expect(d.error, `${p.method} ${p.url}`).toBeUndefined();
  covered.add(p.op);
  if (d.pointer === undefined) {
    expect(text).toBe("");
    return undefined;
  }
  const body = JSON.parse(text);
  expect(schemaCheck(d.pointer, body), `${p.method} ${p.url} -> ${text}`).toBeUndefined();
  return body;
}

const json = { "content-type": "application/json" };
const rpcBody = (o: unknown) => ({
  op: "POST /jsonrpc",
  method: "POST",
  url: "/jsonrpc",
  headers: json,
  body: JSON.stringify(o),
});

describe("mesher/openapi.yaml", () => {
  it("documents exactly the routes the bridge serves", () => {
    const doced = documented()
      .map((r) => `${r.method} ${r.path}`)
      .sort();
    const served = BRIDGE_ROUTES.map((r) => `${r.method} ${r.path}`).sort();
    expect(doced).toEqual(served);
    expect(doc.openapi).toMatch(/^3\.1\./);
    // The validators are not vacuous.
    expect(schemaCheck("/components/schemas/Registration", {})).toContain("required");
    expect(schemaCheck("/components/schemas/Instance", { id: "a/b" })).toBeDefined();
  });

  it("every documented operation answers with documented statuses and schemas", async () => {
    const reg = (o: Json, status: number) =>
      check({
        op: "POST /v1/register",
        method: "POST",
        url: "/v1/register",
        headers: json,
        body: JSON.stringify(o),
        status,
      });
    await reg(
      {
        service: "known",
        id: "k-1",
        address: "10.0.0.2",
        port: 2,
        tags: ["t"],
        metadata: { a: "b" },
        ttl: 30,
        health: "healthy",
      },
      201,
    );
    await reg({ service: "known", address: "10.0.0.3", port: 3 }, 201);
    await reg({ service: "known", id: "k-1", address: "10.0.0.2", port: 2 }, 409);
    await reg({ service: "known", id: "k-sdk", address: "10.0.0.2", port: 2 }, 409);
    await reg({ service: "known", address: "10.0.0.2" }, 400);
    await check({
      op: "POST /v1/register",
      method: "POST",
      url: "/v1/register",
      headers: json,
      body: "{",
      status: 400,
    });
    await check({
      op: "POST /v1/register",
      method: "POST",
      url: "/v1/register",
      headers: json,
      body: "x".repeat(1024 * 1024 + 1),
      status: 413,
    });

    await check({
      op: "PUT /v1/register/{id}/heartbeat",
      method: "PUT",
      url: "/v1/register/k-1/heartbeat",
      status: 200,
    });
    await check({
      op: "PUT /v1/register/{id}/heartbeat",
      method: "PUT",
      url: "/v1/register/nope/heartbeat",
      status: 404,
    });
    await check({
      op: "PUT /v1/register/{id}/heartbeat",
      method: "PUT",
      url: "/v1/register/%01/heartbeat",
      status: 400,
    });

    await check({ op: "GET /v1/services/{service}", method: "GET", url: "/v1/services/known", status: 200 });
    await check({ op: "GET /v1/services/{service}", method: "GET", url: "/v1/services/empty", status: 200 });
    await check({ op: "GET /v1/services/{service}", method: "GET", url: "/v1/services/a%2Fb", status: 400 });

    const pick = "GET /v1/services/{service}/pick";
    await check({
      op: pick,
      method: "GET",
      url: "/v1/services/known/pick?method=POST&path=/a&hashKey=u1",
      headers: { "x-caller-service": "web" },
      status: 200,
    });
    await check({ op: pick, method: "GET", url: "/v1/services/empty/pick", status: 503 });
    await check({ op: pick, method: "GET", url: "/v1/services/known/pick?path=relative", status: 400 });
    await check({ op: pick, method: "GET", url: "/v1/services/known/pick?verb=GET", status: 400 });

    await check({
      op: "GET /v1/services/{service}/policy",
      method: "GET",
      url: "/v1/services/known/policy",
      status: 200,
    });
    await h.client.put(
      `${PREFIX}/policies/known`,
      JSON.stringify({ schemaVersion: 1, service: "known", timeoutMs: 500 }),
    );
    const pol = (await check({
      op: "GET /v1/services/{service}/policy",
      method: "GET",
      url: "/v1/services/known/policy",
      status: 200,
    })) as Json;
    expect(pol.stored).toBe(true);
    await check({
      op: "GET /v1/services/{service}/policy",
      method: "GET",
      url: "/v1/services/%00/policy",
      status: 400,
    });

    const report = (o: unknown, status: number) =>
      check({
        op: "POST /v1/report",
        method: "POST",
        url: "/v1/report",
        headers: json,
        body: JSON.stringify(o),
        status,
      });
    await report(
      { service: "known", instanceId: "k-1", outcome: { kind: "grpc", code: 14 }, latencyMs: 3 },
      200,
    );
    await report({ service: "known", instanceId: "k-1", outcome: { kind: "reset" } }, 200);
    await report({ service: "known", instanceId: "k-1" }, 400);

    // JSON-RPC: every method's result and several errors validate against JsonRpcResponse.
    const id1 = { service: "known", id: "k-rpc", address: "10.0.0.4", port: 4 };
    const methods: [string, unknown][] = [
      ["register", id1],
      ["heartbeat", { id: "k-rpc" }],
      ["resolve", { service: "known" }],
      ["pick", { service: "known", headers: { "x-a": "b" }, caller: "web" }],
      ["report", { service: "known", instanceId: "k-rpc", outcome: { kind: "timeout" } }],
      ["getPolicy", { service: "known" }],
      ["deregister", { id: "k-rpc" }],
      ["heartbeat", { id: "k-rpc" }],
      ["register", id1],
      ["register", { ...id1, id: "k-sdk" }],
      ["pick", { service: "empty" }],
      ["nope", {}],
      ["register", { service: 1 }],
    ];
    for (const [i, [method, params]] of methods.entries()) {
      const r = (await check({ ...rpcBody({ jsonrpc: "2.0", id: i, method, params }), status: 200 })) as Json;
      expect(r.id).toBe(i);
    }
    const batch = (await check({
      ...rpcBody([
        { jsonrpc: "2.0", id: "a", method: "resolve", params: { service: "known" } },
        { jsonrpc: "2.0", method: "heartbeat", params: { id: "k-rpc" } },
        { jsonrpc: "2.0", id: "b", method: "deregister", params: { id: "k-rpc" } },
      ]),
      status: 200,
    })) as Json[];
    expect(batch.map((r) => r.id)).toEqual(["a", "b"]);
    await check({ ...rpcBody({ jsonrpc: "2.0", method: "heartbeat", params: { id: "k-1" } }), status: 204 });
    await check({
      op: "POST /jsonrpc",
      method: "POST",
      url: "/jsonrpc",
      headers: json,
      body: "[{",
      status: 200,
    });
    await check({
      op: "POST /jsonrpc",
      method: "POST",
      url: "/jsonrpc",
      headers: json,
      body: " ".repeat(1024 * 1024 + 1),
      status: 413,
    });

    await check({ op: "DELETE /v1/register/{id}", method: "DELETE", url: "/v1/register/k-1", status: 200 });
    await check({ op: "DELETE /v1/register/{id}", method: "DELETE", url: "/v1/register/k-1", status: 404 });
    await check({ op: "DELETE /v1/register/{id}", method: "DELETE", url: "/v1/register/%2F", status: 400 });

    // SSE: the stream's content type is documented, and its data payloads match their schemas.
    const sse = await SseClient.open(`${h.url}/v1/watch/known`);
    try {
      expect(sse.status).toBe(200);
      await until(() => sse.events.length >= 1, 10_000, "the snapshot");
      await check({
        op: "POST /v1/register",
        method: "POST",
        url: "/v1/register",
        headers: json,
        body: JSON.stringify({ service: "known", id: "k-2", address: "h", port: 5 }),
        status: 201,
      });
      await check({ op: "DELETE /v1/register/{id}", method: "DELETE", url: "/v1/register/k-2", status: 200 });
      await until(() => sse.events.length >= 3, 10_000, "two changes");
      expect(schemaCheck("/components/schemas/WatchSnapshotEvent", sse.events[0]!.data)).toBeUndefined();
      for (const e of sse.events.slice(1))
        expect(schemaCheck("/components/schemas/WatchChangeEvent", e.data)).toBeUndefined();
    } finally {
      sse.close();
    }
    const d = documentedResponse("/v1/watch/{service}", "GET", 200, "text/event-stream; charset=utf-8");
    expect(d.error).toBeUndefined();
    covered.add("GET /v1/watch/{service}");
    await check({
      op: "GET /v1/watch/{service}",
      method: "GET",
      url: "/v1/watch/known",
      headers: { "last-event-id": "-1" },
      status: 400,
    });

    expect([...covered].sort()).toEqual(BRIDGE_ROUTES.map((r) => `${r.method} ${r.path}`).sort());
  });

  it("serves nothing undocumented under /v1 or /jsonrpc", async () => {
    const fill = (p: string) => p.replace("{id}", "k-sdk").replace("{service}", "known");
    for (const [path, item] of Object.entries(doc.paths as Json)) {
      for (const m of ["GET", "PUT", "POST", "DELETE", "PATCH"]) {
        if (item[m.toLowerCase()] !== undefined) continue;
        const res = await fetch(`${h.url}${fill(path)}`, { method: m });
        const body = (await res.json()) as Json;
        expect(res.status, `${m} ${path}`).toBe(405);
        expect(body.error.code).toBe("BRIDGE_ERR_METHOD_NOT_ALLOWED");
      }
    }
    const unknown = [
      "/v1",
      "/v1/",
      "/v1/services",
      "/v1/services/",
      "/v1/services/known/pick/extra",
      "/v1/services/known/instances",
      "/v1/register/k-sdk/heartbeat/x",
      "/v1/registerx",
      "/v1/watch",
      "/v1/watch/known/x",
      "/v1/policies/known",
      "/jsonrpc/x",
      "/jsonrpc2",
      "/v2/register",
    ];
    for (const path of unknown) {
      for (const m of ["GET", "POST"]) {
        const res = await fetch(`${h.url}${path}`, { method: m });
        const body = (await res.json()) as Json;
        expect(res.status, `${m} ${path}`).toBe(404);
        expect(schemaCheck("/components/schemas/Error", body)).toBeUndefined();
      }
    }
  });
});
