// Shared helpers of the storage tests: a Map model of buckets, its JSON form (the same as
// bboltcheck's dump), and building the Go oracle.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Bucket, DB, Tx } from "../../src/storage/index.js";

export type JsonEntry = { k: string; v?: string; b?: JsonBucket };
export type JsonBucket = { sequence: number; entries: JsonEntry[] };

/** The model: a bucket is a sequence and a map from hex key to a value or a child bucket. */
export type MBucket = { sequence: bigint; entries: Map<string, Uint8Array | MBucket> };

export const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
export const unhex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, "hex"));
export const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

export function newBucket(): MBucket {
  return { sequence: 0n, entries: new Map() };
}

export function isBucket(x: Uint8Array | MBucket): x is MBucket {
  return !(x instanceof Uint8Array);
}

export function cloneModel(b: MBucket): MBucket {
  const out = newBucket();
  out.sequence = b.sequence;
  for (const [k, v] of b.entries) out.entries.set(k, isBucket(v) ? cloneModel(v) : v);
  return out;
}

export function modelToJson(b: MBucket): JsonBucket {
  const keys = [...b.entries.keys()].sort();
  return {
    sequence: Number(b.sequence),
    entries: keys.map((k) => {
      const v = b.entries.get(k)!;
      return isBucket(v) ? { k, b: modelToJson(v) } : { k, v: hex(v) };
    }),
  };
}

/** Dumps our database (root bucket) in bboltcheck's format. */
export function dumpTx(tx: Tx): JsonBucket {
  const dumpBucket = (b: Bucket, sequence: bigint): JsonBucket => {
    const entries: JsonEntry[] = [];
    const c = b.cursor();
    for (let e = c.first(); e; e = c.next()) {
      if (e.value === null) {
        const child = b.bucket(e.key)!;
        entries.push({ k: hex(e.key), b: dumpBucket(child, child.getSequence()) });
      } else entries.push({ k: hex(e.key), v: hex(e.value) });
    }
    return { sequence: Number(sequence), entries };
  };
  return dumpBucket(tx.root, 0n);
}

export async function dumpDb(db: DB): Promise<JsonBucket> {
  return db.view((tx) => dumpTx(tx));
}

/** Writes the model into a write transaction (the root holds only buckets). */
export function fillTx(tx: Tx, model: MBucket): void {
  const fill = (b: Bucket, m: MBucket) => {
    for (const [k, v] of m.entries) {
      if (isBucket(v)) fill(b.createBucket(unhex(k)), v);
      else b.put(unhex(k), v);
    }
    if (m.sequence !== 0n) b.setSequence(m.sequence);
  };
  for (const [k, v] of model.entries) {
    if (!isBucket(v)) throw new Error("root entries must be buckets");
    fill(tx.createBucket(unhex(k)), v);
  }
}

/** Go and Debian's bbolt source (golang-go, golang-github-coreos-bbolt-dev) are there. */
export const haveGoBbolt =
  existsSync("/usr/share/gocode/src/go.etcd.io/bbolt/db.go") &&
  (process.env.PATH ?? "").split(":").some((d) => existsSync(`${d}/go`));

let built: string | undefined;

/** Builds test/go/bboltcheck with Debian's golang and bbolt; returns the binary path. */
export function buildBboltcheck(): string {
  if (built) return built;
  const dir = mkdtempSync(join(tmpdir(), "regmesh-bboltcheck-"));
  mkdirSync(join(dir, "cache"));
  const out = join(dir, "bboltcheck");
  execFileSync("go", ["build", "-o", out, "."], {
    cwd: new URL("../go/bboltcheck/", import.meta.url).pathname,
    env: {
      ...process.env,
      GO111MODULE: "off",
      GOPATH: "/usr/share/gocode",
      GOCACHE: join(dir, "cache"),
      GOFLAGS: "",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  built = out;
  return out;
}

export function bbolt(bin: string, ...args: string[]): string {
  return execFileSync(bin, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 1 << 28 });
}

/** The seed of a randomized test: REGMESH_SEED when set, else the given default. */
export function seedFrom(def: number): number {
  const s = process.env.REGMESH_SEED;
  return s ? Number(s) : def;
}

export const LONG = process.env.REGMESH_LONG === "1";
