import { describe, expect, it } from "vitest";
import { ManualClock } from "../../src/etcd/clock.js";
import { EtcdError, EtcdErrorCode } from "../../src/etcd/errors.js";
import { type KeepAliveTransport, LeaseKeeper } from "../../src/etcd/lease.js";
import { silentLogger } from "../../src/etcd/logger.js";

/** A transport whose server answers only while `answering` is true, after `rttMs`. */
function fakeTransport(clock: ManualClock, ttlS: () => number) {
  const state = { answering: true, rttMs: 5, sends: 0, opens: 0, breakNext: false };
  const transport: KeepAliveTransport = {
    open(h) {
      state.opens += 1;
      return {
        send(id) {
          state.sends += 1;
          if (state.breakNext) {
            state.breakNext = false;
            clock.setTimer(() => h.onError(new EtcdError(EtcdErrorCode.UNAVAILABLE, "reset")), 1);
            return;
          }
          if (!state.answering) return;
          clock.setTimer(() => h.onResponse({ ID: id, TTL: BigInt(ttlS()) }), state.rttMs);
        },
        close() {},
      };
    },
  };
  return { transport, state };
}

describe("lease keeper", () => {
  it("sends a keep-alive every TTL/3 and stays alive while answers come", () => {
    const clock = new ManualClock();
    const { transport, state } = fakeTransport(clock, () => 3);
    const k = new LeaseKeeper(7n, 3, clock.now(), transport, clock, silentLogger);
    clock.advance(30_000);
    expect(k.state).toBe("alive");
    // 30 s / 1 s per keep-alive, plus the one sent at once.
    expect(state.sends).toBe(31);
    k.close();
  });

  it("declares the lease lost exactly at the deadline of the last answered keep-alive", () => {
    const clock = new ManualClock();
    const { transport, state } = fakeTransport(clock, () => 3);
    const k = new LeaseKeeper(7n, 3, clock.now(), transport, clock, silentLogger);
    let lostAt = -1;
    k.on("lost", (err) => {
      expect(err.code).toBe(EtcdErrorCode.LEASE_LOST);
      lostAt = clock.now();
    });
    clock.advance(10_000); // keep-alives at 0, 1000, ..., 10000; the last is sent at 10000
    state.answering = false; // from now on the server is silent (paused)
    clock.advance(20_000);
    expect(k.state).toBe("lost");
    // The last answered request was sent at t=10000 (its answer came at 10005), TTL 3 s.
    expect(lostAt).toBe(13_000);
  });

  it("a TTL of 0 in an answer (revoked lease) is a loss at once", () => {
    const clock = new ManualClock();
    let ttl = 5;
    const { transport } = fakeTransport(clock, () => ttl);
    const k = new LeaseKeeper(9n, 5, clock.now(), transport, clock, silentLogger);
    clock.advance(4_000);
    ttl = 0;
    let lostAt = -1;
    k.on("lost", () => (lostAt = clock.now()));
    clock.advance(2_000);
    expect(k.state).toBe("lost");
    expect(lostAt).toBeLessThanOrEqual(5_005 + 1);
  });

  it("re-opens a broken stream and keeps the lease", () => {
    const clock = new ManualClock();
    const { transport, state } = fakeTransport(clock, () => 3);
    const k = new LeaseKeeper(7n, 3, clock.now(), transport, clock, silentLogger);
    clock.advance(2_000);
    state.breakNext = true;
    clock.advance(10_000);
    expect(k.state).toBe("alive");
    expect(state.opens).toBe(2);
    k.close();
    expect(clock.pending()).toBe(0);
  });
});
