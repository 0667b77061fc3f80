#!/usr/bin/env bash
# `make bench`, ClickHouse part (not a test). Runs inside e2e/harness/with-servers.sh with Ceph
# RGW and the chdb ClickHouse front end. Builds one MergeTree table of $CH_ROWS rows, then
# interleaves over $CH_ROUNDS rounds, alternating which goes first (after an untimed warm-up of
# each):
#   (h) strongroom backup --engine clickhouse: version check, BACKUP ... ASYNC polled in
#       system.backups, then the listing, retention and row-count checks and the signed manifest
#   (i) the same BACKUP statement run directly (synchronously) through the same HTTP interface
# Prints median wall times and h/i, the agent's overhead (target <= 1.05), and, from
# system.backups, how long ClickHouse itself took for each BACKUP, so that the time spent outside
# the BACKUP (the agent's own work) is shown apart from the BACKUP's own variation. Appends it all
# to target/bench/summary.txt. Usage: clickhouse.sh PATH/TO/strongroom
# Env: CH_ROUNDS (7), CH_ROWS (80000000). The RGW's block file must hold 2 + 2 x CH_ROUNDS
# backups (about 2.4 GB each at 80M rows): a full Ceph OSD stalls writes instead of failing them,
# so every request here has a time limit.
# The agent runs with its defaults (e.g. clickhouse.poll_interval_ms: 100).
set -euo pipefail
strongroom=$(realpath "$1")
rounds=${CH_ROUNDS:-7}
rows=${CH_ROWS:-80000000}
out=target/bench
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
aws() { .venv/bin/aws --endpoint-url "$STRONGROOM_TEST_S3_RGW" --output json "$@"; }
# The password goes to curl in a header file, not on its command line.
umask 077
printf 'X-ClickHouse-User: %s\nX-ClickHouse-Key: %s\n' "$STRONGROOM_TEST_CLICKHOUSE_USER" \
  "$(tr -d '\n' < "$STRONGROOM_TEST_CLICKHOUSE_PASSWORD_FILE")" > "$work/headers"
ch() { curl -sS --max-time 900 --fail-with-body -H @"$work/headers" "$STRONGROOM_TEST_CLICKHOUSE_URL/" --data-binary "$1"; }

aws s3api create-bucket --bucket chbench --object-lock-enabled-for-bucket >/dev/null
aws s3api put-object-lock-configuration --bucket chbench --object-lock-configuration \
  '{"ObjectLockEnabled":"Enabled","Rule":{"DefaultRetention":{"Mode":"GOVERNANCE","Years":7}}}'
{ printf "CREATE NAMED COLLECTION chbench AS url = '%s/chbench/', " "$STRONGROOM_TEST_S3_RGW"
  printf "access_key_id = '%s', secret_access_key = '%s'" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"
} > "$work/collection.sql"
ch "$(cat "$work/collection.sql")"
echo "== building bench.storage_records ($rows rows)" >&2
ch "CREATE DATABASE bench"
ch "CREATE TABLE bench.storage_records (id UInt64, ts DateTime, user_id UInt32,
    kind LowCardinality(String), body String, score Float64, tags Array(String))
    ENGINE = MergeTree ORDER BY (user_id, id)"
ch "INSERT INTO bench.storage_records SELECT number, toDateTime('2026-01-01') + number % 31536000,
    cityHash64(number) % 100000, ['view', 'click', 'buy', 'share'][number % 4 + 1],
    concat('record ', toString(number), ' ', hex(cityHash64(number))), cityHash64(number) / 1e19,
    arrayMap(x -> toString(x), range(number % 3)) FROM numbers($rows)"
ch "OPTIMIZE TABLE bench.storage_records FINAL"
size=$(ch "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = 'bench' AND active")
echo "== $((size / 1000000)) MB on disk" >&2

cat > "$work/strongroom.yaml" <<YAML
release: bench
s3:
  bucket: chbench
  prefix: backups/bench
  endpoint: $STRONGROOM_TEST_S3_RGW
clickhouse:
  url: $STRONGROOM_TEST_CLICKHOUSE_URL
  user: $STRONGROOM_TEST_CLICKHOUSE_USER
  password_file: $STRONGROOM_TEST_CLICKHOUSE_PASSWORD_FILE
  databases: [bench]
  named_collection: chbench
  backup_timeout_seconds: 900
log:
  format: json
YAML

run_direct() {  # $1: a name for the destination folder

  local start end
  start=$(date +%s.%N)
  ch "BACKUP DATABASE bench TO S3(chbench, 'direct/$1/') SETTINGS id = 'direct-$1'" >/dev/null
  end=$(date +%s.%N)
  python3 -c "print(round($end - $start, 3))"
}
run_agent() {
  local start end
  start=$(date +%s.%N)
  "$strongroom" backup --engine clickhouse --config "$work/strongroom.yaml" >/dev/null 2>"$work/agent.log" \
    || { cat "$work/agent.log" >&2; exit 1; }
  end=$(date +%s.%N)
  python3 -c "print(round($end - $start, 3))"
}
echo "== warm-up" >&2
run_direct warm-up >/dev/null
run_agent >/dev/null
results=$out/clickhouse.tsv
: > "$results"
# The order alternates and each run starts after a pause: a BACKUP right after another one is
# measurably slower on this RGW (it is still settling), which must not favour either side.
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) = 1 ]; then
    sleep 3; i=$(run_direct "$round")
    sleep 3; h=$(run_agent)
  else
    sleep 3; h=$(run_agent)
    sleep 3; i=$(run_direct "$round")
  fi
  echo "$round i $i" >> "$results"
  echo "$round h $h" >> "$results"
  echo "round $round: agent ${h}s, direct ${i}s" >&2
done
# ClickHouse's own duration of every BACKUP, by id (agent runs: strongroom-bench-<timestamp>-...).
ch "SELECT id, dateDiff('millisecond', start_time, end_time) FROM system.backups
    WHERE status = 'BACKUP_CREATED' ORDER BY start_time FORMAT TSV" > "$out/clickhouse-server.tsv"
python3 - "$results" "$rounds" "$rows" "$size" "$out/clickhouse-server.tsv" <<'PY' | tee -a "$out/summary.txt"
import statistics, sys
path, rounds, rows, size, server_path = sys.argv[1:6]
runs = {}
for line in open(path):
    _, which, wall = line.split()
    runs.setdefault(which, []).append(float(wall))
server = [(i, int(ms) / 1000) for i, ms in (l.split() for l in open(server_path))]
direct_server = [d for i, d in server if i.startswith("direct-") and i != "direct-warm-up"]
agent_server = [d for i, d in server if i.startswith("strongroom-")][1:]  # [0] is the warm-up
h, i = statistics.median(runs["h"]), statistics.median(runs["i"])
outside_h = statistics.median(w - d for w, d in zip(runs["h"], agent_server))
outside_i = statistics.median(w - d for w, d in zip(runs["i"], direct_server))
print("command: make bench  (e2e/bench/clickhouse.sh; CH_ROUNDS=%s CH_ROWS=%s)" % (rounds, rows))
print("ClickHouse 26.9 (chdb) -> Ceph RGW, %s rows, %.0f MB on disk" % (rows, int(size) / 1e6))
print("h   strongroom backup --engine clickhouse   %6.2f s  (min %.2f, max %.2f)" % (h, min(runs["h"]), max(runs["h"])))
print("i   the same BACKUP statement, directly     %6.2f s  (min %.2f, max %.2f)" % (i, min(runs["i"]), max(runs["i"])))
print("ClickHouse's own BACKUP time (system.backups): agent runs %.2f s, direct runs %.2f s (medians)"
      % (statistics.median(agent_server), statistics.median(direct_server)))
print("time outside the BACKUP: agent %.2f s (its checks, manifest, audit, polling), direct %.2f s"
      % (outside_h, outside_i))
print("h/i = %.3f (target <= 1.05): %s" % (h / i, "PASS" if h / i <= 1.05 else "FAIL"))
PY
