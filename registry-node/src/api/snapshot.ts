// Maintenance.Snapshot (etcd's v3rpc/maintenance.go): the backend file, consistent at one
// revision, streamed in 32 KiB chunks with the bytes still to come, then one last message
// holding the SHA-256 of everything sent, which `etcdctl snapshot restore` checks.

import { createHash } from "node:crypto";
import { createReadStream, rmSync } from "node:fs";
import { join } from "node:path";
import type { etcdserverpb } from "@regmesh/proto";
import { Code, EtcdError } from "../server/errors.js";
import type { EtcdServer } from "../server/node.js";
import type { BidiStream } from "./grpc.js";

const chunkBytes = 32 * 1024;

export function serveSnapshot(
  server: EtcdServer,
  stream: BidiStream<etcdserverpb.SnapshotRequest, etcdserverpb.SnapshotResponse>,
  workDir: string,
): void {
  let started = false;
  stream.onMessage(() => {
    if (started) return;
    started = true;
    void send().catch((err) =>
      stream.end(err instanceof EtcdError ? err : new EtcdError(Code.Unknown, String(err))),
    );
  });

  async function send(): Promise<void> {
    const storage = server.storage;
    if (storage.snapshotTo === undefined)
      throw new EtcdError(Code.Unimplemented, "snapshot: storage is in memory");
    // Everything applied so far goes into the file first.
    await server.backend.commit();
    const path = join(workDir, `snapshot-${process.pid}-${Date.now()}.tmp`);
    try {
      const { bytes: total } = await storage.snapshotTo(path);
      const h = createHash("sha256");
      let sent = 0;
      let pending: Buffer = Buffer.alloc(0);
      const emit = async (blob: Buffer) => {
        sent += blob.length;
        h.update(blob);
        const header = server.header();
        if (!stream.write({ header, remainingBytes: BigInt(total - sent), blob })) {
          await new Promise<void>((r) => stream.onDrain(r));
        }
      };
      for await (const chunk of createReadStream(path, { highWaterMark: chunkBytes })) {
        pending = pending.length === 0 ? (chunk as Buffer) : Buffer.concat([pending, chunk as Buffer]);
        while (pending.length >= chunkBytes) {
          await emit(pending.subarray(0, chunkBytes));
          pending = pending.subarray(chunkBytes);
        }
      }
      if (pending.length > 0) await emit(pending);
      stream.write({ header: server.header(), remainingBytes: 0n, blob: h.digest() });
      stream.end();
    } finally {
      rmSync(path, { force: true });
    }
  }
}
