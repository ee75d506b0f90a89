#!/usr/bin/env bash
# Installs what the test suite needs on Debian (as root), only what is missing:
#   libpam0g-dev  the agent links libpam (password checks)
#   procps        pgrep in tests
#   passwd        useradd/chpasswd for the credential tests
#   mmdebstrap, debootstrap  the offline base image of deploy/ (container tests)
#   tmux          the terminal tests drive rjob in a real terminal
#   postgresql    throwaway clusters for the PostgreSQL store's tests
set -euo pipefail
packages=(libpam0g-dev procps passwd mmdebstrap debootstrap tmux postgresql)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "tests: missing packages: ${missing[*]}: install them (apt-get install ${missing[*]}) or run this as root on Debian" >&2
  exit 2
fi
echo "==> installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
