import type { Instance } from "../../src/core/instance.js";

/** A minimal instance for balancer and routing tests. */
export function inst(id: string, fields: Partial<Omit<Instance, "id">> = {}): Instance {
  return {
    id,
    service: "svc",
    address: `10.0.0.${(id.length * 7) % 250}`,
    port: 8080,
    protocol: "http",
    weight: 100,
    tags: [],
    metadata: {},
    ...fields,
  };
}

export function counts<T>(values: Iterable<T>): Map<T, number> {
  const m = new Map<T, number>();
  for (const v of values) m.set(v, (m.get(v) ?? 0) + 1);
  return m;
}

/** Seeds for seeded loops: a fixed list, so a failure names the seed that reproduces it. */
export const SEEDS = [1, 7, 42, 1234, 99_991];
