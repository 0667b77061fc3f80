"""After the refused `terraform destroy`: the backup's object versions are still there, locked,
and a delete of a locked version is refused by S3 itself, whoever asks.

Usage: locked_after_destroy.py ENDPOINT BUCKET PREFIX   (credentials from the environment)
"""
import sys

import boto3
from botocore.exceptions import ClientError

endpoint, bucket, prefix = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
versions = s3.list_object_versions(Bucket=bucket, Prefix=prefix).get("Versions", [])
dumps = [v for v in versions if v["Key"].endswith(".sql.gz")]
assert dumps, f"no backup found under s3://{bucket}/{prefix}"
for v in versions:
    r = s3.get_object_retention(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["Retention"]
    assert r["Mode"] == "GOVERNANCE", (v["Key"], r)
dump = dumps[0]
try:
    s3.delete_object(Bucket=bucket, Key=dump["Key"], VersionId=dump["VersionId"])
except ClientError as e:
    print(f"locked: {len(versions)} object versions remain under s3://{bucket}/{prefix}, each "
          f"GOVERNANCE-locked; deleting {dump['Key']} version {dump['VersionId']} was refused: "
          f"{e.response['Error']['Code']}")
else:
    sys.exit(f"{dump['Key']} version {dump['VersionId']} could be deleted: it was not locked")
