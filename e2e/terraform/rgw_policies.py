"""The module's role policies, proven with real requests on Ceph RGW (which enforces bucket
policies), together with the module's protective bucket-policy denies.

RGW has no IAM roles, so each identity policy from `terraform output` is granted to an RGW user
through a bucket policy (the same statements with a Principal). Then:
- backup-writer runs `strongroom backup` (the agent and the policy agree: everything the
  backup path does, upload, read-back, retention, audit, is allowed), and cannot delete,
  hide, or bypass retention; an overwrite only adds a version, the old one stays locked;
  `strongroom preflight` passes for it and fails `no-delete` for the owner, who may delete;
- restore-reader (reader + reporter policies) runs `strongroom verify --deep` and reads the
  backup, and cannot write backup data or delete anything;
- drill reports (`<prefix>/drills/<engine>/<release>/<ts>.json`): the restore role puts one
  create-only with its lock, reads its retention and bytes back, lists drills/ and reads the
  writer's; the writer puts one too (create-only, locked, retention read back) but cannot read
  drills/*, delete a drill report or its version, or bypass its retention; an overwrite only adds
  a version. Neither can remove one.

Usage: rgw_policies.py OUTPUTS_JSON STRONGROOM CONFIG_TEMPLATE
Env: STRONGROOM_TEST_S3_RGW, AWS_ACCESS_KEY_ID/SECRET (bucket owner),
     STRONGROOM_TEST_RGW_{WRITER,READER}_{KEY,SECRET}
"""
import base64
import datetime
import hashlib
import json
import os
import subprocess
import sys
import uuid

import boto3
from botocore.exceptions import ClientError

outputs_path, strongroom, config_template = sys.argv[1:4]
outputs = {k: v["value"] for k, v in json.load(open(outputs_path)).items()}
endpoint = os.environ["STRONGROOM_TEST_S3_RGW"]
bucket = "sr-tf-policies-" + uuid.uuid4().hex[:8]
prefix = "backups/llama-mapper"


def client(key=None, secret=None):
    kwargs = {} if key is None else {"aws_access_key_id": key, "aws_secret_access_key": secret}
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **kwargs)


owner = client()
writer_creds = (os.environ["STRONGROOM_TEST_RGW_WRITER_KEY"], os.environ["STRONGROOM_TEST_RGW_WRITER_SECRET"])
reader_creds = (os.environ["STRONGROOM_TEST_RGW_READER_KEY"], os.environ["STRONGROOM_TEST_RGW_READER_SECRET"])
writer, reader = client(*writer_creds), client(*reader_creds)


def granted(policy_json, user):
    """The identity policy's statements, re-targeted at this bucket and granted to an RGW user."""
    statements = []
    for s in json.loads(policy_json)["Statement"]:
        if any(a.startswith("kms:") for a in s["Action"]):
            continue
        s = dict(s, Principal={"AWS": [f"arn:aws:iam:::user/{user}"]})
        s["Resource"] = [r.replace(f":::{outputs['bucket_name']}", f":::{bucket}") for r in s["Resource"]]
        s["Sid"] = (s.get("Sid", "") + user.replace("-", "")).replace("_", "")
        statements.append(s)
    return statements


def protective_denies():
    """The module's bucket policy, as far as it applies over plain HTTP on RGW: the denies of
    removing protection, for everyone (RGW knows no break-glass IAM roles)."""
    out = []
    for s in json.loads(outputs["bucket_policy_json"])["Statement"]:
        if s["Sid"] == "DenyInsecureTransport":
            continue  # the test talks plain HTTP to 127.0.0.1
        s = {k: v for k, v in s.items() if k != "Condition"}
        s["Resource"] = [r.replace(f":::{outputs['bucket_name']}", f":::{bucket}") for r in s["Resource"]]
        out.append(s)
    return out


owner.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
owner.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
    "ObjectLockEnabled": "Enabled",
    "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Years": 7}}})
policy = {"Version": "2012-10-17", "Statement":
          protective_denies()
          + granted(outputs["writer_policy_json"], "backup-writer")
          + granted(outputs["reader_policy_json"], "restore-reader")
          + granted(outputs["reporter_policy_json"], "restore-reader")}
owner.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


def run(args, creds):
    config = open(config_template).read()
    config = config.replace(config.split("bucket: ")[1].split("\n")[0], bucket, 1)
    config = config.replace(config.split("endpoint: ")[1].split("\n")[0], endpoint, 1)
    path = os.path.join(os.path.dirname(outputs_path), f"rgw-{uuid.uuid4().hex[:6]}.yaml")
    open(path, "w").write(config)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=creds[0], AWS_SECRET_ACCESS_KEY=creds[1])
    env.pop("RUST_LOG", None)
    done = subprocess.run([strongroom, *args, "--config", path], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"strongroom {' '.join(args)} failed under the module's policy:\n{done.stdout}{done.stderr}")
    return done.stdout


def denied(what, call):
    try:
        call()
    except ClientError as e:
        code = e.response["Error"]["Code"]
        if code == "AccessDenied":
            print(f"  denied as it must be: {what}")
            return
        sys.exit(f"{what}: expected AccessDenied, got {code}")
    sys.exit(f"{what}: allowed, but the policy must deny it")


print(f"writer (backup-writer, writer_policy_json) on s3://{bucket}:")
out = run(["backup", "--engine", "postgresql"], writer_creds)
print("  " + out.strip().splitlines()[0])
dump_key = out.split("backup complete: ")[1].split(" ")[0]
versions = owner.list_object_versions(Bucket=bucket, Prefix=dump_key)["Versions"]
dump_version = versions[0]["VersionId"]
denied("DeleteObject (a delete marker) on the dump",
       lambda: writer.delete_object(Bucket=bucket, Key=dump_key))
denied("DeleteObject of the dump's version",
       lambda: writer.delete_object(Bucket=bucket, Key=dump_key, VersionId=dump_version))
# (Reading is not checked here: on RGW an object belongs to the user that wrote it, whose ACL
# lets it read its own objects whatever the policy says. On AWS, BucketOwnerEnforced makes the
# bucket's account own every object and the writer's IAM policy, without s3:GetObject, decides;
# terraform test checks that the policy has no read action.)
denied("shortening retention with x-amz-bypass-governance-retention",
       lambda: writer.put_object_retention(
           Bucket=bucket, Key=dump_key, VersionId=dump_version, BypassGovernanceRetention=True,
           Retention={"Mode": "GOVERNANCE", "RetainUntilDate": "2027-01-01T00:00:00Z"}))
denied("PutObject outside the prefix",
       lambda: writer.put_object(Bucket=bucket, Key="elsewhere/x", Body=b"x"))
denied("PutObject of a restore report or run marker",
       lambda: writer.put_object(Bucket=bucket, Key=f"{prefix}/reports/postgresql/llama-mapper/runs/x.json", Body=b"x",
                                 ContentMD5=base64.b64encode(hashlib.md5(b"x").digest()).decode()))
# An overwrite is a new version; the backed-up version stays, locked, and is what the manifest pins.
body = b"overwrite attempt"
writer.put_object(Bucket=bucket, Key=dump_key, Body=body,
                  ContentMD5=base64.b64encode(hashlib.md5(body).digest()).decode())
after = owner.list_object_versions(Bucket=bucket, Prefix=dump_key)["Versions"]
assert any(v["VersionId"] == dump_version for v in after), "the original version must remain"
retention = writer.get_object_retention(Bucket=bucket, Key=dump_key, VersionId=dump_version)["Retention"]
print(f"  overwrite added a version; the original {dump_version} remains, {retention['Mode']} until "
      f"{retention['RetainUntilDate']}")

# strongroom preflight as the writer: every check passes, the delete probe is refused.
pre = run(["preflight"], writer_creds)
print("  preflight as the writer:\n    " + pre.strip().replace("\n", "\n    "))
assert "FAIL" not in pre and "ok   no-delete" in pre, pre
# As the bucket owner, who may delete, preflight fails naming the check.
config = open(config_template).read()
config = config.replace(config.split("bucket: ")[1].split("\n")[0], bucket, 1)
config = config.replace(config.split("endpoint: ")[1].split("\n")[0], endpoint, 1)
owner_config = os.path.join(os.path.dirname(outputs_path), "rgw-owner.yaml")
open(owner_config, "w").write(config)
done = subprocess.run([strongroom, "preflight", "--config", owner_config], capture_output=True, text=True)
assert done.returncode == 1 and "FAIL no-delete" in done.stdout, done.stdout + done.stderr
print("  preflight as the owner (may delete): fails with no-delete, as it must")

print("reader (restore-reader, reader_policy_json + reporter_policy_json):")
verify = run(["verify", "--engine", "postgresql", "--all", "--deep"], reader_creds)
print("  " + verify.strip().splitlines()[0])
assert verify.startswith("OK"), verify
reader.get_object(Bucket=bucket, Key=dump_key, VersionId=dump_version)["Body"].read(16)
print("  GetObject of the pinned dump version: allowed")
denied("PutObject of backup data", lambda: reader.put_object(
    Bucket=bucket, Key=f"{prefix}/postgresql/llama-mapper/forged.sql.gz", Body=b"x"))
denied("DeleteObject", lambda: reader.delete_object(Bucket=bucket, Key=dump_key))
denied("DeleteObject of a version",
       lambda: reader.delete_object(Bucket=bucket, Key=dump_key, VersionId=dump_version))

print("drill reports (<prefix>/drills/*):")
drills = f"{prefix}/drills/postgresql/llama-mapper/"
retain_until = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + datetime.timedelta(days=7 * 366)


def put_drill(who, c, key, body, create_only=True):
    """A drill report as the agent writes one: create-only, locked on the put."""
    extra = {"IfNoneMatch": "*"} if create_only else {}
    put = c.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json",
                       ContentMD5=base64.b64encode(hashlib.md5(body).digest()).decode(),
                       ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=retain_until, **extra)
    # The agent's read-back: metadata only (ListObjectVersions, GetObjectRetention).
    listed = c.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    assert any(v["VersionId"] == put["VersionId"] and v["Size"] == len(body) for v in listed), listed
    retention = c.get_object_retention(Bucket=bucket, Key=key, VersionId=put["VersionId"])["Retention"]
    assert retention["Mode"] == "GOVERNANCE" and retention["RetainUntilDate"] >= retain_until, retention
    print(f"  {who}: PutObject create-only and locked, read back by listing and GetObjectRetention: "
          f"allowed ({key.removeprefix(prefix + '/')}, {retention['Mode']} until {retention['RetainUntilDate']})")
    return put["VersionId"]


def cannot_remove(who, c, key, version):
    denied(f"{who}: DeleteObject (a delete marker) on a drill report",
           lambda: c.delete_object(Bucket=bucket, Key=key))
    denied(f"{who}: DeleteObject of a drill report's version",
           lambda: c.delete_object(Bucket=bucket, Key=key, VersionId=version))
    denied(f"{who}: shortening a drill report's retention with x-amz-bypass-governance-retention",
           lambda: c.put_object_retention(
               Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True,
               Retention={"Mode": "GOVERNANCE", "RetainUntilDate": "2027-01-01T00:00:00Z"}))


# The restore role (the drill CronJob): reporter policy to write, reader policy to read and list.
reader_key = drills + "20261201T030000Z.json"
reader_body = json.dumps({"kind": "drill", "by": "restore-reader", "outcome": "ok"}).encode()
reader_version = put_drill("restore-reader", reader, reader_key, reader_body)
got = reader.get_object(Bucket=bucket, Key=reader_key, VersionId=reader_version)["Body"].read()
assert got == reader_body, got
# As the agent's ensure_retention does where a server ignored the lock headers: lengthen it.
reader.put_object_retention(Bucket=bucket, Key=reader_key, VersionId=reader_version, Retention={
    "Mode": "GOVERNANCE", "RetainUntilDate": retain_until + datetime.timedelta(days=1)})
print("  restore-reader: GetObject of its drill report and PutObjectRetention (lengthening): allowed")
cannot_remove("restore-reader", reader, reader_key, reader_version)

# The backup writer (the sidecar's quarterly drill): writes, never reads drill reports back.
writer_key = drills + "20261201T040000Z.json"
writer_body = json.dumps({"kind": "drill", "by": "backup-writer", "outcome": "ok"}).encode()
writer_version = put_drill("backup-writer", writer, writer_key, writer_body)
cannot_remove("backup-writer (its own report)", writer, writer_key, writer_version)
cannot_remove("backup-writer (the restore role's report)", writer, reader_key, reader_version)
# The restore role's report belongs to that user on RGW (see above), so here the policy decides.
denied("backup-writer: GetObject of the restore role's drill report",
       lambda: writer.get_object(Bucket=bucket, Key=reader_key))
denied("backup-writer: GetObject of a drill report's version",
       lambda: writer.get_object(Bucket=bucket, Key=reader_key, VersionId=reader_version))
denied("backup-writer: PutObject of a restore report beside its drill report",
       lambda: writer.put_object(Bucket=bucket, Key=f"{prefix}/reports/postgresql/llama-mapper/x.json", Body=b"x",
                                 ContentMD5=base64.b64encode(hashlib.md5(b"x").digest()).decode()))
# An overwrite without If-None-Match (a compromised pod's) adds a version; the report stays, locked.
for key, version in ((writer_key, writer_version), (reader_key, reader_version)):
    body = b'{"kind": "drill", "outcome": "forged"}'
    writer.put_object(Bucket=bucket, Key=key, Body=body,
                      ContentMD5=base64.b64encode(hashlib.md5(body).digest()).decode())
    after = owner.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    assert len(after) == 2 and any(v["VersionId"] == version for v in after), after
    retention = reader.get_object_retention(Bucket=bucket, Key=key, VersionId=version)["Retention"]
    assert retention["Mode"] == "GOVERNANCE" and retention["RetainUntilDate"] >= retain_until, retention
print("  backup-writer: an overwrite of either drill report added a version; both originals remain, locked")

# `strongroom drill list` as the restore role: list drills/ and read every report, the writer's too.
listed = {o["Key"] for o in reader.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/drills/")["Contents"]}
assert listed == {reader_key, writer_key}, listed
versions = reader.list_object_versions(Bucket=bucket, Prefix=f"{prefix}/drills/")["Versions"]
assert len(versions) == 4, versions
got = reader.get_object(Bucket=bucket, Key=writer_key, VersionId=writer_version)["Body"].read()
assert got == writer_body, got
reader.get_object_retention(Bucket=bucket, Key=writer_key, VersionId=writer_version)
print("  restore-reader: ListObjects/ListObjectVersions of drills/, GetObject and GetObjectRetention "
      "of the writer's drill report: allowed")
denied("restore-reader: PutObject outside drills/, reports/, audit/ (a look-alike folder)",
       lambda: reader.put_object(Bucket=bucket, Key=f"{prefix}/drills-forged/x.json", Body=b"x",
                                 ContentMD5=base64.b64encode(hashlib.md5(b"x").digest()).decode()))
print("RGW policy checks passed")
