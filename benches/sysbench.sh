#!/usr/bin/env bash
# sysbench.sh — compare direct MariaDB (room A, 127.0.0.1:3316) with Rainbow Bridge
# (127.0.0.1:${RB_BENCH_PORT:-3390}, config fixtures/bench/proxy.toml) in one run:
# oltp_point_select and oltp_read_write, each with --db-ps-mode=auto and =disable.
# Env: THREADS (16), TIME (20 s per run), RB_BENCH_PORT (3390), RB_BENCH_DIR (raw outputs, logs).
# Any sysbench "ignored errors" (e.g. deadlocks, also possible directly) flag the row FAIL;
# the script exits 1 only if a sysbench run itself failed (such runs show errors >= 1000).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${RB_BENCH_PORT:-3390}" THREADS="${THREADS:-16}" TIME="${TIME:-20}"
OUT="${RB_BENCH_DIR:-/tmp/rainbow-bridge-bench}" CONFIG=fixtures/bench/proxy.toml
TABLES=4 TABLE_SIZE="${TABLE_SIZE:-100000}"
mkdir -p "$OUT"
say() { printf '==> %s\n' "$*" >&2; }
direct_sql() { mariadb --no-defaults -h127.0.0.1 -P3316 -urb -prb "$@"; }

say "rooms"
scripts/rooms.sh up
command -v sysbench >/dev/null || {
  if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q sysbench
}
direct_sql -e 'CREATE DATABASE IF NOT EXISTS sbtest'

say "build"
cargo build --release -p rainbow-bridge

say "proxy on 127.0.0.1:$PORT"
[ -f "$CONFIG" ] || { echo "bench: $CONFIG is missing" >&2; exit 1; }
setsid nohup target/release/rainbow-bridge --config "$CONFIG" </dev/null >"$OUT/proxy.log" 2>&1 &
PROXY=$!
stop_proxy() {
  kill "$PROXY" 2>/dev/null || return 0
  for _ in $(seq 25); do kill -0 "$PROXY" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$PROXY" 2>/dev/null || true
}
trap stop_proxy EXIT
for i in $(seq 60); do
  mariadb --no-defaults -h127.0.0.1 -P"$PORT" -ubench -pbench -Dsbtest --connect-timeout=2 \
    -e 'SELECT 1' >/dev/null 2>&1 && break
  if [ "$i" -eq 60 ] || ! kill -0 "$PROXY" 2>/dev/null; then
    echo "bench: proxy did not accept a login on 127.0.0.1:$PORT; tail of $OUT/proxy.log:" >&2
    tail -n 40 "$OUT/proxy.log" >&2; exit 1
  fi
  sleep 0.5
done
# Something else on the port would answer the login above: make sure it is our proxy.
kill -0 "$PROXY" 2>/dev/null || {
  echo "bench: the proxy exited (is 127.0.0.1:$PORT already in use?); tail of $OUT/proxy.log:" >&2
  tail -n 20 "$OUT/proxy.log" >&2; exit 1
}

COMMON=(--db-driver=mysql --mysql-host=127.0.0.1 --mysql-db=sbtest --tables="$TABLES" --table-size="$TABLE_SIZE")
DIRECT=(--mysql-port=3316 --mysql-user=rb --mysql-password=rb)
VIA=(--mysql-port="$PORT" --mysql-user=bench --mysql-password=bench)

have="$(direct_sql -N -B -e "SELECT COUNT(*) FROM information_schema.tables
  WHERE table_schema='sbtest' AND table_name REGEXP '^sbtest[0-9]+\$'")"
rows=0
[ "$have" -ge "$TABLES" ] && rows="$(direct_sql -N -B -e 'SELECT COUNT(*) FROM sbtest.sbtest1')"
if [ "$have" -ge "$TABLES" ] && [ "$rows" -eq "$TABLE_SIZE" ]; then
  say "prepare: sbtest already has $have tables of $rows rows, skipping"
else
  say "prepare: $TABLES tables x $TABLE_SIZE rows (direct)"
  sysbench oltp_point_select "${COMMON[@]}" "${DIRECT[@]}" cleanup >/dev/null 2>&1 || true
  sysbench oltp_point_select "${COMMON[@]}" "${DIRECT[@]}" prepare >"$OUT/prepare.txt"
fi

cpu_ticks() { sed 's/.*) //' "/proc/$PROXY/stat" | awk '{print $12 + $13}'; }  # utime+stime (fields 14,15)
CLK="$(getconf CLK_TCK)"

# run NAME TEST PS_MODE TARGET... -> sets QPS QUERIES P95 ERR (ERR: ignored errors, +1000 if sysbench failed)
run() {
  local name=$1 test=$2 ps=$3 rc=0; shift 3
  sysbench "$test" "${COMMON[@]}" "$@" --db-ps-mode="$ps" --threads="$THREADS" --time="$TIME" \
    --report-interval=0 run >"$OUT/$name.txt" 2>&1 || rc=$?
  QUERIES="$(awk '$1 == "queries:" {print $2}' "$OUT/$name.txt")"
  QPS="$(awk '$1 == "queries:" {gsub(/[()]/, ""); print $3}' "$OUT/$name.txt")"
  P95="$(awk '/95th percentile:/ {print $3}' "$OUT/$name.txt")"
  ERR="$(awk '/ignored errors:/ {print $3}' "$OUT/$name.txt")"
  QUERIES=${QUERIES:-0} QPS=${QPS:-0} P95=${P95:-nan} ERR=${ERR:-0}
  if [ "$rc" -ne 0 ] || grep -q 'FATAL' "$OUT/$name.txt"; then
    ERR=$((ERR + 1000)); echo "bench: $name failed (rc=$rc), see $OUT/$name.txt" >&2
  fi
}

ROWS=() FAILED=0
for test in oltp_point_select oltp_read_write; do
  for ps in auto disable; do
    mode="$test/ps=$ps"
    say "$mode: direct"
    run "$test-$ps-direct" "$test" "$ps" "${DIRECT[@]}"
    d_qps=$QPS d_p95=$P95 d_err=$ERR
    say "$mode: proxy"
    t0="$(cpu_ticks)"
    run "$test-$ps-proxy" "$test" "$ps" "${VIA[@]}"
    t1="$(cpu_ticks 2>/dev/null || echo "$t0")"
    rss="$(awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$PROXY/status" 2>/dev/null || echo '?')"
    cpu_us="$(awk -v a="$t0" -v b="$t1" -v hz="$CLK" -v q="$QUERIES" \
      'BEGIN { if (q > 0) printf "%.1f", (b - a) / hz * 1e6 / q; else print "n/a" }')"
    ratio="$(awk -v d="$d_qps" -v p="$QPS" 'BEGIN { if (d > 0) printf "%.2f", p / d; else print "n/a" }')"
    if [ "$d_err" = 0 ] && [ "$ERR" = 0 ]; then errs=ok; else errs="FAIL d=$d_err p=$ERR"; fi
    [ "$d_err" -lt 1000 ] && [ "$ERR" -lt 1000 ] || FAILED=1
    ROWS+=("$(printf '%-28s | %10s | %10s | %5s | %9s | %9s | %11s | %9s | %s' \
      "$mode" "$d_qps" "$QPS" "$ratio" "$d_p95" "$P95" "$cpu_us" "$rss" "$errs")")
  done
done

echo
echo "sysbench: threads=$THREADS time=${TIME}s tables=$TABLES x $TABLE_SIZE; raw output in $OUT"
printf '%-28s | %10s | %10s | %5s | %9s | %9s | %11s | %9s | %s\n' mode "direct QPS" "proxy QPS" ratio \
  "direct p95" "proxy p95" "proxy CPU" "proxy RSS" errors
printf '%-28s | %10s | %10s | %5s | %9s | %9s | %12s | %9s | %s\n' "" "" "" "" ms ms "µs/query" MiB ""  # µ is 2 bytes
printf '%s\n' "${ROWS[@]}"
[ "$FAILED" = 0 ] || { echo "bench: some sysbench runs failed (see $OUT)" >&2; exit 1; }
