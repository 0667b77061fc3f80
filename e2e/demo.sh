#!/usr/bin/env bash
# The demo `make demo` runs inside e2e/harness/with-servers.sh (PostgreSQL + Ceph RGW):
# sample data, an Object-Lock bucket and a signing key; a signed backup, the runbook's own
# checks (aws s3 ls, sha256sum -c), a refused delete; then verify --deep, a restore into a new
# database with validation (row counts, SQL checks, /health and /map smoke checks against a
# stand-in application), the listing and the audit chain; it ends with a restore drill (RTO
# and RPO measured against the goal, the report stored locked) and the drill history.
# Usage: demo.sh PATH/TO/strongroom
set -euo pipefail
strongroom=$(realpath "$1")
aws() { .venv/bin/aws --endpoint-url "$STRONGROOM_TEST_S3_RGW" --output json "$@"; }
work=$(mktemp -d)
app_pid=
trap 'rm -rf "$work"; [ -z "$app_pid" ] || kill "$app_pid" 2>/dev/null || true' EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Sample database 'llama_mapper' (storage_records: 20000 rows)"
psql -X -q -h "$STRONGROOM_TEST_PGHOST" -p "$STRONGROOM_TEST_PGPORT" -U postgres -d postgres \
  -c "CREATE DATABASE llama_mapper"
psql -X -q -h "$STRONGROOM_TEST_PGHOST" -p "$STRONGROOM_TEST_PGPORT" -U postgres -d llama_mapper <<'SQL'
CREATE TABLE storage_records (
  id bigserial PRIMARY KEY, tenant text NOT NULL, payload jsonb NOT NULL,
  created timestamptz NOT NULL DEFAULT now());
INSERT INTO storage_records (tenant, payload)
  SELECT 'tenant-' || (i % 17), jsonb_build_object('input', md5(i::text), 'mapped', i * 3)
  FROM generate_series(1, 20000) i;
CREATE TABLE mappings (key text PRIMARY KEY, value text);
INSERT INTO mappings SELECT 'k' || i, 'v' || i FROM generate_series(1, 500) i;
SQL

step "Bucket 'strongroom-demo' with Object Lock (Ceph RGW at $STRONGROOM_TEST_S3_RGW)"
aws s3api create-bucket --bucket strongroom-demo --object-lock-enabled-for-bucket >/dev/null
aws s3api get-object-lock-configuration --bucket strongroom-demo

step "strongroom keygen (the private key signs manifests; verify and restore get only the public key)"
"$strongroom" keygen --out-dir "$work"

# A stand-in for the application, for the runbook's /health and /map smoke tests.
app_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
python3 - "$app_port" "$STRONGROOM_TEST_PGHOST" "$STRONGROOM_TEST_PGPORT" <<'PY' &
import http.server, json, subprocess, sys, urllib.parse
class App(http.server.BaseHTTPRequestHandler):
    def reply(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path != "/health":
            return self.send_error(404)
        # Healthy when the database it reads (a drill names its scratch copy) answers.
        database = urllib.parse.parse_qs(url.query).get("database", ["llama_mapper"])[0]
        psql = subprocess.run(["psql", "-X", "-At", "-h", sys.argv[2], "-p", sys.argv[3], "-U", "postgres",
                               "-d", database, "-c", "SELECT count(*) FROM storage_records"],
                              capture_output=True, text=True)
        if psql.returncode != 0:
            return self.reply({"status": "down", "error": psql.stderr.strip()}, 503)
        self.reply({"status": "ok", "database": database, "storage_records": int(psql.stdout)})
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.reply({"output": body["input"].upper()}) if self.path == "/map" else self.send_error(404)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), App).serve_forever()
PY
app_pid=$!

cat >"$work/strongroom.yaml" <<YAML
release: llama-mapper
s3:
  bucket: strongroom-demo
  prefix: backups/llama-mapper
  endpoint: $STRONGROOM_TEST_S3_RGW
  object_lock:
    mode: GOVERNANCE
    retention: {years: 7}
postgresql:
  host: $STRONGROOM_TEST_PGHOST
  port: $STRONGROOM_TEST_PGPORT
  user: strongroom_backup
  database: llama_mapper
  password_file: $STRONGROOM_TEST_PG_PASSWORD_FILE
signing:
  private_key_file: $work/strongroom-signing.key
  public_key_file: $work/strongroom-signing.pub
restore:
  user: postgres
  validation:
    sql:
      - name: storage_records present
        query: SELECT count(*) FROM storage_records
        expect: {min: 20000}
      - name: known mapping
        query: SELECT value FROM mappings WHERE key = 'k42'
        expect: {equals: v42}
    http:
      - name: health
        url: http://127.0.0.1:$app_port/health
        expect_json: {status: ok}
      - name: map a known input
        method: POST
        url: http://127.0.0.1:$app_port/map
        headers: {Content-Type: application/json}
        body: '{"input": "llama"}'
        expect_json: {output: LLAMA}
drill:
  rto_goal_seconds: 1800
  smoke:
    http:
      - name: health of the scratch copy
        url: http://127.0.0.1:$app_port/health?database={database}
        expect_json: {status: ok, storage_records: 20000}
log:
  format: text
YAML
step "Config ($work/strongroom.yaml)"
cat "$work/strongroom.yaml"

step "strongroom backup --engine postgresql"
"$strongroom" backup --config "$work/strongroom.yaml" --engine postgresql

step "The runbook's check: aws s3 ls --recursive --human-readable --summarize"
aws s3 ls s3://strongroom-demo/backups/llama-mapper/postgresql/llama-mapper/ \
  --recursive --human-readable --summarize

step "The runbook's checksum: sha256sum -c on the downloaded dump"
aws s3 cp --quiet --recursive s3://strongroom-demo/backups/llama-mapper/postgresql/llama-mapper/ "$work/dl/"
(cd "$work/dl" && sha256sum -c ./*.sql.gz.sha256)

step "Deleting the dump's version without governance bypass is refused"
key=$(cd "$work/dl" && ls ./*.sql.gz | sed 's|^\./||')
version=$(aws s3api list-object-versions --bucket strongroom-demo \
  --prefix "backups/llama-mapper/postgresql/llama-mapper/$key" --query 'Versions[0].VersionId' --output text)
if aws s3api delete-object --bucket strongroom-demo \
    --key "backups/llama-mapper/postgresql/llama-mapper/$key" --version-id "$version" >/dev/null 2>&1; then
  echo "UNEXPECTED: the locked version was deleted" >&2; exit 1
fi
echo "refused, as it should be (AccessDenied)"

step "Manifest (and its detached Ed25519 signature)"
cat "$work/dl/"*.manifest.json
cat "$work/dl/"*.manifest.json.sig

step "strongroom verify --latest --deep"
"$strongroom" verify --config "$work/strongroom.yaml" --latest --deep

step "strongroom restore --latest into a new database, verified before commit, then validated"
"$strongroom" restore --config "$work/strongroom.yaml" --engine postgresql --latest \
  --database llama_mapper_restored --create >"$work/report.json"
python3 - "$work/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("snapshot   %s (version %s)" % (r["snapshot"], r["version_id"]))
print("signature  %s" % r["signature_summary"])
print("sha256     expected %s\n           actual   %s" % (r["expected_sha256"], r["actual_sha256"]))
print("phases     " + ", ".join("%s %.2fs" % (k, v) for k, v in r["phases"].items()))
for c in r["checks"]:
    print("  %-4s %-34s expected %-30s got %s" % ("ok" if c["passed"] else "FAIL", c["name"], c["expected"], c["actual"]))
print("report     s3://strongroom-demo/%s" % r["report_key"])
PY
echo "runbook smoke test: $(psql -X -At -h "$STRONGROOM_TEST_PGHOST" -p "$STRONGROOM_TEST_PGPORT" -U postgres \
  -d llama_mapper_restored -c 'SELECT COUNT(*) FROM storage_records;') rows in storage_records"

step "Without signing.public_key_file, restore refuses (unsigned backups only with --allow-unsigned)"
grep -v "public_key_file" "$work/strongroom.yaml" >"$work/no-public-key.yaml"
set +e
"$strongroom" restore --config "$work/no-public-key.yaml" --engine postgresql --latest \
  --database llama_mapper_unsigned --create >/dev/null 2>"$work/unsigned.err"
code=$?
set -e
[ "$code" = 64 ] || { echo "UNEXPECTED: exit $code" >&2; cat "$work/unsigned.err" >&2; exit 1; }
echo "exit $code: $(grep -o 'restore refused: [^.]*' "$work/unsigned.err" | head -n 1)"

step "strongroom audit verify"
"$strongroom" audit verify --config "$work/strongroom.yaml"

step "strongroom list"
"$strongroom" list --config "$work/strongroom.yaml"

step "strongroom drill: the incident starts now; the latest backup is restored into a scratch database, verified, validated, measured, and dropped"
"$strongroom" drill --config "$work/strongroom.yaml" --engine postgresql --production-size-gib 50

step "strongroom drill list"
"$strongroom" drill list --config "$work/strongroom.yaml"

step "The drill's report is locked like the backups"
drill_key=$(aws s3api list-objects-v2 --bucket strongroom-demo --prefix backups/llama-mapper/drills/ \
  --query 'Contents[0].Key' --output text)
aws s3api get-object-retention --bucket strongroom-demo --key "$drill_key"
