// The simulated application: a key-value register that applies committed entries and
// serialises itself into the opaque snapshot payload Raft carries.

import type { ConfState, Entry } from "../../../src/raft/index.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export type KvValue = { value: string; index: number };

export function encodeWrite(key: string, value: string): Uint8Array {
  return encoder.encode(`w:${key}:${value}`);
}

export function decodeData(data: Uint8Array): string {
  return decoder.decode(data);
}

export class KvApp {
  kv = new Map<string, KvValue>();
  applied = 0;
  confState: ConfState = { voters: [], learners: [] };

  /** Applies one normal entry; returns the write's value (the client's request id) if any. */
  applyNormal(e: Entry): string | undefined {
    this.applied = e.index;
    if (e.data.length === 0) return undefined;
    const s = decodeData(e.data);
    if (!s.startsWith("w:")) return s;
    const sep = s.indexOf(":", 2);
    const key = s.slice(2, sep);
    const value = s.slice(sep + 1);
    this.kv.set(key, { value, index: e.index });
    return value;
  }

  serialize(): Uint8Array {
    return encoder.encode(JSON.stringify({ applied: this.applied, kv: [...this.kv], cs: this.confState }));
  }

  restore(data: Uint8Array, index: number, cs: ConfState): void {
    if (data.length === 0) {
      this.kv = new Map();
    } else {
      const o = JSON.parse(decoder.decode(data)) as { applied: number; kv: [string, KvValue][] };
      this.kv = new Map(o.kv);
    }
    this.applied = index;
    this.confState = { voters: [...cs.voters], learners: [...cs.learners] };
  }
}
