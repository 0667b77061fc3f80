"""The test kubelet's own behaviour, checked against what the kubelet does, without running a
container: the atomic writer's layout and updates, env and volume errors, and the OCI runtime
spec a container spec becomes."""
import os
import time
import pathlib

import pytest

from kubelet import AtomicDir, Cluster, Container, CreateContainerConfigError, Pod


class FakeImage:
    rootfs = pathlib.Path("/nonexistent-rootfs")
    config = {"User": "65532:65532", "Entrypoint": ["/usr/local/bin/strongroom"], "Cmd": ["--help"],
              "Env": ["PATH=/usr/bin", "TMPDIR=/tmp"]}


def test_the_atomic_writer_layout_and_update(tmp_path):
    volume = AtomicDir(tmp_path / "v", gid=1234)
    volume.write({"config.yaml": (b"a: 1\n", 0o440), "other": (b"x", 0o444)})
    data = tmp_path / "v" / "..data"
    assert data.is_symlink() and os.readlink(data).startswith("..")
    assert os.readlink(tmp_path / "v" / "config.yaml") == "..data/config.yaml"
    target = tmp_path / "v" / os.readlink(data) / "config.yaml"
    assert target.stat().st_mode & 0o777 == 0o440 and target.stat().st_gid == 1234
    first = os.readlink(data)
    volume.write({"config.yaml": (b"a: 2\n", 0o440)})
    assert os.readlink(data) != first and not (tmp_path / "v" / first).exists()
    assert (tmp_path / "v" / "config.yaml").read_text() == "a: 2\n"
    assert not (tmp_path / "v" / "other").exists(), "a key gone from the ConfigMap is gone from the volume"


def test_missing_secrets_fail_like_create_container_config_error(tmp_path):
    cluster = Cluster("prod")
    cluster.secret("s", {"a": "1"})
    spec = {"containers": [{"name": "strongroom", "image": "strongroom",
                            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "b"}}}]}]}
    pod = Pod(cluster, FakeImage(), "p", spec)
    with pytest.raises(CreateContainerConfigError, match="couldn't find key b in Secret prod/s"):
        Container(pod, spec["containers"][0])._env()
    spec["volumes"] = [{"name": "v", "projected": {"sources": [{"secret": {"name": "absent"}}]}}]
    with pytest.raises(CreateContainerConfigError, match='secret "absent" not found'):
        Pod(cluster, FakeImage(), "p", spec)._prepare_volumes()
    spec["volumes"] = [{"name": "v", "projected": {"sources": [{"secret": {"name": "absent", "optional": True}}]}}]
    Pod(cluster, FakeImage(), "p", spec)._prepare_volumes()


def test_the_runtime_spec_follows_the_container_spec(tmp_path):
    spec = {
        "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532},
        "volumes": [{"name": "sock", "emptyDir": {}}],
        "containers": [{
            "name": "strongroom", "image": "ghcr.io/strongroom/strongroom:0.1.0", "args": ["run"],
            "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "sock", "mountPath": "/var/run/postgresql", "subPath": "tmp-dir", "readOnly": True}],
        }],
    }
    pod = Pod(Cluster(), FakeImage(), "db-0", spec)
    pod._prepare_volumes()
    oci = Container(pod, spec["containers"][0]).runtime_spec()
    assert oci["process"]["args"] == ["/usr/local/bin/strongroom", "run"]
    assert oci["process"]["user"] == {"uid": 65532, "gid": 65532, "additionalGids": [65532]}
    assert "POD=db-0" in oci["process"]["env"] and "TMPDIR=/tmp" in oci["process"]["env"]
    assert oci["root"]["readonly"] is True and oci["process"]["noNewPrivileges"] is True
    assert all(caps == [] for caps in oci["process"]["capabilities"].values())
    mount = next(m for m in oci["mounts"] if m["destination"] == "/var/run/postgresql")
    assert mount["source"].endswith("/sock/tmp-dir") and "ro" in mount["options"]


# --- with the real image and crun (make e2e builds the image first) -------------------------

from kubelet import Image, run_job  # noqa: E402


def agent(**extra):
    return {"name": "strongroom", "image": "ghcr.io/strongroom/strongroom:0.1.0",
            "securityContext": {"readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}, **extra}


def test_backoff_limit_retries_a_failing_job_and_the_deadline_stops_a_long_one():
    image = Image()
    failing = {"metadata": {"name": "fails"}, "spec": {"backoffLimit": 2, "template": {"spec": {
        "restartPolicy": "Never", "containers": [agent(args=["--no-such-flag"])]}}}}
    ok, pods = run_job(Cluster(), image, failing)
    assert not ok and len(pods) == 3, "backoffLimit 2: three attempts"
    assert all(p.containers[0].exit_code == 64 for p in pods)
    slow = {"metadata": {"name": "slow"}, "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 2, "template": {"spec": {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "containers": [agent(command=["sleep"], args=["60"])]}}}}
    started = time.monotonic()
    ok, pods = run_job(Cluster(), image, slow)
    assert not ok and time.monotonic() - started < 20, "the deadline stopped it"


def test_a_failing_startup_probe_restarts_and_a_failing_readiness_probe_keeps_the_pod_unready():
    image = Image()
    never = {"httpGet": {"path": "/healthz", "port": 1}, "periodSeconds": 1, "failureThreshold": 2}
    spec = {"terminationGracePeriodSeconds": 1,
            "containers": [agent(command=["sleep"], args=["600"], startupProbe=never)]}
    pod = Pod(Cluster(), image, "startup", spec).start()
    try:
        pod.wait_until(lambda: pod.containers[0].restarts >= 1, 30, "a restart after the startup probe failed")
        assert not pod.ready()
    finally:
        pod.delete()
    spec = {"terminationGracePeriodSeconds": 1,
            "containers": [agent(command=["sleep"], args=["600"], readinessProbe=never)]}
    pod = Pod(Cluster(), image, "unready", spec).start()
    try:
        time.sleep(4)
        assert not pod.ready() and pod.containers[0].restarts == 0, "readiness never restarts"
    finally:
        codes = pod.delete()
    assert codes["strongroom"] is not None
