#!/usr/bin/env bash
# Runs a real redis-server on 127.0.0.1:6379 without persistence (tests and the demo
# need a cache, not durability). Installs Debian's package when missing.
# Only the redis-server named in our pid file is ours: `stop` never touches anything else.
# A Redis we did not start that answers PING on the port is used (and said so); any other
# program on the port is an error. Usage: redis.sh start|stop|status
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="${STATE_DIR:-$root/.state}/redis"
[[ "$state" == /* ]] || state="$PWD/$state"
port="${REDIS_PORT:-6379}"
pidfile="$state/redis.pid"

log() { echo "[redis] $*"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

# The first line the port sends back to PING (empty when it says nothing within 2 s).
ping_reply() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 0
    printf 'PING\r\n' >&3
    IFS= read -r -t 2 line <&3 || true
    printf '%s' "${line%$'\r'}"
  ) 2>/dev/null || true
}

answers() { [[ "$(ping_reply)" == "+PONG" ]]; }

# "pid N, name" of whatever listens on the port, when ss can tell.
holder() {
  local who
  who="$(ss -Hltnp "sport = :$port" 2>/dev/null | sed -n 's/.*(("\([^"]*\)",pid=\([0-9]*\).*/pid \2, \1/p' | head -n 1)" || true
  echo "${who:-pid unknown}"
}

# Our server: the pid in our pid file, alive, and still a redis-server on our port.
running_pid() {
  [[ -f "$pidfile" ]] || return 1
  local pid cmd; pid="$(cat "$pidfile")"
  cmd="$(tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline")" || cmd=""
  if [[ "$cmd" == *redis-server*":$port"* ]]; then echo "$pid"; return 0; fi
  rm -f "$pidfile"   # stale: it died without cleaning up, or the pid was reused
  return 1
}

install() {
  command -v redis-server >/dev/null && return 0
  log "installing Debian's redis-server"
  local sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
  # Debian's package starts a system service on install where systemd runs; ours is separate.
}

wait_answers() {
  for _ in $(seq 1 50); do answers && return 0; sleep 0.1; done
  return 1
}

start() {
  mkdir -p "$state"
  local pid reply
  if pid="$(running_pid)"; then
    wait_answers || { log "ours (pid $pid) does not answer PING; see $state/redis.log"; exit 1; }
    log "already running (pid $pid) on 127.0.0.1:$port"; return 0
  fi
  if port_open; then
    reply="$(ping_reply)"
    if [[ "$reply" == "+PONG" ]]; then
      log "port $port answers as a Redis we did not start ($(holder)); using it, \`make down\` will leave it running"
      return 0
    fi
    log "port $port is taken by another program ($(holder)) that does not answer PING with PONG${reply:+ (it said: ${reply:0:60})}; set REDIS_PORT to another port or stop it"
    exit 1
  fi
  install
  redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --daemonize yes --pidfile "$pidfile" --logfile "$state/redis.log" --dir "$state"
  if wait_answers; then log "ready on 127.0.0.1:$port (pid $(cat "$pidfile" 2>/dev/null || echo '?'))"; return 0; fi
  log "redis did not answer; see $state/redis.log"; exit 1
}

stop() {
  local pid
  if pid="$(running_pid)"; then
    kill -TERM "$pid" 2>/dev/null || true   # redis-server shuts down on SIGTERM (no save: --save "")
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$pidfile"; log "stopped"
  elif port_open; then
    log "not running (ours); port $port is held by a process we did not start ($(holder)), left running"
  else
    log "not running"
  fi
}

status() {
  local pid
  if pid="$(running_pid)" && answers; then log "running (pid $pid) on 127.0.0.1:$port"
  elif answers; then log "a Redis we did not start answers on 127.0.0.1:$port ($(holder))"
  else log "not answering"; return 1; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
