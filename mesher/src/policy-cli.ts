// `mesher policy validate|apply|diff|rollback|history <service> [file]`: the operator's side of
// DESIGN.md "Policy: `<prefix>/policies/<service>` -> JSON, validated before it is written".
//
// - validate: the JSON Schema and the semantic rules (validatePolicy with the service name),
//   offline. Every error is one line, `<path>: <message>`.
// - apply: validate, read the key's mod revision R (0 when absent), then PolicyStore.put with
//   compare-and-set on R, so a write that lands between our read and our write makes us lose
//   with SDK_ERR_CONFLICT instead of silently overwriting it. `--expect-revision N` sets R to a
//   revision the operator saw (e.g. printed by `diff`), which closes the gap between review
//   and apply.
// - diff: a JSON-pointer change list from the policy in force to the file; exit codes as
//   diff(1): 0 equal, 1 different, 2 trouble.
// - history: the key's earlier versions, found by reading the key at (mod revision - 1) until
//   the key did not exist or the revision was compacted (etcd keeps every revision until
//   compaction; api_guarantees "Revision").
// - rollback: writes an earlier version back (the one before the current, or the one in force
//   at --to-revision), validated first, with compare-and-set on the current mod revision.
//
// Exit codes: 0 success, 1 the operation failed (invalid policy, lost compare-and-set, registry
// error), 2 usage errors (and, for diff, any error). Output goes through the `stdout`/`stderr`
// callbacks, one line per call, each ending in "\n".

import { readFile } from "node:fs/promises";
import { extname } from "node:path";
import type { mvccpb } from "@regmesh/proto";
import {
  checkName,
  defaultPolicy,
  EtcdClient,
  EtcdError,
  EtcdErrorCode,
  limits,
  type Policy,
  type PolicyError,
  PolicyStore,
  parsePolicy,
  policyKey,
  silentLogger,
  validatePolicy,
} from "@regmesh/sdk";
import { parseDocument } from "yaml";
import { OPTIONS } from "./config.js";

/** A policy file larger than this is refused before it is parsed (the stored form is capped too). */
const POLICY_FILE_BYTES_MAX = 4 * limits.POLICY_BYTES_MAX;
/** Versions `history` lists unless --limit says otherwise, and the most it will list. */
const HISTORY_VERSIONS_DEFAULT = 20;
const HISTORY_VERSIONS_MAX = 1_000;
/** Deadline of one registry request, and of all retries of one, for a command-line tool. */
const REQUEST_TIMEOUT_MS_DEFAULT = 2_000;
const RETRY_DEADLINE_MS_DEFAULT = 5_000;
/** `diff` prints values longer than this shortened, so one line stays one line. */
const DIFF_VALUE_CHARS_MAX = 200;

export const POLICY_USAGE =
  "usage: mesher policy validate|apply|diff <service> <file> | history|rollback <service> " +
  "[--expect-revision N] [--to-revision N] [--limit N]";

export interface PolicyCommandOptions {
  /** Registry endpoints, as host:port or http://host:port (the mesher's --registry-endpoints). */
  endpoints: string[];
  /** Key prefix (--registry-prefix); policies live at `<prefix>/policies/<service>`. */
  prefix: string;
  user?: string;
  password?: string;
  /** Deadline of one registry request (--registry-timeout). */
  requestTimeoutMs?: number;
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  /** Tests only: runs between reading the key's revision and the compare-and-set write. */
  beforeWrite?: () => Promise<void>;
}

/** Flags of `mesher policy` that take a value; everything else belongs to the mesher's config. */
const POLICY_FLAGS: ReadonlySet<string> = new Set(["expect-revision", "to-revision", "limit"]);

/**
 * Splits the words after `mesher policy` into the policy command's own words (subcommand,
 * positionals, --expect-revision/--to-revision/--limit) and the mesher's configuration flags
 * (--registry-endpoints, --registry-prefix, --config, ...), which the CLI gives to loadConfig.
 */
export function splitPolicyArgs(argv: readonly string[]): { policyArgs: string[]; configArgs: string[] } {
  const policyArgs: string[] = [];
  const configArgs: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("--")) {
      policyArgs.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
    const own = POLICY_FLAGS.has(name) || name === "help";
    const out = own ? policyArgs : configArgs;
    out.push(a);
    // `--name value`: the value goes with its flag, except after a boolean mesher flag (which
    // takes only an explicit true/false, as parseFlags reads it) and --help.
    const next = argv[i + 1];
    if (eq >= 0 || name === "help" || next === undefined || next.startsWith("--")) continue;
    const spec = (OPTIONS as Record<string, { kind: string }>)[name];
    if (own || spec === undefined || spec.kind !== "bool" || next === "true" || next === "false") {
      out.push(next);
      i += 1;
    }
  }
  return { policyArgs, configArgs };
}

class UsageError extends Error {}

interface Parsed {
  command: string;
  positionals: string[];
  expectRevision?: bigint;
  toRevision?: bigint;
  limit?: number;
}

function parseArgs(args: readonly string[]): Parsed {
  const rest = args[0] === "policy" ? args.slice(1) : [...args];
  const positionals: string[] = [];
  const out: Omit<Parsed, "command" | "positionals"> = {};
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (!a.startsWith("--") || a === "--") {
      if (a !== "--") positionals.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
    if (name === "help") throw new UsageError("");
    if (!POLICY_FLAGS.has(name)) throw new UsageError(`unknown flag --${name}`);
    let value: string;
    if (eq >= 0) value = a.slice(eq + 1);
    else if (i + 1 < rest.length) value = rest[++i]!;
    else throw new UsageError(`flag --${name} needs a value`);
    if (!/^[0-9]{1,19}$/.test(value))
      throw new UsageError(`--${name}: want a non-negative integer, got ${JSON.stringify(value)}`);
    if (name === "expect-revision") out.expectRevision = BigInt(value);
    else if (name === "to-revision") {
      if (BigInt(value) < 1n) throw new UsageError("--to-revision: revisions start at 1");
      out.toRevision = BigInt(value);
    } else {
      const n = Number(value);
      if (n < 1 || n > HISTORY_VERSIONS_MAX) throw new UsageError(`--limit: want 1..${HISTORY_VERSIONS_MAX}`);
      out.limit = n;
    }
  }
  const command = positionals.shift();
  if (command === undefined) throw new UsageError("missing subcommand");
  const want: Record<string, [number, string]> = {
    validate: [2, "<service> <file>"],
    apply: [2, "<service> <file>"],
    diff: [2, "<service> <file>"],
    history: [1, "<service>"],
    rollback: [1, "<service>"],
  };
  const w = want[command];
  if (w === undefined) throw new UsageError(`unknown subcommand ${JSON.stringify(command)}`);
  if (positionals.length !== w[0]) throw new UsageError(`${command} takes ${w[1]}`);
  const allowed: Record<string, readonly (keyof typeof out)[]> = {
    validate: [],
    apply: ["expectRevision"],
    diff: [],
    history: ["limit"],
    rollback: ["toRevision", "expectRevision"],
  };
  for (const k of Object.keys(out) as (keyof typeof out)[]) {
    if (!allowed[command]!.includes(k)) {
      throw new UsageError(`${command} does not take --${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`);
    }
  }
  const service = checkName("service", positionals[0]);
  if (!service.ok) throw new UsageError(service.error.message);
  return { command, positionals, ...out };
}

/** Runs `mesher policy ...` (`args` are the words after `policy`). Resolves with the exit code. */
export async function runPolicyCommand(args: string[], opts: PolicyCommandOptions): Promise<number> {
  let p: Parsed;
  try {
    p = parseArgs(args);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    if (err.message !== "") opts.stderr(`mesher policy: ${err.message}\n`);
    opts.stderr(`${POLICY_USAGE}\n`);
    return 2;
  }
  const failCode = p.command === "diff" ? 2 : 1;
  const service = p.positionals[0]!;
  if (p.command === "validate") return validateCommand(service, p.positionals[1]!, opts);

  let registry: Registry;
  try {
    registry = new Registry(opts);
  } catch (err) {
    opts.stderr(`mesher policy ${p.command}: ${(err as Error).message}\n`);
    return 2;
  }
  try {
    switch (p.command) {
      case "apply":
        return await applyCommand(registry, service, p.positionals[1]!, p.expectRevision, opts);
      case "diff":
        return await diffCommand(registry, service, p.positionals[1]!, opts);
      case "history":
        return await historyCommand(registry, service, p.limit ?? HISTORY_VERSIONS_DEFAULT, opts);
      default:
        return await rollbackCommand(registry, service, p.toRevision, p.expectRevision, opts);
    }
  } catch (err) {
    opts.stderr(`mesher policy ${p.command}: ${describeError(err)}\n`);
    return failCode;
  } finally {
    await registry.close();
  }
}

function describeError(err: unknown): string {
  if (err instanceof EtcdError) {
    if (err.code === EtcdErrorCode.UNAVAILABLE || err.code === EtcdErrorCode.TIMEOUT) {
      return `registry unavailable: ${err.message}`;
    }
    return `${err.message} (${err.code})`;
  }
  return err instanceof Error ? err.message : String(err);
}

// ---------------------------------------------------------------------------------------------
// Files

type FileResult = { ok: true; value: unknown } | { ok: false; message: string };

/** Reads a policy file: JSON for `.json`, YAML (a superset of JSON) for anything else. */
async function readPolicyFile(path: string): Promise<FileResult> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return { ok: false, message: `${path}: ${e.code === "ENOENT" ? "no such file" : e.message}` };
  }
  if (buf.length > POLICY_FILE_BYTES_MAX) {
    return { ok: false, message: `${path}: larger than ${POLICY_FILE_BYTES_MAX} bytes` };
  }
  const text = buf.toString("utf8");
  if (extname(path).toLowerCase() === ".json") {
    try {
      return { ok: true, value: JSON.parse(text) };
    } catch (err) {
      return { ok: false, message: `${path}: not valid JSON: ${(err as Error).message}` };
    }
  }
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  const first = doc.errors[0];
  if (first !== undefined) {
    return { ok: false, message: `${path}: not valid YAML: ${first.message.split("\n")[0]}` };
  }
  // Through JSON and back: the registry stores JSON, so validate exactly what would be written
  // (YAML-only values such as .inf become null and are then refused by the schema, by name).
  const js = doc.toJS({ maxAliasCount: 100 }) as unknown;
  return { ok: true, value: js === undefined ? null : JSON.parse(JSON.stringify(js) ?? "null") };
}

type Checked = { ok: true; policy: Policy } | { ok: false; errors: PolicyError[] };

/** validatePolicy plus the size the stored form will have (a reader refuses larger values). */
function check(value: unknown, service: string): Checked {
  const v = validatePolicy(value, { service });
  if (!v.ok) return v;
  const bytes = Buffer.byteLength(JSON.stringify(v.policy, null, 2));
  if (bytes > limits.POLICY_BYTES_MAX) {
    return {
      ok: false,
      errors: [
        { path: "policy", message: `must be at most ${limits.POLICY_BYTES_MAX} bytes as JSON (is ${bytes})` },
      ],
    };
  }
  return v;
}

/** Reads and checks a file; prints what is wrong and returns undefined when it is not a valid policy. */
async function loadValid(
  service: string,
  path: string,
  opts: PolicyCommandOptions,
  what: string,
): Promise<Policy | undefined> {
  const f = await readPolicyFile(path);
  if (!f.ok) {
    opts.stderr(`mesher policy ${what}: ${f.message}\n`);
    return undefined;
  }
  const v = check(f.value, service);
  if (!v.ok) {
    for (const e of v.errors) opts.stderr(`${e.path}: ${e.message}\n`);
    opts.stderr(`mesher policy ${what}: ${path} is not a valid policy for ${service}; nothing written\n`);
    return undefined;
  }
  return v.policy;
}

async function validateCommand(service: string, path: string, opts: PolicyCommandOptions): Promise<number> {
  const f = await readPolicyFile(path);
  if (!f.ok) {
    opts.stderr(`mesher policy validate: ${f.message}\n`);
    return 1;
  }
  const v = check(f.value, service);
  if (!v.ok) {
    for (const e of v.errors) opts.stderr(`${e.path}: ${e.message}\n`);
    return 1;
  }
  opts.stdout("valid\n");
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Registry

/** What the key holds at some revision. */
interface Version {
  modRevision: bigint;
  createRevision: bigint;
  version: bigint;
  value: Buffer;
}

type AtRevision = { kind: "value"; v: Version } | { kind: "absent" } | { kind: "compacted" };

function endpointOf(url: string): string {
  const m = /^([a-z][a-z0-9+.-]*):\/\/([^/]+)\/?$/i.exec(url.trim());
  if (m === null) return url.trim();
  if (m[1]!.toLowerCase() === "https") {
    throw new Error(`${url}: TLS registry endpoints are not supported by mesher policy`);
  }
  if (m[1]!.toLowerCase() !== "http") throw new Error(`${url}: want http://host:port or host:port`);
  return m[2]!;
}

class Registry {
  readonly client: EtcdClient;
  readonly store: PolicyStore;
  readonly prefix: string;

  constructor(opts: PolicyCommandOptions) {
    const endpoints = opts.endpoints.map(endpointOf).filter((e) => e !== "");
    if (endpoints.length === 0) throw new Error("no registry endpoints (--registry-endpoints)");
    if ((opts.user === undefined) !== (opts.password === undefined)) {
      throw new Error("--registry-user and --registry-password go together");
    }
    const requestTimeoutMs = opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS_DEFAULT;
    this.client = new EtcdClient({
      endpoints,
      auth: opts.user === undefined ? undefined : { username: opts.user, password: opts.password! },
      requestTimeoutMs,
      retryDeadlineMs: Math.max(RETRY_DEADLINE_MS_DEFAULT, requestTimeoutMs),
      logger: silentLogger,
    });
    this.prefix = opts.prefix;
    this.store = new PolicyStore({ client: this.client, prefix: opts.prefix, logger: silentLogger });
  }

  key(service: string): string {
    return policyKey(this.prefix, service);
  }

  /** The key now, with the store's revision at the time of the read. */
  async current(service: string): Promise<{ v: Version | undefined; revision: bigint }> {
    const r = await this.client.range(this.key(service));
    const kv = r.kvs[0];
    return { v: kv === undefined ? undefined : toVersion(kv), revision: r.header?.revision ?? 0n };
  }

  /** The key as it was at `revision`. */
  async at(service: string, revision: bigint): Promise<AtRevision> {
    try {
      const r = await this.client.range(this.key(service), { revision });
      const kv = r.kvs[0];
      return kv === undefined ? { kind: "absent" } : { kind: "value", v: toVersion(kv) };
    } catch (err) {
      if (err instanceof EtcdError && err.code === EtcdErrorCode.COMPACTED) return { kind: "compacted" };
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.store.close();
    this.client.close();
  }
}

function toVersion(kv: mvccpb.KeyValue): Version {
  return {
    modRevision: kv.modRevision,
    createRevision: kv.createRevision,
    version: kv.version,
    value: Buffer.from(kv.value),
  };
}

/** Writes with compare-and-set; a lost race is printed and gives undefined. */
async function casWrite(
  registry: Registry,
  service: string,
  policy: Policy,
  expect: bigint,
  opts: PolicyCommandOptions,
  what: string,
): Promise<bigint | undefined> {
  await opts.beforeWrite?.();
  try {
    return await registry.store.put(service, policy, expect);
  } catch (err) {
    if (err instanceof EtcdError && err.code === EtcdErrorCode.CONFLICT) {
      opts.stderr(`mesher policy ${what}: ${err.message} (${err.code})\n`);
      return undefined;
    }
    throw err;
  }
}

async function applyCommand(
  registry: Registry,
  service: string,
  path: string,
  expectRevision: bigint | undefined,
  opts: PolicyCommandOptions,
): Promise<number> {
  const policy = await loadValid(service, path, opts, "apply");
  if (policy === undefined) return 1;
  const cur = await registry.current(service);
  const expect = expectRevision ?? cur.v?.modRevision ?? 0n;
  if (expectRevision === undefined && cur.v !== undefined && sameJson(storedJson(cur.v), policy)) {
    opts.stdout(`policy for ${service} unchanged at revision ${cur.v.modRevision}\n`);
    return 0;
  }
  const rev = await casWrite(registry, service, policy, expect, opts, "apply");
  if (rev === undefined) return 1;
  opts.stdout(`applied policy for ${service} at revision ${rev} (was ${describeRev(expect)})\n`);
  return 0;
}

function describeRev(r: bigint): string {
  return r === 0n ? "none" : `revision ${r}`;
}

// ---------------------------------------------------------------------------------------------
// diff

export type PolicyChange =
  | { op: "+"; pointer: string; to: unknown }
  | { op: "-"; pointer: string; from: unknown }
  | { op: "~"; pointer: string; from: unknown; to: unknown };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function escapePointer(token: string): string {
  return token.replace(/~/g, "~0").replace(/\//g, "~1");
}

/** Every change that turns JSON value `from` into `to`, as JSON pointers (RFC 6901), in document order. */
export function policyChanges(from: unknown, to: unknown, pointer = ""): PolicyChange[] {
  if (isObject(from) && isObject(to)) {
    const out: PolicyChange[] = [];
    const keys = [...Object.keys(from), ...Object.keys(to).filter((k) => !Object.hasOwn(from, k))];
    for (const k of keys) {
      const p = `${pointer}/${escapePointer(k)}`;
      if (!Object.hasOwn(to, k)) out.push({ op: "-", pointer: p, from: from[k] });
      else if (!Object.hasOwn(from, k)) out.push({ op: "+", pointer: p, to: to[k] });
      else out.push(...policyChanges(from[k], to[k], p));
    }
    return out;
  }
  if (Array.isArray(from) && Array.isArray(to)) {
    const out: PolicyChange[] = [];
    const n = Math.max(from.length, to.length);
    for (let i = 0; i < n; i++) {
      const p = `${pointer}/${i}`;
      if (i >= to.length) out.push({ op: "-", pointer: p, from: from[i] });
      else if (i >= from.length) out.push({ op: "+", pointer: p, to: to[i] });
      else out.push(...policyChanges(from[i], to[i], p));
    }
    return out;
  }
  return sameJson(from, to) ? [] : [{ op: "~", pointer: pointer === "" ? "/" : pointer, from, to }];
}

function short(v: unknown): string {
  const s = JSON.stringify(v) ?? "null";
  return s.length <= DIFF_VALUE_CHARS_MAX ? s : `${s.slice(0, DIFF_VALUE_CHARS_MAX - 3)}...`;
}

export function formatChange(c: PolicyChange): string {
  switch (c.op) {
    case "+":
      return `+ ${c.pointer}: ${short(c.to)}`;
    case "-":
      return `- ${c.pointer}`;
    default:
      return `~ ${c.pointer}: ${short(c.from)} -> ${short(c.to)}`;
  }
}

function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b))
    return a.length === b.length && a.every((x, i) => sameJson(x, b[i]));
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return (
      ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && sameJson(a[k], b[k]))
    );
  }
  return false;
}

/** The stored value as JSON, or undefined when it is not JSON. */
function storedJson(v: Version): unknown {
  try {
    return JSON.parse(v.value.toString("utf8"));
  } catch {
    return undefined;
  }
}

async function diffCommand(
  registry: Registry,
  service: string,
  path: string,
  opts: PolicyCommandOptions,
): Promise<number> {
  const f = await readPolicyFile(path);
  if (!f.ok) {
    opts.stderr(`mesher policy diff: ${f.message}\n`);
    return 2;
  }
  const v = check(f.value, service);
  if (!v.ok) {
    for (const e of v.errors) opts.stderr(`${e.path}: ${e.message}\n`);
    opts.stderr(`mesher policy diff: ${path} is not a valid policy for ${service}\n`);
    return 2;
  }
  const cur = await registry.current(service);
  let from: unknown;
  if (cur.v === undefined) {
    from = defaultPolicy(service);
    opts.stdout(`current: no policy stored for ${service} (the default policy is in force); revision 0\n`);
  } else {
    const parsed = parsePolicy(cur.v.value, { service });
    from = storedJson(cur.v) ?? null;
    opts.stdout(`current: revision ${cur.v.modRevision} (version ${cur.v.version})\n`);
    if (!parsed.ok) {
      opts.stdout(
        `note: the stored value is not a valid policy (${parsed.errors.map((e) => `${e.path}: ${e.message}`).join("; ")}); ` +
          "readers keep their last good one\n",
      );
    }
  }
  const changes = policyChanges(from, v.policy);
  if (changes.length === 0) {
    opts.stdout("no changes\n");
    return 0;
  }
  for (const c of changes) opts.stdout(`${formatChange(c)}\n`);
  opts.stdout(
    `${changes.length} change${changes.length === 1 ? "" : "s"}; apply with --expect-revision ${cur.v?.modRevision ?? 0n} ` +
      "to refuse if the policy changes before then\n",
  );
  return 1;
}

// ---------------------------------------------------------------------------------------------
// history

/** One line about a stored version: its size and the settings that matter most. */
export function summarize(value: Buffer | string, service: string): string {
  const parsed = parsePolicy(value, { service });
  if (!parsed.ok) {
    const e = parsed.errors[0]!;
    return `INVALID (${e.path}: ${e.message}${parsed.errors.length > 1 ? `; +${parsed.errors.length - 1} more` : ""})`;
  }
  const p = parsed.policy;
  const parts: string[] = [];
  if (p.subsets?.length) parts.push(`subsets=${p.subsets.map((s) => s.name).join(",")}`);
  if (p.routes?.length) {
    const split = (p.routes[p.routes.length - 1]?.split ?? [])
      .map((s) => `${s.subset}:${s.weight}`)
      .join("/");
    parts.push(`routes=${p.routes.length}${split === "" ? "" : ` (last: ${split})`}`);
  }
  if (p.loadBalancer) parts.push(`lb=${p.loadBalancer.kind}`);
  if (p.timeoutMs !== undefined) parts.push(`timeoutMs=${p.timeoutMs}`);
  if (p.retries) parts.push(`retries=${p.retries.attempts}`);
  if (p.breaker) parts.push("breaker");
  if (p.outlierDetection) parts.push("outlierDetection");
  if (p.rateLimit) parts.push(`rateLimit=${p.rateLimit.requestsPerSecond}/s`);
  if (p.description !== undefined) parts.push(JSON.stringify(p.description.slice(0, 60)));
  return parts.length === 0 ? "defaults" : parts.join(" ");
}

async function historyCommand(
  registry: Registry,
  service: string,
  limit: number,
  opts: PolicyCommandOptions,
): Promise<number> {
  const cur = await registry.current(service);
  if (cur.v === undefined) {
    opts.stdout(`no policy stored for ${service} (the default policy is in force)\n`);
    return 0;
  }
  opts.stdout(`policy history of ${service}, newest first (revision, version, summary):\n`);
  let v: Version = cur.v;
  let listed = 0;
  for (;;) {
    const mark = listed === 0 ? "*" : " ";
    opts.stdout(`${mark} ${v.modRevision}\tv${v.version}\t${summarize(v.value, service)}\n`);
    listed += 1;
    if (v.version <= 1n) {
      opts.stdout(`(created at revision ${v.createRevision}; no earlier version)\n`);
      return 0;
    }
    if (listed >= limit) {
      opts.stdout(`(stopped after ${limit} versions; --limit N lists more)\n`);
      return 0;
    }
    const before = await registry.at(service, v.modRevision - 1n);
    if (before.kind === "compacted") {
      opts.stdout(
        `(earlier versions are compacted: revision ${v.modRevision - 1n} is no longer readable; ` +
          `${v.version - 1n} older version${v.version - 1n === 1n ? "" : "s"} not shown)\n`,
      );
      return 0;
    }
    if (before.kind === "absent") {
      opts.stdout(`(the key did not exist at revision ${v.modRevision - 1n}; no earlier version)\n`);
      return 0;
    }
    v = before.v;
  }
}

// ---------------------------------------------------------------------------------------------
// rollback

async function rollbackCommand(
  registry: Registry,
  service: string,
  toRevision: bigint | undefined,
  expectRevision: bigint | undefined,
  opts: PolicyCommandOptions,
): Promise<number> {
  const fail = (msg: string): number => {
    opts.stderr(`mesher policy rollback: ${msg}\n`);
    return 1;
  };
  const cur = await registry.current(service);
  if (cur.v === undefined) return fail(`no policy stored for ${service}; nothing to roll back`);
  const readAt = toRevision ?? cur.v.modRevision - 1n;
  if (readAt > cur.revision) {
    return fail(`revision ${readAt} is in the future (the registry is at revision ${cur.revision})`);
  }
  const target = readAt < 1n ? ({ kind: "absent" } as const) : await registry.at(service, readAt);
  if (target.kind === "compacted") {
    return fail(
      `revision ${readAt} is compacted; the ${toRevision === undefined ? "previous version" : "version asked for"} ` +
        "can no longer be read (mesher policy history shows what is left)",
    );
  }
  if (target.kind === "absent") {
    return fail(
      toRevision === undefined
        ? `no earlier version of ${service}'s policy (the key did not exist at revision ${readAt})`
        : `no policy for ${service} at revision ${readAt}`,
    );
  }
  const parsed = parsePolicy(target.v.value, { service });
  if (!parsed.ok) {
    for (const e of parsed.errors) opts.stderr(`${e.path}: ${e.message}\n`);
    return fail(`the version of revision ${target.v.modRevision} is not a valid policy; nothing written`);
  }
  if (target.v.modRevision === cur.v.modRevision || sameJson(storedJson(cur.v), parsed.policy)) {
    opts.stdout(
      `the version of revision ${target.v.modRevision} is already in force (revision ${cur.v.modRevision}); nothing written\n`,
    );
    return 0;
  }
  const rev = await casWrite(
    registry,
    service,
    parsed.policy,
    expectRevision ?? cur.v.modRevision,
    opts,
    "rollback",
  );
  if (rev === undefined) return 1;
  opts.stdout(
    `rolled back ${service} to the version of revision ${target.v.modRevision}: now revision ${rev} (was ${cur.v.modRevision})\n`,
  );
  return 0;
}
