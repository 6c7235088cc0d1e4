#!/usr/bin/env bash
# demo.sh [cluster] [stop] — start a working demo, then print how to use it.
#   demo.sh          the MariaDB rooms and one proxy per room, on its own rules file (room A on
#                    127.0.0.1:3307, room B on 127.0.0.1:3308).
#   demo.sh cluster  cluster mode (docs/cutover.md): etcd, a pair of rooms that replicate each
#                    other (127.0.0.1:3326 and :3327), rules in etcd, two proxies per room (room A
#                    on :3407 and :3417, room B on :3408 and :3418); ready for `ctl cutover`.
#   demo.sh stop     stops every demo proxy, the demo's rooms and the cluster demo's etcd (data
#                    is kept).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEMO="${RB_DEMO_DIR:-/tmp/rainbow-bridge-demo}"
mkdir -p "$DEMO"
# The cluster demo's rooms, rules prefix and proxies (instance, room, port, admin port).
CROOMS="$DEMO/rooms-replicated"
CPORTS="3326 3327"
# Its own etcd too (data in $DEMO/etcd, client port 2399), apart from the tests' one on 2379.
export RB_ETCD_DIR="$DEMO/etcd" RB_ETCD_PORT=2399
CURL="etcd://127.0.0.1:2399/rainbow-bridge-demo"
CLUSTER_PROXIES=("a1 A 3407 6132" "a2 A 3417 6142" "b1 B 3408 6133" "b2 B 3418 6143")

pidf() { echo "$DEMO/proxy-$1.pid"; }
logf() { echo "$DEMO/proxy-$1.log"; }
proxy_alive() { [ -s "$(pidf "$1")" ] && kill -0 "$(cat "$(pidf "$1")")" 2>/dev/null; }
stop_proxy() { # name
  local pid
  if proxy_alive "$1"; then
    pid="$(cat "$(pidf "$1")")"; echo "demo: stopping proxy $1 (pid $pid)"
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
  fi
  rm -f "$(pidf "$1")"
}

if [ "${1:-}" = stop ]; then
  [ $# -eq 1 ] || { echo "usage: $0 [cluster] | stop" >&2; exit 2; }
  for p in a b; do stop_proxy "$p"; done
  for p in "${CLUSTER_PROXIES[@]}"; do stop_proxy "${p%% *}"; done
  if [ -d "$CROOMS" ]; then RB_ROOMS_DIR="$CROOMS" RB_ROOM_PORTS="$CPORTS" scripts/rooms.sh down; fi
  scripts/etcd.sh down
  exec scripts/rooms.sh down
fi
MODE=file
if [ "${1:-}" = cluster ]; then MODE=cluster; shift; fi
[ $# -eq 0 ] || { echo "usage: $0 [cluster] | stop" >&2; exit 2; }

build() {
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
}

restart_if_older() { # name — a proxy started from an older build starts again
  if proxy_alive "$1" && [ target/release/rainbow-bridge -nt "$(pidf "$1")" ]; then
    echo "demo: proxy $1 runs an older build: restarting it"
    stop_proxy "$1"
  fi
}

start() { # name config port user password
  local name="$1" config="$2" port="$3" user="$4" pw="$5"
  [ -f "$config" ] || { echo "demo: $config is missing" >&2; exit 1; }
  if proxy_alive "$name"; then
    echo "demo: proxy $name already running (pid $(cat "$(pidf "$name")"))"
  else
    setsid nohup target/release/rainbow-bridge --config "$config" </dev/null >>"$(logf "$name")" 2>&1 &
    echo $! >"$(pidf "$name")"
  fi
  for i in $(seq 60); do
    mariadb -h127.0.0.1 -P"$port" -u"$user" -p"$pw" --connect-timeout=2 -e 'SELECT 1' >/dev/null 2>&1 && return 0
    if [ "$i" -eq 60 ] || ! proxy_alive "$name"; then
      echo "demo: proxy $name did not accept a login on 127.0.0.1:$port; tail of $(logf "$name"):" >&2
      tail -n 40 "$(logf "$name")" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

if [ "$MODE" = cluster ]; then
  echo "== rooms (replicating each other)"
  # Their own pair, not the default one: the tests give each default room its own data.
  RB_ROOMS_DIR="$CROOMS" RB_ROOM_PORTS="$CPORTS" scripts/rooms.sh up --replicated
  # Room B replicates everything room A writes, the center database `scratch` (room A only)
  # included: give room B the empty database, outside the binary log, so those events apply.
  mariadb --no-defaults --socket="$CROOMS/B/mariadbd.sock" -u"$(id -un)" \
    -e 'SET SESSION sql_log_bin = 0; CREATE DATABASE IF NOT EXISTS scratch'

  echo "== etcd"
  scripts/etcd.sh up >/dev/null   # also installs Debian's etcd-server if missing

  build

  echo "== rules in etcd"
  CONF="$DEMO/cluster"
  mkdir -p "$CONF"
  # The demo's rules, with the data sources on this pair of rooms.
  sed -e 's/^port = 3316$/port = 3326/' -e 's/^port = 3317$/port = 3327/' fixtures/demo/rules.toml >"$CONF/rules.toml"
  CTL=(target/release/rainbow-bridge ctl --cluster "$CURL")
  if "${CTL[@]}" status | grep -q '^rules in etcd: none'; then
    "${CTL[@]}" put-rules "$CONF/rules.toml"
  else
    echo "demo: etcd already holds the demo's rules (kept: cut-overs made before stay); to start over: scripts/demo.sh stop; rm -rf $DEMO/etcd $DEMO/cluster"
  fi

  echo "== proxies"
  for p in "${CLUSTER_PROXIES[@]}"; do
    read -r name room port admin <<<"$p"
    # Each proxy writes the rules it applies from etcd back to its own rules file.
    [ -f "$CONF/rules-$name.toml" ] || cp "$CONF/rules.toml" "$CONF/rules-$name.toml"
    cat >"$CONF/$name.toml" <<TOML
# Rainbow Bridge cluster demo: proxy $name of room $room (written by scripts/demo.sh cluster).
[proxy]
listen = "127.0.0.1:$port"
room = "$room"
rules = "rules-$name.toml"

[pool]
max_size = 16

[admin]
listen = "127.0.0.1:$admin"
users.admin = { password_hash = "*4ACFE3202A5FF5CF467898FC58AAB1D615029441" }   # password "admin"

[cluster]
url = "$CURL"
instance = "$name"
TOML
    restart_if_older "$name"
    start "$name" "$CONF/$name.toml" "$port" app app
  done
  "${CTL[@]}" status

  cat <<MSG

Rainbow Bridge in cluster mode: rules in etcd ($CURL; etcd data in $DEMO/etcd), rooms on 127.0.0.1:3326 (A) and :3327 (B)
replicating each other, proxies a1 :3407, a2 :3417 (room A), b1 :3408, b2 :3418 (room B).
Logs: $DEMO/proxy-{a1,a2,b1,b2}.log. Buyer 1001 (route code 1001) belongs to room A:
  mariadb -h127.0.0.1 -P3407 -uapp -papp -c shop -e "UPDATE t_order SET status = 'paid' WHERE buyer_id = 1001"   # done in A
  mariadb -h127.0.0.1 -P3408 -uapp -papp -c shop -e "UPDATE t_order SET status = 'paid' WHERE buyer_id = 1001"   # 8031: room A owns it
Move it to room B (ban, acknowledgements, GTID wait, traffic switch, unban; docs/cutover.md):
  target/release/rainbow-bridge ctl --cluster $CURL cutover --route-codes 1001 --to B --min-proxies 4
  target/release/rainbow-bridge ctl --cluster $CURL status
Now the same UPDATE works through :3408 and :3418, and :3407 answers 8031. Back again:
  target/release/rainbow-bridge ctl --cluster $CURL cutover --route-codes 1001 --to A --min-proxies 4
Each proxy's SHOW CLUSTER (admin ports 6132, 6142, 6133, 6143):
  mariadb -h127.0.0.1 -P6132 -uadmin -padmin -e 'SHOW CLUSTER'
Stop it all:
  scripts/demo.sh stop
MSG
  exit 0
fi

echo "== rooms"
scripts/rooms.sh up   # also installs mariadb-server and the mariadb client if missing

build

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
  for r in a b; do stop_proxy "$r"; done   # proxies running the old rules start again
fi
for r in a b; do restart_if_older "$r"; done
start a "$CONF/room-a.toml" 3307 demo demo
start b "$CONF/room-b.toml" 3308 app app
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
