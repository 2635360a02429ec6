// The Watch stream's fragments and progress notifications, in process: serveWatch over a
// fake stream and a one-member server without a log (every proposal applies at once), with
// the progress ticker on fake timers.

import { etcdserverpb, type mvccpb } from "@regmesh/proto";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { BidiStream } from "../../src/api/grpc.js";
import { serveWatch, splitFragments } from "../../src/api/watch.js";
import { configFromFlags, parseDurationMs, parseFlags } from "../../src/config/index.js";
import { MemStorage } from "../../src/mvcc/index.js";
import { EtcdServer } from "../../src/server/node.js";

type WatchResponse = etcdserverpb.WatchResponse;
const encodedBytes = (r: WatchResponse) => etcdserverpb.WatchResponse.encode(r).finish().length;

/** etcd's sendFragments as written in v3rpc/watch.go: re-measures the whole response per event. */
function naiveFragments(wr: WatchResponse, maxRequestBytes: number): WatchResponse[] {
  if (encodedBytes(wr) < maxRequestBytes || wr.events.length < 2) return [wr];
  const out: WatchResponse[] = [];
  let idx = 0;
  for (;;) {
    const cur: WatchResponse = { ...wr, events: [], fragment: true };
    for (const ev of wr.events.slice(idx)) {
      cur.events.push(ev);
      if (cur.events.length > 1 && encodedBytes(cur) >= maxRequestBytes) {
        cur.events.pop();
        break;
      }
      idx++;
    }
    if (idx === wr.events.length) cur.fragment = false;
    out.push(cur);
    if (!cur.fragment) return out;
  }
}

function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return (n: number) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

function randomResponse(next: (n: number) => number): WatchResponse {
  const rev = BigInt(1 + next(1_000_000));
  const events: mvccpb.Event[] = Array.from({ length: next(60) }, (_, i) => ({
    type: next(2),
    kv: {
      key: Buffer.from(`key/${i}/${"k".repeat(next(40))}`),
      createRevision: rev,
      modRevision: rev,
      version: BigInt(1 + next(5)),
      value: Buffer.alloc(next(4) === 0 ? next(3000) : next(200), 0x61),
      lease: 0n,
    },
  }));
  return {
    header: { clusterId: 0xabcdef0123456789n, memberId: 0x1234n, revision: rev, raftTerm: 2n },
    watchId: BigInt(next(5)),
    created: false,
    canceled: false,
    compactRevision: 0n,
    cancelReason: "",
    fragment: false,
    events,
  };
}

describe("watch fragments (etcd's sendFragments)", () => {
  it("splits exactly as etcd's algorithm does, over random responses and limits", () => {
    const next = rng(20_240_601);
    for (let i = 0; i < 400; i++) {
      const r = randomResponse(next);
      const max = 64 + next(8000);
      const fast = splitFragments(r, max);
      const naive = naiveFragments(r, max);
      expect(fast.map((f) => [f.fragment, f.events.length])).toEqual(
        naive.map((f) => [f.fragment, f.events.length]),
      );
      // Reassembled, the fragments are the whole revision, in order.
      expect(fast.flatMap((f) => f.events)).toEqual(r.events);
      for (const [j, f] of fast.entries()) {
        expect(f.fragment).toBe(j < fast.length - 1);
        if (fast.length > 1) {
          // Each under the limit unless it is one event alone; and as full as it can be.
          expect(encodedBytes({ ...f, fragment: true }) < max || f.events.length === 1).toBe(true);
          const nextEvent = fast[j + 1]?.events[0];
          if (nextEvent !== undefined)
            expect(
              encodedBytes({ ...f, fragment: true, events: [...f.events, nextEvent] }),
            ).toBeGreaterThanOrEqual(max);
        }
      }
    }
  });

  it("leaves a small response, or a single large event, whole", () => {
    const r = randomResponse(rng(7));
    expect(splitFragments(r, 1 << 30)).toEqual([r]);
    const one = { ...r, events: r.events.slice(0, 1) };
    expect(splitFragments(one, 1)).toEqual([one]);
  });
});

describe("--experimental-watch-progress-notify-interval", () => {
  it("takes Go durations, defaults to 10m, is raised to 100 ms, and <= 0 keeps the default", () => {
    expect(parseDurationMs("10m")).toBe(600_000);
    expect(parseDurationMs("1h1m1.5s")).toBe(3_661_500);
    expect(parseDurationMs("250ms")).toBe(250);
    expect(parseDurationMs("0")).toBe(0);
    expect(parseDurationMs("10")).toBeUndefined();
    expect(parseDurationMs("1x")).toBeUndefined();
    const interval = (args: string[]) => configFromFlags(parseFlags(args)).watchProgressNotifyIntervalMs;
    expect(interval([])).toBe(600_000);
    expect(interval(["--experimental-watch-progress-notify-interval=2s"])).toBe(2000);
    expect(interval(["--experimental-watch-progress-notify-interval=5ms"])).toBe(100);
    expect(interval(["--experimental-watch-progress-notify-interval=0"])).toBe(600_000);
    expect(() => parseFlags(["--experimental-watch-progress-notify-interval=soon"])).toThrow(
      'invalid value "soon" for flag -experimental-watch-progress-notify-interval: parse error',
    );
  });
});

/** A Watch call's stream as serveWatch sees it, recording what it writes. */
function fakeStream() {
  const onMessage: ((r: etcdserverpb.WatchRequest) => void)[] = [];
  const onEnd: (() => void)[] = [];
  const written: WatchResponse[] = [];
  const stream: BidiStream<etcdserverpb.WatchRequest, WatchResponse> = {
    ctx: { headers: {}, deadlineMs: undefined, signal: new AbortController().signal, peer: "test" },
    onMessage: (f) => onMessage.push(f),
    onEnd: (f) => onEnd.push(f),
    onHalfClose: () => {},
    onDrain: () => {},
    write: (r) => {
      written.push(r);
      return true;
    },
    end: () => {},
  };
  return {
    stream,
    written,
    request: (r: Partial<etcdserverpb.WatchRequest>) => {
      for (const f of onMessage) f(r as etcdserverpb.WatchRequest);
    },
    end: () => {
      for (const f of onEnd) f();
    },
  };
}

const quiet = { info() {}, warn() {}, error() {} };
const intervalMs = 1000;

describe("watch progress notifications", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  function setup() {
    vi.useFakeTimers();
    const server = new EtcdServer(configFromFlags(parseFlags([])), new MemStorage(), quiet);
    server.restore();
    const s = fakeStream();
    serveWatch(server, s.stream, {
      maxRequestBytes: 1 << 20,
      progressIntervalMs: intervalMs,
      leaderlessLimitMs: 2000,
    });
    const put = (k: string) =>
      server.propose({
        kind: "put",
        req: etcdserverpb.PutRequest.create({ key: Buffer.from(k), value: Buffer.from("v") }),
      });
    return { server, s, put };
  }

  it("sends an empty response with the watch's id and the current revision, each interval (+ <=10% jitter)", async () => {
    const { s, put } = setup();
    await put("other");
    s.request({
      createRequest: etcdserverpb.WatchCreateRequest.create({ key: Buffer.from("p"), progressNotify: true }),
    });
    s.request({ createRequest: etcdserverpb.WatchCreateRequest.create({ key: Buffer.from("q") }) });
    expect(s.written.map((r) => [r.watchId, r.created])).toEqual([
      [0n, true],
      [1n, true],
    ]);
    s.written.length = 0;
    vi.advanceTimersByTime(intervalMs * 1.1 + 1);
    expect(s.written).toEqual([
      expect.objectContaining({ watchId: 0n, events: [], created: false, canceled: false }),
    ]);
    expect(s.written[0]!.header!.revision).toBe(2n);
    await put("other");
    vi.advanceTimersByTime(intervalMs * 1.1);
    expect(s.written.map((r) => [r.watchId, r.header!.revision])).toEqual([
      [0n, 2n],
      [0n, 3n],
    ]);
    s.end();
  });

  it("elides the next notification when events went out since the last tick (etcd)", async () => {
    const { s, put } = setup();
    s.request({
      createRequest: etcdserverpb.WatchCreateRequest.create({ key: Buffer.from("p"), progressNotify: true }),
    });
    s.written.length = 0;
    await put("p");
    expect(s.written.map((r) => r.events.length)).toEqual([1]);
    vi.advanceTimersByTime(intervalMs * 1.1 + 1); // a tick after an event: elided
    expect(s.written.length).toBe(1);
    vi.advanceTimersByTime(intervalMs * 1.1); // a quiet interval: notified
    expect(s.written.length).toBe(2);
    expect(s.written[1]).toMatchObject({ watchId: 0n, events: [] });
    expect(s.written[1]!.header!.revision).toBe(2n);
    s.end();
  });

  it("answers a WatchProgressRequest at once with watch id -1 and the current revision", async () => {
    const { s, put } = setup();
    await put("a");
    await put("b");
    s.request({ createRequest: etcdserverpb.WatchCreateRequest.create({ key: Buffer.from("p") }) });
    s.written.length = 0;
    s.request({ progressRequest: {} });
    expect(s.written).toEqual([expect.objectContaining({ watchId: -1n, events: [] })]);
    expect(s.written[0]!.header!.revision).toBe(3n);
    s.end();
  });
});
