// Linearizability under faults: six clients run random put / get / delete / compare-and-set
// on five keys at a time (fresh ones every 1,000 operations) against different members of a
// three-member cluster, with linearizable reads (etcd's default), while a seeded schedule
// kills members with -9 (the leader among them), pauses members with SIGSTOP (the leader
// among them), and crashes the leader (with REGMESH_FAULT_FS=1: losing every write it had
// not fsynced). The recorded history must be linearizable (Herlihy & Wing) for the
// key-value model; testkit's checker decides (Wing & Gong with Lowe's memo). The same
// workload runs against a real etcd as a control: if etcd failed, the checker would be wrong.
// docs/proof.md explains the check, the report and the known problems.
//
// 20 s of workload per cluster in the default suite; REGMESH_LONG=1 runs 90 s with faults
// twice as often. REGMESH_SEED replays the schedule and the clients' choices (fault and
// request timing is real, so a replay is close, not exact). On a failure the history is
// written as JSON next to the cluster's logs, which are kept.

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { credentials, Metadata } from "@grpc/grpc-js";
import { etcdserverpb } from "@regmesh/proto";
import {
  type CheckResult,
  type Cluster,
  checkHistory,
  formatCheckResult,
  HistoryRecorder,
  type KvInput,
  type KvOutput,
  type KvState,
  kvModel,
  type Member,
  type Operation,
  type RegistryKind,
  startCluster,
} from "@regmesh/testkit";
import { afterAll, describe, expect, it } from "vitest";

const long = process.env.REGMESH_LONG === "1";
const seed = Number(process.env.REGMESH_SEED ?? Date.now() % 1_000_000);
const workloadMs = long ? 90_000 : 20_000;
const workers = 6;
/** Keys in use at a time. */
const keysLive = 5;
/**
 * Operations per generation of keys: after this many (over all workers), the clients move to
 * five fresh keys, as Jepsen's independent keys do. Short per-key histories keep the search
 * small even when a key has many operations of unknown outcome: a key with 2,000 operations
 * and 20 unknown writes could not be refuted within budget (a corrupted read came out
 * "unknown"), one with a few hundred is refuted at once.
 */
const opsPerGeneration = 1000;
/** Per request: long enough to ride out an election (1 s), short enough not to stall on a paused member. */
const requestDeadlineMs = 1500;
/** Search budget per key; a key that needs more is reported "unknown". */
const maxStepsPerPartition = 10_000_000;
/**
 * Share of keys the checker may leave "unknown" (out of budget) before the run fails: 1 in
 * 20, rounded down, so none in a default run. A violation on such a key would go unseen.
 */
const unknownKeysShareMax = 0.05;

const clusters: Cluster[] = [];
/** Clusters of failed runs: their data and logs are kept for a look. */
const keep = new Set<Cluster>();
afterAll(async () => {
  for (const c of clusters) await c.stop({ remove: !keep.has(c) });
});

function rng(s: number) {
  let x = s >>> 0 || 1;
  return (n: number) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// --- The fault schedule: a pure function of the seed ------------------------------------

type FaultKind = "kill9" | "kill9-leader" | "pause" | "pause-leader" | "crash-unsynced-leader";
type Fault = {
  kind: FaultKind;
  /** The member hit by faults not aimed at the leader (and when no leader is found). */
  member: number;
  atMs: number;
  downMs: number;
};

/**
 * One fault at a time, so a quorum stays up and the clients make progress. The first five
 * are the five kinds in a seeded order, so every default run has each at least once. A
 * paused leader is the classic trap for reads: it wakes up believing it still leads.
 */
function faultSchedule(s: number, durationMs: number, often: boolean): Fault[] {
  const rand = rng(s * 31 + 7);
  const kinds: FaultKind[] = ["kill9", "kill9-leader", "pause", "pause-leader", "crash-unsynced-leader"];
  for (let i = kinds.length - 1; i > 0; i--) {
    const j = rand(i + 1);
    [kinds[i], kinds[j]] = [kinds[j]!, kinds[i]!];
  }
  const out: Fault[] = [];
  let at = 1500;
  for (let i = 0; ; i++) {
    const kind = i < kinds.length ? kinds[i]! : kinds[rand(kinds.length)]!;
    const downMs = 600 + rand(1400);
    if (at + downMs > durationMs - 2500) break;
    out.push({ kind, member: rand(3), atMs: at, downMs });
    // The gap counts from the fault's start; the member's restart and health check run in it.
    at += downMs + (often ? 800 + rand(800) : 1200 + rand(800));
  }
  return out;
}

// --- Clients ----------------------------------------------------------------------------

type Kv = etcdserverpb.KVClient;

function unary<Req, Res>(
  call: (
    req: Req,
    md: Metadata,
    opts: { deadline: number },
    cb: (err: Error | null, res: Res) => void,
  ) => void,
  req: Req,
): Promise<Res> {
  return new Promise((resolve, reject) =>
    call(req, new Metadata(), { deadline: Date.now() + requestDeadlineMs }, (err, res) =>
      err ? reject(err) : resolve(res),
    ),
  );
}

/** One operation of the model as etcd requests. */
async function execute(kv: Kv, input: KvInput): Promise<KvOutput> {
  const key = Buffer.from(input.key);
  switch (input.f) {
    case "get": {
      const r = await unary(kv.range.bind(kv), etcdserverpb.RangeRequest.create({ key }));
      return { value: r.kvs[0] === undefined ? null : r.kvs[0].value.toString() };
    }
    case "put":
      await unary(kv.put.bind(kv), etcdserverpb.PutRequest.create({ key, value: Buffer.from(input.value) }));
      return {};
    case "delete": {
      const r = await unary(kv.deleteRange.bind(kv), etcdserverpb.DeleteRangeRequest.create({ key }));
      return { deleted: Number(r.deleted) };
    }
    case "cas": {
      // Absent is version 0; a value compare on an absent key is false in etcd (applyCompare).
      const compare =
        input.expected === null
          ? etcdserverpb.Compare.create({
              key,
              target: etcdserverpb.Compare_CompareTarget.VERSION,
              result: etcdserverpb.Compare_CompareResult.EQUAL,
              version: 0n,
            })
          : etcdserverpb.Compare.create({
              key,
              target: etcdserverpb.Compare_CompareTarget.VALUE,
              result: etcdserverpb.Compare_CompareResult.EQUAL,
              value: Buffer.from(input.expected),
            });
      const r = await unary(
        kv.txn.bind(kv),
        etcdserverpb.TxnRequest.create({
          compare: [compare],
          success: [{ requestPut: etcdserverpb.PutRequest.create({ key, value: Buffer.from(input.value) }) }],
        }),
      );
      return { succeeded: r.succeeded };
    }
  }
}

/** A worker's next operation: reads 40%, puts 25%, compare-and-sets 25%, deletes 10%. Values are unique. */
function nextInput(
  rand: (n: number) => number,
  w: number,
  n: number,
  generation: number,
  seen: Map<string, KvState>,
): KvInput {
  const key = `lin/g${generation}/k${rand(keysLive)}`;
  const value = `w${w}.${n}`;
  const r = rand(100);
  if (r < 40) return { f: "get", key };
  if (r < 65) return { f: "put", key, value };
  if (r < 75) return { f: "delete", key };
  // Mostly what this worker last saw, so that many succeed; sometimes absent.
  const expected = rand(5) === 0 ? null : (seen.get(key) ?? null);
  return { f: "cas", key, expected, value };
}

async function leaderOf(c: Cluster): Promise<Member | undefined> {
  for (const m of c.members) {
    if (!m.proc?.running) continue;
    const client = new etcdserverpb.MaintenanceClient(m.endpoint, credentials.createInsecure());
    try {
      const s = await unary(client.status.bind(client), etcdserverpb.StatusRequest.create({}));
      if (s.leader !== 0n && s.leader === s.header?.memberId) return m;
    } catch {
      // Down or paused: ask the next one.
    } finally {
      client.close();
    }
  }
  return undefined;
}

type RunResult = {
  cluster: Cluster;
  history: Operation<KvInput, KvOutput>[];
  result: CheckResult<KvState, KvInput, KvOutput>;
  checkMs: number;
  faults: string[];
  scheduled: Fault[];
  /** Members that could not restart after a crash with lost writes (the known bug). */
  restartBugs: string[];
  /** Why the fault injector stopped early, if it did. */
  injected: Error | undefined;
};

/** Waits until a restarted member is healthy; undefined when it is, else why not (it exited, or 60 s passed). */
async function comesBack(m: Member): Promise<string | undefined> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (await m.healthy()) return undefined;
    // registry-node prints "registry-node: <why>" when it cannot start; it may not exit.
    const fatal = /^registry-node: .*$/m.exec(m.proc?.logTail(5) ?? "");
    if (fatal) return fatal[0];
    if (!m.proc?.running) {
      const tail = m.proc?.logTail(5) ?? "";
      return `exited ${JSON.stringify(m.proc?.exitStatus)}: ${
        tail
          .split("\n")
          .filter((l) => l.trim() !== "")
          .pop() ?? ""
      }`;
    }
    await sleep(100);
  }
  return "not healthy within 60 s";
}

/**
 * `lostWrites`: registry-node runs on its fault file layer (REGMESH_FAULT_FS=1), which keeps
 * unsynced writes in the process, so every kill -9 and SIGUSR2 crash loses them, as power
 * loss would. Without it, kill -9 leaves them in the OS page cache.
 */
async function run(kind: RegistryKind, lostWrites = false): Promise<RunResult> {
  const c = await startCluster({
    kind,
    members: 3,
    env: lostWrites ? { REGMESH_FAULT_FS: "1", REGMESH_FAULT_SEED: String(seed) } : undefined,
  });
  clusters.push(c);
  console.log(`${kind}: data and logs in ${join(c.members[0]!.dataDir, "..")} (kept if the run fails)`);
  const rec = new HistoryRecorder<KvInput, KvOutput>();
  const kvs = c.endpoints.map((e) => new etcdserverpb.KVClient(e, credentials.createInsecure()));
  const faults: string[] = [];
  const log = (s: string) => faults.push(`${rec.time().toFixed(0).padStart(6)} ms  ${s}`);
  let stop = false;
  let opsStarted = 0;

  const worker = async (w: number) => {
    const rand = rng(seed * 1000 + w + 1);
    const seen = new Map<string, KvState>();
    let member = w % kvs.length;
    for (let n = 0; !stop; n++) {
      const input = nextInput(rand, w, n, Math.floor(opsStarted++ / opsPerGeneration), seen);
      const out = await rec.run(w, input, () => execute(kvs[member]!, input));
      if (out.status === "ok") {
        if (input.f === "get") seen.set(input.key, out.output.value ?? null);
        if (input.f === "cas" && out.output.succeeded) seen.set(input.key, input.value);
      } else {
        // Move on to another member, after a short pause so a dead one is not hammered.
        member = (member + 1 + rand(kvs.length - 1)) % kvs.length;
        await sleep(20 + rand(80));
      }
    }
  };

  const scheduled = faultSchedule(seed, workloadMs, long);
  const restartBugs: string[] = [];
  let done = 0;
  const injector = async () => {
    const t0 = rec.time();
    for (const f of scheduled) {
      const wait = t0 + f.atMs - rec.time();
      if (wait > 0) await sleep(wait);
      // Restarts run late on a loaded machine: once the workload has ended, only the first
      // five faults (one of each kind) still run; the workload waits for them.
      if (stop && done >= 5) break;
      const leader = f.kind.endsWith("-leader") ? await leaderOf(c) : undefined;
      const m = leader ?? c.members[f.member]!;
      if (f.kind === "pause" || f.kind === "pause-leader") {
        log(`pause ${m.name}${leader ? " (leader)" : ""} (SIGSTOP) for ${f.downMs} ms`);
        m.pause();
        await sleep(f.downMs);
        m.resume();
        log(`resume ${m.name} (SIGCONT)`);
        done += 1;
        continue;
      }
      if (f.kind === "crash-unsynced-leader" && lostWrites) {
        // The fault file layer drops every write not yet fsynced, then SIGKILL (io/index.ts).
        log(`crash ${m.name}${leader ? " (leader)" : ""}, losing unsynced writes (SIGUSR2)`);
        m.proc!.killNow("SIGUSR2");
        await m.proc!.exited;
      } else {
        log(`kill -9 ${m.name}${leader ? " (leader)" : ""}`);
        await m.kill9();
      }
      await sleep(f.downMs);
      m.start();
      log(`restart ${m.name}`);
      const error = await comesBack(m);
      if (error === undefined) {
        log(`${m.name} healthy`);
        done += 1;
        continue;
      }
      // A member that lost unsynced writes used to refuse to restart ("applied N outside
      // [1, N-k]": the WAL's commit behind the backend's consistent index), found by this run
      // and fixed in raft-member.ts; any restart failure fails the run.
      log(`${m.name} DID NOT COME BACK: ${error}`);
      throw new Error(`${m.name} did not come back after ${f.kind}: ${error}`);
    }
  };

  let injectorEnded = false;
  const injecting = injector().then(
    () => undefined,
    (err: Error) => err,
  );
  void injecting.then(() => {
    injectorEnded = true;
  });
  const running = Array.from({ length: workers }, (_, w) => worker(w));
  await sleep(workloadMs);
  // Every kind of fault runs at least once, however slow the restarts were.
  while (done < Math.min(5, scheduled.length) && !injectorEnded) await sleep(100);
  stop = true;
  await Promise.all(running);
  const injected = await injecting;
  for (const k of kvs) k.close();

  const history = rec.history();
  const started = performance.now();
  const result = checkHistory(kvModel, history, { maxStepsPerPartition });
  const checkMs = performance.now() - started;
  const counts = rec.counts();
  console.log(
    [
      `linearizability on ${kind} (seed ${seed}; replay with REGMESH_SEED=${seed}): ${history.length} operations ` +
        `(${counts.ok} ok, ${counts.fail} failed, ${counts.unknown} unknown) by ${workers} clients in ${workloadMs} ms; ` +
        `checked in ${checkMs.toFixed(0)} ms`,
      ...faults.map((f) => `  ${f}`),
      `  ${result.partitions.length} keys: ${result.verdict}; per key at most ${Math.max(...result.partitions.map((p) => p.operations))} ` +
        `operations, ${Math.max(...result.partitions.map((p) => p.unknown))} of unknown outcome, ` +
        `${Math.max(...result.partitions.map((p) => p.steps))} search steps`,
      ...result.partitions
        .filter((p) => p.verdict !== "linearizable")
        .map(
          (p) =>
            `  ${p.key}: ${p.verdict}, ${p.operations} operations (${p.unknown} unknown), ${p.steps} steps`,
        ),
    ].join("\n"),
  );
  if (result.verdict !== "linearizable") {
    keep.add(c);
    const file = join(c.members[0]!.logDir, `history-${kind}-${seed}.json`);
    writeFileSync(file, JSON.stringify({ seed, kind, faults, history }, null, 1));
    console.log(`${formatCheckResult(kvModel, result)}\nhistory: ${file}`);
  }
  if (restartBugs.length > 0)
    console.warn(`KNOWN BUG (registry-node restart after lost writes): ${restartBugs.join("; ")}`);
  return { cluster: c, history, result, checkMs, faults, scheduled, restartBugs, injected };
}

function expectLinearizable(kind: RegistryKind, r: RunResult): void {
  keep.add(r.cluster);
  const why = `${kind}, seed ${seed} (replay with REGMESH_SEED=${seed})\n${formatCheckResult(kvModel, r.result)}`;
  expect(r.result.verdict === "not-linearizable" ? why : "no violation").toBe("no violation");
  const unknown = r.result.partitions.filter((p) => p.verdict === "unknown").length;
  const unknownMax = Math.floor(r.result.partitions.length * unknownKeysShareMax);
  expect(unknown, `keys the checker could not decide: ${why}`).toBeLessThanOrEqual(unknownMax);
  // The run did something: plenty of operations on every key, and the faults happened.
  expect(r.history.filter((o) => o.status === "ok").length).toBeGreaterThan(200);
  expect(r.result.partitions.length).toBeGreaterThanOrEqual(keysLive);
  expect(r.scheduled.length).toBeGreaterThanOrEqual(4);
  expect(new Set(r.scheduled.map((f) => f.kind)).size).toBe(Math.min(5, r.scheduled.length));
  expect(r.injected, "the fault injector failed").toBeUndefined();
  // At least the first five faults ran, one of each kind (later ones may fall after the end).
  if (r.restartBugs.length === 0) {
    expect(r.faults.filter((f) => / (pause|kill -9|crash) /.test(f)).length).toBeGreaterThanOrEqual(
      Math.min(5, r.scheduled.length),
    );
  }
  // And the check can fail: the same history with one read changed to a value nobody wrote is caught.
  // Three reads, a quarter, half and three quarters through the run, one at a time.
  const reads = r.history.filter((o) => o.input.f === "get" && o.status === "ok");
  for (const at of [0.25, 0.5, 0.75]) {
    const victim = reads[Math.floor(reads.length * at)]!;
    const broken = r.history.map((o) => (o === victim ? { ...o, output: { value: "never-written" } } : o));
    const verdict = checkHistory(kvModel, broken, { maxStepsPerPartition }).verdict;
    expect(verdict, `a read of a value never written at ${at} of the run`).toBe("not-linearizable");
  }
  keep.delete(r.cluster);
}

describe("linearizability of single-key operations through crashes, restarts and pauses", () => {
  const timeoutMs = workloadMs + 150_000;
  // The default suite runs the crash run that loses unsynced writes (kill -9, pauses and leader
  // faults included); plain kill -9 and the etcd control join it under `npm run test:long`.
  it.runIf(long)(
    `registry-node (3 members) is linearizable through kill -9, restarts and pauses (seed ${seed}; replay with REGMESH_SEED=${seed})`,
    async () => {
      const r = await run("registry-node");
      expectLinearizable("registry-node", r);
      expect(r.restartBugs).toEqual([]);
    },
    timeoutMs,
  );

  it(
    `registry-node (3 members) is linearizable through crashes that lose unsynced writes (seed ${seed})`,
    async () => {
      const r = await run("registry-node", true);
      expectLinearizable("registry-node", r);
      expect(r.restartBugs).toEqual([]);
    },
    timeoutMs,
  );

  it.runIf(long)(
    `etcd (3 members), the control, is linearizable under the same workload (seed ${seed})`,
    async () => {
      expectLinearizable("etcd", await run("etcd"));
    },
    timeoutMs,
  );
});
