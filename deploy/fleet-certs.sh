#!/usr/bin/env bash
# Makes the certificates of the compose fleet (deploy/compose.yaml) with `rjob pki`:
#
#   deploy/fleet-certs.sh [--rjob PATH] [--agents N] [--out DIR]
#
#   DIR/pki/              the CA and the controller's identity (`rjob pki init`)
#   DIR/controller/       ca.crt, client.crt, client.key: what the controller container
#                         mounts (the CA key stays out of every container)
#   DIR/agentN/           agent.crt, agent.key, ca.crt for agent1..agentN, each issued with
#                         `--san agentN`, the name the controller dials it by
#
# DIR defaults to $RJOB_FLEET_DIR or deploy/fleet (git-ignored); N to 5. rjob is found as
# --rjob, else $RJOB, else on PATH, else in target/release or target/debug. Idempotent:
# an existing CA and existing agent certificates are kept (delete DIR to start over).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
say() { printf 'fleet-certs: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

rjob=${RJOB:-} agents=5 out=${RJOB_FLEET_DIR:-$here/fleet}
while (($#)); do
  case $1 in
    --rjob) rjob=${2:?}; shift 2 ;;
    --agents) agents=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done
[[ $agents =~ ^[1-9][0-9]*$ ]] || die "--agents wants a positive number"

if [[ -z $rjob ]]; then
  for candidate in "$(command -v rjob || true)" "${CARGO_TARGET_DIR:-$repo/target}/release/rjob" \
    "${CARGO_TARGET_DIR:-$repo/target}/debug/rjob"; do
    if [[ -n $candidate && -x $candidate ]]; then rjob=$candidate; break; fi
  done
fi
[[ -n $rjob && -x $rjob ]] || die "no rjob binary: build it (cargo build -p rjob) or pass --rjob PATH"

mkdir -p "$out"
if [[ -f $out/pki/ca.key ]]; then
  say "keeping the CA in $out/pki"
else
  say "rjob pki init $out/pki"
  "$rjob" pki init "$out/pki"
fi

mkdir -p "$out/controller"
chmod 0700 "$out/controller"
for f in ca.crt client.crt client.key; do
  cp -p "$out/pki/$f" "$out/controller/$f"
done

for i in $(seq 1 "$agents"); do
  name=agent$i
  if [[ -f $out/$name/agent.crt && -f $out/$name/agent.key ]] &&
    cmp -s "$out/$name/ca.crt" "$out/pki/ca.crt"; then
    continue
  fi
  say "rjob pki issue-agent $name --san $name"
  rm -rf "${out:?}/$name"
  "$rjob" pki issue-agent "$name" --san "$name" --ca-dir "$out/pki" --out "$out/$name"
done
# The fleet's run-as policy: this demo fleet lets its controller run as root in the
# containers (a real fleet names the users each identity may run as: deploy/policy.toml).
cat >"$out/policy.toml" <<'POLICY'
[[allow]]
identity = "rjob-controller"
users = ["root"]
default = "root"
POLICY
say "fleet certificates in $out (CA, controller, agent1..agent$agents) and policy.toml"
