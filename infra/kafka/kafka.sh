#!/usr/bin/env bash
# Runs a real single-node Apache Kafka (KRaft, combined mode) on 127.0.0.1:9092
# without Docker. Usage: kafka.sh start|stop|status
# State (data, logs, pid, cluster id) lives in $STATE_DIR/kafka, git-ignored.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="${STATE_DIR:-$root/.state}/kafka"
data="$state/data"
pidfile="$state/broker.pid"
logfile="$state/broker.log"
port="${KAFKA_PORT:-9092}"
start_timeout="${KAFKA_START_TIMEOUT:-90}"

log() { echo "[kafka] $*"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

running_pid() {
  [[ -f "$pidfile" ]] || return 1
  local pid; pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then echo "$pid"; return 0; fi
  rm -f "$pidfile"   # stale: the broker died without cleaning up
  return 1
}

fetch_jars() {
  if [[ ! -f "$here/lib/.complete" ]]; then
    command -v mvn >/dev/null || { log "Maven (mvn) is required to fetch the Kafka jars"; exit 1; }
    log "fetching Kafka jars from Maven Central (once)"
    rm -rf "$here/lib"
    mvn -q -B -f "$here/pom.xml" package
    touch "$here/lib/.complete"
  fi
}

java_cmd=(java -Xms256m -Xmx768m -XX:+UseG1GC -Dlog4j2.configurationFile="$here/log4j2.yaml" -cp "$here/lib/*")

java_run() { "${java_cmd[@]}" "$@"; }

write_config() {
  sed -e "s#^listeners=.*#listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$((port + 1))#" \
      -e "s#^advertised.listeners=.*#advertised.listeners=PLAINTEXT://127.0.0.1:$port#" \
      -e "s#^controller.quorum.voters=.*#controller.quorum.voters=1@127.0.0.1:$((port + 1))#" \
      "$here/server.properties" > "$state/server.properties"
  echo "log.dirs=$data" >> "$state/server.properties"
}

format_storage() {
  # A data dir formatted for another cluster id, or half-written, cannot start: wipe it.
  local cluster_id=""
  [[ -f "$state/cluster.id" ]] && cluster_id="$(cat "$state/cluster.id")"
  if [[ -z "$cluster_id" || ! -f "$data/meta.properties" ]] \
     || ! grep -q "cluster.id=$cluster_id" "$data/meta.properties"; then
    rm -rf "$data"
    cluster_id="$(java_run kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    echo "$cluster_id" > "$state/cluster.id"
    java_run kafka.tools.StorageTool format -t "$cluster_id" -c "$state/server.properties" >> "$logfile" 2>&1
  fi
}

wait_ready() {
  local pid="$1" deadline=$((SECONDS + start_timeout))
  while (( SECONDS < deadline )); do
    kill -0 "$pid" 2>/dev/null || return 1
    if port_open && grep -q "Kafka Server started" "$logfile"; then return 0; fi
    sleep 0.5
  done
  return 1
}

launch() {
  : > "$logfile"
  format_storage
  nohup "${java_cmd[@]}" kafka.Kafka "$state/server.properties" >> "$logfile" 2>&1 < /dev/null &
  echo $! > "$pidfile"
  wait_ready "$!"
}

start() {
  mkdir -p "$state"
  if pid="$(running_pid)"; then log "already running (pid $pid) on 127.0.0.1:$port"; return 0; fi
  if port_open; then log "port $port is taken by a process that is not ours; reusing it as the broker"; return 0; fi
  fetch_jars
  write_config
  local t0=$SECONDS
  if ! launch; then
    log "broker did not come up; wiping its data dir and retrying once (log: $logfile)"
    stop_quietly
    rm -rf "$data" "$state/cluster.id"
    if ! launch; then
      log "broker failed to start; last lines of $logfile:"; tail -n 30 "$logfile"; stop_quietly; exit 1
    fi
  fi
  log "ready on 127.0.0.1:$port in $((SECONDS - t0)) s (pid $(cat "$pidfile"), log $logfile)"
}

stop_quietly() {
  local pid
  pid="$(running_pid)" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$pidfile"
}

stop() {
  if running_pid >/dev/null; then stop_quietly; log "stopped"; else log "not running"; fi
}

status() {
  if pid="$(running_pid)"; then log "running (pid $pid)"; else log "not running"; return 1; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  reset) stop; rm -rf "$state"; log "state wiped" ;;
  *) echo "usage: $0 start|stop|status|reset" >&2; exit 2 ;;
esac
