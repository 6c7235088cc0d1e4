#!/usr/bin/env bash
# test.sh [runner args...] — the whole test suite: MariaDB rooms, test prerequisites, build the
# binaries the e2e tests run, then cargo nextest (or cargo test). Extra args go to the runner.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
phase() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

phase "rooms: scripts/rooms.sh up"
scripts/rooms.sh up

phase "prerequisites: python3 + pymysql"
if ! command -v python3 >/dev/null; then
  apt_install python3 python3-pymysql
fi
if ! python3 -c 'import pymysql' 2>/dev/null; then
  # Debian's system python is "externally managed" (PEP 668); fall back accordingly.
  python3 -m pip install --quiet pymysql 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages pymysql 2>/dev/null \
    || apt_install python3-pymysql
  python3 -c 'import pymysql'
fi

phase "build: cargo build --workspace --bins"
cargo build --workspace --bins

if cargo nextest --version >/dev/null 2>&1; then
  phase "test: cargo nextest run --workspace --no-fail-fast $*"
  cargo nextest run --workspace --no-fail-fast "$@"
else
  phase "test: cargo test --workspace --no-fail-fast $*"
  cargo test --workspace --no-fail-fast "$@"
fi
phase "all tests passed"
