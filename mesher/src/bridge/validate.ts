// Input checks for the bridge's operations: pure functions from parsed JSON to typed values,
// throwing a BridgeError whose message starts with the bad field's name. Names follow the
// SDK's rules (checkName, checkInstance), so whatever the bridge accepts the SDK can decode.
// Unknown fields are refused rather than ignored: a typo ("ttlS") must not silently fall back
// to a default.

import {
  type CallOutcome,
  checkInstance,
  checkName,
  type Instance,
  type InstanceHealth,
  limits,
  type RouteRequest,
} from "@regmesh/sdk";
import { BridgeError, BridgeErrorCode, badField } from "./errors.js";
import { REGISTER_TTL_S_DEFAULT } from "./limits.js";

type Json = Record<string, unknown>;

export function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function qualify(prefix: string, field: string): string {
  return prefix === "" ? field : `${prefix}.${field}`;
}

/** The params object of a call; `what` names it in messages ("body", "params"). */
export function expectObject(v: unknown, what: string): Json {
  if (!isObject(v)) throw badField(what, "must be a JSON object");
  return v;
}

function refuseUnknown(o: Json, known: readonly string[], prefix: string): void {
  for (const k of Object.keys(o)) {
    if (!known.includes(k)) {
      throw badField(qualify(prefix, k), `unknown field (allowed: ${known.join(", ")})`);
    }
  }
}

export function serviceName(v: unknown, field = "service"): string {
  if (v === undefined) throw badField(field, "is required");
  const r = checkName("service", v);
  if (!r.ok) throw badField(field, r.error.message);
  return r.value;
}

export function instanceId(v: unknown, field = "id"): string {
  if (v === undefined) throw badField(field, "is required");
  const r = checkName("instance id", v);
  if (!r.ok) throw badField(field, r.error.message);
  return r.value;
}

function optString(o: Json, field: string, prefix: string): string | undefined {
  const v = o[field];
  if (v === undefined) return undefined;
  if (typeof v !== "string" || v.length === 0)
    throw badField(qualify(prefix, field), "must be a non-empty string");
  if (v.length > limits.POLICY_STRING_LENGTH_MAX) {
    throw badField(qualify(prefix, field), `must be at most ${limits.POLICY_STRING_LENGTH_MAX} characters`);
  }
  return v;
}

function integer(v: unknown, field: string, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v)) throw badField(field, "must be an integer");
  if (v < min || v > max) throw badField(field, `must be in ${min}..${max}`);
  return v;
}

const REGISTER_FIELDS = [
  "service",
  "id",
  "address",
  "port",
  "protocol",
  "zone",
  "version",
  "tags",
  "weight",
  "metadata",
  "health",
  "ttl",
] as const;

const HEALTH: readonly InstanceHealth[] = ["healthy", "unhealthy", "unknown"];

export interface RegisterInput {
  /** The instance; its id is "" when the caller let the bridge choose one. */
  instance: Instance;
  ttlS: number;
}

/** Checks a register body/params. `id` may be absent; the caller then generates one. */
export function registerInput(v: unknown, what: string, maxTtlS: number): RegisterInput {
  const o = expectObject(v, what);
  refuseUnknown(o, REGISTER_FIELDS, "");
  const service = serviceName(o.service);
  const id = o.id === undefined ? "" : instanceId(o.id);
  if (typeof o.address !== "string" || o.address.length === 0) {
    throw badField("address", o.address === undefined ? "is required" : "must be a non-empty string");
  }
  if (o.address.length > limits.POLICY_STRING_LENGTH_MAX) {
    throw badField("address", `must be at most ${limits.POLICY_STRING_LENGTH_MAX} characters`);
  }
  if (o.port === undefined) throw badField("port", "is required");
  const port = integer(o.port, "port", 1, 65_535);
  const protocol = optString(o, "protocol", "") ?? "http";
  const zone = optString(o, "zone", "");
  const version = optString(o, "version", "");
  const weight =
    o.weight === undefined
      ? limits.INSTANCE_WEIGHT_DEFAULT
      : integer(o.weight, "weight", 0, limits.INSTANCE_WEIGHT_MAX);
  let tags: string[] = [];
  if (o.tags !== undefined) {
    if (!Array.isArray(o.tags)) throw badField("tags", "must be an array of strings");
    if (o.tags.length > limits.INSTANCE_TAGS_MAX)
      throw badField("tags", `at most ${limits.INSTANCE_TAGS_MAX} tags`);
    tags = o.tags.map((t, i) => {
      if (typeof t !== "string" || t.length === 0) throw badField(`tags[${i}]`, "must be a non-empty string");
      return t;
    });
  }
  const metadata: Record<string, string> = {};
  if (o.metadata !== undefined) {
    if (!isObject(o.metadata)) throw badField("metadata", "must be an object of string values");
    const entries = Object.entries(o.metadata);
    if (entries.length > limits.INSTANCE_METADATA_ENTRIES_MAX) {
      throw badField("metadata", `at most ${limits.INSTANCE_METADATA_ENTRIES_MAX} entries`);
    }
    for (const [k, val] of entries) {
      if (typeof val !== "string") throw badField(`metadata.${k}`, "must be a string");
      metadata[k] = val;
    }
  }
  let health: InstanceHealth | undefined;
  if (o.health !== undefined) {
    if (!HEALTH.includes(o.health as InstanceHealth))
      throw badField("health", `must be one of ${HEALTH.join(", ")}`);
    health = o.health as InstanceHealth;
  }
  const ttlS =
    o.ttl === undefined ? Math.min(REGISTER_TTL_S_DEFAULT, maxTtlS) : integer(o.ttl, "ttl", 1, maxTtlS);

  const inst: { -readonly [K in keyof Instance]: Instance[K] } = {
    id,
    service,
    address: o.address,
    port,
    protocol,
    weight,
    tags,
    metadata,
  };
  if (zone !== undefined) inst.zone = zone;
  if (version !== undefined) inst.version = version;
  if (health !== undefined) inst.health = health;
  // The SDK's own check, with a placeholder id when the bridge is to choose one.
  const checked = checkInstance(id === "" ? { ...inst, id: "x" } : inst);
  if (!checked.ok) throw new BridgeError(BridgeErrorCode.BAD_REQUEST, checked.error.message);
  return { instance: inst, ttlS };
}

/** `{id}` params (JSON-RPC deregister, heartbeat). */
export function idParams(v: unknown): string {
  const o = expectObject(v, "params");
  refuseUnknown(o, ["id"], "");
  return instanceId(o.id);
}

/** `{service}` params (JSON-RPC resolve, getPolicy). */
export function serviceParams(v: unknown): string {
  const o = expectObject(v, "params");
  refuseUnknown(o, ["service"], "");
  return serviceName(o.service);
}

function headerMap(v: unknown, field: string): Record<string, string> {
  if (v === undefined) return {};
  if (!isObject(v)) throw badField(field, "must be an object of string values");
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== "string") throw badField(`${field}.${k}`, "must be a string");
    out[k.toLowerCase()] = val;
  }
  return out;
}

/** `{service, method?, path?, headers?, caller?, hashKey?}` (JSON-RPC pick). */
export function pickParams(v: unknown): { service: string; request: RouteRequest } {
  const o = expectObject(v, "params");
  refuseUnknown(o, ["service", "method", "path", "headers", "caller", "hashKey"], "");
  const service = serviceName(o.service);
  return { service, request: routeRequest(o, headerMap(o.headers, "headers")) };
}

/** A RouteRequest from `{method?, path?, caller?, hashKey?}` and headers already lower-cased. */
export function routeRequest(o: Json, headers: Record<string, string>): RouteRequest {
  const method = optString(o, "method", "") ?? "GET";
  const path = optString(o, "path", "") ?? "/";
  if (!path.startsWith("/")) throw badField("path", 'must start with "/"');
  const caller = o.caller === undefined ? headers["x-caller-service"] : serviceName(o.caller, "caller");
  const hashKey = optString(o, "hashKey", "");
  return { method, path, headers, caller, hashKey };
}

const OUTCOME_KINDS = ["response", "grpc", "connect-failure", "reset", "refused-stream", "timeout"] as const;

export function callOutcome(v: unknown, field: string): CallOutcome {
  if (!isObject(v)) throw badField(field, "must be an object with a kind");
  const kind = v.kind;
  switch (kind) {
    case "response":
      refuseUnknown(v, ["kind", "status"], field);
      return { kind, status: integer(v.status, `${field}.status`, 100, 599) };
    case "grpc":
      refuseUnknown(v, ["kind", "code"], field);
      return { kind, code: integer(v.code, `${field}.code`, 0, 16) };
    case "connect-failure":
    case "reset":
    case "refused-stream":
    case "timeout":
      refuseUnknown(v, ["kind"], field);
      return { kind };
    default:
      throw badField(`${field}.kind`, `must be one of ${OUTCOME_KINDS.join(", ")}`);
  }
}

export interface ReportInput {
  service: string;
  instanceId: string;
  outcome: CallOutcome;
  latencyMs: number | undefined;
}

/** `{service, instanceId, outcome, latencyMs?}` (JSON-RPC report, POST /v1/report). */
export function reportInput(v: unknown, what: string): ReportInput {
  const o = expectObject(v, what);
  refuseUnknown(o, ["service", "instanceId", "outcome", "latencyMs"], "");
  const service = serviceName(o.service);
  const id = instanceId(o.instanceId, "instanceId");
  if (o.outcome === undefined) throw badField("outcome", "is required");
  const outcome = callOutcome(o.outcome, "outcome");
  let latencyMs: number | undefined;
  if (o.latencyMs !== undefined) {
    if (typeof o.latencyMs !== "number" || !Number.isFinite(o.latencyMs) || o.latencyMs < 0) {
      throw badField("latencyMs", "must be a number >= 0");
    }
    latencyMs = o.latencyMs;
  }
  return { service, instanceId: id, outcome, latencyMs };
}
