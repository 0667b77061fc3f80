#!/usr/bin/env bash
# Start moto's S3 server on 127.0.0.1:PORT in the background, from the project venv.
# Usage: moto.sh DIR PORT VENV   (pid in DIR/moto.pid, log in DIR/moto.log)
set -euo pipefail
dir=$1 port=$2 venv=$3
[ -x "$venv/bin/moto_server" ] || { echo "moto.sh: $venv/bin/moto_server missing; run make deps" >&2; exit 1; }
mkdir -p "$dir"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
echo $! >"$dir/moto.pid"
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$port/" && exit 0
  kill -0 "$(cat "$dir/moto.pid")" 2>/dev/null || break
  sleep 0.1
done
echo "moto.sh: moto did not answer on 127.0.0.1:$port; its log:" >&2
cat "$dir/moto.log" >&2
exit 1
