// The mesher's configuration: flags, environment variables and a YAML file, in that order of
// precedence (a flag wins over the environment, which wins over the file). One table below is
// the single source: it gives each option its flag (`--app-port`), environment variable
// (`MESHER_APP_PORT`), YAML key (`app-port`), type, default and help line. Unknown flags, keys
// and variables that look like ours, and bad values, stop the mesher with a message naming them.

import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";

type Kind = "string" | "int" | "duration" | "bool" | "list" | "addr";

interface Spec {
  readonly kind: Kind;
  readonly def?: string | number | boolean | readonly string[];
  readonly help: string;
  readonly choices?: readonly string[];
  readonly min?: number;
  readonly max?: number;
}

/** Every option. Durations are written like "500ms", "2s", "1m" (or plain milliseconds). */
export const OPTIONS = {
  config: { kind: "string", help: "YAML file with any of these options (keys are the flag names)." },
  // Registry.
  "registry-endpoints": {
    kind: "list",
    def: ["http://127.0.0.1:2379"],
    help: "Registry client URLs (registry-node or any etcd v3 cluster), comma separated.",
  },
  "registry-standby-endpoints": {
    kind: "list",
    def: [],
    help: "A standby registry group, used when the primary is down or slow.",
  },
  "registry-user": {
    kind: "string",
    help: "Registry user (etcd auth); each service's mesher should have its own.",
  },
  "registry-password": {
    kind: "string",
    help: "Password of --registry-user (prefer MESHER_REGISTRY_PASSWORD).",
  },
  "registry-prefix": {
    kind: "string",
    def: "",
    help: "Key prefix of the service layout (<prefix>/services/...).",
  },
  "registry-timeout": { kind: "duration", def: 2_000, help: "Deadline of one registry request." },
  "embedded-registry": {
    kind: "bool",
    def: false,
    help: "Start a one-member registry-node as a child process (local development).",
  },
  "data-dir": { kind: "string", def: "./mesher-data", help: "Disk cache, and the embedded registry's data." },
  // The local app.
  service: { kind: "string", help: "Name of the local app's service; absent: the mesher registers nothing." },
  "instance-id": { kind: "string", help: "Instance id (default: <hostname>-<app-port>)." },
  "app-address": { kind: "string", def: "127.0.0.1", help: "Where the local app listens." },
  "app-port": { kind: "int", min: 1, max: 65535, help: "Port of the local app." },
  "advertise-address": {
    kind: "string",
    help: "Address other meshers reach this instance at (default: the inbound listener's host).",
  },
  protocol: { kind: "string", def: "http", choices: ["http", "grpc", "h2c"], help: "The app's protocol." },
  zone: { kind: "string", help: "The zone this instance runs in (zone-aware routing)." },
  version: { kind: "string", help: "The app's version (policy subsets)." },
  tags: { kind: "list", def: [], help: "Tags, comma separated (policy subsets)." },
  weight: { kind: "int", def: 100, min: 0, max: 10_000, help: "Relative weight for weighted balancers." },
  "lease-ttl": { kind: "duration", def: 10_000, help: "TTL of the registration lease." },
  // Health checks of the local app.
  "health-check": {
    kind: "string",
    def: "tcp",
    help: "How to check the app: none, tcp, grpc, or http:<path> (e.g. http:/healthz).",
  },
  "health-interval": { kind: "duration", def: 1_000, help: "Time between health checks." },
  "health-timeout": { kind: "duration", def: 1_000, help: "Deadline of one health check." },
  "health-unhealthy-threshold": {
    kind: "int",
    def: 3,
    min: 1,
    max: 100,
    help: "Failures in a row that take the instance out.",
  },
  "health-healthy-threshold": {
    kind: "int",
    def: 2,
    min: 1,
    max: 100,
    help: "Successes in a row that put it back.",
  },
  // Listeners.
  "outbound-listen": {
    kind: "addr",
    def: "127.0.0.1:15001",
    help: "The local app's proxy: HTTP/1.1 and cleartext HTTP/2 (gRPC) on one port.",
  },
  "inbound-listen": {
    kind: "addr",
    def: "",
    help: "Port in front of the local app that other meshers call (empty: calls go to the app directly).",
  },
  "admin-listen": {
    kind: "addr",
    def: "127.0.0.1:15000",
    help: "Admin API: /healthz, /readyz, /metrics, /v1/...",
  },
  "bridge-listen": {
    kind: "addr",
    def: "",
    help: "HTTP/JSON-RPC bridge for apps without an SDK (empty: off).",
  },
  // Calls.
  "drain-timeout": {
    kind: "duration",
    def: 10_000,
    help: "On SIGTERM, how long in-flight calls may finish.",
  },
  "max-retry-body-bytes": {
    kind: "int",
    def: 65_536,
    min: 0,
    max: 16 << 20,
    help: "Request bodies up to this size are buffered so the call can be retried.",
  },
  "auth-tokens": {
    kind: "bool",
    def: false,
    help: "Sign outbound calls and require valid caller tokens inbound (keys under <prefix>/mesh/keys/).",
  },
  "stale-threshold": {
    kind: "duration",
    def: 5_000,
    help: "Registry slower than this counts as degraded; routing goes on from the last known state.",
  },
  // Mutual TLS between meshers.
  "tls-cert": {
    kind: "string",
    help: "PEM certificate of this instance (CN: its service). With --tls-key and --tls-ca: the inbound port speaks TLS, asks callers for certificates, and outbound calls to TLS instances present it.",
  },
  "tls-key": { kind: "string", help: "PEM private key of --tls-cert." },
  "tls-ca": { kind: "string", help: "PEM CA that signs the mesh's certificates (callers and instances)." },
  // Remediation hooks.
  webhooks: {
    kind: "list",
    def: [],
    help: "URLs told (signed POST) when a breaker opens or instances run low.",
  },
  "webhook-secret": { kind: "string", help: "HMAC-SHA256 key signing webhook bodies (X-Mesher-Signature)." },
  "webhook-min-instances": {
    kind: "int",
    def: 1,
    min: 0,
    max: 1_000_000,
    help: "Fire when a routed service has fewer healthy instances.",
  },
  "webhook-registry-latency": {
    kind: "duration",
    def: 1_000,
    help: "Fire when registry latency rises above this.",
  },
  "log-level": {
    kind: "string",
    def: "info",
    choices: ["trace", "debug", "info", "warn", "error", "fatal", "silent"],
    help: "Log level.",
  },
} as const satisfies Record<string, Spec>;

export type OptionName = keyof typeof OPTIONS;

type ValueOf<S> = S extends { kind: "int" | "duration" }
  ? number
  : S extends { kind: "bool" }
    ? boolean
    : S extends { kind: "list" }
      ? string[]
      : string;

export type MesherConfig = {
  -readonly [K in OptionName]: (typeof OPTIONS)[K] extends { def: unknown }
    ? ValueOf<(typeof OPTIONS)[K]>
    : ValueOf<(typeof OPTIONS)[K]> | undefined;
};

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/;
const UNIT: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/** `where` names the source in errors: "--weight", "environment MESHER_WEIGHT", "config file key weight". */
function convert(where: string, spec: Spec, raw: unknown): unknown {
  switch (spec.kind) {
    case "bool":
      if (typeof raw === "boolean") return raw;
      if (raw === "true" || raw === "1" || raw === "") return true;
      if (raw === "false" || raw === "0") return false;
      throw new ConfigError(`${where}: want true or false, got ${JSON.stringify(raw)}`);
    case "int": {
      const n = typeof raw === "number" ? raw : /^-?\d+$/.test(String(raw)) ? Number(raw) : Number.NaN;
      if (!Number.isInteger(n))
        throw new ConfigError(`${where}: want an integer, got ${JSON.stringify(raw)}`);
      if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) {
        throw new ConfigError(`${where}: ${n} is out of range ${spec.min}..${spec.max}`);
      }
      return n;
    }
    case "duration": {
      if (typeof raw === "number" && raw >= 0) return raw;
      const m = DURATION.exec(String(raw));
      if (m === null)
        throw new ConfigError(`${where}: want a duration like 500ms, 2s or 1m, got ${JSON.stringify(raw)}`);
      return Math.round(Number(m[1]) * UNIT[m[2] ?? "ms"]!);
    }
    case "list":
      if (Array.isArray(raw)) return raw.map(String);
      return String(raw)
        .split(",")
        .map((s) => s.trim())
        .filter((s) => s !== "");
    case "addr": {
      const s = String(raw);
      if (s !== "" && !/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/.test(s)) {
        throw new ConfigError(`${where}: want host:port, got ${JSON.stringify(raw)}`);
      }
      return s;
    }
    case "string": {
      if (typeof raw === "object" && raw !== null) throw new ConfigError(`${where}: want a string`);
      const s = String(raw);
      if (spec.choices !== undefined && !spec.choices.includes(s)) {
        throw new ConfigError(`${where}: want one of ${spec.choices.join(", ")}, got ${JSON.stringify(s)}`);
      }
      return s;
    }
  }
}

function envName(option: string): string {
  return `MESHER_${option.toUpperCase().replaceAll("-", "_")}`;
}

/** Parses `--name=value`, `--name value` and bare boolean `--name`. Returns the positionals too. */
export function parseFlags(argv: readonly string[]): { flags: Map<string, unknown>; positionals: string[] } {
  const flags = new Map<string, unknown>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("--")) {
      positionals.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
    const spec = (OPTIONS as Record<string, Spec>)[name];
    if (spec === undefined) throw new ConfigError(`unknown flag --${name}`);
    let value: unknown;
    if (eq >= 0) value = a.slice(eq + 1);
    else if (spec.kind === "bool")
      value = argv[i + 1] === "true" || argv[i + 1] === "false" ? argv[++i] : true;
    else {
      if (i + 1 >= argv.length) throw new ConfigError(`flag --${name} needs a value`);
      value = argv[++i];
    }
    flags.set(name, convert(`--${name}`, spec, value));
  }
  return { flags, positionals };
}

/** The configuration from flags, environment and YAML file (flags win, then environment). */
export function loadConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): MesherConfig {
  const { flags, positionals } = parseFlags(argv);
  if (positionals.length > 0) throw new ConfigError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const specs = OPTIONS as Record<string, Spec>;
  const known = new Set(Object.keys(specs).map(envName));
  for (const k of Object.keys(env)) {
    if (k.startsWith("MESHER_") && !known.has(k)) throw new ConfigError(`unknown environment variable ${k}`);
  }
  const configPath = (flags.get("config") as string | undefined) ?? env.MESHER_CONFIG;
  let file: Record<string, unknown> = {};
  if (configPath !== undefined) {
    let text: string;
    try {
      text = readFileSync(configPath, "utf8");
    } catch (err) {
      throw new ConfigError(`config file ${configPath}: ${(err as Error).message}`);
    }
    let doc: unknown;
    try {
      doc = parseYaml(text);
    } catch (err) {
      throw new ConfigError(`config file ${configPath}: not valid YAML: ${(err as Error).message}`);
    }
    if (doc !== null && doc !== undefined) {
      if (typeof doc !== "object" || Array.isArray(doc))
        throw new ConfigError(`config file ${configPath}: want a mapping`);
      file = doc as Record<string, unknown>;
    }
    for (const k of Object.keys(file)) {
      if (specs[k] === undefined || k === "config")
        throw new ConfigError(`config file ${configPath}: unknown key ${k}`);
    }
  }
  const out: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(specs)) {
    if (flags.has(name)) out[name] = flags.get(name);
    else if (env[envName(name)] !== undefined)
      out[name] = convert(`environment ${envName(name)}`, spec, env[envName(name)]);
    else if (name in file) out[name] = convert(`config file ${configPath} key ${name}`, spec, file[name]);
    else if (spec.def !== undefined)
      out[name] = spec.kind === "list" ? [...(spec.def as string[])] : spec.def;
  }
  const cfg = out as MesherConfig;
  if (cfg.service !== undefined && cfg["app-port"] === undefined) {
    throw new ConfigError("--service needs --app-port (the port the local app listens on)");
  }
  const tls = [cfg["tls-cert"], cfg["tls-key"], cfg["tls-ca"]].filter((x) => x !== undefined).length;
  if (tls !== 0 && tls !== 3) throw new ConfigError("--tls-cert, --tls-key and --tls-ca go together");
  const hc = cfg["health-check"];
  if (!(hc === "none" || hc === "tcp" || hc === "grpc" || /^http:\/\S*$/.test(hc))) {
    throw new ConfigError(`--health-check: want none, tcp, grpc or http:/<path>, got ${JSON.stringify(hc)}`);
  }
  return cfg;
}

export function splitAddr(addr: string): { host: string; port: number } {
  const i = addr.lastIndexOf(":");
  const host = addr.slice(0, i).replace(/^\[(.*)\]$/, "$1");
  return { host, port: Number(addr.slice(i + 1)) };
}

/** The flags part of `mesher --help`, from the table. */
export function flagsHelp(): string {
  const lines: string[] = [];
  for (const [name, spec] of Object.entries(OPTIONS as Record<string, Spec>)) {
    const def =
      spec.def === undefined || (Array.isArray(spec.def) && spec.def.length === 0) || spec.def === ""
        ? ""
        : ` (default ${spec.kind === "duration" ? `${spec.def}ms` : String(spec.def)})`;
    lines.push(`  --${name}\n        ${spec.help}${def} [${envName(name)}]`);
  }
  return lines.join("\n");
}
