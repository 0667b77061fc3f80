#!/usr/bin/env bash
# Start LocalStack (S3, IAM, STS, KMS) on 127.0.0.1 with its state in DIR.
# Usage: localstack.sh DIR PORT VENV     Stop it with `kill $(cat DIR/localstack.pid)`.
set -euo pipefail
dir=$1 port=$2 venv=$3
mkdir -p "$dir/root"
OVERRIDE_IN_DOCKER=0 GATEWAY_SERVER=hypercorn GATEWAY_LISTEN="127.0.0.1:$port" DNS_ADDRESS=0 \
  SERVICES=s3,iam,sts,kms FILESYSTEM_ROOT="$dir/root" LOCALSTACK_TELEMETRY_DISABLED=1 \
  "$venv/bin/python" -m localstack.runtime.main > "$dir/localstack.log" 2>&1 &
echo $! > "$dir/localstack.pid"
for _ in $(seq 1 600); do
  if curl -sf "http://127.0.0.1:$port/_localstack/health" 2>/dev/null | grep -q '"s3": "\(available\|running\)"'; then
    exit 0
  fi
  kill -0 "$(cat "$dir/localstack.pid")" 2>/dev/null || break
  sleep 0.1
done
echo "localstack.sh: LocalStack did not become ready on 127.0.0.1:$port; its log:" >&2
tail -n 40 "$dir/localstack.log" >&2
exit 1
