#!/usr/bin/env bash
# `make tf-check`: the Terraform module infra/terraform/s3_worm_bucket, checked for real.
# Runs inside e2e/harness/with-servers.sh with postgres, rgw and localstack:
#   1. terraform fmt -check, init -backend=false, validate (module and examples), terraform test
#      (plan-level, mock provider), with the AWS provider from the local filesystem mirror;
#   2. checkov on the module, with the project's custom checks (Object Lock on, retention >= 7y);
#   3. apply of examples/complete against LocalStack, a `strongroom backup` and `strongroom
#      preflight` on the bucket it made (and on buckets without Object Lock or versioning, and
#      on moto with IAM enforcement), then `terraform destroy`, which must be refused;
#   4. on Ceph RGW (which enforces bucket policies), the module's role policies granted to RGW
#      users: the writer backs up with the agent but cannot delete, read or bypass; the reader
#      verifies but cannot write.
# Usage: check.sh PATH/TO/strongroom
set -euo pipefail
strongroom=$(realpath "$1")
root=$(pwd)
module=$root/infra/terraform/s3_worm_bucket
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step() { echo "== tf-check: $*" >&2; }

# The AWS provider comes from a filesystem mirror (no registry access here).
mirror=${TF_PROVIDER_MIRROR:-}
if [ -z "$mirror" ]; then
  for candidate in /opt/tf-plugins /usr/share/terraform/plugins "$HOME/.terraform.d/plugins" \
                   "$HOME/.local/share/terraform/plugins"; do
    if compgen -G "$candidate/registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws*" >/dev/null; then
      mirror=$candidate; break
    fi
  done
fi
if [ -z "$mirror" ]; then
  echo "tf-check: no filesystem mirror with registry.terraform.io/hashicorp/aws found (looked in" \
       "/opt/tf-plugins, /usr/share/terraform/plugins, ~/.terraform.d/plugins). Put the provider" \
       "(5.40 <= version < 6) there or set TF_PROVIDER_MIRROR" >&2
  exit 1
fi
command -v terraform >/dev/null || { echo "tf-check: terraform is not installed (needs >= 1.7)" >&2; exit 1; }
cat > "$work/terraformrc" <<HCL
provider_installation {
  filesystem_mirror {
    path    = "$mirror"
    include = ["registry.terraform.io/hashicorp/aws"]
  }
  direct {
    exclude = ["registry.terraform.io/hashicorp/aws"]
  }
}
HCL
export TF_CLI_CONFIG_FILE=$work/terraformrc TF_IN_AUTOMATION=1 TF_INPUT=0 CHECKPOINT_DISABLE=1
export TF_DATA_DIR # set per directory below
tf() { terraform "$@" -no-color; }

step "fmt, init, validate, test (provider mirror: $mirror)"
tf fmt -check -recursive "$module"
for dir in "$module" "$module/examples/minimal" "$module/examples/complete"; do
  TF_DATA_DIR=$work/tfdata-$(basename "$dir")
  (cd "$dir" && tf init -backend=false -input=false >/dev/null && tf validate)
done
TF_DATA_DIR=$work/tfdata-s3_worm_bucket
(cd "$module" && tf test)

step "checkov (built-in checks + e2e/terraform/checkov)"
.venv-checkov/bin/checkov --quiet --compact --skip-download --framework terraform \
  --external-checks-dir "$root/e2e/terraform/checkov" -d "$module" --skip-path examples \
  --skip-path tests
.venv-checkov/bin/checkov --quiet --compact --skip-download --framework terraform \
  --external-checks-dir "$root/e2e/terraform/checkov" -d "$module" --skip-path examples \
  --skip-path tests --check CKV2_STRONGROOM_1,CKV2_STRONGROOM_2 | tee "$work/custom.txt"
grep -q "Passed checks: 2," "$work/custom.txt" || { echo "tf-check: the custom checks did not both run and pass" >&2; exit 1; }

step "apply examples/complete against LocalStack ($STRONGROOM_TEST_S3_LOCALSTACK)"
cp -r "$module" "$work/s3_worm_bucket"
rm -rf "$work/s3_worm_bucket/.terraform" "$work/s3_worm_bucket/.terraform.lock.hcl"
example=$work/s3_worm_bucket/examples/complete
ls_url=$STRONGROOM_TEST_S3_LOCALSTACK
cat > "$example/localstack_override.tf" <<HCL
# Written by e2e/terraform/check.sh: the example's provider, pointed at LocalStack.
provider "aws" {
  region                      = "us-east-1"
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true
  endpoints {
    s3  = "$ls_url"
    iam = "$ls_url"
    sts = "$ls_url"
    kms = "$ls_url"
  }
}
HCL
bucket=strongroom-tf-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
TF_DATA_DIR=$work/tfdata-apply
(cd "$example" && tf init -backend=false -input=false >/dev/null \
  && tf apply -auto-approve -var "bucket_name=$bucket" -var region=us-east-1 >"$work/apply.log" 2>&1) \
  || { cat "$work/apply.log" >&2; exit 1; }
tail -n 3 "$work/apply.log" >&2
(cd "$example" && tf output -json) > "$work/outputs.json"

step "strongroom backup into the bucket Terraform made"
psql -X -q -U postgres -h "$STRONGROOM_TEST_PGHOST" -p "$STRONGROOM_TEST_PGPORT" -d postgres \
  -c "CREATE DATABASE tf_check" -c "\\c tf_check" \
  -c "CREATE TABLE storage_records AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 5000) g" \
  -c "GRANT SELECT ON storage_records TO strongroom_backup"
cat > "$work/localstack.yaml" <<YAML
release: llama-mapper
s3:
  bucket: $bucket
  prefix: backups/llama-mapper
  endpoint: $ls_url
  # LocalStack 2026.3 verifies part checksums but returns no composite checksum from
  # CompleteMultipartUpload, so the read-back could not compare one; its ETags are MD5-based.
  integrity: md5
postgresql:
  host: $STRONGROOM_TEST_PGHOST
  port: $STRONGROOM_TEST_PGPORT
  user: strongroom_backup
  database: tf_check
  password_file: $STRONGROOM_TEST_PG_PASSWORD_FILE
log:
  format: text
YAML
AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "$strongroom" backup --engine postgresql \
  --config "$work/localstack.yaml" 2>"$work/backup.log" >"$work/backup.out" \
  || { cat "$work/backup.out" "$work/backup.log" >&2; exit 1; }
cat "$work/backup.out"
AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "$strongroom" list --engine postgresql \
  --config "$work/localstack.yaml" 2>/dev/null

step "strongroom preflight on the bucket Terraform made"
# LocalStack enforces no permissions, so its owner credentials may delete: every bucket check
# passes and no-delete fails (the passing no-delete is checked on RGW below).
set +e
AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "$strongroom" preflight \
  --config "$work/localstack.yaml" >"$work/preflight.out" 2>"$work/preflight.log"
preflight_rc=$?
set -e
cat "$work/preflight.out"
[ "$preflight_rc" = 1 ] && grep -q "^FAIL no-delete" "$work/preflight.out" \
  && [ "$(grep -c '^FAIL' "$work/preflight.out")" = 1 ] \
  && grep -q "^ok   object-lock" "$work/preflight.out" \
  && grep -q "^ok   default-retention" "$work/preflight.out" \
  && grep -q "^ok   retention" "$work/preflight.out" \
  || { echo "tf-check: preflight on LocalStack: expected only no-delete to fail" >&2; cat "$work/preflight.log" >&2; exit 1; }

step "strongroom preflight refuses buckets without Object Lock or versioning (LocalStack)"
for kind in unlocked unversioned; do
  .venv/bin/python - "$ls_url" "$bucket-$kind" "$kind" <<'PY'
import sys, boto3
url, name, kind = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
s3.create_bucket(Bucket=name)
if kind == "unlocked":
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
PY
  sed "s/^  bucket: .*/  bucket: $bucket-$kind/" "$work/localstack.yaml" > "$work/preflight-$kind.yaml"
  set +e
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "$strongroom" preflight \
    --config "$work/preflight-$kind.yaml" >"$work/preflight-$kind.out" 2>/dev/null
  rc=$?
  set -e
  check=$([ "$kind" = unlocked ] && echo object-lock || echo versioning)
  [ "$rc" = 1 ] && grep -q "^FAIL $check" "$work/preflight-$kind.out" \
    || { echo "tf-check: preflight on a bucket $kind must fail $check" >&2; cat "$work/preflight-$kind.out" >&2; exit 1; }
  grep "^FAIL $check" "$work/preflight-$kind.out"
done

step "strongroom preflight on moto with IAM enforcement"
.venv/bin/python "$root/e2e/terraform/moto_preflight.py" "$work/outputs.json" "$strongroom" "$root/.venv"

step "terraform destroy must be refused"
if (cd "$example" && tf destroy -auto-approve -var "bucket_name=$bucket" -var region=us-east-1 \
      >"$work/destroy.log" 2>&1); then
  echo "tf-check: terraform destroy succeeded; the bucket must be protected" >&2; exit 1
fi
grep -q "Instance cannot be destroyed" "$work/destroy.log" || { cat "$work/destroy.log" >&2; exit 1; }
grep -A3 "Instance cannot be destroyed" "$work/destroy.log" | head -n 4 >&2
AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test .venv/bin/python "$root/e2e/terraform/locked_after_destroy.py" \
  "$ls_url" "$bucket" "backups/llama-mapper/"

step "the role policies on Ceph RGW, with real requests"
.venv/bin/python "$root/e2e/terraform/rgw_policies.py" "$work/outputs.json" "$strongroom" \
  "$work/localstack.yaml"
step "all Terraform checks passed"
