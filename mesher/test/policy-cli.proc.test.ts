// `mesher policy validate|apply|diff|history|rollback` against a real etcd: what each prints and
// exits with, that an invalid file writes nothing (checked with etcdctl), that a write landing
// between our read and our compare-and-set makes us lose, and that history and rollback walk the
// key's mod revisions back until the key did not exist or the revision is compacted.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Cluster, runEtcdctl, startEtcd, tempDir } from "@regmesh/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatChange, policyChanges, runPolicyCommand, splitPolicyArgs } from "../src/policy-cli.js";

let cluster: Cluster;
let dir: { path: string; remove(): void };

beforeAll(async () => {
  cluster = await startEtcd({ members: 1 });
  dir = tempDir("mesher-policy-cli-");
});
afterAll(async () => {
  await cluster?.stop({ remove: true });
  dir?.remove();
});

let seq = 0;
function fresh(): { prefix: string; key: string; service: string } {
  seq += 1;
  return { prefix: `/pc${seq}`, key: `/pc${seq}/policies/orders`, service: "orders" };
}

interface Ran {
  code: number;
  out: string;
  err: string;
}

async function policy(
  args: string[],
  o: { prefix?: string; endpoints?: string[]; beforeWrite?: () => Promise<void> } = {},
): Promise<Ran> {
  let out = "";
  let err = "";
  const code = await runPolicyCommand(args, {
    endpoints: o.endpoints ?? cluster.endpoints.map((e) => `http://${e}`),
    prefix: o.prefix ?? "",
    stdout: (s) => (out += s),
    stderr: (s) => (err += s),
    beforeWrite: o.beforeWrite,
  });
  return { code, out, err };
}

function file(name: string, text: string): string {
  const p = join(dir.path, name);
  writeFileSync(p, text);
  return p;
}

const canaryYaml = (weight: number, extra = "") => `
schemaVersion: 1
service: orders
description: canary ${weight}%
subsets:
  - name: stable
    version: v1
  - name: canary
    version: v2
routes:
  - split:
      - subset: stable
        weight: ${100 - weight}
      - subset: canary
        weight: ${weight}
${extra}`;

async function etcdGet(
  key: string,
): Promise<{ value: string | undefined; modRevision: number; revision: number }> {
  const r = await runEtcdctl(["get", key, "-w", "json"], { endpoints: cluster.endpoints });
  expect(r.code, r.stderr).toBe(0);
  const j = JSON.parse(r.stdout) as {
    header: { revision: number };
    kvs?: { value: string; mod_revision: number }[];
  };
  const kv = j.kvs?.[0];
  return {
    value: kv === undefined ? undefined : Buffer.from(kv.value, "base64").toString("utf8"),
    modRevision: kv?.mod_revision ?? 0,
    revision: j.header.revision,
  };
}

function appliedRevision(r: Ran): number {
  const m = /at revision (\d+)/.exec(r.out);
  expect(m, `${r.out}${r.err}`).not.toBeNull();
  return Number(m![1]);
}

describe("mesher policy: usage", () => {
  it("exits 2 with a usage line on usage errors", async () => {
    for (const args of [
      [],
      ["frobnicate", "orders"],
      ["apply", "orders"],
      ["validate", "orders", "a", "b"],
      ["history", "orders", "--limit"],
      ["history", "orders", "--nope", "1"],
      ["apply", "orders", "f.yaml", "--to-revision", "3"],
      ["rollback", "orders", "--to-revision", "x"],
      ["history", "a/b"],
    ]) {
      const r = await policy(args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.err).toContain("usage: mesher policy");
      expect(r.err.trim().split("\n").length).toBeLessThanOrEqual(2);
    }
  });

  it("splits its own flags from the mesher's configuration flags", () => {
    expect(
      splitPolicyArgs([
        "apply",
        "orders",
        "p.yaml",
        "--expect-revision",
        "7",
        "--registry-endpoints",
        "http://127.0.0.1:2379",
        "--embedded-registry",
        "--registry-prefix=/x",
      ]),
    ).toEqual({
      policyArgs: ["apply", "orders", "p.yaml", "--expect-revision", "7"],
      configArgs: [
        "--registry-endpoints",
        "http://127.0.0.1:2379",
        "--embedded-registry",
        "--registry-prefix=/x",
      ],
    });
  });
});

describe("mesher policy validate", () => {
  it("says valid for a good YAML or JSON file, without a registry", async () => {
    const dead = { endpoints: ["127.0.0.1:1"] };
    const y = await policy(["validate", "orders", file("good.yaml", canaryYaml(10))], dead);
    expect(y).toEqual({ code: 0, out: "valid\n", err: "" });
    const j = await policy(
      ["validate", "orders", file("good.json", JSON.stringify({ schemaVersion: 1, service: "orders" }))],
      dead,
    );
    expect(j.code).toBe(0);
  });

  it("prints every error as <path>: <message> and exits 1", async () => {
    const bad = file(
      "bad.yaml",
      canaryYaml(10).replace("weight: 90", "weight: -5").replace("subset: canary", "subset: nosuch"),
    );
    const r = await policy(["validate", "orders", bad]);
    expect(r.code).toBe(1);
    expect(r.out).toBe("");
    expect(r.err).toMatch(/^routes\[0\]\.split\[0\]\.weight: must be >= 0$/m);
    const other = await policy(["validate", "payments", file("good2.yaml", canaryYaml(10))]);
    expect(other.code).toBe(1);
    expect(other.err).toContain('service: must be "payments"');
    const sem = await policy([
      "validate",
      "orders",
      file("sem.yaml", canaryYaml(10).replace("subset: canary", "subset: nosuch")),
    ]);
    expect(sem.err).toMatch(/^routes\[0\]\.split\[1\]\.subset: unknown subset "nosuch"$/m);
  });

  it("refuses files that do not parse or do not exist, in one line", async () => {
    const j = await policy(["validate", "orders", file("broken.json", "{ nope")]);
    expect(j.code).toBe(1);
    expect(j.err).toMatch(/broken\.json: not valid JSON/);
    const y = await policy(["validate", "orders", file("broken.yaml", "a: [1, 2\nb: {")]);
    expect(y.code).toBe(1);
    expect(y.err).toMatch(/broken\.yaml: not valid YAML/);
    expect(y.err.trim().split("\n")).toHaveLength(1);
    const missing = await policy(["validate", "orders", join(dir.path, "absent.yaml")]);
    expect(missing.code).toBe(1);
    expect(missing.err).toContain("absent.yaml: no such file");
  });
});

describe("mesher policy apply", () => {
  it("writes with compare-and-set and prints the new revision", async () => {
    const { prefix, key } = fresh();
    const r1 = await policy(["apply", "orders", file("a1.yaml", canaryYaml(10))], { prefix });
    expect(r1.code, r1.err).toBe(0);
    const rev1 = appliedRevision(r1);
    expect(r1.out).toContain("(was none)");
    const got = await etcdGet(key);
    expect(got.modRevision).toBe(rev1);
    expect(JSON.parse(got.value!).routes[0].split[1]).toEqual({ subset: "canary", weight: 10 });

    const r2 = await policy(["apply", "orders", file("a2.yaml", canaryYaml(20))], { prefix });
    expect(r2.code).toBe(0);
    expect(appliedRevision(r2)).toBeGreaterThan(rev1);
    expect(r2.out).toContain(`(was revision ${rev1})`);

    const same = await policy(["apply", "orders", file("a2.yaml", canaryYaml(20))], { prefix });
    expect(same.code).toBe(0);
    expect(same.out).toContain("unchanged");
    expect((await etcdGet(key)).modRevision).toBe(appliedRevision(r2));
  });

  it("refuses an invalid file naming the bad field and writes nothing", async () => {
    const { prefix, key } = fresh();
    expect((await policy(["apply", "orders", file("ok.yaml", canaryYaml(10))], { prefix })).code).toBe(0);
    const before = await etcdGet(key);
    const r = await policy(
      ["apply", "orders", file("inv.yaml", canaryYaml(10, "retries:\n  attempts: -1\n"))],
      { prefix },
    );
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^retries\.attempts: /m);
    expect(r.err).toContain("nothing written");
    const after = await etcdGet(key);
    expect(after.value).toBe(before.value);
    expect(after.modRevision).toBe(before.modRevision);
    expect(after.revision).toBe(before.revision);

    const { prefix: p2, key: k2 } = fresh();
    expect(
      (
        await policy(["apply", "orders", file("inv.yaml", canaryYaml(10, "retries:\n  attempts: -1\n"))], {
          prefix: p2,
        })
      ).code,
    ).toBe(1);
    expect((await etcdGet(k2)).value).toBeUndefined();
  });

  it("loses the compare-and-set to a write between its read and its write", async () => {
    const { prefix, key } = fresh();
    expect((await policy(["apply", "orders", file("c1.yaml", canaryYaml(10))], { prefix })).code).toBe(0);
    const theirs = JSON.stringify({ schemaVersion: 1, service: "orders", timeoutMs: 750 });
    const r = await policy(["apply", "orders", file("c2.yaml", canaryYaml(30))], {
      prefix,
      beforeWrite: async () => {
        const w = await runEtcdctl(["put", key, theirs], { endpoints: cluster.endpoints });
        expect(w.code, w.stderr).toBe(0);
      },
    });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/changed since revision \d+ \(now \d+\).*SDK_ERR_CONFLICT/);
    expect((await etcdGet(key)).value).toBe(theirs);

    // Against a key that did not exist when read: someone creates it first.
    const { prefix: p2, key: k2 } = fresh();
    const r2 = await policy(["apply", "orders", file("c3.yaml", canaryYaml(30))], {
      prefix: p2,
      beforeWrite: async () => {
        await runEtcdctl(["put", k2, theirs], { endpoints: cluster.endpoints });
      },
    });
    expect(r2.code).toBe(1);
    expect(r2.err).toContain("changed since revision 0");
    expect((await etcdGet(k2)).value).toBe(theirs);
  });

  it("--expect-revision refuses when the policy changed after the operator looked", async () => {
    const { prefix } = fresh();
    const seen = appliedRevision(
      await policy(["apply", "orders", file("e1.yaml", canaryYaml(10))], { prefix }),
    );
    expect((await policy(["apply", "orders", file("e2.yaml", canaryYaml(15))], { prefix })).code).toBe(0);
    const r = await policy(
      ["apply", "orders", file("e3.yaml", canaryYaml(50)), "--expect-revision", String(seen)],
      { prefix },
    );
    expect(r.code).toBe(1);
    expect(r.err).toContain(`changed since revision ${seen}`);
    const cur = (await policy(["diff", "orders", file("e3.yaml", canaryYaml(50))], { prefix })).out;
    const now = /current: revision (\d+)/.exec(cur)![1]!;
    const ok = await policy(
      ["apply", "orders", file("e3.yaml", canaryYaml(50)), `--expect-revision=${now}`],
      {
        prefix,
      },
    );
    expect(ok.code, ok.err).toBe(0);
  });

  it("says the registry is unavailable in one line", async () => {
    const r = await policy(["apply", "orders", file("u.yaml", canaryYaml(10))], {
      endpoints: ["127.0.0.1:1"],
    });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^mesher policy apply: registry unavailable: /);
    expect(r.err.trim().split("\n")).toHaveLength(1);
  });
});

describe("mesher policy diff", () => {
  it("lists JSON-pointer changes; exits 0 when equal, 1 when different, 2 on error", async () => {
    const { prefix } = fresh();
    const f10 = file("d10.yaml", canaryYaml(10, "retries:\n  attempts: 2\n"));
    const none = await policy(["diff", "orders", f10], { prefix });
    expect(none.code).toBe(1);
    expect(none.out).toContain("no policy stored for orders");
    expect(none.out).toContain("+ /routes:");
    const rev = appliedRevision(await policy(["apply", "orders", f10], { prefix }));

    const eq = await policy(["diff", "orders", f10], { prefix });
    expect(eq.code).toBe(0);
    expect(eq.out).toContain(`current: revision ${rev}`);
    expect(eq.out).toContain("no changes");

    const f20 = file("d20.yaml", canaryYaml(20, "timeoutMs: 500\n"));
    const d = await policy(["diff", "orders", f20], { prefix });
    expect(d.code).toBe(1);
    const lines = d.out.split("\n");
    expect(lines).toContain('~ /description: "canary 10%" -> "canary 20%"');
    expect(lines).toContain("~ /routes/0/split/0/weight: 90 -> 80");
    expect(lines).toContain("~ /routes/0/split/1/weight: 10 -> 20");
    expect(lines).toContain("+ /timeoutMs: 500");
    expect(lines).toContain("- /retries");
    expect(d.out).toContain(`--expect-revision ${rev}`);

    const bad = await policy(["diff", "orders", file("dbad.yaml", "schemaVersion: 2\nservice: orders\n")], {
      prefix,
    });
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/^schemaVersion: must be 1$/m);
    const missing = await policy(["diff", "orders", join(dir.path, "nope.yaml")], { prefix });
    expect(missing.code).toBe(2);
  });

  it("policyChanges: pointers escape ~ and /, arrays compare by index", () => {
    const c = policyChanges({ a: { "x/y": 1, "t~": [1, 2, 3] } }, { a: { "x/y": 2, "t~": [1, 5] }, b: null });
    expect(c.map(formatChange)).toEqual([
      "~ /a/x~1y: 1 -> 2",
      "~ /a/t~0/1: 2 -> 5",
      "- /a/t~0/2",
      "+ /b: null",
    ]);
  });
});

describe("mesher policy history and rollback", () => {
  it("lists earlier versions newest first after three applies", async () => {
    const { prefix } = fresh();
    const revs: number[] = [];
    for (const w of [10, 20, 30]) {
      revs.push(
        appliedRevision(await policy(["apply", "orders", file(`h${w}.yaml`, canaryYaml(w))], { prefix })),
      );
    }
    const h = await policy(["history", "orders"], { prefix });
    expect(h.code, h.err).toBe(0);
    const rows = h.out.split("\n").filter((l) => /^[* ] \d+\t/.test(l));
    expect(rows.map((l) => Number(l.slice(2).split("\t")[0]))).toEqual([revs[2], revs[1], revs[0]]);
    expect(rows[0]).toMatch(/^\* .*\tv3\t.*canary:30.*"canary 30%"/);
    expect(rows[2]).toMatch(/\tv1\t.*canary:10/);
    expect(h.out).toContain(`created at revision ${revs[0]}`);

    const limited = await policy(["history", "orders", "--limit", "2"], { prefix });
    expect(limited.out.split("\n").filter((l) => /^[* ] \d+\t/.test(l))).toHaveLength(2);
    expect(limited.out).toContain("--limit");

    const empty = await policy(["history", "payments"], { prefix });
    expect(empty.code).toBe(0);
    expect(empty.out).toContain("no policy stored for payments");
  });

  it("rollback restores the previous version, or the one at --to-revision", async () => {
    const { prefix, key } = fresh();
    const revs: number[] = [];
    for (const w of [10, 20, 30]) {
      revs.push(
        appliedRevision(await policy(["apply", "orders", file(`r${w}.yaml`, canaryYaml(w))], { prefix })),
      );
    }
    const v2 = (
      await runEtcdctl(["get", key, "--rev", String(revs[1]), "--print-value-only"], {
        endpoints: cluster.endpoints,
      })
    ).stdout;
    const r = await policy(["rollback", "orders"], { prefix });
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(`to the version of revision ${revs[1]}`);
    const now = await etcdGet(key);
    expect(now.value!.trim()).toBe(v2.trim());
    expect(now.modRevision).toBeGreaterThan(revs[2]!);
    expect(r.out).toContain(`now revision ${now.modRevision}`);

    const to1 = await policy(["rollback", "orders", "--to-revision", String(revs[0])], { prefix });
    expect(to1.code, to1.err).toBe(0);
    expect(JSON.parse((await etcdGet(key)).value!).description).toBe("canary 10%");

    const again = await policy(["rollback", "orders", "--to-revision", String(revs[0])], { prefix });
    expect(again.code).toBe(0);
    expect(again.out).toContain("already in force");

    const early = await policy(["rollback", "orders", "--to-revision", String(revs[0]! - 1)], { prefix });
    expect(early.code).toBe(1);
    expect(early.err).toContain(`no policy for orders at revision ${revs[0]! - 1}`);
  });

  it("rollback refuses with nothing earlier, an invalid earlier version, or a lost compare-and-set", async () => {
    const { prefix, key } = fresh();
    const none = await policy(["rollback", "orders"], { prefix });
    expect(none.code).toBe(1);
    expect(none.err).toContain("nothing to roll back");
    await policy(["apply", "orders", file("o1.yaml", canaryYaml(10))], { prefix });
    const first = await policy(["rollback", "orders"], { prefix });
    expect(first.code).toBe(1);
    expect(first.err).toContain("no earlier version");

    // An invalid value written behind the CLI's back is not rolled back to.
    await runEtcdctl(["put", key, '{"schemaVersion":1,"service":"orders","retries":{"attempts":-1}}'], {
      endpoints: cluster.endpoints,
    });
    await policy(["apply", "orders", file("o2.yaml", canaryYaml(40))], { prefix });
    const before = await etcdGet(key);
    const inv = await policy(["rollback", "orders"], { prefix });
    expect(inv.code).toBe(1);
    expect(inv.err).toMatch(/^retries\.attempts: /m);
    expect(inv.err).toContain("nothing written");
    expect((await etcdGet(key)).revision).toBe(before.revision);

    await policy(["apply", "orders", file("o3.yaml", canaryYaml(45))], { prefix });
    const theirs = JSON.stringify({ schemaVersion: 1, service: "orders", timeoutMs: 900 });
    const lost = await policy(["rollback", "orders"], {
      prefix,
      beforeWrite: async () => {
        await runEtcdctl(["put", key, theirs], { endpoints: cluster.endpoints });
      },
    });
    expect(lost.code).toBe(1);
    expect(lost.err).toContain("SDK_ERR_CONFLICT");
    expect((await etcdGet(key)).value).toBe(theirs);
  });

  it("says so when earlier versions are compacted", async () => {
    const { prefix } = fresh();
    const revs: number[] = [];
    for (const w of [10, 20, 30]) {
      revs.push(
        appliedRevision(await policy(["apply", "orders", file(`k${w}.yaml`, canaryYaml(w))], { prefix })),
      );
    }
    const c = await runEtcdctl(["compact", String(revs[2])], { endpoints: cluster.endpoints });
    expect(c.code, c.stderr).toBe(0);
    const h = await policy(["history", "orders"], { prefix });
    expect(h.code, h.err).toBe(0);
    expect(h.out.split("\n").filter((l) => /^[* ] \d+\t/.test(l))).toHaveLength(1);
    expect(h.out).toContain(`earlier versions are compacted: revision ${revs[2]! - 1} is no longer readable`);
    expect(h.out).toContain("2 older versions not shown");
    const rb = await policy(["rollback", "orders"], { prefix });
    expect(rb.code).toBe(1);
    expect(rb.err).toContain(`revision ${revs[2]! - 1} is compacted`);
  });
});
