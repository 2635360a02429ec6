// Pending ReadIndex requests on a leader (etcd read_only.go, ReadOnlySafe), after
// Raft thesis §6.4: record the commit index when the request arrives, confirm
// leadership with a round of heartbeats carrying the request's context, and answer
// once a quorum acknowledged that round. Requests are answered in arrival order.

import { assert } from "./assert.js";
import { maxPendingReadIndexRequests } from "./constants.js";
import type { Message } from "./types.js";

export type ReadIndexStatus = { req: Message; index: number; acks: Set<number> };

/** Contexts are bytes; a latin1 string of them is a cheap, exact map key. */
export function contextKey(ctx: Uint8Array): string {
  let s = "";
  for (let i = 0; i < ctx.length; i++) s += String.fromCharCode(ctx[i]!);
  return s;
}

export class ReadOnly {
  private readonly pending = new Map<string, ReadIndexStatus>();
  private queue: string[] = [];

  size(): number {
    return this.queue.length;
  }

  /** Returns false when the queue is full (the request is dropped; the client retries). */
  addRequest(index: number, m: Message): boolean {
    const key = contextKey(m.entries[0]!.data);
    if (this.pending.has(key)) return true;
    if (this.queue.length >= maxPendingReadIndexRequests) return false;
    this.pending.set(key, { req: m, index, acks: new Set() });
    this.queue.push(key);
    return true;
  }

  /** Records a heartbeat acknowledgement; returns the acks so far, or undefined if unknown. */
  recvAck(id: number, ctx: Uint8Array): Set<number> | undefined {
    const rs = this.pending.get(contextKey(ctx));
    if (!rs) return undefined;
    rs.acks.add(id);
    return rs.acks;
  }

  /** Removes and returns every request up to and including the one with context `ctx`. */
  advance(ctx: Uint8Array): ReadIndexStatus[] {
    const key = contextKey(ctx);
    const at = this.queue.indexOf(key);
    if (at < 0) return [];
    const done: ReadIndexStatus[] = [];
    for (const k of this.queue.slice(0, at + 1)) {
      const rs = this.pending.get(k);
      assert(rs !== undefined, "queued read index request is pending");
      done.push(rs);
      this.pending.delete(k);
    }
    this.queue = this.queue.slice(at + 1);
    return done;
  }

  /** The context of the newest pending request (piggybacked on heartbeats). */
  lastPendingContext(): Uint8Array | undefined {
    const k = this.queue[this.queue.length - 1];
    return k === undefined ? undefined : this.pending.get(k)!.req.entries[0]!.data;
  }
}
