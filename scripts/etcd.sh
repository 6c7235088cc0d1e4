#!/usr/bin/env bash
# etcd.sh up|down [--purge]|status — one local etcd (Debian's etcd-server, installed if missing)
# for cluster mode's tests and demos (docs/cutover.md): clients on 127.0.0.1:${RB_ETCD_PORT:-2379},
# peers on the next port, data in ${RB_ETCD_DIR:-/tmp/rainbow-bridge-etcd}. Idempotent; serialised
# with flock so many test processes may call `up` at once.
set -euo pipefail

DIR="${RB_ETCD_DIR:-/tmp/rainbow-bridge-etcd}"
PORT="${RB_ETCD_PORT:-2379}"
PEER=$((PORT + 1))
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
alive() { [ -s "$DIR/etcd.pid" ] && [ "$(cat "/proc/$(cat "$DIR/etcd.pid")/comm" 2>/dev/null)" = etcd ]; }
healthy() { etcdctl --endpoints="http://127.0.0.1:$PORT" --dial-timeout=1s endpoint health >/dev/null 2>&1; }
locked() { mkdir -p "$DIR"; exec 9>"$DIR/.lock"; flock -w 120 9 || { log "could not lock $DIR/.lock"; exit 1; }; }

case "${1:-}" in
  up)
    locked; ensure_etcd
    if ! alive; then
      log "starting etcd on 127.0.0.1:$PORT (data $DIR/data)"
      # 9>&- : the child must not inherit the flock descriptor.
      setsid nohup etcd --name rb --data-dir "$DIR/data" \
        --listen-client-urls "http://127.0.0.1:$PORT" --advertise-client-urls "http://127.0.0.1:$PORT" \
        --listen-peer-urls "http://127.0.0.1:$PEER" --initial-advertise-peer-urls "http://127.0.0.1:$PEER" \
        --initial-cluster "rb=http://127.0.0.1:$PEER" </dev/null >>"$DIR/etcd.log" 2>&1 9>&- &
      echo $! >"$DIR/etcd.pid"
    fi
    for _ in $(seq 100); do healthy && exit 0; alive || break; sleep 0.1; done
    log "etcd did not become healthy; tail of $DIR/etcd.log:"; tail -n 30 "$DIR/etcd.log" >&2; exit 1 ;;
  down)
    [ -d "$DIR" ] || exit 0
    locked
    if alive; then log "stopping etcd (pid $(cat "$DIR/etcd.pid"))"; kill "$(cat "$DIR/etcd.pid")"; fi
    for _ in $(seq 50); do alive || break; sleep 0.1; done
    if [ "${2:-}" = --purge ]; then log "purging $DIR"; rm -rf "$DIR"; fi ;;
  status)
    if alive && healthy; then echo "etcd 127.0.0.1:$PORT running $(etcd --version | head -n1)"
    else echo "etcd 127.0.0.1:$PORT stopped"; fi ;;
  *) echo "usage: $0 up | down [--purge] | status" >&2; exit 2 ;;
esac
