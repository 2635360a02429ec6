#!/usr/bin/env bash
# Installs every Debian package any test suite needs, skipping those already present.
# Called by `npm test`; safe to run again. Needs root (or sudo) only when something is missing.
set -euo pipefail

# One line per package: the package, and why a suite needs it.
packages=(
  etcd-server        # real etcd 3.4: differential tests, SDK/mesher suites against etcd
  etcd-client        # etcdctl: the differential suite and compatibility tests
  protobuf-compiler  # protoc: the generated-code staleness test regenerates proto/src/gen
  golang-go          # builds the bbolt format checker (storage differential tests)
  golang-github-coreos-bbolt-dev # real bbolt, for the Go checker
  python3            # the Python standard-library client of the mesher bridge
  curl               # curl clients of the JSON gateway and the bridge
  podman             # builds and runs the mesher's container image (scripts/container.sh)
  runc               # podman's container runtime on this machine kind
  catatonit          # podman builds its pods' infra image from it (the example pod)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
