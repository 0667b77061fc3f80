#!/usr/bin/env bash
# The demo `make demo` runs inside e2e/harness/with-servers.sh (PostgreSQL + Ceph RGW):
# sample data, an Object-Lock bucket, one backup, the listing, the manifest, and the runbook's
# own checks (aws s3 ls, sha256sum -c) on what was written.
# Usage: demo.sh PATH/TO/strongroom
set -euo pipefail
strongroom=$(realpath "$1")
aws() { .venv/bin/aws --endpoint-url "$STRONGROOM_TEST_S3_RGW" --output json "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
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

step "Manifest"
cat "$work/dl/"*.manifest.json

step "strongroom list"
"$strongroom" list --config "$work/strongroom.yaml"
