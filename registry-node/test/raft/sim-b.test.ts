// The seeded cluster simulation (sim/cluster.ts), half of the default seeds per file so
// vitest runs the halves on two workers. Environment:
//   REGMESH_SEED=N                      replay one seed (prints its stats; REGMESH_TRACE=1 its events)
//   REGMESH_LONG=1 REGMESH_SEEDS=N      N seeds per file from REGMESH_SEED_BASE (default 1000000)

import { defineSimTests } from "./sim/run-seeds.js";

defineSimTests(1, "registry-node/test/raft/sim-b.test.ts");
