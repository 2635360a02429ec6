#!/usr/bin/env bash
# A client of the mesher's HTTP/JSON-RPC bridge with nothing but curl: what an app in a language
# without an SDK does (the API is mesher/openapi.yaml). It registers an instance under a lease
# with a TTL, renews it, resolves and picks over REST and over JSON-RPC, deregisters, and checks
# every answer. Exit 0 when every step passed.
#
# Usage: examples/bridge/curl-client.sh [BRIDGE_URL] [SERVICE_TO_PICK]
#   BRIDGE_URL       the bridge (a mesher's --bridge-listen), default http://127.0.0.1:17034
#   SERVICE_TO_PICK  a running service to resolve and pick, default orders
set -euo pipefail

base="${1:-http://127.0.0.1:17034}"
other="${2:-orders}"
service="curl-demo"
id="curl-$$" # unique per run: a registration left by a killed run keeps its id until its lease ends
steps=0

fail() {
  echo "FAILED: $*" >&2
  exit 1
}

# call METHOD PATH [BODY]: sets $status and $body.
call() {
  local method="$1" path="$2" data="${3:-}" out
  if [ -n "$data" ]; then
    out=$(curl -sS --max-time 10 -X "$method" -H 'content-type: application/json' \
      --data "$data" -w '\n%{http_code}' "$base$path") || fail "$method $path: curl failed"
  else
    out=$(curl -sS --max-time 10 -X "$method" -w '\n%{http_code}' "$base$path") ||
      fail "$method $path: curl failed"
  fi
  status="${out##*$'\n'}"
  body="${out%$'\n'*}"
}

# expect STATUS SUBSTRING WHAT: the last answer had this status and contains this text.
expect() {
  [ "$status" = "$1" ] || fail "$3: want HTTP $1, got $status: $body"
  case "$body" in
  *"$2"*) ;;
  *) fail "$3: want $2 in the answer, got: $body" ;;
  esac
  steps=$((steps + 1))
  echo "ok  $3"
}

call POST /v1/register "{\"service\":\"$service\",\"id\":\"$id\",\"address\":\"127.0.0.1\",\"port\":9,\"ttl\":10,\"tags\":[\"curl\"],\"metadata\":{\"lang\":\"shell\"}}"
expect 201 "\"leaseId\":" "REST register $service/$id with a 10 s TTL"

call PUT "/v1/register/$id/heartbeat"
expect 200 "\"ttl\":" "REST heartbeat (one lease keep-alive)"

call GET "/v1/services/$service"
expect 200 "\"id\":\"$id\"" "REST resolve $service"

call GET "/v1/services/$service/pick?method=GET&path=/"
expect 200 "\"id\":\"$id\"" "REST pick $service"

call GET "/v1/services/$other/pick?path=/"
expect 200 "\"service\":\"$other\"" "REST pick $other (registered by its mesher)"

call POST /jsonrpc "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resolve\",\"params\":{\"service\":\"$service\"}}"
expect 200 "\"id\":\"$id\"" "JSON-RPC resolve $service"

call POST /jsonrpc "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"pick\",\"params\":{\"service\":\"$other\"}}"
expect 200 "\"result\":" "JSON-RPC pick $other"

call POST /jsonrpc "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"heartbeat\",\"params\":{\"id\":\"$id\"}}"
expect 200 "\"result\":" "JSON-RPC heartbeat"

call DELETE "/v1/register/$id"
expect 200 "\"deregistered\":true" "REST deregister $id"

# The bridge answers resolve from its watch-fed cache: the delete shows up there within moments.
for _ in $(seq 1 30); do
  call GET "/v1/services/$service"
  [ "$status" = 200 ] || fail "resolve after deregister: HTTP $status: $body"
  case "$body" in
  *"\"id\":\"$id\""*) sleep 0.1 ;;
  *) break ;;
  esac
done
case "$body" in
*"\"id\":\"$id\""*) fail "resolve after deregister: $id is still listed: $body" ;;
esac
steps=$((steps + 1))
echo "ok  REST resolve $service: $id is gone"

echo "bridge client: $steps steps ok"
