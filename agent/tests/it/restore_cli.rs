//! `strongroom verify`, `restore`, `keygen` and `audit verify` as users run them: exit codes,
//! lines, reports, and refusals that happen before any request.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use strongroom::manifest::Manifest;
use strongroom::store::{Integrity, ObjectStore, PartChecksum};

use crate::harness::{self, TestId, drop_database, strongroom, text};
use crate::on_each_s3;

on_each_s3!(
    verify_passes_skips_incomplete_and_fails_damaged_backups,
    a_failing_validation_check_exits_non_zero_naming_it,
    audit_chain_verifies_and_reports_removed_or_altered_events,
    a_restore_with_a_run_id_runs_once_unless_asked_again,
);

/// A config file for `id` in `dir`, restoring as `postgres`, with `extra` appended. These
/// backups are unsigned (signatures are tested in postgres_restore and restore_trust), so
/// their restores are allowed explicitly.
fn config_file(id: &TestId, bucket: &str, dir: &Path, extra: &str) -> PathBuf {
    let yaml = format!(
        "{}restore:\n  user: postgres\n  allow_unsigned: true\n{extra}",
        harness::config_yaml(id, bucket, "", "")
    );
    let path = dir.join("agent.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn backup(config: &Path) -> String {
    let out = strongroom(config, &["backup", "--engine", "postgresql", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["key"].as_str().unwrap().to_owned()
}

#[test]
fn bad_snapshot_keys_are_refused_before_any_request() {
    // Nothing listens on port 9 and there is no PostgreSQL: any request would fail with a
    // connection error (exit 1), so exit 64 with the key's problem proves none was made.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(
        &path,
        "release: prod\ns3:\n  bucket: backups\n  prefix: backups/app\n  endpoint: http://127.0.0.1:9\n\
         postgresql:\n  host: /nonexistent\n  database: app\n",
    )
    .unwrap();
    let cases = [
        (
            "backups/app/postgresql/prod/../../other/20261123T020000Z.sql.gz",
            "'..'",
        ),
        (
            "backups/other/postgresql/prod/20261123T020000Z.sql.gz",
            "not under",
        ),
        (
            "backups/app/clickhouse/prod/20261123T020000Z.sql.gz",
            "not under",
        ),
        (
            "/backups/app/postgresql/prod/20261123T020000Z.sql.gz",
            "absolute",
        ),
        (
            "backups/app/postgresql/prod/20261123T020000Z.sql.gz;reboot",
            "character",
        ),
        (
            "backups/app/postgresql/prod/20261123T020000Z.manifest.json",
            ".sql.gz or .sql.zst dump",
        ),
    ];
    for (key, why) in cases {
        for command in ["restore", "verify"] {
            let out = strongroom(
                &path,
                &[command, "--engine", "postgresql", "--snapshot", key],
            );
            let all = text(&out);
            assert_eq!(out.status.code(), Some(64), "{command} {key}: {all}");
            assert!(
                all.contains("refused") && all.contains(why),
                "{command} {key}: {all}"
            );
            assert!(
                !all.contains("dispatch failure") && !all.contains("connect"),
                "{all}"
            );
        }
    }
    let long = "x".repeat(64);
    let out = strongroom(
        &path,
        &[
            "restore",
            "--engine",
            "postgresql",
            "--latest",
            "--database",
            &long,
        ],
    );
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(text(&out).contains("1-63 bytes"), "{}", text(&out));
}

#[test]
fn keygen_writes_a_key_pair_without_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["keygen", "--out-dir"])
        .arg(dir.path())
        .env_remove("STRONGROOM_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let private = std::fs::read_to_string(dir.path().join("strongroom-signing.key")).unwrap();
    let public = std::fs::read_to_string(dir.path().join("strongroom-signing.pub")).unwrap();
    assert!(
        private.starts_with("-----BEGIN PRIVATE KEY-----"),
        "{private}"
    );
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
    let again = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["keygen", "--out-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        text(&again).contains("refusing to overwrite"),
        "{}",
        text(&again)
    );
}

async fn verify_passes_skips_incomplete_and_fails_damaged_backups(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    harness::load_sample(&db).await;
    let (bucket, store) = harness::bucket(&id, true).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&id, &bucket, dir.path(), "");
    let key = backup(&config);

    let out = strongroom(&config, &["verify", "--latest", "--deep"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("OK") && all.contains("sha256 ok, gzip complete"),
        "{all}"
    );
    assert!(
        all.contains("UNSIGNED"),
        "verify says the backup is unsigned: {all}"
    );

    // An incomplete run (dump without manifest) is listed but does not fail verification.
    let folder = key.rsplit_once('/').unwrap().0;
    let incomplete = format!("{folder}/20200101T000000Z.sql.gz");
    let sum = PartChecksum::compute(Integrity::Md5, b"partial");
    store
        .put_object(&incomplete, Bytes::from_static(b"partial"), sum, None)
        .await
        .unwrap();
    let out = strongroom(&config, &["verify", "--all"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("SKIP 20200101T000000Z") && all.contains("incomplete"),
        "{all}"
    );

    // A manifest pinning a version that does not exist fails, and so does the whole run.
    let manifest_key = key.replace(".sql.gz", ".manifest.json");
    let bytes = harness::download(store.client(), &bucket, &manifest_key, None).await;
    let mut manifest = Manifest::from_bytes(&manifest_key, &bytes).unwrap();
    let ts = "20300101T000000Z";
    manifest.timestamp = ts.into();
    manifest.objects.truncate(1);
    manifest.objects[0].key = format!("{folder}/{ts}.sql.gz");
    manifest.objects[0].version_id = Some("no-such-version".into());
    let body = manifest.to_bytes();
    for (k, b) in [
        (format!("{folder}/{ts}.manifest.json"), Bytes::from(body)),
        (format!("{folder}/{ts}.sql.gz"), Bytes::from_static(b"x")),
    ] {
        let sum = PartChecksum::compute(Integrity::Md5, &b);
        store.put_object(&k, b, sum, None).await.unwrap();
    }
    let out = strongroom(&config, &["verify", "--all", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let verdicts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let statuses: Vec<&str> = verdicts
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["incomplete", "ok", "failed"], "{verdicts}");
    let problems = verdicts[2]["problems"].to_string();
    assert!(
        problems.contains("no-such-version is missing"),
        "{problems}"
    );
}

async fn a_failing_validation_check_exits_non_zero_naming_it(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    harness::load_sample(&db).await;
    let (bucket, _) = harness::bucket(&id, true).await;
    let dir = tempfile::tempdir().unwrap();
    let checks = "  validation:\n    sql:\n      - name: enough records\n        \
                  query: SELECT count(*) FROM storage_records\n        expect: {min: 1}\n      \
                  - name: impossible total\n        query: SELECT count(*) FROM storage_records\n        \
                  expect: {equals: \"12345\"}\n";
    let config = config_file(&id, &bucket, dir.path(), checks);
    let key = backup(&config);
    let target = format!("{}_check", id.database());
    drop_database(&target).await;
    let out = strongroom(
        &config,
        &[
            "restore",
            "--engine",
            "postgresql",
            "--snapshot",
            &key,
            "--database",
            &target,
            "--create",
        ],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("these checks failed: impossible total"),
        "{all}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], false);
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["impossible total"]);
    // The data itself was restored and verified; only the application-level check failed.
    assert_eq!(
        harness::reference_dump(&target),
        harness::reference_dump(&id.database())
    );
}

async fn audit_chain_verifies_and_reports_removed_or_altered_events(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    harness::load_sample(&db).await;
    let (bucket, store) = harness::bucket(&id, true).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&id, &bucket, dir.path(), "");
    let key = backup(&config);
    let out = strongroom(&config, &["verify", "--latest"]);
    assert!(out.status.success(), "{}", text(&out));
    let target = format!("{}_audit", id.database());
    drop_database(&target).await;
    let out = strongroom(
        &config,
        &[
            "restore",
            "--engine",
            "postgresql",
            "--snapshot",
            &key,
            "--database",
            &target,
            "--create",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    // The audit event is also a log line carrying the event as JSON.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("audit event") && log.contains(r#""action":"restore""#),
        "{log}"
    );

    let out = strongroom(&config, &["audit", "verify"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("3 events, intact"), "{all}");

    let folder = format!(
        "backups/{}/audit/postgresql/llama-mapper/",
        id.test.replace('_', "-")
    );
    let events: Vec<String> = store
        .list(&folder)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(
        events[0].contains("-backup-") && events[2].contains("-restore-"),
        "{events:?}"
    );
    // Altering event 3 (a new version under its key) and hiding event 2 behind a delete marker.
    let forged = b"{\"format_version\":1}\n";
    let sum = PartChecksum::compute(Integrity::Md5, forged);
    store
        .put_object(&events[2], Bytes::from_static(forged), sum, None)
        .await
        .unwrap();
    store
        .client()
        .delete_object()
        .bucket(&bucket)
        .key(&events[1])
        .send()
        .await
        .unwrap();
    let out = strongroom(&config, &["audit", "verify"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("event 2 was removed"), "{all}");
    assert!(all.contains("event 3 was altered"), "{all}");
    assert!(all.contains("BROKEN"), "{all}");
}

/// A re-applied restore Job (same snapshot, target and run id) must not load again over data
/// that lived on since; a new run id or --rerun does.
async fn a_restore_with_a_run_id_runs_once_unless_asked_again(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    harness::load_sample(&db).await;
    let (bucket, _) = harness::bucket(&id, true).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&id, &bucket, dir.path(), "");
    let key = backup(&config);
    let target = format!("{}_once", id.database());
    drop_database(&target).await;
    let restore_with = |config: &Path, run_id: &str, extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--engine",
            "postgresql",
            "--snapshot",
            &key,
            "--database",
            &target,
            "--create",
            "--run-id",
            run_id,
        ];
        args.extend_from_slice(extra);
        strongroom(config, &args)
    };
    let restore = |run_id: &str, extra: &[&str]| restore_with(&config, run_id, extra);
    let first = restore("drill-1", &[]);
    assert!(first.status.success(), "{}", text(&first));
    // Life goes on in the restored database.
    let restored = harness::admin(&target).await;
    restored
        .batch_execute("CREATE TABLE written_after_restore (x int)")
        .await
        .unwrap();

    // The same run again is refused (exit 5: a Job that restored nothing does not look done).
    let again = restore("drill-1", &[]);
    let all = text(&again);
    assert_eq!(again.status.code(), Some(5), "{all}");
    assert!(
        all.contains("run id drill-1 already has a marker")
            && all.contains("restored it at")
            && all.contains("Nothing was changed"),
        "{all}"
    );
    assert!(
        harness::tables_of(&target)
            .await
            .contains(&"public.written_after_restore".to_owned()),
        "the second run must not have touched the database"
    );

    // --rerun restores again, and so does a new run id.
    drop(restored);
    drop_database(&target).await;
    let rerun = restore("drill-1", &["--rerun"]);
    assert!(rerun.status.success(), "{}", text(&rerun));
    let report: serde_json::Value = serde_json::from_slice(&rerun.stdout).unwrap();
    assert_eq!(report["passed"], true, "{}", text(&rerun));
    drop_database(&target).await;
    let other = restore("drill-2", &[]);
    assert!(other.status.success(), "{}", text(&other));
    let report: serde_json::Value = serde_json::from_slice(&other.stdout).unwrap();
    assert_eq!(report["passed"], true, "{}", text(&other));
    drop_database(&target).await;

    // A restore whose checks fail leaves no marker: the same run id may run again.
    std::fs::create_dir_all(dir.path().join("failing")).unwrap();
    let failing = config_file(
        &id,
        &bucket,
        &dir.path().join("failing"),
        "  validation:\n    sql:\n      - name: impossible\n        \
         query: SELECT count(*) FROM storage_records\n        expect: {equals: \"-1\"}\n",
    );
    let run = |config: &Path, run_id: &str| restore_with(config, run_id, &[]);
    let failed = run(&failing, "drill-3");
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    drop_database(&target).await;
    let retried = run(&config, "drill-3");
    assert!(retried.status.success(), "{}", text(&retried));
    drop_database(&target).await;

    // A marker someone planted (it does not describe this run) stops the restore, loudly.
    let pg = harness::pg();
    let marker = strongroom::restore::run_once::marker_key(
        &format!("backups/{}", id.test.replace('_', "-")),
        strongroom::layout::Engine::Postgresql,
        "llama-mapper",
        &key,
        &format!("{}:{}/{target}", pg.socket_dir, pg.port),
        "drill-4",
    );
    let store = strongroom::store::s3::S3Store::connect(
        &harness::config(&format!(
            "release: r\ns3:\n  bucket: {bucket}\n  endpoint: {}\n",
            id.s3.endpoint()
        ))
        .s3,
    )
    .await;
    let body = Bytes::from_static(b"{\"planted\": true}");
    let retention = strongroom::store::Retention {
        mode: strongroom::config::LockMode::Governance,
        retain_until: time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap()
            + time::Duration::days(1),
    };
    store
        .put_object(
            &marker,
            body.clone(),
            PartChecksum::compute(Integrity::Md5, &body),
            Some(&retention),
        )
        .await
        .unwrap();
    let planted = run(&config, "drill-4");
    let all = text(&planted);
    assert_eq!(planted.status.code(), Some(5), "{all}");
    assert!(all.contains("not one this agent writes"), "{all}");
    // Refused before anything was loaded: the target was not even created.
    let exists = harness::admin("postgres")
        .await
        .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&target])
        .await
        .unwrap();
    assert!(exists.is_empty(), "the refused restore created {target}");
}
