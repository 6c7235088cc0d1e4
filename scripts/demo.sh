#!/usr/bin/env bash
# demo.sh [stop] — start the MariaDB rooms and a room-A Rainbow Bridge proxy on 127.0.0.1:3307,
# then print how to connect. `demo.sh stop` stops that proxy and the rooms (data is kept).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEMO="${RB_DEMO_DIR:-/tmp/rainbow-bridge-demo}"
PIDF="$DEMO/proxy-a.pid" LOG="$DEMO/proxy-a.log" CONFIG=fixtures/demo/room-a.toml
mkdir -p "$DEMO"

proxy_alive() { [ -s "$PIDF" ] && kill -0 "$(cat "$PIDF")" 2>/dev/null; }

if [ "${1:-}" = stop ]; then
  if proxy_alive; then
    pid="$(cat "$PIDF")"; echo "demo: stopping proxy (pid $pid)"
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$PIDF"
  exec scripts/rooms.sh down
fi
[ $# -eq 0 ] || { echo "usage: $0 [stop]" >&2; exit 2; }

echo "== rooms"
scripts/rooms.sh up   # also installs mariadb-server and the mariadb client if missing

echo "== build"
command -v cargo >/dev/null || { echo "demo: cargo not found (install Rust: https://rustup.rs)" >&2; exit 1; }
cargo build --release -p rainbow-bridge

echo "== proxy"
[ -f "$CONFIG" ] || { echo "demo: $CONFIG is missing" >&2; exit 1; }
if proxy_alive; then
  echo "demo: proxy already running (pid $(cat "$PIDF"))"
else
  setsid nohup target/release/rainbow-bridge --config "$CONFIG" </dev/null >>"$LOG" 2>&1 &
  echo $! >"$PIDF"
fi
for i in $(seq 60); do
  mariadb -h127.0.0.1 -P3307 -udemo -pdemo --connect-timeout=2 -e 'SELECT 1' >/dev/null 2>&1 && break
  if [ "$i" -eq 60 ] || ! proxy_alive; then
    echo "demo: proxy did not accept a login on 127.0.0.1:3307; tail of $LOG:" >&2
    tail -n 40 "$LOG" >&2 || true
    exit 1
  fi
  sleep 0.5
done

cat <<MSG

Rainbow Bridge (room A) is listening on 127.0.0.1:3307 (pid $(cat "$PIDF"), log $LOG).
Connect:
  mariadb -h127.0.0.1 -P3307 -udemo -pdemo -c shop
Try:
  SELECT * FROM t_order LIMIT 5;
  USE scratch; CREATE TABLE t(a INT);
Stop the proxy and the rooms:
  scripts/demo.sh stop
MSG
