"""`strongroom preflight` on moto with IAM enforcement: a good bucket passes every check for a
user holding the Terraform module's writer policy, and a user that may delete fails no-delete.

The harness's moto enforces no permissions; this script starts its own moto with
INITIAL_NO_AUTH_ACTION_COUNT, so that the first requests (the setup below, as the root user)
are not checked and every later one is. moto's IAM emulation names GetObjectRetention with a
versionId `s3:GetObjectVersion` (moto/s3/responses.py, ACTION_MAP), and its answer to that call
is malformed XML, so the agent falls back to HEAD, which moto names `s3:GetObject`: the
writer's grant gets those two actions added for moto (on AWS and RGW neither is needed, see
rgw_policies.py); nothing else differs from writer_policy_json.

Usage: moto_preflight.py OUTPUTS_JSON STRONGROOM VENV"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import boto3

outputs_path, strongroom, venv = sys.argv[1:4]
outputs = {k: v["value"] for k, v in json.load(open(outputs_path)).items()}
bucket, prefix = "sr-moto-preflight", "backups/llama-mapper"
work = tempfile.mkdtemp()

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
SETUP_CALLS = 8  # exactly the unauthenticated calls below
server = subprocess.Popen(
    [f"{venv}/bin/moto_server", "-H", "127.0.0.1", "-p", str(port)],
    env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(SETUP_CALLS)),
    stdout=open(os.path.join(work, "moto.log"), "w"), stderr=subprocess.STDOUT)
try:
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    root = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                aws_secret_access_key="test")
    s3, iam = boto3.client("s3", **root), boto3.client("iam", **root)

    def writer_policy():
        policy = json.loads(outputs["writer_policy_json"])
        statements = []
        for st in policy["Statement"]:
            if any(a.startswith("kms:") for a in st["Action"]):
                continue
            st = dict(st)
            st["Resource"] = [r.replace(f":::{outputs['bucket_name']}", f":::{bucket}") for r in st["Resource"]]
            st.pop("Condition", None)  # moto evaluates no s3:prefix conditions
            if "s3:GetObjectRetention" in st["Action"]:
                st["Action"] = st["Action"] + ["s3:GetObjectVersion", "s3:GetObject"]
            statements.append(st)
        return {"Version": "2012-10-17", "Statement": statements}

    # The unauthenticated setup: SETUP_CALLS requests.
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Years": 7}}})
    iam.create_user(UserName="backup-writer")
    iam.put_user_policy(UserName="backup-writer", PolicyName="writer", PolicyDocument=json.dumps(writer_policy()))
    writer = iam.create_access_key(UserName="backup-writer")["AccessKey"]
    iam.create_user(UserName="may-delete")
    everything = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:*"], "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}
    iam.put_user_policy(UserName="may-delete", PolicyName="all", PolicyDocument=json.dumps(everything))
    deleter = iam.create_access_key(UserName="may-delete")["AccessKey"]

    config = os.path.join(work, "preflight.yaml")
    open(config, "w").write(f"release: llama-mapper\ns3:\n  bucket: {bucket}\n  prefix: {prefix}\n  endpoint: {url}\n")

    def preflight(key):
        env = dict(os.environ, AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
        env.pop("RUST_LOG", None)
        return subprocess.run([strongroom, "preflight", "--config", config], env=env, capture_output=True, text=True)

    done = preflight(writer)
    print("  as the writer (writer_policy_json):\n    " + done.stdout.strip().replace("\n", "\n    "))
    if done.returncode != 0 or "FAIL" in done.stdout or "ok   no-delete" not in done.stdout:
        sys.exit(f"moto preflight as the writer must pass:\n{done.stdout}{done.stderr}")
    done = preflight(deleter)
    if done.returncode != 1 or "FAIL no-delete" not in done.stdout:
        sys.exit(f"moto preflight as a user that may delete must fail no-delete:\n{done.stdout}{done.stderr}")
    print("  as a user with s3:*: fails no-delete, as it must")
finally:
    server.terminate()
    server.wait()
