import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  type CacheSnapshot,
  decodeSnapshot,
  loadSnapshot,
  saveSnapshot,
} from "../../src/cache/disk-cache.js";
import type { Instance } from "../../src/core/instance.js";
import { EtcdClient } from "../../src/etcd/client.js";
import { EtcdErrorCode } from "../../src/etcd/errors.js";
import { Discovery } from "../../src/registry/discovery.js";

const dirs: string[] = [];
function dir(): string {
  const d = mkdtempSync(join(tmpdir(), "sdk-cache-"));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const inst = (id: string, port: number): Instance => ({
  id,
  service: "orders",
  address: "10.0.0.1",
  port,
  protocol: "http",
  weight: 100,
  tags: ["a"],
  metadata: { team: "x" },
});

const snapshot: CacheSnapshot = {
  savedAtMs: Date.now() - 60_000,
  prefix: "/app",
  services: { orders: { revision: "42", instances: [inst("o-1", 8080), inst("o-2", 8081)] } },
};

/** A loopback port with nothing listening (bound, then closed). */
async function deadPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe("disk cache", () => {
  it("round trip: save atomically, load the same snapshot, no temp file left", async () => {
    const d = dir();
    const path = join(d, "sub", "cache.bin");
    await saveSnapshot(path, snapshot);
    const r = await loadSnapshot(path);
    expect(r?.ok).toBe(true);
    if (r?.ok) expect(r.value).toEqual(snapshot);
    expect(readdirSync(join(d, "sub"))).toEqual(["cache.bin"]);
    // Overwrite keeps it whole.
    await saveSnapshot(path, { ...snapshot, services: {} });
    const r2 = await loadSnapshot(path);
    expect(r2?.ok && r2.value.services).toEqual({});
  });

  it("a missing file is not an error", async () => {
    expect(await loadSnapshot(join(dir(), "none"))).toBeUndefined();
  });

  it("a truncated file is detected and ignored", async () => {
    const path = join(dir(), "c");
    await saveSnapshot(path, snapshot);
    const full = readFileSync(path);
    for (const cut of [1, 10, full.length - 1, Math.floor(full.length / 2)]) {
      writeFileSync(path, full.subarray(0, cut));
      const r = await loadSnapshot(path);
      expect(r?.ok).toBe(false);
      if (r && !r.ok) expect(r.error.code).toBe(EtcdErrorCode.CACHE_CORRUPT);
    }
  });

  it("a flipped byte anywhere is detected and ignored", async () => {
    const path = join(dir(), "c");
    await saveSnapshot(path, snapshot);
    const full = readFileSync(path);
    for (let i = 0; i < full.length; i += 7) {
      const bad = Buffer.from(full);
      bad[i] = bad[i]! ^ 0x01;
      const r = decodeSnapshot(bad);
      expect(r.ok, `flip at ${i}`).toBe(false);
    }
  });

  it("a process started while the registry is down resolves from the disk cache, marked stale with its age", async () => {
    const path = join(dir(), "c");
    await saveSnapshot(path, snapshot);
    const client = new EtcdClient({ endpoints: [`127.0.0.1:${await deadPort()}`], retryDeadlineMs: 300 });
    const d = new Discovery({ client, prefix: "/app", cacheFile: path, resolveTimeoutMs: 300 });
    try {
      const snap = await d.resolve("orders");
      expect(snap.source).toBe("disk");
      expect(snap.stale).toBe(true);
      expect(snap.staleForMs).toBeGreaterThanOrEqual(59_000);
      expect(snap.instances.map((i) => i.id)).toEqual(["o-1", "o-2"]);
      expect(snap.revision).toBe(42n);
      await expect(d.resolve("payments")).rejects.toMatchObject({ code: EtcdErrorCode.NOT_RESOLVED });
    } finally {
      await d.close();
      client.close();
    }
  });

  it("a corrupted cache file is never loaded", async () => {
    const path = join(dir(), "c");
    await saveSnapshot(path, snapshot);
    const full = readFileSync(path);
    writeFileSync(path, full.subarray(0, full.length - 3));
    const client = new EtcdClient({ endpoints: [`127.0.0.1:${await deadPort()}`], retryDeadlineMs: 300 });
    const d = new Discovery({ client, prefix: "/app", cacheFile: path, resolveTimeoutMs: 300 });
    try {
      await expect(d.resolve("orders")).rejects.toMatchObject({ code: EtcdErrorCode.NOT_RESOLVED });
    } finally {
      await d.close();
      client.close();
    }
  });
});
