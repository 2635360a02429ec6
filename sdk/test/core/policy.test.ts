import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SdkErrorCode } from "../../src/core/errors.js";
import {
  parsePolicy,
  pointerToPath,
  policyError,
  regexProblem,
  validatePolicy,
} from "../../src/core/policy.js";

const errorsOf = (json: unknown, options = {}) => {
  const r = validatePolicy(json, options);
  return r.ok ? [] : r.errors.map((e) => `${e.path}: ${e.message}`);
};

const base = {
  schemaVersion: 1,
  service: "orders",
  subsets: [
    { name: "v1", version: "1" },
    { name: "v2", version: "2" },
  ],
};

describe("validatePolicy: messages name the bad field", () => {
  it("a negative split weight", () => {
    const p = {
      ...base,
      routes: [
        {
          split: [
            { subset: "v1", weight: 1 },
            { subset: "v2", weight: -5 },
          ],
        },
      ],
    };
    expect(errorsOf(p)).toEqual(["routes[0].split[1].weight: must be >= 0"]);
  });

  it("several problems at once, each with its own path", () => {
    const p = {
      ...base,
      timeoutMs: 0,
      protectThreshold: 1.5,
      rateLimit: { requestsPerSecond: 0 },
      allowedCallers: ["a/b"],
      routes: [{ match: { methods: ["get"] }, split: [{ subset: "v1", weight: "ten" }] }],
    };
    // Order follows ajv's walk of the schema; it is not part of the contract.
    expect(errorsOf(p).sort()).toEqual(
      [
        "timeoutMs: must be >= 1",
        "protectThreshold: must be <= 1",
        "rateLimit.requestsPerSecond: must be > 0",
        'allowedCallers[0]: must not contain "/" or control characters',
        "routes[0].match.methods[0]: must be an upper-case HTTP method",
        "routes[0].split[0].weight: must be integer",
      ].sort(),
    );
  });

  it("a missing required field inside a nested object", () => {
    expect(errorsOf({ ...base, routes: [{ split: [{ subset: "v1" }] }] })).toEqual([
      "routes[0].split[0].weight: is required",
    ]);
  });

  it("a path match with both exact and prefix", () => {
    const p = {
      ...base,
      routes: [{ match: { path: { exact: "/a", prefix: "/b" } }, split: [{ subset: "v1", weight: 1 }] }],
    };
    expect(errorsOf(p)).toEqual(["routes[0].match.path: must set exactly one of exact, prefix"]);
  });

  it("semantic: an unknown subset, a zero-sum split and a regex that does not compile", () => {
    const p = {
      ...base,
      routes: [
        { split: [{ subset: "v9", weight: 1 }] },
        { split: [{ subset: "v1", weight: 0 }] },
        { match: { headers: [{ name: "x", regex: "a{2,1}" }] }, split: [{ subset: "v1", weight: 1 }] },
      ],
    };
    const errors = errorsOf(p);
    expect(errors[0]).toBe('routes[0].split[0].subset: unknown subset "v9"');
    expect(errors[1]).toBe("routes[1].split: weights must sum to more than 0");
    expect(errors[2]).toMatch(/^routes\[2\]\.match\.headers\[0\]\.regex: does not compile: /);
    expect(errors).toHaveLength(3);
  });

  it("semantic: the policy must name the service of its key", () => {
    expect(errorsOf(base, { service: "billing" })).toEqual([
      'service: must be "billing" (the key\'s service)',
    ]);
    expect(errorsOf(base, { service: "orders" })).toEqual([]);
  });

  it("semantic: hashKey only with hash balancers, status codes only with retriable-status-codes", () => {
    const p = {
      ...base,
      loadBalancer: { kind: "round-robin", hashKey: { header: "x-user" } },
      retries: { attempts: 1, retryOn: ["5xx"], retriableStatusCodes: [503] },
    };
    expect(errorsOf(p)).toEqual([
      "loadBalancer.hashKey: is only used by ring-hash and maglev",
      'retries.retriableStatusCodes: needs "retriable-status-codes" in retries.retryOn',
    ]);
  });

  it("the root value must be an object", () => {
    expect(errorsOf([])).toEqual(["policy: must be object"]);
    expect(errorsOf(null)).toEqual(["policy: must be object"]);
  });

  it("parsePolicy reports bad JSON and oversized values as errors, not throws", () => {
    const bad = parsePolicy("{nope");
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(bad.errors[0]!.message).toMatch(/^is not JSON/);
    const big = parsePolicy(" ".repeat(300 * 1024));
    expect(big.ok).toBe(false);
    expect(parsePolicy(new TextEncoder().encode(JSON.stringify(base)))).toMatchObject({ ok: true });
  });

  it("policyError carries SDK_ERR_INVALID_POLICY and every message", () => {
    const e = policyError([{ path: "service", message: "is required" }]);
    expect(e.code).toBe(SdkErrorCode.INVALID_POLICY);
    expect(e.details).toEqual(["service: is required"]);
  });

  it("never throws on arbitrary JSON (property)", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const r = validatePolicy(v);
        if (!r.ok) for (const e of r.errors) expect(e.path.length).toBeGreaterThan(0);
      }),
    );
  });

  it("turns JSON pointers into field paths", () => {
    expect(pointerToPath("/routes/0/split/1/weight")).toBe("routes[0].split[1].weight");
    expect(pointerToPath("", "service")).toBe("service");
    expect(pointerToPath("")).toBe("policy");
    expect(pointerToPath("/a~1b")).toBe('["a/b"]');
  });
});

describe("header regexes", () => {
  it("refuses shapes that backtrack exponentially, and backreferences", () => {
    for (const bad of ["(a+)+", "(x*)*y", "(\\d+)*", "((ab)*c)+", "(a{2,})+", "(a)\\1", "(?<n>a)\\k<n>"]) {
      expect(regexProblem(bad), bad).toBeDefined();
    }
  });

  it("accepts ordinary patterns", () => {
    for (const ok of [
      "^Mozilla/.*Chrome/[0-9]+.*$",
      "(a|b)*",
      "[(+]+",
      "u[0-9]{1,8}",
      "(ab)?c+",
      "\\(x+\\)+",
    ]) {
      expect(regexProblem(ok), ok).toBeUndefined();
    }
  });

  it("names the field in the policy error", () => {
    const p = {
      schemaVersion: 1,
      service: "s",
      subsets: [{ name: "a" }],
      routes: [{ match: { headers: [{ name: "x", regex: "(a+)+$" }] }, split: [{ subset: "a", weight: 1 }] }],
    };
    expect(errorsOf(p)).toEqual([
      "routes[0].match.headers[0].regex: must not nest repeating quantifiers, e.g. (a+)+ (exponential backtracking)",
    ]);
  });
});
