"""A small kubelet for the tests: runs the pods the chart renders, agent containers and all, from
the image `make image` built (target/image/oci), with crun (Debian's OCI runtime), honouring
what a kubelet honours:

- command and args over the image's entrypoint and cmd; env `value`, `secretKeyRef`,
  `configMapKeyRef`, `fieldRef` (metadata.name, metadata.namespace) over the image's env; a
  missing Secret or key fails like the kubelet's CreateContainerConfigError, naming it;
- volumes: `emptyDir` (a tmpfs of `sizeLimit`), `configMap`, `secret` and `projected` laid out
  as the kubelet's atomic writer does (a `..<timestamp>` directory, the `..data` symlink, one
  symlink per key, `defaultMode`/`mode`, `items`, `optional`, group `fsGroup`), updated
  atomically by swapping `..data`; `volumeMounts` with `readOnly` and `subPath`;
- the security context: user, group, `fsGroup` as a supplementary group,
  `readOnlyRootFilesystem`, capabilities (drop ALL leaves none), `allowPrivilegeEscalation:
  false` as no_new_privileges;
- startup, liveness and readiness probes (httpGet) with their periods, timeouts and thresholds,
  a failed liveness or startup probe restarting the container, and the pod's Ready condition;
- deletion: SIGTERM, then SIGKILL after `terminationGracePeriodSeconds`;
- Jobs: run to completion, `backoffLimit` retries, `activeDeadlineSeconds`.

What stands in for a cluster: there is no API server, scheduler or CNI. Pods share the host's
network namespace (a pod's 127.0.0.1 is the machine's, where the harness's servers listen);
seccomp RuntimeDefault is not applied (crun's default: none); no cgroups (CPU and memory limits
are not enforced; see CRUN below). Only the containers whose image
is the agent's run; the database containers of a rendered pod are stood in for by the
harness's real servers, and a pod volume can be mapped onto a host directory (the PostgreSQL
socket's emptyDir onto the harness server's socket directory).
"""
from __future__ import annotations

import atexit
import copy
import datetime
import gzip
import hashlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAYOUT = ROOT / "target" / "image" / "oci"
# No cgroups: this machine's hierarchy is hybrid (v1 controllers, and hugetlb on the unified
# v2 mount), which crun refuses ("cgroups in hybrid mode not supported"), and nothing here needs
# limits enforced (an emptyDir's sizeLimit is its tmpfs size). So crun runs in a private mount
# namespace without the unified mount, with its cgroup manager disabled.
CRUN = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
        'umount /sys/fs/cgroup/unified 2>/dev/null; exec crun --cgroup-manager=disabled "$@"', "crun"]


class CreateContainerConfigError(Exception):
    """What the kubelet reports when a container's env or volumes name a missing Secret/key."""


class Image:
    """The agent's image, unpacked once: its root filesystem and its config."""

    def __init__(self, layout: pathlib.Path = LAYOUT, cache: pathlib.Path | None = None):
        index = json.loads((layout / "index.json").read_text())
        manifest = json.loads(self._blob(layout, index["manifests"][0]["digest"]))
        self.config = json.loads(self._blob(layout, manifest["config"]["digest"]))["config"]
        digest = manifest["layers"][0]["digest"].split(":")[1]
        cache = cache or pathlib.Path(tempfile.gettempdir()) / "strongroom-image-rootfs"
        self.rootfs = cache / digest[:16]
        for old in cache.glob("*") if cache.exists() else []:
            if old != self.rootfs:  # the unpacked rootfs of earlier builds
                shutil.rmtree(old, ignore_errors=True)
        if not (self.rootfs / ".unpacked").exists():
            shutil.rmtree(self.rootfs, ignore_errors=True)
            self.rootfs.mkdir(parents=True)
            for layer in manifest["layers"]:
                data = gzip.decompress(self._blob(layout, layer["digest"]))
                with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                    # The image's own modes (sticky /tmp, setuid) as they are; Pythons
                    # before 3.11.4 have no extraction filters and keep them anyway.
                    trusted = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
                    tar.extractall(self.rootfs, numeric_owner=True, **trusted)
            (self.rootfs / ".unpacked").touch()

    @staticmethod
    def _blob(layout, digest):
        algorithm, value = digest.split(":")
        return (layout / "blobs" / algorithm / value).read_bytes()


class Cluster:
    """The objects pods refer to: Secrets (test-made) and ConfigMaps (rendered)."""

    def __init__(self, namespace="prod"):
        self.namespace = namespace
        self.secrets: dict[str, dict[str, bytes]] = {}
        self.configmaps: dict[str, dict[str, str]] = {}

    def apply(self, docs):
        for d in docs:
            if d["kind"] == "ConfigMap":
                self.configmaps[d["metadata"]["name"]] = dict(d.get("data", {}))
            elif d["kind"] == "Secret":
                self.secrets[d["metadata"]["name"]] = {k: v.encode() for k, v in d.get("stringData", {}).items()}

    def secret(self, name, values):
        self.secrets[name] = {k: v if isinstance(v, bytes) else v.encode() for k, v in values.items()}


def _now_dir():
    return "..{}".format(datetime.datetime.now().strftime("%Y_%m_%d_%H_%M_%S.%f"))


class AtomicDir:
    """A configMap/secret/projected volume as the kubelet writes it (pkg/volume/util/atomic_writer.go)."""

    def __init__(self, path: pathlib.Path, gid: int | None):
        self.path, self.gid = path, gid
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o755)

    def write(self, files: dict[str, tuple[bytes, int]]):
        """files: relative path -> (content, mode). Swaps ..data atomically."""
        ts = self.path / _now_dir()
        ts.mkdir()
        for rel, (content, mode) in files.items():
            target = ts / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            os.chmod(target, mode)
            if self.gid is not None:
                os.chown(target, 0, self.gid)
        os.chmod(ts, 0o755)
        data = self.path / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        tmp = self.path / "..data_tmp"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(ts.name, tmp)
        os.rename(tmp, data)
        for rel in {r.split("/")[0] for r in files}:
            link = self.path / rel
            if not link.is_symlink():
                os.symlink(f"..data/{rel}", link)
        for entry in self.path.iterdir():
            if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in {r.split("/")[0] for r in files}:
                entry.unlink()
        if old:
            shutil.rmtree(self.path / old, ignore_errors=True)


class Container:
    """One container of a pod, run by crun."""

    def __init__(self, pod: "Pod", spec: dict, init_sidecar=False):
        self.pod, self.spec, self.init_sidecar = pod, spec, init_sidecar
        self.name = spec["name"]
        self.id = f"{pod.uid}-{self.name}"
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self.started = False
        self.ready = False
        self.exit_code: int | None = None
        self.log = pod.dir / f"{self.name}.log"
        self.bundle = pod.dir / "bundles" / self.name

    # --- the OCI runtime spec ---------------------------------------------------------------

    def _security(self):
        pod_sc = self.pod.spec.get("securityContext") or {}
        sc = {**{k: pod_sc[k] for k in ("runAsUser", "runAsGroup", "runAsNonRoot") if k in pod_sc},
              **(self.spec.get("securityContext") or {})}
        return pod_sc, sc

    def _env(self):
        env = {"HOSTNAME": self.pod.name}
        for item in self.pod.image.config.get("Env", []):
            k, v = item.split("=", 1)
            env[k] = v
        for e in self.spec.get("env") or []:
            if "value" in e:
                env[e["name"]] = str(e["value"])
                continue
            src = e.get("valueFrom", {})
            if "secretKeyRef" in src:
                ref = src["secretKeyRef"]
                secret = self.pod.cluster.secrets.get(ref["name"])
                if (secret is None or ref["key"] not in secret) and ref.get("optional"):
                    continue
                if secret is None:
                    raise CreateContainerConfigError(f'secret "{ref["name"]}" not found')
                if ref["key"] not in secret:
                    raise CreateContainerConfigError(
                        f"couldn't find key {ref['key']} in Secret {self.pod.namespace}/{ref['name']}")
                env[e["name"]] = secret[ref["key"]].decode()
            elif "configMapKeyRef" in src:
                ref = src["configMapKeyRef"]
                cm = self.pod.cluster.configmaps.get(ref["name"])
                if cm is None or ref["key"] not in cm:
                    raise CreateContainerConfigError(f'configmap "{ref["name"]}" (key {ref["key"]}) not found')
                env[e["name"]] = cm[ref["key"]]
            elif "fieldRef" in src:
                env[e["name"]] = {"metadata.name": self.pod.name, "metadata.namespace": self.pod.namespace}[
                    src["fieldRef"]["fieldPath"]]
        return env

    def _mounts(self):
        mounts = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            # The kubelet gives every container /etc/hosts, /etc/hostname and /etc/resolv.conf.
            {"destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts", "options": ["rbind", "ro"]},
            {"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf", "options": ["rbind", "ro"]},
        ]
        for m in self.spec.get("volumeMounts") or []:
            source = self.pod.volume_path(m["name"])
            if m.get("subPath"):
                source = source / m["subPath"]
                source.mkdir(parents=True, exist_ok=True)
            options = ["rbind", "ro" if m.get("readOnly") else "rw"]
            mounts.append({"destination": m["mountPath"], "type": "bind", "source": str(source), "options": options})
        return mounts

    def runtime_spec(self):
        pod_sc, sc = self._security()
        image = self.pod.image.config
        entrypoint = self.spec.get("command") or image.get("Entrypoint") or []
        if "args" in self.spec or "command" in self.spec:
            args = self.spec.get("args") or []
        else:
            args = image.get("Cmd") or []
        uid = int(sc.get("runAsUser", int(image.get("User", "0:0").split(":")[0])))
        gid = int(sc.get("runAsGroup", int(image.get("User", "0:0").split(":")[1])))
        if sc.get("runAsNonRoot") and uid == 0:
            raise CreateContainerConfigError("container has runAsNonRoot and image will run as root")
        groups = [int(pod_sc["fsGroup"])] if "fsGroup" in pod_sc else []
        default_caps = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                        "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                        "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
        drop = (sc.get("capabilities") or {}).get("drop") or []
        caps = [] if "ALL" in drop else [c for c in default_caps if c[4:] not in drop]
        caps += [f"CAP_{c}" for c in (sc.get("capabilities") or {}).get("add") or []]
        env = self._env()
        return {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": {"uid": uid, "gid": gid, "additionalGids": groups},
                "args": list(entrypoint) + list(args),
                "env": [f"{k}={v}" for k, v in env.items()],
                "cwd": image.get("WorkingDir") or "/",
                "capabilities": {k: caps for k in ("bounding", "effective", "permitted", "inheritable")},
                "noNewPrivileges": sc.get("allowPrivilegeEscalation") is False,
            },
            "root": {"path": str(self.pod.image.rootfs), "readonly": bool(sc.get("readOnlyRootFilesystem"))},
            "hostname": self.pod.name,
            "mounts": self._mounts(),
            "linux": {
                # No network namespace: the pod's 127.0.0.1 is the machine's (see the module doc).
                "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            },
        }

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self):
        if not self.pod.image.rootfs.exists():
            raise RuntimeError("the image is not unpacked")
        if not (self.spec["image"].split("@")[0].split(":")[0].endswith("strongroom")):
            raise RuntimeError(f"{self.name}: only the agent's image runs here, not {self.spec['image']}")
        self.bundle.mkdir(parents=True, exist_ok=True)
        (self.bundle / "config.json").write_text(json.dumps(self.runtime_spec(), indent=1))
        subprocess.run([*CRUN, "delete", "-f", self.id], capture_output=True)
        log = open(self.log, "ab")
        self.process = subprocess.Popen([*CRUN, "run", "--bundle", str(self.bundle), self.id],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.started_at = time.monotonic()
        self.started = False
        self.ready = False
        self.exit_code = None

    def running(self):
        return self.process is not None and self.process.poll() is None

    def signal(self, name):
        subprocess.run([*CRUN, "kill", self.id, name], capture_output=True)

    def wait(self, timeout=None):
        assert self.process is not None
        try:
            self.exit_code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        subprocess.run([*CRUN, "delete", "-f", self.id], capture_output=True)
        return self.exit_code

    def stop(self, grace: float):
        """SIGTERM, then SIGKILL after `grace` seconds, as the kubelet does on deletion."""
        if not self.running():
            return self.wait(0) if self.process else None
        self.signal("TERM")
        code = self.wait(grace)
        if code is None:
            self.signal("KILL")
            code = self.wait(30)
        return code

    def text(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def port(self, port):
        if isinstance(port, int):
            return port
        for p in self.spec.get("ports") or []:
            if p.get("name") == port:
                return p["containerPort"]
        raise RuntimeError(f"{self.name}: probe port {port!r} is not a named port of the container")

    def probe(self, probe):
        get = probe["httpGet"]
        url = f"http://127.0.0.1:{self.port(get['port'])}{get.get('path', '/')}"
        try:
            with urllib.request.urlopen(url, timeout=probe.get("timeoutSeconds", 1)) as r:
                return 200 <= r.status < 400
        except (urllib.error.URLError, OSError, ValueError):
            return False


class Pod:
    """A pod: volumes on the host, its agent containers in crun, probes in a thread."""

    def __init__(self, cluster: Cluster, image: Image, name: str, spec: dict, host_volumes=None, namespace=None):
        self.cluster, self.image, self.name, self.spec = cluster, image, name, copy.deepcopy(spec)
        self.namespace = namespace or cluster.namespace
        self.uid = f"{name}-{hashlib.sha1(os.urandom(8)).hexdigest()[:6]}"
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix=f"pod-{name}-"))
        self.host_volumes = host_volumes or {}
        self.volumes: dict[str, pathlib.Path] = {}
        self.tmpfs: list[pathlib.Path] = []
        self.containers: list[Container] = []
        self.ready_history: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._deleting = False
        self._prober: threading.Thread | None = None
        self.fs_group = (self.spec.get("securityContext") or {}).get("fsGroup")

    # --- volumes ---------------------------------------------------------------------------------

    def volume_path(self, name):
        if name not in self.volumes:
            raise RuntimeError(f"volumeMount {name!r} names no volume of pod {self.name}")
        return self.volumes[name]

    def _volume_files(self, volume):
        """The files of a configMap/secret/projected volume: path -> (bytes, mode)."""
        sources = []
        if "configMap" in volume:
            default_mode = volume["configMap"].get("defaultMode", 0o644)
            sources = [("configMap", volume["configMap"])]
        elif "secret" in volume:
            default_mode = volume["secret"].get("defaultMode", 0o644)
            sources = [("secret", {**volume["secret"], "name": volume["secret"]["secretName"]})]
        elif "projected" in volume:
            default_mode = volume["projected"].get("defaultMode", 0o644)
            sources = [(k, s[k]) for s in volume["projected"]["sources"] for k in s]
        files = {}
        for kind, src in sources:
            store = self.cluster.configmaps if kind == "configMap" else self.cluster.secrets
            data = store.get(src["name"])
            if data is None:
                if src.get("optional"):
                    continue
                raise CreateContainerConfigError(
                    f'MountVolume.SetUp failed for volume "{volume["name"]}": {kind.lower()} "{src["name"]}" not found')
            items = src.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                if item["key"] not in data:
                    if src.get("optional"):
                        continue
                    raise CreateContainerConfigError(
                        f'MountVolume.SetUp failed for volume "{volume["name"]}": couldn\'t find key {item["key"]} '
                        f'in {kind} {self.namespace}/{src["name"]}')
                value = data[item["key"]]
                files[item["path"]] = (value if isinstance(value, bytes) else value.encode(),
                                       item.get("mode", default_mode))
        return files

    def _prepare_volumes(self):
        for volume in self.spec.get("volumes") or []:
            name = volume["name"]
            if name in self.host_volumes:
                self.volumes[name] = pathlib.Path(self.host_volumes[name])
                continue
            path = self.dir / "volumes" / name
            path.mkdir(parents=True)
            if "emptyDir" in volume:
                size = (volume["emptyDir"] or {}).get("sizeLimit")
                if size:
                    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size.replace('i', '')},mode=0777", "tmpfs", str(path)],
                                   check=True)
                    self.tmpfs.append(path)
                os.chmod(path, 0o777)
                if self.fs_group is not None:
                    os.chown(path, 0, self.fs_group)
            else:
                AtomicDir(path, self.fs_group).write(self._volume_files(volume))
            self.volumes[name] = path

    def update_configmap(self, name, data):
        """A ConfigMap changed: rewrite every volume of it as the kubelet's sync does (atomically)."""
        self.cluster.configmaps[name] = dict(data)
        for volume in self.spec.get("volumes") or []:
            if volume.get("configMap", {}).get("name") == name:
                AtomicDir(self.volumes[volume["name"]], self.fs_group).write(self._volume_files(volume))

    # --- lifecycle -------------------------------------------------------------------------------

    def agent_specs(self):
        inits = [(c, True) for c in self.spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
        mains = [(c, False) for c in self.spec.get("containers") or []]
        return [(c, init) for c, init in inits + mains if "strongroom" in c["image"]]

    def start(self):
        _RUNNING.append(self)
        try:
            self._prepare_volumes()
            for spec, init in self.agent_specs():
                c = Container(self, spec, init)
                c._env()  # fails now, before anything runs, like CreateContainerConfigError
                self.containers.append(c)
        except Exception:
            self._cleanup()
            raise
        for c in self.containers:
            c.start()
        self._prober = threading.Thread(target=self._probe_loop, daemon=True)
        self._prober.start()
        return self

    def _probe_loop(self):
        state = {c.name: {"startup_fail": 0, "live_fail": 0, "ready_fail": 0, "ready_ok": 0, "next": {}} for c in self.containers}
        while not self._stop.is_set():
            now = time.monotonic()
            for c in self.containers:
                s = state[c.name]
                if not c.running():
                    if c.ready:
                        c.ready = False
                    if (c.process is not None and self.spec.get("restartPolicy", "Always") == "Always"
                            and not self._stop.is_set() and not self._deleting):
                        c.wait(0)
                        c.restarts += 1
                        c.start()
                        s.update(startup_fail=0, live_fail=0, ready_fail=0, ready_ok=0, next={})
                    continue
                for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                    probe = c.spec.get(kind)
                    if kind == "startupProbe" and (c.started or not probe):
                        c.started = True
                        continue
                    if kind != "startupProbe" and not c.started:
                        continue
                    if not probe:
                        if kind == "readinessProbe":
                            c.ready = True
                        continue
                    due = s["next"].get(kind, c.started_at + probe.get("initialDelaySeconds", 0))
                    if now < due:
                        continue
                    s["next"][kind] = now + probe.get("periodSeconds", 10)
                    ok = c.probe(probe)
                    threshold = probe.get("failureThreshold", 3)
                    if kind == "startupProbe":
                        if ok:
                            c.started = True
                        else:
                            s["startup_fail"] += 1
                            if s["startup_fail"] >= threshold:
                                self._kill_for_restart(c, s)
                    elif kind == "livenessProbe":
                        s["live_fail"] = 0 if ok else s["live_fail"] + 1
                        if s["live_fail"] >= threshold:
                            self._kill_for_restart(c, s)
                    else:
                        if ok:
                            s["ready_ok"] += 1
                            s["ready_fail"] = 0
                            if s["ready_ok"] >= probe.get("successThreshold", 1):
                                c.ready = True
                        else:
                            s["ready_ok"] = 0
                            s["ready_fail"] += 1
                            if s["ready_fail"] >= threshold:
                                c.ready = False
            ready = self.ready()
            if not self.ready_history or self.ready_history[-1][1] != ready:
                self.ready_history.append((time.monotonic(), ready))
            self._stop.wait(0.2)

    def _kill_for_restart(self, c, s):
        """A failed liveness or startup probe: the kubelet stops the container with the pod's
        grace period (SIGTERM, then SIGKILL); the loop then restarts it."""
        s.update(startup_fail=0, live_fail=0, next={k: float("inf") for k in s["next"]} | {
            "startupProbe": float("inf"), "livenessProbe": float("inf"), "readinessProbe": float("inf")})
        c.ready = False
        threading.Thread(target=c.signal, args=("TERM",), daemon=True).start()
        grace = self.spec.get("terminationGracePeriodSeconds", 30)
        threading.Timer(grace, lambda: c.running() and c.signal("KILL")).start()

    def ready(self):
        return bool(self.containers) and all(c.ready for c in self.containers)

    def wait_until(self, condition, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.2)
        raise AssertionError(f"pod {self.name}: {what} did not happen within {timeout} s\n{self.logs()}")

    def delete(self):
        """SIGTERM every container, SIGKILL after terminationGracePeriodSeconds; return exit codes."""
        self._deleting = True
        self._stop.set()
        if self._prober is not None:
            self._prober.join()
        grace = self.spec.get("terminationGracePeriodSeconds", 30)
        codes = {}
        threads = []
        for c in self.containers:
            t = threading.Thread(target=lambda c=c: codes.__setitem__(c.name, c.stop(grace)))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        self._cleanup()
        return codes

    def _cleanup(self):
        for path in self.tmpfs:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        self.tmpfs = []

    def logs(self):
        return "\n".join(f"--- {c.name} (restarts {c.restarts}) ---\n{c.text()[-6000:]}" for c in self.containers)


_RUNNING: list[Pod] = []


@atexit.register
def _stop_everything():
    """A test that failed half-way leaves no container running, no tmpfs mounted and no pod
    directory behind."""
    for pod in _RUNNING:
        pod._stop.set()
        for c in pod.containers:
            if c.running():
                c.signal("KILL")
                c.wait(10)
        pod._cleanup()
        shutil.rmtree(pod.dir, ignore_errors=True)



def run_job(cluster: Cluster, image: Image, job: dict, host_volumes=None):
    """A Job: its pod to completion, `backoffLimit` retries, `activeDeadlineSeconds`.
    Returns (succeeded, [pods])."""
    spec = job["spec"]
    backoff = spec.get("backoffLimit", 6)
    deadline = time.monotonic() + spec.get("activeDeadlineSeconds", 10**9)
    pods = []
    for attempt in range(backoff + 1):
        pod = Pod(cluster, image, f"{job['metadata']['name']}-{attempt}", spec["template"]["spec"], host_volumes)
        pods.append(pod)
        pod.start()
        (c,) = pod.containers
        remaining = deadline - time.monotonic()
        code = c.wait(max(remaining, 0))
        if code is None:  # DeadlineExceeded
            pod.delete()
            return False, pods
        pod._stop.set()
        pod._cleanup()
        if code == 0:
            return True, pods
    return False, pods
