#!/usr/bin/env bash
# Runs a real redis-server on 127.0.0.1:6379 without persistence (tests and the demo
# need a cache, not durability). Installs Debian's package when missing.
# Reuses a Redis already answering on the port. Usage: redis.sh start|stop|status
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="${STATE_DIR:-$root/.state}/redis"
port="${REDIS_PORT:-6379}"
pidfile="$state/redis.pid"

log() { echo "[redis] $*"; }

answers() { redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; }

install() {
  command -v redis-server >/dev/null && return 0
  log "installing Debian's redis-server"
  local sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
  # Debian's package starts a system service on install where systemd runs; ours is separate.
}

start() {
  mkdir -p "$state"
  install
  if answers; then log "already answering on 127.0.0.1:$port"; return 0; fi
  redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --daemonize yes --pidfile "$pidfile" --logfile "$state/redis.log" --dir "$state"
  for _ in $(seq 1 50); do answers && { log "ready on 127.0.0.1:$port"; return 0; }; sleep 0.1; done
  log "redis did not answer; see $state/redis.log"; exit 1
}

stop() {
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || kill -TERM "$(cat "$pidfile")"
    for _ in $(seq 1 50); do [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
    rm -f "$pidfile"; log "stopped"
  else
    log "not running (ours)"
  fi
}

status() { if answers; then log "answering on 127.0.0.1:$port"; else log "not answering"; return 1; fi; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
