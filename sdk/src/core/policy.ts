// The governance policy of one service, stored at <prefix>/policies/<service>: route rules
// that send matching requests to weighted subsets (canary, blue-green), the balancer, timeouts,
// retries and their budget, breaker and ejection thresholds, rate limit and the callers allowed.
//
// validatePolicy runs two passes: the JSON Schema (sdk/schema/policy.schema.json, embedded as
// POLICY_SCHEMA) through ajv, then the semantic rules a schema cannot state (referenced subsets
// exist, split weights sum to more than 0, regexes compile, names unique, per-try timeout within
// the overall timeout). Every error names the field, e.g. `routes[0].split[1].weight: must be
// >= 0`, and the result is a value: a bad policy read from the registry must not throw inside a
// watch. The policy is validated before it is written and again when it is read (DESIGN.md).

import { Ajv2020, type ErrorObject, type ValidateFunction } from "ajv/dist/2020.js";
import type { BalancerKind } from "./balancer.js";
import { SdkError, SdkErrorCode } from "./errors.js";
import { POLICY_BYTES_MAX, POLICY_REGEX_LENGTH_MAX } from "./limits.js";
import { POLICY_SCHEMA } from "./policy-schema.js";

export interface Subset {
  readonly name: string;
  readonly version?: string;
  readonly zone?: string;
  /** An instance must carry all of these tags. */
  readonly tags?: readonly string[];
}

export type HeaderMatch = {
  /** Compared case-insensitively (HTTP header names are). */
  readonly name: string;
  /** Inverts the result, as Envoy's invert_match. */
  readonly invert?: boolean;
} & (
  | { readonly exact: string }
  | { readonly prefix: string }
  /** Must match the whole value, as Envoy's safe_regex matcher does. */
  | { readonly regex: string }
  | { readonly present: boolean }
);

export type PathMatch = { readonly exact: string } | { readonly prefix: string };

export interface RouteMatch {
  readonly headers?: readonly HeaderMatch[];
  readonly path?: PathMatch;
  readonly methods?: readonly string[];
  readonly callers?: readonly string[];
}

export interface SplitEntry {
  readonly subset: string;
  readonly weight: number;
}

export interface RouteRule {
  readonly name?: string;
  readonly match?: RouteMatch;
  readonly split: readonly SplitEntry[];
  readonly timeoutMs?: number;
}

export type RetryCondition =
  | "5xx"
  | "gateway-error"
  | "reset"
  | "connect-failure"
  | "refused-stream"
  | "retriable-status-codes"
  | "timeout"
  | "unavailable"
  | "resource-exhausted";

export interface RetryPolicy {
  readonly attempts: number;
  readonly perTryTimeoutMs?: number;
  readonly retryOn?: readonly RetryCondition[];
  readonly retriableStatusCodes?: readonly number[];
  readonly budget?: {
    readonly ratio?: number;
    readonly minRetriesPerSecond?: number;
    readonly windowMs?: number;
  };
}

export interface BreakerPolicy {
  readonly errorThresholdPercentage?: number;
  readonly volumeThreshold?: number;
  readonly resetTimeoutMs?: number;
  readonly rollingWindowMs?: number;
}

export interface OutlierDetectionPolicy {
  readonly consecutiveFailures?: number;
  readonly intervalMs?: number;
  readonly baseEjectionTimeMs?: number;
  readonly maxEjectionTimeMs?: number;
  readonly maxEjectionPercent?: number;
  readonly successRate?: {
    readonly minimumHosts?: number;
    readonly requestVolume?: number;
    readonly stdevFactor?: number;
  };
  readonly failurePercentage?: {
    readonly threshold?: number;
    readonly minimumHosts?: number;
    readonly requestVolume?: number;
  };
}

export interface LoadBalancerPolicy {
  readonly kind: BalancerKind;
  readonly hashKey?: { readonly header: string };
  readonly zoneAware?: { readonly enabled: boolean; readonly minHealthyFraction?: number };
}

export interface Policy {
  readonly schemaVersion: 1;
  readonly service: string;
  readonly description?: string;
  readonly subsets?: readonly Subset[];
  readonly routes?: readonly RouteRule[];
  readonly loadBalancer?: LoadBalancerPolicy;
  readonly protectThreshold?: number;
  readonly timeoutMs?: number;
  readonly retries?: RetryPolicy;
  readonly breaker?: BreakerPolicy;
  readonly outlierDetection?: OutlierDetectionPolicy;
  readonly rateLimit?: { readonly requestsPerSecond: number; readonly burst?: number };
  readonly allowedCallers?: readonly string[];
}

export interface PolicyError {
  /** e.g. `routes[0].split[1].weight`; `policy` for the value as a whole. */
  readonly path: string;
  readonly message: string;
}

export type PolicyValidation = { ok: true; policy: Policy } | { ok: false; errors: PolicyError[] };

export interface ValidateOptions {
  /** The service named by the key the policy is stored under; the policy must name the same. */
  readonly service?: string;
}

// ---------------------------------------------------------------------------------------------
// Schema pass

let compiled: ValidateFunction | undefined;

/** Compiles the embedded schema once. strictRequired is off: oneOf branches use `required` alone. */
function schemaValidator(): ValidateFunction {
  if (compiled === undefined) {
    const ajv = new Ajv2020({ allErrors: true, strict: true, strictRequired: false, verbose: true });
    compiled = ajv.compile(POLICY_SCHEMA as unknown as Record<string, unknown>);
  }
  return compiled;
}

/** JSON pointer `/routes/0/split/1/weight` -> `routes[0].split[1].weight`. */
export function pointerToPath(pointer: string, extra?: string): string {
  const parts = pointer === "" ? [] : pointer.slice(1).split("/");
  if (extra !== undefined) parts.push(extra);
  let out = "";
  for (const raw of parts) {
    const p = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    if (/^[0-9]+$/.test(p)) out += `[${p}]`;
    else if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(p)) out += out === "" ? p : `.${p}`;
    else out += `[${JSON.stringify(p)}]`;
  }
  return out === "" ? "policy" : out;
}

function describeOneOf(e: ErrorObject): string {
  const branches = Array.isArray(e.schema) ? (e.schema as unknown[]) : [];
  const names: string[] = [];
  for (const b of branches) {
    const req = (b as { required?: unknown }).required;
    if (Array.isArray(req) && req.length === 1 && typeof req[0] === "string") names.push(req[0]);
    else return "must match exactly one of the allowed forms";
  }
  return `must set exactly one of ${names.join(", ")}`;
}

/** Plain words for the schema's patterns (keyed by the pattern source in policy.schema.json). */
const PATTERN_MESSAGES: Readonly<Record<string, string>> = {
  "^[^/\\u0000-\\u001f\\u007f]+$": 'must not contain "/" or control characters',
  "^[A-Za-z0-9][A-Za-z0-9._-]*$":
    'must start with a letter or digit and contain only letters, digits, ".", "_" and "-"',
  "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$": "must be an HTTP header name (an RFC 9110 token)",
  "^/": 'must start with "/"',
  "^[A-Z]{1,16}$": "must be an upper-case HTTP method",
};

/** Turns ajv's errors into `{path, message}`, one per problem, naming the field. */
export function schemaErrors(errors: readonly ErrorObject[]): PolicyError[] {
  const oneOfs = errors.filter((e) => e.keyword === "oneOf");
  const out: PolicyError[] = [];
  const seen = new Set<string>();
  for (const e of errors) {
    // The per-branch errors of a failed oneOf say nothing useful on their own.
    if (
      oneOfs.some(
        (o) => o !== e && o.instancePath === e.instancePath && e.schemaPath.startsWith(`${o.schemaPath}/`),
      )
    ) {
      continue;
    }
    let err: PolicyError;
    switch (e.keyword) {
      case "required":
        err = {
          path: pointerToPath(e.instancePath, String(e.params.missingProperty)),
          message: "is required",
        };
        break;
      case "additionalProperties":
        err = {
          path: pointerToPath(e.instancePath, String(e.params.additionalProperty)),
          message: "is not allowed",
        };
        break;
      case "oneOf":
        err = { path: pointerToPath(e.instancePath), message: describeOneOf(e) };
        break;
      case "enum":
        err = {
          path: pointerToPath(e.instancePath),
          message: `must be one of ${(e.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(", ")}`,
        };
        break;
      case "pattern":
        err = {
          path: pointerToPath(e.instancePath),
          message: PATTERN_MESSAGES[String(e.params.pattern)] ?? e.message ?? "is invalid",
        };
        break;
      case "const":
        err = {
          path: pointerToPath(e.instancePath),
          message: `must be ${JSON.stringify(e.params.allowedValue)}`,
        };
        break;
      default:
        err = { path: pointerToPath(e.instancePath), message: e.message ?? "is invalid" };
    }
    const key = `${err.path}\u0000${err.message}`;
    if (!seen.has(key)) {
      seen.add(key);
      out.push(err);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Semantic pass

/**
 * Why a header regex is refused, or undefined. JavaScript regexes backtrack, so beyond the
 * length cap we refuse the two shapes behind exponential blow-up (RE2, which Envoy uses, has
 * neither): a quantified group that itself contains a quantifier, like `(a+)+`, and
 * backreferences. Polynomial cases that remain are bounded by HEADER_VALUE_MATCH_LENGTH_MAX.
 */
export function regexProblem(source: string): string | undefined {
  if (source.length > POLICY_REGEX_LENGTH_MAX) return `must be at most ${POLICY_REGEX_LENGTH_MAX} characters`;
  const groups: boolean[] = [false]; // per open group: does it contain a repeating quantifier?
  const repeats = (i: number) => source[i] === "*" || source[i] === "+" || source[i] === "{";
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === "\\") {
      const next = source[i + 1] ?? "";
      if (/[1-9]/.test(next) || (next === "k" && source[i + 2] === "<")) return "must not use backreferences";
      i += 1;
    } else if (c === "[") {
      for (i += 1; i < source.length && source[i] !== "]"; i++) if (source[i] === "\\") i += 1;
    } else if (c === "(") {
      groups.push(false);
    } else if (c === ")") {
      const inner = groups.length > 1 ? groups.pop()! : false;
      const quantified = repeats(i + 1);
      if (inner && quantified)
        return "must not nest repeating quantifiers, e.g. (a+)+ (exponential backtracking)";
      if (inner || quantified) groups[groups.length - 1] = true;
    } else if (repeats(i)) {
      groups[groups.length - 1] = true;
    }
  }
  try {
    new RegExp(source, "u");
  } catch (e) {
    return `does not compile: ${e instanceof Error ? e.message : String(e)}`;
  }
  return undefined;
}

/** Compiles a header regex with full-match semantics (Envoy's safe_regex matches the whole value). */
export function compileHeaderRegex(source: string): RegExp {
  const problem = regexProblem(source);
  if (problem !== undefined) throw new SdkError(SdkErrorCode.INVALID_POLICY, `regex ${problem}`);
  return new RegExp(`^(?:${source})$`, "u");
}

function semanticErrors(p: Policy, options: ValidateOptions): PolicyError[] {
  const errors: PolicyError[] = [];
  if (options.service !== undefined && p.service !== options.service) {
    errors.push({
      path: "service",
      message: `must be ${JSON.stringify(options.service)} (the key's service)`,
    });
  }
  const subsetNames = new Set<string>();
  (p.subsets ?? []).forEach((s, i) => {
    if (subsetNames.has(s.name))
      errors.push({ path: `subsets[${i}].name`, message: `duplicate subset ${JSON.stringify(s.name)}` });
    subsetNames.add(s.name);
  });
  const routeNames = new Set<string>();
  (p.routes ?? []).forEach((r, i) => {
    if (r.name !== undefined) {
      if (routeNames.has(r.name))
        errors.push({ path: `routes[${i}].name`, message: `duplicate route ${JSON.stringify(r.name)}` });
      routeNames.add(r.name);
    }
    let sum = 0;
    r.split.forEach((s, j) => {
      sum += s.weight;
      if (!subsetNames.has(s.subset)) {
        errors.push({
          path: `routes[${i}].split[${j}].subset`,
          message: `unknown subset ${JSON.stringify(s.subset)}`,
        });
      }
    });
    if (sum <= 0) errors.push({ path: `routes[${i}].split`, message: "weights must sum to more than 0" });
    (r.match?.headers ?? []).forEach((h, k) => {
      const problem = "regex" in h ? regexProblem(h.regex) : undefined;
      if (problem !== undefined)
        errors.push({ path: `routes[${i}].match.headers[${k}].regex`, message: problem });
    });
    if (
      p.retries?.perTryTimeoutMs !== undefined &&
      r.timeoutMs !== undefined &&
      p.retries.perTryTimeoutMs > r.timeoutMs
    ) {
      errors.push({ path: `routes[${i}].timeoutMs`, message: "must be >= retries.perTryTimeoutMs" });
    }
  });
  if (
    p.retries?.perTryTimeoutMs !== undefined &&
    p.timeoutMs !== undefined &&
    p.retries.perTryTimeoutMs > p.timeoutMs
  ) {
    errors.push({ path: "retries.perTryTimeoutMs", message: "must be <= timeoutMs" });
  }
  const od = p.outlierDetection;
  if (
    od?.baseEjectionTimeMs !== undefined &&
    od.maxEjectionTimeMs !== undefined &&
    od.maxEjectionTimeMs < od.baseEjectionTimeMs
  ) {
    errors.push({
      path: "outlierDetection.maxEjectionTimeMs",
      message: "must be >= outlierDetection.baseEjectionTimeMs",
    });
  }
  const hashKinds: readonly string[] = ["ring-hash", "maglev"];
  if (p.loadBalancer?.hashKey !== undefined && !hashKinds.includes(p.loadBalancer.kind)) {
    errors.push({ path: "loadBalancer.hashKey", message: "is only used by ring-hash and maglev" });
  }
  if (
    p.retries?.retriableStatusCodes !== undefined &&
    !(p.retries.retryOn ?? []).includes("retriable-status-codes")
  ) {
    errors.push({
      path: "retries.retriableStatusCodes",
      message: 'needs "retriable-status-codes" in retries.retryOn',
    });
  }
  return errors;
}

/** Validates a parsed JSON value. Never throws. */
export function validatePolicy(json: unknown, options: ValidateOptions = {}): PolicyValidation {
  const validate = schemaValidator();
  if (!validate(json)) return { ok: false, errors: schemaErrors(validate.errors ?? []) };
  const policy = json as Policy;
  const errors = semanticErrors(policy, options);
  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, policy };
}

/** Parses and validates the registry value (text or bytes). Never throws. */
export function parsePolicy(value: string | Uint8Array, options: ValidateOptions = {}): PolicyValidation {
  if (value.length > POLICY_BYTES_MAX) {
    return { ok: false, errors: [{ path: "policy", message: `must be at most ${POLICY_BYTES_MAX} bytes` }] };
  }
  let text: string;
  try {
    text = typeof value === "string" ? value : new TextDecoder("utf-8", { fatal: true }).decode(value);
  } catch {
    return { ok: false, errors: [{ path: "policy", message: "is not UTF-8" }] };
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return {
      ok: false,
      errors: [{ path: "policy", message: `is not JSON: ${e instanceof Error ? e.message : String(e)}` }],
    };
  }
  return validatePolicy(json, options);
}

/** An SdkError (SDK_ERR_INVALID_POLICY) for shells that throw, with every error as a detail. */
export function policyError(errors: readonly PolicyError[]): SdkError {
  const details = errors.map((e) => `${e.path}: ${e.message}`);
  return new SdkError(SdkErrorCode.INVALID_POLICY, `invalid policy: ${details.join("; ")}`, details);
}

/** The policy a service has when none is stored: one route to every instance, defaults elsewhere. */
export function defaultPolicy(service: string): Policy {
  return { schemaVersion: 1, service };
}
