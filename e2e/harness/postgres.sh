#!/usr/bin/env bash
# Start a throw-away PostgreSQL 15 on 127.0.0.1:PORT with its Unix socket in DIR/socket, and
# with STANDBY_PORT a streaming standby of it (DIR/standby, socket DIR/standby-socket).
# Usage: postgres.sh DIR PORT [STANDBY_PORT]
# Creates the role `strongroom_backup` (member of pg_read_all_data, password in
# DIR/backup-password), the agent's least-privilege role. The `postgres` superuser is trusted
# over the socket only, for test setup. TCP takes TLS only (hostssl; hostnossl is rejected),
# with a certificate for `localhost` alone (SAN DNS:localhost, no IP SAN, so verify-full to
# 127.0.0.1 fails on the name) issued by a CA made here, DIR/tls/ca.crt (its key is deleted).
# The standby inherits the same configuration. Stop with: pg_ctl -D DIR/data stop.
set -euo pipefail
dir=$1 port=$2 standby_port=${3:-}
bindir=$(pg_config --bindir)
[ -x "$bindir/initdb" ] || { echo "postgres.sh: no initdb in $bindir; install postgresql-15" >&2; exit 1; }
mkdir -p "$dir/socket" "$dir/tls"
chmod 755 "$dir"
command -v openssl >/dev/null || { echo "postgres.sh: no openssl; install it (apt-get install openssl)" >&2; exit 1; }
# A CA and a server certificate for localhost, ECDSA P-256 (fast to make), valid 30 days.
tls=$dir/tls
cat >"$tls/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = strongroom test CA
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -days 30 \
  -config "$tls/openssl.cnf" -extensions ca -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>"$tls/openssl.log"
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -config "$tls/openssl.cnf" -subj "/CN=localhost" -keyout "$tls/server.key" -out "$tls/server.csr" 2>>"$tls/openssl.log"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
  -days 30 -extfile "$tls/openssl.cnf" -extensions server -out "$tls/server.crt" 2>>"$tls/openssl.log"
rm -f "$tls/ca.key" "$tls/server.csr" "$tls/ca.srl"
chmod 644 "$tls/ca.crt" "$tls/server.crt"
chmod 600 "$tls/server.key"
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
ssl = on
ssl_cert_file = '$tls/server.crt'
ssl_key_file = '$tls/server.key'
CONF
cat >"$dir/data/pg_hba.conf" <<HBA
local all postgres trust
local replication postgres trust
local all all scram-sha-256
hostssl   all all 127.0.0.1/32 scram-sha-256
hostnossl all all 127.0.0.1/32 reject
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
  # A replication slot: the primary keeps the WAL the standby has not replayed yet. Without
  # one, a standby that falls behind while the tests load gigabytes of WAL finds the segment
  # it needs recycled by a checkpoint ("requested WAL segment ... has already been removed")
  # and never catches up again.
  as_pg "'$bindir/pg_basebackup' -D '$dir/standby' -R -C -S strongroom_standby -X stream -h '$dir/socket' -p $port -U postgres"
  cat >>"$dir/standby/postgresql.conf" <<CONF
port = $standby_port
unix_socket_directories = '$dir/standby-socket'
CONF
  as_pg "'$bindir/pg_ctl' -D '$dir/standby' -l '$dir/standby.log' -w -t 60 start" >/dev/null
fi
