#!/usr/bin/env bash
# `make bench` (not a test). Runs inside e2e/harness/with-servers.sh (PostgreSQL + Ceph RGW).
# Builds a ~1 GB database once (pgbench -i -s $SCALE plus documents.sql: a text/jsonb table of
# application-like rows with an index), then, against the same S3 server:
#
# Backup, interleaved over $ROUNDS rounds (default 5):
#   (a) strongroom backup
#   (b) the runbook's naive pipeline: pg_dump | gzip -6 | aws s3 cp - s3://...
#   (c) pg_dump | pigz -p 2 > /dev/null  (the 2-core compression limit, no upload)
#   (z) pg_dump > /dev/null  (the source limit)
#   (y) strongroom backup with postgresql.compression_format: zstd (level 3)
#   (x) pg_dump | zstd -3 -T2 > /dev/null  (the 2-core zstd limit, no upload)
# Restore of the same dump, interleaved over $RESTORE_ROUNDS rounds (default 3):
#   (d) strongroom restore --create with restore.jobs: 1 (download, verify, load through the
#       staging database in one session at a time, row-count validation)
#   (p) the same with restore.jobs = cores (the sections in parallel)
#   (e) createdb && gunzip -c dump.sql.gz | psql --single-transaction  (dump already local)
#   (e1) createdb && psql < dump.sql  (a local uncompressed file: the single-session limit)
# Then, on a database $RSS_FACTOR times larger (default 4; pgbench only), one backup and one
# parallel restore: peak RSS against the first database's.
#
# The agent (strongroom run), with backups triggered through its API:
#   idle RSS and CPU over 60 s;
#   (f) backup wall time without HTTP load, $AGENT_ROUNDS rounds (default 3);
#   (g) the same while hey holds 500 requests/s on /status: /status p50/p99 and the wall time.
#
# Prints median wall time, MB/s (uncompressed dump bytes), CPU seconds (user+sys of the command
# and its children), peak RSS (the largest process), the ratios a/b, a/c, a/z, y/z, p/e, p/e1, d/e
# and g/f, the RSS ratios, the CPU seconds the machine, PostgreSQL and the S3 server spent during
# each command and the floor that sets on this machine's cores (the lowest p/e and y/z any
# spreading of that work could reach), and the largest database a 30-minute RTO allows at the
# measured parallel restore throughput, with a model of how it scales with cores.
# Usage: bench.sh PATH/TO/strongroom
# Env: ROUNDS (5), RESTORE_ROUNDS (3), AGENT_ROUNDS (3), SCALE (60), IDLE_SECONDS (60),
#      RSS_FACTOR (4)
set -euo pipefail
strongroom=$(realpath "$1")
rounds=${ROUNDS:-5}
restore_rounds=${RESTORE_ROUNDS:-3}
agent_rounds=${AGENT_ROUNDS:-3}
idle_seconds=${IDLE_SECONDS:-60}
scale=${SCALE:-60}
rss_factor=${RSS_FACTOR:-4}
cores=$(nproc)
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
# Signed, as a production agent runs (restore refuses unsigned backups by default).
"$strongroom" keygen --out-dir "$work" >/dev/null
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
signing:
  private_key_file: $work/strongroom-signing.key
  public_key_file: $work/strongroom-signing.pub
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

# cpu_ticks: the machine's busy clock ticks (/proc/stat: user, nice, system, irq, softirq, and
# steal, which is capacity the run did not get), then PostgreSQL's and the S3 server's (radosgw,
# ceph-*): each process's utime+stime plus what it reaped (a backend's CPU moves to the
# postmaster's when it exits, a parallel worker's too). printf: mawk prints large sums as %.6g.
cpu_ticks() {
  awk '/^cpu / {printf "%.0f\n", $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
  # A process may end between the glob and the read: cat then fails, which is no error here.
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '
    $2 == "(postgres)" {pg += $14 + $15 + $16 + $17}
    $2 == "(radosgw)" || $2 ~ /^\(ceph-/ {s3 += $14 + $15 + $16 + $17}
    END {printf "%.0f\n%.0f\n", pg, s3}'
}

# time_run LABEL ROUND COMMAND: runs COMMAND under GNU time and appends a row to $results: wall,
# the command's user and sys seconds (its children included), its peak RSS, and the CPU seconds
# the whole machine, PostgreSQL and the S3 server spent while it ran.
time_run() {
  local which=$1 round=$2 command=$3 wall user sys rss before after cpu
  sync
  before=$(cpu_ticks | paste -sd' ')
  /usr/bin/time -o "$work/time" -f '%e %U %S %M' bash -o pipefail -c "$command" >/dev/null
  after=$(cpu_ticks | paste -sd' ')
  read -r wall user sys rss <"$work/time"
  cpu=$(python3 -c 'import sys; b, a = sys.argv[1].split(), sys.argv[2].split(); hz = int(sys.argv[3]); print("\t".join("%.2f" % ((int(y) - int(x)) / hz) for x, y in zip(b, a)))' "$before" "$after" "$(getconf CLK_TCK)")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$which" "$wall" "$user" "$sys" "$rss" "$cpu" >>"$results"
  echo "round $round ($which): ${wall}s" >&2
}

# (y): the same agent writing zstd, under its own release so restores below read the gzip dump.
sed 's/^  compression_level: 6$/  compression_format: zstd\n  compression_level: 3/; s/^release: bench$/release: bench-zstd/' \
  "$work/strongroom.yaml" >"$work/zstd.yaml"
grep -q 'compression_format: zstd' "$work/zstd.yaml"
declare -A commands=(
  [a]="$strongroom backup --config $work/strongroom.yaml --engine postgresql"
  [y]="$strongroom backup --config $work/zstd.yaml --engine postgresql"
  [b]="pg_dump --format=plain | gzip -6 | \$aws_bin --endpoint-url \$STRONGROOM_TEST_S3_RGW s3 cp - s3://bench/naive/run-\$RANDOM.sql.gz"
  [c]="pg_dump --format=plain | pigz -p 2 -6 > /dev/null"
  [z]="pg_dump --format=plain > /dev/null"
  [x]="pg_dump --format=plain | zstd -q -3 -T2 > /dev/null"
)
for round in $(seq 1 "$rounds"); do
  for which in a b c z y x; do
    time_run "$which" "$round" "${commands[$which]}"
    sleep 1
  done
done

echo "== restore" >&2
key=$("$strongroom" list --config "$work/strongroom.yaml" --json |
  python3 -c 'import json,sys; print([b for b in json.load(sys.stdin) if b["complete"]][-1]["key"])')
aws s3 cp --quiet "s3://bench/$key" "$work/dump.sql.gz"
gunzip -c "$work/dump.sql.gz" >"$work/dump.sql"
sed 's/^  user: postgres$/  user: postgres\n  jobs: 1/' "$work/strongroom.yaml" >"$work/jobs1.yaml"
sed "s/^  user: postgres\$/  user: postgres\n  jobs: $cores/" "$work/strongroom.yaml" >"$work/jobsN.yaml"
grep -q 'jobs: 1' "$work/jobs1.yaml" && grep -q "jobs: $cores" "$work/jobsN.yaml"
restore_d="$strongroom restore --config $work/jobs1.yaml --engine postgresql \
  --snapshot $key --database restored_d --create"
restore_p="$strongroom restore --config $work/jobsN.yaml --engine postgresql \
  --snapshot $key --database restored_p --create"
restore_e="createdb -U postgres restored_e && gunzip -c $work/dump.sql.gz | \
  psql -X -q -U postgres --single-transaction -v ON_ERROR_STOP=1 -d restored_e"
restore_e1="createdb -U postgres restored_e1 && \
  psql -X -q -U postgres -v ON_ERROR_STOP=1 -d restored_e1 < $work/dump.sql"
declare -A restores=([d]="$restore_d" [p]="$restore_p" [e]="$restore_e" [e1]="$restore_e1")
# Untimed warm-up; then the order rotates each round, so none always pays for a cold start.
bash -o pipefail -c "$restore_e" >/dev/null && as_admin -d postgres -c "DROP DATABASE restored_e"
# Each restored database is checked and dropped at once: left in place, autovacuum would vacuum
# and analyze its new tables in the background while the next restore is timed, and its CPU would
# count against that one.
order=(d p e e1)
for round in $(seq 1 "$restore_rounds"); do
  for which in "${order[@]}"; do
    time_run "$which" "$round" "${restores[$which]}"
    rows=$(as_admin -d "restored_$which" -c "SELECT count(*) FROM pgbench_accounts")
    [ "$rows" = $((scale * 100000)) ] || { echo "bench: restored_$which has $rows accounts" >&2; exit 1; }
    as_admin -d postgres -c "DROP DATABASE restored_$which"
  done
  order=("${order[@]:1}" "${order[0]}")
done

echo "== memory: a database $rss_factor times larger" >&2
as_admin -d postgres -c "CREATE DATABASE bench_large"
pgbench -i -q -s $((scale * rss_factor)) -U postgres bench_large 2>&1 | tail -n 1 >&2
large_size=$(as_admin -d postgres -c "SELECT pg_size_pretty(pg_database_size('bench_large'))")
sed 's/^  database: bench$/  database: bench_large/; s/^release: bench$/release: bench-large/' \
  "$work/jobsN.yaml" >"$work/large.yaml"
time_run A 1 "$strongroom backup --config $work/large.yaml --engine postgresql --json >$work/large.json"
read -r large_key large_dump < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["key"], r["uncompressed_size_bytes"])' "$work/large.json")
time_run P 1 "$strongroom restore --config $work/large.yaml --engine postgresql \
  --snapshot $large_key --database restored_large --create"
as_admin -d postgres -c "DROP DATABASE restored_large" -c "DROP DATABASE bench_large"

echo "== agent" >&2
agent_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
agent_url="http://127.0.0.1:$agent_port"
printf 'bench-token\n' >"$work/token"
sed '/^log:/,$d' "$work/strongroom.yaml" >"$work/agent.yaml"
cat >>"$work/agent.yaml" <<YAML
daemon:
  listen: 127.0.0.1:$agent_port
  trigger_token_file: $work/token
log:
  format: json
  level: warn
YAML
"$strongroom" run --config "$work/agent.yaml" 2>"$work/agent.log" &
agent_pid=$!
trap 'kill $agent_pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf "$agent_url/healthz" >/dev/null && break; sleep 0.1; done
sleep 2
ticks0=$(awk '{print $14+$15}' /proc/$agent_pid/stat)
peak_idle=0
for _ in $(seq 1 "$idle_seconds"); do
  rss=$(awk '/VmRSS/ {print $2}' /proc/$agent_pid/status)
  [ "$rss" -gt "$peak_idle" ] && peak_idle=$rss
  sleep 1
done
ticks1=$(awk '{print $14+$15}' /proc/$agent_pid/stat)
idle_cpu=$(python3 -c "print(($ticks1 - $ticks0) / $(getconf CLK_TCK))")
echo "idle: peak RSS ${peak_idle} kB, CPU ${idle_cpu} s over ${idle_seconds} s" >&2

# agent_backup: triggers one backup and prints its duration (from /status) once it finished.
# One small Python process polls 4 times a second, so the harness itself adds little load.
agent_backup() {
  python3 - "$agent_url" <<'PY'
import json, sys, time, urllib.request
url = sys.argv[1]
def last():
    doc = json.load(urllib.request.urlopen(url + "/status"))
    return (doc["engines"].get("postgresql") or {}).get("last_attempt") or {}
before = last().get("finished_at")
request = urllib.request.Request(url + "/backup?engine=postgresql", method="POST",
                                 headers={"authorization": "Bearer bench-token"})
urllib.request.urlopen(request)
while True:
    time.sleep(0.25)
    attempt = last()
    if attempt.get("finished_at") not in (None, before):
        if not attempt["success"]:
            sys.exit("bench: agent backup failed: %s" % attempt["error"])
        print(attempt["duration_seconds"])
        break
PY
}
: >"$out/agent.tsv"
for round in $(seq 1 "$agent_rounds"); do
  sleep 1
  seconds=$(agent_backup) && [ -n "$seconds" ] || exit 1
  printf '%s\tf\t%s\n' "$round" "$seconds" >>"$out/agent.tsv"
  echo "round $round (f): ${seconds}s" >&2
done
load_seconds=$(python3 -c "import statistics; print(int(statistics.median(float(l.split()[2]) for l in open('$out/agent.tsv'))) + 3)")
for round in $(seq 1 "$agent_rounds"); do
  sleep 1
  hey -z "${load_seconds}s" -c 5 -q 100 "$agent_url/status" >"$work/hey-$round.txt" &
  hey_pid=$!
  sleep 0.5
  seconds=$(agent_backup) && [ -n "$seconds" ] || exit 1
  wait $hey_pid
  python3 - "$work/hey-$round.txt" "$round" "$seconds" >>"$out/agent.tsv" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
pct = lambda p: float(re.search(r"%s%% in ([0-9.]+) secs" % p, text).group(1)) * 1000
rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", text).group(1))
codes = re.search(r"\[200\]\s+(\d+) responses", text)
print("%s\tg\t%s\t%.3f\t%.3f\t%.1f\t%s" % (sys.argv[2], sys.argv[3], pct(50), pct(99), rps, codes.group(1) if codes else "0"))
PY
  echo "round $round (g): ${seconds}s under load" >&2
done
kill -TERM $agent_pid
wait $agent_pid || { echo "bench: the agent did not exit cleanly" >&2; exit 1; }

python3 - "$results" "$dump_bytes" "$rounds" "$restore_rounds" "$db_size" "$scale" \
  "$out/agent.tsv" "$agent_rounds" "$peak_idle" "$idle_cpu" "$idle_seconds" \
  "$large_size" "$large_dump" "$rss_factor" <<'PY' | tee "$out/summary.txt"
import os, statistics, sys
path, dump_bytes, rounds, restore_rounds, db_size, scale = sys.argv[1:7]
agent_path, agent_rounds, peak_idle, idle_cpu, idle_seconds = sys.argv[7:12]
large_size, large_dump, rss_factor = sys.argv[12:15]
dump_bytes, large_dump = int(dump_bytes), int(large_dump)
runs = {}
work = {}
for line in open(path):
    _, which, wall, user, sys_, rss, busy, pg, s3 = line.split()
    runs.setdefault(which, []).append((float(wall), float(user) + float(sys_), int(rss)))
    work.setdefault(which, []).append((float(busy), float(pg), float(user) + float(sys_), float(s3)))
cores = os.cpu_count()
names = {"a": "strongroom backup", "b": "pg_dump | gzip -6 | aws s3 cp -",
         "c": "pg_dump | pigz -p 2 > /dev/null", "z": "pg_dump > /dev/null",
         "y": "strongroom backup, zstd level 3", "x": "pg_dump | zstd -3 -T2 > /dev/null",
         "d": "strongroom restore, restore.jobs 1", "p": "strongroom restore, restore.jobs %d" % cores,
         "e": "gunzip -c | psql --single-transaction", "e1": "psql < dump.sql (local file)"}
med = {k: {"wall": statistics.median(r[0] for r in v), "cpu": statistics.median(r[1] for r in v),
           "rss": max(r[2] for r in v)} for k, v in runs.items()}
print("command: make bench  (e2e/bench/bench.sh; ROUNDS=%s RESTORE_ROUNDS=%s SCALE=%s)" % (rounds, restore_rounds, scale))
print("database: %s on disk (pgbench -i -s %s + e2e/bench/documents.sql), plain dump %.0f MB" % (db_size, scale, dump_bytes / 1e6))
print("S3 server: Ceph RGW 16 (memstore) on 127.0.0.1; machine: %s cores" % os.cpu_count())
print("%-3s %-38s %9s %8s %9s %12s" % ("", "approach", "wall(s)", "MB/s", "CPU(s)", "peak RSS"))
for k in ["a", "b", "c", "z", "y", "x", "d", "p", "e", "e1"]:
    m = med[k]
    print("%-3s %-38s %9.2f %8.1f %9.2f %8.1f MiB" % (k, names[k], m["wall"], dump_bytes / 1e6 / m["wall"], m["cpu"], m["rss"] / 1024))
ratio = lambda x, y: med[x]["wall"] / med[y]["wall"]
verdict = lambda ok: "PASS" if ok else "FAIL"
print("medians of %s backup and %s restore rounds; peak RSS is the maximum over rounds" % (rounds, restore_rounds))
print("a/b = %.2f (target <= 0.55): %s" % (ratio("a", "b"), verdict(ratio("a", "b") <= 0.55)))
print("a/c = %.2f (target <= 1.15): %s" % (ratio("a", "c"), verdict(ratio("a", "c") <= 1.15)))
print("a/z = %.2f (the gzip default against pg_dump alone: reported)" % ratio("a", "z"))
print("y/z = %.2f (target <= 1.30): %s" % (ratio("y", "z"), verdict(ratio("y", "z") <= 1.30)))
print("y/x = %.2f (zstd through the agent, uploaded and verified, against the zstd tool writing nowhere: reported)" % ratio("y", "x"))
print("p/e = %.2f (target <= 0.70): %s" % (ratio("p", "e"), verdict(ratio("p", "e") <= 0.70)))
print("p/e1 = %.2f (against one session from a local file: reported)" % ratio("p", "e1"))
print("d/e = %.2f (target <= 1.10): %s" % (ratio("d", "e"), verdict(ratio("d", "e") <= 1.10)))
# The physical floor: a run that keeps the machine busy for B CPU-seconds cannot take less than
# B / cores seconds on this machine, however its work is spread over the cores.
cpu = {k: [statistics.median(w[i] for w in v) for i in range(4)] for k, v in work.items()}
print("CPU seconds spent while each ran (medians): the machine (/proc/stat busy time), PostgreSQL "
      "(its processes), the command (with its children: the agent and psql, or gunzip and psql), "
      "the S3 server (radosgw, ceph), the rest (mostly the kernel writing back dirty pages; the "
      "tick counts and the command's own accounting differ by up to about 0.25 s, so it can read "
      "below zero); floor = machine / %d cores:" % cores)
print("%-3s %-38s %7s %8s %10s %8s %6s %6s %8s" % ("", "approach", "wall(s)", "machine", "PostgreSQL", "command", "S3", "rest", "floor(s)"))
for k in ["a", "z", "y", "x", "d", "p", "e", "e1"]:
    busy, pg, own, s3 = cpu[k]
    print("%-3s %-38s %7.2f %8.2f %10.2f %8.2f %6.2f %6.2f %8.2f" % (k, names[k], med[k]["wall"], busy, pg, own, s3, busy - pg - own - s3, busy / cores))
floor = lambda x, y: cpu[x][0] / cores / med[y]["wall"]
print("e keeps %.2f of the %d cores busy; p's work (%.1f CPU-s, of which PostgreSQL %.1f) cannot take less than %.2f s here,"
      % (cpu["e"][0] / med["e"]["wall"], cores, cpu["p"][0], cpu["p"][1], cpu["p"][0] / cores))
print("  so p/e >= %.2f on this machine (PostgreSQL's share of p alone: %.2f); p ran at %.2fx its floor"
      % (floor("p", "e"), cpu["p"][1] / cores / med["e"]["wall"], med["p"]["wall"] / (cpu["p"][0] / cores)))
print("y/z >= %.2f on this machine (y's work: %.1f CPU-s, of which PostgreSQL %.1f); y ran at %.2fx its floor"
      % (floor("y", "z"), cpu["y"][0], cpu["y"][1], med["y"]["wall"] / (cpu["y"][0] / cores)))
print("peak RSS of strongroom backup = %.1f MiB (target <= 64): %s" % (med["a"]["rss"] / 1024, verdict(med["a"]["rss"] <= 64 * 1024)))
print("peak RSS of strongroom restore (jobs %d) = %.1f MiB (target <= 64): %s" % (cores, med["p"]["rss"] / 1024, verdict(med["p"]["rss"] <= 64 * 1024)))
big = lambda k: runs[k][0]
print("memory on a database %sx larger (%s on disk, pgbench -i -s %d, plain dump %.0f MB), one round:" % (rss_factor, large_size, int(scale) * int(rss_factor), large_dump / 1e6))
print("A   strongroom backup %27s %9.2f %8.1f %9.2f %8.1f MiB" % ("", big("A")[0], large_dump / 1e6 / big("A")[0], big("A")[1], big("A")[2] / 1024))
print("P   strongroom restore, restore.jobs %d %10s %9.2f %8.1f %9.2f %8.1f MiB" % (cores, "", big("P")[0], large_dump / 1e6 / big("P")[0], big("P")[1], big("P")[2] / 1024))
for x, y, what in (("A", "a", "backup"), ("P", "p", "restore")):
    r = big(x)[2] / med[y]["rss"]
    print("RSS %s %sx / 1x = %.2f (target <= 1.10): %s; %.1f MiB (target <= 64): %s" % (what, rss_factor, r, verdict(r <= 1.10), big(x)[2] / 1024, verdict(big(x)[2] <= 64 * 1024)))
# The RTO line: restore throughput at jobs 1 and jobs N, and Amdahl's law fitted to them.
t1, tn = dump_bytes / med["d"]["wall"], dump_bytes / med["p"]["wall"]
speedup = tn / t1
parallel = max(0.0, min(1.0, (1 - 1 / speedup) / (1 - 1 / cores))) if cores > 1 else 0.0
fit = lambda n: t1 / ((1 - parallel) + parallel / n)
print("30-minute RTO (load only, at the measured restore throughput of this dump's shape):")
print("  jobs 1: %.0f MB/s -> %.0f GB of plain dump; jobs %d: %.0f MB/s -> %.0f GB" % (t1 / 1e6, t1 * 1800 / 1e9, cores, tn / 1e6, tn * 1800 / 1e9))
print("  model: Amdahl fitted to jobs 1 and %d (parallel fraction %.2f), one session per core: " % (cores, parallel)
      + ", ".join("%d cores %.0f GB" % (n, fit(n) * 1800 / 1e9) for n in (2, 4, 8, 16)))
f, g = [], []
for line in open(agent_path):
    cols = line.split()
    (f if cols[1] == "f" else g).append(cols)
f_wall = statistics.median(float(c[2]) for c in f)
g_wall = statistics.median(float(c[2]) for c in g)
p50 = statistics.median(float(c[3]) for c in g)
p99 = max(float(c[4]) for c in g)
rps = statistics.median(float(c[5]) for c in g)
idle_mib = int(peak_idle) / 1024
print("agent (strongroom run, backups triggered with POST /backup; %s rounds each):" % agent_rounds)
print("  idle: peak RSS %.1f MiB, CPU %.2f s over %s s (%.2f%%)" % (idle_mib, float(idle_cpu), idle_seconds, 100 * float(idle_cpu) / float(idle_seconds)))
print("  f  backup without HTTP load                 %6.2f s" % f_wall)
print("  g  backup while hey holds /status at %3.0f/s %6.2f s; /status p50 %.2f ms, p99 %.2f ms (worst round)" % (rps, g_wall, p50, p99))
print("idle RSS = %.1f MiB (target <= 20): %s" % (idle_mib, verdict(idle_mib <= 20)))
print("/status p99 = %.2f ms at %.0f rps during a backup (target <= 5 ms at 500 rps): %s" % (p99, rps, verdict(p99 <= 5 and rps >= 490)))
print("g/f = %.2f (target <= 1.10): %s" % (g_wall / f_wall, verdict(g_wall / f_wall <= 1.10)))
PY
