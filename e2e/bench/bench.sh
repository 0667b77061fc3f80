#!/usr/bin/env bash
# `make bench` (not a test). Runs inside e2e/harness/with-servers.sh (PostgreSQL + Ceph RGW).
# Builds a ~1 GB database once (pgbench -i -s $SCALE plus documents.sql: a text/jsonb table of
# application-like rows with an index),
# then times, interleaved over $ROUNDS rounds (default 5) against the same S3 server:
#   (a) strongroom backup
#   (b) the runbook's naive pipeline: pg_dump | gzip -6 | aws s3 cp - s3://...
#   (c) pg_dump | pigz -p 2 > /dev/null  (the 2-core compression limit, no upload)
# and prints median wall time, MB/s (uncompressed dump bytes), CPU seconds (user+sys of the
# command and its children), peak RSS, and the ratios a/b and a/c.
# Usage: bench.sh PATH/TO/strongroom     Env: ROUNDS (5), SCALE (60)
set -euo pipefail
strongroom=$(realpath "$1")
rounds=${ROUNDS:-5}
scale=${SCALE:-60}
out=target/bench
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PGHOST=$STRONGROOM_TEST_PGHOST PGPORT=$STRONGROOM_TEST_PGPORT
aws() { .venv/bin/aws --endpoint-url "$STRONGROOM_TEST_S3_RGW" --output json "$@"; }

echo "== building the database (pgbench -i -s $scale + documents.sql)" >&2
psql -X -q -U postgres -d postgres -c "CREATE DATABASE bench"
pgbench -i -q -s "$scale" -U postgres bench 2>&1 | tail -n 1 >&2
psql -X -q -v ON_ERROR_STOP=1 -U postgres -d bench -f "$(dirname "$0")/documents.sql"
db_size=$(psql -X -At -U postgres -d bench -c "SELECT pg_size_pretty(pg_database_size('bench'))")
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
log:
  format: text
  level: warn
YAML
export PGPASSWORD; PGPASSWORD=$(cat "$STRONGROOM_TEST_PG_PASSWORD_FILE")
export PGUSER=strongroom_backup PGDATABASE=bench
aws_bin=$(realpath .venv/bin/aws)
export aws_bin STRONGROOM_TEST_S3_RGW

declare -A commands=(
  [a]="$strongroom backup --config $work/strongroom.yaml --engine postgresql"
  [b]="pg_dump --format=plain | gzip -6 | \$aws_bin --endpoint-url \$STRONGROOM_TEST_S3_RGW s3 cp - s3://bench/naive/run-\$RANDOM.sql.gz"
  [c]="pg_dump --format=plain | pigz -p 2 -6 > /dev/null"
)
results=$out/runs.tsv
: >"$results"
for round in $(seq 1 "$rounds"); do
  for which in a b c; do
    sync
    /usr/bin/time -o "$work/time" -f '%e %U %S %M' bash -o pipefail -c "${commands[$which]}" >/dev/null
    read -r wall user sys rss <"$work/time"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$which" "$wall" "$user" "$sys" "$rss" >>"$results"
    echo "round $round ($which): ${wall}s" >&2
    sleep 1
  done
done

python3 - "$results" "$dump_bytes" "$rounds" "$db_size" <<'PY' | tee "$out/summary.txt"
import statistics, sys
path, dump_bytes, rounds, db_size = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
runs = {}
for line in open(path):
    _, which, wall, user, sys_, rss = line.split()
    runs.setdefault(which, []).append((float(wall), float(user) + float(sys_), int(rss)))
names = {"a": "strongroom backup", "b": "pg_dump | gzip -6 | aws s3 cp -",
         "c": "pg_dump | pigz -p 2 > /dev/null"}
med = {k: {"wall": statistics.median(r[0] for r in v), "cpu": statistics.median(r[1] for r in v),
           "rss": max(r[2] for r in v)} for k, v in runs.items()}
print("command: make bench  (e2e/bench/bench.sh; ROUNDS=%s SCALE=%s)" % (rounds, __import__("os").environ.get("SCALE", "60")))
print("database: %s on disk (pgbench -i -s 60 + e2e/bench/documents.sql), plain dump %.0f MB" % (db_size, dump_bytes / 1e6))
print("S3 server: Ceph RGW 16 (memstore) on 127.0.0.1; machine: %s cores" % __import__("os").cpu_count())
print("%-3s %-34s %9s %8s %9s %12s" % ("", "approach", "wall(s)", "MB/s", "CPU(s)", "peak RSS"))
for k in "abc":
    m = med[k]
    print("%-3s %-34s %9.2f %8.1f %9.2f %8.1f MiB" % (k, names[k], m["wall"], dump_bytes / 1e6 / m["wall"], m["cpu"], m["rss"] / 1024))
ab = med["a"]["wall"] / med["b"]["wall"]
ac = med["a"]["wall"] / med["c"]["wall"]
rss = med["a"]["rss"] / 1024
print("medians of %s rounds; peak RSS is the maximum over rounds" % rounds)
print("a/b = %.2f (target <= 0.55): %s" % (ab, "PASS" if ab <= 0.55 else "FAIL"))
print("a/c = %.2f (target <= 1.15): %s" % (ac, "PASS" if ac <= 1.15 else "FAIL"))
print("peak RSS of strongroom backup = %.1f MiB (target <= 64): %s" % (rss, "PASS" if rss <= 64 else "FAIL"))
PY
