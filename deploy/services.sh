#!/usr/bin/env bash
# Local real services for Signalbox: Apache Kafka (KRaft, single node, from Maven Central),
# Redis (AOF on) and kinesalite (Kinesis emulator), on loopback, without Docker.
#
#   deploy/services.sh install          install what is missing: Kafka jars, redis-server, kinesalite
#   deploy/services.sh install-bench-tools   install wrk (Debian's HTTP load generator) if missing
#   deploy/services.sh up               install, start all three, wait until each answers,
#                                       write .run/services.env (idempotent: running twice is fine)
#   deploy/services.sh down [--purge]   stop what `up` started; --purge also deletes the data dirs
#   deploy/services.sh purge            same as `down --purge`
#   deploy/services.sh status           each service up/down (exit 3 if any is down)
#   deploy/services.sh restart-redis    stop + start Redis, keeping its AOF (state survives)
#   deploy/services.sh restart-kafka    stop + start Kafka, keeping its log dirs
#   deploy/services.sh restart-kinesis  stop + start kinesalite (in memory: streams are lost)
#   deploy/services.sh env              print the services.env lines
#
# Everything lives under <repo>/.run/: kafka/libs, data dirs, logs/*.log, pids/*.pid, services.env.
# Use the services from a shell with:  set -a; . .run/services.env; set +a
#
# Overrides (environment), defaults in brackets:
#   SB_HOST [127.0.0.1]  SB_KAFKA_PORT [19092]  SB_KAFKA_CONTROLLER_PORT [19093]
#   SB_REDIS_PORT [16379]  SB_KINESIS_PORT [14567]  SB_KAFKA_VERSION [4.1.1]  SB_KAFKA_HEAP [512m]
#   SB_READY_TIMEOUT [120 s]  SB_KINESIS_STREAM_MS [0: streams ACTIVE at once]
#   SB_RUN_DIR [<repo>/.run] (with other ports: a second, independent set of services)
# Prefixed on purpose: Kubernetes and Docker links set REDIS_PORT=tcp://... in containers.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="${SB_RUN_DIR:-$ROOT/.run}"
LOGS="$RUN/logs"
PIDS="$RUN/pids"

HOST="${SB_HOST:-127.0.0.1}"
KAFKA_PORT="${SB_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${SB_KAFKA_CONTROLLER_PORT:-19093}"
REDIS_PORT="${SB_REDIS_PORT:-16379}"
KINESIS_PORT="${SB_KINESIS_PORT:-14567}"
KAFKA_VERSION="${SB_KAFKA_VERSION:-4.1.1}"
KAFKA_HEAP="${SB_KAFKA_HEAP:-512m}"
READY_TIMEOUT="${SB_READY_TIMEOUT:-120}"
KINESIS_STREAM_MS="${SB_KINESIS_STREAM_MS:-0}"

KAFKA_HOME="$RUN/kafka"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_DATA="$KAFKA_HOME/data"
REDIS_DIR="$RUN/redis"
KINESIS_DIR="$ROOT/deploy/kinesis"
VENV_PY="$ROOT/.venv/bin/python"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '\n[services] ERROR: %s\n\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------------

APT_UPDATED=0
apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo -n"
        else
            die "need to install '$*' with apt-get, but not root and no sudo. Install it by hand: apt-get install -y $*"
        fi
    fi
    command -v apt-get >/dev/null 2>&1 || die "need '$*' but apt-get is not available. Install it by hand."
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        $sudo apt-get update -qq || die "apt-get update failed (no network to the Debian mirror?)"
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || die "apt-get install $* failed"
}

install_tools() {
    local missing=()
    command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null 2>&1 || missing+=(maven)
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
    # Debian's redis-server package starts a system instance on 6379; ours runs on its own port.
}

# wrk is only for bench/bench_reads.py (the server's latency without a Python client's cost).
install_bench_tools() {
    command -v wrk >/dev/null 2>&1 || apt_install wrk
}

install_kafka() {
    local marker="$KAFKA_LIBS/.installed-$KAFKA_VERSION"
    if [ -f "$marker" ]; then
        return 0
    fi
    log "installing Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_LIBS"
    local t0 out
    t0="$(now)"
    rm -rf "$KAFKA_LIBS.tmp"
    mkdir -p "$KAFKA_HOME"
    if ! out="$(mvn -B -q -f "$ROOT/deploy/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
            dependency:copy-dependencies -DoutputDirectory="$KAFKA_LIBS.tmp" 2>&1)"; then
        printf '%s\n' "$out" | tail -n 30 >&2
        die "could not download Apache Kafka $KAFKA_VERSION (org.apache.kafka:kafka_2.13) from Maven Central.
  Integration tests need a real broker: check network access to https://repo.maven.apache.org/maven2
  (or a mirror in ~/.m2/settings.xml) and run 'deploy/services.sh install' again."
    fi
    [ -f "$KAFKA_LIBS.tmp/kafka_2.13-$KAFKA_VERSION.jar" ] \
        || die "Maven finished but kafka_2.13-$KAFKA_VERSION.jar is missing from $KAFKA_LIBS.tmp"
    rm -rf "$KAFKA_LIBS"
    mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
    touch "$marker"
    log "Kafka $KAFKA_VERSION installed in $(elapsed "$t0")s"
}

install_kinesalite() {
    if [ -x "$KINESIS_DIR/node_modules/.bin/kinesalite" ] \
        && [ "$KINESIS_DIR/node_modules/.package-lock.json" -nt "$KINESIS_DIR/package-lock.json" ]; then
        return 0
    fi
    log "installing kinesalite (npm ci in deploy/kinesis)"
    npm ci --prefix "$KINESIS_DIR" --no-audit --no-fund --loglevel=error >&2 \
        || die "npm ci in deploy/kinesis failed (no access to the npm registry?)"
    [ -x "$KINESIS_DIR/node_modules/.bin/kinesalite" ] || die "npm ci did not install kinesalite"
}

cmd_install() {
    local t0
    t0="$(now)"
    mkdir -p "$RUN" "$LOGS" "$PIDS"
    install_tools
    install_kafka
    install_kinesalite
    log "install complete in $(elapsed "$t0")s"
}

# ---------------------------------------------------------------------------------------------
# process helpers
# ---------------------------------------------------------------------------------------------

# pid_of NAME MARKER: prints the pid from .run/pids/NAME.pid if that process is alive and its
# command line contains MARKER (so a recycled pid is never mistaken for ours).
pid_of() {
    local file="$PIDS/$1.pid" pid
    [ -f "$file" ] || return 1
    pid="$(tr -dc '0-9' <"$file")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2" || return 1
    printf '%s' "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_ready NAME PID LOGFILE COMMAND...: run COMMAND until it succeeds; fail loudly (tail of the
# log) when the process dies or READY_TIMEOUT passes. Readiness is always probed, never slept.
wait_ready() {
    local name="$1" pid="$2" logfile="$3"
    shift 3
    local deadline=$((SECONDS + READY_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$logfile" >&2 || true
            die "$name exited during start-up; log above ($logfile)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 40 "$logfile" >&2 || true
            die "$name not ready after ${READY_TIMEOUT}s; log above ($logfile)"
        fi
        sleep 0.1
    done
}

# stop_pid NAME MARKER GRACE: SIGTERM, wait up to GRACE seconds, then SIGKILL.
stop_service() {
    local name="$1" marker="$2" grace="$3" pid i
    if pid="$(pid_of "$name" "$marker")"; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < grace * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name did not stop in ${grace}s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        fi
    fi
    rm -f "$PIDS/$name.pid"
}

# Start COMMAND detached (own session: a Ctrl-C or a killed test run does not take it down),
# with the pid written by the process itself, stdout+stderr appended to LOGFILE.
spawn() {
    local pidfile="$1" logfile="$2"
    shift 2
    rm -f "$pidfile"
    printf '\n===== start %s =====\n' "$(date -Is)" >>"$logfile"
    # shellcheck disable=SC2016 # expanded by the inner bash
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 9>&- &
    local i
    for ((i = 0; i < 50; i++)); do
        [ -s "$pidfile" ] && return 0
        sleep 0.02
    done
    die "could not start: $*"
}

check_port_free() {
    if port_open "$HOST" "$2"; then
        die "$1: port $HOST:$2 is already in use by a process this script did not start.
  Stop it, or choose another port (see the SB_*_PORT variables at the top of deploy/services.sh)."
    fi
}

# ---------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------

KAFKA_MARKER="kafka.Kafka"

KAFKA_JAVA=(java -Xms128m -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$KAFKA_HOME/log4j2.properties" -cp "$KAFKA_LIBS/*")

write_kafka_config() {
    mkdir -p "$KAFKA_DATA"
    sed -e "s|@HOST@|$HOST|g" -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
        -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" -e "s|@DATA_DIR@|$KAFKA_DATA|g" \
        "$ROOT/deploy/kafka/server.properties" >"$KAFKA_HOME/server.properties"
    cat >"$KAFKA_HOME/log4j2.properties" <<'EOF'
# Written by deploy/services.sh: everything to stdout (redirected to .run/logs/kafka.log).
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
EOF
}

kafka_format() {
    [ -f "$KAFKA_DATA/meta.properties" ] && return 0
    local id=""
    # A KRaft cluster id is 16 random bytes in URL-safe base64 (22 chars); avoid a leading '-',
    # which the formatter's argument parser would read as an option.
    while [ -z "$id" ] || [ "${id:0:1}" = "-" ]; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' | cut -c1-22)"
    done
    log "formatting Kafka storage in $KAFKA_DATA (cluster id $id)"
    "${KAFKA_JAVA[@]}" kafka.tools.StorageTool format --ignore-formatted -t "$id" \
        -c "$KAFKA_HOME/server.properties" >>"$LOGS/kafka.log" 2>&1 \
        || { tail -n 20 "$LOGS/kafka.log" >&2; die "kafka storage format failed"; }
}

# Ready = the broker answers a metadata request listing itself (through the venv's aiokafka, the
# client the project uses); without the venv, the listener accepts and the log says it started.
kafka_probe() {
    if [ -x "$VENV_PY" ] && "$VENV_PY" -c 'import aiokafka' 2>/dev/null; then
        "$VENV_PY" - "$HOST:$KAFKA_PORT" <<'EOF'
import asyncio, sys, time
from aiokafka import AIOKafkaClient

# Retries inside one interpreter for a few seconds: importing aiokafka costs ~0.5 s per process.
async def main() -> None:
    deadline = time.monotonic() + 5
    while True:
        client = AIOKafkaClient(bootstrap_servers=sys.argv[1], request_timeout_ms=2000)
        try:
            await client.bootstrap()
            if client.cluster.brokers():
                return
        except Exception:
            pass
        finally:
            await client.close()
        if time.monotonic() > deadline:
            sys.exit(1)
        await asyncio.sleep(0.1)

asyncio.run(main())
EOF
    else
        port_open "$HOST" "$KAFKA_PORT" && grep -q "Kafka Server started" "$LOGS/kafka.log"
    fi
}

# Split in two so that `up` can start Redis and kinesalite while the JVM warms up.
KAFKA_T0=""
launch_kafka() {
    KAFKA_T0="$(now)"
    pid_of kafka "$KAFKA_MARKER" >/dev/null && return 0
    check_port_free kafka "$KAFKA_PORT"
    check_port_free kafka-controller "$KAFKA_CONTROLLER_PORT"
    write_kafka_config
    kafka_format
    spawn "$PIDS/kafka.pid" "$LOGS/kafka.log" \
        "${KAFKA_JAVA[@]}" kafka.Kafka "$KAFKA_HOME/server.properties"
}

wait_kafka() {
    local pid
    pid="$(pid_of kafka "$KAFKA_MARKER")" || {
        tail -n 40 "$LOGS/kafka.log" >&2 || true
        die "kafka exited during start-up; log above ($LOGS/kafka.log)"
    }
    wait_ready kafka "$pid" "$LOGS/kafka.log" kafka_probe
    log "kafka      up on $HOST:$KAFKA_PORT (pid $pid, Kafka $KAFKA_VERSION) in $(elapsed "$KAFKA_T0")s"
}

start_kafka() {
    launch_kafka
    wait_kafka
}

# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------

REDIS_MARKER="redis-server"

redis_probe() { [ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; }

start_redis() {
    local pid t0
    t0="$(now)"
    if ! pid="$(pid_of redis "$REDIS_MARKER")"; then
        check_port_free redis "$REDIS_PORT"
        mkdir -p "$REDIS_DIR"
        # AOF (fsync every second) so that restart-redis keeps state; no RDB snapshots.
        # Not daemonized: spawn() owns the pid file, the same way for every service.
        spawn "$PIDS/redis.pid" "$LOGS/redis.log" \
            redis-server --port "$REDIS_PORT" --bind "$HOST" --dir "$REDIS_DIR" \
            --appendonly yes --appendfsync everysec --save "" --protected-mode yes
        pid="$(cat "$PIDS/redis.pid")"
    fi
    wait_ready redis "$pid" "$LOGS/redis.log" redis_probe
    log "redis      up on $HOST:$REDIS_PORT (pid $pid) in $(elapsed "$t0")s"
}

# ---------------------------------------------------------------------------------------------
# kinesalite
# ---------------------------------------------------------------------------------------------

KINESIS_MARKER="kinesalite"

# An unsigned-but-well-formed ListStreams call, as boto3 would send it.
kinesis_probe() {
    curl -sf -m 2 -X POST "http://$HOST:$KINESIS_PORT/" \
        -H 'Content-Type: application/x-amz-json-1.1' \
        -H 'X-Amz-Target: Kinesis_20131202.ListStreams' \
        -H 'X-Amz-Date: 20200101T000000Z' \
        -H 'Authorization: AWS4-HMAC-SHA256 Credential=local/20200101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=0' \
        -d '{}' | grep -q StreamNames
}

start_kinesis() {
    local pid t0
    t0="$(now)"
    if ! pid="$(pid_of kinesis "$KINESIS_MARKER")"; then
        check_port_free kinesis "$KINESIS_PORT"
        # kinesalite's CLI listens on all interfaces; its API takes a host, so bind loopback here.
        # In memory (no --path): no native LevelDB build needed, a fresh emulator per start.
        # shellcheck disable=SC2016 # JavaScript, not shell
        spawn "$PIDS/kinesis.pid" "$LOGS/kinesis.log" \
            node -e '
const [, mod, host, port, ms] = process.argv;
const server = require(mod)({ createStreamMs: +ms, deleteStreamMs: +ms, updateStreamMs: +ms });
server.listen(+port, host, () => console.log(`kinesalite listening at http://${host}:${port}`));
' "$KINESIS_DIR/node_modules/kinesalite" "$HOST" "$KINESIS_PORT" "$KINESIS_STREAM_MS"
        pid="$(cat "$PIDS/kinesis.pid")"
    fi
    wait_ready kinesis "$pid" "$LOGS/kinesis.log" kinesis_probe
    log "kinesis    up on $HOST:$KINESIS_PORT (pid $pid) in $(elapsed "$t0")s"
}

# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------

cmd_env() {
    cat <<EOF
KAFKA_BOOTSTRAP_SERVERS=$HOST:$KAFKA_PORT
REDIS_URL=redis://$HOST:$REDIS_PORT/0
KINESIS_ENDPOINT_URL=http://$HOST:$KINESIS_PORT
AWS_REGION=us-east-1
AWS_DEFAULT_REGION=us-east-1
AWS_ACCESS_KEY_ID=local
AWS_SECRET_ACCESS_KEY=local
SIGNALBOX_KAFKA_BOOTSTRAP_SERVERS=$HOST:$KAFKA_PORT
SIGNALBOX_REDIS_URL=redis://$HOST:$REDIS_PORT/0
SIGNALBOX_KINESIS_ENDPOINT_URL=http://$HOST:$KINESIS_PORT
EOF
}

cmd_up() {
    cmd_install
    local t0
    t0="$(now)"
    launch_kafka
    start_redis
    start_kinesis
    wait_kafka
    cmd_env >"$RUN/services.env.tmp"
    mv "$RUN/services.env.tmp" "$RUN/services.env"
    log "all services up in $(elapsed "$t0")s; environment in $RUN/services.env"
}

cmd_down() {
    local purge=0
    [ "${1:-}" = "--purge" ] && purge=1
    stop_service kinesis "$KINESIS_MARKER" 10
    stop_service redis "$REDIS_MARKER" 20
    # Controlled shutdown of a single KRaft node takes a few seconds.
    stop_service kafka "$KAFKA_MARKER" 60
    rm -f "$RUN/services.env"
    if [ "$purge" -eq 1 ]; then
        log "purging data dirs"
        rm -rf "$KAFKA_DATA" "$REDIS_DIR" "$KAFKA_HOME/server.properties"
    fi
}

cmd_status() {
    local all=0 pid
    for svc in kafka redis kinesis; do
        local marker port probe
        case "$svc" in
            kafka) marker="$KAFKA_MARKER" port="$KAFKA_PORT" probe=kafka_probe ;;
            redis) marker="$REDIS_MARKER" port="$REDIS_PORT" probe=redis_probe ;;
            kinesis) marker="$KINESIS_MARKER" port="$KINESIS_PORT" probe=kinesis_probe ;;
        esac
        if pid="$(pid_of "$svc" "$marker")" && "$probe" >/dev/null 2>&1; then
            printf '%-8s up    %s:%s (pid %s)\n' "$svc" "$HOST" "$port" "$pid"
        elif [ -n "${pid:-}" ]; then
            printf '%-8s start %s:%s (pid %s, not answering yet)\n' "$svc" "$HOST" "$port" "$pid"
            all=3
        else
            printf '%-8s down\n' "$svc"
            all=3
        fi
        pid=""
    done
    return "$all"
}

with_lock() {
    mkdir -p "$RUN" "$LOGS" "$PIDS"
    # Serialises concurrent up/down (parallel test runs). Spawned services close fd 9 (see spawn).
    exec 9>"$RUN/services.lock"
    flock -w "$READY_TIMEOUT" 9 || die "another deploy/services.sh holds $RUN/services.lock"
    "$@"
}

main() {
    local cmd="${1:-}"
    shift || true
    case "$cmd" in
        install) with_lock cmd_install ;;
        install-bench-tools) install_bench_tools ;;
        up | start) with_lock cmd_up ;;
        down | stop) with_lock cmd_down "$@" ;;
        purge) with_lock cmd_down --purge ;;
        status) cmd_status ;;
        env) cmd_env ;;
        restart-redis) with_lock stop_service redis "$REDIS_MARKER" 20 && with_lock start_redis ;;
        restart-kafka) with_lock stop_service kafka "$KAFKA_MARKER" 60 && with_lock start_kafka ;;
        restart-kinesis) with_lock stop_service kinesis "$KINESIS_MARKER" 10 && with_lock start_kinesis ;;
        *)
            awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
            [ -z "$cmd" ] || [ "$cmd" = "-h" ] || [ "$cmd" = "--help" ] || exit 2
            ;;
    esac
}

main "$@"
