// A deterministic cluster simulator for the Raft core (TigerBeetle's VOPR style,
// STYLE.md §3). One seeded PRNG decides everything: replica count, fault rates, the
// schedule of client requests, transfers, membership changes, network faults (drop,
// delay, duplicate, reorder, partition, heal) and disk faults (a crash that loses the
// Ready being written, possibly keeping a torn prefix of it; restart from what was
// persisted). Invariants are checked at every step; a failure names the seed.

import {
  type ConfChange,
  ConfChangeType,
  type ConfState,
  decodeConfChange,
  type Entry,
  EntryType,
  MemoryStorage,
  type Message,
  MessageType,
  NONE,
  RawNode,
  type Ready,
  type Snapshot,
  StateType,
  Xoshiro128,
} from "../../../src/raft/index.js";
import { decodeData, encodeWrite, KvApp } from "./app.js";

export class SimViolation extends Error {
  override name = "SimViolation";
}

/** The application's snapshot hook: a leader that must send a snapshot gets a fresh one. */
export class SimStorage extends MemoryStorage {
  source: (() => { index: number; confState: ConfState; data: Uint8Array } | undefined) | undefined;
  override snapshot(): Snapshot {
    const s = super.snapshot();
    const src = this.source?.();
    if (src && src.index > s.metadata.index && src.index <= this.lastIndex()) {
      return this.createSnapshot(src.index, src.confState, src.data);
    }
    return s;
  }
}

export type SimConfig = {
  seed: number;
  replicas: number;
  electionTimeoutTicks: number;
  preVote: boolean;
  checkQuorum: boolean;
  dropRate: number;
  duplicateRate: number;
  delayTicksMax: number;
  partitionRate: number;
  healRate: number;
  crashRate: number;
  tornWriteRate: number;
  restartRate: number;
  proposeRate: number;
  readRate: number;
  transferRate: number;
  membershipRate: number;
  compactEveryEntries: number;
  compactKeepEntries: number;
  maxInflightMsgs: number;
  maxSizePerMsgBytes: number;
  maxUncommittedEntriesSizeBytes: number;
  safetyTicks: number;
  livenessTicksMax: number;
};

/** Draws a whole configuration from the seed. */
export function configFromSeed(seed: number): SimConfig {
  const r = new Xoshiro128(seed ^ 0x5eed);
  const pick = <T>(xs: T[]): T => xs[r.intN(xs.length)]!;
  const electionTimeoutTicks = pick([3, 5, 10]);
  return {
    seed,
    replicas: pick([3, 3, 5]),
    electionTimeoutTicks,
    preVote: r.chance(0.7),
    checkQuorum: r.chance(0.7),
    dropRate: pick([0, 0.01, 0.05, 0.15, 0.3]),
    duplicateRate: pick([0, 0.01, 0.05]),
    delayTicksMax: pick([0, 1, 2, 4]),
    partitionRate: pick([0, 0.005, 0.02, 0.08, 0.2]),
    healRate: pick([0.02, 0.05, 0.1, 0.3]),
    crashRate: pick([0, 0.002, 0.01, 0.03, 0.08]),
    tornWriteRate: pick([0, 0.3, 1]),
    restartRate: pick([0.05, 0.2]),
    proposeRate: pick([0.1, 0.3, 0.6]),
    readRate: pick([0.05, 0.2]),
    transferRate: pick([0, 0.003, 0.01]),
    membershipRate: pick([0, 0.005, 0.02]),
    compactEveryEntries: pick([10, 30, 1000]),
    compactKeepEntries: pick([0, 3, 10]),
    maxInflightMsgs: pick([1, 4, 256]),
    maxSizePerMsgBytes: pick([1, 1, 200, 1024 * 1024]),
    maxUncommittedEntriesSizeBytes: pick([200, 64 * 1024 * 1024]),
    safetyTicks: 500,
    // Generous against the worst case seen (about 16 election timeouts), but bounded.
    livenessTicksMax: 40 * electionTimeoutTicks,
  };
}

type PendingRead = { ctx: string; key: string; minIndex: number; readState?: { index: number } };

class SimNode {
  raw: RawNode | undefined;
  app = new KvApp();
  /** Chain hash of the persisted log at each index (log matching checks). */
  chain = new Map<number, number>();
  reads: PendingRead[] = [];
  removed = false;
  downSinceTick = 0;
  /** Ids of writes proposed through this node, waiting to be applied (client acks). */
  proposals = new Map<string, string>();

  constructor(
    readonly id: number,
    readonly storage: SimStorage,
  ) {}
}

type InFlight = { at: number; seq: number; m: Message };

function fnv(s: string, h: number): number {
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619) >>> 0;
  return h;
}

function chainHash(prev: number, e: Entry): number {
  const lo = fnv(`${e.term}|${e.type}|${decodeData(e.data)}`, (prev >>> 0) ^ 2166136261);
  const hi = fnv(`${e.index}`, Math.floor(prev / 4294967296) ^ lo);
  return (hi & 0x1fffff) * 4294967296 + lo;
}

export class Simulation {
  readonly rng: Xoshiro128;
  readonly nodes = new Map<number, SimNode>();
  now = 0;
  private seq = 0;
  private net: InFlight[] = [];
  /** Partition: node id -> group; nodes in different groups cannot talk. */
  private group = new Map<number, number>();
  private nextId: number;
  private writeSeq = 0;
  private readSeq = 0;
  /** Election safety: the one leader of each term. */
  private leaderOfTerm = new Map<number, number>();
  /** State machine safety: what was applied at each index, by anyone. */
  private applied = new Map<number, string>();
  private maxAppliedIndex = 0;
  /**
   * For each committed index, the term in which it was committed: recorded when a leader
   * advances its commit index (observed right after each step and tick), or else an
   * upper bound (the term of the first node seen applying it, which learned the commit
   * from a leader of that term or a later one). Leader completeness (paper §5.4.3)
   * binds leaders of terms after the commit term, so this is never a false alarm.
   */
  private commitTermBound = new Map<number, number>();
  /** Log matching: the chain hash of every (index, term) ever persisted. */
  private prefix = new Map<string, number>();
  /** Highest index of an acknowledged write, per key (reads must see it). */
  private acked = new Map<string, number>();
  faultsEnabled = true;
  clientsEnabled = true;
  trace: string[] | undefined;
  stats = { commits: 0, reads: 0, elections: 0, crashes: 0, snapshots: 0, confChanges: 0, transfers: 0 };

  constructor(readonly cfg: SimConfig) {
    this.rng = new Xoshiro128(cfg.seed);
    const voters: number[] = [];
    for (let i = 1; i <= cfg.replicas; i++) voters.push(i);
    this.nextId = cfg.replicas + 1;
    // Bootstrap: every initial member starts from the same snapshot at index 1 holding
    // the initial configuration (etcd raft's test storage `withPeers`, at index 1).
    this.prefix.set("1:1", 1);
    this.applied.set(1, "1|bootstrap");
    for (const id of voters) {
      const storage = new SimStorage({
        data: new Uint8Array(0),
        metadata: { index: 1, term: 1, confState: { voters, learners: [] } },
      });
      storage.setHardState({ term: 1, vote: NONE, commit: 1 });
      const n = new SimNode(id, storage);
      n.chain.set(1, 1);
      this.nodes.set(id, n);
      this.start(n);
    }
  }

  private log(s: string): void {
    if (this.trace) {
      this.trace.push(`[t${this.now}] ${s}`);
      if (this.trace.length > 400) this.trace.splice(0, 100);
    }
  }

  fail(msg: string): never {
    throw new SimViolation(`seed ${this.cfg.seed} tick ${this.now}: ${msg}`);
  }

  // ---- node lifecycle -------------------------------------------------------------

  private start(n: SimNode): void {
    const snap = n.storage.snapshot();
    const { confState } = n.storage.initialState();
    n.app = new KvApp();
    n.app.restore(snap.data, snap.metadata.index, confState);
    n.reads = [];
    n.storage.source = () =>
      n.app.applied > 0
        ? { index: n.app.applied, confState: n.app.confState, data: n.app.serialize() }
        : undefined;
    n.raw = new RawNode({
      id: n.id,
      storage: n.storage,
      random: new Xoshiro128(this.rng.nextU32()),
      electionTimeoutTicks: this.cfg.electionTimeoutTicks,
      heartbeatIntervalTicks: 1,
      preVote: this.cfg.preVote,
      checkQuorum: this.cfg.checkQuorum,
      maxInflightMsgs: this.cfg.maxInflightMsgs,
      maxSizePerMsgBytes: this.cfg.maxSizePerMsgBytes,
      maxUncommittedEntriesSizeBytes: this.cfg.maxUncommittedEntriesSizeBytes,
    });
    this.log(`start ${n.id} at applied ${n.app.applied} last ${n.storage.lastIndex()}`);
  }

  private crash(n: SimNode): void {
    n.raw = undefined;
    n.reads = [];
    n.proposals.clear();
    n.downSinceTick = this.now;
    this.stats.crashes++;
    this.log(`crash ${n.id}`);
  }

  private live(): SimNode[] {
    const out: SimNode[] = [];
    for (const n of this.nodes.values()) if (n.raw && !n.removed) out.push(n);
    return out;
  }

  private pick<T>(xs: T[]): T | undefined {
    return xs.length === 0 ? undefined : xs[this.rng.intN(xs.length)];
  }

  leaders(): SimNode[] {
    return this.live().filter((n) => n.raw!.state === StateType.Leader);
  }

  // ---- network --------------------------------------------------------------------

  private canTalk(a: number, b: number): boolean {
    return (this.group.get(a) ?? 0) === (this.group.get(b) ?? 0);
  }

  private send(m: Message): void {
    const c = this.cfg;
    const faults = this.faultsEnabled;
    if (faults && this.rng.chance(c.dropRate)) {
      this.onLost(m);
      return;
    }
    const copies = faults && this.rng.chance(c.duplicateRate) ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      const delay = faults ? this.rng.intN(c.delayTicksMax + 1) : this.rng.intN(2);
      this.net.push({ at: this.now + delay, seq: this.seq++, m });
    }
  }

  private onLost(m: Message): void {
    // The transport reports a snapshot it could not deliver (etcd rafthttp).
    if (m.type === MessageType.MsgSnap) {
      const from = this.nodes.get(m.from);
      if (from?.raw && !from.removed) from.raw.reportSnapshot(m.to, false);
    }
  }

  private deliverDue(): boolean {
    const due: InFlight[] = [];
    const later: InFlight[] = [];
    for (const f of this.net) (f.at <= this.now ? due : later).push(f);
    if (due.length === 0) return false;
    this.net = later;
    due.sort((a, b) => a.at - b.at || a.seq - b.seq);
    for (const { m } of due) {
      const to = this.nodes.get(m.to);
      const from = this.nodes.get(m.from);
      const ok = to?.raw !== undefined && !to.removed && !from?.removed && this.canTalk(m.from, m.to);
      if (!ok) {
        this.onLost(m);
        if (from?.raw && !from.removed && this.faultsEnabled && this.rng.chance(0.1))
          from.raw.reportUnreachable(m.to);
        continue;
      }
      this.log(
        `deliver ${m.from}->${m.to} ${MessageType[m.type]} t${m.term} i${m.index} lt${m.logTerm} c${m.commit} n${m.entries.length}${m.reject ? " rej" : ""}`,
      );
      to!.raw!.step(m);
      this.observeCommit(to!);
      if (m.type === MessageType.MsgSnap && from?.raw) from.raw.reportSnapshot(m.to, true);
      this.processReadies();
    }
    return true;
  }

  // ---- ready handling (the node shell) ------------------------------------------------

  processReadies(): void {
    for (let round = 0; round < 100; round++) {
      let any = false;
      for (const n of this.nodes.values()) {
        if (n.raw && !n.removed && n.raw.hasReady()) {
          any = true;
          this.handleReady(n);
        }
      }
      if (!any) return;
    }
    this.fail("readies did not quiesce within 100 rounds");
  }

  private handleReady(n: SimNode): void {
    const raw = n.raw!;
    const rd = raw.ready();
    if (rd.softState?.raftState === StateType.Leader) this.onNewLeader(n);

    // Disk: the Ready is written, then fsynced. A crash in between loses it, except a
    // torn prefix (snapshot, then entries, then the hard state, in write order).
    if (this.faultsEnabled && rd.mustSync && this.rng.chance(this.cfg.crashRate)) {
      if (this.rng.chance(this.cfg.tornWriteRate)) {
        const records = (rd.snapshot ? 1 : 0) + rd.entries.length + (rd.hardState ? 1 : 0);
        const keep = this.rng.intN(records + 1);
        this.persist(n, rd, keep);
        this.log(`torn write on ${n.id}: kept ${keep}/${records} records`);
      }
      this.crash(n);
      return;
    }
    this.persist(n, rd, Number.MAX_SAFE_INTEGER);
    for (const m of rd.messages) this.send(m);
    this.apply(n, rd);
    raw.advance(rd);
    this.serveReads(n);
    this.maybeCompact(n);
    this.checkNode(n);
  }

  private persist(n: SimNode, rd: Ready, records: number): void {
    let left = records;
    if (rd.snapshot && left > 0) {
      left--;
      const s = rd.snapshot;
      n.storage.applySnapshot(s);
      const key = `${s.metadata.index}:${s.metadata.term}`;
      const h = this.prefix.get(key);
      if (h === undefined) this.fail(`snapshot ${key} on ${n.id} was never in any log`);
      n.chain.set(s.metadata.index, h);
      n.app.restore(s.data, s.metadata.index, s.metadata.confState);
      this.checkApplied(n, s.metadata.index, undefined);
      this.stats.snapshots++;
      this.log(`node ${n.id} installs snapshot ${key}`);
    }
    const ents = left >= rd.entries.length ? rd.entries : rd.entries.slice(0, left);
    left -= ents.length;
    if (ents.length > 0) {
      n.storage.append(ents);
      for (const e of ents) this.recordPersisted(n, e);
    }
    if (rd.hardState && left > 0) n.storage.setHardState(rd.hardState);
  }

  /** Log matching (paper §5.3): equal (index, term) implies equal prefixes. */
  private recordPersisted(n: SimNode, e: Entry): void {
    const prev = n.chain.get(e.index - 1);
    if (prev === undefined) this.fail(`node ${n.id} persisted ${e.index} without ${e.index - 1}`);
    const h = chainHash(prev, e);
    n.chain.set(e.index, h);
    const key = `${e.index}:${e.term}`;
    const seen = this.prefix.get(key);
    if (seen === undefined) this.prefix.set(key, h);
    else if (seen !== h) this.fail(`log matching: node ${n.id} entry ${key} has a different prefix`);
  }

  private checkApplied(n: SimNode, index: number, e: Entry | undefined): void {
    if (e === undefined) {
      if (!this.applied.has(index))
        this.fail(`node ${n.id} restored a snapshot at uncommitted index ${index}`);
      return;
    }
    const what = `${e.term}|${e.type}|${decodeData(e.data)}`;
    const prev = this.applied.get(index);
    if (prev === undefined) {
      this.applied.set(index, what);
      if (!this.commitTermBound.has(index)) {
        this.commitTermBound.set(index, n.raw?.raft.term ?? Number.MAX_SAFE_INTEGER);
      }
      this.stats.commits++;
      if (index > this.maxAppliedIndex) this.maxAppliedIndex = index;
      // Leader completeness, the other way round: an entry first seen committed now must
      // already be in the log of every current leader of a term after its commit term.
      const bound = this.commitTermBound.get(index)!;
      for (const l of this.leaders()) {
        const log = l.raw!.raft.raftLog;
        if (l.raw!.raft.term <= bound || index < log.firstIndex()) continue;
        if (log.termAt(index) !== e.term) {
          this.fail(
            `leader completeness: leader ${l.id} of term ${l.raw!.raft.term} lacks entry ${index} committed now`,
          );
        }
      }
    } else if (prev !== what) {
      this.fail(`state machine safety: node ${n.id} applied ${what} at ${index}, others applied ${prev}`);
    }
  }

  private apply(n: SimNode, rd: Ready): void {
    for (const e of rd.committed) {
      if (e.index <= n.app.applied) continue;
      if (e.index !== n.app.applied + 1) this.fail(`node ${n.id} applies ${e.index} after ${n.app.applied}`);
      this.checkApplied(n, e.index, e);
      if (e.type === EntryType.ConfChange) {
        const cc = decodeConfChange(e.data);
        n.app.applied = e.index;
        n.app.confState = n.raw!.applyConfChange(cc);
        this.observeCommit(n);
        this.log(`node ${n.id} applies conf change ${ConfChangeType[cc.type]} ${cc.nodeId} at ${e.index}`);
        if (cc.type === ConfChangeType.RemoveNode) this.markRemoved(cc.nodeId);
        continue;
      }
      const value = n.app.applyNormal(e);
      if (value !== undefined) {
        const key = n.proposals.get(value);
        if (key !== undefined) {
          // The client that proposed through this node hears the write is done.
          n.proposals.delete(value);
          if ((this.acked.get(key) ?? 0) < e.index) this.acked.set(key, e.index);
        }
      }
    }
    for (const rs of rd.readStates) {
      const ctx = decodeData(rs.requestCtx);
      const r = n.reads.find((x) => x.ctx === ctx);
      if (r) r.readState = { index: rs.index };
    }
  }

  private observeCommit(n: SimNode): void {
    const r = n.raw?.raft;
    if (!r || r.state !== StateType.Leader) return;
    for (let i = r.raftLog.committed; i > 0 && !this.commitTermBound.has(i); i--) {
      this.commitTermBound.set(i, r.term);
    }
  }

  private markRemoved(id: number): void {
    const n = this.nodes.get(id);
    if (!n || n.removed) return;
    // A removed member is shut down and its traffic refused, as etcd's transport does.
    n.removed = true;
    this.log(`node ${id} removed`);
  }

  /** Linearizable reads: a read issued after a write was acknowledged sees it. */
  private serveReads(n: SimNode): void {
    if (n.reads.length === 0) return;
    const rest: PendingRead[] = [];
    for (const r of n.reads) {
      if (r.readState === undefined || n.app.applied < r.readState.index) {
        rest.push(r);
        continue;
      }
      if (r.readState.index < r.minIndex) {
        this.fail(
          `stale read on ${n.id}: read index ${r.readState.index} < acknowledged write ${r.minIndex}`,
        );
      }
      const v = n.app.kv.get(r.key);
      if ((v?.index ?? 0) < r.minIndex) {
        this.fail(
          `stale read on ${n.id}: key ${r.key} at ${v?.index ?? 0}, acknowledged write at ${r.minIndex}`,
        );
      }
      this.stats.reads++;
    }
    n.reads = rest;
  }

  private maybeCompact(n: SimNode): void {
    const applied = n.app.applied;
    const first = n.storage.firstIndex();
    if (applied - (first - 1) < this.cfg.compactEveryEntries) return;
    if (applied > n.storage.snapshot().metadata.index && applied <= n.storage.lastIndex()) {
      n.storage.createSnapshot(applied, n.app.confState, n.app.serialize());
    }
    const to = Math.min(n.storage.snapshot().metadata.index, applied - this.cfg.compactKeepEntries);
    if (to > first - 1) {
      n.storage.compact(to);
      this.log(`node ${n.id} compacts to ${to}`);
    }
  }

  // ---- invariants ------------------------------------------------------------------

  private onNewLeader(n: SimNode): void {
    const r = n.raw!.raft;
    this.stats.elections++;
    this.log(`node ${n.id} becomes leader of term ${r.term}`);
    // Election safety (paper §5.2): at most one leader per term.
    const prev = this.leaderOfTerm.get(r.term);
    if (prev !== undefined && prev !== n.id) this.fail(`two leaders in term ${r.term}: ${prev} and ${n.id}`);
    this.leaderOfTerm.set(r.term, n.id);
    // Leader completeness (paper §5.4.3): the new leader holds every entry committed in
    // an earlier term. (A leader of an older term, elected late, need not.)
    const first = r.raftLog.firstIndex();
    for (let i = first; i <= this.maxAppliedIndex; i++) {
      const what = this.applied.get(i);
      if (what === undefined || this.commitTermBound.get(i)! >= r.term) continue;
      const t = r.raftLog.termAt(i);
      if (t === undefined || `${t}` !== what.slice(0, what.indexOf("|"))) {
        this.fail(
          `leader completeness: leader ${n.id} of term ${r.term} lacks committed entry ${i} (${what})`,
        );
      }
    }
  }

  private checkNode(n: SimNode): void {
    const r = n.raw?.raft;
    if (!r) return;
    if (r.state === StateType.Leader) {
      const prev = this.leaderOfTerm.get(r.term);
      if (prev !== undefined && prev !== n.id)
        this.fail(`two leaders in term ${r.term}: ${prev} and ${n.id}`);
    }
    if (r.raftLog.committed < n.app.applied) this.fail(`node ${n.id} applied beyond its commit index`);
  }

  // ---- the schedule --------------------------------------------------------------------

  private faults(): void {
    const c = this.cfg;
    const rng = this.rng;
    if (rng.chance(c.partitionRate)) {
      this.group = new Map();
      const ids = [...this.nodes.keys()];
      const groups = 2 + rng.intN(2);
      for (const id of ids) this.group.set(id, rng.intN(groups));
      this.log(`partition ${[...this.group].map(([id, g]) => `${id}:${g}`).join(" ")}`);
    }
    if (this.group.size > 0 && rng.chance(c.healRate)) {
      this.group = new Map();
      this.log("heal");
    }
    if (rng.chance(c.crashRate)) {
      const n = this.pick(this.live());
      if (n) this.crash(n);
    }
    for (const n of this.nodes.values()) {
      if (!n.raw && !n.removed && this.now > n.downSinceTick && rng.chance(c.restartRate)) this.start(n);
    }
  }

  private clients(): void {
    const c = this.cfg;
    const rng = this.rng;
    if (rng.chance(c.proposeRate)) {
      const n = this.pick(this.live());
      if (n) {
        const key = `k${rng.intN(3)}`;
        const value = `n${n.id}-${++this.writeSeq}`;
        const err = n.raw!.propose(encodeWrite(key, value));
        if (err === undefined) n.proposals.set(value, key);
        this.log(`propose ${key}=${value} via ${n.id}${err ? ` dropped: ${err.reason}` : ""}`);
      }
    }
    if (rng.chance(c.readRate)) {
      const n = this.pick(this.live());
      if (n) {
        const key = `k${rng.intN(3)}`;
        const ctx = `r${++this.readSeq}`;
        const err = n.raw!.readIndex(new TextEncoder().encode(ctx));
        if (err === undefined) n.reads.push({ ctx, key, minIndex: this.acked.get(key) ?? 0 });
      }
    }
    if (rng.chance(c.transferRate)) {
      const l = this.pick(this.leaders());
      if (l) {
        const voters = [...l.raw!.raft.trk.voters].filter((id) => id !== l.id);
        const to = this.pick(voters);
        if (to !== undefined) {
          l.raw!.transferLeadership(to);
          this.stats.transfers++;
          this.log(`transfer leadership ${l.id} -> ${to}`);
        }
      }
    }
    if (rng.chance(c.membershipRate)) this.membership();
  }

  private membership(): void {
    const l = this.pick(this.leaders());
    if (!l) return;
    const trk = l.raw!.raft.trk;
    const choice = this.rng.intN(3);
    let cc: ConfChange | undefined;
    if (choice === 0 && this.nodes.size < 9 && trk.learners.size === 0) {
      // A new server joins as a learner; it starts empty and catches up from the leader.
      const id = this.nextId++;
      const n = new SimNode(id, new SimStorage());
      n.chain.set(0, 0);
      this.nodes.set(id, n);
      this.start(n);
      cc = { type: ConfChangeType.AddLearnerNode, nodeId: id };
    } else if (choice === 1 && trk.learners.size > 0) {
      const id = [...trk.learners][0]!;
      const pr = trk.progress.get(id)!;
      // Promote only a learner that caught up (thesis §4.2.1), so availability holds.
      if (pr.match >= l.raw!.raft.raftLog.committed) cc = { type: ConfChangeType.AddNode, nodeId: id };
    } else if (choice === 2 && trk.voters.size > 3) {
      const id = this.pick([...trk.voters].sort((a, b) => a - b));
      if (id !== undefined) cc = { type: ConfChangeType.RemoveNode, nodeId: id };
    }
    if (!cc) return;
    const err = l.raw!.proposeConfChange(cc);
    if (!err) this.stats.confChanges++;
    this.log(
      `propose conf change ${ConfChangeType[cc.type]} ${cc.nodeId} via ${l.id}${err ? ` dropped: ${err.reason}` : ""}`,
    );
  }

  /** One tick of simulated time: faults, clients, ticks, then message delivery. */
  step(): void {
    this.now++;
    if (this.faultsEnabled) this.faults();
    if (this.clientsEnabled) this.clients();
    for (const n of this.live()) {
      n.raw!.tick();
      this.observeCommit(n);
    }
    this.processReadies();
    for (let round = 0; round < 50 && this.deliverDue(); round++) {}
  }

  // ---- hand-driven scenarios (named tests drive the same simulator) ------------------

  /** Splits the nodes into groups that cannot talk to each other. */
  partition(groups: number[][]): void {
    this.group = new Map();
    groups.forEach((g, i) => {
      for (const id of g) this.group.set(id, i);
    });
    this.log(`partition ${groups.map((g) => g.join(" ")).join(" | ")}`);
  }

  heal(): void {
    this.group = new Map();
  }

  run(ticks: number): void {
    for (let i = 0; i < ticks; i++) this.step();
  }

  leader(): SimNode | undefined {
    const ls = this.leaders();
    // Several nodes may believe they lead (in different terms); the newest term wins.
    return ls.sort((a, b) => b.raw!.raft.term - a.raw!.raft.term)[0];
  }

  /** A client write through node `id`; returns whether Raft accepted it for proposing. */
  write(id: number, key: string, value: string): boolean {
    const n = this.nodes.get(id)!;
    const err = n.raw!.propose(encodeWrite(key, value));
    if (err === undefined) n.proposals.set(value, key);
    return err === undefined;
  }

  /** A linearizable read of `key` through node `id`, checked when served. */
  read(id: number, key: string): void {
    const n = this.nodes.get(id)!;
    const ctx = `r${++this.readSeq}`;
    if (n.raw!.readIndex(new TextEncoder().encode(ctx)) === undefined) {
      n.reads.push({ ctx, key, minIndex: this.acked.get(key) ?? 0 });
    }
  }

  pendingReads(): number {
    let n = 0;
    for (const x of this.nodes.values()) n += x.reads.length;
    return n;
  }

  /** Highest acknowledged write index of `key` (0 if none). */
  ackedIndex(key: string): number {
    return this.acked.get(key) ?? 0;
  }

  crashNode(id: number): void {
    this.crash(this.nodes.get(id)!);
  }

  restartNode(id: number): void {
    this.start(this.nodes.get(id)!);
  }

  /** Proposes a membership change through the current leader; a new id gets an empty node. */
  changeMembership(cc: ConfChange): boolean {
    const l = this.leader();
    if (!l) return false;
    if (!this.nodes.has(cc.nodeId)) {
      const n = new SimNode(cc.nodeId, new SimStorage());
      n.chain.set(0, 0);
      this.nodes.set(cc.nodeId, n);
      this.start(n);
    }
    return l.raw!.proposeConfChange(cc) === undefined;
  }

  /** After the safety phase: heal, restart everyone, stop faults; liveness must follow. */
  healAll(): void {
    this.faultsEnabled = false;
    this.group = new Map();
    for (const n of this.nodes.values()) if (!n.raw && !n.removed) this.start(n);
    this.log("heal all; faults off");
  }

  /**
   * Liveness (thesis §3.6 under a healed network): within `maxTicks`, some leader commits
   * a new proposal. Returns the number of ticks it took.
   */
  checkLiveness(maxTicks: number): number {
    this.clientsEnabled = false;
    const marker = `live-${this.cfg.seed}`;
    const start = this.now;
    let proposedAt = -1;
    while (this.now - start < maxTicks) {
      this.step();
      if (proposedAt < 0 || this.now - proposedAt > 3 * this.cfg.electionTimeoutTicks) {
        const l = this.leaders()[0];
        if (l && l.raw!.propose(new TextEncoder().encode(marker)) === undefined) proposedAt = this.now;
      }
      for (const n of this.live()) {
        if (n.raw!.state === StateType.Leader && this.appliedMarker(marker)) return this.now - start;
      }
    }
    const states = this.live().map((n) => {
      const r = n.raw!.raft;
      return `${n.id}:${r.state}/t${r.term}/lead${r.lead}/c${r.raftLog.committed}/last${r.raftLog.lastIndex()}/v[${[...r.trk.voters]}]`;
    });
    return this.fail(
      `liveness: no proposal committed within ${maxTicks} ticks after healing; ${states.join(" ")}`,
    );
  }

  private appliedMarker(marker: string): boolean {
    for (let i = this.maxAppliedIndex; i > this.maxAppliedIndex - 50 && i > 0; i--) {
      const what = this.applied.get(i);
      if (what?.endsWith(`|${marker}`)) return true;
    }
    return false;
  }
}

/** Runs one seed through a safety phase and a liveness phase; throws a SimViolation. */
export function runSeed(
  seed: number,
  opts: { trace?: boolean } = {},
): { sim: Simulation; livenessTicks: number } {
  const cfg = configFromSeed(seed);
  const sim = new Simulation(cfg);
  if (opts.trace) sim.trace = [];
  try {
    for (let t = 0; t < cfg.safetyTicks; t++) sim.step();
    sim.healAll();
    const livenessTicks = sim.checkLiveness(cfg.livenessTicksMax);
    return { sim, livenessTicks };
  } catch (e) {
    if (e instanceof Error) {
      e.message += `\nconfig: ${JSON.stringify(cfg)}`;
      if (sim.trace) e.message += `\n--- last events ---\n${sim.trace.join("\n")}`;
    }
    throw e;
  }
}
