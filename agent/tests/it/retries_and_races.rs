//! Retries and races never make a good backup look tampered, and never make two backups look
//! complete under one key; a restore whose report cannot be stored still says what it did.
//! The agent runs as users run it (a separate process), against real PostgreSQL and each real
//! S3 server, some of it through the harness's fault proxy.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::fault_proxy::{Action, Fault, FaultProxy};
use crate::harness::{self, TestId, drop_database, strongroom, text};
use crate::on_each_s3;

on_each_s3!(
    a_manifest_write_retried_after_a_lost_answer_is_accepted,
    of_two_backups_in_one_second_only_the_first_completes,
    a_restore_whose_report_cannot_be_stored_says_so_and_keeps_the_data,
    a_backup_rides_out_throttling_and_resets_and_fails_cleanly_when_s3_stays_down,
);

/// A signed config in `dir` for `id`'s database and `bucket`, reaching S3 at `endpoint`.
fn config_file(id: &TestId, bucket: &str, dir: &Path, endpoint: &str) -> PathBuf {
    let (private, public) = harness::keypair(dir);
    let yaml = harness::config_yaml(id, bucket, "", "").replace(&id.s3.endpoint(), endpoint);
    let yaml = format!(
        "{yaml}signing:\n  private_key_file: {}\n  public_key_file: {}\nrestore:\n  user: postgres\n",
        private.display(),
        public.display()
    );
    let path = dir.join("agent.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

async fn sample(id: &TestId) {
    let db = harness::fresh_database(&id.database()).await;
    db.batch_execute("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000);")
        .await
        .unwrap();
}

fn backup_key(out: &Output) -> String {
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("backup --json: {e}: {}", text(out)));
    report["key"].as_str().unwrap().to_owned()
}

async fn a_manifest_write_retried_after_a_lost_answer_is_accepted(id: TestId) {
    sample(&id).await;
    let dir = tempfile::tempdir().unwrap();
    let (bucket, store) = harness::bucket(&id, true).await;
    let proxy = FaultProxy::start(&id.s3.endpoint()).await;
    // The server stores the manifest, the agent never hears it did: the SDK sends it again.
    proxy.add(Fault::put_object(
        "*.manifest.json",
        Action::DropResponse,
        1,
    ));
    let config = config_file(&id, &bucket, dir.path(), &proxy.url);
    let out = strongroom(&config, &["backup", "--engine", "postgresql", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let key = backup_key(&out);
    assert_eq!(
        proxy.count("PUT", "*.manifest.json"),
        2,
        "the manifest PUT was retried: {:?}",
        proxy.disturbed()
    );
    let manifest = key.replace(".sql.gz", ".manifest.json");
    let versions = strongroom::store::versions::KeyVersions::of(&*store, &manifest)
        .await
        .unwrap();
    // Ceph RGW ignores If-None-Match on a versioned bucket (two versions, the same bytes);
    // moto refuses the second write (one version).
    eprintln!("{} holds {}", manifest, versions.describe());

    let out = strongroom(&config, &["verify", "--snapshot", &key]);
    assert!(out.status.success(), "{}", text(&out));
    let target = format!("{}_retried", id.database());
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
    assert_eq!(harness::tables_of(&target).await, vec!["public.t"]);
}

async fn of_two_backups_in_one_second_only_the_first_completes(id: TestId) {
    sample(&id).await;
    let dir = tempfile::tempdir().unwrap();
    let (bucket, _store) = harness::bucket(&id, true).await;
    let config = config_file(&id, &bucket, dir.path(), &id.s3.endpoint());
    // Both start together, early in a second; if they still land in two seconds, both are
    // fine backups and the race is run again.
    for attempt in 1..=3 {
        let now = time::OffsetDateTime::now_utc();
        let wait = 1_000_000_000 - i64::from(now.nanosecond()) + 50_000_000;
        tokio::time::sleep(Duration::from_nanos(wait as u64)).await;
        let run = || {
            Command::new(env!("CARGO_BIN_EXE_strongroom"))
                .args(["backup", "--engine", "postgresql", "--json", "--config"])
                .arg(&config)
                .env_remove("RUST_LOG")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (run(), run());
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        if a.status.success() && b.status.success() {
            assert_ne!(
                backup_key(&a),
                backup_key(&b),
                "two backups completed under one key"
            );
            eprintln!("attempt {attempt}: the two backups started in different seconds");
            continue;
        }
        let (won, lost) = if a.status.success() { (a, b) } else { (b, a) };
        assert!(
            won.status.success(),
            "neither completed:\n{}\n{}",
            text(&won),
            text(&lost)
        );
        let message = text(&lost);
        assert!(
            message.contains("wrote") && message.contains("first")
                || message.contains("already holds"),
            "the second says why it stopped: {message}"
        );
        let key = backup_key(&won);
        // One complete backup under that key, and it restores.
        let out = strongroom(&config, &["list", "--json"]);
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let same_key: Vec<&serde_json::Value> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["key"] == key.as_str())
            .collect();
        assert_eq!(same_key.len(), 1, "{listed}");
        assert_eq!(same_key[0]["complete"], true, "{listed}");
        let out = strongroom(&config, &["verify", "--snapshot", &key]);
        assert!(out.status.success(), "{}", text(&out));
        let target = format!("{}_race", id.database());
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
        return;
    }
    panic!("the two backups never started in the same second");
}

async fn a_restore_whose_report_cannot_be_stored_says_so_and_keeps_the_data(id: TestId) {
    sample(&id).await;
    let dir = tempfile::tempdir().unwrap();
    let (bucket, _store) = harness::bucket(&id, true).await;
    let proxy = FaultProxy::start(&id.s3.endpoint()).await;
    let config = config_file(&id, &bucket, dir.path(), &proxy.url);
    let out = strongroom(&config, &["backup", "--engine", "postgresql", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let key = backup_key(&out);
    proxy.add(Fault::put_object(
        "/reports/",
        Action::Respond(403, "AccessDenied"),
        100,
    ));
    let target = format!("{}_noreport", id.database());
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
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("restored and validated into")
            && text(&out).contains("report not stored"),
        "{}",
        text(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], true);
    assert!(report["report_key"].is_null());
    assert!(
        report["report_error"]
            .as_str()
            .unwrap()
            .contains("AccessDenied")
    );
    assert_eq!(harness::tables_of(&target).await, vec!["public.t"]);
}

/// Enough poorly compressible rows for a dump of several 5 MiB parts.
async fn several_parts(id: &TestId) {
    let db = harness::fresh_database(&id.database()).await;
    db.batch_execute(
        "CREATE TABLE t AS SELECT i, md5(i::text) || md5((i * 7)::text) || md5((i * 13)::text) \
         AS v FROM generate_series(1, 200000) i",
    )
    .await
    .unwrap();
}

async fn open_uploads(store: &strongroom::store::s3::S3Store) -> usize {
    store
        .client()
        .list_multipart_uploads()
        .bucket(store.bucket())
        .send()
        .await
        .unwrap()
        .uploads()
        .len()
}

async fn a_backup_rides_out_throttling_and_resets_and_fails_cleanly_when_s3_stays_down(id: TestId) {
    several_parts(&id).await;
    let dir = tempfile::tempdir().unwrap();
    let (bucket, store) = harness::bucket(&id, true).await;
    let proxy = FaultProxy::start(&id.s3.endpoint()).await;
    let config = config_file(&id, &bucket, dir.path(), &proxy.url);

    // A burst of SlowDown answers to one part, longer than the SDK's default 3 attempts (and
    // the 5 the agent used to allow), then two connection resets in the middle of a part.
    proxy.add(Fault::upload_part(
        "*.sql.gz",
        1,
        Action::Respond(503, "SlowDown"),
        6,
    ));
    let out = strongroom(&config, &["backup", "--engine", "postgresql", "--json"]);
    assert!(
        out.status.success(),
        "{}\n{:?}",
        text(&out),
        proxy.disturbed()
    );
    assert_eq!(proxy.disturbed().len(), 6, "{:?}", proxy.disturbed());
    proxy.add(Fault::upload_part("*.sql.gz", 2, Action::Reset, 2));
    let out = strongroom(&config, &["backup", "--engine", "postgresql", "--json"]);
    assert!(
        out.status.success(),
        "{}\n{:?}",
        text(&out),
        proxy.disturbed()
    );
    assert_eq!(proxy.disturbed().len(), 8, "{:?}", proxy.disturbed());
    let key = backup_key(&out);
    let out = strongroom(&config, &["verify", "--snapshot", &key]);
    assert!(out.status.success(), "{}", text(&out));
    let parts = proxy.count("PUT", "*.sql.gz");
    assert!(
        parts > 8,
        "parts went through the proxy: {parts}, {:?}",
        proxy.disturbed()
    );

    // S3 stays down for parts: past s3.max_attempts the backup fails, aborts its upload and
    // writes no manifest.
    let before = strongroom(&config, &["list", "--json"]);
    let before: serde_json::Value = serde_json::from_slice(&before.stdout).unwrap();
    let yaml = std::fs::read_to_string(&config).unwrap().replace(
        "  part_size_mib: 5\n",
        "  part_size_mib: 5\n  max_attempts: 3\n",
    );
    std::fs::write(&config, yaml).unwrap();
    proxy.add(Fault::upload_part(
        "*.sql.gz",
        1,
        Action::Respond(503, "ServiceUnavailable"),
        1000,
    ));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = strongroom(&config, &["backup", "--engine", "postgresql"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("UploadPart"),
        "names the failed call: {}",
        text(&out)
    );
    let after = strongroom(&config, &["list", "--json"]);
    let after: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(
        before, after,
        "the failed run left no backup, complete or not"
    );
    assert_eq!(open_uploads(&store).await, 0, "its upload was aborted");
}
