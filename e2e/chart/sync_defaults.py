"""Writes chart/templates/_defaults.tpl from chart/values.yaml (or, with --check, fails if it
is stale). The sidecar templates run in the including chart's context, where this chart's
values.yaml is not visible; they merge the given values over these defaults instead.

Usage: sync_defaults.py [--check]"""
import json
import pathlib
import sys

import yaml

root = pathlib.Path(__file__).resolve().parents[2] / "chart"
values = yaml.safe_load((root / "values.yaml").read_text())
text = (
    "{{/* Generated from values.yaml by e2e/chart/sync_defaults.py; do not edit. The sidecar\n"
    "templates merge the values they are given over these (see _helpers.tpl). */}}\n"
    '{{- define "strongroom.defaults" -}}\n'
    + json.dumps(values, sort_keys=True)
    + "\n{{- end }}\n"
)
target = root / "templates" / "_defaults.tpl"
if "--check" in sys.argv:
    if not target.exists() or target.read_text() != text:
        sys.exit("chart/templates/_defaults.tpl is stale: run python3 e2e/chart/sync_defaults.py")
else:
    target.write_text(text)
