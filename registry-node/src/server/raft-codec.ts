// The peer wire form of Raft messages (our own; peers are always registry-node members).
// Little-endian, fixed header then variable parts:
//
//   message  = type u8 | flags u8 (bit0 reject, bit1 has snapshot) | to u64 | from u64 |
//              term u64 | logTerm u64 | index u64 | commit u64 | rejectHint u64 |
//              context bytes | entryCount u32 | entry* | snapshot?
//   entry    = term u64 | index u64 | type u8 | data bytes
//   snapshot = index u64 | term u64 | voters u64list | learners u64list | data bytes
//   bytes    = length u32 | raw;  u64list = count u32 | u64*
//
// Numbers are JavaScript numbers below 2^53 (asserted), written as two u32 halves.

import type { Entry, Message, Snapshot } from "../raft/types.js";

const two32 = 0x1_0000_0000;

class Writer {
  private buf: Buffer;
  private pos = 0;

  constructor(size = 256) {
    this.buf = Buffer.allocUnsafe(size);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  u8(v: number): void {
    this.ensure(1);
    this.buf[this.pos++] = v;
  }

  u32(v: number): void {
    this.ensure(4);
    this.buf.writeUInt32LE(v, this.pos);
    this.pos += 4;
  }

  u64(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) throw new Error(`raft codec: ${v} is not a u53`);
    this.ensure(8);
    this.buf.writeUInt32LE(v % two32, this.pos);
    this.buf.writeUInt32LE(Math.floor(v / two32), this.pos + 4);
    this.pos += 8;
  }

  bytes(b: Uint8Array): void {
    this.u32(b.length);
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  finish(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

class Reader {
  private pos = 0;

  constructor(private readonly buf: Buffer) {}

  private need(n: number): void {
    if (this.pos + n > this.buf.length) throw new Error(`raft codec: message truncated at byte ${this.pos}`);
  }

  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }

  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  u64(): number {
    this.need(8);
    const lo = this.buf.readUInt32LE(this.pos);
    const hi = this.buf.readUInt32LE(this.pos + 4);
    this.pos += 8;
    return hi * two32 + lo;
  }

  bytes(): Uint8Array {
    const n = this.u32();
    this.need(n);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  done(): boolean {
    return this.pos === this.buf.length;
  }
}

function writeEntry(w: Writer, e: Entry): void {
  w.u64(e.term);
  w.u64(e.index);
  w.u8(e.type);
  w.bytes(e.data);
}

function readEntry(r: Reader): Entry {
  return { term: r.u64(), index: r.u64(), type: r.u8(), data: r.bytes() };
}

function writeSnapshot(w: Writer, s: Snapshot): void {
  w.u64(s.metadata.index);
  w.u64(s.metadata.term);
  for (const list of [s.metadata.confState.voters, s.metadata.confState.learners]) {
    w.u32(list.length);
    for (const id of list) w.u64(id);
  }
  w.bytes(s.data);
}

function readSnapshot(r: Reader): Snapshot {
  const index = r.u64();
  const term = r.u64();
  const lists: number[][] = [[], []];
  for (const list of lists) {
    const n = r.u32();
    for (let i = 0; i < n; i++) list.push(r.u64());
  }
  return {
    metadata: { index, term, confState: { voters: lists[0]!, learners: lists[1]! } },
    data: r.bytes(),
  };
}

export function encodeMessage(m: Message): Buffer {
  const w = new Writer(64 + m.entries.reduce((n, e) => n + 32 + e.data.length, 0));
  w.u8(m.type);
  w.u8((m.reject ? 1 : 0) | (m.snapshot ? 2 : 0));
  for (const v of [m.to, m.from, m.term, m.logTerm, m.index, m.commit, m.rejectHint]) w.u64(v);
  w.bytes(m.context);
  w.u32(m.entries.length);
  for (const e of m.entries) writeEntry(w, e);
  if (m.snapshot) writeSnapshot(w, m.snapshot);
  return w.finish();
}

export function decodeMessage(buf: Buffer): Message {
  const r = new Reader(buf);
  const type = r.u8();
  const flags = r.u8();
  const [to, from, term, logTerm, index, commit, rejectHint] = [
    r.u64(),
    r.u64(),
    r.u64(),
    r.u64(),
    r.u64(),
    r.u64(),
    r.u64(),
  ];
  const context = r.bytes();
  const n = r.u32();
  const entries: Entry[] = [];
  for (let i = 0; i < n; i++) entries.push(readEntry(r));
  const m: Message = {
    type,
    to: to!,
    from: from!,
    term: term!,
    logTerm: logTerm!,
    index: index!,
    commit: commit!,
    rejectHint: rejectHint!,
    reject: (flags & 1) !== 0,
    context,
    entries,
  };
  if (flags & 2) m.snapshot = readSnapshot(r);
  if (!r.done()) throw new Error("raft codec: trailing bytes after message");
  return m;
}
