// A model-checked run of the WAL on the fault file system. The model is the list of frames
// the WAL was asked to write (entries and hard states, in order) and how many of them are
// known durable (every frame before the end of the last save whose fsync completed). After
// a crash, what readAll returns must be the model after some prefix of the frames that is
// at least as long as the durable part: nothing acknowledged is lost, nothing appears that
// was not written, and a torn batch leaves a clean prefix.

import {
  FaultFileSystem,
  type FileSystem,
  MemFileSystem,
  Rng,
  SimulatedCrashError,
} from "../../src/io/index.js";
import type { Entry, HardState } from "../../src/raft/types.js";
import type { SnapshotMarker } from "../../src/wal/record.js";
import { Wal } from "../../src/wal/wal.js";
import { ent } from "./helpers.js";

export type Op =
  | { t: "append"; n: number }
  | { t: "term"; back: number; n: number; vote: number }
  | { t: "commit"; by: number }
  | { t: "pair"; n1: number; n2: number }
  | { t: "snapshot" }
  | { t: "reopen" }
  | { t: "crash"; afterOps: number; tear: boolean };

type Event = { kind: "entry"; e: Entry } | { kind: "state"; hs: HardState };

export type RunStats = { crashes: number; repairs: number; reopens: number; saves: number };

export function randomOps(rng: Rng, count: number): Op[] {
  const ops: Op[] = [];
  for (let i = 0; i < count; i++) {
    const d = rng.int(100);
    if (d < 40) ops.push({ t: "append", n: 1 + rng.int(8) });
    else if (d < 50) ops.push({ t: "term", back: rng.int(6), n: 1 + rng.int(4), vote: 1 + rng.int(3) });
    else if (d < 65) ops.push({ t: "commit", by: rng.int(10) });
    else if (d < 75) ops.push({ t: "pair", n1: 1 + rng.int(4), n2: 1 + rng.int(4) });
    else if (d < 80) ops.push({ t: "snapshot" });
    else if (d < 84) ops.push({ t: "reopen" });
    else ops.push({ t: "crash", afterOps: rng.int(40), tear: rng.chance(0.5) });
  }
  return ops;
}

function sameEntry(a: Entry, b: Entry): boolean {
  if (a.index !== b.index || a.term !== b.term || a.type !== b.type || a.data.length !== b.data.length)
    return false;
  for (let i = 0; i < a.data.length; i++) if (a.data[i] !== b.data[i]) return false;
  return true;
}

export class WalHarness {
  readonly fs: FaultFileSystem;
  readonly dir: string;
  private readonly rng: Rng;
  private wal!: Wal;
  private readonly opts: { segmentSizeBytes: number; verify: boolean };
  /** The model's log from index 1, as written. */
  private log: Entry[] = [];
  private hs: HardState = { term: 0, vote: 0, commit: 0 };
  /** Frames since the last recovery, and the state before them. */
  private events: Event[] = [];
  private base: { log: Entry[]; hs: HardState } = { log: [], hs: this.hs };
  private durable = 0;
  private marker: SnapshotMarker = { index: 0, term: 0 };
  readonly stats: RunStats = { crashes: 0, repairs: 0, reopens: 0, saves: 0 };

  /** `disk`: the backing file system and a directory in it (default: in memory). */
  constructor(
    readonly seed: number,
    disk?: { fs: FileSystem; root: string },
  ) {
    this.rng = new Rng(seed ^ 0x5eed);
    let backing = disk?.fs;
    if (!backing) {
      backing = new MemFileSystem();
      backing.mkdir("/node");
    }
    this.dir = `${disk?.root ?? "/node"}/wal`;
    this.fs = new FaultFileSystem(backing, { seed });
    this.opts = { segmentSizeBytes: 512 + 512 * this.rng.int(8), verify: true };
  }

  async run(ops: Op[]): Promise<void> {
    this.wal = Wal.create(this.fs, this.dir, new Uint8Array([1, 2, 3]), this.opts);
    await this.step(async () => this.save({ term: 1, vote: 1, commit: 0 }, []));
    for (const op of ops) await this.step(() => this.apply(op));
    // Power loss at the end, whatever was armed.
    this.fs.crash(this.rng.chance(0.5) ? "tear" : "drop");
    this.recover();
  }

  private async step(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      if (!(err instanceof SimulatedCrashError)) throw err;
      this.recover();
    }
  }

  private save(hs: HardState, entries: Entry[]): Promise<void> {
    const mustSync = entries.length > 0 || hs.term !== this.hs.term || hs.vote !== this.hs.vote;
    for (const e of entries) {
      this.events.push({ kind: "entry", e });
      this.log.length = e.index - 1;
      this.log.push(e);
    }
    this.events.push({ kind: "state", hs: { ...hs } });
    this.hs = { ...hs };
    const upTo = this.events.length;
    this.stats.saves++;
    return this.wal.save(hs, entries).then(() => {
      if (mustSync) this.durable = Math.max(this.durable, upTo);
    });
  }

  /**
   * The hard state to save with appended entries. After a crash the log may end with
   * entries of a term newer than the saved hard state (etcd's Save writes entries before the
   * state, and a torn write can keep the first and lose the second); Raft then learns that
   * term from the leader before appending, and so does the model.
   */
  private appendState(): HardState {
    const lastTerm = this.log.at(-1)?.term ?? 0;
    if (lastTerm <= this.hs.term) return { ...this.hs };
    return { term: lastTerm, vote: 0, commit: this.hs.commit };
  }

  private appendBatch(n: number, term: number): Entry[] {
    const out: Entry[] = [];
    for (let i = 1; i <= n; i++) out.push(ent(this.log.length + i, term, this.rng.int(700)));
    return out;
  }

  private async apply(op: Op): Promise<void> {
    switch (op.t) {
      case "append": {
        const hs = this.appendState();
        await this.save(hs, this.appendBatch(op.n, hs.term));
        return;
      }
      case "term": {
        // A new leader overwrites (part of) the uncommitted suffix.
        const term = Math.max(this.hs.term, this.log.at(-1)?.term ?? 0) + 1;
        const start = Math.max(this.hs.commit + 1, this.log.length + 1 - op.back);
        const entries: Entry[] = [];
        for (let i = 0; i < op.n; i++) entries.push(ent(start + i, term, this.rng.int(700)));
        await this.save({ term, vote: op.vote, commit: this.hs.commit }, entries);
        return;
      }
      case "commit": {
        const commit = Math.min(this.log.length, this.hs.commit + op.by);
        await this.save({ ...this.hs, commit }, []);
        return;
      }
      case "pair": {
        // Two saves issued before either is awaited: they share fsyncs (group commit).
        const hs = this.appendState();
        const a = this.save(hs, this.appendBatch(op.n1, hs.term));
        const b = this.save(hs, this.appendBatch(op.n2, hs.term));
        const results = await Promise.allSettled([a, b]);
        for (const r of results) if (r.status === "rejected") throw r.reason;
        return;
      }
      case "snapshot": {
        const index = this.hs.commit;
        if (index <= this.marker.index) return;
        const m = { index, term: this.log[index - 1]!.term };
        await this.wal.saveSnapshot(m);
        this.durable = this.events.length;
        this.marker = m;
        this.wal.releaseBefore(m.index);
        return;
      }
      case "reopen": {
        await this.wal.close();
        this.durable = this.events.length;
        this.open();
        this.stats.reopens++;
        return;
      }
      case "crash":
        this.fs.crashAfter(op.afterOps, op.tear ? "tear" : "drop");
        return;
    }
  }

  private recover(): void {
    this.stats.crashes++;
    this.fs.restart(this.rng.u32());
    this.open();
  }

  /** Opens at the latest durable snapshot and checks the result against the model. */
  private open(): void {
    this.wal = Wal.open(this.fs, this.dir, this.marker, this.opts);
    const r = this.wal.readAll();
    if (r.repair) this.stats.repairs++;
    const matched = this.matchPrefix(r.entries, r.hardState);
    if (matched === undefined) {
      const want = this.modelAt(this.events.length);
      throw new Error(
        `recovered state is not a prefix of the written frames that keeps the ${this.durable} durable ones: ` +
          `got ${r.entries.length} entries after ${this.marker.index} (last ${r.entries.at(-1)?.index}/${r.entries.at(-1)?.term}), ` +
          `hard state ${JSON.stringify(r.hardState)}; model wrote up to ${want.log.length}, ${JSON.stringify(want.hs)}`,
      );
    }
    this.log = matched.log;
    this.hs = matched.hs;
    this.base = { log: this.log.slice(), hs: { ...this.hs } };
    this.events = [];
    this.durable = 0;
  }

  private modelAt(p: number): { log: Entry[]; hs: HardState } {
    const log = this.base.log.slice();
    let hs = this.base.hs;
    for (let i = 0; i < p; i++) {
      const ev = this.events[i]!;
      if (ev.kind === "entry") {
        log.length = ev.e.index - 1;
        log.push(ev.e);
      } else hs = ev.hs;
    }
    return { log, hs };
  }

  private matchPrefix(entries: Entry[], hs: HardState): { log: Entry[]; hs: HardState } | undefined {
    const log = this.base.log.slice();
    let state = this.base.hs;
    const from = this.marker.index;
    const matches = () => {
      if (state.term !== hs.term || state.vote !== hs.vote || state.commit !== hs.commit) return false;
      if (Math.max(log.length, from) - from !== entries.length) return false;
      for (let i = 0; i < entries.length; i++) if (!sameEntry(log[from + i]!, entries[i]!)) return false;
      return true;
    };
    for (let p = 0; p <= this.events.length; p++) {
      if (p >= this.durable && matches()) return { log, hs: { ...state } };
      const ev = this.events[p];
      if (!ev) break;
      if (ev.kind === "entry") {
        log.length = ev.e.index - 1;
        log.push(ev.e);
      } else state = ev.hs;
    }
    return undefined;
  }
}

export function replayHint(file: string, seed: number): string {
  return `replay with: REGMESH_SEED=${seed} npx vitest run --project unit registry-node/test/wal/${file}`;
}
