#!/usr/bin/env bash
# Installs the tools rjob-bench compares rjob with: pdsh and OpenSSH (client and server)
# from Debian's packages, and ansible-core in a virtualenv at /tmp/bench-venv (where the
# benchmark looks for it first). Needs root for apt-get. `rjob-bench --install-peers` runs it.
set -euo pipefail
venv=${BENCH_VENV:-/tmp/bench-venv}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
missing=()
command -v pdsh >/dev/null || missing+=(pdsh)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null || missing+=(openssh-client)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" python3-venv
fi
if [ ! -x "$venv/bin/ansible" ]; then
  echo "==> ansible-core in $venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q ansible-core
fi
$sudo mkdir -p /run/sshd
echo "==> peers: $(pdsh -V 2>&1 | head -1); $(ssh -V 2>&1); $("$venv/bin/ansible" --version | head -1)"
