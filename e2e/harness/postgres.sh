#!/usr/bin/env bash
# Start a throw-away PostgreSQL 15 on 127.0.0.1:PORT with its Unix socket in DIR/socket, and
# with STANDBY_PORT a streaming standby of it (DIR/standby, socket DIR/standby-socket).
# Usage: postgres.sh DIR PORT [STANDBY_PORT]
# Creates the role `strongroom_backup` (member of pg_read_all_data, password in
# DIR/backup-password), the agent's least-privilege role. The `postgres` superuser is trusted
# over the socket only, for test setup. Stop with: pg_ctl -D DIR/data stop.
set -euo pipefail
dir=$1 port=$2 standby_port=${3:-}
bindir=$(pg_config --bindir)
[ -x "$bindir/initdb" ] || { echo "postgres.sh: no initdb in $bindir; install postgresql-15" >&2; exit 1; }
mkdir -p "$dir/socket"
chmod 755 "$dir"
as_pg() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi
}
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$dir"
as_pg "'$bindir/initdb' -D '$dir/data' -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8" >"$dir/initdb.log"
cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/socket'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 256MB
log_min_messages = warning
CONF
cat >"$dir/data/pg_hba.conf" <<HBA
local all postgres trust
local replication postgres trust
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
HBA
as_pg "'$bindir/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -t 60 start" >/dev/null
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
umask 077
printf '%s\n' "$password" >"$dir/backup-password"
psql -X -q -v ON_ERROR_STOP=1 -h "$dir/socket" -p "$port" -U postgres -d postgres <<SQL
CREATE ROLE strongroom_backup LOGIN PASSWORD '$password' IN ROLE pg_read_all_data;
SQL
if [ -n "$standby_port" ]; then
  mkdir -p "$dir/standby-socket"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir/standby-socket"
  as_pg "'$bindir/pg_basebackup' -D '$dir/standby' -R -X stream -h '$dir/socket' -p $port -U postgres"
  cat >>"$dir/standby/postgresql.conf" <<CONF
port = $standby_port
unix_socket_directories = '$dir/standby-socket'
CONF
  as_pg "'$bindir/pg_ctl' -D '$dir/standby' -l '$dir/standby.log' -w -t 60 start" >/dev/null
fi
