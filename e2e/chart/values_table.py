"""Writes the values table of chart/README.md (between the `<!-- values -->` markers) from
chart/values.yaml: every value, its default and the comment above it. With --check, fails if
the README's table is stale.

Usage: values_table.py [--check]"""
import json
import pathlib
import sys

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from schema import DESCRIPTIONS, FREE, values  # noqa: E402

root = pathlib.Path(__file__).resolve().parents[2] / "chart"


def rows(tree, path=""):
    for key, value in tree.items():
        dotted = f"{path}.{key}" if path else key
        if isinstance(value, dict) and value and dotted not in FREE:
            yield from rows(value, dotted)
        else:
            default = json.dumps(value) if not isinstance(value, str) else (f'`"{value}"`' if value else '`""`')
            if not isinstance(value, str):
                default = f"`{default}`"
            text = DESCRIPTIONS.get(dotted, "")
            yield f"| `{dotted}` | {default} | {text.replace('|', '/')} |"


table = "\n".join(["| Value | Default | Meaning |", "|---|---|---|", *rows(values)])
readme = (root / "README.md").read_text()
start, end = "<!-- values -->\n", "<!-- /values -->"
head, rest = readme.split(start, 1)
_, tail = rest.split(end, 1)
updated = f"{head}{start}{table}\n{end}{tail}"
if "--check" in sys.argv:
    if updated != readme:
        sys.exit("chart/README.md's values table is stale: run python3 e2e/chart/values_table.py")
else:
    (root / "README.md").write_text(updated)
