#!/usr/bin/env bash
# Signalbox's own processes on top of deploy/services.sh: one event worker, one delivery
# worker and the API, in the background, with pid files and logs under .run/.
#
#   deploy/stack.sh up      create topics, start worker + delivery + api, create an admin token,
#                           write .run/env (services + SIGNALBOX_API_URL + SIGNALBOX_API_TOKEN)
#   deploy/stack.sh down    stop them (SIGTERM, then SIGKILL after 10 s)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.run"
PY="$ROOT/.venv/bin/python"
API_PORT="${SB_API_PORT:-18000}"
PROCS=(worker delivery api)

mkdir -p "$RUN/logs" "$RUN/pids"

alive() { [[ -f "$RUN/pids/$1.pid" ]] && kill -0 "$(cat "$RUN/pids/$1.pid")" 2>/dev/null; }

stack_env() {
  set -a
  # shellcheck disable=SC1091
  source "$RUN/services.env"
  set +a
  export SIGNALBOX_API_PORT="$API_PORT" SIGNALBOX_WEBHOOK_ALLOW_LOOPBACK=true
}

wait_http() {
  local url=$1 deadline=$((SECONDS + 60))
  until curl -fs -o /dev/null "$url"; do
    if (( SECONDS > deadline )); then
      echo "API did not answer at $url within 60 s; see $RUN/logs/api.log" >&2
      tail -n 30 "$RUN/logs/api.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

up() {
  stack_env
  "$PY" -m processor topics
  for proc in "${PROCS[@]}"; do
    if alive "$proc"; then
      echo "$proc already running (pid $(cat "$RUN/pids/$proc.pid"))"
      continue
    fi
    nohup "$PY" -m processor "$proc" >>"$RUN/logs/$proc.log" 2>&1 &
    echo $! >"$RUN/pids/$proc.pid"
    echo "started $proc (pid $!, log .run/logs/$proc.log)"
  done
  wait_http "http://127.0.0.1:$API_PORT/health-all"
  if [[ ! -s "$RUN/api_token" ]]; then
    "$PY" -m processor token create admin >"$RUN/api_token"
    chmod 600 "$RUN/api_token"
  fi
  {
    cat "$RUN/services.env"
    echo "SIGNALBOX_API_URL=http://127.0.0.1:$API_PORT"
    echo "SIGNALBOX_API_TOKEN=$(cat "$RUN/api_token")"
  } >"$RUN/env"
  chmod 600 "$RUN/env"
  echo "stack up; environment in .run/env (set -a; . .run/env; set +a)"
}

down() {
  for proc in "${PROCS[@]}"; do
    local pidfile="$RUN/pids/$proc.pid"
    [[ -f "$pidfile" ]] || continue
    local pid
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      echo "stopped $proc"
    fi
    rm -f "$pidfile"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
