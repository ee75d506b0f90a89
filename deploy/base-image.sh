#!/usr/bin/env bash
# Builds the Debian base image `debian:bookworm-slim` locally, from Debian's packages, for
# machines that have Docker but no container registry to pull from.
#
#   deploy/base-image.sh [--force]
#
# The root file system is made with mmdebstrap (or debootstrap when mmdebstrap is missing;
# as root, the script installs mmdebstrap with apt-get when neither is there), variant
# minbase, suite bookworm, from the Debian mirror configured in /etc/apt/sources.list or
# /etc/apt/sources.list.d/*.{list,sources}. Then `docker import` tags it debian:bookworm-slim,
# so the Dockerfiles stay conventional: where a registry is reachable, the real image works too.
#
# Idempotent: nothing is done when the tag already exists (whoever made it). The root file
# system is kept as a tarball in $RJOB_CACHE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/rjob),
# so re-importing after `docker image rm`/`prune` takes seconds. --force rebuilds both.
#
# Environment:
#   DEBIAN_MIRROR   mirror URI to use instead of the one in the apt sources
#   RJOB_CACHE_DIR  where the tarball is kept
#   RJOB_BOOTSTRAP  mmdebstrap or debootstrap (default: mmdebstrap when installed)
#   DOCKER          docker command (default: docker)
set -euo pipefail

SUITE=bookworm
TAG=debian:bookworm-slim
DOCKER=${DOCKER:-docker}
CACHE_DIR=${RJOB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rjob}
TARBALL=$CACHE_DIR/debian-$SUITE-minbase-$(dpkg --print-architecture 2>/dev/null || uname -m).tar

say() { printf 'base-image: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Like the official -slim images: no manual pages, info, locales, lintian overrides or
# documentation but the copyright files; dpkg is told to leave them out of later installs.
trim_rootfs() {
  local root=$1
  echo "base-image: trimming $root (manual pages, documentation, locales)" >&2
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/usr/share/lintian/*
  find "$root"/usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
  find "$root"/usr/share/doc -mindepth 1 -type d -empty -delete
  mkdir -p "$root"/etc/dpkg/dpkg.cfg.d
  printf '%s\n' 'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
    'path-exclude /usr/share/locale/*' 'path-exclude /usr/share/lintian/*' \
    'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    >"$root"/etc/dpkg/dpkg.cfg.d/docker-slim
}

self=$(realpath "$0")
force=false
if [[ ${1:-} == --trim-rootfs ]]; then # (internal: mmdebstrap's customize hook)
  trim_rootfs "$2"
  exit 0
fi
for arg in "$@"; do
  case $arg in
    --force) force=true ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (usage: $0 [--force])" ;;
  esac
done

command -v "$DOCKER" >/dev/null || die "docker is not installed: this script needs Docker"
"$DOCKER" info >/dev/null 2>&1 || die "the Docker daemon is unreachable (is it running? may you use it?)"

if ! $force && "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
  say "$TAG already exists: nothing to do (--force rebuilds it)"
  exit 0
fi

# Prints "URI" of the first enabled apt source whose suites include $1 (deb822 or one-line).
apt_source_uri() {
  local suite=$1 f
  local files=()
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] && files+=("$f")
  done
  ((${#files[@]})) || return 0
  awk -v want="$suite" '
    function flush() {
      if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") && enabled && uris != "") {
        split(uris, u, " "); print u[1]; found = 1; exit
      }
      types = ""; suites = ""; uris = ""; enabled = 1
    }
    FNR == 1 { flush() }
    FILENAME ~ /\.sources$/ {
      if ($0 ~ /^[ \t]*$/) { flush(); next }
      if ($0 ~ /^#/) next
      key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "")
      if (key == "types") types = $0
      else if (key == "suites") suites = $0
      else if (key == "uris") uris = $0
      else if (key == "enabled" && tolower($0) == "no") enabled = 0
      next
    }
    /^[ \t]*deb[ \t]/ {
      line = $0; sub(/^[ \t]*deb[ \t]+/, "", line)
      if (line ~ /^\[/) sub(/^\[[^]]*\][ \t]*/, "", line)
      split(line, w, /[ \t]+/)
      if (w[2] == want) { print w[1]; found = 1; exit }
    }
    END { if (!found) flush() }
  ' "${files[@]}"
}

build_tarball() {
  local mirror updates security
  mirror=${DEBIAN_MIRROR:-$(apt_source_uri "$SUITE")}
  mirror=${mirror:-http://deb.debian.org/debian}
  updates=$(apt_source_uri "$SUITE-updates")
  security=$(apt_source_uri "$SUITE-security")
  if [[ -n ${DEBIAN_MIRROR:-} ]]; then updates=$DEBIAN_MIRROR security=""; fi

  local tool=${RJOB_BOOTSTRAP:-}
  if [[ -z $tool ]] && command -v mmdebstrap >/dev/null; then tool=mmdebstrap; fi
  if [[ -z $tool ]] && command -v debootstrap >/dev/null; then tool=debootstrap; fi
  if [[ -z $tool ]]; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
      say "installing mmdebstrap (apt-get install -y mmdebstrap)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
      tool=mmdebstrap
    else
      die "neither mmdebstrap nor debootstrap is installed: sudo apt-get install mmdebstrap"
    fi
  fi

  mkdir -p "$CACHE_DIR"
  local tmp=$TARBALL.tmp.$$

  if [[ $tool == mmdebstrap ]]; then
    local sources=("deb $mirror $SUITE main")
    if [[ -n $updates ]]; then sources+=("deb $updates $SUITE-updates main"); fi
    if [[ -n $security ]]; then sources+=("deb $security $SUITE-security main"); fi
    local mode=auto
    if [[ $(id -u) == 0 ]]; then mode=root; fi
    say "mmdebstrap --variant=minbase $SUITE from: ${sources[*]}"
    # (dpkg's path-exclude during the install breaks packages that make nested directories
    # there, so the trimming is a hook that runs after it.)
    mmdebstrap --quiet --variant=minbase --mode="$mode" --format=tar \
      --customize-hook="bash '$self' --trim-rootfs \"\$1\"" \
      "$SUITE" "$tmp" "${sources[@]}" </dev/null
  else
    [[ $(id -u) == 0 ]] || die "debootstrap needs root (or install mmdebstrap, which does not)"
    local root
    root=$(mktemp -d "${TMPDIR:-/tmp}/rjob-rootfs.XXXXXX")
    # shellcheck disable=SC2064 # expand now: $root is local
    trap "rm -rf '$root'" EXIT
    say "debootstrap --variant=minbase $SUITE $mirror (updates and security not added)"
    debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >&2
    trim_rootfs "$root"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar --numeric-owner --xattrs -C "$root" -cf "$tmp" .
    rm -rf "$root"
    trap - EXIT
  fi
  mv "$tmp" "$TARBALL"
  say "root file system: $TARBALL ($(du -h "$TARBALL" | cut -f1))"
}

start=$SECONDS
if $force || [[ ! -s $TARBALL ]]; then
  build_tarball
else
  say "reusing $TARBALL (--force rebuilds it)"
fi

say "docker import $TARBALL $TAG"
"$DOCKER" import \
  --change 'CMD ["bash"]' \
  --change 'ENV LANG=C.UTF-8' \
  --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase, made locally by rjob deploy/base-image.sh\"" \
  --message "deploy/base-image.sh: mmdebstrap/debootstrap minbase $SUITE" \
  "$TARBALL" "$TAG" >/dev/null
say "done: $TAG in $((SECONDS - start))s"
