// Command-line flags of `registry-node`, with etcd 3.4's names, defaults and environment
// variables (ETCD_<FLAG>, upper snake case), so existing etcd runbooks and manifests work.
// A flag etcd has but we do not serve yet is rejected by name rather than silently ignored.

export type FlagKind = "string" | "int" | "bool" | "urls" | "duration";

export type FlagSpec = {
  name: string;
  kind: FlagKind;
  default: string;
  help: string;
};

export const flagSpecs: FlagSpec[] = [
  // Member
  { name: "name", kind: "string", default: "default", help: "Human-readable name for this member." },
  // biome-ignore lint/suspicious/noTemplateCurlyInString: etcd prints this literal text as the default
  { name: "data-dir", kind: "string", default: "${name}.etcd", help: "Path to the data directory." },
  { name: "wal-dir", kind: "string", default: "", help: "Path to the dedicated wal directory." },
  {
    name: "snapshot-count",
    kind: "int",
    default: "100000",
    help: "Number of committed transactions to trigger a snapshot to disk.",
  },
  {
    name: "heartbeat-interval",
    kind: "int",
    default: "100",
    help: "Time (in milliseconds) of a heartbeat interval.",
  },
  {
    name: "election-timeout",
    kind: "int",
    default: "1000",
    help: "Time (in milliseconds) for an election to timeout.",
  },
  {
    name: "listen-peer-urls",
    kind: "urls",
    default: "http://localhost:2380",
    help: "List of URLs to listen on for peer traffic.",
  },
  {
    name: "listen-client-urls",
    kind: "urls",
    default: "http://localhost:2379",
    help: "List of URLs to listen on for client traffic.",
  },
  {
    name: "listen-metrics-urls",
    kind: "urls",
    default: "",
    help: "List of URLs to listen on for the metrics and health endpoints.",
  },
  {
    name: "quota-backend-bytes",
    kind: "int",
    default: "0",
    help: "Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).",
  },
  {
    name: "backend-batch-interval",
    kind: "duration",
    default: "0",
    help: "BackendBatchInterval is the maximum time before commit the backend transaction.",
  },
  {
    name: "backend-batch-limit",
    kind: "int",
    default: "0",
    help: "BackendBatchLimit is the maximum operations before commit the backend transaction.",
  },
  {
    name: "max-txn-ops",
    kind: "int",
    default: "128",
    help: "Maximum number of operations permitted in a transaction.",
  },
  {
    name: "max-request-bytes",
    kind: "int",
    default: "1572864",
    help: "Maximum client request size in bytes the server will accept.",
  },
  // Clustering
  {
    name: "initial-advertise-peer-urls",
    kind: "urls",
    default: "http://localhost:2380",
    help: "List of this member's peer URLs to advertise to the rest of the cluster.",
  },
  {
    name: "initial-cluster",
    kind: "string",
    default: "default=http://localhost:2380",
    help: "Initial cluster configuration for bootstrapping.",
  },
  {
    name: "initial-cluster-state",
    kind: "string",
    default: "new",
    help: "Initial cluster state ('new' or 'existing').",
  },
  {
    name: "initial-cluster-token",
    kind: "string",
    default: "etcd-cluster",
    help: "Initial cluster token for the etcd cluster during bootstrap.",
  },
  {
    name: "advertise-client-urls",
    kind: "urls",
    default: "http://localhost:2379",
    help: "List of this member's client URLs to advertise to the public.",
  },
  {
    name: "auto-compaction-retention",
    kind: "string",
    default: "0",
    help: "Auto compaction retention length. 0 means disable auto compaction.",
  },
  {
    name: "auto-compaction-mode",
    kind: "string",
    default: "periodic",
    help: "Interpret 'auto-compaction-retention' one of: periodic|revision.",
  },
  // Security
  { name: "cert-file", kind: "string", default: "", help: "Path to the client server TLS cert file." },
  { name: "key-file", kind: "string", default: "", help: "Path to the client server TLS key file." },
  { name: "client-cert-auth", kind: "bool", default: "false", help: "Enable client cert authentication." },
  {
    name: "trusted-ca-file",
    kind: "string",
    default: "",
    help: "Path to the client server TLS trusted CA file.",
  },
  { name: "peer-cert-file", kind: "string", default: "", help: "Path to the peer server TLS cert file." },
  { name: "peer-key-file", kind: "string", default: "", help: "Path to the peer server TLS key file." },
  {
    name: "peer-client-cert-auth",
    kind: "bool",
    default: "false",
    help: "Enable peer client cert authentication.",
  },
  {
    name: "peer-trusted-ca-file",
    kind: "string",
    default: "",
    help: "Path to the peer server TLS trusted CA file.",
  },
  // Experimental (etcd 3.4's hidden-in-docs flags, same names)
  {
    name: "experimental-watch-progress-notify-interval",
    kind: "duration",
    default: "10m",
    help: "Duration of periodical watch progress notification.",
  },
  { name: "auth-token", kind: "string", default: "simple", help: "Specify auth token type: 'simple'." },
  // Logging
  { name: "logger", kind: "string", default: "zap", help: "Accepted for compatibility; logs are pino JSON." },
  {
    name: "log-level",
    kind: "string",
    default: "info",
    help: "Configures log level. Only supports debug, info, warn, error, panic, or fatal.",
  },
  {
    name: "log-outputs",
    kind: "string",
    default: "default",
    help: "Specify 'stdout' or 'stderr' to skip journald logging even when running under systemd.",
  },
  // Misc
  { name: "version", kind: "bool", default: "false", help: "Print the version and exit." },
  { name: "help", kind: "bool", default: "false", help: "Show this help and exit." },
];

export type FlagValues = Map<string, string>;

export class FlagError extends Error {
  readonly code = "REG_ERR_BAD_FLAG";
}

const byName = new Map(flagSpecs.map((s) => [s.name, s]));

/** The ETCD_* environment variable etcd reads for a flag. */
export function envName(flag: string): string {
  return `ETCD_${flag.toUpperCase().replaceAll("-", "_")}`;
}

/**
 * Parses Go-style flags (`--flag=v`, `--flag v`, `-flag v`, bare booleans) over defaults and
 * ETCD_* environment variables (flags win, as in etcd). Throws FlagError naming the flag.
 */
export function parseFlags(argv: string[], env: Record<string, string | undefined> = {}): FlagValues {
  const values: FlagValues = new Map(flagSpecs.map((s) => [s.name, s.default]));
  for (const spec of flagSpecs) {
    const v = env[envName(spec.name)];
    if (v !== undefined) values.set(spec.name, v);
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("-") || arg === "-" || arg === "--") {
      throw new FlagError(`'${arg}' is not a valid flag`);
    }
    const body = arg.replace(/^--?/, "");
    const eq = body.indexOf("=");
    const name = eq >= 0 ? body.slice(0, eq) : body;
    const spec = byName.get(name);
    if (spec === undefined) throw new FlagError(`flag provided but not defined: -${name}`);
    let value: string;
    if (eq >= 0) value = body.slice(eq + 1);
    else if (spec.kind === "bool") value = "true";
    else {
      const next = argv[i + 1];
      if (next === undefined) throw new FlagError(`flag needs an argument: -${name}`);
      value = next;
      i += 1;
    }
    values.set(name, value);
  }
  for (const spec of flagSpecs) checkKind(spec, values.get(spec.name)!);
  return values;
}

function checkKind(spec: FlagSpec, value: string): void {
  if (spec.kind === "int" && !/^-?\d+$/.test(value)) {
    throw new FlagError(`invalid value "${value}" for flag -${spec.name}: parse error`);
  }
  if (spec.kind === "bool" && !["true", "false", "1", "0"].includes(value)) {
    throw new FlagError(`invalid boolean value "${value}" for -${spec.name}: parse error`);
  }
  if (spec.kind === "duration" && parseDurationMs(value) === undefined) {
    throw new FlagError(`invalid value "${value}" for flag -${spec.name}: parse error`);
  }
  if (spec.kind === "urls" && value !== "") {
    for (const u of value.split(",")) parseUrl(spec.name, u);
  }
}

const durationUnitMs: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  μs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/**
 * A Go duration (time.ParseDuration: "10m", "1h30m", "1.5s", "500ms", "0") in milliseconds,
 * or undefined when it does not parse.
 */
export function parseDurationMs(value: string): number | undefined {
  if (value === "0" || value === "+0" || value === "-0") return 0;
  const m = /^([+-]?)((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$/.exec(value);
  if (m === null) return undefined;
  let total = 0;
  for (const part of value.slice(m[1]!.length).matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g)) {
    total += Number(part[1]) * durationUnitMs[part[2]!]!;
  }
  return m[1] === "-" ? -total : total;
}

export function parseUrl(flag: string, raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new FlagError(`invalid value "${raw}" for flag -${flag}: parse "${raw}": invalid URI for request`);
  }
  if (
    url.protocol !== "http:" &&
    url.protocol !== "https:" &&
    url.protocol !== "unix:" &&
    url.protocol !== "unixs:"
  ) {
    throw new FlagError(
      `invalid value "${raw}" for flag -${flag}: URL scheme must be http, https, unix, or unixs: ${raw}`,
    );
  }
  if (url.pathname !== "/" && url.pathname !== "") {
    throw new FlagError(`invalid value "${raw}" for flag -${flag}: URL must not contain a path: ${raw}`);
  }
  return url;
}

export function usage(version: string): string {
  const lines = [
    `registry-node ${version}: a Raft-replicated registry that speaks the etcd v3 API.`,
    "",
    "Usage:",
    "  registry-node [flags]",
    "",
    "Flags (etcd's names; each can also be set by its ETCD_* environment variable):",
  ];
  for (const s of flagSpecs) {
    const def = s.default === "" || s.kind === "bool" ? "" : ` (default "${s.default}")`;
    lines.push(`  --${s.name}${s.kind === "bool" ? "" : ` <${s.kind === "urls" ? "urls" : s.kind}>`}`);
    lines.push(`      ${s.help}${def}`);
  }
  return lines.join("\n");
}
