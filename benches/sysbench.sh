#!/usr/bin/env bash
# sysbench.sh — compare, in one run, direct MariaDB (room A, 127.0.0.1:3316), HAProxy in TCP mode
# (a plain forwarder, the floor of every proxy; 127.0.0.1:${RB_HAPROXY_PORT:-3391}) and Rainbow
# Bridge (127.0.0.1:${RB_BENCH_PORT:-3390}, config fixtures/bench/proxy.toml: a unit database, so
# writes are analysed and decided): oltp_point_select and oltp_read_write, each with
# --db-ps-mode=auto and =disable. Every sysbench statement carries the hint
# `/* rb: sharding_key=1 */` (a patched copy of sysbench's oltp_common.lua, made at run time).
# Env: THREADS (16), TIME (20 s per run), RB_BENCH_PORT (3390), RB_HAPROXY_PORT (3391),
# RB_BENCH_DIR (raw outputs, logs), TESTS (default "oltp_point_select oltp_read_write").
# SHARDED=1 also runs oltp_point_select through a second proxy (127.0.0.1:3392, config
# fixtures/bench/proxy-sharded.toml) whose sysbench tables are sharded over 2 data sources x 4
# tables (sbshard_<id % 2>.sbtestN_<id / 2 % 4>, copied from sbtest), and prints its CPU per
# query against the unsharded proxy's: the cost of routing a single-node statement to a node.
# Any sysbench "ignored errors" (e.g. deadlocks, also possible directly) flag the row FAIL;
# the script exits 1 only if a sysbench run itself failed (such runs show errors >= 1000).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${RB_BENCH_PORT:-3390}" THREADS="${THREADS:-16}" TIME="${TIME:-20}"
HAPORT="${RB_HAPROXY_PORT:-3391}" TESTS="${TESTS:-oltp_point_select oltp_read_write}"
OUT="${RB_BENCH_DIR:-/tmp/rainbow-bridge-bench}" CONFIG=fixtures/bench/proxy.toml
TABLES=4 TABLE_SIZE="${TABLE_SIZE:-100000}"
mkdir -p "$OUT"
say() { printf '==> %s\n' "$*" >&2; }
direct_sql() { mariadb --no-defaults -h127.0.0.1 -P3316 -urb -prb "$@"; }

say "rooms"
scripts/rooms.sh up
if ! command -v sysbench >/dev/null || ! command -v haproxy >/dev/null || ! command -v protoc >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  # protobuf-compiler: protoc, for the etcd client's build.
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q sysbench haproxy protobuf-compiler
fi
HAPROXY_BIN="$(command -v haproxy || echo /usr/sbin/haproxy)"

# sysbench's own scripts, with the hint in front of every statement it prepares.
LUA="$OUT/lua"
mkdir -p "$LUA"
cp /usr/share/sysbench/oltp_point_select.lua /usr/share/sysbench/oltp_read_write.lua "$LUA/"
sed -E 's#^( *)"(SELECT|UPDATE|DELETE|INSERT) #\1"/* rb: sharding_key=1 */ \2 #' \
  /usr/share/sysbench/oltp_common.lua >"$LUA/oltp_common.lua"
[ "$(grep -c 'rb: sharding_key=1' "$LUA/oltp_common.lua")" -ge 9 ] || {
  echo "bench: could not add the hint to sysbench's oltp_common.lua" >&2; exit 1; }
export LUA_PATH="$LUA/?.lua;;"
direct_sql -e 'CREATE DATABASE IF NOT EXISTS sbtest'

say "build"
cargo build --release -p rainbow-bridge

# start_proxy CONFIG LOG -> PID of a proxy started in the background
start_proxy() {
  [ -f "$1" ] || { echo "bench: $1 is missing" >&2; exit 1; }
  setsid nohup target/release/rainbow-bridge --config "$1" </dev/null >"$2" 2>&1 &
  echo $!
}
# stop PID: TERM, then KILL after 5 s
stop() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 25); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$1" 2>/dev/null || true
}
say "proxy on 127.0.0.1:$PORT"
PROXY="$(start_proxy "$CONFIG" "$OUT/proxy.log")"
SHARDED="${SHARDED:-0}" SPORT=3392 SPROXY=
if [ "$SHARDED" = 1 ]; then
  say "sharded-layout proxy on 127.0.0.1:$SPORT"
  SPROXY="$(start_proxy fixtures/bench/proxy-sharded.toml "$OUT/proxy-sharded.log")"
fi
stop_proxy() { stop "$PROXY"; [ -z "$SPROXY" ] || stop "$SPROXY"; }

say "haproxy (TCP mode, one thread) on 127.0.0.1:$HAPORT"
cat >"$OUT/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen mariadb
  bind 127.0.0.1:$HAPORT
  server room_a 127.0.0.1:3316
CFG
"$HAPROXY_BIN" -db -f "$OUT/haproxy.cfg" </dev/null >"$OUT/haproxy.log" 2>&1 &
HAPROXY=$!
stop_all() {
  stop_proxy
  kill "$HAPROXY" 2>/dev/null || true
}
trap stop_all EXIT
# wait_login PORT DB PID LOG: the proxy answers a login, and it is ours
wait_login() {
  for i in $(seq 60); do
    mariadb --no-defaults -h127.0.0.1 -P"$1" -ubench -pbench -D"$2" --connect-timeout=2 \
      -e 'SELECT 1' >/dev/null 2>&1 && break
    if [ "$i" -eq 60 ] || ! kill -0 "$3" 2>/dev/null; then
      echo "bench: proxy did not accept a login on 127.0.0.1:$1; tail of $4:" >&2
      tail -n 40 "$4" >&2; exit 1
    fi
    sleep 0.5
  done
  # Something else on the port would answer the login above: make sure it is our proxy.
  kill -0 "$3" 2>/dev/null || {
    echo "bench: the proxy exited (is 127.0.0.1:$1 already in use?); tail of $4:" >&2
    tail -n 20 "$4" >&2; exit 1
  }
}
wait_login "$PORT" sbtest "$PROXY" "$OUT/proxy.log"

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

# The sharded copy: every sbtest table split over sbshard_0/1 x 4 tables, rebuilt when its
# row count is not the table size.
if [ "$SHARDED" = 1 ]; then
  # sharded_rows N: rows of logical table sbtestN over its 8 physical tables (0 if any is missing)
  sharded_rows() {
    local q="SELECT 0" k m
    for k in 0 1; do for m in 0 1 2 3; do q+=" + (SELECT COUNT(*) FROM sbshard_$k.sbtest$1_$m)"; done; done
    direct_sql -N -B -e "$q" 2>/dev/null || echo 0
  }
  if [ "$(sharded_rows 1)" -eq "$TABLE_SIZE" ] && [ "$(sharded_rows "$TABLES")" -eq "$TABLE_SIZE" ]; then
    say "sharded copy: sbshard_0/1 already hold the $TABLES tables, skipping"
  else
    say "sharded copy: $TABLES tables -> sbshard_0/1 x 4 tables each"
    sql=""
    for k in 0 1; do
      sql+="DROP DATABASE IF EXISTS sbshard_$k; CREATE DATABASE sbshard_$k;"
      sql+="GRANT ALL PRIVILEGES ON sbshard_$k.* TO 'rb_app'@'127.0.0.1', 'rb_app'@'localhost';"
      for n in $(seq "$TABLES"); do
        for m in 0 1 2 3; do
          sql+="CREATE TABLE sbshard_$k.sbtest${n}_$m LIKE sbtest.sbtest$n;"
          sql+="INSERT INTO sbshard_$k.sbtest${n}_$m SELECT * FROM sbtest.sbtest$n WHERE id % 2 = $k AND id DIV 2 % 4 = $m;"
        done
      done
    done
    direct_sql -e "$sql"
  fi
  wait_login "$SPORT" sbshard "$SPROXY" "$OUT/proxy-sharded.log"
fi

for i in $(seq 20); do
  mariadb --no-defaults -h127.0.0.1 -P"$HAPORT" -urb -prb --connect-timeout=2 -e 'SELECT 1' \
    >/dev/null 2>&1 && break
  [ "$i" -lt 20 ] && kill -0 "$HAPROXY" 2>/dev/null || {
    echo "bench: haproxy did not forward on 127.0.0.1:$HAPORT; $OUT/haproxy.log:" >&2
    cat "$OUT/haproxy.log" >&2; exit 1; }
  sleep 0.5
done

# utime+stime (fields 14, 15) of process $1, in clock ticks.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
CLK="$(getconf CLK_TCK)"

# run NAME TEST PS_MODE TARGET... -> sets QPS QUERIES P95 ERR (ERR: ignored errors, +1000 if sysbench failed)
run() {
  local name=$1 test=$2 ps=$3 rc=0; shift 3
  sysbench "$LUA/$test.lua" "${COMMON[@]}" "$@" --db-ps-mode="$ps" --threads="$THREADS" --time="$TIME" \
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

# The machine's total and stolen CPU ticks (/proc/stat): on a VM, time the host gave to others.
steal_ticks() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9 }' /proc/stat; }
STEALS=()

# measure NAME PID TEST PS TARGET... -> sets QPS P95 ERR CPU_US (CPU of PID per query; "-" without
# PID); appends the run's CPU steal percentage to STEALS
measure() {
  local name=$1 pid=$2 test=$3 ps=$4 t0=0 t1=0 s0 s1; shift 4
  [ -n "$pid" ] && t0="$(cpu_ticks "$pid")"
  s0="$(steal_ticks)"
  run "$name" "$test" "$ps" "$@"
  s1="$(steal_ticks)"
  STEALS+=("$(echo "$s0 $s1" | awk '{ if ($3 > $1) printf "%.0f", ($4 - $2) * 100 / ($3 - $1); else print 0 }')")
  CPU_US=-
  if [ -n "$pid" ]; then
    t1="$(cpu_ticks "$pid" 2>/dev/null || echo "$t0")"
    CPU_US="$(awk -v a="$t0" -v b="$t1" -v hz="$CLK" -v q="$QUERIES" \
      'BEGIN { if (q > 0) printf "%.1f", (b - a) / hz * 1e6 / q; else print "n/a" }')"
  fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "-" && b != "-") printf "%.2f", a / b; else print "n/a" }'; }

HAVIA=(--mysql-port="$HAPORT" --mysql-user=rb --mysql-password=rb)
SVIA=(--mysql-port="$SPORT" --mysql-user=bench --mysql-password=bench --mysql-db=sbshard)
ROWS=() SROWS=() FAILED=0
FMT='%-28s | %9s | %9s | %9s | %7s | %7s | %7s | %7s | %7s | %8s | %8s | %8s | %s'
for test in $TESTS; do
  for ps in auto disable; do
    mode="$test/ps=$ps"
    say "$mode: direct"
    measure "$test-$ps-direct" "" "$test" "$ps" "${DIRECT[@]}"
    d_qps=$QPS d_p95=$P95 d_err=$ERR
    say "$mode: haproxy"
    measure "$test-$ps-haproxy" "$HAPROXY" "$test" "$ps" "${HAVIA[@]}"
    h_qps=$QPS h_p95=$P95 h_err=$ERR h_cpu=$CPU_US
    say "$mode: rainbow-bridge"
    measure "$test-$ps-proxy" "$PROXY" "$test" "$ps" "${VIA[@]}"
    p_qps=$QPS p_p95=$P95 p_err=$ERR p_cpu=$CPU_US
    if [ "$SHARDED" = 1 ] && [ "$test" = oltp_point_select ]; then
      say "$mode: rainbow-bridge, sharded layout"
      measure "$test-$ps-sharded" "$SPROXY" "$test" "$ps" "${SVIA[@]}"
      [ "$ERR" -lt 1000 ] || FAILED=1
      SROWS+=("$(printf '%-28s | %9s | %9s | %7s | %8s | %8s | %9s | %s | %s' "$mode" "$p_qps" "$QPS" \
        "$(ratio "$QPS" "$p_qps")" "$p_cpu" "$CPU_US" "$(ratio "$CPU_US" "$p_cpu")" \
        "$([ "$ERR" = 0 ] && echo ok || echo "FAIL $ERR")" "${STEALS[${#STEALS[@]}-1]}%")")
    fi
    rss="$(awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$PROXY/status" 2>/dev/null || echo '?')"
    if [ "$d_err" = 0 ] && [ "$h_err" = 0 ] && [ "$p_err" = 0 ]; then errs=ok
    else errs="FAIL d=$d_err h=$h_err p=$p_err"; fi
    [ "$d_err" -lt 1000 ] && [ "$h_err" -lt 1000 ] && [ "$p_err" -lt 1000 ] || FAILED=1
    n=${#STEALS[@]}
    steal="${STEALS[n-3]}/${STEALS[n-2]}/${STEALS[n-1]}%"
    ROWS+=("$(printf "$FMT" "$mode" "$d_qps" "$h_qps" "$p_qps" "$(ratio "$p_qps" "$d_qps")" \
      "$(ratio "$p_qps" "$h_qps")" "$d_p95" "$h_p95" "$p_p95" "$h_cpu" "$p_cpu" \
      "$(ratio "$p_cpu" "$h_cpu")" "$errs") | $rss MiB | $steal")
  done
done

echo
echo "sysbench: threads=$THREADS time=${TIME}s tables=$TABLES x $TABLE_SIZE; raw output in $OUT"
echo "QPS; ratios rb/direct and rb/haproxy; p95 ms; CPU µs per query (haproxy, rb) and their ratio; rb RSS after the run;"
echo "CPU steal during the direct/haproxy/rb runs (a VM host busy elsewhere: above a few %, the row is noise)"
printf "$FMT | %s | %s\n" mode direct haproxy rb rb/dir rb/ha "dir p95" "ha p95" "rb p95" "ha CPU" "rb CPU" "CPU rb/ha" errors RSS steal
printf '%s\n' "${ROWS[@]}"
if [ "${#SROWS[@]}" -gt 0 ]; then
  echo
  echo "sharded layout (2 data sources x 4 tables, single-node point selects) against the unsharded proxy above:"
  printf '%-28s | %9s | %9s | %7s | %8s | %8s | %9s | %s | %s\n' mode "rb QPS" "shard QPS" ratio \
    "rb CPU" "shard CPU" "CPU ratio" errors steal
  printf '%s\n' "${SROWS[@]}"
fi
[ "$FAILED" = 0 ] || { echo "bench: some sysbench runs failed (see $OUT)" >&2; exit 1; }
