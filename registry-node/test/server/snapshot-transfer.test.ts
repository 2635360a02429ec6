// Snapshot transfer between two peer transports on loopback: the data streams from a file
// in chunks on a request of its own (POST /raft/snapshot); the receiver writes it to a
// temporary file, checks length and SHA-256, fsyncs and renames it, then hands Raft the
// message with the file's path; the sender learns the outcome from the answer.

import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type Message, MessageType, message } from "../../src/raft/types.js";
import { encodeMessage } from "../../src/server/raft-codec.js";
import { type SnapshotFile, Transport, type TransportOptions } from "../../src/server/transport.js";

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

let dir = "";
const transports: Transport[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "regmesh-snapshot-transfer-"));
});
afterEach(async () => {
  await Promise.all(transports.splice(0).map((t) => t.close()));
  rmSync(dir, { recursive: true, force: true });
});

const until = async (f: () => boolean, timeoutMs = 20_000) => {
  const deadline = Date.now() + timeoutMs;
  while (!f()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 10));
  }
};

function make(opts: Partial<TransportOptions> & { localId: number }): Transport {
  const t = new Transport({ clusterId: 7n, onMessage: () => {}, ...opts });
  transports.push(t);
  return t;
}

const snapMessage = (data = new Uint8Array(0)): Message =>
  message({
    type: MessageType.MsgSnap,
    to: 2,
    from: 1,
    term: 3,
    snapshot: { data, metadata: { index: 1234, term: 3, confState: { voters: [1, 2, 3], learners: [] } } },
  });

/** A receiving member (id 2) with its snap directory, and what it was handed. */
async function receiver(clusterId = 7n) {
  const recvDir = join(dir, "recv");
  mkdirSync(recvDir);
  const got: { m: Message; path: string; bytes: Buffer }[] = [];
  const port = await freePort();
  const t = make({
    localId: 2,
    clusterId,
    snapshotDir: recvDir,
    onSnapshot: (m, path) => got.push({ m, path, bytes: readFileSync(path) }),
  });
  await t.listen("127.0.0.1", port);
  return { got, port, recvDir };
}

function sender(port: number, file?: SnapshotFile) {
  const reports: boolean[] = [];
  const t = make({
    localId: 1,
    snapshotData: () => file,
    onSnapshotSent: (peer, ok) => {
      expect(peer).toBe(2);
      reports.push(ok);
    },
  });
  t.addPeer(2, [`http://127.0.0.1:${port}`]);
  return { t, reports };
}

describe("snapshot transfer", () => {
  it("streams the data from a file; the receiver verifies, fsyncs and renames it before Raft sees it", async () => {
    const data = randomBytes(5 * 1024 * 1024 + 17);
    const src = join(dir, "outgoing.tmp");
    writeFileSync(src, data);
    let released = 0;
    const r = await receiver();
    const s = sender(r.port, { path: src, bytes: data.length, release: () => released++ });
    s.t.send([snapMessage()]);
    await until(() => s.reports.length === 1);
    expect(s.reports).toEqual([true]);
    expect(released).toBe(1);
    expect(r.got.length).toBe(1);
    const { m, path, bytes } = r.got[0]!;
    expect(m.type).toBe(MessageType.MsgSnap);
    expect(m.snapshot!.metadata).toEqual({
      index: 1234,
      term: 3,
      confState: { voters: [1, 2, 3], learners: [] },
    });
    expect(m.snapshot!.data.length).toBe(0);
    expect(path).toBe(join(r.recvDir, "00000000000004d2.snap.db"));
    expect(bytes.equals(data)).toBe(true);
    // Nothing half-written is left behind.
    expect(readdirSync(r.recvDir)).toEqual(["00000000000004d2.snap.db"]);
  });

  it("sends a snapshot's in-message data the same way when there is no file", async () => {
    const data = randomBytes(3 * 1024 * 1024);
    const r = await receiver();
    const s = sender(r.port);
    s.t.send([snapMessage(data)]);
    await until(() => s.reports.length === 1);
    expect(s.reports).toEqual([true]);
    expect(r.got[0]!.bytes.equals(data)).toBe(true);
  });

  it("reports failure, and releases the file, when the peer is down or of another cluster", async () => {
    const src = join(dir, "outgoing.tmp");
    writeFileSync(src, randomBytes(1000));
    let released = 0;
    const file = { path: src, bytes: 1000, release: () => released++ };
    const down = sender(await freePort(), file);
    down.t.send([snapMessage()]);
    await until(() => down.reports.length === 1);
    expect(down.reports).toEqual([false]);

    const other = await receiver(8n);
    const refused = sender(other.port, file);
    refused.t.send([snapMessage()]);
    await until(() => refused.reports.length === 1);
    expect(refused.reports).toEqual([false]);
    expect(other.got).toEqual([]);
    expect(released).toBe(2);
  });

  it("refuses a truncated transfer or a wrong digest, keeping nothing", async () => {
    const r = await receiver();
    const head = encodeMessage(snapMessage());
    const len = Buffer.alloc(4);
    len.writeUInt32LE(head.length);
    const data = randomBytes(4096);
    const post = (declaredBytes: number, body: Buffer) =>
      new Promise<number>((resolve, reject) => {
        const session = http2.connect(`http://127.0.0.1:${r.port}`);
        session.on("error", reject);
        const req = session.request({
          ":method": "POST",
          ":path": "/raft/snapshot",
          "x-regmesh-cluster-id": "7",
          "x-regmesh-from": "1",
          "x-regmesh-snapshot-bytes": String(declaredBytes),
        });
        let status = 0;
        req.on("response", (h) => {
          status = Number(h[":status"]);
        });
        req.on("data", () => {});
        req.on("end", () => {
          session.close();
          resolve(status);
        });
        req.on("error", reject);
        req.end(body);
      });
    const digest = createHash("sha256").update(data).digest();
    // Declared longer than sent: the digest is taken as data, and the stream ends short.
    expect(await post(data.length + 100, Buffer.concat([len, head, data, digest]))).toBe(400);
    // The digest of something else.
    const wrong = createHash("sha256").update("other").digest();
    expect(await post(data.length, Buffer.concat([len, head, data, wrong]))).toBe(400);
    expect(r.got).toEqual([]);
    expect(readdirSync(r.recvDir)).toEqual([]);
    // The same bytes with their digest are taken.
    expect(await post(data.length, Buffer.concat([len, head, data, digest]))).toBe(200);
    expect(r.got[0]!.bytes.equals(data)).toBe(true);
  });
});
