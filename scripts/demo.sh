#!/usr/bin/env bash
# demo.sh [stop] — start the MariaDB rooms and one Rainbow Bridge proxy per room (room A on
# 127.0.0.1:3307, room B on 127.0.0.1:3308), then print how to connect. `demo.sh stop` stops the
# proxies and the rooms (data is kept).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEMO="${RB_DEMO_DIR:-/tmp/rainbow-bridge-demo}"
mkdir -p "$DEMO"

pidf() { echo "$DEMO/proxy-$1.pid"; }
logf() { echo "$DEMO/proxy-$1.log"; }
proxy_alive() { [ -s "$(pidf "$1")" ] && kill -0 "$(cat "$(pidf "$1")")" 2>/dev/null; }

if [ "${1:-}" = stop ]; then
  for r in a b; do
    if proxy_alive "$r"; then
      pid="$(cat "$(pidf "$r")")"; echo "demo: stopping proxy of room ${r^^} (pid $pid)"
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$(pidf "$r")"
  done
  exec scripts/rooms.sh down
fi
[ $# -eq 0 ] || { echo "usage: $0 [stop]" >&2; exit 2; }

echo "== rooms"
scripts/rooms.sh up   # also installs mariadb-server and the mariadb client if missing

echo "== build"
command -v cargo >/dev/null || { echo "demo: cargo not found (install Rust: https://rustup.rs)" >&2; exit 1; }
# The etcd client (cluster mode) compiles etcd's protobuf definitions at build time.
if ! command -v protoc >/dev/null; then
  echo "demo: installing protobuf-compiler from Debian (protoc, for the build)"
  if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q protobuf-compiler
fi
cargo build --release -p rainbow-bridge

echo "== proxies"
# The proxies run on copies of fixtures/demo/: the admin interface writes rule changes back to
# the rules file, and those belong to the demo, not to the repository. The rules copy is kept
# across restarts (delete it to start over); the instance configs are refreshed.
CONF="$DEMO/config"
mkdir -p "$CONF"
cp fixtures/demo/room-a.toml fixtures/demo/room-b.toml "$CONF/"
# A copy made from an older fixtures/demo/rules.toml is replaced (the old one kept as .bak).
want="$(sha1sum fixtures/demo/rules.toml | cut -d' ' -f1)"
if [ ! -f "$CONF/rules.toml" ] || [ "$(cat "$CONF/rules.source" 2>/dev/null)" != "$want" ]; then
  [ -f "$CONF/rules.toml" ] && { cp "$CONF/rules.toml" "$CONF/rules.toml.bak"; echo "demo: fixtures/demo/rules.toml changed: rules copy replaced (old one in $CONF/rules.toml.bak)"; }
  cp fixtures/demo/rules.toml "$CONF/rules.toml"
  echo "$want" > "$CONF/rules.source"
  for r in a b; do  # proxies running the old rules start again
    if proxy_alive "$r"; then kill "$(cat "$(pidf "$r")")"; sleep 1; rm -f "$(pidf "$r")"; fi
  done
fi
# Proxies started from an older build start again.
for r in a b; do
  if proxy_alive "$r" && [ target/release/rainbow-bridge -nt "$(pidf "$r")" ]; then
    echo "demo: proxy of room ${r^^} runs an older build: restarting it"
    kill "$(cat "$(pidf "$r")")"; sleep 1; rm -f "$(pidf "$r")"
  fi
done
start() { # room-letter port user password
  local r="$1" port="$2" user="$3" pw="$4" config="$CONF/room-$1.toml"
  [ -f "$config" ] || { echo "demo: $config is missing" >&2; exit 1; }
  if proxy_alive "$r"; then
    echo "demo: proxy of room ${r^^} already running (pid $(cat "$(pidf "$r")"))"
  else
    setsid nohup target/release/rainbow-bridge --config "$config" </dev/null >>"$(logf "$r")" 2>&1 &
    echo $! >"$(pidf "$r")"
  fi
  for i in $(seq 60); do
    mariadb -h127.0.0.1 -P"$port" -u"$user" -p"$pw" --connect-timeout=2 -e 'SELECT 1' >/dev/null 2>&1 && return 0
    if [ "$i" -eq 60 ] || ! proxy_alive "$r"; then
      echo "demo: proxy of room ${r^^} did not accept a login on 127.0.0.1:$port; tail of $(logf "$r"):" >&2
      tail -n 40 "$(logf "$r")" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}
start a 3307 demo demo
start b 3308 app app

cat <<MSG

Rainbow Bridge is listening: room A (center) on 127.0.0.1:3307, room B (unit) on 127.0.0.1:3308.
Logs: $(logf a), $(logf b). Rules: $CONF/rules.toml (buyers 0-4999 in A, 5000-9999 in B).
Connect (-c keeps comments, so hints reach the proxy):
  mariadb -h127.0.0.1 -P3307 -udemo -pdemo -c shop     # center connection, room A
  mariadb -h127.0.0.1 -P3308 -uapp -papp -c shop       # unit connection, room B
Try:
  SELECT * FROM t_order LIMIT 5;
  USE scratch; CREATE TABLE t(a INT);                  # room A only: a center database
  USE mall; SELECT buyer_id, COUNT(*), SUM(amount) FROM t_order GROUP BY buyer_id;   # 4 shards merged
  USE mall; SELECT * FROM t_order ORDER BY amount DESC LIMIT 3;
  target/release/rainbow-bridge route --rules fixtures/demo/rules.toml --room B --database shop \\
    "UPDATE t_order SET status = 'paid' WHERE buyer_id = 1001"
  target/release/rainbow-bridge route --rules fixtures/demo/rules.toml --room A --database mall \\
    "SELECT status, COUNT(*) FROM t_order GROUP BY status"        # each node's query (docs/sharding.md)
Admin interface (docs/operations.md) and metrics:
  mariadb -h127.0.0.1 -P6032 -uadmin -padmin -c shop   # room A: SHOW RULES; SHOW POOLS; PREVIEW …
  mariadb -h127.0.0.1 -P6033 -uadmin -padmin -c shop   # room B
  curl -s http://127.0.0.1:9104/metrics | grep rainbow_   # room A (room B: 9105)
Stop the proxies and the rooms:
  scripts/demo.sh stop
MSG
