"""The Helm chart, checked without a cluster (none exists here): real Helm (helm-python-sdk, the
Go SDK) lints and renders the chart over the values matrix in chart/ci/ and the example charts
in chart/examples/; every rendered object is validated against the Kubernetes schemas of each
minor from the chart's kubeVersion floor to 1.37 (kubernetes-validate --strict); the
monitoring objects against the prometheus-operator schemas; checkov lints the renders; and
the contract with the agent holds: every rendered config passes `strongroom check-config`, and
every agent container's arguments parse with the agent's own CLI (`strongroom check-args`).

Run by `make chart-check` (part of `make test`), with STRONGROOM pointing at the binary.
"""
import copy
import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile

import kubernetes_validate
import pytest
import yaml
from helm_python import Chart, lint

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "chart"
HERE = pathlib.Path(__file__).resolve().parent
STRONGROOM = os.environ.get("STRONGROOM", str(ROOT / "target/debug/strongroom"))
RELEASE, NAMESPACE = "llama-mapper", "prod"
KUBE_MINORS = [f"1.{m}" for m in range(29, 38)]
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
# Resources whose schema is not Kubernetes' own: checked elsewhere in this file.
CUSTOM_KINDS = {"PodMonitor", "PrometheusRule", "ClickHouseInstallation"}


def load_values(path):
    return yaml.safe_load(pathlib.Path(path).read_text()) or {}


def render_dir(chart_dir, values=None):
    """Rendered objects of a chart directory (NOTES.txt left out)."""
    out = Chart.load(str(chart_dir)).render(values or {}, name=RELEASE, namespace=NAMESPACE)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def render(values=None):
    return render_dir(CHART, values)


def render_error(values):
    with pytest.raises(Exception) as failure:
        render(values)
    return str(failure.value)


def example(name, tmp_path):
    """A copy of chart/examples/<name> with its dependencies in charts/: this chart, and for
    the bitnami example the offline stand-in of bitnami/postgresql."""
    target = tmp_path / name
    shutil.copytree(CHART / "examples" / name, target)
    charts = target / "charts"
    charts.mkdir()
    shutil.copytree(CHART, charts / "strongroom", ignore=shutil.ignore_patterns("examples", "ci"))
    if name == "bitnami-postgresql":
        shutil.copytree(HERE / "fixtures" / "bitnami-postgresql-standin", charts / "postgresql")
    return target


EXAMPLES = ["app", "bitnami-postgresql", "clickhouse-operator"]


def all_cases(tmp_path_factory):
    """(name, rendered objects) for every matrix entry and example."""
    cases = [(p.stem, render(load_values(p))) for p in CI_VALUES]
    tmp = tmp_path_factory.mktemp("examples")
    cases += [(f"example-{n}", render_dir(example(n, tmp))) for n in EXAMPLES]
    return cases


@pytest.fixture(scope="session")
def cases(tmp_path_factory):
    return all_cases(tmp_path_factory)


def pod_specs(doc):
    """(where, pod spec) of every pod a rendered object makes."""
    kind = doc["kind"]
    if kind == "Pod":
        yield doc["metadata"]["name"], doc["spec"]
    elif kind in ("StatefulSet", "Deployment", "Job", "DaemonSet"):
        yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]
    elif kind == "CronJob":
        yield doc["metadata"]["name"], doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "ClickHouseInstallation":
        for t in doc["spec"]["templates"]["podTemplates"]:
            yield f"{doc['metadata']['name']}/{t['name']}", t["spec"]


def agent_containers(spec):
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        if "strongroom" in c["image"]:
            yield c


# --- generated files and versions -----------------------------------------------------------


def test_schema_defaults_and_readme_table_are_generated_from_values_yaml():
    for script in ("schema.py", "sync_defaults.py", "values_table.py"):
        done = subprocess.run(["python", str(HERE / script), "--check"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_versions_agree():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    cargo = (ROOT / "agent" / "Cargo.toml").read_text()
    agent_version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    pinned = re.search(r'define "strongroom.version" -}}\n(\S+)\n', helpers).group(1)
    assert chart["appVersion"] == agent_version == pinned


# --- lint and schemas -------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
def test_strict_lint(values_file):
    report = lint(str(CHART), load_values(values_file), strict=True)
    assert not report["errors"], report
    # Severity 1 is INFO ("icon is recommended"); warnings (2) and errors (>= 3) fail.
    assert not [m for m in report["messages"] if m["severity"] >= 2], report


def test_every_object_validates_strictly_for_each_kubernetes_minor(cases):
    failures = []
    for name, docs in cases:
        for doc in docs:
            targets = [doc]
            if doc["kind"] == "ClickHouseInstallation":
                # The operator's pod template is a PodSpec: validate it as a Pod's.
                targets = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": where.replace("/", "-")},
                            "spec": spec} for where, spec in pod_specs(doc)]
            elif doc["kind"] in CUSTOM_KINDS:
                continue
            for target in targets:
                for minor in KUBE_MINORS:
                    try:
                        kubernetes_validate.validate(target, minor, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        failures.append(f"{name}: {target['kind']}/{target['metadata']['name']} on {minor}: {e.message}")
    assert not failures, "\n".join(failures)


def test_monitoring_objects_validate_against_the_prometheus_operator_schemas(tmp_path):
    docs = render(load_values(CHART / "ci" / "monitoring-values.yaml"))
    objects = [d for d in docs if d["kind"] in ("PodMonitor", "PrometheusRule")]
    assert {d["kind"] for d in objects} == {"PodMonitor", "PrometheusRule"}
    bad = copy.deepcopy(next(d for d in objects if d["kind"] == "PodMonitor"))
    bad["spec"]["podMetricsEndpoints"][0]["interval"] = "every minute"
    path = tmp_path / "objects.json"
    path.write_text(json.dumps({"good": objects, "bad": [bad]}))
    done = subprocess.run(["node", str(HERE / "validate_monitoring.mjs"), str(path)],
                          capture_output=True, text=True, cwd=HERE)
    assert done.returncode == 0, done.stdout + done.stderr
    # The validator is not a rubber stamp: the broken interval was refused.
    assert "bad PodMonitor refused" in done.stdout, done.stdout


def test_checkov_is_clean_on_the_renders(tmp_path):
    for values_file in CI_VALUES:
        docs = render(load_values(values_file))
        (tmp_path / f"{values_file.stem}.yaml").write_text(yaml.safe_dump_all(docs))
    skips = yaml.safe_load((HERE / "checkov-skips.yaml").read_text())
    for check, reason in skips.items():
        assert reason and len(reason) > 20, f"{check}: every skip says why"
    checkov = ROOT / ".venv-checkov" / "bin" / "checkov"
    done = subprocess.run(
        [str(checkov), "--quiet", "--compact", "--skip-download", "--framework", "kubernetes",
         "-d", str(tmp_path), "--skip-check", ",".join(skips)],
        capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# --- the contract with the agent ----------------------------------------------------------------


def test_every_config_passes_check_config_and_every_command_parses(cases, tmp_path):
    checked_configs = checked_args = 0
    for name, docs in cases:
        configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
        for cm_name, cm in configmaps.items():
            if "config.yaml" not in cm.get("data", {}):
                continue
            path = tmp_path / f"{name}-{cm_name}.yaml"
            path.write_text(cm["data"]["config.yaml"])
            done = subprocess.run([STRONGROOM, "check-config", "--config", str(path)],
                                  capture_output=True, text=True)
            assert done.returncode == 0, f"{name}: ConfigMap {cm_name}:\n{done.stdout}{done.stderr}"
            assert cm["data"]["config.yaml"] and f"release {RELEASE}" in done.stdout
            checked_configs += 1
        for doc in docs:
            for where, spec in pod_specs(doc):
                volumes = {v["name"]: v for v in spec.get("volumes", [])}
                for c in agent_containers(spec):
                    args = c["args"]
                    done = subprocess.run([STRONGROOM, "check-args", "--", *args], capture_output=True, text=True)
                    assert done.returncode == 0, f"{name}: {where}: {args}: {done.stdout}{done.stderr}"
                    checked_args += 1
                    # --config names the file of a mounted ConfigMap that this render holds.
                    config = args[args.index("--config") + 1]
                    mount = next(m for m in c["volumeMounts"] if config.startswith(m["mountPath"] + "/"))
                    assert "subPath" not in mount, f"{where}: the config is mounted with subPath"
                    cm_name = volumes[mount["name"]]["configMap"]["name"]
                    assert cm_name in configmaps, f"{name}: {where} mounts ConfigMap {cm_name}, not rendered"
    assert checked_configs >= 10 and checked_args >= 10, (checked_configs, checked_args)


def test_a_flag_the_agent_does_not_have_fails_the_contract():
    done = subprocess.run([STRONGROOM, "check-args", "--", "--config", "/etc/strongroom/config.yaml",
                           "backup", "--engine", "postgresql", "--no-such-flag"], capture_output=True, text=True)
    assert done.returncode == 64, done.stdout + done.stderr


def test_every_volume_mount_names_a_volume(cases):
    for name, docs in cases:
        for doc in docs:
            for where, spec in pod_specs(doc):
                volumes = {v["name"] for v in spec.get("volumes") or []}
                for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                    for m in c.get("volumeMounts", []):
                        claims = {t["metadata"]["name"] for t in doc.get("spec", {}).get("volumeClaimTemplates", [])}
                        assert m["name"] in volumes | claims, f"{name}: {where}/{c['name']} mounts {m['name']}"


def test_no_checksum_annotation_restarts_a_database_pod(cases):
    for name, docs in cases:
        for doc in docs:
            if doc["kind"] in ("StatefulSet", "ClickHouseInstallation"):
                text = json.dumps(doc)
                assert "checksum/" not in text, f"{name}: {doc['metadata']['name']}"


# --- where the runbook's values land -----------------------------------------------------------


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def agent_config(docs, name_part):
    cm = next(d for d in by_kind(docs, "ConfigMap") if name_part in d["metadata"]["name"])
    return yaml.safe_load(cm["data"]["config.yaml"])


def test_runbook_postgresql_values_land_where_they_must():
    docs = render(load_values(CHART / "ci" / "postgresql-cronjob-values.yaml"))
    (cron,) = by_kind(docs, "CronJob")
    assert cron["spec"]["schedule"] == "0 2 * * *"
    assert cron["spec"]["timeZone"] == "Etc/UTC"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cron["metadata"]["name"]) <= 52
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "llama-mapper-aws", "key": "AWS_ACCESS_KEY_ID"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "llama-mapper-aws", "key": "AWS_SECRET_ACCESS_KEY"}
    secrets = next(v for v in pod["volumes"] if v["name"] == "strongroom-secrets")["projected"]["sources"]
    assert {"name": "llama-mapper-pg-backup", "items": [{"key": "password", "path": "postgresql-password"}]} in [s["secret"] for s in secrets]
    config = agent_config(docs, "pg-backup")
    assert config["s3"]["bucket"] == "acme-prod-backups"
    assert config["s3"]["prefix"] == f"backups/{RELEASE}"
    assert config["release"] == RELEASE
    assert config["postgresql"]["password_file"] == "/var/run/secrets/strongroom/postgresql-password"
    assert config["postgresql"]["host"] == "llama-mapper-postgresql.prod.svc"
    assert config["postgresql"]["compression_format"] == "gzip"
    assert config["s3"]["object_lock"] == {"required": True, "mode": "GOVERNANCE", "retention": {"years": 7}}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsUser"] == 65532


def test_runbook_clickhouse_schedule_and_secret_keys():
    values = load_values(CHART / "ci" / "clickhouse-cronjob-values.yaml")
    values["backups"]["clickhouse"]["passwordSecretKey"] = "ch-password"
    docs = render(values)
    (cron,) = by_kind(docs, "CronJob")
    assert cron["spec"]["schedule"] == "30 2 * * *"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    sources = next(v for v in pod["volumes"] if v["name"] == "strongroom-secrets")["projected"]["sources"]
    assert sources[0]["secret"] == {"name": "llama-mapper-ch-backup", "items": [{"key": "ch-password", "path": "clickhouse-password"}]}
    assert agent_config(docs, "ch-backup")["clickhouse"]["url"] == "http://llama-mapper-clickhouse.prod.svc:8123"


def test_irsa_means_no_keys_and_an_annotated_service_account():
    docs = render(load_values(CHART / "ci" / "both-irsa-signed-values.yaml"))
    (sa,) = by_kind(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("backup-writer")
    for cron in by_kind(docs, "CronJob"):
        (c,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert not [e for e in c["env"] if e["name"].startswith("AWS_")]
        assert cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    pg = agent_config(docs, "pg-backup")["postgresql"]
    assert (pg["compression_format"], pg["compression_level"]) == ("zstd", 9)


def test_the_restore_job_is_named_by_type_snapshot_and_run_id():
    values = load_values(CHART / "ci" / "restore-postgresql-values.yaml")

    def job(v):
        (j,) = by_kind(render(v), "Job")
        return j

    first = job(values)
    assert first["spec"]["backoffLimit"] == 0
    assert "ttlSecondsAfterFinished" not in first["spec"]
    assert "helm.sh/hook" not in first["metadata"].get("annotations", {})
    assert len(first["metadata"]["name"]) <= 63
    args = first["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--snapshot") + 1] == values["restore"]["snapshot"]
    assert args[args.index("--run-id") + 1] == "1"
    again = copy.deepcopy(values)
    assert job(again)["metadata"]["name"] == first["metadata"]["name"]
    other_snapshot = copy.deepcopy(values)
    other_snapshot["restore"]["snapshot"] = values["restore"]["snapshot"].replace("20261123", "20261124")
    assert job(other_snapshot)["metadata"]["name"] != first["metadata"]["name"]
    other_run = copy.deepcopy(values)
    other_run["restore"]["runId"] = "2"
    assert job(other_run)["metadata"]["name"] != first["metadata"]["name"]
    # The restore role's own ServiceAccount, not the backup writer's.
    assert first["spec"]["template"]["spec"]["serviceAccountName"].endswith("-restore")


def test_the_readiness_gate_is_switchable(tmp_path):
    chart = example("app", tmp_path)
    docs = render_dir(chart)
    pg = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"].endswith("postgresql"))
    (agent,) = agent_containers(pg["spec"]["template"]["spec"])
    assert agent["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert agent["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert agent["startupProbe"]["httpGet"]["path"] == "/healthz"
    values = load_values(chart / "values.yaml")
    values["backups"]["sidecar"] = {"probes": {"readiness": False}}
    docs = render_dir(chart, values)
    pg = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"].endswith("postgresql"))
    (agent,) = agent_containers(pg["spec"]["template"]["spec"])
    assert "readinessProbe" not in agent and "livenessProbe" in agent
    # The native-sidecar variant runs the ClickHouse agent from initContainers.
    ch = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"].endswith("clickhouse"))
    (init,) = ch["spec"]["template"]["spec"]["initContainers"]
    assert init["restartPolicy"] == "Always" and init["name"] == "strongroom"


def test_backups_disabled_removes_the_sidecar(tmp_path):
    chart = example("app", tmp_path)
    values = load_values(chart / "values.yaml")
    values["backups"]["enabled"] = False
    docs = render_dir(chart, values)
    for d in docs:
        for where, spec in pod_specs(d):
            assert not list(agent_containers(spec)), where
    assert not [d for d in docs if d["kind"] == "ConfigMap"]


# --- bad values: refused, naming the value -----------------------------------------------------


def test_a_typo_is_rejected_naming_it():
    message = render_error({"backups": {"enabled": True, "postgresql": {"enabeld": True}}})
    assert "enabeld" in message
    message = render_error({"backups": {"s3": {"bucket": "b", "awsAccessKeyIdSecretref": "x"}}})
    assert "awsAccessKeyIdSecretref" in message


def test_global_is_accepted():
    render({"global": {"imageRegistry": "mirror.example", "strongroom": {"x": 1}}})


@pytest.mark.parametrize("values,named", [
    ({"backups": {"enabled": True, "postgresql": {"enabled": True, "passwordSecretRef": "p", "host": "h", "database": "d"}}},
     "backups.s3.bucket"),
    ({"backups": {"enabled": True, "s3": {"bucket": "b"}, "postgresql": {"enabled": True, "host": "h", "database": "d"}}},
     "backups.postgresql.passwordSecretRef"),
    ({"backups": {"enabled": True, "s3": {"bucket": "b"}, "postgresql": {"enabled": True, "passwordSecretRef": "p", "database": "d"}}},
     "backups.postgresql.host"),
    ({"backups": {"enabled": True, "s3": {"bucket": "b"}, "clickhouse": {"enabled": True, "host": "h"}}},
     "backups.clickhouse.passwordSecretRef"),
    ({"backups": {"s3": {"bucket": "b"}}, "restore": {"enabled": True, "snapshot": "s"}}, "restore.type"),
    ({"backups": {"s3": {"bucket": "b"}}, "restore": {"enabled": True, "type": "postgresql"}}, "restore.snapshot"),
    ({"backups": {"s3": {"bucket": "b"}, "postgresql": {"host": "h", "database": "d"}},
      "restore": {"enabled": True, "type": "postgresql", "snapshot": "s"}}, "restore.postgresql.passwordSecretRef"),
    ({"backups": {"enabled": True, "s3": {"bucket": "b", "awsAccessKeyIdSecretRef": "k"},
                  "postgresql": {"enabled": True, "passwordSecretRef": "p", "host": "h", "database": "d"}}},
     "backups.s3.awsSecretAccessKeySecretRef"),
    ({"backups": {"enabled": True, "s3": {"bucket": "b"},
                  "postgresql": {"enabled": True, "passwordSecretRef": "p", "host": "h", "database": "d",
                                 "schedule": "0 0 2 * * *"}}},
     "backups.postgresql.schedule"),
    ({"backups": {"enabled": True, "s3": {"bucket": "b"},
                  "postgresql": {"enabled": True, "mode": "both", "passwordSecretRef": "p", "host": "h", "database": "d"}}},
     "backups.postgresql.mode"),
])
def test_a_missing_or_wrong_value_fails_naming_it(values, named):
    # Templates name the value with dots; the schema with a JSON pointer.
    message = render_error(values)
    assert named in message or "/" + named.replace(".", "/") in message, message


def app_render_error(tmp_path, change):
    """The error of rendering examples/app with its values changed by `change`."""
    chart = example("app", tmp_path)
    values = load_values(chart / "values.yaml")
    change(values)
    with pytest.raises(Exception) as failure:
        render_dir(chart, values)
    return str(failure.value)


def test_the_sidecar_template_refuses_an_engine_in_cronjob_mode(tmp_path):
    message = app_render_error(tmp_path, lambda v: v["backups"]["postgresql"].update(mode="cronjob"))
    assert "backups.postgresql.mode" in message and "sidecar" in message


def test_a_grace_period_shorter_than_the_agents_fails(tmp_path):
    message = app_render_error(tmp_path, lambda v: v["postgresql"].update(terminationGracePeriodSeconds=120))
    assert "backups.daemon.shutdownGraceSeconds" in message


def test_the_bitnami_sidecar_shares_the_servers_socket(tmp_path):
    docs = render_dir(example("bitnami-postgresql", tmp_path))
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    spec = sts["spec"]["template"]["spec"]
    (agent,) = agent_containers(spec)
    socket = next(m for m in agent["volumeMounts"] if m["name"] == "empty-dir")
    server = next(c for c in spec["containers"] if c["name"] == "postgresql")
    served = next(m for m in server["volumeMounts"] if m["mountPath"] == "/tmp")
    assert socket["subPath"] == served["subPath"] == "tmp-dir"
    config = agent_config(docs, "pg-sidecar")
    assert config["postgresql"]["host"] == socket["mountPath"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_strict_lint_of_the_examples(name, tmp_path):
    report = lint(str(example(name, tmp_path)), strict=True)
    assert not report["errors"], report
    assert not [m for m in report["messages"] if m["severity"] >= 2], report


def test_the_restore_job_holds_only_the_restore_role_and_files():
    docs = render(load_values(CHART / "ci" / "restore-clickhouse-values.yaml"))
    (job,) = by_kind(docs, "Job")
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e}
    assert env == {"AWS_ACCESS_KEY_ID": "llama-mapper-aws-restore", "AWS_SECRET_ACCESS_KEY": "llama-mapper-aws-restore"}
    sources = next(v for v in pod["volumes"] if v["name"] == "strongroom-secrets")["projected"]["sources"]
    files = {s["secret"]["items"][0]["path"]: s["secret"]["name"] for s in sources}
    # The restoring user's password; no signing private key, no backup password.
    assert files == {"restore-password": "llama-mapper-ch-restore"}, files
    config = agent_config(docs, "restore")
    assert config["restore"]["clickhouse"]["password_file"] == "/var/run/secrets/strongroom/restore-password"
    assert "private_key_file" not in json.dumps(config)
    # The PostgreSQL restore: its password Secret and the public key, nothing else.
    docs = render(load_values(CHART / "ci" / "restore-postgresql-values.yaml"))
    (job,) = by_kind(docs, "Job")
    pod = job["spec"]["template"]["spec"]
    sources = next(v for v in pod["volumes"] if v["name"] == "strongroom-secrets")["projected"]["sources"]
    files = {s["secret"]["items"][0]["path"]: s["secret"]["name"] for s in sources}
    assert files == {"restore-password": "llama-mapper-pg-restore", "signing.pub": "llama-mapper-signing-pub"}, files
    assert not [e for e in pod["containers"][0]["env"] if e["name"].startswith("AWS_")]


def test_any_change_of_the_restore_is_a_new_job():
    values = load_values(CHART / "ci" / "restore-postgresql-values.yaml")
    (first,) = by_kind(render(values), "Job")
    for change in ({"create": True}, {"force": True}, {"database": "other"},
                   {"validation": {"sql": []}}):
        changed = copy.deepcopy(values)
        changed["restore"].update(change)
        (job,) = by_kind(render(changed), "Job")
        assert job["metadata"]["name"] != first["metadata"]["name"], change


def test_a_numeric_run_id_is_refused_for_a_string():
    values = load_values(CHART / "ci" / "restore-postgresql-values.yaml")
    values["restore"]["runId"] = 20261123
    assert "/restore/runId" in render_error(values)


def test_the_restore_never_shares_the_backup_service_account():
    values = load_values(CHART / "ci" / "restore-postgresql-values.yaml")
    values["backups"].update({"enabled": True, "postgresql": {"enabled": True, "passwordSecretRef": "p",
                                                              "host": "h", "database": "d"}})
    values["serviceAccount"] = {"create": False, "name": "shared"}
    values["restore"]["serviceAccount"] = {"create": False, "name": "shared"}
    assert "same ServiceAccount" in render_error(values)


def test_the_alerts_use_metrics_the_agent_exports():
    docs = render(load_values(CHART / "ci" / "monitoring-values.yaml"))
    (rule,) = by_kind(docs, "PrometheusRule")
    exprs = " ".join(r["expr"] for g in rule["spec"]["groups"] for r in g["rules"])
    source = (ROOT / "agent" / "src" / "metrics.rs").read_text()
    names = set(re.findall(r"\bstrongroom_[a-z_]+", exprs))
    assert names, exprs
    for name in names:
        base = re.sub(r"_(total|info)$", "", name[len("strongroom_"):])
        assert f'"{base}"' in source, f"{name} is not a metric of agent/src/metrics.rs"
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"StrongroomBackupTooOld", "StrongroomBackupNeverSucceeded", "StrongroomBackupFailing",
            "StrongroomAgentNotReady", "StrongroomCronJobBackupTooOld", "StrongroomCronJobBackupFailed"} <= alerts
    assert 'cronjob=~"llama-mapper-strongroom-pg-backup"' in exprs


def test_a_typo_in_the_sidecar_values_of_an_application_fails(tmp_path):
    message = app_render_error(tmp_path, lambda v: v["backups"]["postgresql"].update(databse="oops"))
    assert "backups.postgresql.databse" in message


def test_the_subchart_cannot_also_run_the_sidecars_engine_as_a_cronjob(tmp_path):
    cronjob = {"backups": {"enabled": True, "s3": {"bucket": "b"}, "postgresql": {
        "enabled": True, "passwordSecretRef": "p", "host": "h", "database": "d"}}}
    message = app_render_error(tmp_path, lambda v: v.update(strongroom=cronjob))
    assert "strongroom.backups.postgresql" in message


def test_the_sidecar_does_not_keep_the_database_from_starting_without_its_secrets(tmp_path):
    chart = example("app", tmp_path)
    values = load_values(chart / "values.yaml")
    values["backups"]["s3"].update(awsAccessKeyIdSecretRef="aws", awsSecretAccessKeySecretRef="aws")
    docs = render_dir(chart, values)
    for suffix in ("postgresql", "clickhouse"):
        sts = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"].endswith(suffix))
        spec = sts["spec"]["template"]["spec"]
        volume = next(v for v in spec["volumes"] if v["name"] == "strongroom-secrets")
        assert all(s["secret"].get("optional") is True for s in volume["projected"]["sources"])
        (agent,) = agent_containers(spec)
        refs = [e["valueFrom"]["secretKeyRef"] for e in agent["env"] if "valueFrom" in e]
        assert len(refs) == 2 and all(r.get("optional") is True for r in refs), refs


def test_the_applications_helm_test_runs_as_the_database_pods_service_account(tmp_path):
    docs = render_dir(example("app", tmp_path))
    pods = [d for d in docs if d["kind"] == "Pod"]
    (test_pod,) = pods
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert test_pod["spec"]["serviceAccountName"] == "default"
    assert test_pod["spec"]["containers"][0]["args"][-1] == "preflight"


def test_every_probe_points_at_the_port_the_agent_listens_on(cases):
    checked = 0
    for name, docs in cases:
        configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
        for doc in docs:
            for where, spec in pod_specs(doc):
                volumes = {v["name"]: v for v in spec.get("volumes") or []}
                for c in agent_containers(spec):
                    probes = [c[k] for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in c]
                    if not probes:
                        continue
                    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
                    config_mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/strongroom")
                    cm = configmaps[volumes[config_mount["name"]]["configMap"]["name"]]
                    listen = yaml.safe_load(cm["data"]["config.yaml"])["daemon"]["listen"]
                    # The kubelet probes the pod's IP: the agent must not listen on loopback only.
                    host = listen.rsplit(":", 1)[0]
                    assert host in ("0.0.0.0", "[::]"), f"{name}: {where}: the agent listens on {listen}"
                    for probe in probes:
                        port = probe["httpGet"]["port"]
                        port = ports[port] if isinstance(port, str) else port
                        assert listen.endswith(f":{port}"), f"{name}: {where}: probe port {port}, agent listens on {listen}"
                        checked += 1
    assert checked >= 6, checked


# --- restore drills ------------------------------------------------------------------------------


def drill_values():
    return load_values(CHART / "ci" / "drills-values.yaml")


def drill_cronjob(docs):
    crons = [d for d in by_kind(docs, "CronJob") if d["metadata"]["name"].endswith("-pg-drill")]
    assert len(crons) <= 1
    return crons[0] if crons else None


def test_the_drill_cronjob_runs_the_drill_against_a_scratch_server_of_its_own():
    docs = render(drill_values())
    cron = drill_cronjob(docs)
    assert cron["metadata"]["name"] == f"{RELEASE}-strongroom-pg-drill" and len(cron["metadata"]["name"]) <= 52
    spec = cron["spec"]
    assert spec["schedule"] == "0 4 1 1,4,7,10 *"
    assert spec["timeZone"] == "Etc/UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["suspend"] is False
    assert spec["successfulJobsHistoryLimit"] == 3 and spec["failedJobsHistoryLimit"] == 3
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    # Three times the goal (1200) plus 600.
    assert job["activeDeadlineSeconds"] == 3 * 1200 + 600
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    # `kubectl logs job/<job>` shows the agent's report.
    assert job["template"]["metadata"]["annotations"] == {"kubectl.kubernetes.io/default-container": "strongroom"}
    volumes = {v["name"]: v for v in pod["volumes"]}

    # The scratch server: a native sidecar, the official image, a socket and nothing on TCP.
    (server,) = pod["initContainers"]
    assert server["name"] == "postgres" and server["image"] == "postgres:15.18"
    assert server["restartPolicy"] == "Always"
    assert "ports" not in server
    script = " ".join(server["command"] + server["args"])
    assert "listen_addresses= " in script and "--auth-host=reject" in script and "--auth-local=trust" in script
    assert "unix_socket_directories=/var/run/postgresql" in script
    assert server["args"][-4:] == ["-c", "max_wal_size=4GB", "-c", "shared_buffers=512MB"]
    for probe in ("startupProbe", "readinessProbe"):
        command = server[probe]["exec"]["command"]
        assert command[0] == "pg_isready" and command[command.index("-h") + 1] == "/var/run/postgresql"
    sc = server["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 999 and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert server["resources"]["limits"]["memory"] == "2Gi"
    # With a read-only root, everything the server writes is a volume of the pod.
    server_mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    pgdata = next(e["value"] for e in server["env"] if e["name"] == "PGDATA")
    assert pgdata.startswith("/var/lib/postgresql/data/") and server_mounts["/var/lib/postgresql/data"] == "scratch-data"
    assert {"/var/run/postgresql", "/tmp"} <= set(server_mounts)
    for path in ("/var/run/postgresql", "/tmp"):
        assert "emptyDir" in volumes[server_mounts[path]], path
    # The data: a generic ephemeral volume in this render (an emptyDir by default, below).
    claim = volumes["scratch-data"]["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim["resources"]["requests"]["storage"] == "50Gi" and claim["storageClassName"] == "gp3"

    # The agent: the restore role, the drill command, the server's socket.
    (agent,) = pod["containers"]
    assert pod["serviceAccountName"] == f"{RELEASE}-strongroom-restore"
    sas = {sa["metadata"]["name"]: sa for sa in by_kind(docs, "ServiceAccount")}
    assert sas[pod["serviceAccountName"]]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("restore")
    assert agent["args"][2:] == ["drill", "--engine", "postgresql", "--latest", "--mode", "scratch",
                                 "--production-size-gib", "120"]
    assert agent["securityContext"]["runAsUser"] == 65532 and agent["securityContext"]["readOnlyRootFilesystem"] is True
    assert not [e for e in agent["env"] if e["name"].startswith("AWS_")]
    socket = next(m for m in agent["volumeMounts"] if m["name"] == server_mounts["/var/run/postgresql"])
    assert "subPath" not in socket
    config = agent_config(docs, "pg-drill")
    assert config["postgresql"]["host"] == socket["mountPath"] == "/var/run/postgresql"
    assert config["postgresql"]["database"] == "llama_mapper"
    assert config["restore"]["user"] == config["postgresql"]["user"] == "postgres"
    assert "password_file" not in json.dumps(config)
    assert config["signing"] == {"public_key_file": "/var/run/secrets/strongroom/signing.pub"}
    assert config["s3"]["bucket"] == "acme-prod-backups"
    # Row counts and restore.validation.sql run on the scratch database; the application's smoke
    # tests (restore.validation.http) serve the live one: the drill calls drills.smoke instead.
    assert config["restore"]["validation"]["sql"][0]["name"] == "storage_records present"
    assert config["restore"]["validation"]["http"] == []
    drill = config["drill"]
    assert drill["enabled"] is True and drill["allow_replace"] is False
    assert drill["schedule"] == "0 4 1 1,4,7,10 *" and drill["rto_goal_seconds"] == 1200
    assert "{database}" in drill["smoke"]["http"][0]["url"]
    # Only the public key: no backup password, no signing private key, no restore password.
    sources = volumes["strongroom-secrets"]["projected"]["sources"]
    assert [s["secret"]["items"][0]["path"] for s in sources] == ["signing.pub"]
    # The chart's NetworkPolicy covers the drill pod (its selector is the chart's pod labels).
    (policy,) = by_kind(docs, "NetworkPolicy")
    labels = job["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in policy["spec"]["podSelector"]["matchLabels"].items())


def test_the_drill_defaults_an_emptydir_and_a_deadline_from_the_goal():
    values = load_values(CHART / "ci" / "monitoring-values.yaml")
    pod_job = drill_cronjob(render(values))["spec"]["jobTemplate"]["spec"]
    assert pod_job["activeDeadlineSeconds"] == 3 * 1800 + 600
    pod = pod_job["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["scratch-data"] == {"name": "scratch-data", "emptyDir": {"sizeLimit": "20Gi"}}
    assert pod["initContainers"][0]["args"][1:] == ["postgres"]
    assert "--production-size-gib" not in pod["containers"][0]["args"]
    assert "rto_goal_seconds" not in agent_config(render(values), "pg-drill")["drill"]
    values["drills"]["scratch"] = {"settings": {"max_connections": 20, "effective_io_concurrency": 1000000,
                                                "random_page_cost": 1.1}}
    (server,) = drill_cronjob(render(values))["spec"]["jobTemplate"]["spec"]["template"]["spec"]["initContainers"]
    assert server["args"][2:] == ["-c", "effective_io_concurrency=1000000", "-c", "max_connections=20",
                                  "-c", "random_page_cost=1.1"]
    values["drills"].update(suspend=True, cronjob={"activeDeadlineSeconds": 9000})
    cron = drill_cronjob(render(values))
    assert cron["spec"]["suspend"] is True and cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 9000


def test_the_drill_command_parses():
    (agent,) = drill_cronjob(render(drill_values()))["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    done = subprocess.run([STRONGROOM, "check-args", "--", *agent["args"]], capture_output=True, text=True)
    assert done.returncode == 0, f"{agent['args']}: {done.stdout}{done.stderr}"


def test_no_drill_cronjob_without_drills_or_without_postgresql():
    for values_file in CI_VALUES:
        if values_file.stem in ("drills-values", "monitoring-values"):
            continue
        docs = render(load_values(values_file))
        assert drill_cronjob(docs) is None, values_file.stem
        assert "drill" not in json.dumps([agent_config(docs, c["metadata"]["name"]) for c in by_kind(docs, "ConfigMap")])
    values = drill_values()
    values["drills"]["enabled"] = False
    docs = render(values)
    assert drill_cronjob(docs) is None
    # Without the drill (and without a restore), no restore ServiceAccount either.
    assert [sa["metadata"]["name"] for sa in by_kind(docs, "ServiceAccount")] == [f"{RELEASE}-strongroom-backup"]
    # Drills on, but this release does not back up PostgreSQL: nothing to drill by CronJob.
    values = load_values(CHART / "ci" / "clickhouse-cronjob-values.yaml")
    values["drills"] = {"enabled": True}
    assert drill_cronjob(render(values)) is None


@pytest.mark.parametrize("change,named", [
    ({"schedule": "0 0 4 1 1,4,7,10 *"}, "drills/schedule"),
    ({"schedule": "every quarter"}, "drills/schedule"),
    ({"schedule": "@quarterly"}, "drills/schedule"),
    ({"rtoGoalSeconds": -1}, "drills/rtoGoalSeconds"),
    ({"rtoGoalSeconds": 0}, "drills/rtoGoalSeconds"),
    ({"rtoGoalSeconds": "30m"}, "drills/rtoGoalSeconds"),
    ({"productionSizeGiB": 0}, "drills/productionSizeGiB"),
    ({"smoke": [{"url": "http://x/health"}]}, "drills/smoke"),
    ({"scratch": {"storage": {"size": "lots"}}}, "drills/scratch/storage/size"),
    ({"scratch": {"imagePullPolicy": "Sometimes"}}, "drills/scratch/imagePullPolicy"),
    ({"cronjob": {"activeDeadlineSeconds": -5}}, "drills/cronjob/activeDeadlineSeconds"),
    ({"enabeld": True}, "enabeld"),
    ({"scratch": {"settings": {"listen_addresses": "*"}}}, "drills.scratch.settings.listen_addresses"),
])
def test_bad_drill_values_are_refused_naming_them(change, named):
    values = drill_values()
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(values["drills"].get(key), dict):
            values["drills"][key].update(value)
        else:
            values["drills"][key] = value
    message = render_error(values)
    assert named in message, message


def test_a_drill_needs_the_public_key_and_never_holds_the_writer_role():
    values = drill_values()
    del values["restore"]["signing"]
    assert "restore.signing.publicKeySecretRef" in render_error(values)
    values["restore"]["allowUnsigned"] = True
    assert agent_config(render(values), "pg-drill")["restore"]["allow_unsigned"] is True
    values = drill_values()
    values["serviceAccount"] = {"create": False, "name": "shared"}
    values["restore"]["serviceAccount"] = {"create": False, "name": "shared"}
    assert "same ServiceAccount" in render_error(values)


def test_the_clickhouse_sidecar_carries_the_drill_section(tmp_path):
    chart = example("app", tmp_path)
    values = load_values(chart / "values.yaml")
    docs = render_dir(chart, values)
    assert "drill" not in agent_config(docs, "ch-sidecar")
    values["drills"] = {"enabled": True, "rtoGoalSeconds": 2400, "schedule": "0 5 1 * *",
                        "clickhouse": {"user": "strongroom_drill", "passwordSecretRef": "llama-mapper-ch-drill"},
                        "smoke": [{"name": "health", "url": "http://llama-mapper.prod.svc:8080/health?database={database}"}]}
    docs = render_dir(chart, values)
    config = agent_config(docs, "ch-sidecar")
    assert config["drill"] == {"enabled": True, "schedule": "0 5 1 * *", "rto_goal_seconds": 2400,
                               "allow_replace": False,
                               "smoke": {"http": [{"name": "health", "url": "http://llama-mapper.prod.svc:8080/health?database={database}"}]}}
    assert config["restore"] == {"clickhouse": {"user": "strongroom_drill",
                                                "password_file": "/var/run/secrets/strongroom/drill-clickhouse-password"}}
    sts = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"].endswith("clickhouse"))
    volume = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "strongroom-secrets")
    drill_secret = next(s["secret"] for s in volume["projected"]["sources"] if s["secret"]["name"] == "llama-mapper-ch-drill")
    assert drill_secret["optional"] is True and drill_secret["items"] == [{"key": "password", "path": "drill-clickhouse-password"}]
    # PostgreSQL drills by the CronJob, never in the database pod's sidecar.
    assert "drill" not in agent_config(docs, "pg-sidecar")
    assert drill_cronjob(docs) is None
    # The config the sidecar gets is one the agent accepts.
    path = tmp_path / "ch-sidecar.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([STRONGROOM, "check-config", "--config", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # Without a login of its own, the drill restores as the backup user (no restore section).
    values["drills"] = {"enabled": True}
    config = agent_config(render_dir(chart, values), "ch-sidecar")
    assert "restore" not in config and "rto_goal_seconds" not in config["drill"]


def test_a_typo_in_an_applications_drill_values_fails(tmp_path):
    message = app_render_error(tmp_path, lambda v: v.update(drills={"enabled": True, "rtoGoalSecond": 60}))
    assert "drills.rtoGoalSecond" in message
    # Its own maps (resources, settings) are the user's.
    chart = example("app", tmp_path / "ok")
    values = load_values(chart / "values.yaml")
    values["drills"] = {"enabled": True, "scratch": {"resources": {"limits": {"cpu": "2"}}, "settings": {"work_mem": "64MB"}}}
    render_dir(chart, values)


def test_the_drill_alerts_render():
    docs = render(load_values(CHART / "ci" / "monitoring-values.yaml"))
    (rule,) = by_kind(docs, "PrometheusRule")
    rules = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"StrongroomDrillOverdue", "StrongroomDrillNeverSucceeded", "StrongroomDrillRtoOverGoal",
            "StrongroomDrillFailed", "StrongroomCronJobDrillOverdue", "StrongroomCronJobDrillFailed"} <= set(rules)
    assert f"> {100 * 86400}" in rules["StrongroomDrillOverdue"]["expr"]
    assert rules["StrongroomDrillNeverSucceeded"]["for"] == "100d"
    assert "strongroom_drill_last_rto_seconds > strongroom_drill_rto_goal_seconds" in rules["StrongroomDrillRtoOverGoal"]["expr"]
    assert 'strongroom_drill_runs_total{result!="pass"}[1d]' in rules["StrongroomDrillFailed"]["expr"]
    failed = rules["StrongroomCronJobDrillFailed"]["expr"]
    assert f'owner_name="{RELEASE}-strongroom-pg-drill"' in failed and "kube_job_status_failed" in failed
    assert "kube_cronjob_spec_suspend" in rules["StrongroomCronJobDrillOverdue"]["expr"]
    # The metric alerts are there whenever the rule is (the sidecars' drills); the CronJob's only
    # with the drill CronJob and cronJobAlerts.
    values = load_values(CHART / "ci" / "monitoring-values.yaml")
    values["monitoring"]["prometheusRule"]["cronJobAlerts"] = False
    (rule,) = by_kind(render(values), "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "StrongroomDrillOverdue" in alerts and "StrongroomCronJobDrillFailed" not in alerts
    del values["drills"]
    values["monitoring"]["prometheusRule"]["cronJobAlerts"] = True
    (rule,) = by_kind(render(values), "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "StrongroomCronJobBackupFailed" in alerts and "StrongroomCronJobDrillFailed" not in alerts


def test_every_agent_container_runs_as_a_high_uid(cases):
    # The drill's scratch server overrides the pod's uid with the official image's postgres
    # (999: initdb needs its uid in /etc/passwd); the agent's containers keep a high uid.
    for name, docs in cases:
        for doc in docs:
            for where, spec in pod_specs(doc):
                pod_uid = (spec.get("securityContext") or {}).get("runAsUser")
                for c in agent_containers(spec):
                    uid = (c.get("securityContext") or {}).get("runAsUser", pod_uid)
                    assert uid is not None and uid >= 10000, f"{name}: {where}: {uid}"
