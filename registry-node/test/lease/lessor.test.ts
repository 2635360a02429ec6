import { describe, expect, it } from "vitest";
import { Lessor } from "../../src/lease/lessor.js";
import { BufferedBackend, KVStore, MemStorage } from "../../src/mvcc/index.js";

const enc = (s: string) => Buffer.from(s);

function setup() {
  const storage = new MemStorage();
  const backend = new BufferedBackend(storage);
  const lessor = new Lessor(backend, 2);
  const kv = new KVStore(backend, lessor);
  return { storage, backend, lessor, kv };
}

describe("lessor (etcd lease/lessor.go)", () => {
  it("raises a TTL to the minimum and refuses duplicates and huge TTLs with etcd's messages", () => {
    const { lessor } = setup();
    expect(lessor.grant(1n, 1, 0).ttlSeconds).toBe(2);
    expect(() => lessor.grant(1n, 10, 0)).toThrow("etcdserver: lease already exists");
    expect(() => lessor.grant(2n, 9_000_000_001, 0)).toThrow("etcdserver: too large lease TTL");
  });

  it("revoke deletes the attached keys in one revision; a key moved to another lease stays", () => {
    const { lessor, kv } = setup();
    lessor.grant(7n, 10, 0);
    lessor.grant(8n, 10, 0);
    const t = kv.write();
    t.put(enc("a"), enc("1"), 7n);
    t.put(enc("b"), enc("1"), 7n);
    t.put(enc("c"), enc("1"), 7n);
    t.end();
    const t2 = kv.write();
    t2.put(enc("c"), enc("2"), 8n); // moves c to lease 8
    t2.end();
    const changes = lessor.revoke(7n, kv);
    expect(changes.map((c) => c.kv.key.toString())).toEqual(["a", "b"]);
    expect(new Set(changes.map((c) => c.kv.modRevision))).toEqual(new Set([4n]));
    expect(
      kv
        .read()
        .range(enc("a"), enc("z"))
        .kvs.map((x) => x.key.toString()),
    ).toEqual(["c"]);
    expect(lessor.exists(7n)).toBe(false);
    expect(() => lessor.revoke(7n, kv)).toThrow("etcdserver: requested lease not found");
  });

  it("only the primary expires leases; promotion grants the full TTL plus the extension", () => {
    const { lessor } = setup();
    lessor.grant(1n, 5, 0);
    expect(lessor.expired(1e9, 10)).toEqual([]);
    lessor.promote(1000, 10_000);
    expect(lessor.expired(15_999, 10)).toEqual([]);
    expect(lessor.expired(16_000, 10)).toEqual([1n]);
    expect(lessor.renew(1n, 16_000)).toBe(5);
    expect(lessor.expired(20_999, 10)).toEqual([]);
    expect(lessor.lookup(1n)!.remainingSeconds(18_500)).toBe(2);
    lessor.demote();
    expect(lessor.expired(1e12, 10)).toEqual([]);
    expect(() => lessor.renew(1n, 0)).toThrow("etcdserver: not leader");
  });

  it("leases and their keys come back after a restart", async () => {
    const { lessor, kv, backend, storage } = setup();
    lessor.grant(9n, 30, 0);
    const t = kv.write();
    t.put(enc("k"), enc("v"), 9n);
    t.end();
    await backend.commit();
    const backend2 = new BufferedBackend(storage);
    const lessor2 = new Lessor(backend2, 2);
    const kv2 = new KVStore(backend2, lessor2);
    lessor2.restore();
    kv2.restore();
    expect(lessor2.lookup(9n)!.ttlSeconds).toBe(30);
    expect([...lessor2.lookup(9n)!.keys]).toEqual(["k"]);
    expect(lessor2.revoke(9n, kv2).length).toBe(1);
  });
});
