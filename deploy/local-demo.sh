#!/usr/bin/env bash
# A real fan-out on one machine: builds rjob, makes a CA and certificates with `rjob pki`,
# starts N agents on distinct loopback addresses (127.0.0.2, 127.0.0.3, ...), runs
# `rjob invoke` against all of them, and stops the agents again.
#
#   deploy/local-demo.sh [N]        (default N=4; state goes to ./demo, removed first)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-4}
port=${RJOB_DEMO_PORT:-17443}
demo=$PWD/demo

# The agent links libpam (password checks): its development files must be there to build.
if ! ls /usr/lib/*/libpam.so /usr/lib/libpam.so >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing libpam0g-dev (the agent links libpam)"
    apt-get update -qq && apt-get install -y -qq libpam0g-dev >/dev/null
  else
    echo "local-demo: libpam's development files are missing: install libpam0g-dev (Debian/Ubuntu) or pam-devel, then run again" >&2
    exit 2
  fi
fi

echo "==> building (cargo build --release)"
cargo build --release --quiet -p rjob -p rjob-agent
bin=${CARGO_TARGET_DIR:-$PWD/target}/release

rm -rf "$demo"
mkdir -p "$demo"
echo "==> making a CA and the controller's identity in $demo/pki"
"$bin/rjob" pki init "$demo/pki"
export RJOB_IDENTITY=$demo/pki

# Deny by default: the agents' run-as policy lets this controller run as you (and as root
# only because a rule names root, when you are root).
me=$(id -un)
cat >"$demo/policy.toml" <<POLICY
[[allow]]
identity = "rjob-controller"
users = ["$me"]
default = "$me"
POLICY

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

hosts=()
for i in $(seq 2 $((n + 1))); do
  ip=127.0.0.$i
  "$bin/rjob" pki issue-agent "agent$i" --san "$ip" --ca-dir "$demo/pki" --out "$demo/agent$i" >/dev/null
  "$bin/rjob-agent" --listen "$ip:$port" \
    --cert "$demo/agent$i/agent.crt" --key "$demo/agent$i/agent.key" \
    --client-ca "$demo/agent$i/ca.crt" --spool-dir "$demo/agent$i/spool" \
    --policy "$demo/policy.toml" \
    2>"$demo/agent$i/agent.log" &
  pids+=($!)
  hosts+=("$ip:$port")
done
echo "==> started ${#hosts[@]} agents: ${hosts[*]}"
for h in "${hosts[@]}"; do
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/${h%:*}/${h#*:}") 2>/dev/null && break
    sleep 0.05
  done
done

list=$(IFS=,; echo "${hosts[*]}")
echo "==> rjob invoke -H $list --throttle-limit 16 --script 'echo \"hello from \$(hostname) as \$(id -un), pid \$\$\"; sleep 1; echo done'"
status=0
"$bin/rjob" invoke -H "$list" --throttle-limit 16 \
  --script 'echo "hello from $(hostname) as $(id -un), pid $$"; sleep 1; echo done' || status=$?
echo "==> rjob exited with status $status; stopping the agents"
exit "$status"
