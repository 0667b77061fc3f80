"""The OCI image `make image` built (target/image/oci): its config is the one image/image.env
describes (user, entrypoint, environment, labels), its filesystem holds what the agent needs
(the binary, pg_dump and psql of PG_MAJOR, CA certificates) and nothing it does not (package
manager caches and lists), its compressed size is under 60 MB, and the Dockerfile reads the
same settings, so the two cannot drift.

Run by `make image-check`."""
import gzip
import hashlib
import json
import pathlib
import re
import shlex
import subprocess
import tarfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAYOUT = ROOT / "target" / "image" / "oci"
ARCHIVE = ROOT / "target" / "image" / "strongroom.oci.tar"
MAX_COMPRESSED = 60 * 1000 * 1000


def settings():
    """image/image.env as the shell reads it."""
    out = subprocess.run(["bash", "-c", f"set -a; . {shlex.quote(str(ROOT / 'image' / 'image.env'))}; env -0"],
                         capture_output=True, check=True).stdout.decode()
    return dict(line.split("=", 1) for line in out.split("\0") if "=" in line)


def blob(digest):
    algorithm, value = digest.split(":")
    path = LAYOUT / "blobs" / algorithm / value
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == value, f"blob {digest} does not match its digest"
    return data


@pytest.fixture(scope="module")
def image():
    index = json.loads((LAYOUT / "index.json").read_text())
    (entry,) = index["manifests"]
    manifest = json.loads(blob(entry["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    layers = manifest["layers"]
    return entry, manifest, config, layers


@pytest.fixture(scope="module")
def files(image):
    _, _, _, layers = image
    names = {}
    for layer in layers:
        with tarfile.open(fileobj=__import__("io").BytesIO(gzip.decompress(blob(layer["digest"])))) as tar:
            for member in tar.getmembers():
                names[member.name.lstrip("./")] = member
    return names


def test_the_config_is_image_env(image):
    s = settings()
    entry, _, config, _ = image
    c = config["config"]
    assert c["User"] == f"{s['IMAGE_USER']}:{s['IMAGE_GROUP']}"
    assert c["Entrypoint"] == [s["IMAGE_ENTRYPOINT"]]
    assert c["Cmd"] == [s["IMAGE_CMD"]]
    assert f"PATH={s['IMAGE_PATH']}" in c["Env"] and "TMPDIR=/tmp" in c["Env"]
    labels = c["Labels"]
    assert labels["org.opencontainers.image.title"] == s["IMAGE_TITLE"]
    assert labels["org.opencontainers.image.licenses"] == s["IMAGE_LICENSES"]
    cargo = (ROOT / "agent" / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    assert labels["org.opencontainers.image.version"] == version
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == version
    assert config["os"] == "linux" and config["architecture"] == "amd64"


def test_the_filesystem_holds_the_agent_and_the_postgresql_client(files):
    s = settings()
    major = s["PG_MAJOR"]
    for path in (s["IMAGE_ENTRYPOINT"].lstrip("/"), f"usr/lib/postgresql/{major}/bin/pg_dump",
                 f"usr/lib/postgresql/{major}/bin/psql", "etc/ssl/certs/ca-certificates.crt"):
        assert path in files, f"{path} is not in the image"
    agent = files[s["IMAGE_ENTRYPOINT"].lstrip("/")]
    assert agent.mode & 0o111, "the agent is not executable"
    assert files["tmp"].mode & 0o1777 == 0o1777
    # No device nodes and no build host's name or resolver: the runtime provides those.
    assert not [n for n in files if n.startswith("dev/") and files[n].isdev()]
    for host_file in ("etc/hostname", "etc/resolv.conf"):
        assert host_file not in files or files[host_file].size == 0, host_file


def test_the_nonroot_user_exists(image):
    _, _, _, layers = image
    s = settings()
    passwd = None
    for layer in layers:
        with tarfile.open(fileobj=__import__("io").BytesIO(gzip.decompress(blob(layer["digest"])))) as tar:
            for member in tar.getmembers():
                if member.name.lstrip("./") == "etc/passwd":
                    passwd = tar.extractfile(member).read().decode()
    assert f"nonroot:x:{s['IMAGE_USER']}:{s['IMAGE_GROUP']}:" in passwd, passwd
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"nonroot:x:{s['IMAGE_USER']}:{s['IMAGE_GROUP']}:" in dockerfile


def test_no_package_manager_caches(files):
    leftovers = [n for n in files if re.match(r"var/cache/apt/.+|var/lib/apt/lists/.+\w", n)
                 and not n.endswith(("lock", "partial", "partial/"))]
    assert not [n for n in leftovers if n.endswith(".deb") or "_Packages" in n or "_InRelease" in n], leftovers
    assert not [n for n in files if n.startswith("usr/share/man/") and not n.endswith("/")]


def test_the_compressed_size_is_under_60_mb(image):
    _, manifest, _, layers = image
    size = sum(layer["size"] for layer in layers) + manifest["config"]["size"]
    print(f"\nimage size: {size / 1e6:.1f} MB compressed ({len(layers)} layer), archive {ARCHIVE.stat().st_size / 1e6:.1f} MB")
    assert size < MAX_COMPRESSED, f"{size / 1e6:.1f} MB compressed"


def test_the_dockerfile_reads_the_same_settings():
    s = settings()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY image/image.env" in dockerfile
    assert "$IMAGE_PACKAGES" in dockerfile
    assert f"USER {s['IMAGE_USER']}:{s['IMAGE_GROUP']}" in dockerfile
    assert f'ENTRYPOINT ["{s["IMAGE_ENTRYPOINT"]}"]' in dockerfile
    assert f'CMD ["{s["IMAGE_CMD"]}"]' in dockerfile
    assert f'PATH="{s["IMAGE_PATH"]}"' in dockerfile
    assert f"FROM debian:{s['DEBIAN_SUITE']}-slim" in dockerfile
    for key in ("title", "description", "source", "licenses"):
        value = s[f"IMAGE_{key.upper()}"]
        assert f'org.opencontainers.image.{key}="{value}"' in dockerfile, key


def test_the_image_runs_the_agent_and_pg_dump():
    """The unpacked image, run by crun as the image's user with a read-only root filesystem."""
    out = subprocess.run([str(ROOT / "e2e" / "pods" / "run_image.py"), "--version"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("strongroom "), out.stdout
    s = settings()
    out = subprocess.run([str(ROOT / "e2e" / "pods" / "run_image.py"), "--entrypoint", "pg_dump", "--version"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"(PostgreSQL) {s['PG_MAJOR']}." in out.stdout, out.stdout
