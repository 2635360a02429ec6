import { createServer } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { type Message, MessageType, message } from "../../src/raft/types.js";
import { decodeMessage, encodeMessage } from "../../src/server/raft-codec.js";
import { Transport } from "../../src/server/transport.js";

describe("raft message codec", () => {
  it("round-trips every field, entries and a snapshot", () => {
    const m = message({
      type: MessageType.MsgApp,
      to: 2 ** 52 + 3,
      from: 7,
      term: 9,
      logTerm: 8,
      index: 100,
      commit: 99,
      reject: true,
      rejectHint: 42,
      context: new Uint8Array([1, 2, 3]),
      entries: [
        { term: 9, index: 101, type: 0, data: new Uint8Array([4]) },
        { term: 9, index: 102, type: 1, data: new Uint8Array(0) },
      ],
      snapshot: {
        data: new Uint8Array([9, 9]),
        metadata: { index: 50, term: 3, confState: { voters: [1, 2], learners: [4] } },
      },
    });
    const back = decodeMessage(encodeMessage(m));
    expect({
      ...back,
      context: [...back.context],
      entries: back.entries.map((e) => ({ ...e, data: [...e.data] })),
    }).toEqual({
      ...m,
      context: [1, 2, 3],
      entries: [
        { term: 9, index: 101, type: 0, data: [4] },
        { term: 9, index: 102, type: 1, data: [] },
      ],
      snapshot: { ...m.snapshot, data: back.snapshot!.data },
    });
    expect([...back.snapshot!.data]).toEqual([9, 9]);
  });

  it("rejects a truncated message", () => {
    const b = encodeMessage(message({ type: MessageType.MsgHeartbeat, to: 1, from: 2 }));
    expect(() => decodeMessage(b.subarray(0, b.length - 1))).toThrow("truncated");
  });
});

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const transports: Transport[] = [];
afterEach(async () => {
  await Promise.all(transports.splice(0).map((t) => t.close()));
});

function make(id: number, clusterId: bigint, got: Message[], unreachable: number[] = []) {
  const t = new Transport({
    localId: id,
    clusterId,
    onMessage: (m) => got.push(m),
    onUnreachable: (p) => unreachable.push(p),
  });
  transports.push(t);
  return t;
}

const until = async (f: () => boolean) => {
  for (let i = 0; i < 200 && !f(); i++) await new Promise((r) => setTimeout(r, 10));
};

describe("peer transport over HTTP/2 on loopback", () => {
  it("delivers messages in order, in batches, both ways", async () => {
    const got1: Message[] = [];
    const got2: Message[] = [];
    const [p1, p2] = [await freePort(), await freePort()];
    const t1 = make(1, 7n, got1);
    const t2 = make(2, 7n, got2);
    await t1.listen("127.0.0.1", p1);
    await t2.listen("127.0.0.1", p2);
    t1.addPeer(2, [`http://127.0.0.1:${p2}`]);
    t2.addPeer(1, [`http://127.0.0.1:${p1}`]);
    const msgs = Array.from({ length: 500 }, (_, i) =>
      message({ type: MessageType.MsgApp, to: 2, from: 1, index: i }),
    );
    t1.send(msgs);
    t2.send([message({ type: MessageType.MsgAppResp, to: 1, from: 2, index: 499 })]);
    await until(() => got2.length === 500 && got1.length === 1);
    expect(got2.map((m) => m.index)).toEqual(msgs.map((m) => m.index));
    expect(got1[0]!.index).toBe(499);
  });

  it("refuses a member of another cluster and reports the peer unreachable", async () => {
    const got2: Message[] = [];
    const unreachable: number[] = [];
    const [p2] = [await freePort()];
    const t1 = make(1, 7n, [], unreachable);
    const t2 = make(2, 8n, got2);
    await t2.listen("127.0.0.1", p2);
    t1.addPeer(2, [`http://127.0.0.1:${p2}`]);
    t1.send([message({ type: MessageType.MsgHeartbeat, to: 2, from: 1 })]);
    await until(() => unreachable.length > 0);
    expect(unreachable[0]).toBe(2);
    expect(got2).toEqual([]);
  });

  it("a peer that comes up later is reached after reconnecting", async () => {
    const got2: Message[] = [];
    const p2 = await freePort();
    const t1 = make(1, 7n, []);
    t1.addPeer(2, [`http://127.0.0.1:${p2}`]);
    t1.send([message({ type: MessageType.MsgHeartbeat, to: 2, from: 1, commit: 1 })]);
    await new Promise((r) => setTimeout(r, 100));
    const t2 = make(2, 7n, got2);
    await t2.listen("127.0.0.1", p2);
    for (let i = 0; i < 100 && got2.length === 0; i++) {
      t1.send([message({ type: MessageType.MsgHeartbeat, to: 2, from: 1, commit: 2 })]);
      await new Promise((r) => setTimeout(r, 30));
    }
    expect(got2.length).toBeGreaterThan(0);
    expect(got2[0]!.commit).toBe(2);
  });
});
