// HTTP/1.1 on the client port: etcd's JSON gateway (/v3/...), /health, /version, /metrics.
// The gateway speaks etcd's JSON (proto field names, int64 as strings, bytes as base64)
// through the generated toJSON/fromJSON, and answers errors as grpc-gateway does:
// {"error", "message", "code"} with the HTTP status grpc-gateway maps the code to.

import type { IncomingMessage, ServerResponse } from "node:http";
import {
  etcdserverpb,
  type MessageTypeName,
  v3electionpb,
  v3lockpb,
  withProtoFieldNames,
} from "@regmesh/proto";
import type { AuthInfo } from "../auth/store.js";
import { Code, EtcdError } from "../server/errors.js";
import { etcdClusterVersion, etcdServerVersion } from "../version.js";
import type { AuthService } from "./auth.js";
import type { Concurrency } from "./concurrency.js";
import type { BidiStream } from "./grpc.js";
import type { Metrics } from "./metrics.js";
import type { Services } from "./services.js";
import { serveWatch } from "./watch.js";

type JsonCodec<T> = { fromJSON(o: unknown): T; toJSON(m: T): unknown };
type Route = {
  type: MessageTypeName;
  req: JsonCodec<unknown>;
  res: JsonCodec<unknown>;
  call: (r: unknown, signal: AbortSignal, ai: AuthInfo | undefined) => unknown;
};

/** grpc-gateway (v1)'s HTTPStatusFromCode. */
export function httpStatusOf(code: number): number {
  switch (code) {
    case Code.OK:
      return 200;
    case Code.Canceled:
      return 408;
    case Code.InvalidArgument:
    case Code.FailedPrecondition:
    case Code.OutOfRange:
      return 400;
    case Code.DeadlineExceeded:
      return 504;
    case Code.NotFound:
      return 404;
    case Code.AlreadyExists:
    case Code.Aborted:
      return 409;
    case Code.PermissionDenied:
      return 403;
    case Code.Unauthenticated:
      return 401;
    case Code.ResourceExhausted:
      return 429;
    case Code.Unimplemented:
      return 501;
    case Code.Unavailable:
      return 503;
    default:
      return 500;
  }
}

function route<Req, Res>(
  type: MessageTypeName,
  req: JsonCodec<Req>,
  res: JsonCodec<Res>,
  call: (r: Req, signal: AbortSignal, ai: AuthInfo | undefined) => Res | Promise<Res>,
): Route {
  return { type, req, res, call } as unknown as Route;
}

/** Largest gateway body read (the request limit plus room for base64 and JSON). */
const bodyBytesMax = 16 * 1024 * 1024;

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > bodyBytesMax) {
        reject(new EtcdError(Code.InvalidArgument, "etcdserver: request is too large"));
        req.destroy();
        return;
      }
      parts.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(parts)));
    req.on("error", reject);
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: ServerResponse, err: unknown): void {
  const e =
    err instanceof EtcdError ? err : new EtcdError(Code.Unknown, (err as Error).message ?? String(err));
  sendJson(res, httpStatusOf(e.grpcCode), { error: e.message, message: e.message, code: e.grpcCode });
}

/** Splits a body holding one or more concatenated JSON objects (gateway streams). */
function parseJsonObjects(text: string): unknown[] {
  const out: unknown[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === "\\") i++;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') inString = true;
    else if (ch === "{") {
      if (depth === 0) start = i;
      depth++;
    } else if (ch === "}") {
      depth--;
      if (depth === 0) out.push(JSON.parse(text.slice(start, i + 1)));
    }
  }
  if (depth !== 0 || (out.length === 0 && text.trim() !== "")) JSON.parse(text); // throws the parser's message
  return out;
}

export function createHttpHandler(
  services: Services,
  metrics: Metrics,
  concurrency: Concurrency,
  auth: AuthService,
) {
  const p = etcdserverpb;
  const e = v3electionpb;
  const l = v3lockpb;
  const routes = new Map<string, Route>([
    [
      "/v3/kv/range",
      route("etcdserverpb.RangeRequest", p.RangeRequest, p.RangeResponse, (r, _s, ai) =>
        services.range(r, ai),
      ),
    ],
    [
      "/v3/kv/put",
      route("etcdserverpb.PutRequest", p.PutRequest, p.PutResponse, (r, _s, ai) => services.put(r, ai)),
    ],
    [
      "/v3/kv/deleterange",
      route("etcdserverpb.DeleteRangeRequest", p.DeleteRangeRequest, p.DeleteRangeResponse, (r, _s, ai) =>
        services.deleteRange(r, ai),
      ),
    ],
    [
      "/v3/kv/txn",
      route("etcdserverpb.TxnRequest", p.TxnRequest, p.TxnResponse, (r, _s, ai) => services.txn(r, ai)),
    ],
    [
      "/v3/kv/compaction",
      route("etcdserverpb.CompactionRequest", p.CompactionRequest, p.CompactionResponse, (r) =>
        services.compact(r),
      ),
    ],
    [
      "/v3/lease/grant",
      route("etcdserverpb.LeaseGrantRequest", p.LeaseGrantRequest, p.LeaseGrantResponse, (r) =>
        services.leaseGrant(r),
      ),
    ],
    [
      "/v3/lease/revoke",
      route("etcdserverpb.LeaseRevokeRequest", p.LeaseRevokeRequest, p.LeaseRevokeResponse, (r, _s, ai) =>
        services.leaseRevoke(r, ai),
      ),
    ],
    [
      "/v3/kv/lease/revoke",
      route("etcdserverpb.LeaseRevokeRequest", p.LeaseRevokeRequest, p.LeaseRevokeResponse, (r, _s, ai) =>
        services.leaseRevoke(r, ai),
      ),
    ],
    [
      "/v3/lease/timetolive",
      route("etcdserverpb.LeaseTimeToLiveRequest", p.LeaseTimeToLiveRequest, p.LeaseTimeToLiveResponse, (r) =>
        services.leaseTimeToLive(r),
      ),
    ],
    [
      "/v3/kv/lease/timetolive",
      route("etcdserverpb.LeaseTimeToLiveRequest", p.LeaseTimeToLiveRequest, p.LeaseTimeToLiveResponse, (r) =>
        services.leaseTimeToLive(r),
      ),
    ],
    [
      "/v3/lease/leases",
      route("etcdserverpb.LeaseLeasesRequest", p.LeaseLeasesRequest, p.LeaseLeasesResponse, () =>
        services.leaseLeases(),
      ),
    ],
    [
      "/v3/kv/lease/leases",
      route("etcdserverpb.LeaseLeasesRequest", p.LeaseLeasesRequest, p.LeaseLeasesResponse, () =>
        services.leaseLeases(),
      ),
    ],
    [
      "/v3/maintenance/status",
      route("etcdserverpb.StatusRequest", p.StatusRequest, p.StatusResponse, () => services.status()),
    ],
    [
      "/v3/maintenance/defragment",
      route("etcdserverpb.DefragmentRequest", p.DefragmentRequest, p.DefragmentResponse, async () => {
        await services.server.defragment();
        return services.fill({});
      }),
    ],
    [
      "/v3/maintenance/transfer-leadership",
      route("etcdserverpb.MoveLeaderRequest", p.MoveLeaderRequest, p.MoveLeaderResponse, (r, _s, ai) =>
        services.moveLeader(r, ai),
      ),
    ],
    [
      "/v3/maintenance/alarm",
      route("etcdserverpb.AlarmRequest", p.AlarmRequest, p.AlarmResponse, (r) => services.alarm(r)),
    ],
    [
      "/v3/maintenance/hash",
      // etcd 3.4's gateway maps HashKV to the same path as Hash; a body with "revision" means HashKV.
      route("etcdserverpb.HashKVRequest", p.HashKVRequest, p.HashKVResponse, (r) => services.hashKV(r)),
    ],
    [
      "/v3/election/campaign",
      route("v3electionpb.CampaignRequest", e.CampaignRequest, e.CampaignResponse, (r, sig) =>
        concurrency.campaign(r, sig),
      ),
    ],
    [
      "/v3/election/proclaim",
      route("v3electionpb.ProclaimRequest", e.ProclaimRequest, e.ProclaimResponse, (r) =>
        concurrency.proclaim(r),
      ),
    ],
    [
      "/v3/election/leader",
      route("v3electionpb.LeaderRequest", e.LeaderRequest, e.LeaderResponse, (r) => concurrency.leader(r)),
    ],
    [
      "/v3/election/resign",
      route("v3electionpb.ResignRequest", e.ResignRequest, e.ResignResponse, (r) => concurrency.resign(r)),
    ],
    [
      "/v3/lock/lock",
      route("v3lockpb.LockRequest", l.LockRequest, l.LockResponse, (r, sig) => concurrency.lock(r, sig)),
    ],
    [
      "/v3/lock/unlock",
      route("v3lockpb.UnlockRequest", l.UnlockRequest, l.UnlockResponse, (r) => concurrency.unlock(r)),
    ],
    [
      "/v3/auth/enable",
      route("etcdserverpb.AuthEnableRequest", p.AuthEnableRequest, p.AuthEnableResponse, (_r, _s, ai) =>
        auth.enable(ai),
      ),
    ],
    [
      "/v3/auth/disable",
      route("etcdserverpb.AuthDisableRequest", p.AuthDisableRequest, p.AuthDisableResponse, (_r, _s, ai) =>
        auth.disable(ai),
      ),
    ],
    [
      "/v3/auth/authenticate",
      route("etcdserverpb.AuthenticateRequest", p.AuthenticateRequest, p.AuthenticateResponse, (r) =>
        auth.authenticate(r),
      ),
    ],
    [
      "/v3/auth/user/add",
      route("etcdserverpb.AuthUserAddRequest", p.AuthUserAddRequest, p.AuthUserAddResponse, (r, _s, ai) =>
        auth.userAdd(r, ai),
      ),
    ],
    [
      "/v3/auth/user/get",
      route("etcdserverpb.AuthUserGetRequest", p.AuthUserGetRequest, p.AuthUserGetResponse, (r, _s, ai) =>
        auth.userGet(r, ai),
      ),
    ],
    [
      "/v3/auth/user/list",
      route("etcdserverpb.AuthUserListRequest", p.AuthUserListRequest, p.AuthUserListResponse, (_r, _s, ai) =>
        auth.userList(ai),
      ),
    ],
    [
      "/v3/auth/user/delete",
      route(
        "etcdserverpb.AuthUserDeleteRequest",
        p.AuthUserDeleteRequest,
        p.AuthUserDeleteResponse,
        (r, _s, ai) => auth.userDelete(r, ai),
      ),
    ],
    [
      "/v3/auth/user/changepw",
      route(
        "etcdserverpb.AuthUserChangePasswordRequest",
        p.AuthUserChangePasswordRequest,
        p.AuthUserChangePasswordResponse,
        (r, _s, ai) => auth.userChangePassword(r, ai),
      ),
    ],
    [
      "/v3/auth/user/grant",
      route(
        "etcdserverpb.AuthUserGrantRoleRequest",
        p.AuthUserGrantRoleRequest,
        p.AuthUserGrantRoleResponse,
        (r, _s, ai) => auth.userGrantRole(r, ai),
      ),
    ],
    [
      "/v3/auth/user/revoke",
      route(
        "etcdserverpb.AuthUserRevokeRoleRequest",
        p.AuthUserRevokeRoleRequest,
        p.AuthUserRevokeRoleResponse,
        (r, _s, ai) => auth.userRevokeRole(r, ai),
      ),
    ],
    [
      "/v3/auth/role/add",
      route("etcdserverpb.AuthRoleAddRequest", p.AuthRoleAddRequest, p.AuthRoleAddResponse, (r, _s, ai) =>
        auth.roleAdd(r, ai),
      ),
    ],
    [
      "/v3/auth/role/get",
      route("etcdserverpb.AuthRoleGetRequest", p.AuthRoleGetRequest, p.AuthRoleGetResponse, (r, _s, ai) =>
        auth.roleGet(r, ai),
      ),
    ],
    [
      "/v3/auth/role/list",
      route("etcdserverpb.AuthRoleListRequest", p.AuthRoleListRequest, p.AuthRoleListResponse, (_r, _s, ai) =>
        auth.roleList(ai),
      ),
    ],
    [
      "/v3/auth/role/delete",
      route(
        "etcdserverpb.AuthRoleDeleteRequest",
        p.AuthRoleDeleteRequest,
        p.AuthRoleDeleteResponse,
        (r, _s, ai) => auth.roleDelete(r, ai),
      ),
    ],
    [
      "/v3/auth/role/grant",
      route(
        "etcdserverpb.AuthRoleGrantPermissionRequest",
        p.AuthRoleGrantPermissionRequest,
        p.AuthRoleGrantPermissionResponse,
        (r, _s, ai) => auth.roleGrantPermission(r, ai),
      ),
    ],
    [
      "/v3/auth/role/revoke",
      route(
        "etcdserverpb.AuthRoleRevokePermissionRequest",
        p.AuthRoleRevokePermissionRequest,
        p.AuthRoleRevokePermissionResponse,
        (r, _s, ai) => auth.roleRevokePermission(r, ai),
      ),
    ],
    [
      "/v3/cluster/member/add",
      route("etcdserverpb.MemberAddRequest", p.MemberAddRequest, p.MemberAddResponse, (r, _s, ai) =>
        services.memberAdd(r, ai),
      ),
    ],
    [
      "/v3/cluster/member/remove",
      route("etcdserverpb.MemberRemoveRequest", p.MemberRemoveRequest, p.MemberRemoveResponse, (r, _s, ai) =>
        services.memberRemove(r, ai),
      ),
    ],
    [
      "/v3/cluster/member/update",
      route("etcdserverpb.MemberUpdateRequest", p.MemberUpdateRequest, p.MemberUpdateResponse, (r, _s, ai) =>
        services.memberUpdate(r, ai),
      ),
    ],
    [
      "/v3/cluster/member/promote",
      route(
        "etcdserverpb.MemberPromoteRequest",
        p.MemberPromoteRequest,
        p.MemberPromoteResponse,
        (r, _s, ai) => services.memberPromote(r, ai),
      ),
    ],
    [
      "/v3/cluster/member/list",
      route("etcdserverpb.MemberListRequest", p.MemberListRequest, p.MemberListResponse, () =>
        services.memberList(),
      ),
    ],
  ]);

  const unary = async (r: Route, req: IncomingMessage, res: ServerResponse) => {
    let msg: unknown;
    try {
      const text = (await readBody(req)).toString("utf8");
      const json = text.trim() === "" ? {} : JSON.parse(text);
      if (json === null || typeof json !== "object" || Array.isArray(json)) {
        throw new EtcdError(Code.InvalidArgument, "json: cannot unmarshal non-object into the request");
      }
      msg = r.req.fromJSON(withProtoFieldNames(r.type, json));
    } catch (err) {
      sendError(
        res,
        err instanceof EtcdError ? err : new EtcdError(Code.InvalidArgument, (err as Error).message),
      );
      return;
    }
    // Aborted when the client goes away, so a waiting Lock or Campaign stops waiting.
    const gone = new AbortController();
    res.on("close", () => gone.abort());
    try {
      const ai = services.authInfo(req.headers);
      sendJson(res, 200, r.res.toJSON(await r.call(msg, gone.signal, ai)));
    } catch (err) {
      sendError(res, err);
    }
  };

  /** A gateway stream: each request object in the body, each response a `{"result": ...}` line. */
  const streamJson = <Req, Res>(
    req: IncomingMessage,
    res: ServerResponse,
    type: MessageTypeName,
    reqCodec: JsonCodec<Req>,
    resCodec: JsonCodec<Res>,
    serve: (s: BidiStream<Req, Res>) => void,
  ) => {
    const onMessage: ((r: Req) => void)[] = [];
    const onEnd: (() => void)[] = [];
    const onHalfClose: (() => void)[] = [];
    let ended = false;
    const finish = () => {
      if (ended) return;
      ended = true;
      for (const f of onEnd) f();
    };
    const controller = new AbortController();
    res.writeHead(200, { "content-type": "application/json" });
    const stream: BidiStream<Req, Res> = {
      ctx: { headers: req.headers as never, deadlineMs: undefined, signal: controller.signal, peer: "" },
      onMessage: (f) => onMessage.push(f),
      onEnd: (f) => onEnd.push(f),
      onHalfClose: (f) => onHalfClose.push(f),
      onDrain: (f) => res.on("drain", f),
      write: (m) => res.write(`${JSON.stringify({ result: resCodec.toJSON(m) })}\n`),
      end: (err) => {
        if (err)
          res.write(`${JSON.stringify({ error: { grpc_code: err.grpcCode, message: err.message } })}\n`);
        res.end();
        finish();
      },
    };
    res.on("close", () => {
      controller.abort();
      finish();
    });
    serve(stream);
    let buf = "";
    req.on("data", (c: Buffer) => {
      buf += c.toString("utf8");
      let objs: unknown[];
      try {
        objs = parseJsonObjects(buf);
      } catch {
        return; // incomplete object: wait for more
      }
      buf = "";
      for (const o of objs) {
        const m = reqCodec.fromJSON(withProtoFieldNames(type, o));
        for (const f of onMessage) f(m);
      }
    });
    req.on("end", () => {
      for (const f of onHalfClose) f();
    });
  };

  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = (req.url ?? "/").split("?")[0]!;
    try {
      if (req.method === "GET" && url === "/health") {
        // etcd 3.4's checkHealth: unhealthy with an alarm, without a leader, or when a
        // linearizable read does not complete within a second.
        const server = services.server;
        let healthy = server.alarms.size === 0 && server.leaderId !== 0n;
        if (healthy) {
          healthy = await Promise.race([
            server.linearizableRead().then(
              () => true,
              () => false,
            ),
            new Promise<boolean>((r) => setTimeout(() => r(false), 1000).unref()),
          ]);
        }
        sendJson(res, healthy ? 200 : 503, { health: healthy ? "true" : "false" });
        return;
      }
      if (req.method === "GET" && url === "/version") {
        sendJson(res, 200, { etcdserver: etcdServerVersion, etcdcluster: etcdClusterVersion });
        return;
      }
      if (req.method === "GET" && url === "/metrics") {
        const text = await metrics.text();
        res.writeHead(200, { "content-type": metrics.contentType });
        res.end(text);
        return;
      }
      if (url === "/v3/watch" && req.method === "POST") {
        streamJson(req, res, "etcdserverpb.WatchRequest", p.WatchRequest, p.WatchResponse, (s) =>
          serveWatch(services.server, s, {
            maxRequestBytes: services.opts.maxRequestBytes,
            progressIntervalMs: services.opts.progressIntervalMs,
            leaderlessLimitMs: 2 * services.server.config.electionTimeoutMs,
          }),
        );
        return;
      }
      if (url === "/v3/election/observe" && req.method === "POST") {
        streamJson(req, res, "v3electionpb.LeaderRequest", e.LeaderRequest, e.LeaderResponse, (s) =>
          concurrency.observe(s),
        );
        return;
      }
      if (url === "/v3/lease/keepalive" && req.method === "POST") {
        streamJson(
          req,
          res,
          "etcdserverpb.LeaseKeepAliveRequest",
          p.LeaseKeepAliveRequest,
          p.LeaseKeepAliveResponse,
          (s) => services.serveKeepAlive(s),
        );
        return;
      }
      const r = routes.get(url);
      if (r === undefined) {
        sendJson(res, 404, { error: "Not Found", message: "Not Found", code: Code.NotFound });
        return;
      }
      if (req.method !== "POST") {
        sendJson(res, 405, {
          error: "Method Not Allowed",
          message: "Method Not Allowed",
          code: Code.Unimplemented,
        });
        return;
      }
      await unary(r, req, res);
    } catch (err) {
      if (!res.headersSent) sendError(res, err);
      else res.destroy();
    }
  };
}
