// The bridge's pure parts, in process: input checks name the bad field, error codes map to
// HTTP statuses and JSON-RPC codes, Last-Event-ID parsing, watch events to changes, and the
// JSON-RPC envelope rules (notifications, invalid requests) with stub methods.

import { encodeInstance, type Instance } from "@regmesh/sdk";
import pino from "pino";
import { describe, expect, it } from "vitest";
import { BridgeError, BridgeErrorCode, RPC, toBridgeError } from "../../src/bridge/errors.js";
import { JsonRpc } from "../../src/bridge/jsonrpc.js";
import { changesOf, lastEventId } from "../../src/bridge/sse.js";
import { callOutcome, pickParams, registerInput } from "../../src/bridge/validate.js";

const field = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(BridgeError);
    return (e as BridgeError).field;
  }
  throw new Error("did not throw");
};

describe("registerInput", () => {
  const ok = { service: "s", address: "10.0.0.1", port: 80 };

  it("fills defaults as the SDK's Registrar does", () => {
    const r = registerInput(ok, "body", 3600);
    expect(r.ttlS).toBe(10);
    expect(r.instance).toEqual({
      id: "",
      service: "s",
      address: "10.0.0.1",
      port: 80,
      protocol: "http",
      weight: 100,
      tags: [],
      metadata: {},
    });
  });

  it("names the bad field", () => {
    expect(field(() => registerInput({ ...ok, port: 0 }, "body", 3600))).toBe("port");
    expect(field(() => registerInput({ ...ok, port: 1.5 }, "body", 3600))).toBe("port");
    expect(field(() => registerInput({ ...ok, service: "" }, "body", 3600))).toBe("service");
    expect(field(() => registerInput({ ...ok, service: "x".repeat(129) }, "body", 3600))).toBe("service");
    expect(field(() => registerInput({ ...ok, id: ".." }, "body", 3600))).toBe("id");
    expect(field(() => registerInput({ ...ok, id: "a\nb" }, "body", 3600))).toBe("id");
    expect(field(() => registerInput({ ...ok, ttl: 61 }, "body", 60))).toBe("ttl");
    expect(field(() => registerInput({ ...ok, ttl: 0 }, "body", 60))).toBe("ttl");
    expect(field(() => registerInput({ ...ok, health: "fine" }, "body", 60))).toBe("health");
    expect(field(() => registerInput({ ...ok, tags: "a" }, "body", 60))).toBe("tags");
    expect(field(() => registerInput({ ...ok, Port: 80 }, "body", 60))).toBe("Port");
    expect(field(() => registerInput(null, "params", 60))).toBe("params");
  });

  it("accepts what the SDK can encode", () => {
    const r = registerInput(
      {
        ...ok,
        id: "i-1",
        zone: "z",
        version: "2",
        tags: ["a"],
        metadata: { k: "v" },
        weight: 0,
        health: "unhealthy",
        ttl: 60,
      },
      "body",
      60,
    );
    expect(() => encodeInstance(r.instance)).not.toThrow();
    expect(r.ttlS).toBe(60);
  });
});

describe("pick and report params", () => {
  it("caller comes from params, else from the x-caller-service header", () => {
    expect(pickParams({ service: "s", caller: "web" }).request.caller).toBe("web");
    expect(pickParams({ service: "s", headers: { "X-Caller-Service": "api" } }).request.caller).toBe("api");
    expect(pickParams({ service: "s" }).request).toMatchObject({ method: "GET", path: "/" });
    expect(field(() => pickParams({ service: "s", headers: { a: 1 } }))).toBe("headers.a");
  });

  it("outcomes are the SDK's CallOutcome kinds", () => {
    expect(callOutcome({ kind: "response", status: 502 }, "outcome")).toEqual({
      kind: "response",
      status: 502,
    });
    expect(callOutcome({ kind: "timeout" }, "outcome")).toEqual({ kind: "timeout" });
    expect(field(() => callOutcome({ kind: "grpc", code: 99 }, "outcome"))).toBe("outcome.code");
    expect(field(() => callOutcome({ kind: "timeout", status: 1 }, "outcome"))).toBe("outcome.status");
    expect(field(() => callOutcome({ kind: "boom" }, "outcome"))).toBe("outcome.kind");
  });
});

describe("errors", () => {
  it("map to HTTP statuses and JSON-RPC codes", () => {
    const e = (c: BridgeErrorCode) => new BridgeError(c, "x");
    expect([e(BridgeErrorCode.BAD_REQUEST).httpStatus, e(BridgeErrorCode.BAD_REQUEST).rpcCode]).toEqual([
      400,
      RPC.INVALID_PARAMS,
    ]);
    expect([e(BridgeErrorCode.CONFLICT).httpStatus, e(BridgeErrorCode.CONFLICT).rpcCode]).toEqual([
      409, -32002,
    ]);
    expect([e(BridgeErrorCode.NOT_REGISTERED).httpStatus, e(BridgeErrorCode.NOT_REGISTERED).rpcCode]).toEqual(
      [404, -32001],
    );
    expect(e(BridgeErrorCode.BAD_JSON).rpcCode).toBe(-32700);
    expect(toBridgeError(new Error("boom")).code).toBe(BridgeErrorCode.INTERNAL);
  });
});

describe("SSE helpers", () => {
  it("Last-Event-ID is a decimal revision", () => {
    expect(lastEventId(undefined)).toBeUndefined();
    expect(lastEventId("")).toBeUndefined();
    expect(lastEventId("42")).toBe(42n);
    expect(field(() => lastEventId("-1"))).toBe("Last-Event-ID");
    expect(field(() => lastEventId("1e3"))).toBe("Last-Event-ID");
  });

  it("watch events become puts and deletes; a bad value is a delete", () => {
    const inst: Instance = {
      id: "a",
      service: "s",
      address: "h",
      port: 1,
      protocol: "http",
      weight: 1,
      tags: [],
      metadata: {},
    };
    const kv = (key: string, value: string) => ({
      key: Buffer.from(key),
      value: Buffer.from(value),
      createRevision: 5n,
      modRevision: 5n,
      version: 1n,
      lease: 0n,
    });
    const changes = changesOf("/p", "/p/services/s/", [
      { type: 0, kv: kv("/p/services/s/a", encodeInstance(inst)), prevKv: undefined },
      { type: 0, kv: kv("/p/services/s/b", "not json"), prevKv: undefined },
      { type: 1, kv: kv("/p/services/s/c", ""), prevKv: undefined },
    ]);
    expect(changes).toEqual([
      { type: "put", id: "a", instance: inst },
      { type: "delete", id: "b" },
      { type: "delete", id: "c" },
    ]);
  });
});

describe("JSON-RPC envelope", () => {
  const calls: unknown[] = [];
  const rpc = new JsonRpc(
    {
      echo: async (p) => {
        calls.push(p);
        return p;
      },
      fail: async () => {
        throw new BridgeError(BridgeErrorCode.CONFLICT, "taken", { field: "id" });
      },
    },
    pino({ level: "silent" }),
  );

  it("answers requests, runs notifications silently, refuses malformed requests", async () => {
    expect(await rpc.call({ jsonrpc: "2.0", id: 7, method: "echo", params: { a: 1 } })).toEqual({
      jsonrpc: "2.0",
      id: 7,
      result: { a: 1 },
    });
    expect(await rpc.call({ jsonrpc: "2.0", method: "echo", params: { b: 2 } })).toBeUndefined();
    expect(calls).toEqual([{ a: 1 }, { b: 2 }]);
    expect(await rpc.call({ jsonrpc: "2.0", method: "fail" })).toBeUndefined();
    expect(await rpc.call({ jsonrpc: "2.0", id: "x", method: "fail" })).toEqual({
      jsonrpc: "2.0",
      id: "x",
      error: { code: -32002, message: "taken", data: { code: "BRIDGE_ERR_CONFLICT", field: "id" } },
    });
    expect((await rpc.call({ jsonrpc: "2.0", id: 1, method: "echo", params: [1] }))?.error?.code).toBe(
      -32602,
    );
    expect((await rpc.call({ jsonrpc: "2.0", id: 1, method: "constructor" }))?.error?.code).toBe(-32601);
    expect((await rpc.call({ jsonrpc: "2.0", method: 1 }))?.error).toMatchObject({ code: -32600 });
    expect(calls.length).toBe(2);
  });
});
