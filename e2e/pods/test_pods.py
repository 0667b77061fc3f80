"""The chart's rendered pods, run from the image `make image` built, by the test kubelet
(kubelet.py: crun, with the kubelet's volume layout, security context, probes, grace period and
Job semantics), against the harness's real servers: PostgreSQL 15 (its socket directory is the
pod's socket emptyDir; the database container itself is stood in for by the harness's server;
the drill pod's scratch server by its second, empty cluster) and Ceph RGW with Object Lock.
Results are read back with the agent's own CLI on the host.

Run by `make e2e` (part of `make test`) inside e2e/harness/with-servers.sh."""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import threading
import time
import uuid

import pytest
import yaml
from helm_python import Chart

from kubelet import Cluster, CreateContainerConfigError, Image, Pod, run_job

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "chart"
STRONGROOM = os.environ.get("STRONGROOM", str(ROOT / "target" / "debug" / "strongroom"))
RELEASE, NAMESPACE = "llama-mapper", "prod"
PREFIX = "backups/llama-mapper"


def env(name):
    value = os.environ.get(name)
    assert value, f"{name} is not set: run through e2e/harness/with-servers.sh (make e2e)"
    return value


RGW = env("STRONGROOM_TEST_S3_RGW")
PG_SOCKET, PG_PORT = env("STRONGROOM_TEST_PGHOST"), int(env("STRONGROOM_TEST_PGPORT"))
PG_PASSWORD = pathlib.Path(env("STRONGROOM_TEST_PG_PASSWORD_FILE")).read_text().strip()
# The second, empty cluster (no roles but the harness's): the drill's scratch server.
PG2_SOCKET, PG2_PORT = env("STRONGROOM_TEST_PG2_HOST"), int(env("STRONGROOM_TEST_PG2_PORT"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(database, sql, host=PG_SOCKET, port=PG_PORT):
    done = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", str(port),
                           "-U", "postgres", "-d", database, "-At", "-c", sql], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def make_bucket():
    bucket = f"sr-pods-{uuid.uuid4().hex[:8]}"
    aws = ROOT / ".venv" / "bin" / "aws"
    subprocess.run([str(aws), "--endpoint-url", RGW, "s3api", "create-bucket", "--bucket", bucket,
                    "--object-lock-enabled-for-bucket"], check=True, capture_output=True)
    return bucket


def host_config(tmp, bucket, database, endpoint=RGW, extra=""):
    """A config for the agent's CLI on the host, reading what the pods wrote."""
    path = tmp / f"host-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(
        f"release: {RELEASE}\ns3:\n  bucket: {bucket}\n  prefix: {PREFIX}\n  endpoint: {endpoint}\n"
        f"postgresql:\n  host: {PG_SOCKET}\n  port: {PG_PORT}\n  user: strongroom_backup\n  database: {database}\n"
        f"  password_file: {env('STRONGROOM_TEST_PG_PASSWORD_FILE')}\nlog:\n  format: text\n{extra}")
    return path


def cli(config, *args):
    return subprocess.run([STRONGROOM, *args, "--config", str(config)], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "RUST_LOG"})


def complete_backups(config):
    done = cli(config, "list", "--engine", "postgresql", "--json")
    assert done.returncode == 0, done.stderr
    return [b for b in json.loads(done.stdout) if b["complete"] and not b.get("hidden")]


def render(chart_dir, values):
    out = Chart.load(str(chart_dir)).render(values, name=RELEASE, namespace=NAMESPACE)
    docs = []
    for path, text in sorted(out.items()):
        if not path.endswith("NOTES.txt"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def app_chart(tmp):
    target = tmp / "app"
    shutil.copytree(CHART / "examples" / "app", target)
    (target / "charts").mkdir()
    shutil.copytree(CHART, target / "charts" / "strongroom", ignore=shutil.ignore_patterns("examples", "ci"))
    return target


def statefulset(docs, suffix):
    return next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"].endswith(suffix))


class SlowProxy:
    """A TCP proxy to `upstream` that passes at most `rate` bytes/s each way: a slow link to S3."""

    def __init__(self, upstream, rate):
        host, port = upstream.rsplit("//", 1)[1].split(":")
        self.upstream, self.rate = (host, int(port)), rate
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source, sink):
        try:
            while True:
                data = source.recv(max(1024, self.rate // 10))
                if not data:
                    break
                sink.sendall(data)
                time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.server.close()


@pytest.fixture(scope="module")
def image():
    return Image()


@pytest.fixture(scope="module")
def signing(tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys")
    done = subprocess.run([STRONGROOM, "keygen", "--out-dir", str(keys)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return keys


def cluster_with_secrets(signing, trigger="trigger-token-for-tests-0123456789"):
    cluster = Cluster(NAMESPACE)
    cluster.secret("s3-keys", {"AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
                               "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"]})
    cluster.secret("llama-mapper-pg-backup", {"password": PG_PASSWORD + "\n"})
    cluster.secret("llama-mapper-signing", {"strongroom-signing.key": (signing / "strongroom-signing.key").read_bytes()})
    cluster.secret("llama-mapper-signing-pub", {"strongroom-signing.pub": (signing / "strongroom-signing.pub").read_bytes()})
    cluster.secret("trigger", {"token": trigger})
    # The example application's own Secret (its stood-in database container mounts it).
    cluster.secret("llama-mapper-pg", {"password": "unused-by-the-stand-in"})
    return cluster


def sidecar_values(bucket, database, port, endpoint=RGW, schedule="* * * * *"):
    return {
        "backups": {
            "enabled": True,
            "s3": {"bucket": bucket, "prefix": PREFIX, "endpoint": endpoint, "forcePathStyle": True,
                   "awsAccessKeyIdSecretRef": "s3-keys", "awsSecretAccessKeySecretRef": "s3-keys"},
            "postgresql": {"enabled": True, "mode": "sidecar", "passwordSecretRef": "llama-mapper-pg-backup",
                           "database": database, "port": PG_PORT, "schedule": schedule,
                           "sidecar": {"irsaSkipContainers": []}},
            "clickhouse": {"enabled": False},
            "signing": {"privateKeySecretRef": "llama-mapper-signing"},
            "daemon": {"port": port, "shutdownGraceSeconds": 5, "triggerTokenSecretRef": "trigger",
                       "extraConfig": {"readiness_interval_seconds": 1}},
            "log": {"format": "text"},
            "sidecar": {"probes": {"readinessPeriodSeconds": 2, "readinessFailureThreshold": 1}},
        },
        "postgresql": {"terminationGracePeriodSeconds": 40},
    }


def cronjob_values(bucket, database):
    """CronJob mode over TCP to the harness's PostgreSQL, S3 keys from the Secret s3-keys."""
    return {"backups": {
        "enabled": True,
        "s3": {"bucket": bucket, "prefix": PREFIX, "endpoint": RGW, "forcePathStyle": True,
               "awsAccessKeyIdSecretRef": "s3-keys", "awsSecretAccessKeySecretRef": "s3-keys"},
        "postgresql": {"enabled": True, "passwordSecretRef": "llama-mapper-pg-backup", "host": "localhost",
                       "port": PG_PORT, "database": database},
        "log": {"format": "text"}}}


def status(port):
    """`strongroom status --json` against the pod's port: (exit code, document or {})."""
    done = subprocess.run([STRONGROOM, "status", "--url", f"http://127.0.0.1:{port}", "--json"],
                          capture_output=True, text=True)
    doc = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
    return done.returncode, doc


def engine_status(port, field):
    return status(port)[1].get("engines", {}).get("postgresql", {}).get(field)


def test_sidecar_next_to_postgresql(image, signing, tmp_path):
    database = f"pods_app_{uuid.uuid4().hex[:6]}"
    psql("postgres", f"CREATE DATABASE {database}")
    psql(database, "CREATE TABLE storage_records AS SELECT g AS id, md5(g::text) || md5((g*7)::text) AS body "
                   "FROM generate_series(1, 60000) g")
    bucket = make_bucket()
    port = free_port()
    chart = app_chart(tmp_path)
    docs = render(chart, sidecar_values(bucket, database, port))
    cluster = cluster_with_secrets(signing)
    cluster.apply(docs)
    sts = statefulset(docs, "postgresql")
    pod = Pod(cluster, image, "llama-mapper-postgresql-0", sts["spec"]["template"]["spec"],
              host_volumes={"postgresql-socket": PG_SOCKET}).start()
    try:
        # Ready through the rendered probes (startup on /healthz, readiness on /readyz).
        pod.wait_until(pod.ready, 60, "Ready")
        # The per-minute schedule's backup lands, complete, signed and locked.
        config = host_config(tmp_path, bucket, database)
        deadline = time.monotonic() + 150
        while not complete_backups(config):
            assert time.monotonic() < deadline, f"no scheduled backup within 150 s\n{pod.logs()}"
            time.sleep(3)
        (first, *_) = complete_backups(config)
        pub = tmp_path / "verify.yaml"
        pub.write_text(config.read_text() + f"signing:\n  public_key_file: {signing / 'strongroom-signing.pub'}\n")
        verified = cli(pub, "verify", "--engine", "postgresql", "--snapshot", first["key"])
        assert verified.returncode == 0 and "signed" in verified.stdout and "verified" in verified.stdout, verified.stdout + verified.stderr
        # strongroom status through the pod's port (what kubectl port-forward gives).
        code, doc = status(port)
        assert code == 0, doc
        assert doc["ready"] is True, doc
        assert doc["engines"]["postgresql"]["last_success"]["key"] in {b["key"] for b in complete_backups(config)}, doc

        # A values change, re-rendered into the ConfigMap and swapped in atomically (..data),
        # changes the schedule without a restart.
        (agent,) = pod.containers
        pid = agent.process.pid
        new_docs = render(chart, sidecar_values(bucket, database, port, schedule="17 3 * * *"))
        (cm,) = [d for d in new_docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("pg-sidecar")]
        pod.update_configmap(cm["metadata"]["name"], cm["data"])
        pod.wait_until(lambda: engine_status(port, "schedule") == "17 3 * * *", 30,
                       "the new schedule in /status")
        assert agent.process.pid == pid and agent.restarts == 0, "the config change restarted the agent"

        # Data lost: the database is recreated empty, and a restore over a slow link loads into
        # it; meanwhile the pod is NotReady, then Ready again.
        psql("postgres", f"DROP DATABASE {database} WITH (FORCE)")
        psql("postgres", f"CREATE DATABASE {database}")
        pod.wait_until(pod.ready, 30, "Ready again after the database came back")
        slow = SlowProxy(RGW, 60_000)
        restore_config = host_config(tmp_path, bucket, database, endpoint=slow.url,
                                     extra=f"restore:\n  user: postgres\n")
        restore_config.write_text(restore_config.read_text() + f"signing:\n  public_key_file: {signing / 'strongroom-signing.pub'}\n")
        marks = len(pod.ready_history)
        restored = subprocess.Popen([STRONGROOM, "restore", "--config", str(restore_config), "--engine", "postgresql",
                                     "--snapshot", first["key"]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        pod.wait_until(lambda: not pod.ready(), 60, "NotReady during the restore")
        out, err = restored.communicate(timeout=300)
        slow.close()
        assert restored.returncode == 0, out + err
        pod.wait_until(pod.ready, 30, "Ready after the restore")
        flips = [ready for _, ready in pod.ready_history[marks:]]
        assert flips[:2] == [False, True], pod.ready_history
        assert psql(database, "SELECT count(*) FROM storage_records") == "60000"
        # Through all of it, one agent process: no probe restarted it.
        assert agent.process.pid == pid and agent.restarts == 0, pod.logs()
    finally:
        codes = pod.delete()
    assert codes == {"strongroom": 0}, (codes, pod.logs())


def test_deleting_the_pod_mid_backup_aborts_the_upload(image, signing, tmp_path):
    database = f"pods_term_{uuid.uuid4().hex[:6]}"
    psql("postgres", f"CREATE DATABASE {database}")
    psql(database, "CREATE TABLE storage_records AS SELECT g AS id, md5(g::text) || md5((g*3)::text) AS body "
                   "FROM generate_series(1, 100000) g")
    bucket = make_bucket()
    port = free_port()
    slow = SlowProxy(RGW, 100_000)
    docs = render(app_chart(tmp_path), sidecar_values(bucket, database, port, endpoint=slow.url, schedule="0 3 1 1 *"))
    cluster = cluster_with_secrets(signing)
    cluster.apply(docs)
    sts = statefulset(docs, "postgresql")
    pod = Pod(cluster, image, "llama-mapper-postgresql-0", sts["spec"]["template"]["spec"],
              host_volumes={"postgresql-socket": PG_SOCKET}).start()
    try:
        pod.wait_until(pod.ready, 60, "Ready")
        done = subprocess.run(["curl", "-sf", "-X", "POST", "-H", "Authorization: Bearer trigger-token-for-tests-0123456789",
                               f"http://127.0.0.1:{port}/backup?engine=postgresql"], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        pod.wait_until(lambda: engine_status(port, "state") == "running",
                       30, "the triggered backup running")
        time.sleep(3)
        started = time.monotonic()
        codes = pod.delete()
        took = time.monotonic() - started
    finally:
        slow.close()
    # The agent gave the backup its 5 s grace, then aborted it and exited 0, within the pod's 40 s.
    assert codes == {"strongroom": 0}, (codes, pod.logs())
    assert 5 <= took < 40, took
    log = pod.logs()
    assert "grace period ran out: cancelling running backups" in log and "agent stopped" in log, log
    config = host_config(tmp_path, bucket, database)
    assert not complete_backups(config), "a backup cut off by the shutdown is complete"
    # Not even an incomplete dump: the multipart upload was aborted.
    listing = cli(config, "list", "--engine", "postgresql", "--json")
    assert json.loads(listing.stdout) == [], listing.stdout


def test_cronjob_mode_backs_up_over_tcp(image, signing, tmp_path):
    database = f"pods_cron_{uuid.uuid4().hex[:6]}"
    psql("postgres", f"CREATE DATABASE {database}")
    psql(database, "CREATE TABLE storage_records AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 5000) g")
    bucket = make_bucket()
    values = cronjob_values(bucket, database)
    values["backups"]["signing"] = {"privateKeySecretRef": "llama-mapper-signing"}
    docs = render(CHART, values)
    cluster = cluster_with_secrets(signing)
    cluster.apply(docs)
    (cron,) = [d for d in docs if d["kind"] == "CronJob"]
    job = {"metadata": {"name": "pg-backup-now"}, "spec": cron["spec"]["jobTemplate"]["spec"]}
    ok, pods = run_job(cluster, image, job)
    assert ok and len(pods) == 1, pods[-1].logs()
    (backup,) = complete_backups(host_config(tmp_path, bucket, database))
    assert backup["key"].startswith(f"{PREFIX}/postgresql/{RELEASE}/")


def restore_values(bucket, snapshot, target, run_id="1"):
    return {
        "backups": {"s3": {"bucket": bucket, "prefix": PREFIX, "endpoint": RGW, "forcePathStyle": True},
                    "postgresql": {"host": "localhost", "port": PG_PORT}},
        "restore": {"enabled": True, "type": "postgresql", "snapshot": snapshot, "runId": run_id,
                    "database": target,
                    "postgresql": {"passwordSecretRef": "restore-pg", "user": "pods_restore", "port": PG_PORT},
                    "s3": {"awsAccessKeyIdSecretRef": "s3-keys", "awsSecretAccessKeySecretRef": "s3-keys"},
                    "signing": {"publicKeySecretRef": "llama-mapper-signing-pub"},
                    "validation": {"sql": [{"name": "storage_records present",
                                            "query": "SELECT COUNT(*) FROM storage_records", "expect": {"min": 1}}]}},
    }


def test_the_restore_job_restores_once_and_names_a_missing_snapshot(image, signing, tmp_path):
    database = f"pods_src_{uuid.uuid4().hex[:6]}"
    psql("postgres", f"CREATE DATABASE {database}")
    psql(database, "CREATE TABLE storage_records AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 3000) g")
    # The restore's role owns nothing itself: it is a member of the role that owns the data
    # and the target database (the dump's ALTER ... OWNER TO needs that).
    psql("postgres", "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pods_owner') THEN "
                     "CREATE ROLE pods_owner NOLOGIN; "
                     "CREATE ROLE pods_restore LOGIN CREATEDB PASSWORD 'pods-restore-password' IN ROLE pods_owner; "
                     "END IF; END $$")
    psql(database, "ALTER TABLE storage_records OWNER TO pods_owner")
    bucket = make_bucket()
    config = host_config(tmp_path, bucket, database, extra=f"signing:\n  private_key_file: {signing / 'strongroom-signing.key'}\n")
    made = cli(config, "backup", "--engine", "postgresql", "--json")
    assert made.returncode == 0, made.stderr
    snapshot = json.loads(made.stdout)["key"]
    # The disaster-recovery target: an empty database its owner role owns.
    target = f"{database}_restored"
    psql("postgres", f"CREATE DATABASE {target} OWNER pods_owner")

    cluster = cluster_with_secrets(signing)
    cluster.secret("restore-pg", {"password": "pods-restore-password"})
    docs = render(CHART, restore_values(bucket, snapshot, target))
    cluster.apply(docs)
    (job,) = [d for d in docs if d["kind"] == "Job"]
    ok, pods = run_job(cluster, image, job)
    assert ok and len(pods) == 1, pods[-1].logs()
    # The Job's log: the agent's JSON log lines, and the report (pretty JSON on stdout).
    log = pods[-1].containers[0].text()
    start = log.index("\n{\n") + 1 if not log.startswith("{\n") else 0
    report, _ = json.JSONDecoder().raw_decode(log[start:])
    assert report["passed"] is True and report["report_key"].startswith(f"{PREFIX}/reports/"), report
    assert "report_error" not in report, report
    stored = subprocess.run([str(ROOT / ".venv" / "bin" / "aws"), "--endpoint-url", RGW, "s3api", "get-object-retention",
                             "--bucket", bucket, "--key", report["report_key"]], capture_output=True, text=True)
    assert stored.returncode == 0 and "GOVERNANCE" in stored.stdout, stored.stdout + stored.stderr
    assert psql(target, "SELECT count(*) FROM storage_records") == "3000"

    # The same Job again (a GitOps tool re-created it): refused, nothing changed.
    psql(target, "CREATE TABLE lived_on (x int)")
    ok, pods = run_job(cluster, image, job)
    assert not ok and len(pods) == 1, "backoffLimit 0: one attempt"
    log = pods[0].containers[0].text()
    assert pods[0].containers[0].exit_code == 5 and "already has a marker" in log, log
    assert psql(target, "SELECT count(*) FROM pg_tables WHERE tablename = 'lived_on'") == "1"

    # A snapshot that does not exist: the Job fails naming the key.
    missing = snapshot.replace(".sql.gz", "").rsplit("/", 1)[0] + "/20200101T000000Z.sql.gz"
    docs = render(CHART, restore_values(bucket, missing, f"{database}_none"))
    cluster.apply(docs)
    (job,) = [d for d in docs if d["kind"] == "Job"]
    ok, pods = run_job(cluster, image, job)
    log = pods[-1].containers[0].text()
    errors = [line for line in log.splitlines() if line.startswith("strongroom: error:")]
    assert not ok and pods[-1].containers[0].exit_code != 0, log
    assert errors and "20200101T000000Z" in errors[-1], log


def test_the_drill_cronjob_restores_into_its_scratch_server_and_reports(image, signing, tmp_path):
    """The drill CronJob's pod: the harness's second, empty cluster stands in for its scratch
    postgres native sidecar (PG2's socket directory is the pod's scratch-socket emptyDir); the
    agent restores the latest backup into <db>_drill_<ts> there, creating the role that owns
    the data from the backup's globals, validates, drops it, and stores its report locked."""
    database = f"pods_drill_{uuid.uuid4().hex[:6]}"
    owner = f"{database}_owner"
    psql("postgres", f"CREATE ROLE {owner} NOLOGIN")
    psql("postgres", f"CREATE DATABASE {database}")
    psql(database, "CREATE TABLE storage_records AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 4000) g")
    psql(database, f"ALTER TABLE storage_records OWNER TO {owner}")
    assert psql("postgres", f"SELECT count(*) FROM pg_roles WHERE rolname = '{owner}'", PG2_SOCKET, PG2_PORT) == "0"
    bucket = make_bucket()
    config = host_config(tmp_path, bucket, database, extra=f"signing:\n  private_key_file: {signing / 'strongroom-signing.key'}\n")
    made = cli(config, "backup", "--engine", "postgresql", "--json")
    assert made.returncode == 0, made.stderr
    snapshot = json.loads(made.stdout)["key"]

    values = cronjob_values(bucket, database)
    values["drills"] = {"enabled": True}
    values["restore"] = {"signing": {"publicKeySecretRef": "llama-mapper-signing-pub"},
                         "s3": {"awsAccessKeyIdSecretRef": "s3-keys", "awsSecretAccessKeySecretRef": "s3-keys"}}
    docs = render(CHART, values)
    cluster = cluster_with_secrets(signing)
    cluster.apply(docs)
    name = f"{RELEASE}-strongroom-pg-drill"
    (cron,) = [d for d in docs if d["kind"] == "CronJob" and d["metadata"]["name"] == name]
    spec = cron["spec"]["jobTemplate"]["spec"]
    pod = spec["template"]["spec"]
    # The scratch server is stood in for by PG2: drop the native sidecar, keep its socket
    # volume, mapped onto PG2's socket directory (run_job's host_volumes).
    (server,) = pod["initContainers"]
    assert server["name"] == "postgres" and server["restartPolicy"] == "Always", server
    assert {"name": "scratch-socket", "mountPath": "/var/run/postgresql"} in server["volumeMounts"], server
    pod["initContainers"] = []
    # The chart's config names the scratch server's fixed port 5432; PG2 listens on the
    # harness's port: override that one field in the rendered ConfigMap.
    cm = cluster.configmaps[name]
    agent_config = yaml.safe_load(cm["config.yaml"])
    assert agent_config["postgresql"] == {"host": "/var/run/postgresql", "port": 5432, "user": "postgres",
                                          "database": database}, agent_config
    agent_config["postgresql"]["port"] = PG2_PORT
    cm["config.yaml"] = yaml.safe_dump(agent_config)

    ok, pods = run_job(cluster, image, {"metadata": {"name": "pg-drill-now"}, "spec": spec},
                       host_volumes={"scratch-socket": PG2_SOCKET})
    log = pods[-1].containers[0].text()
    assert ok and len(pods) == 1 and pods[0].containers[0].exit_code == 0, log
    assert f"scratch drill of postgresql ({RELEASE}): PASS" in log, log

    # The report: stored under drills/postgresql/<release>/, locked, PASS, for that snapshot.
    aws = [str(ROOT / ".venv" / "bin" / "aws"), "--endpoint-url", RGW, "s3api"]
    listed = subprocess.run([*aws, "list-objects-v2", "--bucket", bucket, "--prefix",
                             f"{PREFIX}/drills/postgresql/{RELEASE}/"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    (key,) = [o["Key"] for o in json.loads(listed.stdout or "{}").get("Contents", [])]
    assert key.endswith(".json") and key in log, (key, log)
    lock = subprocess.run([*aws, "get-object-retention", "--bucket", bucket, "--key", key], capture_output=True, text=True)
    assert lock.returncode == 0 and "GOVERNANCE" in lock.stdout, lock.stdout + lock.stderr
    body = tmp_path / "drill-report.json"
    got = subprocess.run([*aws, "get-object", "--bucket", bucket, "--key", key, str(body)], capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    report = json.loads(body.read_text())
    scratch = report["target"]
    assert report["verdict"] == "PASS" and report["snapshot"] == snapshot, report
    assert scratch.startswith(f"{database}_drill_"), report
    assert owner in report["restore"]["globals"]["created_roles"], report
    assert any(c["name"] == "rows in public.storage_records" and c["passed"] and c["actual"] == "4000"
               for c in report["restore"]["checks"]), report["restore"]["checks"]

    # On PG2: the scratch database is gone, and so is the role created for it.
    assert psql("postgres", f"SELECT count(*) FROM pg_database WHERE datname LIKE '{database}\\_drill\\_%'",
                PG2_SOCKET, PG2_PORT) == "0"
    assert psql("postgres", f"SELECT count(*) FROM pg_roles WHERE rolname = '{owner}'", PG2_SOCKET, PG2_PORT) == "0"
    assert any(owner in c for c in report["cleanup"]), report["cleanup"]


def test_a_missing_secret_key_fails_like_the_kubelet(image, signing, tmp_path):
    """The CronJob's pod needs its S3 keys: a missing key fails it like the kubelet's
    CreateContainerConfigError, naming it. The sidecar's keys are optional (a missing Secret
    must not keep the database pod from starting): there the agent starts."""
    bucket = make_bucket()
    values = cronjob_values(bucket, "postgres")
    docs = render(CHART, values)
    cluster = cluster_with_secrets(signing)
    cluster.secret("s3-keys", {"AWS_ACCESS_KEY_ID": "only-the-id"})
    cluster.apply(docs)
    (cron,) = [d for d in docs if d["kind"] == "CronJob"]
    with pytest.raises(CreateContainerConfigError) as failure:
        run_job(cluster, image, {"metadata": {"name": "no-key"}, "spec": cron["spec"]["jobTemplate"]["spec"]})
    assert "couldn't find key AWS_SECRET_ACCESS_KEY in Secret prod/s3-keys" in str(failure.value)

    docs = render(app_chart(tmp_path), sidecar_values(bucket, "postgres", free_port()))
    cluster.apply(docs)
    sts = statefulset(docs, "postgresql")
    pod = Pod(cluster, image, "llama-mapper-postgresql-0", sts["spec"]["template"]["spec"],
              host_volumes={"postgresql-socket": PG_SOCKET}).start()
    try:
        pod.wait_until(lambda: pod.containers[0].running(), 10, "the agent running")
    finally:
        pod.delete()


def test_the_agent_needs_no_writable_path_but_its_volumes(image, signing, tmp_path):
    """A read-only root filesystem and no /tmp volume at all: a backup still completes."""
    database = f"pods_ro_{uuid.uuid4().hex[:6]}"
    psql("postgres", f"CREATE DATABASE {database}")
    psql(database, "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    bucket = make_bucket()
    values = cronjob_values(bucket, database)
    docs = render(CHART, values)
    cluster = cluster_with_secrets(signing)
    cluster.apply(docs)
    (cron,) = [d for d in docs if d["kind"] == "CronJob"]
    spec = cron["spec"]["jobTemplate"]["spec"]
    pod = spec["template"]["spec"]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "strongroom-tmp"]
    c = pod["containers"][0]
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != "strongroom-tmp"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    ok, pods = run_job(cluster, image, {"metadata": {"name": "ro-backup"}, "spec": spec})
    assert ok and len(pods) == 1, pods[-1].logs()
    assert complete_backups(host_config(tmp_path, bucket, database))


def clickhouse_sql(query):
    url = env("STRONGROOM_TEST_CLICKHOUSE_URL")
    password = pathlib.Path(env("STRONGROOM_TEST_CLICKHOUSE_PASSWORD_FILE")).read_text().strip()
    done = subprocess.run(["curl", "-sS", "--fail-with-body", "-u", f"{env('STRONGROOM_TEST_CLICKHOUSE_USER')}:{password}",
                           "--data-binary", query, url + "/"], capture_output=True, text=True)
    assert done.returncode == 0, f"{query}: {done.stdout}{done.stderr}"
    return done.stdout.strip()


def test_sidecar_next_to_clickhouse(image, signing, tmp_path):
    """The native sidecar (initContainers, restartPolicy Always) next to ClickHouse: the chdb
    front end on the pod's 127.0.0.1 stands in for the clickhouse container."""
    bucket = make_bucket()
    db = f"pods_ch_{uuid.uuid4().hex[:6]}"
    collection = f"nc_{db}"
    clickhouse_sql(f"CREATE NAMED COLLECTION {collection} AS url = '{RGW}/{bucket}/', "
                   f"access_key_id = '{os.environ['AWS_ACCESS_KEY_ID']}', secret_access_key = '{os.environ['AWS_SECRET_ACCESS_KEY']}'")
    clickhouse_sql(f"CREATE DATABASE {db}")
    clickhouse_sql(f"CREATE TABLE {db}.storage_records (id UInt64, body String) ENGINE = MergeTree ORDER BY id")
    clickhouse_sql(f"INSERT INTO {db}.storage_records SELECT number, toString(number) FROM numbers(5000)")
    port = free_port()
    ch_port = int(env("STRONGROOM_TEST_CLICKHOUSE_URL").rsplit(":", 1)[1])
    values = {
        "backups": {
            "enabled": True,
            "s3": {"bucket": bucket, "prefix": PREFIX, "endpoint": RGW, "forcePathStyle": True,
                   "awsAccessKeyIdSecretRef": "s3-keys", "awsSecretAccessKeySecretRef": "s3-keys"},
            "postgresql": {"enabled": False},
            "clickhouse": {"enabled": True, "mode": "sidecar", "passwordSecretRef": "ch-backup",
                           "user": env("STRONGROOM_TEST_CLICKHOUSE_USER"), "port": ch_port, "databases": [db],
                           "namedCollection": collection, "schedule": "* * * * *",
                           "extraConfig": {"poll_interval_ms": 200}, "sidecar": {"irsaSkipContainers": []}},
            "signing": {"privateKeySecretRef": "llama-mapper-signing"},
            "daemon": {"port": port, "shutdownGraceSeconds": 5},
            "log": {"format": "text"},
        },
    }
    docs = render(app_chart(tmp_path), values)
    cluster = cluster_with_secrets(signing)
    cluster.secret("ch-backup", {"password": pathlib.Path(env("STRONGROOM_TEST_CLICKHOUSE_PASSWORD_FILE")).read_bytes()})
    cluster.apply(docs)
    sts = statefulset(docs, "clickhouse")
    assert sts["spec"]["template"]["spec"]["initContainers"][0]["restartPolicy"] == "Always"
    pod = Pod(cluster, image, "llama-mapper-clickhouse-0", sts["spec"]["template"]["spec"]).start()
    try:
        pod.wait_until(pod.ready, 60, "Ready")
        config = host_config(tmp_path, bucket, "postgres")
        deadline = time.monotonic() + 150
        while True:
            done = cli(config, "list", "--engine", "clickhouse", "--json")
            assert done.returncode == 0, done.stderr
            complete = [b for b in json.loads(done.stdout) if b["complete"]]
            if complete:
                break
            assert time.monotonic() < deadline, f"no scheduled ClickHouse backup within 150 s\n{pod.logs()}"
            time.sleep(3)
        verify_config = tmp_path / "ch-verify.yaml"
        verify_config.write_text(config.read_text() + f"signing:\n  public_key_file: {signing / 'strongroom-signing.pub'}\n")
        verified = cli(verify_config, "verify", "--engine", "clickhouse", "--snapshot", complete[0]["key"])
        assert verified.returncode == 0 and "verified" in verified.stdout, verified.stdout + verified.stderr
    finally:
        codes = pod.delete()
        clickhouse_sql(f"DROP DATABASE IF EXISTS {db} SYNC")
    assert codes == {"strongroom": 0}, (codes, pod.logs())
