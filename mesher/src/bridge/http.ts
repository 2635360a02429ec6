// HTTP plumbing shared by the REST routes, JSON-RPC and SSE: bounded body reading and JSON
// responses. bigint values (revisions, lease ids) are written as decimal strings, as etcd's
// own JSON gateway writes int64s.

import type http from "node:http";
import { BridgeError, BridgeErrorCode, restErrorBody } from "./errors.js";
import { BODY_BYTES_MAX, BODY_DISCARD_BYTES_MAX } from "./limits.js";

export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
}

export function sendJson(
  res: http.ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = toJson(body);
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
    ...headers,
  });
  res.end(text);
}

export function sendError(
  res: http.ServerResponse,
  e: BridgeError,
  headers: Record<string, string> = {},
): void {
  sendJson(res, e.httpStatus, restErrorBody(e), headers);
}

/**
 * Reads the body, at most BODY_BYTES_MAX bytes. A larger body (by Content-Length, or as it
 * streams in) is refused with TOO_LARGE; the rest of it is not read, and the caller answers
 * 413 and discards the rest (discardBody).
 */
export function readBody(req: http.IncomingMessage, maxBytes = BODY_BYTES_MAX): Promise<Buffer> {
  const tooLarge = () =>
    new BridgeError(BridgeErrorCode.TOO_LARGE, `request body exceeds ${maxBytes} bytes`, { field: "body" });
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) > maxBytes) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on("data", (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > maxBytes) {
        done = true;
        chunks.length = 0;
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (done) return;
      done = true;
      resolve(Buffer.concat(chunks));
    });
    req.on("error", (err) => {
      if (done) return;
      done = true;
      reject(
        new BridgeError(BridgeErrorCode.BAD_REQUEST, `reading the body failed: ${err.message}`, {
          cause: err,
        }),
      );
    });
  });
}

/** Parses a JSON body; an empty or malformed one is BAD_JSON naming the position. */
export function parseJson(body: Buffer): unknown {
  const text = body.toString("utf8");
  if (text.trim() === "")
    throw new BridgeError(BridgeErrorCode.BAD_JSON, "body: must be a JSON value, got nothing", {
      field: "body",
    });
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new BridgeError(BridgeErrorCode.BAD_JSON, `body: not valid JSON: ${(e as Error).message}`, {
      field: "body",
    });
  }
}

/**
 * After a 413 the rest of the body is read and thrown away, so that a client still sending it
 * gets the answer instead of a reset connection, and the connection stays usable. A body far
 * past the limit is not worth reading: the connection is cut instead.
 */
export function discardBody(req: http.IncomingMessage): void {
  let discarded = 0;
  req.on("data", (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > BODY_DISCARD_BYTES_MAX) req.socket.destroy();
  });
  req.resume();
}
