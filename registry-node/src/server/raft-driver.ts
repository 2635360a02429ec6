// Drives the Raft core (../raft) for the member: a tick timer, peer messages in, and the
// Ready loop: persist to the WAL (fsync before anything depends on it), send messages,
// apply committed entries in order, answer ReadIndex reads, advance. Everything here is
// the I/O shell; every decision is the core's (STYLE.md §1).
//
// Order within one Ready, as etcd raft requires: snapshot and entries and hard state are
// made durable first; only then are messages sent (a vote or an acknowledgement must
// survive a crash once announced); committed entries are applied after that.

import {
  type ConfChange,
  decodeConfChange,
  type Entry,
  EntryType,
  type HardState,
  type MemoryStorage,
  type Message,
  ProposalDroppedError,
  RawNode,
  type ReadState,
  type Snapshot,
  type SoftState,
  StateType,
  Xoshiro128,
} from "../raft/index.js";
import type { RaftDiskStorage } from "../wal/raft-log-store.js";
import { errors } from "./errors.js";
import type { Transport } from "./transport.js";

/** Snap files kept (etcd's --max-snapshots default). */
const maxSnapFiles = 5;

/** How long a ReadIndex request may go unanswered before it is asked again (etcd: 500 ms). */
const readIndexRetryMs = 500;

/**
 * Committed entries applied in one turn of the event loop before yielding to it. A member
 * catching up (a restart replaying its WAL, a follower that was behind) may be handed tens
 * of thousands of entries in one Ready; applying them in one go would freeze every client
 * and peer connection for seconds. Between slices, requests are served, and proposals see
 * the gap between the committed and the applied index (etcd's ErrTooManyRequests).
 */
const applyEntriesPerTurnMax = 500;

export type RaftDriverOptions = {
  id: number;
  storage: MemoryStorage;
  disk: RaftDiskStorage;
  transport: Transport;
  heartbeatIntervalMs: number;
  electionTimeoutMs: number;
  /** Index already applied to the state machine (entries up to it are not applied again). */
  applied: number;
  /** Applies one committed normal entry; returns what the proposer is answered with. */
  apply: (entry: Entry) => void;
  /** Applies a membership change once committed. */
  onConfChange: (cc: ConfChange, index: number) => void;
  onLeaderChange: (lead: number, isLeader: boolean, term: number) => void;
  /** Take a snapshot and compact the log every this many applied entries (--snapshot-count). */
  snapshotCount: number;
  /** Entries kept in memory behind a snapshot for slow followers (etcd: 5,000). */
  catchUpEntries: number;
  /** Makes everything applied so far durable in the state machine's storage. */
  flushStateMachine: () => Promise<void>;
  /**
   * Installs a snapshot from the leader as the state machine (its data in the message, or
   * in the file the transport received it into); returns the backend's consistent index.
   */
  installSnapshot: (snapshot: Snapshot) => Promise<number>;
  log: { warn(obj: object, msg?: string): void; error(obj: object, msg?: string): void };
  seed: number;
};

export class RaftDriver {
  readonly node: RawNode;
  private tickTimer: NodeJS.Timeout | undefined;
  private scheduled = false;
  private running = false;
  private stopped = false;
  private hardState: HardState;
  private appliedIndex: number;
  /**
   * Highest index handed to the apply stage (etcd's committedIndex, set as each Ready is
   * taken, before its entries are persisted and applied); `appliedIndex` trails it.
   */
  private committedIndex: number;
  private lead = 0;
  private term = 0;
  private readonly leaderWaiters = new Set<() => void>();
  private readonly appliedWaiters: { index: number; resolve: () => void }[] = [];
  /** ReadIndex rounds: the one in flight, and readers queued for the next. */
  private readRound: { ctx: string; readers: ReadWaiter[] } | undefined;
  private readQueue: ReadWaiter[] = [];
  private readCounter = 0;
  private fatal: Error | undefined;
  private snapIndex = 0;
  private compacting = false;

  constructor(private readonly opts: RaftDriverOptions) {
    const electionTicks = Math.max(2, Math.round(opts.electionTimeoutMs / opts.heartbeatIntervalMs));
    this.node = new RawNode({
      id: opts.id,
      storage: opts.storage,
      random: new Xoshiro128(opts.seed),
      electionTimeoutTicks: electionTicks,
      heartbeatIntervalTicks: 1,
      applied: opts.applied,
      checkQuorum: true,
      preVote: true,
    });
    this.hardState = opts.storage.initialState().hardState;
    this.appliedIndex = opts.applied;
    this.committedIndex = opts.applied;
    this.snapIndex = opts.storage.firstIndex() - 1;
  }

  start(): void {
    this.tickTimer = setInterval(() => {
      this.node.tick();
      this.schedule();
    }, this.opts.heartbeatIntervalMs);
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.tickTimer) clearInterval(this.tickTimer);
    for (const f of this.leaderWaiters) f();
    this.leaderWaiters.clear();
    while (this.running) await new Promise((r) => setTimeout(r, 5));
  }

  get leader(): number {
    return this.lead;
  }

  get currentTerm(): number {
    return this.term;
  }

  get applied(): number {
    return this.appliedIndex;
  }

  /** The committed index known to the apply stage (>= `applied`). */
  get committed(): number {
    return this.committedIndex;
  }

  get lastIndex(): number {
    return this.opts.storage.lastIndex();
  }

  get isLeader(): boolean {
    return this.lead === this.opts.id && this.node.raft.state === StateType.Leader;
  }

  /** A message from a peer. */
  step(m: Message): void {
    if (this.stopped) return;
    this.node.step(m);
    this.schedule();
  }

  /** Asks the core to hand leadership to `to` (thesis §3.10); the caller watches for the change. */
  transferLeadership(to: number): void {
    this.node.transferLeadership(to);
    this.schedule();
  }

  reportUnreachable(id: number): void {
    this.node.reportUnreachable(id);
  }

  /**
   * How sending a snapshot to `id` ended. The core waits in "snapshot" state for it: a
   * follower whose snapshot was lost would otherwise never be sent another.
   */
  reportSnapshot(id: number, ok: boolean): void {
    if (this.stopped) return;
    this.node.reportSnapshot(id, ok);
    this.schedule();
  }

  /** Proposes data, waiting (until `deadlineMs`) for a leader when none is known. */
  async propose(data: Uint8Array, deadlineMs: number): Promise<void> {
    for (;;) {
      if (this.stopped) throw errors.stopped();
      if (this.fatal) throw this.fatal;
      const r = this.node.propose(data);
      this.schedule();
      if (r === undefined) return;
      if (!(r instanceof ProposalDroppedError)) throw r;
      // Dropped (no leader yet, or a leadership transfer): wait for the next leader change.
      await this.waitLeaderChange(deadlineMs);
    }
  }

  async proposeConfChange(cc: ConfChange, deadlineMs: number): Promise<void> {
    for (;;) {
      if (this.stopped) throw errors.stopped();
      const r = this.node.proposeConfChange(cc);
      this.schedule();
      if (r === undefined) return;
      if (r.reason === "conf-change-pending") throw errors.timeout();
      await this.waitLeaderChange(deadlineMs);
    }
  }

  private waitLeaderChange(deadlineMs: number): Promise<void> {
    const left = deadlineMs - Date.now();
    if (left <= 0) return Promise.reject(this.lead === 0 ? errors.noLeader() : errors.timeout());
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(t);
        this.leaderWaiters.delete(done);
        resolve();
      };
      const t = setTimeout(() => {
        this.leaderWaiters.delete(done);
        reject(this.lead === 0 ? errors.noLeader() : errors.timeout());
      }, left);
      this.leaderWaiters.add(done);
    });
  }

  /**
   * A linearizable read point (Raft thesis §6.4): resolves once this member has applied
   * everything the leader had committed when the read arrived. Concurrent reads share one
   * ReadIndex round, as etcd's linearizableReadLoop batches them.
   */
  readIndex(deadlineMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const w: ReadWaiter = { resolve, reject, deadlineMs };
      this.readQueue.push(w);
      w.timer = setTimeout(
        () => {
          w.done = true;
          reject(errors.timeout());
        },
        Math.max(0, deadlineMs - Date.now()),
      );
      if (this.readRound === undefined) this.startReadRound();
    });
  }

  private startReadRound(): void {
    const readers = this.readQueue.filter((w) => !w.done);
    this.readQueue = [];
    if (readers.length === 0) return;
    const ctx = `r${++this.readCounter}`;
    this.readRound = { ctx, readers };
    const r = this.node.readIndex(new TextEncoder().encode(ctx));
    this.schedule();
    // A request or its answer can be lost (a dropped message, a leader change): as etcd's
    // linearizableReadLoop, ask again with a new context if no answer came in time.
    const retry = setTimeout(() => {
      if (this.readRound?.ctx !== ctx || this.stopped) return;
      this.readRound = undefined;
      this.readQueue.unshift(...readers.filter((w) => !w.done));
      this.startReadRound();
    }, readIndexRetryMs);
    retry.unref();
    if (r !== undefined) {
      // No leader to ask: try again at the next leader change (or time out).
      this.readRound = undefined;
      this.readQueue.unshift(...readers);
      this.waitLeaderChange(Math.max(...readers.map((w) => w.deadlineMs))).then(
        () => this.startReadRound(),
        (err) => {
          for (const w of readers) finish(w, err);
          this.readQueue = this.readQueue.filter((w) => !readers.includes(w));
        },
      );
    }
  }

  private onReadStates(states: ReadState[]): void {
    for (const rs of states) {
      const ctx = new TextDecoder().decode(rs.requestCtx);
      const round = this.readRound;
      if (round === undefined || round.ctx !== ctx) continue;
      this.readRound = undefined;
      this.waitApplied(rs.index).then(() => {
        for (const w of round.readers) finish(w);
      });
      if (this.readQueue.length > 0) this.startReadRound();
    }
  }

  private waitApplied(index: number): Promise<void> {
    if (this.appliedIndex >= index) return Promise.resolve();
    return new Promise((resolve) => this.appliedWaiters.push({ index, resolve }));
  }

  private schedule(): void {
    if (this.scheduled || this.stopped) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.loop();
    });
  }

  private async loop(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (!this.stopped && this.node.hasReady()) {
        const rd = this.node.ready();
        const lastCommitted = rd.committed[rd.committed.length - 1];
        if (lastCommitted !== undefined)
          this.committedIndex = Math.max(this.committedIndex, lastCommitted.index);
        if (rd.snapshot) this.committedIndex = Math.max(this.committedIndex, rd.snapshot.metadata.index);
        if (rd.softState) this.onSoftState(rd.softState);
        if (rd.snapshot) {
          // The snapshot file keeps only the metadata: the data (the leader's backend file)
          // becomes our backend, which is where it is kept from then on.
          await this.opts.disk.saveSnap({ ...rd.snapshot, data: new Uint8Array(0) });
          this.opts.storage.applySnapshot(rd.snapshot);
          this.snapIndex = Math.max(this.snapIndex, rd.snapshot.metadata.index);
          const ci = await this.opts.installSnapshot(rd.snapshot);
          this.appliedIndex = Math.max(this.appliedIndex, rd.snapshot.metadata.index, ci);
        }
        if (rd.hardState) this.hardState = rd.hardState;
        if (rd.entries.length > 0 || rd.hardState) await this.opts.disk.save(this.hardState, rd.entries);
        if (rd.entries.length > 0) this.opts.storage.append(rd.entries);
        if (rd.hardState) {
          this.opts.storage.setHardState(rd.hardState);
          if (rd.hardState.term !== this.term) {
            this.term = rd.hardState.term;
          }
        }
        // A snapshot's outcome comes back through reportSnapshot once the transfer ends.
        this.opts.transport.send(rd.messages);
        for (let i = 0; i < rd.committed.length; i++) {
          if (i > 0 && i % applyEntriesPerTurnMax === 0) {
            await new Promise((r) => setImmediate(r));
            if (this.stopped) return;
          }
          this.applyEntry(rd.committed[i]!);
        }
        if (this.appliedIndex - this.snapIndex >= this.opts.snapshotCount && !this.compacting)
          void this.compact();
        if (rd.readStates.length > 0) this.onReadStates(rd.readStates);
        this.node.advance(rd);
      }
    } catch (err) {
      // A WAL write or fsync failed: nothing acknowledged after this can be trusted (etcd panics).
      this.fatal = err as Error;
      this.opts.log.error({ err }, "raft loop failed; the member stops serving writes");
      this.stopped = true;
    } finally {
      this.running = false;
    }
  }

  /**
   * Log compaction (etcd's snapshot every --snapshot-count entries): once the state
   * machine's storage holds everything up to `index`, a snapshot record at `index` goes to
   * disk (snap file and WAL marker, releasing older WAL segments) and the in-memory log
   * drops entries up to `index - catchUpEntries`. A follower that needs older entries gets
   * a fresh snapshot of the backend instead (ServingStorage in raft-member.ts).
   */
  private async compact(): Promise<void> {
    this.compacting = true;
    try {
      const index = this.appliedIndex;
      const confState = this.node.raft.trk.confState();
      await this.opts.flushStateMachine();
      if (this.stopped || index <= this.snapIndex) return;
      const snap = this.opts.storage.createSnapshot(index, confState, new Uint8Array(0));
      await this.opts.disk.saveSnap(snap);
      // etcd keeps --max-snapshots (5) snap files.
      this.opts.disk.snapshotter.purge(maxSnapFiles);
      const compactTo = index - this.opts.catchUpEntries;
      if (compactTo > this.opts.storage.firstIndex()) this.opts.storage.compact(compactTo);
      this.snapIndex = index;
    } catch (err) {
      this.opts.log.warn({ err }, "log compaction failed; will try again");
    } finally {
      this.compacting = false;
    }
  }

  private applyEntry(e: Entry): void {
    if (e.index <= this.appliedIndex) return;
    if (e.type === EntryType.ConfChange) {
      const cc = decodeConfChange(e.data);
      this.node.applyConfChange(cc);
      this.opts.onConfChange(cc, e.index);
    } else if (e.data.length > 0) {
      this.opts.apply(e);
    }
    this.appliedIndex = e.index;
    if (this.appliedWaiters.length > 0) {
      const ready = this.appliedWaiters.filter((w) => w.index <= this.appliedIndex);
      if (ready.length > 0) {
        for (const w of ready) w.resolve();
        this.appliedWaiters.splice(
          0,
          this.appliedWaiters.length,
          ...this.appliedWaiters.filter((w) => w.index > this.appliedIndex),
        );
      }
    }
  }

  private onSoftState(ss: SoftState): void {
    const changed = ss.lead !== this.lead;
    this.lead = ss.lead;
    this.term = this.node.raft.term;
    if (changed) {
      this.opts.onLeaderChange(ss.lead, ss.raftState === StateType.Leader, this.term);
      for (const f of [...this.leaderWaiters]) f();
    }
  }
}

type ReadWaiter = {
  resolve: () => void;
  reject: (err: Error) => void;
  deadlineMs: number;
  timer?: NodeJS.Timeout;
  done?: boolean;
};

function finish(w: ReadWaiter, err?: Error): void {
  if (w.done) return;
  w.done = true;
  if (w.timer) clearTimeout(w.timer);
  if (err) w.reject(err);
  else w.resolve();
}
