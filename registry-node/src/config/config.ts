import { FlagError, type FlagValues, parseDurationMs, parseUrl } from "./flags.js";

/** The member's configuration, typed and checked. Units last in names. */
export type Config = {
  name: string;
  dataDir: string;
  walDir: string;
  snapshotCount: number;
  heartbeatIntervalMs: number;
  electionTimeoutMs: number;
  listenPeerUrls: URL[];
  listenClientUrls: URL[];
  listenMetricsUrls: URL[];
  advertiseClientUrls: URL[];
  initialAdvertisePeerUrls: URL[];
  /** name -> peer URLs, from --initial-cluster. */
  initialCluster: Map<string, URL[]>;
  initialClusterState: "new" | "existing";
  initialClusterToken: string;
  quotaBackendBytes: number;
  /**
   * The backend commits its buffered writes this often (--backend-batch-interval; etcd:
   * 100 ms when 0). Acknowledged writes are durable in the WAL meanwhile; a restart applies
   * the entries after the backend's consistent index again.
   */
  backendBatchIntervalMs: number;
  /** ...or once this many writes are buffered (--backend-batch-limit; etcd: 10,000 when 0). */
  backendBatchLimit: number;
  maxTxnOps: number;
  maxRequestBytes: number;
  autoCompactionRetention: string;
  autoCompactionMode: "periodic" | "revision";
  /** Interval of progress notifications to watches that ask for them (etcd: 10 minutes, at least 100 ms). */
  watchProgressNotifyIntervalMs: number;
  tls: {
    certFile: string;
    keyFile: string;
    trustedCaFile: string;
    clientCertAuth: boolean;
    peerCertFile: string;
    peerKeyFile: string;
    peerTrustedCaFile: string;
    peerClientCertAuth: boolean;
  };
  logLevel: "debug" | "info" | "warn" | "error" | "panic" | "fatal";
};

// etcd's limits (embed/config.go): an election timeout above 50 s is refused.
const electionTimeoutMsMax = 50_000;
// etcd's watch progress interval (v3rpc/watch.go): 10 minutes by default; a smaller value
// given by flag is raised to 100 ms, and a value <= 0 leaves the default.
const watchProgressNotifyIntervalMsDefault = 10 * 60 * 1000;
const watchProgressNotifyIntervalMsMin = 100;
// etcd's backend batching (mvcc/backend): defaultBatchInterval and defaultBatchLimit, used
// when --backend-batch-interval or --backend-batch-limit is 0.
const backendBatchIntervalMsDefault = 100;
const backendBatchLimitDefault = 10_000;
// etcd's default backend quota when --quota-backend-bytes is 0: 2 GiB.
export const defaultQuotaBackendBytes = 2 * 1024 * 1024 * 1024;

function urls(flag: string, value: string): URL[] {
  if (value === "") return [];
  return value.split(",").map((u) => parseUrl(flag, u.trim()));
}

function int(values: FlagValues, name: string): number {
  return Number.parseInt(values.get(name)!, 10);
}

function bool(values: FlagValues, name: string): boolean {
  const v = values.get(name)!;
  return v === "true" || v === "1";
}

/** Parses `name1=url1,name1=url2,name2=url3` as etcd does. */
export function parseInitialCluster(value: string): Map<string, URL[]> {
  const cluster = new Map<string, URL[]>();
  for (const part of value.split(",")) {
    const eq = part.indexOf("=");
    if (eq <= 0) throw new FlagError(`--initial-cluster: missing "=" in "${part}"`);
    const name = part.slice(0, eq).trim();
    const url = parseUrl("initial-cluster", part.slice(eq + 1).trim());
    const list = cluster.get(name) ?? [];
    list.push(url);
    cluster.set(name, list);
  }
  return cluster;
}

const sameUrls = (a: URL[], b: URL[]) =>
  a
    .map((u) => u.href)
    .sort()
    .join(",") ===
  b
    .map((u) => u.href)
    .sort()
    .join(",");

function progressIntervalMs(values: FlagValues): number {
  const ms = parseDurationMs(values.get("experimental-watch-progress-notify-interval")!)!;
  if (ms <= 0) return watchProgressNotifyIntervalMsDefault;
  return Math.max(watchProgressNotifyIntervalMsMin, ms);
}

/** Builds a Config from parsed flags, with etcd's cross-flag checks and messages. */
export function configFromFlags(values: FlagValues): Config {
  const name = values.get("name")!;
  const heartbeatIntervalMs = int(values, "heartbeat-interval");
  const electionTimeoutMs = int(values, "election-timeout");
  if (heartbeatIntervalMs <= 0) {
    throw new FlagError(`--heartbeat-interval must be >0 (set to ${heartbeatIntervalMs}ms)`);
  }
  if (electionTimeoutMs <= 0) {
    throw new FlagError(`--election-timeout must be >0 (set to ${electionTimeoutMs}ms)`);
  }
  if (5 * heartbeatIntervalMs > electionTimeoutMs) {
    throw new FlagError(
      `--election-timeout[${electionTimeoutMs}ms] should be at least as 5 times as --heartbeat-interval[${heartbeatIntervalMs}ms]`,
    );
  }
  if (electionTimeoutMs > electionTimeoutMsMax) {
    throw new FlagError(
      `--election-timeout[${electionTimeoutMs}ms] is too long, and should be set less than ${electionTimeoutMsMax}ms`,
    );
  }

  const state = values.get("initial-cluster-state")!;
  if (state !== "new" && state !== "existing") {
    throw new FlagError(
      `invalid value "${state}" for flag -initial-cluster-state: valid values are "new", "existing"`,
    );
  }
  const mode = values.get("auto-compaction-mode")!;
  if (mode !== "periodic" && mode !== "revision") {
    throw new FlagError(`unknown auto-compaction-mode ${JSON.stringify(mode)}`);
  }
  const logLevel = values.get("log-level")!;
  if (!["debug", "info", "warn", "error", "panic", "fatal"].includes(logLevel)) {
    throw new FlagError(`unknown log-level ${JSON.stringify(logLevel)}`);
  }
  const authToken = values.get("auth-token")!;
  if (authToken !== "simple") throw new FlagError(`unsupported auth-token type ${JSON.stringify(authToken)}`);

  const initialAdvertisePeerUrls = urls(
    "initial-advertise-peer-urls",
    values.get("initial-advertise-peer-urls")!,
  );
  const initialCluster = parseInitialCluster(values.get("initial-cluster")!);
  const own = initialCluster.get(name);
  if (own === undefined) {
    throw new FlagError(
      `couldn't find local name ${JSON.stringify(name)} in the initial cluster configuration`,
    );
  }
  if (!sameUrls(own, initialAdvertisePeerUrls)) {
    throw new FlagError(
      `--initial-cluster has ${name}=${own.map((u) => u.origin).join(",")} but missing from --initial-advertise-peer-urls=${initialAdvertisePeerUrls.map((u) => u.origin).join(",")}`,
    );
  }
  const listenClientUrls = urls("listen-client-urls", values.get("listen-client-urls")!);
  const advertiseClientUrls = urls("advertise-client-urls", values.get("advertise-client-urls")!);
  if (listenClientUrls.length > 0 && advertiseClientUrls.length === 0) {
    throw new FlagError("--advertise-client-urls is required when --listen-client-urls is set explicitly");
  }
  for (const [flag, n] of [
    ["snapshot-count", int(values, "snapshot-count")],
    ["max-txn-ops", int(values, "max-txn-ops")],
    ["max-request-bytes", int(values, "max-request-bytes")],
  ] as const) {
    if (n <= 0) throw new FlagError(`--${flag} must be >0 (set to ${n})`);
  }
  const quota = int(values, "quota-backend-bytes");
  if (quota < 0) throw new FlagError(`--quota-backend-bytes must be >=0 (set to ${quota})`);
  const batchIntervalMs = parseDurationMs(values.get("backend-batch-interval")!)!;
  const batchLimit = int(values, "backend-batch-limit");

  const tls = {
    certFile: values.get("cert-file")!,
    keyFile: values.get("key-file")!,
    trustedCaFile: values.get("trusted-ca-file")!,
    clientCertAuth: bool(values, "client-cert-auth"),
    peerCertFile: values.get("peer-cert-file")!,
    peerKeyFile: values.get("peer-key-file")!,
    peerTrustedCaFile: values.get("peer-trusted-ca-file")!,
    peerClientCertAuth: bool(values, "peer-client-cert-auth"),
  };
  if ((tls.certFile === "") !== (tls.keyFile === "")) {
    throw new FlagError("--cert-file and --key-file must be given together");
  }
  if ((tls.peerCertFile === "") !== (tls.peerKeyFile === "")) {
    throw new FlagError("--peer-cert-file and --peer-key-file must be given together");
  }

  const dataDirFlag = values.get("data-dir")!;
  return {
    name,
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the literal default of --data-dir
    dataDir: dataDirFlag === "${name}.etcd" ? `${name}.etcd` : dataDirFlag,
    walDir: values.get("wal-dir")!,
    snapshotCount: int(values, "snapshot-count"),
    heartbeatIntervalMs,
    electionTimeoutMs,
    listenPeerUrls: urls("listen-peer-urls", values.get("listen-peer-urls")!),
    listenClientUrls,
    listenMetricsUrls: urls("listen-metrics-urls", values.get("listen-metrics-urls")!),
    advertiseClientUrls,
    initialAdvertisePeerUrls,
    initialCluster,
    initialClusterState: state,
    initialClusterToken: values.get("initial-cluster-token")!,
    quotaBackendBytes: quota === 0 ? defaultQuotaBackendBytes : quota,
    backendBatchIntervalMs: batchIntervalMs > 0 ? batchIntervalMs : backendBatchIntervalMsDefault,
    backendBatchLimit: batchLimit > 0 ? batchLimit : backendBatchLimitDefault,
    maxTxnOps: int(values, "max-txn-ops"),
    maxRequestBytes: int(values, "max-request-bytes"),
    autoCompactionRetention: values.get("auto-compaction-retention")!,
    autoCompactionMode: mode,
    watchProgressNotifyIntervalMs: progressIntervalMs(values),
    tls,
    logLevel: logLevel as Config["logLevel"],
  };
}
