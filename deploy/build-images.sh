#!/usr/bin/env bash
# Builds the container images rjob-agent:TAG, rjob-controller:TAG and rjob-postgres:TAG (TAG:
# dev; PostgreSQL from Debian's packages, for the shared job store of the compose fleet).
#
#   deploy/build-images.sh [--bin-dir DIR] [--tag TAG] [--force]
#
# 1. the release binaries: `cargo build --release --locked -p rjob-agent -p rjob`, in
#    $CARGO_TARGET_DIR (default: target/) — or, with --bin-dir DIR, binaries already built
#    there (rjob and rjob-agent; the tests pass their own target/debug);
# 2. the base image debian:bookworm-slim, by deploy/base-image.sh unless it exists;
# 3. both images, each from a small temporary context holding only what its Dockerfile
#    copies (binaries stripped of debug information, deploy/agent.toml): no .dockerignore
#    needed, and nothing of target/ is sent to the daemon.
#
# Idempotent: each image is labelled with a hash of its inputs (binaries, Dockerfile, config,
# base image) and is not rebuilt while that hash is the same. --force rebuilds everything
# (base image included).
set -euo pipefail

DOCKER=${DOCKER:-docker}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")

say() { printf 'build-images: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

bin_dir="" tag=dev force=false
while (($#)); do
  case $1 in
    --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
    --tag) tag=${2:?--tag needs a tag}; shift 2 ;;
    --force) force=true; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (usage: $0 [--bin-dir DIR] [--tag TAG] [--force])" ;;
  esac
done

start=$SECONDS
command -v "$DOCKER" >/dev/null || die "docker is not installed: the images need Docker"
"$DOCKER" info >/dev/null 2>&1 || die "the Docker daemon is unreachable (is it running? may you use it?)"

if [[ -z $bin_dir ]]; then
  say "cargo build --release --locked -p rjob-agent -p rjob (target dir: ${CARGO_TARGET_DIR:-$repo/target})"
  (cd "$repo" && cargo build --release --locked -p rjob-agent -p rjob)
  target=${CARGO_TARGET_DIR:-$repo/target}
  [[ $target == /* ]] || target=$repo/$target
  bin_dir=$target/release
fi
for b in rjob rjob-agent; do
  [[ -x $bin_dir/$b ]] || die "$bin_dir/$b is missing: build it first, or leave out --bin-dir"
done
say "binaries from $bin_dir"

base_args=()
if $force; then base_args+=(--force); fi
"$here/base-image.sh" "${base_args[@]}"
base_id=$("$DOCKER" image inspect --format '{{.Id}}' debian:bookworm-slim)

ctx=$(mktemp -d "${TMPDIR:-/tmp}/rjob-image-ctx.XXXXXX")
trap 'rm -rf "$ctx"' EXIT

# build IMAGE DOCKERFILE BINARY [EXTRA_FILE...]: stages the context and builds, unless the
# image already carries the same inputs hash. BINARY "-": none (the image installs Debian
# packages instead, so its build runs on the host's network to reach the Debian mirror).
build() {
  local image=$1 dockerfile=$2 binary=$3
  shift 3
  local inputs binaries=() network=()
  if [[ $binary == - ]]; then network=(--network host); else binaries=("$bin_dir/$binary"); fi
  inputs=$(
    {
      echo "$base_id"
      sha256sum "$here/$dockerfile" "${binaries[@]}" "$@" | cut -d' ' -f1
    } | sha256sum | cut -d' ' -f1
  )
  local have
  have=$("$DOCKER" image inspect --format '{{index .Config.Labels "org.rjob.inputs"}}' "$image" 2>/dev/null || true)
  if ! $force && [[ $have == "$inputs" ]]; then
    say "$image is up to date (inputs ${inputs:0:12}): not rebuilt"
    return 0
  fi
  local dir=$ctx/$image
  mkdir -p "$dir/bin" "$dir/deploy"
  if [[ $binary == - ]]; then
    :
  elif command -v objcopy >/dev/null; then
    # Debug information off, symbols kept (backtraces still name functions).
    objcopy --strip-debug "$bin_dir/$binary" "$dir/bin/$binary"
  else
    cp "$bin_dir/$binary" "$dir/bin/$binary"
  fi
  local f
  for f in "$@"; do cp "$f" "$dir/deploy/"; done
  say "docker build $image ($(du -sh "$dir" | cut -f1) context)"
  "$DOCKER" build --quiet "${network[@]}" --file "$here/$dockerfile" --build-arg BIN_DIR=bin \
    --label "org.rjob.inputs=$inputs" --tag "$image" "$dir" >/dev/null
}

build "rjob-agent:$tag" Dockerfile.agent rjob-agent "$here/agent.toml" "$here/policy.toml"
build "rjob-controller:$tag" Dockerfile.controller rjob
build "rjob-postgres:$tag" Dockerfile.postgres - "$here/postgres-entrypoint.sh"
"$DOCKER" image ls --filter "reference=rjob-*:$tag" >&2
say "done in $((SECONDS - start))s"
