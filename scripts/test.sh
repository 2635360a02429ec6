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

# The SDK's and the mesher's end-to-end process suites ran against a real etcd above; they run
# again against registry-node, since both back-ends are their contract (docs/design.md).
step "vitest: proc (sdk and mesher against registry-node)"
REGMESH_REGISTRY=registry-node npx vitest run --project proc sdk/test mesher/test/e2e.proc.test.ts \
  mesher/test/grpc-auth.proc.test.ts mesher/test/registry-auth.proc.test.ts --reporter=default --reporter=json \
  --outputFile.json="$results/proc-sdk-registry-node.json" || status=1

echo
node scripts/summary.mjs "$results" "$status"
