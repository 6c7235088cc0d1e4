#!/usr/bin/env bash
# etcd.sh up [--members N] | down [--purge] | status | stop-member I — a local etcd (Debian's
# etcd-server, installed if missing) for cluster mode's tests and demos (docs/cutover.md).
#
# One member (the default): clients on 127.0.0.1:${RB_ETCD_PORT:-2379}, peers on the next port,
# data in ${RB_ETCD_DIR:-/tmp/rainbow-bridge-etcd}/data.
# --members N (3 or 5, as production runs it): member I (0-based) takes client port PORT+2I and
# peer port PORT+2I+1, data in DIR/mI/; `up` starts the members that are not running (a member
# stopped with `stop-member I` rejoins with its data). The cluster's endpoints are printed, e.g.
# `127.0.0.1:2379,127.0.0.1:2381,127.0.0.1:2383`, ready for etcd://ENDPOINTS/PREFIX.
# Idempotent; serialised with flock so many test processes may call `up` at once.
set -euo pipefail

DIR="${RB_ETCD_DIR:-/tmp/rainbow-bridge-etcd}"
PORT="${RB_ETCD_PORT:-2379}"
export PATH="$PATH:/usr/sbin:/sbin" ETCDCTL_API=3
log() { echo "etcd: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_etcd() {
  command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1 && return 0
  log "installing etcd-server etcd-client from Debian"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server etcd-client
  # On a machine with systemd the package starts its own etcd on the same ports: stop it, so
  # the one this script starts (with its own data directory) is the one the tests talk to.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    log "stopping and disabling the packaged etcd.service"
    as_root systemctl disable --now etcd >/dev/null 2>&1 || true
  fi
}
locked() { mkdir -p "$DIR"; exec 9>"$DIR/.lock"; flock -w 120 9 || { log "could not lock $DIR/.lock"; exit 1; }; }

# The members: N from --members, else what an earlier `up --members N` recorded, else 1.
members() { if [ -s "$DIR/members" ]; then cat "$DIR/members"; else echo 1; fi; }
# Member I's directory: the single member keeps the layout of earlier versions.
mdir() { if [ "$(members)" = 1 ]; then echo "$DIR"; else echo "$DIR/m$1"; fi; }
client_port() { echo $((PORT + 2 * $1)); }
peer_port() { echo $((PORT + 2 * $1 + 1)); }
endpoints() {
  local n i out=""; n="$(members)"
  for ((i = 0; i < n; i++)); do out="${out:+$out,}127.0.0.1:$(client_port "$i")"; done
  echo "$out"
}
alive() { local d; d="$(mdir "$1")"; [ -s "$d/etcd.pid" ] && [ "$(cat "/proc/$(cat "$d/etcd.pid")/comm" 2>/dev/null)" = etcd ]; }
healthy() {
  local e; e="$(endpoints)"
  etcdctl --endpoints="${e//127/http://127}" --dial-timeout=1s endpoint health >/dev/null 2>&1
}

start_member() {
  local i="$1" n d cluster="" j
  n="$(members)"; d="$(mdir "$i")"; mkdir -p "$d"
  for ((j = 0; j < n; j++)); do
    cluster="${cluster:+$cluster,}rb$j=http://127.0.0.1:$(peer_port "$j")"
  done
  [ "$n" = 1 ] && cluster="rb=http://127.0.0.1:$(peer_port 0)"
  local name=rb; [ "$n" = 1 ] || name="rb$i"
  log "starting etcd member $name on 127.0.0.1:$(client_port "$i") (data $d/data)"
  # 9>&- : the child must not inherit the flock descriptor.
  setsid nohup etcd --name "$name" --data-dir "$d/data" \
    --listen-client-urls "http://127.0.0.1:$(client_port "$i")" \
    --advertise-client-urls "http://127.0.0.1:$(client_port "$i")" \
    --listen-peer-urls "http://127.0.0.1:$(peer_port "$i")" \
    --initial-advertise-peer-urls "http://127.0.0.1:$(peer_port "$i")" \
    --initial-cluster "$cluster" --initial-cluster-token "rb-$PORT" \
    --auto-compaction-mode periodic --auto-compaction-retention 1h \
    </dev/null >>"$d/etcd.log" 2>&1 9>&- &
  echo $! >"$d/etcd.pid"
}

stop_member() {
  local d; d="$(mdir "$1")"
  if alive "$1"; then log "stopping etcd member $1 (pid $(cat "$d/etcd.pid"))"; kill "$(cat "$d/etcd.pid")"; fi
  for _ in $(seq 50); do alive "$1" || return 0; sleep 0.1; done
}

case "${1:-}" in
  up)
    locked; ensure_etcd
    if [ "${2:-}" = --members ]; then
      want="${3:?--members N}"
      [ "$want" -ge 1 ] 2>/dev/null || { echo "$0: --members takes a number" >&2; exit 2; }
      if [ "$(members)" != "$want" ] && { [ -d "$DIR/data" ] || [ -d "$DIR/m0" ]; }; then
        log "$DIR holds an etcd of $(members) member(s); run '$0 down --purge' first"; exit 1
      fi
      echo "$want" >"$DIR/members"
    fi
    n="$(members)"
    for ((i = 0; i < n; i++)); do alive "$i" || start_member "$i"; done
    for _ in $(seq 150); do
      if healthy; then endpoints; exit 0; fi
      sleep 0.1
    done
    log "etcd did not become healthy; tail of its log(s):"
    for ((i = 0; i < n; i++)); do tail -n 15 "$(mdir "$i")/etcd.log" >&2 || true; done
    exit 1 ;;
  stop-member)
    locked; stop_member "${2:?stop-member I}" ;;
  down)
    [ -d "$DIR" ] || exit 0
    locked
    n="$(members)"
    for ((i = 0; i < n; i++)); do stop_member "$i"; done
    if [ "${2:-}" = --purge ]; then log "purging $DIR"; rm -rf "$DIR"; fi ;;
  status)
    n="$(members)"
    for ((i = 0; i < n; i++)); do
      if alive "$i"; then s=running; else s=stopped; fi
      echo "etcd member $i 127.0.0.1:$(client_port "$i") $s"
    done
    if healthy; then echo "etcd $(endpoints) healthy ($(etcd --version | head -n1))"
    else echo "etcd $(endpoints) not every member healthy"; fi ;;
  *) echo "usage: $0 up [--members N] | down [--purge] | status | stop-member I" >&2; exit 2 ;;
esac
