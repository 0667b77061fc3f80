"""Writes chart/values.schema.json from chart/values.yaml and the rules below (or, with
--check, fails if it is stale). Every key of values.yaml is declared with the type of its
default and `additionalProperties: false`, so a typo in a value is an error; FREE lists the
maps that are the user's own (labels, annotations, Kubernetes objects, the agent's extra
config); RULES adds enums, patterns and bounds; the descriptions are the comment lines above
each key in values.yaml.

Usage: schema.py [--check]"""
import json
import pathlib
import re
import sys

import yaml

root = pathlib.Path(__file__).resolve().parents[2] / "chart"
values_text = (root / "values.yaml").read_text()
values = yaml.safe_load(values_text)

FREE = {
    "global", "podAnnotations", "podLabels", "nodeSelector", "affinity", "resources",
    "podSecurityContext", "securityContext", "serviceAccount.annotations",
    "restore.serviceAccount.annotations", "backups.s3.extraConfig",
    "backups.postgresql.extraConfig", "backups.clickhouse.extraConfig",
    "backups.daemon.extraConfig", "restore.extraConfig", "networkPolicy.databasePodSelector",
    "monitoring.podMonitor.labels", "monitoring.podMonitor.selector",
    "monitoring.prometheusRule.labels", "drills.resources", "drills.scratch.resources",
    "drills.scratch.securityContext", "drills.scratch.settings",
}
ITEMS = {
    "imagePullSecrets": {"type": "object"},
    "tolerations": {"type": "object"},
    "backups.clickhouse.databases": {"type": "string", "pattern": "^[A-Za-z0-9_]+$"},
    "backups.postgresql.sidecar.irsaSkipContainers": {"type": "string"},
    "backups.clickhouse.sidecar.irsaSkipContainers": {"type": "string"},
    "restore.clickhouse.sql": {"type": "object", "required": ["name", "query"]},
    "restore.validation.sql": {"type": "object", "required": ["name", "query"]},
    "restore.validation.http": {"type": "object", "required": ["name", "url"]},
    "networkPolicy.s3Cidrs": {"type": "string"},
    "networkPolicy.s3Ports": {"type": "integer", "minimum": 1, "maximum": 65535},
    "networkPolicy.extraEgress": {"type": "object"},
    "drills.smoke": {"type": "object", "required": ["name", "url"]},
}
SSLMODES = ["disable", "prefer", "require", "verify-ca", "verify-full"]
PORT = {"minimum": 1, "maximum": 65535}
CRON = {"pattern": r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4,5}\S+)$"}
# A CronJob's schedule that the agent's parser reads the same way: five fields or its aliases.
CRON5 = {"pattern": r"^(@(yearly|monthly|weekly|daily|hourly)|(\S+\s+){4}\S+)$"}
DURATION = {"pattern": "^[0-9]+[smhd]$"}
QUANTITY = {"pattern": r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"}
RULES = {
    "backups.s3.integrity": {"enum": ["auto", "md5", "sha256", "crc32"]},
    "backups.s3.forcePathStyle": {"type": ["boolean", "null"]},
    "backups.s3.objectLock.mode": {"enum": ["GOVERNANCE", "COMPLIANCE"]},
    "backups.s3.objectLock.retentionYears": {"minimum": 0, "maximum": 100},
    "backups.s3.objectLock.retentionDays": {"minimum": 0, "maximum": 36500},
    "backups.postgresql.mode": {"enum": ["cronjob", "sidecar"]},
    "backups.clickhouse.mode": {"enum": ["cronjob", "sidecar"]},
    "backups.postgresql.schedule": CRON,
    "backups.clickhouse.schedule": CRON,
    "backups.postgresql.port": PORT,
    "backups.clickhouse.port": PORT,
    "backups.postgresql.sslmode": {"enum": SSLMODES},
    "backups.postgresql.backupFrom": {"enum": ["primary", "any"]},
    "backups.postgresql.compression.format": {"enum": ["gzip", "zstd"]},
    "backups.postgresql.socketDir": {"pattern": "^/"},
    "backups.clickhouse.scheme": {"enum": ["http", "https"]},
    "backups.daemon.port": PORT,
    "backups.daemon.shutdownGraceSeconds": {"minimum": 1},
    "backups.log.format": {"enum": ["json", "text"]},
    "backups.sidecar.probes.readinessPeriodSeconds": {"minimum": 1},
    "backups.sidecar.probes.readinessFailureThreshold": {"minimum": 1},
    "restore.type": {"enum": ["", "postgresql", "clickhouse"]},
    "restore.runId": {"pattern": "^[A-Za-z0-9._-]{1,63}$"},
    "restore.postgresql.port": PORT,
    "restore.postgresql.sslmode": {"enum": SSLMODES},
    "restore.clickhouse.port": PORT,
    "restore.clickhouse.scheme": {"enum": ["http", "https"]},
    "image.pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    "image.digest": {"pattern": "^(sha256:[0-9a-f]{64})?$"},
    "monitoring.prometheusRule.maxAge": DURATION,
    "monitoring.prometheusRule.notReadyFor": DURATION,
    "monitoring.podMonitor.interval": DURATION,
    "monitoring.prometheusRule.consecutiveFailures": {"minimum": 1},
    "monitoring.prometheusRule.drillMaxAge": DURATION,
    "monitoring.prometheusRule.drillFailedFor": DURATION,
    "drills.schedule": CRON5,
    # The agent's range for drill.rto_goal_seconds: 1 s to 7 days.
    "drills.rtoGoalSeconds": {"type": ["integer", "null"], "minimum": 1, "maximum": 604800},
    "drills.productionSizeGiB": {"type": ["integer", "null"], "minimum": 1},
    "drills.scratch.image": {"pattern": "^\\S+$", "minLength": 1},
    "drills.scratch.imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    "drills.scratch.storage.size": QUANTITY,
    "drills.cronjob.startingDeadlineSeconds": {"minimum": 10},
    "drills.cronjob.successfulJobsHistoryLimit": {"minimum": 0},
    "drills.cronjob.failedJobsHistoryLimit": {"minimum": 0},
    "drills.cronjob.activeDeadlineSeconds": {"type": ["integer", "null"], "minimum": 60},
}


def descriptions():
    """The `# --` comment block above each key, by dotted path."""
    out, stack, comment = {}, [], []
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if text.startswith("--"):
                comment = [text[2:].strip()]
            elif comment:
                comment.append(text)
            continue
        m = re.match(r"^(\s*)([A-Za-z0-9_]+):", line)
        if not m:
            comment = []
            continue
        depth = len(m.group(1)) // 2
        stack = stack[:depth] + [m.group(2)]
        if comment:
            out[".".join(stack)] = " ".join(comment)
        comment = []
    return out


DESCRIPTIONS = descriptions()


def schema_of(value, path):
    s = {}
    if path in DESCRIPTIONS:
        s["description"] = DESCRIPTIONS[path]
    if path in FREE:
        s["type"] = "object"
    elif isinstance(value, bool):
        s["type"] = "boolean"
    elif isinstance(value, int):
        s["type"] = "integer"
    elif isinstance(value, str):
        s["type"] = "string"
    elif isinstance(value, list):
        s["type"] = "array"
        s["items"] = ITEMS[path]
    elif isinstance(value, dict):
        s["type"] = "object"
        s["additionalProperties"] = False
        s["properties"] = {k: schema_of(v, f"{path}.{k}" if path else k) for k, v in value.items()}
    elif value is None:
        pass  # typed by RULES
    else:
        raise SystemExit(f"{path}: no schema for {value!r}")
    s.update(RULES.get(path, {}))
    return s


if __name__ == "__main__":
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "title": "strongroom values"}
    schema.update(schema_of(values, ""))
    text = json.dumps(schema, indent=2) + "\n"
    target = root / "values.schema.json"
    if "--check" in sys.argv:
        if not target.exists() or target.read_text() != text:
            sys.exit("chart/values.schema.json is stale: run python3 e2e/chart/schema.py")
    else:
        target.write_text(text)
