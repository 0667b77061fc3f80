#!/usr/bin/env python3
"""Runs the image `make image` built, once, with crun, as its own user with a read-only root
filesystem and no capabilities, and prints what it printed: `run_image.py ARGS...` runs the
entrypoint with ARGS; `--entrypoint PROGRAM ARGS...` another program of the image (found on the
image's PATH). For the image tests; the pods use kubelet.py."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from kubelet import Cluster, Image, Pod  # noqa: E402

args = sys.argv[1:]
command = None
if args[:1] == ["--entrypoint"]:
    command, args = [args[1]], args[2:]
container = {"name": "strongroom", "image": "strongroom", "args": args,
             "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                 "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}}
if command:
    container["command"] = command
pod = Pod(Cluster(), Image(), "image-check", {"restartPolicy": "Never", "containers": [container]}).start()
(c,) = pod.containers
code = c.wait(60)
pod.delete()
sys.stdout.write(c.text())
sys.exit(1 if code is None else code)
