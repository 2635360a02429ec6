#!/usr/bin/env bash
# The mesher sidecar's container image, built and run with podman: no Docker engine and no image
# registry are needed (the base image is made here, FROM scratch, out of this host's node).
#
#   bash scripts/container.sh setup   install podman, runc and catatonit when missing; write containers.conf if none
#   bash scripts/container.sh base    make localhost/regmesh-node-base:<node major> from this host's node
#   bash scripts/container.sh build   stage the mesher's runtime and build localhost/regmesh-mesher:dev
#   bash scripts/container.sh all     setup, base, build
#
# Each step can be run again: it redoes only what is missing or out of date, and says what it does.
# `build` packs dist/ as it is: run it after `npm ci` (or `npx tsc -b` after an edit).
#
# Environment:
#   BASE_IMAGE     the mesher image's base. Default: the local base above, made by `base` when it is
#                  missing. Where a registry is reachable, e.g. docker.io/library/node:20-slim.
#   MESHER_IMAGE   the tag `build` makes (default localhost/regmesh-mesher:dev)
#   REGMESH_CONTAINER_REBUILD=1   rebuild the base and reinstall the staged node_modules regardless
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
stage_root=$repo/.tmp/container
mesher_image=${MESHER_IMAGE:-localhost/regmesh-mesher:dev}
rebuild=${REGMESH_CONTAINER_REBUILD:-0}

log() { echo "container: $*"; }
die() {
  echo "container: $*" >&2
  exit 1
}

# podman build, its output kept in a log file (shown when it fails), so progress stays readable.
podman_build() {
  local log=$stage_root/podman-build.log
  mkdir -p "$stage_root"
  if ! podman build "$@" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "podman build failed (the whole output: ${log#"$repo"/})"
  fi
}

node_major() { node -p 'process.versions.node.split(".")[0]'; }
local_base_image() { echo "localhost/regmesh-node-base:$(node_major)"; }

# ---------------------------------------------------------------------------------------------
# setup: podman and runc, and a containers.conf that lets them run on a machine like CI's.
# ---------------------------------------------------------------------------------------------

# What this machine kind needs (found by trying):
# - runc: the runtime podman works with on this machine kind (not crun).
# - ulimits podman may set: its defaults (nofile and nproc of about a million) exceed this
#   machine's hard limits, and the runtime then fails with "error setting rlimits ...: operation
#   not permitted". Limits at or below the hard ones are accepted.
# - cgroupfs and a file event log: there is no systemd to talk to.
# The storage driver is left at podman's default (overlay, native here). Where overlay cannot be
# mounted (overlay on overlay), add `driver = "vfs"` to a storage.conf.
write_containers_conf() {
  local conf=$1 nproc_hard nproc
  nproc_hard=$(ulimit -Hu)
  nproc=4096
  if [ "$nproc_hard" != "unlimited" ] && [ "$nproc_hard" -lt "$nproc" ]; then nproc=$nproc_hard; fi
  mkdir -p "$(dirname "$conf")"
  cat >"$conf" <<EOF
# Written by regmesh's scripts/container.sh setup (see the comments there). Safe to edit.
[containers]
# Podman's defaults exceed this machine's hard limits, which makes the runtime fail.
default_ulimits = ["nofile=1024:1024", "nproc=${nproc}:${nproc}"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
  log "wrote $conf"
}

cmd_setup() {
  local missing=() p sudo=""
  # catatonit: podman builds a pod's infra (pause) image from it, since none can be pulled here.
  for p in podman runc catatonit; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then missing+=("$p"); fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "install ${missing[*]} (no apt-get here)"
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    log "podman, runc and catatonit are installed"
  fi

  # System-wide only as root; a user's own file otherwise. CONTAINERS_CONF, when set, wins in
  # podman, so it is the file to write then.
  local conf
  if [ -n "${CONTAINERS_CONF:-}" ]; then
    conf=$CONTAINERS_CONF
  elif [ "$(id -u)" -eq 0 ]; then
    conf=/etc/containers/containers.conf
  else
    conf=${XDG_CONFIG_HOME:-$HOME/.config}/containers/containers.conf
  fi
  if [ -e "$conf" ]; then
    log "$conf exists; left as it is"
  else
    write_containers_conf "$conf"
  fi
  log "$(podman --version)"

  # The host's own root, overlaid read-write (writes vanish with the container): proves podman
  # can run a container, with this configuration, before any image exists. Exit status 2 says
  # it cannot; the container test then skips, quoting the error.
  local out
  if out=$(podman run --rm --rootfs /:O /bin/true 2>&1); then
    log "podman runs containers"
  else
    log "podman cannot run a container here: $out"
    return 2
  fi
}

# ---------------------------------------------------------------------------------------------
# base: localhost/regmesh-node-base:<major>, FROM scratch, out of this host's node and libraries.
# ---------------------------------------------------------------------------------------------
cmd_base() {
  local image node_bin node_version dir rootfs libs lib have
  image=$(local_base_image)
  node_bin=$(readlink -f "$(command -v node)")
  node_version=$(node -p process.version)
  if [ "$rebuild" != 1 ] && podman image exists "$image"; then
    have=$(podman image inspect --format '{{index .Config.Labels "org.regmesh.node-version"}}' "$image")
    if [ "$have" = "$node_version" ]; then
      log "$image is up to date (node $node_version)"
      return 0
    fi
    log "$image has node $have, this host $node_version: rebuilding"
  fi

  log "staging $image from $node_bin ($node_version)"
  dir=$stage_root/base
  rootfs=$dir/rootfs
  rm -rf "$dir"
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp" "$dir/home"
  cp "$node_bin" "$rootfs/usr/local/bin/node"

  # `ldd` prints "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" for libraries and
  # "/lib64/ld-linux-x86-64.so.2 (0x...)" for the loader; each is copied, symlinks resolved, to
  # the path the binary will look for it at. linux-vdso has no file.
  if ldd "$node_bin" | grep -q "not found"; then die "ldd $node_bin: $(ldd "$node_bin" | grep "not found")"; fi
  libs=$(ldd "$node_bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
  for lib in $libs; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  log "copied node and $(echo "$libs" | wc -w) libraries"

  # The same user as node:20-slim's `node` (uid and gid 1000), so the mesher image runs as the
  # same user on either base. No shell exists to log in with.
  printf '%s\n' 'root:x:0:0:root:/root:/usr/sbin/nologin' 'node:x:1000:1000:node:/home/node:/usr/sbin/nologin' \
    'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' >"$rootfs/etc/passwd"
  printf '%s\n' 'root:x:0:' 'node:x:1000:' 'nogroup:x:65534:' >"$rootfs/etc/group"
  printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"
  chmod 1777 "$rootfs/tmp"

  log "building $image"
  podman_build --format docker -f mesher/container/Dockerfile.base \
    --build-arg NODE_VERSION="$node_version" -t "$image" "$dir"
  podman image prune -f --filter label=org.regmesh.image=node-base >/dev/null
  # A check that the copied binary and libraries really start, as the non-root user.
  podman run --rm --no-healthcheck --user 1000:1000 "$image" node -e \
    'const u = require("node:os").userInfo(); console.log(`container: base runs node ${process.version} as ${u.username} (${u.uid})`)'
  log "$image: $(podman image inspect --format '{{.Size}}' "$image" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
}

# ---------------------------------------------------------------------------------------------
# build: stage the mesher's runtime, then build the image from the staging directory.
# ---------------------------------------------------------------------------------------------
packages=(proto sdk mesher) # the mesher's workspace packages, dependencies first

stage_dependencies() {
  local stage=$1 hash p
  # The staged node_modules depend only on the lock file, the three package.json files and how
  # this script installs and trims them.
  hash=$(cat package-lock.json proto/package.json sdk/package.json mesher/package.json scripts/container.sh |
    sha256sum | cut -d' ' -f1)
  if [ "$rebuild" != 1 ] && [ -d "$stage/node_modules" ] && [ "$(cat "$stage/.deps-hash" 2>/dev/null)" = "$hash" ]; then
    log "production node_modules are up to date"
    return 0
  fi
  log "installing production node_modules (npm install --omit=dev, from the repository's lock file)"
  rm -rf "$stage/node_modules" "$stage/.deps-hash"
  # A workspace root of only the mesher's packages. npm prunes the copied lock file to them and
  # keeps every version it pins, so the image runs what the tests ran.
  cat >"$stage/package.json" <<'EOF'
{
  "name": "regmesh-mesher-image",
  "private": true,
  "type": "module",
  "workspaces": ["proto", "sdk", "mesher"]
}
EOF
  cp package-lock.json "$stage/package-lock.json"
  for p in "${packages[@]}"; do
    mkdir -p "$stage/$p"
    cp "$p/package.json" "$stage/$p/package.json"
  done
  (cd "$stage" && npm install --omit=dev --ignore-scripts --prefer-offline --no-audit --no-fund --loglevel=error)
  # What only compilers and readers use: type declarations, TypeScript sources, source maps and
  # markdown, about half of the files and of the bytes. Fewer files also make podman's COPY,
  # which hashes every file on every build, much faster. Licences stay.
  find "$stage/node_modules" -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.ts' \
    -o -name '*.map' -o -name '*.md' -o -name '*.markdown' \) -delete
  echo "$hash" >"$stage/.deps-hash"
}

stage_code() {
  local stage=$1 p
  for p in "${packages[@]}"; do
    cp "$p/package.json" "$stage/$p/package.json"
    rm -rf "$stage/$p/dist"
    cp -R "$p/dist" "$stage/$p/dist"
    # Types and build state are for compilers, not for running.
    find "$stage/$p/dist" \( -name '*.d.ts' -o -name '*.d.ts.map' -o -name '*.tsbuildinfo' \) -delete
  done
  rm -rf "$stage/mesher/bin"
  cp -R mesher/bin "$stage/mesher/bin"
  cp mesher/container/healthcheck.mjs "$stage/healthcheck.mjs"
  mkdir -p "$stage/state"
}

cmd_build() {
  local base stage p version revision start=$SECONDS
  for p in "${packages[@]}"; do
    [ -f "$p/dist/index.js" ] || die "$p/dist is missing: run npm ci (or npx tsc -b) first"
  done
  [ -f mesher/dist/cli.js ] || die "mesher/dist/cli.js is missing: run npm ci (or npx tsc -b) first"

  base=${BASE_IMAGE:-$(local_base_image)}
  if [ "$base" = "$(local_base_image)" ]; then cmd_base; fi

  stage=$stage_root/mesher
  mkdir -p "$stage"
  stage_dependencies "$stage"
  stage_code "$stage"
  log "staged in ${stage#"$repo"/} ($(du -sh "$stage" | cut -f1))"

  version=$(node -p 'require("./mesher/package.json").version')
  revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  log "building $mesher_image on $base"
  podman_build --format docker -f mesher/container/Dockerfile \
    --build-arg BASE_IMAGE="$base" --build-arg MESHER_VERSION="$version" --build-arg GIT_REVISION="$revision" \
    -t "$mesher_image" "$stage"
  # The image this tag had before, and intermediate images, are dangling now.
  podman image prune -f --filter label=org.regmesh.image=mesher >/dev/null
  log "$(podman run --rm --no-healthcheck "$mesher_image" --version | head -1)"
  log "$mesher_image: $(podman image inspect --format '{{.Size}}' "$mesher_image" | awk '{ printf "%.0f MB", $1 / 1e6 }'), built in $((SECONDS - start)) s"
}

case "${1:-}" in
setup) cmd_setup ;;
base) cmd_base ;;
build) cmd_build ;;
all)
  cmd_setup
  cmd_base
  cmd_build
  ;;
*)
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
