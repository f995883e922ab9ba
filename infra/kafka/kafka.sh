#!/usr/bin/env bash
# Runs a real single-node Apache Kafka (KRaft, combined mode) on 127.0.0.1:9092
# without Docker. Usage: kafka.sh start|stop|status
# State (data, logs, pid, cluster id) lives in $STATE_DIR/kafka, git-ignored.
# Only the broker named in our pid file is ours: `stop` never touches anything else. A
# broker we did not start that answers on the port is used (and said so); any other
# program on the port is an error.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="${STATE_DIR:-$root/.state}/kafka"
[[ "$state" == /* ]] || state="$PWD/$state"
data="$state/data"
pidfile="$state/broker.pid"
logfile="$state/broker.log"
port="${KAFKA_PORT:-9092}"
start_timeout="${KAFKA_START_TIMEOUT:-90}"

log() { echo "[kafka] $*"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/${1:-$port}") 2>/dev/null; }

# "pid N, name" of whatever listens on the port, when ss can tell.
holder() {
  local who
  who="$(ss -Hltnp "sport = :${1:-$port}" 2>/dev/null | sed -n 's/.*(("\([^"]*\)",pid=\([0-9]*\).*/pid \2, \1/p' | head -n 1)" || true
  echo "${who:-pid unknown}"
}

# Does the port answer a Kafka ApiVersions request (v0) as a broker does? Stdlib Python
# only, 5 s timeout; about 50 ms against a broker.
kafka_answers() {
  local py
  py="$(command -v python3 || true)"; [[ -n "$py" ]] || py="$root/.venv/bin/python"
  "$py" - "${1:-$port}" 2>/dev/null <<'EOF'
import socket, struct, sys
def read(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk: raise EOFError
        buf += chunk
    return buf
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
client = b"rtml-probe"
req = struct.pack(">hhih", 18, 0, 0x72746D6C, len(client)) + client  # ApiVersions v0
s.sendall(struct.pack(">i", len(req)) + req)
size, = struct.unpack(">i", read(s, 4))
if not 6 <= size <= 1 << 20: sys.exit(1)
body = read(s, size)
corr, err = struct.unpack(">ih", body[:6])
if corr != 0x72746D6C or err not in (0, 35): sys.exit(1)   # 35: UNSUPPORTED_VERSION
if err == 0:
    n, = struct.unpack(">i", body[6:10])
    keys = {struct.unpack(">h", body[10 + 6 * i:12 + 6 * i])[0] for i in range(n)}
    if 18 not in keys: sys.exit(1)
EOF
}

# Our broker: the pid in our pid file, alive, and still our kafka.Kafka (not a reused pid).
running_pid() {
  [[ -f "$pidfile" ]] || return 1
  local pid cmd; pid="$(cat "$pidfile")"
  cmd="$(tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline")" || cmd=""
  if [[ "$cmd" == *" kafka.Kafka $state/server.properties"* ]]; then echo "$pid"; return 0; fi
  rm -f "$pidfile"   # stale: the broker died without cleaning up, or the pid was reused
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
  if port_open; then
    if kafka_answers; then
      log "port $port is taken by a Kafka broker we did not start ($(holder)); using it, \`make down\` will not stop it"
      return 0
    fi
    log "port $port is taken by another program ($(holder)), not a Kafka broker; set KAFKA_PORT to another port or stop it"
    exit 1
  fi
  if port_open $((port + 1)); then
    log "port $((port + 1)) (the broker's controller port) is taken by another program ($(holder $((port + 1)))); set KAFKA_PORT to another port or stop it"
    exit 1
  fi
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
  if running_pid >/dev/null; then stop_quietly; log "stopped"; return 0; fi
  if port_open; then log "not running (ours); port $port is held by a process we did not start ($(holder)), left running"
  else log "not running"; fi
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
