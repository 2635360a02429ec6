// gRPC through a pair of meshers (unary, server streaming, deadlines, error statuses), and
// caller authorization with signed tokens (listed, unlisted, forged, expired, other-service).
import { createPrivateKey, sign } from "node:crypto";
import grpc from "@grpc/grpc-js";
import { EtcdClient, PolicyStore } from "@regmesh/sdk";
import { type Cluster, registryKindFromEnv, startCluster } from "@regmesh/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { call, grpcAppScript, until, World, workDir } from "./helpers.js";

let cluster: Cluster;
let dir: { path: string; remove(): void };
let w: World;

beforeAll(async () => {
  cluster = await startCluster({ kind: registryKindFromEnv("etcd") });
  dir = workDir();
  w = new World(cluster, dir.path);
});
afterEach(async () => {
  await w.cleanup();
});
afterAll(async () => {
  await cluster?.stop({ remove: true });
});

const json = {
  requestSerialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
  requestDeserialize: (b: Buffer) => JSON.parse(b.toString()),
  responseSerialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
  responseDeserialize: (b: Buffer) => JSON.parse(b.toString()),
};
const echoService = {
  Echo: { path: "/test.Echo/Echo", requestStream: false, responseStream: false, ...json },
  Stream: { path: "/test.Echo/Stream", requestStream: false, responseStream: true, ...json },
  Slow: { path: "/test.Echo/Slow", requestStream: false, responseStream: false, ...json },
  Fail: { path: "/test.Echo/Fail", requestStream: false, responseStream: false, ...json },
} as grpc.ServiceDefinition;
const EchoClient = grpc.makeGenericClientConstructor(echoService, "Echo");

type Unary = (
  req: unknown,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (e: grpc.ServiceError | null, r: unknown) => void,
) => void;

function unary(
  client: grpc.Client,
  method: string,
  req: unknown,
  deadlineMs?: number,
): Promise<{ name?: string; caller?: string }> {
  return new Promise((resolve, reject) => {
    const f = (client as unknown as Record<string, Unary>)[method]!.bind(client);
    f(
      req,
      new grpc.Metadata(),
      deadlineMs === undefined ? {} : { deadline: Date.now() + deadlineMs },
      (e, r) => (e ? reject(e) : resolve(r as { name?: string })),
    );
  });
}

describe("gRPC through meshers", () => {
  it("unary and streaming calls pass with their statuses; grpc-timeout is honoured", async () => {
    const prefix = w.prefix();
    const opts = { script: grpcAppScript, check: "grpc" };
    await w.instance(prefix, "echo", "e1", ["--protocol=grpc"], opts);
    await w.instance(prefix, "echo", "e2", ["--protocol=grpc"], opts);
    const caller = await w.caller(prefix, []);
    // grpc-js names the target service with the channel's authority (docs/mesher.md).
    const client = new EchoClient(`127.0.0.1:${caller.ports.outbound}`, grpc.credentials.createInsecure(), {
      "grpc.default_authority": "echo",
    });
    w.cleanups.push(() => client.close());
    const names = new Set<string>();
    await until(
      async () => {
        try {
          const r = await unary(client, "Echo", { msg: "hi" });
          if (r.name !== undefined) names.add(r.name);
        } catch {}
        return names.size === 2;
      },
      20_000,
      "both echo instances",
    );
    const many = await Promise.all(
      Array.from({ length: 20 }, (_, i) => unary(client, "Echo", { msg: `m${i}` })),
    );
    expect(many.every((r) => r.name === "e1" || r.name === "e2")).toBe(true);

    const streamed = await new Promise<unknown[]>((resolve, reject) => {
      const out: unknown[] = [];
      const s = (client as unknown as Record<string, (req: unknown) => grpc.ClientReadableStream<unknown>>)
        .Stream!({});
      s.on("data", (d) => out.push(d));
      s.on("end", () => resolve(out));
      s.on("error", reject);
    });
    expect(streamed.length).toBe(3);

    const notFound = await unary(client, "Fail", {}).catch((e: grpc.ServiceError) => e);
    expect((notFound as grpc.ServiceError).code).toBe(grpc.status.NOT_FOUND);
    expect((notFound as grpc.ServiceError).details).toBe("no such thing");

    const t0 = Date.now();
    const slow = await unary(client, "Slow", {}, 500).catch((e: grpc.ServiceError) => e);
    expect((slow as grpc.ServiceError).code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(Date.now() - t0).toBeLessThan(1_500);

    const noService = new EchoClient(
      `127.0.0.1:${caller.ports.outbound}`,
      grpc.credentials.createInsecure(),
      {
        "grpc.default_authority": "nosuch",
      },
    );
    w.cleanups.push(() => noService.close());
    const unavailable = await unary(noService, "Echo", {}).catch((e: grpc.ServiceError) => e);
    expect((unavailable as grpc.ServiceError).code).toBe(grpc.status.UNAVAILABLE);
    expect((unavailable as grpc.ServiceError).details).toContain("no-instance");
  });
});

describe("caller authorization with signed tokens", () => {
  it("a listed caller gets through; unlisted, forged, expired, other-service and missing tokens get 403", async () => {
    const prefix = w.prefix();
    const client = new EtcdClient({ endpoints: cluster.endpoints });
    const store = new PolicyStore({ client, prefix });
    w.cleanups.push(
      () => client.close(),
      () => store.close(),
    );
    await store.put("orders", { schemaVersion: 1, service: "orders", allowedCallers: ["checkout"] }, 0n);
    const orders = await w.instance(prefix, "orders", "o1", ["--auth-tokens"]);
    const checkoutApp = await w.instance(prefix, "checkout", "c1", ["--auth-tokens"]);
    const intruder = await w.instance(prefix, "intruder", "i1", ["--auth-tokens"]);

    // The listed caller, through its mesher.
    await until(
      async () => (await call(checkoutApp.mesher.ports.outbound, { host: "orders" })).status === 200,
      20_000,
      "checkout -> orders",
    );
    // An unlisted service, with a valid token of its own.
    const unlisted = await call(intruder.mesher.ports.outbound, { host: "orders" });
    expect(unlisted.status).toBe(403);
    expect(unlisted.json?.error?.reason).toMatch(/caller-not-allowed/);
    // Straight at the inbound port, with no, forged, expired and other-service tokens.
    const inbound = orders.mesher.ports.inbound!;
    const none = await call(inbound, { headers: { "x-mesher-caller": "checkout" } });
    expect(none.status).toBe(403);
    expect(none.json?.error?.reason).toBe("unauthorized");
    const forgedBody = Buffer.from(
      JSON.stringify({ iss: "checkout", aud: "orders", iat: Date.now(), exp: Date.now() + 60_000 }),
    ).toString("base64url");
    const forged = await call(inbound, {
      headers: { "x-mesher-auth": `${forgedBody}.${Buffer.alloc(64).toString("base64url")}` },
    });
    expect(forged.status).toBe(403);
    // Tokens signed with checkout's real key (read from the registry, as only checkout's user may).
    const pem = (await client.get(`${prefix}/mesh/secrets/checkout`))!.value.toString();
    const key = createPrivateKey(pem);
    const token = (claims: object) => {
      const body = Buffer.from(JSON.stringify(claims)).toString("base64url");
      return `${body}.${sign(null, Buffer.from(body), key).toString("base64url")}`;
    };
    const good = await call(inbound, {
      headers: {
        "x-mesher-auth": token({ iss: "checkout", aud: "orders", iat: Date.now(), exp: Date.now() + 60_000 }),
      },
    });
    expect(good.status).toBe(200);
    const expired = await call(inbound, {
      headers: {
        "x-mesher-auth": token({
          iss: "checkout",
          aud: "orders",
          iat: Date.now() - 120_000,
          exp: Date.now() - 60_000,
        }),
      },
    });
    expect(expired.status).toBe(403);
    expect(expired.body).toContain("token expired");
    const otherService = await call(inbound, {
      headers: {
        "x-mesher-auth": token({
          iss: "checkout",
          aud: "billing",
          iat: Date.now(),
          exp: Date.now() + 60_000,
        }),
      },
    });
    expect(otherService.status).toBe(403);
    expect(otherService.body).toContain("not orders");
    // The app never saw a refused request: its mesher's inbound records show only the two good ones.
    const calls = (await orders.mesher.admin("/v1/calls?limit=100")) as {
      direction: string;
      status: number;
      reason?: string;
    }[];
    const inboundOk = calls.filter((c) => c.direction === "inbound" && c.status === 200);
    const refused = calls.filter((c) => c.direction === "inbound" && c.status === 403);
    // none, forged, expired, other-service; the unlisted caller was refused by its own mesher.
    expect(refused.length).toBe(4);
    expect(inboundOk.length).toBeGreaterThanOrEqual(2);
  });
});
