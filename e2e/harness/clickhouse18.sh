#!/usr/bin/env bash
# Start Debian's real clickhouse-server 18.16 (no BACKUP, no S3) on 127.0.0.1, for the
# version-refusal tests and the HTTP client against a real server binary.
# Usage: clickhouse18.sh DIR HTTP_PORT USER PASSWORD_FILE
set -euo pipefail
dir=$1 port=$2 user=$3 password_file=$4
mkdir -p "$dir/data" "$dir/tmp" "$dir/log"
password_sha=$(tr -d '\n' < "$password_file" | sha256sum | cut -d' ' -f1)
cat > "$dir/config.xml" <<XML
<yandex>
  <logger><level>warning</level><log>$dir/log/server.log</log><errorlog>$dir/log/error.log</errorlog></logger>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/data/user_files/</user_files_path>
  <format_schema_path>$dir/data/format_schemas/</format_schema_path>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>5368709</mark_cache_size>
</yandex>
XML
cat > "$dir/users.xml" <<XML
<yandex>
  <profiles><default/></profiles>
  <quotas><default/></quotas>
  <users>
    <$user>
      <password_sha256_hex>$password_sha</password_sha256_hex>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </$user>
  </users>
</yandex>
XML
owner=()
if [ "$(id -u)" = 0 ] && id clickhouse >/dev/null 2>&1; then
  chown -R clickhouse "$dir"
  owner=(runuser -u clickhouse --)
fi
tcp_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
"${owner[@]}" /usr/sbin/clickhouse-server --config-file="$dir/config.xml" --pid-file="$dir/server.pid" \
  -- --listen_host=127.0.0.1 --http_port="$port" --tcp_port="$tcp_port" \
  > "$dir/log/stdout.log" 2>&1 &
launcher=$!
for _ in $(seq 1 100); do
  if curl -sf "http://127.0.0.1:$port/ping" >/dev/null; then
    # The server's own pid (under runuser, its child), for the harness to stop it: the pid file
    # the server writes is not enough (runs left clickhouse-server 18.16 behind without this).
    server=$(pgrep -P "$launcher" -f clickhouse-server || echo "$launcher")
    echo "$server" > "$dir/server.pid"
    exit 0
  fi
  sleep 0.1
done
echo "clickhouse18: no answer on 127.0.0.1:$port after 10 s" >&2
exit 1
