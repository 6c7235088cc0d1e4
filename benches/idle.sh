#!/usr/bin/env bash
# idle.sh — the proxy's memory with many idle client connections (issue 7: 10 000 under 300 MB).
# Starts the rooms and the bench proxy (fixtures/bench/proxy.toml, max_connections raised),
# opens N logged-in connections through it (tests/examples/idle_clients.rs, mysql_async), each
# running one query, and reads the proxy's RSS before, while they are held idle, and after
# they close. Env: N (10000), HOLD (10 s), RB_BENCH_PORT (3390), RB_BENCH_DIR.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N="${N:-10000}" HOLD="${HOLD:-10}" PORT="${RB_BENCH_PORT:-3390}"
OUT="${RB_BENCH_DIR:-/tmp/rainbow-bridge-bench}"
mkdir -p "$OUT"
say() { printf '==> %s\n' "$*" >&2; }

# Each connection is a file descriptor in the proxy and in the client.
need=$((N + 1000))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
  ulimit -n "$need" 2>/dev/null || {
    echo "idle: need 'ulimit -n' >= $need (hard limit $(ulimit -Hn))" >&2; exit 1; }
fi

say "rooms"
scripts/rooms.sh up
mariadb --no-defaults -h127.0.0.1 -P3316 -urb -prb -e 'CREATE DATABASE IF NOT EXISTS sbtest'
say "build"
cargo build --release -p rainbow-bridge -p rb-e2e --example idle_clients

CONFIG="$OUT/idle-proxy.toml"
sed -e "s#^rules = .*#rules = \"$ROOT/fixtures/bench/rules.toml\"#" \
  -e "s#^listen = .*#listen = \"127.0.0.1:$PORT\"\\nmax_connections = $((N + 100))#" \
  fixtures/bench/proxy.toml >"$CONFIG"
target/release/rainbow-bridge --config "$CONFIG" </dev/null >"$OUT/idle-proxy.log" 2>&1 &
PROXY=$!
trap 'kill $PROXY 2>/dev/null || true' EXIT
for i in $(seq 60); do
  mariadb --no-defaults -h127.0.0.1 -P"$PORT" -ubench -pbench -Dsbtest -e 'SELECT 1' >/dev/null 2>&1 && break
  kill -0 "$PROXY" 2>/dev/null && [ "$i" -lt 60 ] || {
    echo "idle: the proxy did not start; $OUT/idle-proxy.log:" >&2; tail -20 "$OUT/idle-proxy.log" >&2; exit 1; }
  sleep 0.5
done
rss() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$PROXY/status"; }
before="$(rss)"

say "opening $N connections"
held=""
target/release/examples/idle_clients "mysql://bench:bench@127.0.0.1:$PORT/sbtest" "$N" "$HOLD" \
  >"$OUT/idle-clients.txt" 2>&1 &
CLIENTS=$!
for _ in $(seq 600); do
  if grep -q '^HELD' "$OUT/idle-clients.txt"; then held="$(rss)"; break; fi
  kill -0 "$CLIENTS" 2>/dev/null || break
  sleep 0.5
done
rc=0; wait "$CLIENTS" || rc=$?
sleep 1
after="$(rss)"
cat "$OUT/idle-clients.txt"
[ "$rc" = 0 ] && [ -n "$held" ] || { echo "idle: the clients failed (rc=$rc)" >&2; exit 1; }
per_conn="$(awk -v a="$before" -v b="$held" -v n="$N" 'BEGIN { printf "%.1f", (b - a) * 1024 / n }')"
echo
echo "idle connections: $N; proxy RSS MiB: before $before, while held $held, after close $after; ≈ $per_conn KiB per connection"
