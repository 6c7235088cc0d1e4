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

phase "prerequisites: real drivers (tests/drivers/install.sh)"
tests/drivers/install.sh

phase "prerequisites: etcd (scripts/etcd.sh up) and protoc (the etcd client's build)"
scripts/etcd.sh up
if ! command -v protoc >/dev/null; then
  apt_install protobuf-compiler
fi

phase "build: cargo build --workspace --bins"
cargo build --workspace --bins

# The compatibility report (docs/compatibility.md): the SQL suite per protocol and each real
# driver's counts, written by tests/tests/compat.rs and drivers.rs; printed even on failure.
REPORT="$ROOT/target/compat-report"
rm -rf "$REPORT"
report() {
  phase "compatibility report (target/compat-report)"
  if [ -f "$REPORT/sql.txt" ]; then
    grep -E '^(compat:|known gap|DIFFERS|gap closed)' "$REPORT/sql.txt" || true
  else
    echo "SQL suite: no report (tests/tests/compat.rs did not run to the end)"
  fi
  for d in mysql-connector-python mariadb-connector-j node-mysql2 pymysql mariadb-cli sysbench; do
    if [ -f "$REPORT/drivers/$d.txt" ]; then cat "$REPORT/drivers/$d.txt"; else echo "$d: no result"; fi
  done
}
trap report EXIT

if cargo nextest --version >/dev/null 2>&1; then
  phase "test: cargo nextest run --workspace --no-fail-fast $*"
  cargo nextest run --workspace --no-fail-fast "$@"
else
  phase "test: cargo test --workspace --no-fail-fast $*"
  cargo test --workspace --no-fail-fast "$@"
fi
phase "all tests passed"
