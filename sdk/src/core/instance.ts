// The instance model and its registry encoding.
//
// Key layout (DESIGN.md "Key layout for services"):
//   <prefix>/services/<service>/<instance-id>  -> instance record (JSON)
//   <prefix>/policies/<service>                -> policy (JSON, see policy.ts)
//
// The value is a superset of the record etcd's Go naming package writes
// (go.etcd.io/etcd/client/v3/naming/endpoints, type Update):
//   {"Op":0,"Addr":"host:port","Metadata":<any JSON>}
// where Op 0 is endpoints.Add. Go gRPC clients using etcd's resolver read Addr and ignore the
// rest, so our services are discoverable from Go. Our fields live inside Metadata, one key per
// Instance field: protocol, zone, weight, version, tags, health, metadata (user labels).
// A record written by a Go process (Metadata null or foreign) still decodes, with defaults.
//
// Decoding never throws: a bad value in the registry must not kill a watch, so decode returns
// a Result whose error carries SDK_ERR_BAD_INSTANCE and the reason.

import { type Result, SdkError, SdkErrorCode } from "./errors.js";
import {
  INSTANCE_ID_LENGTH_MAX,
  INSTANCE_METADATA_ENTRIES_MAX,
  INSTANCE_TAGS_MAX,
  INSTANCE_VALUE_BYTES_MAX,
  INSTANCE_WEIGHT_DEFAULT,
  INSTANCE_WEIGHT_MAX,
  POLICY_STRING_LENGTH_MAX,
  SERVICE_NAME_LENGTH_MAX,
} from "./limits.js";

/** "unknown" is treated as healthy: absence of a health check is not evidence of failure. */
export type InstanceHealth = "healthy" | "unhealthy" | "unknown";

export interface Instance {
  readonly id: string;
  readonly service: string;
  /** Host name or IP address, without port or brackets. */
  readonly address: string;
  readonly port: number;
  /** "http", "grpc", "jsonrpc", ... Free-form; the shell decides what it can dial. */
  readonly protocol: string;
  readonly zone?: string;
  /** Integer in [0, INSTANCE_WEIGHT_MAX]; 0 drains the instance from weighted balancers. */
  readonly weight: number;
  readonly version?: string;
  readonly tags: readonly string[];
  readonly metadata: Readonly<Record<string, string>>;
  readonly health?: InstanceHealth;
}

/** etcd naming's endpoints.Operation: Add = 0, Delete = 1. Only Add is ever stored. */
export const NAMING_OP_ADD = 0;

/** What Instance fields become inside the naming record's Metadata. */
export interface InstanceMetadataJson {
  protocol: string;
  zone?: string;
  weight: number;
  version?: string;
  tags: string[];
  health?: InstanceHealth;
  metadata: Record<string, string>;
}

export interface NamingRecordJson {
  Op: number;
  Addr: string;
  Metadata: InstanceMetadataJson;
}

const DEFAULT_PROTOCOL = "http";
/** A record without our Metadata was written by etcd's Go naming manager: a gRPC endpoint. */
const FOREIGN_RECORD_PROTOCOL = "grpc";

// ---------------------------------------------------------------------------------------------
// Names and keys

/** A service name or an instance id: non-empty, bounded, no "/" and no control characters. */
export function checkName(kind: "service" | "instance id", name: unknown): Result<string> {
  const max = kind === "service" ? SERVICE_NAME_LENGTH_MAX : INSTANCE_ID_LENGTH_MAX;
  const bad = (why: string): Result<string> => ({
    ok: false,
    error: new SdkError(SdkErrorCode.BAD_NAME, `${kind} ${JSON.stringify(name)}: ${why}`),
  });
  if (typeof name !== "string") return bad("must be a string");
  if (name.length === 0) return bad("must not be empty");
  if (name.length > max) return bad(`must be at most ${max} characters`);
  if (name.includes("/")) return bad('must not contain "/" (it separates key parts)');
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point.
  if (/[\u0000-\u001f\u007f]/.test(name)) return bad("must not contain control characters");
  if (name === "." || name === "..") return bad('must not be "." or ".."');
  return { ok: true, value: name };
}

function mustName(kind: "service" | "instance id", name: string): string {
  const r = checkName(kind, name);
  if (!r.ok) throw r.error;
  return r.value;
}

/** Normalises a key prefix: no trailing "/" ("" is allowed and means the keyspace root). */
export function normalizePrefix(prefix: string): string {
  return prefix.replace(/\/+$/, "");
}

/** `<prefix>/services/` — range over it to list every instance of every service. */
export function servicesPrefix(prefix: string): string {
  return `${normalizePrefix(prefix)}/services/`;
}

/** `<prefix>/services/<service>/` — range/watch over it for one service's instances. */
export function serviceInstancesPrefix(prefix: string, service: string): string {
  return `${servicesPrefix(prefix)}${mustName("service", service)}/`;
}

/** `<prefix>/services/<service>/<id>`. Throws SDK_ERR_BAD_NAME on an invalid name (caller bug). */
export function instanceKey(prefix: string, service: string, id: string): string {
  return `${serviceInstancesPrefix(prefix, service)}${mustName("instance id", id)}`;
}

/** `<prefix>/policies/` — range/watch over it for every service's policy. */
export function policiesPrefix(prefix: string): string {
  return `${normalizePrefix(prefix)}/policies/`;
}

/** `<prefix>/policies/<service>`. */
export function policyKey(prefix: string, service: string): string {
  return `${policiesPrefix(prefix)}${mustName("service", service)}`;
}

export type ParsedKey =
  | { kind: "instance"; service: string; id: string }
  | { kind: "policy"; service: string };

/** Parses a key under `prefix`; anything else (including foreign keys) is SDK_ERR_BAD_KEY. */
export function parseKey(prefix: string, key: string): Result<ParsedKey> {
  const bad = (why: string): Result<ParsedKey> => ({
    ok: false,
    error: new SdkError(SdkErrorCode.BAD_KEY, `key ${JSON.stringify(key)}: ${why}`),
  });
  const services = servicesPrefix(prefix);
  const policies = policiesPrefix(prefix);
  if (key.startsWith(services)) {
    const rest = key.slice(services.length).split("/");
    if (rest.length !== 2) return bad("want <prefix>/services/<service>/<instance-id>");
    const service = checkName("service", rest[0]);
    if (!service.ok) return bad(service.error.message);
    const id = checkName("instance id", rest[1]);
    if (!id.ok) return bad(id.error.message);
    return { ok: true, value: { kind: "instance", service: service.value, id: id.value } };
  }
  if (key.startsWith(policies)) {
    const rest = key.slice(policies.length);
    const service = checkName("service", rest);
    if (!service.ok) return bad(service.error.message);
    return { ok: true, value: { kind: "policy", service: service.value } };
  }
  return bad(`not under ${JSON.stringify(services)} or ${JSON.stringify(policies)}`);
}

// ---------------------------------------------------------------------------------------------
// Addr: "host:port", with IPv6 literals in brackets as Go's net.JoinHostPort writes them.

export function joinHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

export function splitHostPort(addr: string): Result<{ host: string; port: number }> {
  const bad = (why: string): Result<{ host: string; port: number }> => ({
    ok: false,
    error: new SdkError(SdkErrorCode.BAD_INSTANCE, `Addr ${JSON.stringify(addr)}: ${why}`),
  });
  let host: string;
  let portText: string;
  if (addr.startsWith("[")) {
    const close = addr.indexOf("]");
    if (close < 0 || addr[close + 1] !== ":") return bad("want [ipv6]:port");
    host = addr.slice(1, close);
    portText = addr.slice(close + 2);
  } else {
    const colon = addr.lastIndexOf(":");
    if (colon < 0) return bad("missing port (want host:port)");
    host = addr.slice(0, colon);
    portText = addr.slice(colon + 1);
    if (host.includes(":")) return bad("IPv6 host must be in brackets");
  }
  if (host.length === 0) return bad("empty host");
  if (!/^[0-9]{1,5}$/.test(portText)) return bad("port must be a decimal number");
  const port = Number(portText);
  if (port < 1 || port > 65535) return bad("port must be in 1..65535");
  return { ok: true, value: { host, port } };
}

// ---------------------------------------------------------------------------------------------
// Codec

/** Checks an Instance built in code (e.g. by the registration shell) before it is written. */
export function checkInstance(inst: Instance): Result<Instance> {
  const bad = (why: string): Result<Instance> => ({
    ok: false,
    error: new SdkError(SdkErrorCode.BAD_INSTANCE, `instance ${JSON.stringify(inst.id)}: ${why}`),
  });
  const id = checkName("instance id", inst.id);
  if (!id.ok) return bad(id.error.message);
  const service = checkName("service", inst.service);
  if (!service.ok) return bad(service.error.message);
  if (typeof inst.address !== "string" || inst.address.length === 0) return bad("address must be non-empty");
  if (inst.address.length > POLICY_STRING_LENGTH_MAX) return bad("address is too long");
  if (!Number.isInteger(inst.port) || inst.port < 1 || inst.port > 65535)
    return bad("port must be in 1..65535");
  if (!Number.isInteger(inst.weight) || inst.weight < 0 || inst.weight > INSTANCE_WEIGHT_MAX) {
    return bad(`weight must be an integer in 0..${INSTANCE_WEIGHT_MAX}`);
  }
  if (typeof inst.protocol !== "string" || inst.protocol.length === 0)
    return bad("protocol must be non-empty");
  if (inst.tags.length > INSTANCE_TAGS_MAX) return bad(`at most ${INSTANCE_TAGS_MAX} tags`);
  if (Object.keys(inst.metadata).length > INSTANCE_METADATA_ENTRIES_MAX) {
    return bad(`at most ${INSTANCE_METADATA_ENTRIES_MAX} metadata entries`);
  }
  return { ok: true, value: inst };
}

/** The JSON value stored at instanceKey(prefix, inst.service, inst.id). Throws on a bad instance. */
export function encodeInstance(inst: Instance): string {
  const checked = checkInstance(inst);
  if (!checked.ok) throw checked.error;
  const md: InstanceMetadataJson = {
    protocol: inst.protocol,
    weight: inst.weight,
    tags: [...inst.tags],
    metadata: { ...inst.metadata },
  };
  if (inst.zone !== undefined) md.zone = inst.zone;
  if (inst.version !== undefined) md.version = inst.version;
  if (inst.health !== undefined) md.health = inst.health;
  const record: NamingRecordJson = {
    Op: NAMING_OP_ADD,
    Addr: joinHostPort(inst.address, inst.port),
    Metadata: md,
  };
  const text = JSON.stringify(record);
  if (text.length > INSTANCE_VALUE_BYTES_MAX) {
    throw new SdkError(
      SdkErrorCode.LIMIT_EXCEEDED,
      `instance ${inst.id}: record exceeds ${INSTANCE_VALUE_BYTES_MAX} bytes`,
    );
  }
  return text;
}

const HEALTH_VALUES: ReadonlySet<string> = new Set(["healthy", "unhealthy", "unknown"]);

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Decodes the value at `<prefix>/services/<service>/<id>`. The service and id come from the
 * key (parseKey), never from the value, so a value cannot claim another service's name.
 */
export function decodeInstance(service: string, id: string, value: string | Uint8Array): Result<Instance> {
  const bad = (why: string): Result<Instance> => ({
    ok: false,
    error: new SdkError(SdkErrorCode.BAD_INSTANCE, `instance ${JSON.stringify(`${service}/${id}`)}: ${why}`),
  });
  const sname = checkName("service", service);
  if (!sname.ok) return bad(sname.error.message);
  const iname = checkName("instance id", id);
  if (!iname.ok) return bad(iname.error.message);
  if (value.length > INSTANCE_VALUE_BYTES_MAX) return bad(`value exceeds ${INSTANCE_VALUE_BYTES_MAX} bytes`);
  let text: string;
  if (typeof value === "string") {
    text = value;
  } else {
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(value);
    } catch {
      return bad("value is not UTF-8");
    }
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return bad("value is not JSON");
  }
  if (!isPlainObject(json)) return bad("value must be a JSON object");
  // Go's encoding/json writes Op even when zero, but a missing Op also decodes as Add there.
  const op = json.Op ?? NAMING_OP_ADD;
  if (op !== NAMING_OP_ADD) return bad(`Op must be ${NAMING_OP_ADD} (Add), got ${JSON.stringify(op)}`);
  if (typeof json.Addr !== "string") return bad("Addr must be a string");
  const addr = splitHostPort(json.Addr);
  if (!addr.ok) return bad(addr.error.message);

  const md = json.Metadata;
  if (!isPlainObject(md)) {
    // A record from etcd's Go naming manager: Metadata is any JSON value, often null.
    return {
      ok: true,
      value: {
        id,
        service,
        address: addr.value.host,
        port: addr.value.port,
        protocol: FOREIGN_RECORD_PROTOCOL,
        weight: INSTANCE_WEIGHT_DEFAULT,
        tags: [],
        metadata: {},
      },
    };
  }
  const protocol = md.protocol ?? DEFAULT_PROTOCOL;
  if (typeof protocol !== "string" || protocol.length === 0)
    return bad("Metadata.protocol must be a non-empty string");
  const weight = md.weight ?? INSTANCE_WEIGHT_DEFAULT;
  if (typeof weight !== "number" || !Number.isInteger(weight) || weight < 0 || weight > INSTANCE_WEIGHT_MAX) {
    return bad(`Metadata.weight must be an integer in 0..${INSTANCE_WEIGHT_MAX}`);
  }
  for (const f of ["zone", "version"] as const) {
    if (md[f] !== undefined && typeof md[f] !== "string") return bad(`Metadata.${f} must be a string`);
  }
  const tags = md.tags ?? [];
  if (!Array.isArray(tags) || !tags.every((t) => typeof t === "string")) {
    return bad("Metadata.tags must be an array of strings");
  }
  if (tags.length > INSTANCE_TAGS_MAX) return bad(`Metadata.tags: at most ${INSTANCE_TAGS_MAX}`);
  const health = md.health;
  if (health !== undefined && (typeof health !== "string" || !HEALTH_VALUES.has(health))) {
    return bad('Metadata.health must be "healthy", "unhealthy" or "unknown"');
  }
  const userMd = md.metadata ?? {};
  if (!isPlainObject(userMd) || !Object.values(userMd).every((v) => typeof v === "string")) {
    return bad("Metadata.metadata must be an object of strings");
  }
  if (Object.keys(userMd).length > INSTANCE_METADATA_ENTRIES_MAX) {
    return bad(`Metadata.metadata: at most ${INSTANCE_METADATA_ENTRIES_MAX} entries`);
  }
  const inst: {
    -readonly [K in keyof Instance]: Instance[K];
  } = {
    id,
    service,
    address: addr.value.host,
    port: addr.value.port,
    protocol,
    weight,
    tags: tags as string[],
    metadata: { ...(userMd as Record<string, string>) },
  };
  if (typeof md.zone === "string") inst.zone = md.zone;
  if (typeof md.version === "string") inst.version = md.version;
  if (health !== undefined) inst.health = health as InstanceHealth;
  return { ok: true, value: inst };
}

/** Decodes a key/value pair from a range or watch event. Foreign keys give SDK_ERR_BAD_KEY. */
export function decodeInstanceEntry(
  prefix: string,
  key: string,
  value: string | Uint8Array,
): Result<Instance> {
  const parsed = parseKey(prefix, key);
  if (!parsed.ok) return parsed;
  if (parsed.value.kind !== "instance") {
    return {
      ok: false,
      error: new SdkError(SdkErrorCode.BAD_KEY, `key ${JSON.stringify(key)}: not an instance key`),
    };
  }
  return decodeInstance(parsed.value.service, parsed.value.id, value);
}

/** Instances that may take traffic by their own report; ejection and breakers are separate. */
export function isReportedHealthy(inst: Instance): boolean {
  return inst.health !== "unhealthy";
}
