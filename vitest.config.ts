import { defineConfig } from "vitest/config";

// Two projects. `unit` runs in parallel and must not start real processes or bind
// well-known ports. `proc` holds tests that start real processes (etcd, registry-node,
// mesher, etcdctl); they run one file at a time so they do not fight over 2 cores.
// Files named *.long.test.ts only run under `npm run test:long` (REGMESH_LONG=1).
const long = process.env.REGMESH_LONG === "1";
const longGlob = "**/*.long.test.ts";
const procGlobs = ["**/*.proc.test.ts", "**/*.proc.long.test.ts"];
const packages = "{proto,testkit,registry-node,sdk,mesher,examples,bench}";

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: [`${packages}/test/**/*.test.ts`],
          exclude: ["**/node_modules/**", "**/dist/**", ...procGlobs, ...(long ? [] : [longGlob])],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        test: {
          name: "proc",
          include: procGlobs.map((g) => `${packages}/test/${g}`),
          exclude: ["**/node_modules/**", "**/dist/**", ...(long ? [] : [longGlob])],
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
