#!/usr/bin/env bash
# `make bench` (not a test). Runs inside e2e/harness/with-servers.sh (PostgreSQL + Ceph RGW).
# Builds a ~1 GB database once (pgbench -i -s $SCALE plus documents.sql: a text/jsonb table of
# application-like rows with an index), then, against the same S3 server:
#
# Backup, interleaved over $ROUNDS rounds (default 5):
#   (a) strongroom backup
#   (b) the runbook's naive pipeline: pg_dump | gzip -6 | aws s3 cp - s3://...
#   (c) pg_dump | pigz -p 2 > /dev/null  (the 2-core compression limit, no upload)
# Restore of the same dump, interleaved over $RESTORE_ROUNDS rounds (default 3):
#   (d) strongroom restore --create (download, verify, load, row-count validation)
#   (e) createdb && gunzip -c dump.sql.gz | psql --single-transaction  (dump already local)
#
# Prints median wall time, MB/s (uncompressed dump bytes), CPU seconds (user+sys of the command
# and its children), peak RSS (the largest process), and the ratios a/b, a/c and d/e.
# Usage: bench.sh PATH/TO/strongroom     Env: ROUNDS (5), RESTORE_ROUNDS (3), SCALE (60)
set -euo pipefail
strongroom=$(realpath "$1")
rounds=${ROUNDS:-5}
restore_rounds=${RESTORE_ROUNDS:-3}
scale=${SCALE:-60}
out=target/bench
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PGHOST=$STRONGROOM_TEST_PGHOST PGPORT=$STRONGROOM_TEST_PGPORT
aws() { .venv/bin/aws --endpoint-url "$STRONGROOM_TEST_S3_RGW" --output json "$@"; }
as_admin() { psql -X -q -At -U postgres "$@"; }

echo "== building the database (pgbench -i -s $scale + documents.sql)" >&2
as_admin -d postgres -c "CREATE DATABASE bench"
pgbench -i -q -s "$scale" -U postgres bench 2>&1 | tail -n 1 >&2
as_admin -v ON_ERROR_STOP=1 -d bench -f "$(dirname "$0")/documents.sql"
db_size=$(as_admin -d bench -c "SELECT pg_size_pretty(pg_database_size('bench'))")
dump_bytes=$(pg_dump -U postgres bench | wc -c)
echo "== database: $db_size on disk, plain dump $((dump_bytes / 1000000)) MB" >&2

aws s3api create-bucket --bucket bench --object-lock-enabled-for-bucket >/dev/null
# Untimed warm-up, so that no approach pays for being first: the first writes into a fresh RGW
# create its data pools (the first multipart upload its own), and the first full read of a
# freshly built database warms its caches.
head -c 20000000 /dev/zero | aws s3 cp - s3://bench/warm-up.bin >/dev/null
pg_dump -U postgres bench >/dev/null
cat >"$work/strongroom.yaml" <<YAML
release: bench
s3:
  bucket: bench
  prefix: backups/bench
  endpoint: $STRONGROOM_TEST_S3_RGW
postgresql:
  host: $STRONGROOM_TEST_PGHOST
  port: $STRONGROOM_TEST_PGPORT
  user: strongroom_backup
  database: bench
  password_file: $STRONGROOM_TEST_PG_PASSWORD_FILE
  compression_level: 6
restore:
  user: postgres
log:
  format: text
  level: warn
YAML
export PGPASSWORD; PGPASSWORD=$(cat "$STRONGROOM_TEST_PG_PASSWORD_FILE")
export PGUSER=strongroom_backup PGDATABASE=bench
aws_bin=$(realpath .venv/bin/aws)
export aws_bin STRONGROOM_TEST_S3_RGW
results=$out/runs.tsv
: >"$results"

# time_run LABEL ROUND COMMAND: runs COMMAND under GNU time and appends a row to $results.
time_run() {
  local which=$1 round=$2 command=$3 wall user sys rss
  sync
  /usr/bin/time -o "$work/time" -f '%e %U %S %M' bash -o pipefail -c "$command" >/dev/null
  read -r wall user sys rss <"$work/time"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$which" "$wall" "$user" "$sys" "$rss" >>"$results"
  echo "round $round ($which): ${wall}s" >&2
}

declare -A commands=(
  [a]="$strongroom backup --config $work/strongroom.yaml --engine postgresql"
  [b]="pg_dump --format=plain | gzip -6 | \$aws_bin --endpoint-url \$STRONGROOM_TEST_S3_RGW s3 cp - s3://bench/naive/run-\$RANDOM.sql.gz"
  [c]="pg_dump --format=plain | pigz -p 2 -6 > /dev/null"
)
for round in $(seq 1 "$rounds"); do
  for which in a b c; do
    time_run "$which" "$round" "${commands[$which]}"
    sleep 1
  done
done

echo "== restore" >&2
key=$("$strongroom" list --config "$work/strongroom.yaml" --json |
  python3 -c 'import json,sys; print([b for b in json.load(sys.stdin) if b["complete"]][-1]["key"])')
aws s3 cp --quiet "s3://bench/$key" "$work/dump.sql.gz"
for round in $(seq 1 "$restore_rounds"); do
  time_run d "$round" "$strongroom restore --config $work/strongroom.yaml --engine postgresql \
    --snapshot $key --database restored_d --create"
  time_run e "$round" "createdb -U postgres restored_e && gunzip -c $work/dump.sql.gz | \
    psql -X -q -U postgres --single-transaction -v ON_ERROR_STOP=1 -d restored_e"
  for db in restored_d restored_e; do
    rows=$(as_admin -d "$db" -c "SELECT count(*) FROM pgbench_accounts")
    [ "$rows" = $((scale * 100000)) ] || { echo "bench: $db has $rows accounts" >&2; exit 1; }
    as_admin -d postgres -c "DROP DATABASE $db"
  done
done

python3 - "$results" "$dump_bytes" "$rounds" "$restore_rounds" "$db_size" "$scale" <<'PY' | tee "$out/summary.txt"
import os, statistics, sys
path, dump_bytes, rounds, restore_rounds, db_size, scale = sys.argv[1:7]
dump_bytes = int(dump_bytes)
runs = {}
for line in open(path):
    _, which, wall, user, sys_, rss = line.split()
    runs.setdefault(which, []).append((float(wall), float(user) + float(sys_), int(rss)))
names = {"a": "strongroom backup", "b": "pg_dump | gzip -6 | aws s3 cp -",
         "c": "pg_dump | pigz -p 2 > /dev/null", "d": "strongroom restore",
         "e": "gunzip -c | psql --single-transaction"}
med = {k: {"wall": statistics.median(r[0] for r in v), "cpu": statistics.median(r[1] for r in v),
           "rss": max(r[2] for r in v)} for k, v in runs.items()}
print("command: make bench  (e2e/bench/bench.sh; ROUNDS=%s RESTORE_ROUNDS=%s SCALE=%s)" % (rounds, restore_rounds, scale))
print("database: %s on disk (pgbench -i -s %s + e2e/bench/documents.sql), plain dump %.0f MB" % (db_size, scale, dump_bytes / 1e6))
print("S3 server: Ceph RGW 16 (memstore) on 127.0.0.1; machine: %s cores" % os.cpu_count())
print("%-3s %-38s %9s %8s %9s %12s" % ("", "approach", "wall(s)", "MB/s", "CPU(s)", "peak RSS"))
for k in "abcde":
    m = med[k]
    print("%-3s %-38s %9.2f %8.1f %9.2f %8.1f MiB" % (k, names[k], m["wall"], dump_bytes / 1e6 / m["wall"], m["cpu"], m["rss"] / 1024))
ab, ac, de = (med["a"]["wall"] / med["b"]["wall"], med["a"]["wall"] / med["c"]["wall"],
              med["d"]["wall"] / med["e"]["wall"])
verdict = lambda ok: "PASS" if ok else "FAIL"
print("medians of %s backup and %s restore rounds; peak RSS is the maximum over rounds" % (rounds, restore_rounds))
print("a/b = %.2f (target <= 0.55): %s" % (ab, verdict(ab <= 0.55)))
print("a/c = %.2f (target <= 1.15): %s" % (ac, verdict(ac <= 1.15)))
print("d/e = %.2f (target <= 1.10): %s" % (de, verdict(de <= 1.10)))
print("peak RSS of strongroom backup = %.1f MiB (target <= 64): %s" % (med["a"]["rss"] / 1024, verdict(med["a"]["rss"] <= 64 * 1024)))
print("peak RSS of strongroom restore = %.1f MiB (target <= 64): %s" % (med["d"]["rss"] / 1024, verdict(med["d"]["rss"] <= 64 * 1024)))
PY
