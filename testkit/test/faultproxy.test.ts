import { createConnection, createServer, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FaultProxy, startFaultProxy } from "../src/index.js";

// An echo server on loopback: whatever it reads, it writes back.
let echo: Server;
let echoPort: number;

beforeAll(async () => {
  echo = createServer((s) => {
    s.on("error", () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen({ host: "127.0.0.1", port: 0 }, () => r()));
  echoPort = (echo.address() as { port: number }).port;
});
afterAll(async () => {
  await new Promise<void>((r) => echo.close(() => r()));
});

async function connect(proxy: FaultProxy): Promise<Socket> {
  const s = createConnection({ host: "127.0.0.1", port: proxy.port });
  await new Promise<void>((resolve, reject) => {
    s.once("connect", () => resolve());
    s.once("error", reject);
  });
  return s;
}

/** Collects what the socket receives; `waitFor(n)` resolves when n bytes have arrived. */
function collector(s: Socket) {
  let got = Buffer.alloc(0);
  const waiters: { n: number; resolve: (b: Buffer) => void }[] = [];
  s.on("data", (b: Buffer) => {
    got = Buffer.concat([got, b]);
    for (const w of [...waiters]) {
      if (got.length >= w.n) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(got);
      }
    }
  });
  return {
    get bytes() {
      return got;
    },
    waitFor(n: number): Promise<Buffer> {
      if (got.length >= n) return Promise.resolve(got);
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("fault proxy", () => {
  it("passes bytes both ways unchanged", async () => {
    const proxy = await startFaultProxy({ target: { host: "127.0.0.1", port: echoPort } });
    const s = await connect(proxy);
    const c = collector(s);
    const payload = Buffer.alloc(256 * 1024, 7);
    s.write(payload);
    const got = await c.waitFor(payload.length);
    expect(got.equals(payload)).toBe(true);
    expect(proxy.stats().bytesUp).toBe(payload.length);
    s.destroy();
    await proxy.close();
  });

  it("delays each direction by the configured time, keeping order", async () => {
    const proxy = await startFaultProxy({ target: { host: "127.0.0.1", port: echoPort } });
    const s = await connect(proxy);
    const c = collector(s);
    proxy.delay(100, "up");
    const t0 = Date.now();
    s.write("a");
    s.write("b");
    const got = await c.waitFor(2);
    const elapsed = Date.now() - t0;
    expect(got.toString()).toBe("ab");
    expect(elapsed).toBeGreaterThanOrEqual(95);
    s.destroy();
    await proxy.close();
  });

  it("blackholes a direction while partitioned and delivers the held bytes after heal", async () => {
    const proxy = await startFaultProxy({ target: { host: "127.0.0.1", port: echoPort } });
    const s = await connect(proxy);
    const c = collector(s);
    proxy.partition();
    s.write("held");
    await sleep(150);
    expect(c.bytes.length).toBe(0);
    proxy.heal();
    expect((await c.waitFor(4)).toString()).toBe("held");
    s.destroy();
    await proxy.close();
  });

  it("one-way partition: requests reach the server but answers do not come back", async () => {
    const proxy = await startFaultProxy({ target: { host: "127.0.0.1", port: echoPort } });
    const s = await connect(proxy);
    const c = collector(s);
    proxy.partitionOneWay("down");
    s.write("ping");
    await sleep(150);
    expect(proxy.stats().bytesUp).toBe(4);
    expect(c.bytes.length).toBe(0);
    proxy.heal();
    expect((await c.waitFor(4)).toString()).toBe("ping");
    s.destroy();
    await proxy.close();
  });

  it("drop mode throws bytes away", async () => {
    const proxy = await startFaultProxy({ target: { host: "127.0.0.1", port: echoPort } });
    const s = await connect(proxy);
    const c = collector(s);
    proxy.set({ up: { kind: "drop" } });
    s.write("lost");
    await sleep(100);
    proxy.heal();
    s.write("kept");
    expect((await c.waitFor(4)).toString()).toBe("kept");
    s.destroy();
    await proxy.close();
  });

  it("resetAll gives open clients ECONNRESET; refuse closes new connections", async () => {
    const proxy = await startFaultProxy({ target: { host: "127.0.0.1", port: echoPort } });
    const s = await connect(proxy);
    const closed = new Promise<string | undefined>((resolve) => {
      s.once("error", (e: NodeJS.ErrnoException) => resolve(e.code));
      s.once("close", () => resolve(undefined));
    });
    await sleep(20);
    proxy.resetAll();
    expect(await closed).toBe("ECONNRESET");

    proxy.set({ accept: "refuse" });
    const s2 = createConnection({ host: "127.0.0.1", port: proxy.port });
    s2.on("error", () => {});
    const c2 = collector(s2);
    await new Promise<void>((r) => s2.once("close", () => r()));
    expect(c2.bytes.length).toBe(0);
    expect(proxy.connections).toBe(0);
    await proxy.close();
  });
});
