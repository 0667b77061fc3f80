#!/usr/bin/env bash
# Start the servers the tests use on 127.0.0.1, run a command with their addresses in the
# environment, and stop them whatever happens.
# Usage: with-servers.sh COMMAND [ARGS...]
#   SERVERS   which to start (default "postgres rgw moto clickhouse clickhouse18")
#   VENV      the project venv holding moto (default .venv)
#   PG_STANDBY "no" starts PostgreSQL without its streaming standby (the benchmark: a standby
#             on the same cores replays every restore's WAL, a cost no production restore
#             pays on the database's own node)
# Exports: STRONGROOM_TEST_PGHOST (socket dir), STRONGROOM_TEST_PGPORT,
#   STRONGROOM_TEST_PG_STANDBY_HOST, STRONGROOM_TEST_PG_STANDBY_PORT (a streaming standby),
#   STRONGROOM_TEST_PG2_HOST, STRONGROOM_TEST_PG2_PORT (a second, empty cluster),
#   STRONGROOM_TEST_PG_PASSWORD_FILE, STRONGROOM_TEST_PG_CA (the CA of the server's TLS
#   certificate, which names only localhost; TCP takes TLS only),
#   STRONGROOM_TEST_S3_RGW, STRONGROOM_TEST_S3_MOTO,
#   STRONGROOM_TEST_VENV (for tests that start their own moto),
#   STRONGROOM_TEST_S3_LOCALSTACK (only when SERVERS names localstack; venv .venv-localstack),
#   STRONGROOM_TEST_CLICKHOUSE_URL (the chdb front end: ClickHouse 26.9 with BACKUP),
#   STRONGROOM_TEST_CLICKHOUSE18_URL (Debian's clickhouse-server 18.16, too old to back up),
#   STRONGROOM_TEST_CLICKHOUSE_USER, STRONGROOM_TEST_CLICKHOUSE_PASSWORD_FILE (both servers),
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION (the bucket owner),
#   STRONGROOM_TEST_RGW_{CLICKHOUSE,WRITER,READER}_{KEY,SECRET} (RGW users with no access of
#   their own: uids clickhouse-server, backup-writer, restore-reader, for bucket policies).
# A server that cannot start fails the run with its log; nothing is skipped.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
servers=${SERVERS:-postgres rgw moto clickhouse clickhouse18}
venv=${VENV:-.venv}
work=$(mktemp -d "${TMPDIR:-/tmp}/strongroom-servers.XXXXXX")
chmod 755 "$work"
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

stop() {
  set +e
  for data in "$work/pg/standby" "$work/pg/data" "$work/pg2/data"; do
    [ -f "$data/postmaster.pid" ] || continue
    if [ "$(id -u)" = 0 ]; then
      su postgres -s /bin/bash -c "'$(pg_config --bindir)/pg_ctl' -D '$data' -m immediate stop" >/dev/null 2>&1
    else
      "$(pg_config --bindir)/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1
    fi
  done
  pidfiles=("$work"/moto/moto.pid "$work"/rgw/run/*.pid "$work"/chdb/chdb.pid "$work"/ch18/server.pid "$work"/localstack/localstack.pid)
  # Read once: a server may remove its pid file as it shuts down, before the KILL below.
  pids=()
  for pidfile in "${pidfiles[@]}"; do
    [ -f "$pidfile" ] && pids+=("$(cat "$pidfile")")
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  sleep 0.5
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
  if [ -n "${KEEP_SERVER_LOGS:-}" ]; then echo "server logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap stop EXIT

export AWS_ACCESS_KEY_ID=strongroomtest AWS_SECRET_ACCESS_KEY=strongroomtestsecret AWS_REGION=us-east-1
export STRONGROOM_TEST_CLICKHOUSE_USER=strongroom
mkdir -p "$work/secrets"
head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$work/secrets/clickhouse-password"
chmod 644 "$work/secrets/clickhouse-password"
export STRONGROOM_TEST_CLICKHOUSE_PASSWORD_FILE="$work/secrets/clickhouse-password"
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL || true

for server in $servers; do
  started=$(date +%s%N)
  case $server in
    postgres)
      port=$(free_port) standby_port=
      [ "${PG_STANDBY:-yes}" = no ] || standby_port=$(free_port)
      "$here/postgres.sh" "$work/pg" "$port" $standby_port || {
        echo "with-servers: PostgreSQL failed to start; its logs:" >&2
        cat "$work/pg/server.log" "$work/pg/initdb.log" "$work/pg/standby.log" >&2 2>/dev/null; exit 1; }
      export STRONGROOM_TEST_PGHOST="$work/pg/socket" STRONGROOM_TEST_PGPORT="$port"
      if [ -n "$standby_port" ]; then
        export STRONGROOM_TEST_PG_STANDBY_HOST="$work/pg/standby-socket" STRONGROOM_TEST_PG_STANDBY_PORT="$standby_port"
      fi
      export STRONGROOM_TEST_PG_PASSWORD_FILE="$work/pg/backup-password"
      export STRONGROOM_TEST_PG_CA="$work/pg/tls/ca.crt"
      # A second, empty cluster: a restore into a fresh cluster (roles missing), as after a
      # real loss.
      port=$(free_port)
      "$here/postgres.sh" "$work/pg2" "$port" || {
        echo "with-servers: the second PostgreSQL failed to start; its logs:" >&2
        cat "$work/pg2/server.log" "$work/pg2/initdb.log" >&2 2>/dev/null; exit 1; }
      export STRONGROOM_TEST_PG2_HOST="$work/pg2/socket" STRONGROOM_TEST_PG2_PORT="$port"
      ;;
    rgw)
      port=$(free_port)
      # Users that bucket policies grant access to, for the least-privilege tests.
      export STRONGROOM_TEST_RGW_CLICKHOUSE_KEY=srchserver STRONGROOM_TEST_RGW_CLICKHOUSE_SECRET=srchserversecret
      export STRONGROOM_TEST_RGW_WRITER_KEY=srwriter STRONGROOM_TEST_RGW_WRITER_SECRET=srwritersecret
      export STRONGROOM_TEST_RGW_READER_KEY=srreader STRONGROOM_TEST_RGW_READER_SECRET=srreadersecret
      "$here/ceph-rgw.sh" "$work/rgw" "$port" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" \
        "clickhouse-server:$STRONGROOM_TEST_RGW_CLICKHOUSE_KEY:$STRONGROOM_TEST_RGW_CLICKHOUSE_SECRET" \
        "backup-writer:$STRONGROOM_TEST_RGW_WRITER_KEY:$STRONGROOM_TEST_RGW_WRITER_SECRET" \
        "restore-reader:$STRONGROOM_TEST_RGW_READER_KEY:$STRONGROOM_TEST_RGW_READER_SECRET" || {
        echo "with-servers: Ceph RGW failed to start; its logs:" >&2
        tail -n 50 "$work"/rgw/log/*.log >&2 2>/dev/null; exit 1; }
      export STRONGROOM_TEST_S3_RGW="http://127.0.0.1:$port"
      ;;
    moto)
      port=$(free_port)
      "$here/moto.sh" "$work/moto" "$port" "$venv"
      export STRONGROOM_TEST_S3_MOTO="http://127.0.0.1:$port"
      STRONGROOM_TEST_VENV=$(cd "$venv" && pwd)
      export STRONGROOM_TEST_VENV
      ;;
    clickhouse)
      port=$(free_port)
      mkdir -p "$work/chdb"
      "$venv/bin/python" "$here/chdb_http.py" --data "$work/chdb/data" --port "$port" \
        --user "$STRONGROOM_TEST_CLICKHOUSE_USER" --password-file "$STRONGROOM_TEST_CLICKHOUSE_PASSWORD_FILE" \
        > "$work/chdb/server.log" 2>&1 &
      echo $! > "$work/chdb/chdb.pid"
      up=
      for _ in $(seq 1 300); do
        if curl -sf "http://127.0.0.1:$port/ping" >/dev/null; then up=1; break; fi
        kill -0 "$(cat "$work/chdb/chdb.pid")" 2>/dev/null || break
        sleep 0.1
      done
      [ -n "$up" ] || { echo "with-servers: the chdb ClickHouse front end failed to start; its log:" >&2
        cat "$work/chdb/server.log" >&2; exit 1; }
      export STRONGROOM_TEST_CLICKHOUSE_URL="http://127.0.0.1:$port"
      ;;
    clickhouse18)
      port=$(free_port)
      "$here/clickhouse18.sh" "$work/ch18" "$port" "$STRONGROOM_TEST_CLICKHOUSE_USER" \
        "$STRONGROOM_TEST_CLICKHOUSE_PASSWORD_FILE" || {
        echo "with-servers: clickhouse-server 18.16 failed to start; its logs:" >&2
        tail -n 50 "$work"/ch18/log/*.log >&2 2>/dev/null; exit 1; }
      export STRONGROOM_TEST_CLICKHOUSE18_URL="http://127.0.0.1:$port"
      ;;
    localstack)
      port=$(free_port)
      "$here/localstack.sh" "$work/localstack" "$port" "${LOCALSTACK_VENV:-.venv-localstack}" || {
        echo "with-servers: LocalStack failed to start" >&2; exit 1; }
      export STRONGROOM_TEST_S3_LOCALSTACK="http://127.0.0.1:$port"
      ;;
    *) echo "with-servers: unknown server '$server' (known: postgres rgw moto clickhouse clickhouse18 localstack)" >&2; exit 64 ;;
  esac
  echo "with-servers: $server up in $(( ($(date +%s%N) - started) / 1000000 )) ms" >&2
done

"$@"
