// Starts a member from its configuration: storage in the data directory, the state
// machine, and the client listeners; stops it cleanly on SIGTERM/SIGINT.

import { mkdirSync, readFileSync } from "node:fs";
import type http from "node:http";
import { join } from "node:path";
import { etcdserverpb } from "@regmesh/proto";
import { pino } from "pino";
import { AuthService } from "../api/auth.js";
import { Concurrency } from "../api/concurrency.js";
import { GrpcRouter, grpcOverheadBytes } from "../api/grpc.js";
import { createHttpHandler } from "../api/http.js";
import { type ClientListener, createClientListener } from "../api/listener.js";
import { Metrics } from "../api/metrics.js";
import { Services } from "../api/services.js";
import type { Config } from "../config/config.js";
import { BboltStorage } from "../mvcc/bbolt-storage.js";
import { EtcdServer } from "./node.js";
import { encodeMembersReply, prepareRaft, startRaft } from "./raft-member.js";

export type RunningMember = { server: EtcdServer; stop(): Promise<void> };

export async function runMember(config: Config): Promise<RunningMember> {
  const log = pino({ level: config.logLevel === "panic" ? "fatal" : config.logLevel }, pino.destination(2));
  // etcd's layout: the backend (a bbolt file with etcd's buckets) at member/snap/db.
  const snapDir = join(config.dataDir, "member", "snap");
  mkdirSync(snapDir, { recursive: true });
  const storage = await BboltStorage.open(join(snapDir, "db"));
  const prepared = await prepareRaft(config);
  const server = new EtcdServer(config, storage, log, undefined, prepared.identity);
  server.restore();
  const raft = await startRaft(config, server, log, prepared);
  // The members' peer endpoint a joining member asks who is in the cluster (etcd's /members).
  server.transport!.handle(
    "/members",
    async () => encodeMembersReply(server.clusterId, server.members.values()),
    {
      anyCluster: true,
    },
  );
  server.start();

  const services = new Services(server, {
    workDir: snapDir,
    maxTxnOps: config.maxTxnOps,
    quotaBackendBytes: config.quotaBackendBytes,
    maxRequestBytes: config.maxRequestBytes,
    progressIntervalMs: config.watchProgressNotifyIntervalMs,
    name: config.name,
    peerUrls: config.initialAdvertisePeerUrls.map((u) => u.origin),
    clientUrls: config.advertiseClientUrls.map((u) => u.origin),
  });
  const router = new GrpcRouter({
    maxRecvMessageBytes: config.maxRequestBytes + grpcOverheadBytes,
    onError: (err, path) => log.error({ err, path }, "unexpected error serving a request"),
  });
  services.register(router);
  // Lease calls other members forward to the leader (etcd's /leases peer endpoints).
  server.transport!.handle("/lease/renew", (body) => server.serveLeaseRenew(body));
  server.transport!.handle("/lease/ttl", async (body) => {
    if (!server.lessor.primary) throw new Error("not leader");
    const req = etcdserverpb.LeaseTimeToLiveRequest.decode(body);
    return Buffer.from(
      etcdserverpb.LeaseTimeToLiveResponse.encode(services.leaseTimeToLiveLocal(req)).finish(),
    );
  });
  server.transport!.handle("/member/promote", async (body) => {
    const resp = await services.memberPromote({ ID: body.readBigUInt64BE(0) });
    return Buffer.from(etcdserverpb.MemberPromoteResponse.encode(resp).finish());
  });
  const concurrency = new Concurrency(services);
  concurrency.register(router);
  const auth = new AuthService(services);
  auth.register(router);
  const metrics = new Metrics(server);
  const httpHandler = createHttpHandler(services, metrics, concurrency, auth);
  const onHttp1: http.RequestListener = (req, res) => {
    void httpHandler(req, res);
  };

  const listeners: ClientListener[] = [];
  const t = config.tls;
  for (const url of config.listenClientUrls) {
    const secure = url.protocol === "https:";
    if (secure && (t.certFile === "" || t.keyFile === "")) {
      throw new Error(`TLS key/cert (--cert-file, --key-file) must be provided for client url ${url.origin}`);
    }
    const l = createClientListener({
      tls: secure
        ? {
            cert: readFileSync(t.certFile),
            key: readFileSync(t.keyFile),
            ca: t.trustedCaFile === "" ? undefined : readFileSync(t.trustedCaFile),
            requestCert: t.clientCertAuth,
          }
        : undefined,
      onStream: (stream, headers) => {
        if (router.isGrpc(headers)) router.handle(stream, headers);
        else {
          stream.respond({ ":status": 415 });
          stream.end();
        }
      },
      onHttp1,
    });
    await new Promise<void>((resolve, reject) => {
      l.server.once("error", reject);
      const host = url.hostname.replace(/^\[|\]$/g, "");
      l.server.listen(
        { host: host === "localhost" ? "127.0.0.1" : host, port: Number(url.port || 2379) },
        () => resolve(),
      );
    });
    listeners.push(l);
    log.info({ url: url.origin }, "serving client traffic (gRPC and HTTP)");
  }
  log.info({ name: config.name, dataDir: config.dataDir }, "ready to serve client requests");

  // Announce this member's name and client URLs to the cluster (etcd's publish).
  void server
    .propose({
      kind: "publish",
      req: {
        ID: server.memberId,
        name: config.name,
        peerURLs: [],
        clientURLs: config.advertiseClientUrls.map((u) => u.origin),
        isLearner: false,
      },
    })
    .catch((err) => log.warn({ err }, "publishing member attributes failed"));

  // Removed from the cluster by MemberRemove: stop, as etcd's member does.
  server.onRemoved = () => {
    void stop().then(() => process.exit(0));
  };

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      await Promise.all(listeners.map((l) => l.close()));
      await raft.stop();
      await server.stop();
      log.info({}, "stopped");
      log.flush();
    })();
    return stopping;
  };
  return { server, stop };
}
