import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SdkErrorCode } from "../../src/core/errors.js";
import {
  checkName,
  decodeInstance,
  decodeInstanceEntry,
  encodeInstance,
  type Instance,
  instanceKey,
  parseKey,
  policyKey,
  serviceInstancesPrefix,
  splitHostPort,
} from "../../src/core/instance.js";

const orders: Instance = {
  id: "orders-1",
  service: "orders",
  address: "10.0.0.7",
  port: 8080,
  protocol: "http",
  zone: "eu-1a",
  weight: 100,
  version: "1.4.2",
  tags: ["canary", "arm64"],
  metadata: { team: "payments" },
  health: "healthy",
};

describe("instance codec", () => {
  it("encodes as an etcd naming record: Op 0 (Add), Addr host:port, our fields in Metadata", () => {
    const record = JSON.parse(encodeInstance(orders));
    expect(record.Op).toBe(0);
    expect(record.Addr).toBe("10.0.0.7:8080");
    expect(record.Metadata).toEqual({
      protocol: "http",
      zone: "eu-1a",
      weight: 100,
      version: "1.4.2",
      tags: ["canary", "arm64"],
      health: "healthy",
      metadata: { team: "payments" },
    });
  });

  it("round-trips, from text and from bytes", () => {
    const text = encodeInstance(orders);
    expect(decodeInstance("orders", "orders-1", text)).toEqual({ ok: true, value: orders });
    expect(decodeInstance("orders", "orders-1", new TextEncoder().encode(text))).toEqual({
      ok: true,
      value: orders,
    });
  });

  it("writes IPv6 literals in brackets, as Go's net.JoinHostPort", () => {
    const v6 = { ...orders, address: "::1" };
    const text = encodeInstance(v6);
    expect(JSON.parse(text).Addr).toBe("[::1]:8080");
    expect(decodeInstance("orders", "orders-1", text)).toEqual({ ok: true, value: v6 });
  });

  it("round-trips arbitrary valid instances (property)", () => {
    const str = fc.string({ minLength: 1, maxLength: 20 });
    const arb = fc.record({
      address: fc.oneof(fc.ipV4(), fc.ipV6(), fc.domain()),
      port: fc.integer({ min: 1, max: 65535 }),
      protocol: fc.constantFrom("http", "grpc", "jsonrpc"),
      zone: fc.option(str, { nil: undefined }),
      weight: fc.integer({ min: 0, max: 10_000 }),
      version: fc.option(str, { nil: undefined }),
      tags: fc.array(str, { maxLength: 5 }),
      metadata: fc.dictionary(
        fc.string({ minLength: 1, maxLength: 8 }).filter((k) => k !== "__proto__"),
        str,
        {
          maxKeys: 5,
        },
      ),
      health: fc.option(fc.constantFrom("healthy" as const, "unhealthy" as const, "unknown" as const), {
        nil: undefined,
      }),
    });
    fc.assert(
      fc.property(arb, (fields) => {
        const inst: Instance = Object.fromEntries(
          Object.entries({ id: "i-1", service: "svc", ...fields }).filter(([, v]) => v !== undefined),
        ) as unknown as Instance;
        const decoded = decodeInstance("svc", "i-1", encodeInstance(inst));
        expect(decoded).toEqual({ ok: true, value: inst });
      }),
    );
  });

  it("decodes a record written by etcd's Go naming manager (Metadata null) with defaults", () => {
    const r = decodeInstance("orders", "go-1", '{"Op":0,"Addr":"10.1.2.3:50051","Metadata":null}');
    expect(r).toEqual({
      ok: true,
      value: {
        id: "go-1",
        service: "orders",
        address: "10.1.2.3",
        port: 50051,
        protocol: "grpc",
        weight: 100,
        tags: [],
        metadata: {},
      },
    });
  });

  const bad: [string, string | Uint8Array][] = [
    ["not JSON", "{"],
    ["not an object", "[1,2]"],
    ["Op is Delete", '{"Op":1,"Addr":"a:1"}'],
    ["Addr missing", '{"Op":0}'],
    ["Addr without port", '{"Op":0,"Addr":"host"}'],
    ["port out of range", '{"Op":0,"Addr":"host:70000"}'],
    ["unbracketed IPv6", '{"Op":0,"Addr":"::1:80"}'],
    ["weight negative", '{"Op":0,"Addr":"h:1","Metadata":{"weight":-1}}'],
    ["weight fractional", '{"Op":0,"Addr":"h:1","Metadata":{"weight":1.5}}'],
    ["tags not strings", '{"Op":0,"Addr":"h:1","Metadata":{"tags":[1]}}'],
    ["health unknown value", '{"Op":0,"Addr":"h:1","Metadata":{"health":"sick"}}'],
    ["metadata not strings", '{"Op":0,"Addr":"h:1","Metadata":{"metadata":{"a":1}}}'],
    ["invalid UTF-8", new Uint8Array([0x7b, 0xff, 0x7d])],
    ["too large", `{"Op":0,"Addr":"h:1","Metadata":{"version":"${"x".repeat(20_000)}"}}`],
  ];
  it.each(bad)("gives a typed SDK_ERR_BAD_INSTANCE error, never a throw: %s", (_, value) => {
    const r = decodeInstance("orders", "x", value);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.code).toBe(SdkErrorCode.BAD_INSTANCE);
  });

  it("never throws on arbitrary input (property)", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json(), fc.uint8Array()), (v) => {
        const r = decodeInstance("s", "i", v);
        if (!r.ok) expect(r.error.code).toBe(SdkErrorCode.BAD_INSTANCE);
      }),
    );
  });

  it("refuses to encode an invalid instance", () => {
    expect(() => encodeInstance({ ...orders, port: 0 })).toThrow(/port/);
    expect(() => encodeInstance({ ...orders, weight: 10_001 })).toThrow(/weight/);
    expect(() => encodeInstance({ ...orders, id: "a/b" })).toThrow(/instance id/);
  });
});

describe("keys", () => {
  it("builds <prefix>/services/<service>/<id> and <prefix>/policies/<service>", () => {
    expect(instanceKey("/regmesh", "orders", "orders-1")).toBe("/regmesh/services/orders/orders-1");
    expect(instanceKey("/regmesh/", "orders", "orders-1")).toBe("/regmesh/services/orders/orders-1");
    expect(serviceInstancesPrefix("/regmesh", "orders")).toBe("/regmesh/services/orders/");
    expect(policyKey("/regmesh", "orders")).toBe("/regmesh/policies/orders");
  });

  it("parses what it builds", () => {
    expect(parseKey("/regmesh", "/regmesh/services/orders/orders-1")).toEqual({
      ok: true,
      value: { kind: "instance", service: "orders", id: "orders-1" },
    });
    expect(parseKey("/regmesh", "/regmesh/policies/orders")).toEqual({
      ok: true,
      value: { kind: "policy", service: "orders" },
    });
  });

  it.each([
    "/regmesh/services/orders",
    "/regmesh/services/orders/",
    "/regmesh/services/orders/a/b",
    "/regmesh/services//a",
    "/regmesh/policies/",
    "/regmesh/policies/a/b",
    "/other/services/orders/1",
  ])("rejects %s with SDK_ERR_BAD_KEY", (key) => {
    const r = parseKey("/regmesh", key);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.code).toBe(SdkErrorCode.BAD_KEY);
  });

  it("validates names: non-empty, bounded, no '/', no control characters", () => {
    expect(checkName("service", "orders").ok).toBe(true);
    for (const bad of ["", "a/b", "x".repeat(129), "a\nb", ".."]) {
      const r = checkName("service", bad);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error.code).toBe(SdkErrorCode.BAD_NAME);
    }
    expect(() => instanceKey("/p", "a/b", "1")).toThrow(/service/);
  });

  it("decodes a watch entry by key", () => {
    const r = decodeInstanceEntry("/regmesh", "/regmesh/services/orders/orders-1", encodeInstance(orders));
    expect(r).toEqual({ ok: true, value: orders });
    const wrong = decodeInstanceEntry("/regmesh", "/regmesh/policies/orders", "{}");
    expect(wrong.ok).toBe(false);
  });

  it("splits host:port", () => {
    expect(splitHostPort("[fe80::1]:443")).toEqual({ ok: true, value: { host: "fe80::1", port: 443 } });
    expect(splitHostPort("example.com:80")).toEqual({ ok: true, value: { host: "example.com", port: 80 } });
    expect(splitHostPort(":80").ok).toBe(false);
  });
});
