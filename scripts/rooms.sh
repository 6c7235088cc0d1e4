#!/usr/bin/env bash
# rooms.sh up [--replicated]|down [--purge]|status — run one local mariadbd per "room" for tests
# and demos: room A (center) on 127.0.0.1:3316, server_id 1, GTID domain 1; room B (unit) on
# 127.0.0.1:3317, server_id 2, GTID domain 2. State lives in ${RB_ROOMS_DIR:-/tmp/rainbow-bridge-rooms}/{A,B}.
# `up`/`down` are idempotent and serialised with flock, so many test processes may call `up` at once.
# RB_ROOM_PORTS="PORT_A PORT_B" moves the rooms (with RB_ROOMS_DIR, a second pair beside the first).
# `up --replicated` also sets up two-way GTID replication between A and B (each a replica of the
# other, MASTER_USE_GTID=slave_pos, account rb_repl), as unit databases in a multi-active
# deployment need; the default pair stays independent, because the tests give each room its own
# copy of the same schemas. `status` shows each room's replication threads and position.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${RB_ROOMS_DIR:-/tmp/rainbow-bridge-rooms}"
ROOMS=(A B)
read -r PORT_A PORT_B <<<"${RB_ROOM_PORTS:-3316 3317}"
declare -A PORT=([A]="$PORT_A" [B]="$PORT_B") SID=([A]=1 [B]=2) OTHER=([A]=B [B]=A)
declare -A SCHEMAS=([A]="users.sql shop.sql scratch.sql mall.sql" [B]="users.sql shop.sql mall.sql")
export PATH="$PATH:/usr/sbin:/sbin"
ME="$(id -un)"   # OS user; mariadb-install-db grants it unix_socket access (root when run as root)

log() { echo "rooms: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_mariadb() {
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || {
    log "installing mariadb-server mariadb-client from Debian"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server mariadb-client
  }
}

alive() { # pid file names a live mariadbd (guards against stale files and reused pids)
  local p="$DIR/$1/mariadbd.pid"
  [ -s "$p" ] && [ "$(cat "/proc/$(cat "$p")/comm" 2>/dev/null)" = mariadbd ]
}
ping_ok() { mariadb-admin --no-defaults --socket="$DIR/$1/mariadbd.sock" -u"$ME" --connect-timeout=2 ping >/dev/null 2>&1; }
sql() { mariadb --no-defaults --socket="$DIR/$1/mariadbd.sock" -u"$ME" "${@:2}"; }

wait_ping() { # room pid seconds
  local i
  for ((i = 0; i < $3 * 5; i++)); do
    ping_ok "$1" && return 0
    kill -0 "$2" 2>/dev/null || { log "room $1: mariadbd (pid $2) exited"; break; }
    sleep 0.2
  done
  log "room $1 did not answer ping; tail of $DIR/$1/mariadbd.log:"
  tail -n 40 "$DIR/$1/mariadbd.log" >&2 || true
  return 1
}

apply_fixtures() { # room — (re)apply schema files when they changed since last applied
  local r=$1 f sum files=()
  for f in ${SCHEMAS[$r]}; do files+=("$ROOT/fixtures/schema/$f"); done
  sum="$(cat "${files[@]}" | sha256sum | cut -d' ' -f1)"
  [ "$(cat "$DIR/$r/fixtures.sha" 2>/dev/null)" = "$sum" ] && return 0
  for f in "${files[@]}"; do
    # sql_log_bin=0: each room gets its own fixtures; keep them out of the binlog (replication).
    { echo "SET SESSION sql_log_bin=0;"; cat "$f"; } | sql "$r" || { log "room $r: $f failed"; return 1; }
  done
  echo "$sum" >"$DIR/$r/fixtures.sha"
  log "room $r: applied ${SCHEMAS[$r]}"
}

start_room() {
  local r=$1 d="$DIR/$1" pid
  mkdir -p "$d"
  if alive "$r"; then
    pid="$(cat "$d/mariadbd.pid")"
  else
    if [ ! -d "$d/data/mysql" ]; then
      log "room $r: initialising $d/data"
      rm -rf "$d/data"
      mariadb-install-db --no-defaults --datadir="$d/data" --auth-root-authentication-method=socket \
        --auth-root-socket-user="$ME" --skip-test-db --skip-name-resolve >"$d/install.log" 2>&1 \
        || { tail -n 40 "$d/install.log" >&2; return 1; }
    fi
    local user=(); [ "$(id -u)" = 0 ] && user=(--user=root)
    log "room $r: starting mariadbd on 127.0.0.1:${PORT[$r]}"
    # 9>&- : the child must not inherit the flock descriptor, or the lock would live as long as it.
    setsid nohup mariadbd --no-defaults --datadir="$d/data" --port="${PORT[$r]}" --bind-address=127.0.0.1 \
      --socket="$d/mariadbd.sock" --pid-file="$d/mariadbd.pid" --log-error="$d/mariadbd.log" \
      --server-id="${SID[$r]}" --gtid-domain-id="${SID[$r]}" --log-bin=mariadb-bin \
      --binlog-format=ROW --gtid-strict-mode=ON --log-slave-updates=OFF \
      --max-connections=1000 --skip-name-resolve "${user[@]}" \
      </dev/null >>"$d/mariadbd.out" 2>&1 9>&- &
    pid=$!
  fi
  wait_ping "$r" "$pid" 60
  apply_fixtures "$r"
}

stop_room() {
  local r=$1 d="$DIR/$1" pid i
  alive "$r" || { log "room $r: not running"; return 0; }
  pid="$(cat "$d/mariadbd.pid")"
  log "room $r: stopping (pid $pid)"
  mariadb-admin --no-defaults --socket="$d/mariadbd.sock" -u"$ME" shutdown 2>/dev/null || kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  log "room $r: pid $pid still alive after 60 s, sending SIGKILL"; kill -9 "$pid" 2>/dev/null || true
}

replicate() { # room — make it a replica of the other room (idempotent)
  local r=$1 o=${OTHER[$1]}
  sql "$r" -e "SET GLOBAL gtid_domain_id = ${SID[$r]};
    SET SESSION sql_log_bin = 0;
    CREATE USER IF NOT EXISTS 'rb_repl'@'127.0.0.1' IDENTIFIED BY 'rb_repl';
    GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'rb_repl'@'127.0.0.1';"
  # Set up already, with both threads running (the IO thread may still be connecting to a room
  # that has just started); a stopped thread is started again below.
  if slave_field "$r" Master_Port | grep -qx "${PORT[$o]}" \
    && slave_field "$r" Slave_SQL_Running | grep -qx Yes \
    && slave_field "$r" Slave_IO_Running | grep -qxE 'Yes|Connecting'; then
    return 0
  fi
  local err
  err="$(slave_field "$r" Last_SQL_Error)"
  if [ -n "$err" ]; then
    # Restarting would only hit the same event again; skipping it would hide a lost write.
    log "room $r: replication from room $o stopped on an error: $err"
    log "the rooms' data have diverged; start afresh with: $0 down --purge && $0 up --replicated"
    exit 1
  fi
  log "room $r: replica of room $o (127.0.0.1:${PORT[$o]}, GTID)"
  sql "$r" -e "STOP SLAVE; CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = ${PORT[$o]},
    MASTER_USER = 'rb_repl', MASTER_PASSWORD = 'rb_repl', MASTER_USE_GTID = slave_pos,
    MASTER_CONNECT_RETRY = 1; START SLAVE;"
}

slave_field() { # room field — one field of SHOW SLAVE STATUS (empty when not a replica)
  sql "$1" -e 'SHOW SLAVE STATUS\G' 2>/dev/null | awk -v f="$2" '$1 == f":" { $1 = ""; sub(/^ /, ""); print }'
}

replication_status() { # room
  local port err
  port="$(slave_field "$1" Master_Port)"
  [ -n "$port" ] || return 0
  err="$(slave_field "$1" Last_Error)$(slave_field "$1" Last_IO_Error)"
  echo "replica of :$port io=$(slave_field "$1" Slave_IO_Running) sql=$(slave_field "$1" Slave_SQL_Running)" \
    "gtid_slave_pos=$(sql "$1" -N -B -e 'SELECT @@gtid_slave_pos')${err:+ error: $err}"
}

locked() { mkdir -p "$DIR"; exec 9>"$DIR/.lock"; flock -w 300 9 || { log "could not lock $DIR/.lock"; exit 1; }; }

case "${1:-}" in
  up)
    ensure_mariadb; locked
    for r in "${ROOMS[@]}"; do start_room "$r"; done
    if [ "${2:-}" = --replicated ]; then
      for r in "${ROOMS[@]}"; do replicate "$r"; done
    fi ;;
  down)
    [ -d "$DIR" ] || exit 0
    locked
    for r in "${ROOMS[@]}"; do stop_room "$r"; done
    if [ "${2:-}" = --purge ]; then log "purging $DIR"; rm -rf "$DIR"; fi ;;
  status)
    for r in "${ROOMS[@]}"; do
      if alive "$r" && ping_ok "$r"; then
        echo "$r ${PORT[$r]} running $(sql "$r" -N -B -e 'SELECT VERSION()' 2>/dev/null || echo '?')" \
          "server_id ${SID[$r]} gtid_binlog_pos $(sql "$r" -N -B -e 'SELECT @@gtid_binlog_pos' 2>/dev/null)" \
          "$(replication_status "$r")"
      else echo "$r ${PORT[$r]} stopped -"; fi
    done ;;
  *) echo "usage: $0 up [--replicated] | down [--purge] | status" >&2; exit 2 ;;
esac
