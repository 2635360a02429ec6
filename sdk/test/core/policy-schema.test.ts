// The JSON Schema file is the source of truth; the core embeds a copy (policy-schema.ts) so it
// needs no file I/O and survives the build. These tests keep the two, the limits and the
// validator in agreement. REGMESH_REWRITE=1 regenerates the embedded copy from the file.
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Ajv2020 } from "ajv/dist/2020.js";
import { describe, expect, it } from "vitest";
import * as limits from "../../src/core/limits.js";
import { validatePolicy } from "../../src/core/policy.js";
import { POLICY_SCHEMA } from "../../src/core/policy-schema.js";

const here = new URL(".", import.meta.url).pathname;
const schemaPath = join(here, "../../schema/policy.schema.json");
const embeddedPath = join(here, "../../src/core/policy-schema.ts");
const fixtures = join(here, "fixtures");
const schemaFile = JSON.parse(readFileSync(schemaPath, "utf8"));

function generated(schema: unknown): string {
  return [
    "// GENERATED from sdk/schema/policy.schema.json: do not edit. The schema file is the source of",
    "// truth; regenerate with `REGMESH_REWRITE=1 npx vitest run --project unit sdk/test/core/policy-schema.test.ts`",
    "// (then `npx biome format --write sdk/src/core/policy-schema.ts`). Embedded rather than read",
    "// with node:fs so the pure core can use it and it survives the build; this test fails when",
    "// this copy and the JSON file differ.",
    "",
    `export const POLICY_SCHEMA = ${JSON.stringify(schema, null, 2)} as const;`,
    "",
  ].join("\n");
}

describe("policy schema", () => {
  it("the embedded copy equals sdk/schema/policy.schema.json", () => {
    if (process.env.REGMESH_REWRITE === "1") {
      // The module imported above is the old copy; the next run checks the new one.
      writeFileSync(embeddedPath, generated(schemaFile));
      return;
    }
    expect(POLICY_SCHEMA).toEqual(schemaFile);
  });

  it("compiles under ajv's strict mode (draft 2020-12)", () => {
    const ajv = new Ajv2020({ strict: true, strictRequired: false });
    expect(() => ajv.compile(schemaFile)).not.toThrow();
  });

  it("repeats the bounds in limits.ts", () => {
    const d = schemaFile.$defs;
    expect(schemaFile.properties.routes.maxItems).toBe(limits.POLICY_ROUTES_MAX);
    expect(schemaFile.properties.subsets.maxItems).toBe(limits.POLICY_SUBSETS_MAX);
    expect(schemaFile.properties.allowedCallers.maxItems).toBe(limits.POLICY_CALLERS_MAX);
    expect(d.serviceName.maxLength).toBe(limits.SERVICE_NAME_LENGTH_MAX);
    expect(d.name.maxLength).toBe(limits.POLICY_NAME_LENGTH_MAX);
    expect(d.route.properties.split.maxItems).toBe(limits.POLICY_SPLITS_PER_ROUTE_MAX);
    expect(d.match.properties.headers.maxItems).toBe(limits.POLICY_HEADER_MATCHES_PER_ROUTE_MAX);
    expect(d.headerMatch.properties.regex.maxLength).toBe(limits.POLICY_REGEX_LENGTH_MAX);
    expect(d.retries.properties.attempts.maximum).toBe(limits.POLICY_RETRY_ATTEMPTS_MAX);
    expect(d.timeoutMs.maximum).toBe(limits.POLICY_TIMEOUT_MS_MAX);
    expect(d.shortString.maxLength).toBe(limits.POLICY_STRING_LENGTH_MAX);
  });
});

describe("schema and validator agree on the fixtures", () => {
  const ajv = new Ajv2020({ allErrors: true, strict: true, strictRequired: false });
  const bySchema = ajv.compile(schemaFile);
  const expected: Record<string, string[]> = JSON.parse(
    readFileSync(join(fixtures, "expected-errors.json"), "utf8"),
  );
  const files = (dir: string) => readdirSync(join(fixtures, dir)).map((f) => `${dir}/${f}`);
  const load = (f: string) => JSON.parse(readFileSync(join(fixtures, f), "utf8"));

  it.each(files("valid"))("%s: the schema accepts it and so does validatePolicy", (f) => {
    expect(bySchema(load(f)), JSON.stringify(bySchema.errors)).toBe(true);
    expect(validatePolicy(load(f))).toMatchObject({ ok: true });
  });

  it.each(files("invalid"))("%s: the schema rejects it and validatePolicy names the field", (f) => {
    expect(bySchema(load(f))).toBe(false);
    const r = validatePolicy(load(f));
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.errors.map((e) => `${e.path}: ${e.message}`)).toEqual(expected[f]);
  });

  it.each(files("semantic"))("%s: the schema accepts it, the semantic checks reject it", (f) => {
    expect(bySchema(load(f))).toBe(true);
    const r = validatePolicy(load(f));
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.errors.map((e) => `${e.path}: ${e.message}`)).toEqual(expected[f]);
  });

  it("every invalid fixture has expected errors written down", () => {
    expect(Object.keys(expected).sort()).toEqual([...files("invalid"), ...files("semantic")].sort());
  });
});
