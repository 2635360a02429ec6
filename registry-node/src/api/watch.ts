// The Watch service (etcd's v3rpc/watch.go): one bidirectional stream carries many
// watches. Create, cancel and progress requests come in; created/canceled responses and
// events go out. The `created` response of a watch is written before any of its events:
// everything here runs on one thread, and a new watcher only receives events from a later
// apply or a later catch-up round. A stream whose client stops reading makes its watchers
// stop (the store catches them up from storage once the stream drains), so a slow client
// never holds a writer back.

import { etcdserverpb, mvccpb } from "@regmesh/proto";
import type { AuthInfo } from "../auth/store.js";
import type { Change, WatchDelivery, Watcher, WatchFilter } from "../mvcc/index.js";
import { keyString } from "../mvcc/kvstore.js";
import { errors } from "../server/errors.js";
import type { EtcdServer } from "../server/node.js";
import { type BidiStream, grpcOverheadBytes } from "./grpc.js";

type WatchResponse = etcdserverpb.WatchResponse;
const mvccpbEvent = mvccpb.Event;

export type WatchStreamOptions = {
  /**
   * --max-request-bytes. Responses of at least this plus grpcOverheadBytes are split when
   * the watch asked for fragments (etcd's watchServer.maxRequestBytes is the sum).
   */
  maxRequestBytes: number;
  /** Interval of progress notifications for watches that asked for them (etcd: 10 minutes). */
  progressIntervalMs: number;
  /** How long without a leader before a `hasleader` stream is ended (etcd: 2 election timeouts... checked every 0.5 s). */
  leaderlessLimitMs: number;
  /** Who the stream runs as (auth); checked at each watch creation. */
  authInfo?: () => AuthInfo | undefined;
};

const emptyResponse = (): WatchResponse => ({
  watchId: 0n,
  created: false,
  canceled: false,
  compactRevision: 0n,
  cancelReason: "",
  fragment: false,
  events: [],
});

type WatchEntry = {
  w: Watcher;
  prevKv: boolean;
  fragment: boolean;
  progress: boolean;
  /** Events went out since the last progress tick: the next notification is elided (etcd). */
  sentSinceTick: boolean;
};

/** Bytes a length-delimited field of `len` bytes takes with a one-byte tag. */
const fieldBytes = (len: number): number => {
  let varint = 1;
  for (let n = len; n >= 0x80; n = Math.floor(n / 0x80)) varint += 1;
  return 1 + varint + len;
};

/**
 * etcd's sendFragments (v3rpc/watch.go): a response of at least `maxRequestBytes` with two
 * or more events is split greedily into responses marked `fragment`, each filled while it
 * stays under the limit (a single event may exceed it alone); the last one is unmarked.
 * Sizes are summed per event (events are field 11, one-byte tag) instead of encoding the
 * growing response again for every event, which was quadratic in the events of a revision.
 */
export function splitFragments(r: WatchResponse, maxRequestBytes: number): WatchResponse[] {
  const encodedBytes = (x: WatchResponse) => etcdserverpb.WatchResponse.encode(x).finish().length;
  const eventBytes = r.events.map((ev) => fieldBytes(mvccpbEvent.encode(ev).finish().length));
  const wholeBytes = encodedBytes({ ...r, events: [] }) + eventBytes.reduce((a, b) => a + b, 0);
  if (wholeBytes < maxRequestBytes || r.events.length < 2) return [r];
  // Every fragment but the last is measured as etcd measures it: with `fragment` set.
  const baseBytes = encodedBytes({ ...r, events: [], fragment: true });
  const out: WatchResponse[] = [];
  let idx = 0;
  for (;;) {
    const cur: WatchResponse = { ...r, events: [], fragment: true };
    let bytes = baseBytes;
    while (idx < r.events.length) {
      if (cur.events.length > 0 && bytes + eventBytes[idx]! >= maxRequestBytes) break;
      cur.events.push(r.events[idx]!);
      bytes += eventBytes[idx]!;
      idx += 1;
    }
    if (idx === r.events.length) cur.fragment = false;
    out.push(cur);
    if (!cur.fragment) return out;
  }
}

export function serveWatch(
  server: EtcdServer,
  stream: BidiStream<etcdserverpb.WatchRequest, WatchResponse>,
  opts: WatchStreamOptions,
): void {
  const watchers = new Map<bigint, WatchEntry>();
  let nextId = 0n;
  let congested = false;
  let closed = false;

  const send = (r: WatchResponse): boolean => stream.write(r);

  const sendFragments = (r: WatchResponse): boolean => {
    const fragments = splitFragments(r, opts.maxRequestBytes + grpcOverheadBytes);
    let ok = true;
    for (const f of fragments) ok = send(f) && ok;
    return ok;
  };

  const toEvents = (changes: Change[], prevKv: boolean): mvccpb.Event[] =>
    changes.map((c) => {
      const ev: mvccpb.Event = { type: c.type, kv: c.kv };
      if (prevKv) {
        try {
          const r = server.kv.read().range(c.kv.key, undefined, { rev: Number(c.kv.modRevision) - 1 });
          if (r.kvs.length > 0) ev.prevKv = r.kvs[0];
        } catch {
          // The previous version was compacted away: the event goes without it, as in etcd.
        }
      }
      return ev;
    });

  const deliver = (id: bigint, d: WatchDelivery): boolean => {
    if (closed) return true;
    const entry = watchers.get(id);
    if (d.kind === "compacted") {
      watchers.delete(id);
      const ok = send({
        ...emptyResponse(),
        header: { ...server.header(), revision: BigInt(d.rev) },
        watchId: id,
        canceled: true,
        compactRevision: BigInt(d.compactRev),
      });
      return ok;
    }
    if (entry === undefined) return true;
    const resp: WatchResponse = {
      ...emptyResponse(),
      header: server.header(BigInt(d.rev)),
      watchId: id,
      events: toEvents(d.events, entry.prevKv),
    };
    if (resp.events.length > 0) entry.sentSinceTick = true;
    const ok = entry.fragment ? sendFragments(resp) : send(resp);
    if (!ok) congested = true;
    return ok;
  };

  stream.onDrain(() => {
    if (!congested || closed) return;
    congested = false;
    for (const { w } of watchers.values()) server.watchable.resume(w);
    server.syncWatchers();
  });

  const create = (c: etcdserverpb.WatchCreateRequest) => {
    const wsrev = server.rev;
    let key: Uint8Array = c.key.length === 0 ? Buffer.from([0]) : c.key;
    let end: string | undefined;
    if (c.rangeEnd.length === 0) end = undefined;
    else if (c.rangeEnd.length === 1 && c.rangeEnd[0] === 0) end = "";
    else end = keyString(c.rangeEnd);
    const fail = (reason: string) =>
      send({
        ...emptyResponse(),
        header: server.header(BigInt(wsrev)),
        watchId: -1n,
        created: true,
        canceled: true,
        cancelReason: reason,
      });
    let id: bigint;
    // etcd's AutoWatchID is 0: a watch_id of 0 asks the server to choose (clientv3 never
    // sends ids), and chosen ids count up from 0, skipping ids in use.
    if (c.watchId !== 0n) {
      if (watchers.has(c.watchId)) return fail("mvcc: duplicate watch ID provided on the WatchStream");
      id = c.watchId;
    } else {
      while (watchers.has(nextId)) nextId += 1n;
      id = nextId;
      nextId += 1n;
    }
    if (end !== undefined && end !== "" && keyString(key) >= end) return fail("mvcc: watcher range is empty");
    try {
      // etcd's isWatchPermitted: reading the range is needed to watch it.
      server.auth.checkRange(opts.authInfo?.(), Buffer.from(key), c.rangeEnd);
    } catch {
      return send({
        ...emptyResponse(),
        header: server.header(BigInt(wsrev)),
        watchId: c.watchId,
        created: true,
        canceled: true,
        cancelReason: "etcdserver: permission denied",
      });
    }
    const filters: WatchFilter[] = [];
    for (const f of c.filters) {
      if (f === etcdserverpb.WatchCreateRequest_FilterType.NOPUT) filters.push("noPut");
      if (f === etcdserverpb.WatchCreateRequest_FilterType.NODELETE) filters.push("noDelete");
    }
    const startRev = c.startRevision === 0n ? wsrev + 1 : Number(c.startRevision);
    key = Buffer.from(key);
    const watchId = id;
    const w = server.watchable.watch({
      key: keyString(key),
      end,
      startRev,
      filters,
      send: (d) => deliver(watchId, d),
    });
    watchers.set(watchId, {
      w,
      prevKv: c.prevKv,
      fragment: c.fragment,
      progress: c.progressNotify,
      sentSinceTick: false,
    });
    send({ ...emptyResponse(), header: server.header(BigInt(wsrev)), watchId, created: true });
    if (startRev <= server.rev) setImmediate(() => server.syncWatchers());
  };

  stream.onMessage((req) => {
    if (closed) return;
    if (req.createRequest) create(req.createRequest);
    else if (req.cancelRequest) {
      const id = req.cancelRequest.watchId;
      const entry = watchers.get(id);
      if (entry === undefined) return;
      server.watchable.cancel(entry.w);
      watchers.delete(id);
      send({ ...emptyResponse(), header: server.header(), watchId: id, canceled: true });
    } else if (req.progressRequest) {
      send({ ...emptyResponse(), header: server.header(), watchId: -1n });
    }
  });

  // etcd's monitorLeader: a stream whose client asked for `hasleader` ends with "no leader"
  // once this member has had no leader for a while, so the client moves to another member.
  const wantsLeader = stream.ctx.headers.hasleader === "true";
  let leaderlessSinceMs = 0;
  const leaderTimer = setInterval(
    () => {
      if (!wantsLeader || closed) return;
      if (server.leaderId !== 0n) {
        leaderlessSinceMs = 0;
        return;
      }
      const now = Date.now();
      if (leaderlessSinceMs === 0) leaderlessSinceMs = now;
      else if (now - leaderlessSinceMs >= opts.leaderlessLimitMs) stream.end(errors.noLeader());
    },
    Math.max(50, Math.floor(opts.leaderlessLimitMs / 4)),
  );
  leaderTimer.unref();

  // etcd's progress ticker: at each tick, a watch that asked for progress_notify and got no
  // events since the last tick is sent an empty response with the current revision, if it
  // is synced (a watch still catching up would be told a revision it has not seen yet).
  // The interval gets up to 10% random jitter per stream (etcd's GetProgressReportInterval),
  // so the streams of a restarted client do not all tick together.
  const progressTimer = setInterval(
    () => {
      if (closed) return;
      for (const [id, e] of watchers) {
        if (!e.progress) continue;
        const elide = e.sentSinceTick;
        e.sentSinceTick = false;
        if (!elide && server.watchable.isSynced(e.w)) {
          send({ ...emptyResponse(), header: server.header(), watchId: id });
        }
      }
    },
    opts.progressIntervalMs + Math.floor(Math.random() * (opts.progressIntervalMs / 10)),
  );
  progressTimer.unref();

  stream.onEnd(() => {
    closed = true;
    clearInterval(progressTimer);
    clearInterval(leaderTimer);
    for (const { w } of watchers.values()) server.watchable.cancel(w);
    watchers.clear();
  });
}
