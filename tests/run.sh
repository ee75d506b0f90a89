#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs (tests/deps.sh), builds
# the binaries the integration tests start, and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/deps.sh
cargo build --workspace --bins --locked
cargo test --workspace --locked --no-fail-fast "$@"
