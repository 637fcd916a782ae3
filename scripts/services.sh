#!/usr/bin/env bash
# Local services for agentq: Kafka (KRaft, jars from Maven Central), PostgreSQL
# and Redis (Debian packages), each with its own data dir under
# $AGENTQ_HOME/services. Idempotent: reuses what already runs and is healthy.
# Prometheus (Debian package, on request: `up prometheus`) scrapes the agentq
# processes listed in AGENTQ_PROMETHEUS_{BRIDGES,WORKERS,AUTOSCALERS} with the
# rules of deploy/prometheus/rules.yml, like compose's Prometheus.
#
#   scripts/services.sh up [kafka|postgres|redis|prometheus ...]   # no name: kafka postgres redis
#   scripts/services.sh down [name ...]      # no name: only what `up` started
#   scripts/services.sh status
#   scripts/services.sh restart <name> [--immediate]
#   scripts/services.sh kill <name>          # SIGKILL (fault tests)
set -euo pipefail

# shellcheck source=scripts/env.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"

SVC="$AGENTQ_HOME/services"
STARTED_FILE="$SVC/started-by-us"
ALL_SERVICES=(kafka postgres redis)

KAFKA_VERSION="$AGENTQ_KAFKA_VERSION"
LOG4J_VERSION="${AGENTQ_LOG4J_VERSION:-2.25.3}"
KAFKA_HOME_DIR="$AGENTQ_HOME/kafka"
KAFKA_LIBS="$KAFKA_HOME_DIR/libs-$KAFKA_VERSION"
KAFKA_DIR="$SVC/kafka"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
KAFKA_HOST="${AGENTQ_KAFKA_BOOTSTRAP%%,*}"; KAFKA_HOST="${KAFKA_HOST%:*}"
KAFKA_PORT="${AGENTQ_KAFKA_BOOTSTRAP%%,*}"; KAFKA_PORT="${KAFKA_PORT##*:}"
KAFKA_HEAP="${AGENTQ_KAFKA_HEAP:--Xms256m -Xmx512m}"

PG_DIR="$SVC/postgres"
PG_DATA="$PG_DIR/data"
PG_RUN="$PG_DIR/run"
PG_LOG="$PG_DIR/postgres.log"
PG_PORT="$AGENTQ_PG_PORT"

REDIS_DIR="$SVC/redis"
REDIS_PORT="$AGENTQ_REDIS_PORT"
REDIS_PID="$REDIS_DIR/redis.pid"

PROM_DIR="$SVC/prometheus"
PROM_PORT="${AGENTQ_PROMETHEUS_PORT:-19090}"
PROM_PID="$PROM_DIR/prometheus.pid"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
# A zombie (exited, not yet reaped: common when PID 1 in a container does not
# reap) counts as dead.
pid_alive() {
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null \
    && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}
pid_dead() { ! pid_alive "$1"; }

# ---------------------------------------------------------------- apt ------
_APT_UPDATED=0
apt_install() {
  local pkgs=("$@") sudo=()
  is_root || { command -v sudo >/dev/null || die "need root or sudo to install: ${pkgs[*]}"; sudo=(sudo); }
  command -v apt-get >/dev/null || die "apt-get not found; install ${pkgs[*]} yourself"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$_APT_UPDATED" = 0 ]; then
    log "apt-get update"
    "${sudo[@]}" apt-get update -qq
    _APT_UPDATED=1
  fi
  log "apt-get install ${pkgs[*]}"
  # Keep the packages' own default daemons (postgres :5432, redis :6379) from
  # being started by the maintainer scripts: we run our own instances.
  local policy=/usr/sbin/policy-rc.d added=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod +x "$policy"; added=1
  fi
  local rc=0
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" || rc=$?
  [ "$added" = 1 ] && "${sudo[@]}" rm -f "$policy"
  [ "$rc" = 0 ] || die "apt-get install failed"
}

pg_bindir() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
  [ -n "$d" ] && [ -x "$d/postgres" ] && echo "$d"
}

ensure_packages() {
  local want=() s
  for s in "$@"; do
    case "$s" in
      kafka)
        command -v java >/dev/null || want+=(openjdk-17-jre-headless)
        command -v kcat >/dev/null || want+=(kcat)
        if [ ! -f "$KAFKA_LIBS/.complete" ]; then command -v mvn >/dev/null || want+=(maven); fi
        ;;
      postgres) pg_bindir >/dev/null || want+=(postgresql) ;;
      redis) command -v redis-server >/dev/null && command -v redis-cli >/dev/null || want+=(redis-server) ;;
      prometheus) command -v prometheus >/dev/null && command -v promtool >/dev/null || want+=(prometheus) ;;
    esac
  done
  if [ "${#want[@]}" -gt 0 ]; then apt_install "${want[@]}"; fi
}

# ---------------------------------------------------------- bookkeeping ----
mark_started() {
  mkdir -p "$SVC"; touch "$STARTED_FILE"
  grep -qx "$1" "$STARTED_FILE" || echo "$1" >>"$STARTED_FILE"
}
unmark_started() {
  [ -f "$STARTED_FILE" ] || return 0
  local tmp; tmp="$(grep -vx "$1" "$STARTED_FILE" || true)"
  printf '%s' "${tmp:+$tmp$'\n'}" >"$STARTED_FILE"
}

wait_for() {  # wait_for <seconds> <description> <command...>
  local limit="$1" what="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then log "timed out after ${limit}s waiting for $what"; return 1; fi
    sleep 0.5
  done
}

port_open() {  # port_open host port
  python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(1)
sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)
PY
}

# ---------------------------------------------------------------- kafka ----
kafka_fetch_jars() {
  [ -f "$KAFKA_LIBS/.complete" ] && return 0
  mkdir -p "$KAFKA_HOME_DIR"
  cat >"$KAFKA_HOME_DIR/pom.xml" <<POM
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 https://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>agentq.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
POM
  log "downloading Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS"
  rm -rf "$KAFKA_LIBS.tmp"
  mvn -B -q -Dstyle.color=never -f "$KAFKA_HOME_DIR/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$KAFKA_LIBS.tmp" -DincludeScope=runtime >"$KAFKA_HOME_DIR/mvn.log" 2>&1 \
    || { tail -n 40 "$KAFKA_HOME_DIR/mvn.log" >&2; die "maven could not fetch the Kafka jars"; }
  rm -rf "$KAFKA_LIBS"; mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
  touch "$KAFKA_LIBS/.complete"
}

kafka_java() {  # runs a Kafka main class with the cached jars
  java -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2-tools.properties" -cp "$KAFKA_LIBS/*" "$@"
}

kafka_write_config() {
  mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
  cat >"$KAFKA_DIR/server.properties" <<PROPS
# generated by scripts/services.sh
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$AGENTQ_KAFKA_CONTROLLER
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$AGENTQ_KAFKA_CONTROLLER
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
num.partitions=4
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.dirs=$KAFKA_DIR/data
PROPS
  cat >"$KAFKA_DIR/log4j2.properties" <<PROPS
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = $KAFKA_DIR/logs/server.log
appender.file.filePattern = $KAFKA_DIR/logs/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
PROPS
  cat >"$KAFKA_DIR/log4j2-tools.properties" <<'PROPS'
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
PROPS
}

kafka_pid() {
  local pid
  pid="$(cat "$KAFKA_PID" 2>/dev/null || true)"
  if pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $KAFKA_DIR/server.properties"; then
    echo "$pid"
  fi
}

kafka_healthy() {
  if command -v kcat >/dev/null 2>&1; then
    kcat -b "$AGENTQ_KAFKA_BOOTSTRAP" -L -m 3 2>/dev/null | grep -q 'broker'
  else
    port_open "$KAFKA_HOST" "$KAFKA_PORT"
  fi
}

kafka_topics() {
  local have=""
  if command -v kcat >/dev/null 2>&1; then
    have="$(kcat -b "$AGENTQ_KAFKA_BOOTSTRAP" -L -m 5 2>/dev/null | sed -n 's/^ *topic "\([^"]*\)".*/\1/p')"
  fi
  if ! ls "$KAFKA_LIBS"/kafka-tools-[0-9]*.jar >/dev/null 2>&1; then
    log "kafka-tools jar not present; topics will be auto-created by the app"
    return 0
  fi
  local spec name parts
  for spec in agentq.jobs:4 agentq.jobs.dlq:1; do
    name="${spec%%:*}"; parts="${spec##*:}"
    if printf '%s\n' "$have" | grep -qx "$name"; then continue; fi
    kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$AGENTQ_KAFKA_BOOTSTRAP" \
      --create --if-not-exists --topic "$name" --partitions "$parts" --replication-factor 1 >/dev/null \
      || die "could not create topic $name"
    log "kafka: topic $name ($parts partitions) ready"
  done
}

kafka_up() {
  if [ -n "$(kafka_pid)" ] && kafka_healthy; then
    log "kafka: already running (pid $(kafka_pid))"
    kafka_topics; return 0
  fi
  if [ -z "$(kafka_pid)" ] && kafka_healthy; then
    log "kafka: something else already answers on $AGENTQ_KAFKA_BOOTSTRAP; reusing it"
    kafka_topics; return 0
  fi
  kafka_fetch_jars
  kafka_write_config
  if [ -z "$(kafka_pid)" ]; then
    if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
      local cid
      cid="$(kafka_java kafka.tools.StorageTool random-uuid | tail -n1)"
      log "kafka: formatting storage (cluster id $cid)"
      kafka_java kafka.tools.StorageTool format --standalone -t "$cid" \
        -c "$KAFKA_DIR/server.properties" >"$KAFKA_DIR/logs/format.log" 2>&1 \
        || { cat "$KAFKA_DIR/logs/format.log" >&2; die "kafka storage format failed"; }
    fi
    log "kafka: starting $KAFKA_VERSION on $AGENTQ_KAFKA_BOOTSTRAP"
    # shellcheck disable=SC2086
    setsid nohup java $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
      -Dkafka.logs.dir="$KAFKA_DIR/logs" \
      -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
      >"$KAFKA_DIR/logs/stdout.log" 2>&1 </dev/null &
    echo $! >"$KAFKA_PID"
    mark_started kafka
  fi
  if ! wait_for 90 "kafka on $AGENTQ_KAFKA_BOOTSTRAP" kafka_healthy; then
    tail -n 30 "$KAFKA_DIR/logs/stdout.log" "$KAFKA_DIR/logs/server.log" >&2 2>/dev/null || true
    die "kafka did not become healthy"
  fi
  log "kafka: up (pid $(kafka_pid))"
  kafka_topics
}

kafka_down() {  # kafka_down [signal]
  local pid sig="${1:-TERM}"
  pid="$(kafka_pid)"
  if [ -z "$pid" ]; then log "kafka: not running (from $KAFKA_DIR)"; rm -f "$KAFKA_PID"; return 0; fi
  kill "-$sig" "$pid" 2>/dev/null || true
  if [ "$sig" = KILL ]; then
    wait_for 10 "kafka pid $pid to exit" pid_dead "$pid" || true
  elif ! wait_for 45 "kafka pid $pid to stop" pid_dead "$pid"; then
    log "kafka: still running after 45s, sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true
    wait_for 10 "kafka pid $pid to exit" pid_dead "$pid" || true
  fi
  rm -f "$KAFKA_PID"
  log "kafka: stopped ($sig)"
}

kafka_status() {
  if [ -n "$(kafka_pid)" ] && kafka_healthy; then echo "kafka     up    $AGENTQ_KAFKA_BOOTSTRAP (pid $(kafka_pid))"
  elif [ -n "$(kafka_pid)" ]; then echo "kafka     starting/unhealthy (pid $(kafka_pid))"
  elif kafka_healthy; then echo "kafka     up    $AGENTQ_KAFKA_BOOTSTRAP (not managed here)"
  else echo "kafka     down"; fi
}

# ------------------------------------------------------------- postgres ----
pg_user() { if is_root; then echo postgres; else id -un; fi; }
as_pg() { if is_root; then runuser -u postgres -- "$@"; else "$@"; fi; }

pg_running() {
  local bin pid; bin="$(pg_bindir)" || return 1
  [ -f "$PG_DATA/PG_VERSION" ] || return 1
  pid="$(head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)"
  pid_alive "$pid" && as_pg "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}
pg_healthy() {
  local bin; bin="$(pg_bindir)" || return 1
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2
}

pg_orphans() {  # live processes still working in the data dir (backends of a killed postmaster)
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/cwd" 2>/dev/null)" = "$PG_DATA" ] && pid_alive "${p#/proc/}" && echo "${p#/proc/}"
  done
  return 0
}
pg_no_orphans() { [ -z "$(pg_orphans)" ]; }

pg_clear_stale_pidfile() {
  # A killed postmaster that PID 1 has not reaped still answers kill -0, and
  # postgres then refuses to start ("lock file already exists"). Once no live
  # process of the old instance is left, its lock files are stale.
  local f pid
  for f in "$PG_DATA/postmaster.pid" "$PG_RUN/.s.PGSQL.$PG_PORT.lock"; do
    pid="$(head -n1 "$f" 2>/dev/null || true)"
    [ -n "$pid" ] || continue
    pid_alive "$pid" && continue
    kill -0 "$pid" 2>/dev/null || continue   # truly gone: postgres handles that itself
    wait_for 20 "old postgres backends to exit" pg_no_orphans \
      || die "old postgres processes still running: $(pg_orphans | tr '\n' ' ')"
    log "postgres: removing stale $(basename "$f") (pid $pid is a zombie)"
    rm -f "$f"
  done
}

pg_write_config() {
  cat >"$PG_DATA/agentq.conf" <<CONF
# generated by scripts/services.sh (included from postgresql.conf)
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_RUN'
max_connections = 200
shared_buffers = 256MB
fsync = on
synchronous_commit = on
full_page_writes = on
wal_buffers = 16MB
max_wal_size = 2GB
checkpoint_timeout = 15min
password_encryption = scram-sha-256
logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
CONF
  grep -q "^include_if_exists = 'agentq.conf'" "$PG_DATA/postgresql.conf" \
    || echo "include_if_exists = 'agentq.conf'" >>"$PG_DATA/postgresql.conf"
  if is_root; then chown postgres:postgres "$PG_DATA/agentq.conf" "$PG_DATA/postgresql.conf"; fi
}

pg_provision() {  # roles, database, schema rights; passwords go over stdin only
  local bin; bin="$(pg_bindir)"
  as_pg "$bin/psql" -X -q -h "$PG_RUN" -p "$PG_PORT" -U "$(pg_user)" -d postgres -v ON_ERROR_STOP=1 >/dev/null <<SQL
\set owner_pw '$(printf '%s' "$AGENTQ_OWNER_PASSWORD" | sed "s/'/''/g")'
\set worker_pw '$(printf '%s' "$AGENTQ_WORKER_PASSWORD" | sed "s/'/''/g")'
\set analyst_pw '$(printf '%s' "$AGENTQ_ANALYST_PASSWORD" | sed "s/'/''/g")'
SELECT 'CREATE ROLE agentq_owner LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'agentq_owner') \gexec
SELECT 'CREATE ROLE agentq_worker LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'agentq_worker') \gexec
SELECT 'CREATE ROLE agentq_analyst LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'agentq_analyst') \gexec
ALTER ROLE agentq_owner WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'owner_pw';
ALTER ROLE agentq_worker WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'worker_pw';
ALTER ROLE agentq_analyst WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'analyst_pw';
ALTER ROLE agentq_analyst SET default_transaction_read_only = on;
SELECT 'CREATE DATABASE agentq OWNER agentq_owner' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'agentq') \gexec
ALTER DATABASE agentq OWNER TO agentq_owner;
REVOKE ALL ON DATABASE agentq FROM PUBLIC;
-- CONNECT only (no TEMPORARY); table rights come from the migrations (0006: the analyst role).
GRANT CONNECT ON DATABASE agentq TO agentq_worker;
\c agentq
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO agentq_owner;
GRANT USAGE ON SCHEMA public TO agentq_worker;
SQL
}

pg_up() {
  local bin; bin="$(pg_bindir)" || die "postgres binaries not found"
  if pg_running && pg_healthy; then
    log "postgres: already running (port $PG_PORT)"
    pg_provision; return 0
  fi
  if ! pg_running && pg_healthy; then
    log "postgres: something else already answers on 127.0.0.1:$PG_PORT; reusing it (roles not provisioned)"
    return 0
  fi
  mkdir -p "$PG_DIR" "$PG_RUN"
  if is_root; then
    # the postgres OS user must be able to reach its data dir (umask 077 setups)
    chmod o+x "$AGENTQ_HOME" "$SVC" 2>/dev/null || true
    chown postgres:postgres "$PG_DIR" "$PG_RUN"
  fi
  chmod 700 "$PG_RUN" 2>/dev/null || true
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    log "postgres: initdb in $PG_DATA"
    rm -rf "$PG_DATA"
    mkdir -p "$PG_DATA"; chmod 700 "$PG_DATA"
    if is_root; then chown postgres:postgres "$PG_DATA"; fi
    as_pg "$bin/initdb" -D "$PG_DATA" -U "$(pg_user)" -E UTF8 --locale=C.UTF-8 \
      --auth-local=peer --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1 \
      || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
  fi
  pg_write_config
  if ! pg_running; then
    pg_clear_stale_pidfile
    log "postgres: starting on 127.0.0.1:$PG_PORT"
    touch "$PG_LOG"; if is_root; then chown postgres:postgres "$PG_LOG"; fi
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null \
      || { tail -n 30 "$PG_LOG" >&2; die "postgres did not start"; }
    mark_started postgres
  fi
  wait_for 60 "postgres on port $PG_PORT" pg_healthy || die "postgres not healthy"
  pg_provision
  log "postgres: up"
}

pg_down() {  # pg_down [fast|immediate]
  local bin mode="${1:-fast}"; bin="$(pg_bindir)" || return 0
  if ! pg_running; then log "postgres: not running (from $PG_DATA)"; return 0; fi
  as_pg "$bin/pg_ctl" -D "$PG_DATA" -m "$mode" -w -t 60 stop >/dev/null
  log "postgres: stopped ($mode)"
}

pg_kill() {
  local pid; pid="$(head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)"
  if pid_alive "$pid"; then
    kill -KILL "$pid"
    wait_for 10 "postmaster $pid to exit" pid_dead "$pid" || true
    log "postgres: postmaster $pid killed"
  else
    log "postgres: not running"
  fi
}

pg_restart() {  # pg_restart [fast|immediate]
  local bin mode="${1:-fast}"; bin="$(pg_bindir)" || die "postgres binaries not found"
  if ! pg_running; then pg_up; return; fi
  pg_clear_stale_pidfile
  as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -m "$mode" -w -t 60 restart >/dev/null
  wait_for 60 "postgres on port $PG_PORT" pg_healthy || die "postgres not healthy after restart"
  log "postgres: restarted ($mode)"
}

pg_status() {
  if pg_running && pg_healthy; then echo "postgres  up    127.0.0.1:$PG_PORT db=agentq"
  elif pg_healthy; then echo "postgres  up    127.0.0.1:$PG_PORT (not managed here)"
  elif pg_running; then echo "postgres  starting/unhealthy"
  else echo "postgres  down"; fi
}

# ---------------------------------------------------------------- redis ----
redis_cli() {
  if [ -n "${AGENTQ_REDIS_PASSWORD:-}" ]; then
    REDISCLI_AUTH="$AGENTQ_REDIS_PASSWORD" redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"
  else
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"
  fi
}
redis_pid() {
  local pid; pid="$(cat "$REDIS_PID" 2>/dev/null || true)"
  if pid_alive "$pid"; then echo "$pid"; fi
}
redis_healthy() { [ "$(redis_cli ping 2>/dev/null)" = PONG ]; }

redis_write_config() {
  mkdir -p "$REDIS_DIR"
  ( umask 077
    cat >"$REDIS_DIR/redis.conf" <<CONF
# generated by scripts/services.sh
port $REDIS_PORT
bind 127.0.0.1
protected-mode yes
daemonize yes
pidfile $REDIS_PID
dir $REDIS_DIR
logfile $REDIS_DIR/redis.log
loglevel notice
save ""
appendonly ${AGENTQ_REDIS_APPENDONLY:-no}
maxmemory-policy noeviction
CONF
    if [ -n "${AGENTQ_REDIS_PASSWORD:-}" ]; then
      printf 'requirepass "%s"\n' "$AGENTQ_REDIS_PASSWORD" >>"$REDIS_DIR/redis.conf"
    fi )
}

redis_up() {
  if [ -n "$(redis_pid)" ] && redis_healthy; then log "redis: already running (pid $(redis_pid))"; return 0; fi
  if [ -z "$(redis_pid)" ] && redis_healthy; then
    log "redis: something else already answers on 127.0.0.1:$REDIS_PORT; reusing it"; return 0
  fi
  redis_write_config
  if [ -z "$(redis_pid)" ]; then
    log "redis: starting on 127.0.0.1:$REDIS_PORT"
    redis-server "$REDIS_DIR/redis.conf" || die "redis-server failed to start"
    mark_started redis
  fi
  wait_for 30 "redis on port $REDIS_PORT" redis_healthy \
    || { tail -n 20 "$REDIS_DIR/redis.log" >&2 2>/dev/null; die "redis not healthy"; }
  log "redis: up (pid $(redis_pid))"
}

redis_down() {
  local pid; pid="$(redis_pid)"
  if [ -z "$pid" ]; then log "redis: not running (from $REDIS_DIR)"; return 0; fi
  redis_cli shutdown nosave >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  wait_for 15 "redis pid $pid to exit" pid_dead "$pid" || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$REDIS_PID"
  log "redis: stopped (nosave)"
}

redis_kill() {
  local pid; pid="$(redis_pid)"
  if [ -n "$pid" ]; then
    kill -KILL "$pid"
    wait_for 10 "redis pid $pid to exit" pid_dead "$pid" || true
    rm -f "$REDIS_PID"; log "redis: pid $pid killed"
  else
    log "redis: not running"
  fi
}

redis_status() {
  if [ -n "$(redis_pid)" ] && redis_healthy; then echo "redis     up    127.0.0.1:$REDIS_PORT (pid $(redis_pid))"
  elif redis_healthy; then echo "redis     up    127.0.0.1:$REDIS_PORT (not managed here)"
  else echo "redis     down"; fi
}

# ----------------------------------------------------------- prometheus ----
prom_pid() {
  local pid; pid="$(cat "$PROM_PID" 2>/dev/null || true)"
  if pid_alive "$pid"; then echo "$pid"; fi
}
prom_healthy() {
  python3 - "$PROM_PORT" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/-/ready", timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except OSError:
    sys.exit(1)
PY
}

prom_targets() {  # prom_targets "h:p,h:p" -> YAML list items
  local t
  for t in ${1//,/ }; do printf '          - "%s"\n' "$t"; done
}

prom_write_config() {
  mkdir -p "$PROM_DIR"
  local job targets
  {
    cat <<CONF
# generated by scripts/services.sh (compose: deploy/prometheus/prometheus.yml)
global:
  scrape_interval: ${AGENTQ_PROMETHEUS_SCRAPE_INTERVAL:-5s}
  evaluation_interval: 15s
rule_files:
  - $AGENTQ_REPO/deploy/prometheus/rules.yml
scrape_configs:
CONF
    for job in bridge:"${AGENTQ_PROMETHEUS_BRIDGES:-127.0.0.1:9108}" \
               worker:"${AGENTQ_PROMETHEUS_WORKERS:-127.0.0.1:9109}" \
               autoscaler:"${AGENTQ_PROMETHEUS_AUTOSCALERS:-127.0.0.1:9110}"; do
      targets="${job#*:}"
      [ -n "$targets" ] || continue
      printf '  - job_name: agentq-%s\n    static_configs:\n      - targets:\n' "${job%%:*}"
      prom_targets "$targets"
    done
  } >"$PROM_DIR/prometheus.yml"
  promtool check config "$PROM_DIR/prometheus.yml" >"$PROM_DIR/check.log" 2>&1 \
    || { cat "$PROM_DIR/check.log" >&2; die "prometheus config invalid"; }
}

prom_up() {
  prom_write_config
  if [ -n "$(prom_pid)" ] && prom_healthy; then
    # Reuse it; pick up the (possibly new) targets.
    kill -HUP "$(prom_pid)"
    log "prometheus: already running (pid $(prom_pid)), config reloaded"; return 0
  fi
  if [ -z "$(prom_pid)" ] && prom_healthy; then
    log "prometheus: something else already answers on 127.0.0.1:$PROM_PORT; reusing it"; return 0
  fi
  log "prometheus: starting on 127.0.0.1:$PROM_PORT"
  setsid nohup prometheus --config.file="$PROM_DIR/prometheus.yml" \
    --storage.tsdb.path="$PROM_DIR/data" --storage.tsdb.retention.time=2d \
    --web.listen-address="127.0.0.1:$PROM_PORT" \
    >"$PROM_DIR/prometheus.log" 2>&1 </dev/null &
  echo $! >"$PROM_PID"
  mark_started prometheus
  wait_for 60 "prometheus on port $PROM_PORT" prom_healthy \
    || { tail -n 20 "$PROM_DIR/prometheus.log" >&2; die "prometheus not healthy"; }
  log "prometheus: up (pid $(prom_pid)), http://127.0.0.1:$PROM_PORT"
}

prom_down() {
  local pid; pid="$(prom_pid)"
  if [ -z "$pid" ]; then log "prometheus: not running (from $PROM_DIR)"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  wait_for 30 "prometheus pid $pid to exit" pid_dead "$pid" || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PROM_PID"
  log "prometheus: stopped"
}

prom_status() {
  if [ -n "$(prom_pid)" ] && prom_healthy; then echo "prometheus up    127.0.0.1:$PROM_PORT (pid $(prom_pid))"
  elif prom_healthy; then echo "prometheus up    127.0.0.1:$PROM_PORT (not managed here)"
  else echo "prometheus down (optional: up prometheus)"; fi
}

# ----------------------------------------------------------------- main ----
svc_names() {  # validates names; empty list -> all
  local n
  if [ "$#" -eq 0 ]; then printf '%s\n' "${ALL_SERVICES[@]}"; return; fi
  for n in "$@"; do
    case "$n" in
      kafka|postgres|redis|prometheus) echo "$n" ;;
      pg|postgresql) echo postgres ;;
      *) die "unknown service: $n (kafka, postgres, redis, prometheus)" ;;
    esac
  done
}

endpoints() {
  cat <<EOT
AGENTQ_KAFKA_BOOTSTRAP=$AGENTQ_KAFKA_BOOTSTRAP
AGENTQ_REDIS_URL=$(printf '%s' "$AGENTQ_REDIS_URL" | sed -E 's#(://[^:/@]*:)[^@]*@#\1***@#')
AGENTQ_DATABASE_URL=$(printf '%s' "$AGENTQ_DATABASE_URL" | sed -E 's#(://[^:/@]*:)[^@]*@#\1***@#')
AGENTQ_WORKER_DATABASE_URL=$(printf '%s' "$AGENTQ_WORKER_DATABASE_URL" | sed -E 's#(://[^:/@]*:)[^@]*@#\1***@#')
EOT
}

cmd="${1:-status}"; shift || true
case "$cmd" in
  up|start)
    mapfile -t names < <(svc_names "$@")
    mkdir -p "$SVC"
    ensure_packages "${names[@]}"
    for n in "${names[@]}"; do
      case "$n" in kafka) kafka_up ;; postgres) pg_up ;; redis) redis_up ;; prometheus) prom_up ;; esac
    done
    endpoints
    ;;
  down|stop)
    if [ "$#" -eq 0 ]; then
      mapfile -t names < <(cat "$STARTED_FILE" 2>/dev/null || true)
      [ "${#names[@]}" -gt 0 ] || log "nothing recorded in $STARTED_FILE; nothing to stop"
    else
      mapfile -t names < <(svc_names "$@")
    fi
    for n in "${names[@]}"; do
      case "$n" in
        kafka) kafka_down ;; postgres) pg_down ;; redis) redis_down ;; prometheus) prom_down ;;
        *) continue ;;
      esac
      unmark_started "$n"
    done
    ;;
  restart)
    [ "$#" -ge 1 ] || die "usage: $0 restart <kafka|postgres|redis> [--immediate]"
    name="$(svc_names "$1")"; shift
    mode=fast; [ "${1:-}" = --immediate ] && mode=immediate
    case "$name" in
      kafka) if [ "$mode" = immediate ]; then kafka_down KILL; else kafka_down; fi; kafka_up ;;
      postgres) pg_restart "$mode" ;;
      redis) redis_down; redis_up ;;
      prometheus) prom_down; prom_up ;;
    esac
    ;;
  kill)
    [ "$#" -ge 1 ] || die "usage: $0 kill <kafka|postgres|redis>"
    case "$(svc_names "$1")" in
      kafka) kafka_down KILL ;; postgres) pg_kill ;; redis) redis_kill ;; prometheus) prom_down ;;
    esac
    ;;
  status)
    kafka_status; pg_status; redis_status; prom_status
    ;;
  env|endpoints)
    endpoints
    ;;
  *)
    die "usage: $0 up|down|status|restart|kill [kafka|postgres|redis]"
    ;;
esac
