// `GET /v1/watch/{service}` as Server-Sent Events (WHATWG HTML §9.2).
//
// The stream is a snapshot, then changes, each event's `id:` the registry revision it reflects:
//   event: snapshot   data: {"service","revision","instances":[...]}       (the full set at R)
//   event: change     data: {"service","revision","changes":[{type:"put",id,instance}|{type:"delete",id}]}
// One `change` event per revision: etcd may write several keys of one service in one Txn, and
// those changes share the revision, so they go out together; the ids of a stream's events are
// therefore strictly increasing, and resuming after one is exact.
//
// Resume: a client reconnecting with `Last-Event-ID: R` (EventSource does it by itself) gets no
// snapshot but a watch from R + 1, so it sees every change after R exactly once, in revision
// order (the etcd watch guarantee; the SDK's watcher resumes across broken streams the same
// way). When R has been compacted the watch cannot replay it: the bridge sends a fresh snapshot
// instead (a client must replace its set on every `snapshot` event) and goes on from there; the
// same happens when the etcd client moves to its standby registry group.
//
// Keep-alive: a comment line every sseHeartbeatIntervalMs. A client too slow to drain its
// socket is disconnected once SSE_BUFFER_BYTES_MAX is queued; it resumes with Last-Event-ID.

import type http from "node:http";
import type { mvccpb } from "@regmesh/proto";
import {
  decodeInstanceEntry,
  type EtcdClient,
  type Instance,
  listPrefix,
  serviceInstancesPrefix,
  type Watcher,
} from "@regmesh/sdk";
import type { Logger } from "pino";
import { BridgeError, BridgeErrorCode, badField, toBridgeError } from "./errors.js";
import { sendError, toJson } from "./http.js";
import { SSE_BUFFER_BYTES_MAX, SSE_STREAMS_MAX } from "./limits.js";

/**
 * The SDK's code for a client that moved to its standby registry group: revisions there are
 * unrelated to the ones sent, so the stream starts over with a snapshot, as after compaction.
 * Compared as a string: the code is newer than some SDK builds the mesher may be built with.
 */
const GROUP_SWITCHED = "SDK_ERR_GROUP_SWITCHED";

export type Change = { type: "put"; id: string; instance: Instance } | { type: "delete"; id: string };

/** Last-Event-ID: a decimal revision, or absent. */
export function lastEventId(header: string | string[] | undefined): bigint | undefined {
  if (header === undefined) return undefined;
  const v = Array.isArray(header) ? header[0]! : header;
  if (v.trim() === "") return undefined;
  if (!/^[0-9]{1,19}$/.test(v.trim()))
    throw badField("Last-Event-ID", "must be a registry revision (a decimal integer)");
  return BigInt(v.trim());
}

/** Turns one revision's etcd events into changes of the service's set. */
export function changesOf(prefix: string, servicePrefix: string, events: readonly mvccpb.Event[]): Change[] {
  const out: Change[] = [];
  for (const ev of events) {
    const key = ev.kv!.key.toString("utf8");
    const id = key.slice(servicePrefix.length);
    if (ev.type === 1 /* DELETE */) {
      out.push({ type: "delete", id });
      continue;
    }
    const r = decodeInstanceEntry(prefix, key, ev.kv!.value);
    // A value that is not an instance no longer routes: to a client it is gone.
    out.push(r.ok ? { type: "put", id, instance: r.value } : { type: "delete", id });
  }
  return out;
}

class Stream {
  private watcher: Watcher | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private closed = false;
  /** Last revision sent; events at or below it are never sent again. */
  private sentRevision = 0n;

  constructor(
    private readonly hub: SseHub,
    readonly service: string,
    private readonly res: http.ServerResponse,
  ) {}

  start(resumeAfter: bigint | undefined, heartbeatMs: number): void {
    this.res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    // Clients wait for the retry hint before their first reconnect (SSE: "retry" field).
    this.write("retry: 1000\n\n");
    this.heartbeat = setInterval(() => this.write(": heartbeat\n\n"), heartbeatMs);
    this.res.on("close", () => this.close());
    if (resumeAfter === undefined) void this.snapshotThenWatch();
    else {
      this.sentRevision = resumeAfter;
      this.watchFrom(resumeAfter + 1n);
    }
  }

  private write(text: string): void {
    if (this.closed) return;
    this.res.write(text);
    if (this.res.writableLength > SSE_BUFFER_BYTES_MAX) {
      this.hub.logger.warn({ service: this.service }, "bridge: SSE client too slow; closing its stream");
      this.close();
    }
  }

  private send(event: string, revision: bigint, data: unknown): void {
    this.sentRevision = revision;
    this.write(`event: ${event}\nid: ${revision}\ndata: ${toJson(data)}\n\n`);
  }

  private async snapshotThenWatch(): Promise<void> {
    const prefix = serviceInstancesPrefix(this.hub.prefix, this.service);
    try {
      const listing = await listPrefix(this.hub.client, prefix);
      if (this.closed) return;
      const instances: Instance[] = [];
      for (const kv of listing.kvs) {
        const r = decodeInstanceEntry(this.hub.prefix, kv.key.toString("utf8"), kv.value);
        if (r.ok) instances.push(r.value);
      }
      this.send("snapshot", listing.revision, {
        service: this.service,
        revision: listing.revision,
        instances,
      });
      this.watchFrom(listing.revision + 1n);
    } catch (err) {
      const e = toBridgeError(err);
      this.write(`event: error\ndata: ${toJson({ error: { code: e.code, message: e.message } })}\n\n`);
      this.close();
    }
  }

  private watchFrom(start: bigint): void {
    if (this.closed) return;
    const prefix = serviceInstancesPrefix(this.hub.prefix, this.service);
    this.watcher = this.hub.client.watch(
      { key: prefix, prefix: true, startRevision: start },
      {
        events: (events) => {
          if (this.closed) return;
          // The SDK delivers whole revisions, in order; group them one event per revision.
          let i = 0;
          while (i < events.length) {
            const rev = events[i]!.kv!.modRevision;
            let j = i;
            while (j < events.length && events[j]!.kv!.modRevision === rev) j++;
            if (rev > this.sentRevision) {
              const changes = changesOf(this.hub.prefix, prefix, events.slice(i, j));
              this.send("change", rev, { service: this.service, revision: rev, changes });
            }
            i = j;
          }
        },
        compacted: () => this.resnapshot("resume revision compacted"),
        canceled: (err) => {
          if ((err.code as string) === GROUP_SWITCHED) {
            this.resnapshot("registry group switched");
            return;
          }
          this.hub.logger.warn({ service: this.service, err: err.message }, "bridge: SSE watch canceled");
          this.close();
        },
      },
    );
  }

  /** The watch cannot go on from the last revision sent: the client gets the whole set again. */
  private resnapshot(why: string): void {
    if (this.closed) return;
    this.watcher = undefined;
    this.hub.logger.info(
      { service: this.service, after: this.sentRevision.toString(), why },
      "bridge: SSE watch cannot resume; sending a snapshot",
    );
    void this.snapshotThenWatch();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.heartbeat);
    this.watcher?.cancel();
    this.watcher = undefined;
    this.hub.forget(this);
    this.res.end();
  }
}

export class SseHub {
  private readonly streams = new Set<Stream>();

  constructor(
    readonly client: EtcdClient,
    readonly prefix: string,
    readonly logger: Logger,
    private readonly heartbeatMs: number,
  ) {}

  get size(): number {
    return this.streams.size;
  }

  open(service: string, req: http.IncomingMessage, res: http.ServerResponse): void {
    let resumeAfter: bigint | undefined;
    try {
      resumeAfter = lastEventId(req.headers["last-event-id"]);
      if (this.streams.size >= SSE_STREAMS_MAX) {
        throw new BridgeError(BridgeErrorCode.LIMIT, `at most ${SSE_STREAMS_MAX} watch streams per bridge`);
      }
    } catch (err) {
      sendError(res, toBridgeError(err));
      return;
    }
    const s = new Stream(this, service, res);
    this.streams.add(s);
    s.start(resumeAfter, this.heartbeatMs);
  }

  forget(s: Stream): void {
    this.streams.delete(s);
  }

  close(): void {
    for (const s of [...this.streams]) s.close();
  }
}
