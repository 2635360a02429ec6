// The integrations' pure parts: which origins are services, what an undici error says about the
// instance, and the grpc-js method config a policy becomes.
import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { methodConfigOf, registryTarget } from "../../src/integrations/grpc.js";
import { outcomeOfUndiciError, serviceOfOrigin } from "../../src/integrations/undici.js";

const withCode = (code: string, message = code) => Object.assign(new Error(message), { code });

describe("integrations", () => {
  it("treats single-label http(s) hosts without a port as service names", () => {
    expect(serviceOfOrigin(new URL("http://orders/x"))).toBe("orders");
    expect(serviceOfOrigin(new URL("https://orders/x"))).toBe("orders");
    expect(serviceOfOrigin(new URL("http://orders:80/x"))).toBe("orders"); // the default port is no port
    expect(serviceOfOrigin(new URL("http://orders:8080/x"))).toBeUndefined();
    expect(serviceOfOrigin(new URL("http://localhost/x"))).toBeUndefined();
    expect(serviceOfOrigin(new URL("http://example.com/x"))).toBeUndefined();
    expect(serviceOfOrigin(new URL("http://10.0.0.1/x"))).toBeUndefined();
    expect(serviceOfOrigin(new URL("http://[::1]/x"))).toBeUndefined();
    expect(serviceOfOrigin(new URL("ws://orders/x"))).toBeUndefined();
  });

  it("maps undici errors before a response to call outcomes", () => {
    expect(outcomeOfUndiciError(withCode("ECONNREFUSED"))).toEqual({ kind: "connect-failure" });
    expect(outcomeOfUndiciError(withCode("UND_ERR_CONNECT_TIMEOUT"))).toEqual({ kind: "connect-failure" });
    expect(outcomeOfUndiciError(withCode("UND_ERR_SOCKET"))).toEqual({ kind: "reset" });
    expect(outcomeOfUndiciError(withCode("ECONNRESET"))).toEqual({ kind: "reset" });
    expect(outcomeOfUndiciError(withCode("UND_ERR_HEADERS_TIMEOUT"))).toEqual({ kind: "timeout" });
    expect(outcomeOfUndiciError(new TypeError("fetch failed", { cause: withCode("ECONNREFUSED") }))).toEqual({
      kind: "connect-failure",
    });
    // The request's own fault says nothing about the instance.
    expect(outcomeOfUndiciError(withCode("UND_ERR_INVALID_ARG"))).toBeUndefined();
    expect(outcomeOfUndiciError(new Error("no code"))).toBeUndefined();
  });

  it("maps the policy's timeout and retries to a grpc-js method config", () => {
    expect(
      methodConfigOf({
        schemaVersion: 1,
        service: "svc",
        timeoutMs: 1_500,
        retries: { attempts: 2, retryOn: ["unavailable", "resource-exhausted", "timeout"] },
      }),
    ).toEqual({
      name: [],
      timeout: { seconds: 1, nanos: 500_000_000 },
      retryPolicy: {
        maxAttempts: 3,
        initialBackoff: "0.01s",
        maxBackoff: "0.1s",
        backoffMultiplier: 2,
        retryableStatusCodes: [status.RESOURCE_EXHAUSTED, status.UNAVAILABLE],
      },
    });
    expect(
      methodConfigOf({ schemaVersion: 1, service: "svc", retries: { attempts: 9 } }).retryPolicy,
    ).toMatchObject({
      maxAttempts: 5,
      retryableStatusCodes: [status.UNAVAILABLE],
    });
    expect(methodConfigOf({ schemaVersion: 1, service: "svc", retries: { attempts: 0 } })).toEqual({
      name: [],
    });
    expect(methodConfigOf({ schemaVersion: 1, service: "svc" })).toEqual({ name: [] });
    expect(registryTarget("orders")).toBe("registry:///orders");
  });
});
