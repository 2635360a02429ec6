// Routing scenarios as data (testdata/route/*.txt), run by datadriven.ts. Commands:
//   policy                      input: the policy JSON; prints ok or the validation errors
//   instances                   input: `id key=value ...` per line (version, zone, tags=a,b,
//                               weight, health); prints the count
//   local-zone <zone>           the router's zone
//   eject <id...> / breaker <id...> / clear
//   route [method= path= caller= hash= h:<name>=<value>] [seed=]
//                               prints the decision and the skipped instances
//   dist n=<count> [seed=] [...route args]   prints how picks spread over instances
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "vitest";
import type { Instance } from "../../src/core/instance.js";
import { type Policy, validatePolicy } from "../../src/core/policy.js";
import { type Rand, seededRand } from "../../src/core/random.js";
import {
  createRouterState,
  describeDecision,
  type RouteRequest,
  type RouterState,
  route,
} from "../../src/core/route.js";
import { type Directive, runScript } from "./datadriven.js";
import { inst } from "./helpers.js";

const dir = join(new URL(".", import.meta.url).pathname, "testdata/route");

function parseInstance(line: string): Instance {
  const [id, ...fields] = line.trim().split(/\s+/);
  const f = Object.fromEntries(fields.map((x) => x.split("=") as [string, string]));
  const extra: Record<string, unknown> = {};
  if (f.version !== undefined) extra.version = f.version;
  if (f.zone !== undefined) extra.zone = f.zone;
  if (f.tags !== undefined) extra.tags = f.tags.split(",");
  if (f.weight !== undefined) extra.weight = Number(f.weight);
  if (f.health !== undefined) extra.health = f.health;
  return inst(id!, extra);
}

function request(d: Directive): RouteRequest {
  const headers: Record<string, string> = {};
  for (const [k, v] of d.kv) if (k.startsWith("h:")) headers[k.slice(2)] = v;
  return {
    method: d.kv.get("method") ?? "GET",
    path: d.kv.get("path") ?? "/",
    headers,
    caller: d.kv.get("caller"),
    hashKey: d.kv.get("hash"),
  };
}

class World {
  policy: Policy | undefined;
  instances: Instance[] = [];
  localZone: string | undefined;
  state: RouterState = createRouterState();
  ejected = new Set<string>();
  open = new Set<string>();
  rand: Rand = seededRand(1);

  handle(d: Directive): string {
    switch (d.command) {
      case "policy": {
        const r = validatePolicy(JSON.parse(d.input.join("\n")));
        if (!r.ok) return r.errors.map((e) => `${e.path}: ${e.message}`).join("\n");
        this.policy = r.policy;
        return "ok";
      }
      case "instances":
        this.instances = d.input.filter((l) => l.trim() !== "").map(parseInstance);
        return `${this.instances.length} instances`;
      case "local-zone":
        this.localZone = d.args[0];
        this.state = createRouterState(this.localZone === undefined ? {} : { localZone: this.localZone });
        return "ok";
      case "eject":
        for (const id of d.args) this.ejected.add(id);
        return `ejected: ${[...this.ejected].join(" ")}`;
      case "breaker":
        for (const id of d.args) this.open.add(id);
        return `breaker open: ${[...this.open].join(" ")}`;
      case "clear":
        this.ejected.clear();
        this.open.clear();
        return "ok";
      case "route":
      case "dist": {
        if (d.kv.has("seed")) this.rand = seededRand(Number(d.kv.get("seed")));
        if (this.policy === undefined) throw new Error("no policy");
        const decide = () =>
          route(this.policy!, request(d), this.instances, this.state, 0, this.rand, {
            ejected: this.ejected,
            breakerOpen: this.open,
          });
        if (d.command === "route") return describeDecision(decide());
        const n = Number(d.kv.get("n") ?? "1000");
        const c = new Map<string, number>();
        for (let k = 0; k < n; k++) {
          const id = decide().instance?.id ?? "-";
          c.set(id, (c.get(id) ?? 0) + 1);
        }
        return [...c]
          .sort(([a], [b]) => (a < b ? -1 : 1))
          .map(([id, k]) => `${id}: ${k}`)
          .join("\n");
      }
      default:
        throw new Error(`unknown command ${d.command}`);
    }
  }
}

describe("routing scripts", () => {
  for (const file of readdirSync(dir).filter((f) => f.endsWith(".txt"))) {
    it(file.replace(/\.txt$/, "").replace(/-/g, " "), () => {
      const world = new World();
      runScript(join(dir, file), (d) => world.handle(d));
    });
  }
});
