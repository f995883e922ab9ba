#!/usr/bin/env bash
# Stops the engine processes this project started, and only those: each one is named by a
# pid file in $STATE_DIR/pids/*.pid (one pid per file, written by the engine's supervisor).
# A pid is signalled only while it is alive and its command line still has `-m engine`,
# so a pid reused by another program is left alone. SIGTERM, up to 15 s, then SIGKILL.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
piddir="${STATE_DIR:-$root/.state}/pids"
grace="${STOP_GRACE_SECONDS:-15}"

log() { echo "[engine] $*"; }

is_engine() {  # alive and still running `python -m engine ...`
  local cmd
  cmd="$(tr '\0' ' ' 2>/dev/null < "/proc/$1/cmdline")" || return 1
  [[ " $cmd " == *" -m engine "* ]]
}

shopt -s nullglob
files=("$piddir"/*.pid)
if (( ${#files[@]} == 0 )); then log "no pid files; nothing to stop"; exit 0; fi

declare -A pid_of=()
for f in "${files[@]}"; do
  pid="$(tr -d '[:space:]' < "$f" 2>/dev/null || true)"
  if [[ ! "$pid" =~ ^[0-9]+$ ]]; then log "$(basename "$f"): no pid in it; removed"; rm -f "$f"; continue; fi
  if ! kill -0 "$pid" 2>/dev/null; then log "pid $pid ($(basename "$f")) is not running; removed its pid file"; rm -f "$f"; continue; fi
  if ! is_engine "$pid"; then log "pid $pid ($(basename "$f")) is not the engine any more; left alone, pid file removed"; rm -f "$f"; continue; fi
  kill -TERM "$pid" 2>/dev/null || true
  log "sent SIGTERM to pid $pid ($(basename "$f"))"
  pid_of["$f"]="$pid"
done

deadline=$((SECONDS + grace))
while (( ${#pid_of[@]} > 0 )); do
  for f in "${!pid_of[@]}"; do
    pid="${pid_of[$f]}"
    if ! is_engine "$pid"; then log "pid $pid stopped"; rm -f "$f"; unset 'pid_of[$f]'; fi
  done
  (( ${#pid_of[@]} == 0 )) && break
  if (( SECONDS >= deadline )); then
    for f in "${!pid_of[@]}"; do
      pid="${pid_of[$f]}"
      if is_engine "$pid"; then kill -KILL "$pid" 2>/dev/null || true; log "pid $pid did not stop in ${grace} s; sent SIGKILL"; fi
      rm -f "$f"
    done
    break
  fi
  sleep 0.2
done
