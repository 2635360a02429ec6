#!/usr/bin/env bash
# Generates the static TypeScript for the etcd v3 protos with ts-proto.
#
#   bash proto/scripts/gen.sh [OUT_DIR]
#
# OUT_DIR defaults to proto/src/gen (committed). test/stale.test.ts runs this
# script into a temporary directory and compares the result with the
# committed files, so the options below are the single source of truth.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pkg="$(dirname "$here")"
root="$(dirname "$pkg")"
out="${1:-$pkg/src/gen}"
plugin="$root/node_modules/.bin/protoc-gen-ts_proto"
protoc="${PROTOC:-protoc}"

# Why each option (see proto/README.md for the JSON findings):
#   outputServices=grpc-js   KVService / KVClient for @grpc/grpc-js servers and clients
#   esModuleInterop, importSuffix=.js, env=node   ESM under module nodenext; bytes are Buffer
#   forceLong=bigint         lease ids are random int64 values above 2^53
#   useOptionals=messages    sub-messages may be omitted in literals (`header?`)
#   snakeToCamel=keys + protoJsonFormat=false     camelCase TypeScript keys, but
#                            toJSON/fromJSON use the proto field names, as etcd's
#                            grpc-gateway (jsonpb OrigName: true) does
opts=(
  outputServices=grpc-js
  esModuleInterop=true
  importSuffix=.js
  env=node
  forceLong=bigint
  useOptionals=messages
  outputJsonMethods=true
  snakeToCamel=keys
  protoJsonFormat=false
)
opt_string="$(IFS=,; echo "${opts[*]}")"

# Generate into a fresh directory, then replace the .ts files of OUT_DIR, so a
# file whose .proto was removed does not linger and nothing else is deleted.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$pkg/protos"
# Sorted so the output does not depend on the file system's order.
mapfile -t files < <(find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)
"$protoc" \
  --plugin="protoc-gen-ts_proto=$plugin" \
  --ts_proto_out="$tmp" \
  --ts_proto_opt="$opt_string" \
  -I . \
  "${files[@]}"
"$protoc" --descriptor_set_out="$tmp/descriptors.pb" -I . "${files[@]}"
node "$here/json-names.mjs" "$tmp/descriptors.pb" >"$tmp/json-names.ts"
rm "$tmp/descriptors.pb"

mkdir -p "$out"
find "$out" -name '*.ts' -type f -delete
find "$out" -mindepth 1 -type d -empty -delete
cp -R "$tmp"/. "$out"/
