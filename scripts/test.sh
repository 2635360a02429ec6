#!/usr/bin/env bash
# The whole test suite: set-up, static checks, unit tests, then process tests one at a time.
# Ends with one plain line `tests: N passed, N failed`.
#   --long   also run *.long.test.ts and the many-seed modes (REGMESH_LONG=1)
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--long" ]; then export REGMESH_LONG=1; fi
results=.tmp/test-results
rm -rf "$results" && mkdir -p "$results"
status=0
step() { echo; echo "== $*"; }

step "install test dependencies"
bash scripts/install-deps.sh || { echo "install-deps failed"; exit 1; }

step "build"
npx tsc -b || status=1

step "typecheck tests"
npx tsc -p tsconfig.test.json || status=1

step "lint and format (biome)"
npx biome check . || status=1

step "pure-core rules"
node scripts/check-core.mjs || status=1

for project in unit proc; do
  step "vitest: $project"
  npx vitest run --project "$project" --reporter=default --reporter=json \
    --outputFile.json="$results/$project.json" || status=1
done

# The SDK's process suites ran against a real etcd above; they run again against registry-node,
# since both back-ends are the SDK's contract (docs/design.md). The mesher's end-to-end suites
# join them under --long (they ran against etcd above; this keeps the default run short).
# (sdk/test/testing compares the mock with etcd itself; TLS on registry-node has its own suite.)
rn_files=(sdk/test/etcd/client.proc.test.ts sdk/test/etcd/failover.proc.test.ts sdk/test/etcd/auth.proc.test.ts
  sdk/test/etcd/groups.proc.test.ts sdk/test/registry sdk/test/mesh sdk/test/integrations)
if [ "${REGMESH_LONG:-}" = "1" ]; then
  rn_files+=(mesher/test/e2e.proc.test.ts mesher/test/grpc-auth.proc.test.ts mesher/test/registry-auth.proc.test.ts)
fi
step "vitest: proc (${rn_files[*]} against registry-node)"
REGMESH_REGISTRY=registry-node npx vitest run --project proc "${rn_files[@]}" --reporter=default --reporter=json \
  --outputFile.json="$results/proc-sdk-registry-node.json" || status=1

echo
node scripts/summary.mjs "$results" "$status"
