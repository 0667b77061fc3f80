//! ClickHouse against the real engine (chdb behind `e2e/harness/chdb_http.py`) and real S3
//! servers: round trip with exact row counts and content checksums, incremental chains,
//! tampered objects refused before ClickHouse reads them, failing BACKUPs leaving no manifest,
//! the refusal of a server too old to back up (Debian's clickhouse-server 18.16), and the
//! daemon running ClickHouse and PostgreSQL side by side.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use strongroom::backup::{self, BackupReport};
use strongroom::config::Config;
use strongroom::error::Error;
use strongroom::layout::Engine;
use strongroom::locked_write::WritePolicy;
use strongroom::manifest::Manifest;
use strongroom::pipeline::Progress;
use strongroom::restore::{self, RestoreOptions, RestoreReport, SnapshotChoice};
use strongroom::store::ObjectStore;
use strongroom::store::s3::S3Store;
use strongroom::store::versions::KeyVersions;
use strongroom::verify::{self, Selection, Status};

use crate::daemon::{Agent, free_port};
use crate::harness::{self, S3Kind, TestId, env};
use crate::on_each_s3;

on_each_s3!(
    clickhouse_round_trip_restores_exact_rows_and_content,
    clickhouse_incremental_chain_round_trip,
    clickhouse_incremental_keeps_its_chain_locked_and_verified,
    clickhouse_tampered_objects_are_refused_before_restore,
    clickhouse_failed_backup_leaves_no_manifest,
    clickhouse_a_backup_lost_by_a_restarted_server_fails_in_bounded_time,
    clickhouse_a_backup_given_up_on_is_stopped_on_the_server,
    clickhouse_scratch_drill_restores_renamed_databases_and_drops_them,
);

/// Runs SQL on the test ClickHouse (chdb) as the harness user; the result as TSV.
async fn sql(query: &str) -> String {
    sql_on(&env("STRONGROOM_TEST_CLICKHOUSE_URL"), query).await
}

async fn sql_on(url: &str, query: &str) -> String {
    let password = std::fs::read_to_string(env("STRONGROOM_TEST_CLICKHOUSE_PASSWORD_FILE"))
        .unwrap()
        .trim()
        .to_owned();
    let client = clickhouse::Client::default()
        .with_url(url)
        .with_user(env("STRONGROOM_TEST_CLICKHOUSE_USER"))
        .with_password(password)
        .with_compression(clickhouse::Compression::None);
    let bytes = client
        .query(query)
        .fetch_bytes("TabSeparated")
        .unwrap()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The test's database and a named collection for its bucket (the server-side credentials
/// an operator configures once).
struct Fixture {
    db: String,
    collection: String,
}

async fn fixture(id: &TestId, bucket: &str) -> Fixture {
    fixture_as(id, bucket, ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")).await
}

/// The fixture with the collection signing as the S3 user whose key and secret are in the
/// environment variables `credentials` names.
async fn fixture_as(id: &TestId, bucket: &str, credentials: (&str, &str)) -> Fixture {
    let db = id.database();
    let collection = format!("nc_{db}");
    sql(&format!("DROP DATABASE IF EXISTS {db} SYNC")).await;
    sql(&format!("DROP NAMED COLLECTION IF EXISTS {collection}")).await;
    sql(&format!(
        "CREATE NAMED COLLECTION {collection} AS url = '{}/{bucket}/', \
         access_key_id = '{}', secret_access_key = '{}'",
        id.s3.endpoint(),
        env(credentials.0),
        env(credentials.1)
    ))
    .await;
    sql(&format!("CREATE DATABASE {db}")).await;
    Fixture { db, collection }
}

/// Several MergeTree tables (a Nullable, an Array, a partitioned table with several parts,
/// an empty one) and `storage_records`.
async fn load_tables(db: &str) {
    for statement in [
        format!(
            "CREATE TABLE {db}.storage_records (id UInt64, body String, score Nullable(Float64), \
             tags Array(String), created DateTime) ENGINE = MergeTree ORDER BY id"
        ),
        format!(
            "INSERT INTO {db}.storage_records SELECT number, \
             concat('record ', toString(number), ' ünïcødé'), \
             if(number % 5 = 0, NULL, number / 7), arrayMap(x -> toString(x), range(number % 4)), \
             toDateTime('2026-01-01 00:00:00') + number FROM numbers(20000)"
        ),
        format!(
            "INSERT INTO {db}.storage_records SELECT 100000 + number, 'second part', NULL, [], \
             toDateTime('2026-02-01 00:00:00') FROM numbers(777)"
        ),
        format!(
            "CREATE TABLE {db}.events (day Date, kind LowCardinality(String), n UInt32) \
             ENGINE = MergeTree PARTITION BY toYYYYMM(day) ORDER BY (day, kind)"
        ),
        format!(
            "INSERT INTO {db}.events SELECT toDate('2026-01-01') + number % 90, \
             ['a', 'b', 'c'][number % 3 + 1], number FROM numbers(9000)"
        ),
        format!("CREATE TABLE {db}.empty (x UInt8) ENGINE = MergeTree ORDER BY x"),
    ] {
        sql(&statement).await;
    }
}

/// Per table: row count and a checksum over every column of every row.
async fn fingerprint(db: &str) -> Vec<String> {
    let mut out = Vec::new();
    for table in ["storage_records", "events", "empty"] {
        let line = sql(&format!(
            "SELECT '{table}', count(), groupBitXor(cityHash64(*)) FROM {db}.{table}"
        ))
        .await;
        out.push(line.trim().to_owned());
    }
    out
}

fn config_for(id: &TestId, bucket: &str, f: &Fixture, extra: &str) -> (String, Config) {
    let yaml = format!(
        "release: llama-mapper\n\
         s3:\n  bucket: {bucket}\n  prefix: backups/{test}\n  endpoint: {endpoint}\n\
         clickhouse:\n  url: {url}\n  user: {user}\n  password_file: {pw}\n  \
         databases: [{db}]\n  named_collection: {collection}\n  poll_interval_ms: 100\n{extra}\
         log:\n  format: text\n",
        test = id.test.replace('_', "-"),
        endpoint = id.s3.endpoint(),
        url = env("STRONGROOM_TEST_CLICKHOUSE_URL"),
        user = env("STRONGROOM_TEST_CLICKHOUSE_USER"),
        pw = env("STRONGROOM_TEST_CLICKHOUSE_PASSWORD_FILE"),
        db = f.db,
        collection = f.collection,
    );
    let config = harness::config(&yaml);
    (yaml, config)
}

async fn run_backup(config: &Config, store: &Arc<S3Store>) -> Result<BackupReport, Error> {
    let cancel = tokio_util::sync::CancellationToken::new();
    backup::run_recorded(
        config,
        Engine::Clickhouse,
        Arc::clone(store),
        &Progress::default(),
        &cancel,
    )
    .await
}

async fn run_restore(
    config: &Config,
    store: &Arc<S3Store>,
    key: &str,
    force: bool,
) -> Result<RestoreReport, Error> {
    let options = RestoreOptions {
        database: None,
        force,
        create: false,
        allow_unsigned: true,
        ..RestoreOptions::default()
    };
    restore::clickhouse::preflight(config, &options)?;
    let choice = SnapshotChoice::Key(key.to_owned());
    let snapshot = restore::resolve_snapshot(&**store, config, Engine::Clickhouse, &choice).await?;
    let policy = WritePolicy::prepare(&**store, &config.s3).await?;
    restore::clickhouse::restore_clickhouse(config, &**store, &policy, None, &snapshot, &options)
        .await
}

async fn manifest_of(store: &S3Store, report: &BackupReport) -> Manifest {
    let bytes = strongroom::store::read_small(store, &report.manifest_key, None, 1 << 24)
        .await
        .unwrap();
    Manifest::from_bytes(&report.manifest_key, &bytes).unwrap()
}

async fn verify_all(config: &Config, store: &S3Store, deep: bool) -> Vec<verify::Verdict> {
    let selected = verify::select(store, config, Engine::Clickhouse, &Selection::All)
        .await
        .unwrap();
    let mut verdicts = Vec::new();
    for (snapshot, complete) in &selected {
        verdicts.push(verify::verify_one(store, config, snapshot, *complete, None, deep).await);
    }
    verdicts
}

async fn clickhouse_round_trip_restores_exact_rows_and_content(id: TestId) {
    let (bucket, store) = harness::bucket(&id, true).await;
    let f = fixture(&id, &bucket).await;
    load_tables(&f.db).await;
    let before = fingerprint(&f.db).await;
    let (_, config) = config_for(&id, &bucket, &f, "");

    let report = run_backup(&config, &store).await.expect("backup succeeds");
    assert!(report.key.ends_with('/'), "{}", report.key);
    let manifest = manifest_of(&store, &report).await;
    let details = manifest.clickhouse.clone().expect("clickhouse section");
    assert_eq!(details.chain_length, 0);
    assert!(details.base_backup.is_none());
    let rows: Vec<(String, Option<u64>)> = details
        .tables
        .iter()
        .map(|t| (t.table.clone(), t.rows))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("empty".to_owned(), Some(0)),
            ("events".to_owned(), Some(9000)),
            ("storage_records".to_owned(), Some(20777)),
        ]
    );
    assert!(
        details.tables.iter().any(|t| t.parts >= 3),
        "partitioned table has several parts: {:?}",
        details.tables
    );
    // Every object is pinned, sized, and carries the required retention.
    assert!(manifest.objects.len() > 10, "{:?}", manifest.objects.len());
    assert!(manifest.objects.iter().all(|o| o.version_id.is_some()));
    assert!(!manifest.objects.iter().any(|o| o.key.ends_with("/.lock")));
    let required = manifest.retention.clone().expect("locked");
    for o in &manifest.objects {
        let r = store
            .retention(&o.key, o.version_id.as_deref())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{} has no retention", o.key));
        assert!(r.retain_until >= required.retain_until, "{}", o.key);
    }
    let verdicts = verify_all(&config, &store, true).await;
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].status, Status::Ok, "{:?}", verdicts[0].problems);
    assert!(
        verdicts[0]
            .deep
            .as_deref()
            .unwrap()
            .contains(".backup sha256 ok")
    );

    // Existing data is not overwritten without --force.
    let e = run_restore(&config, &store, &report.key, false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already hold data"), "{e}");

    sql(&format!("DROP DATABASE {} SYNC", f.db)).await;
    let restored = run_restore(&config, &store, &report.key, false)
        .await
        .expect("restore succeeds");
    assert!(restored.passed, "{:?}", restored.checks);
    // The .backup ClickHouse restored from hashes to what the backup recorded.
    assert_eq!(restored.actual_sha256, report.sha256);
    assert_eq!(restored.expected_sha256, report.sha256);
    assert_eq!(
        restored
            .checks
            .iter()
            .filter(|c| c.kind == strongroom::validate::CheckKind::RowCount)
            .count(),
        3
    );
    assert_eq!(fingerprint(&f.db).await, before);
    assert!(
        restored
            .report_key
            .unwrap()
            .contains("/reports/clickhouse/")
    );
}

/// `strongroom drill --engine clickhouse`: the backup restored under renamed databases,
/// counted and checked there (`{database}` in a SQL check names the renamed one), dropped
/// afterwards, the source untouched; the report stored locked and listed.
async fn clickhouse_scratch_drill_restores_renamed_databases_and_drops_them(id: TestId) {
    let (bucket, store) = harness::bucket(&id, true).await;
    let f = fixture(&id, &bucket).await;
    load_tables(&f.db).await;
    let before = fingerprint(&f.db).await;
    let (yaml, config) = config_for(&id, &bucket, &f, "");
    run_backup(&config, &store).await.expect("backup succeeds");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(
        &path,
        format!(
            "{yaml}restore:\n  allow_unsigned: true\n  clickhouse:\n    sql:\n      - name: \
             events in the drill database\n        query: SELECT count() FROM \
             {{database}}.events\n        expect: {{equals: '9000'}}\n"
        ),
    )
    .unwrap();
    let out = harness::strongroom(&path, &["drill", "--engine", "clickhouse", "--json"]);
    let all = harness::text(&out);
    assert!(out.status.success(), "{all}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verdict"], "PASS", "{report:#}");
    assert_eq!(report["rto_goal_seconds"], 2700.0);
    let checks = report["restore"]["checks"].as_array().unwrap();
    let renamed = checks
        .iter()
        .filter(|c| c["kind"] == "row_count")
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(renamed.len(), 3, "{checks:?}");
    assert!(
        renamed
            .iter()
            .all(|n| n.starts_with(&format!("rows in {}_drill_", f.db))),
        "{renamed:?}"
    );
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "events in the drill database" && c["passed"] == true),
        "{checks:?}"
    );
    let left = sql(&format!(
        "SELECT count() FROM system.databases WHERE startsWith(name, '{}_drill_')",
        f.db
    ))
    .await;
    assert_eq!(left.trim(), "0", "scratch databases left behind");
    assert!(
        report["cleanup"][0]
            .as_str()
            .unwrap()
            .contains(&format!("{}_drill_", f.db)),
        "{report:#}"
    );
    assert_eq!(fingerprint(&f.db).await, before, "the source changed");
    let key = report["report_key"].as_str().unwrap();
    assert!(key.contains("/drills/clickhouse/llama-mapper/"), "{key}");
    let r = store.retention(key, None).await.unwrap();
    assert!(r.is_some(), "{key} is not locked");
    let out = harness::strongroom(&path, &["drill", "list", "--engine", "clickhouse"]);
    assert!(out.status.success(), "{}", harness::text(&out));
    assert!(
        harness::text(&out).contains("PASS"),
        "{}",
        harness::text(&out)
    );
    let out = harness::strongroom(&path, &["audit", "verify", "--engine", "clickhouse"]);
    assert!(out.status.success(), "{}", harness::text(&out));
}

async fn clickhouse_incremental_chain_round_trip(id: TestId) {
    let (bucket, store) = harness::bucket(&id, true).await;
    let f = fixture(&id, &bucket).await;
    load_tables(&f.db).await;
    let (_, config) = config_for(&id, &bucket, &f, "  full_every: 3\n");
    let db = &f.db;

    let full = run_backup(&config, &store).await.expect("full backup");
    let mut states = vec![fingerprint(db).await];
    let mut reports = vec![full];
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        sql(&format!(
            "INSERT INTO {db}.storage_records SELECT 500000 + {round} * 1000 + number, \
             'round {round}', {round}, ['r'], now() FROM numbers(100 + {round})"
        ))
        .await;
        reports.push(run_backup(&config, &store).await.expect("backup"));
        states.push(fingerprint(db).await);
    }
    let mut chain = Vec::new();
    for r in &reports {
        let details = manifest_of(&store, r).await.clickhouse.unwrap();
        chain.push((details.chain_length, details.base_backup.clone()));
    }
    assert_eq!(chain[0], (0, None));
    assert_eq!(chain[1], (1, Some(reports[0].key.clone())));
    assert_eq!(chain[2], (2, Some(reports[1].key.clone())));
    assert_eq!(chain[3], (0, None), "every 3rd backup is full again");
    let incremental = manifest_of(&store, &reports[2]).await;
    let full = manifest_of(&store, &reports[0]).await;
    assert!(
        incremental.objects.len() < full.objects.len(),
        "the increment stores only new parts"
    );
    let records = |m: &Manifest| {
        m.clickhouse
            .as_ref()
            .unwrap()
            .tables
            .iter()
            .find(|t| t.table == "storage_records")
            .unwrap()
            .rows
    };
    assert_eq!(records(&incremental), Some(20777 + 100 + 101));
    // The increment names its base by collection, with no credential in the metadata that
    // Object Lock keeps for years.
    let metadata = harness::download(
        store.client(),
        &bucket,
        &format!("{}.backup", reports[2].key),
        None,
    )
    .await;
    let metadata = String::from_utf8(metadata).unwrap();
    assert!(
        metadata.contains(&format!("<base_backup>S3({}, ", f.collection)),
        "{metadata}"
    );
    assert!(!metadata.contains(&env("AWS_SECRET_ACCESS_KEY")));
    assert!(!metadata.contains(&env("AWS_ACCESS_KEY_ID")));

    let verdicts = verify_all(&config, &store, true).await;
    assert!(
        verdicts.iter().all(|v| v.status == Status::Ok),
        "{:?}",
        verdicts.iter().map(|v| &v.problems).collect::<Vec<_>>()
    );

    sql(&format!("DROP DATABASE {db} SYNC")).await;
    let restored = run_restore(&config, &store, &reports[2].key, false)
        .await
        .expect("restore through the chain");
    assert!(restored.passed, "{:?}", restored.checks);
    assert!(
        restored
            .warnings
            .iter()
            .any(|w| w.contains("2 base backup"))
    );
    assert_eq!(fingerprint(db).await, states[2]);

    // A chain with a broken link is refused before ClickHouse is asked.
    sql(&format!("DROP DATABASE {db} SYNC")).await;
    let base_manifest = reports[0].manifest_key.clone();
    store
        .client()
        .put_object()
        .bucket(&bucket)
        .key(&base_manifest)
        .body(b"{}".to_vec().into())
        .content_md5(base64_md5(b"{}"))
        .send()
        .await
        .unwrap();
    let e = run_restore(&config, &store, &reports[2].key, false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("missing link"), "{e}");
    assert!(e.to_string().contains(&reports[0].key), "{e}");
    let tables = sql(&format!(
        "SELECT count() FROM system.databases WHERE name = '{db}'"
    ))
    .await;
    assert_eq!(tables.trim(), "0", "nothing restored");
    let verdicts = verify_all(&config, &store, false).await;
    let third = verdicts
        .iter()
        .find(|v| v.snapshot == reports[2].key)
        .unwrap();
    assert_eq!(third.status, Status::Failed);
}

/// Retention, mode and retain-until, of one object version as the store reads it (moto's
/// GetObjectRetention answer is unreadable; the store falls back to HEAD there).
async fn retain_until(store: &S3Store, key: &str, version: Option<&str>) -> time::OffsetDateTime {
    store
        .retention(key, version)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{key} has no retention"))
        .retain_until
}

/// Every base of an incremental stays locked as long as the incremental (extending is always
/// allowed), and verify of the incremental checks the bases' objects, not only their manifests.
async fn clickhouse_incremental_keeps_its_chain_locked_and_verified(id: TestId) {
    let (bucket, store) = harness::bucket(&id, true).await;
    let f = fixture(&id, &bucket).await;
    load_tables(&f.db).await;
    let keys = tempfile::tempdir().unwrap();
    let (private, _) = harness::keypair(keys.path());
    let extra = format!(
        "  full_every: 3\nsigning:\n  private_key_file: {}\n",
        private.display()
    );
    let (_, config) = config_for(&id, &bucket, &f, &extra);
    let db = &f.db;

    let full = run_backup(&config, &store).await.expect("full backup");
    let mut reports = vec![full];
    // Ten rows each round: the second increment's new part has a count.txt of the same bytes
    // as the first's, which ClickHouse then takes from the base by checksum, not by name.
    for round in 0..2 {
        // Later by at least a second, so each incremental's retain-until is later too.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        sql(&format!(
            "INSERT INTO {db}.storage_records SELECT 700000 + {round} * 1000 + number, \
             'round {round}', {round}, ['r'], now() FROM numbers(10)"
        ))
        .await;
        reports.push(
            run_backup(&config, &store)
                .await
                .expect("incremental backup"),
        );
    }
    let newest = manifest_of(&store, &reports[2]).await;
    let details = newest.clickhouse.as_ref().unwrap();
    assert_eq!(details.chain_length, 2);
    let records = details.tables.iter().find(|t| t.table == "storage_records");
    assert_eq!(records.unwrap().rows, Some(20777 + 20));
    let until = newest.retention.clone().expect("locked").retain_until;
    assert!(until > reports[0].retain_until.unwrap(), "a later backup");
    // Both bases (objects, manifest, signature) are locked at least as long as the newest.
    for base in &reports[..2] {
        let manifest = manifest_of(&store, base).await;
        assert!(manifest.clickhouse.is_some());
        let mut pinned: Vec<(String, Option<String>)> = manifest
            .objects
            .iter()
            .map(|o| (o.key.clone(), o.version_id.clone()))
            .collect();
        let signature = format!("{}.sig", base.manifest_key);
        for key in [&base.manifest_key, &signature] {
            let versions = KeyVersions::of(&*store, key).await.unwrap();
            assert_eq!(versions.all.len(), 1, "{key}: {versions:?}");
            pinned.push((key.clone(), versions.all[0].version_id.clone()));
        }
        for (key, version) in &pinned {
            let base_until = retain_until(&store, key, version.as_deref()).await;
            assert!(
                base_until >= until,
                "{key} is locked until {base_until}, before {until} of {}, which depends on it",
                reports[2].key
            );
        }
    }
    let verdicts = verify_all(&config, &store, false).await;
    assert_eq!(verdicts.len(), 3);
    assert!(
        verdicts.iter().all(|v| v.status == Status::Ok),
        "{:?}",
        verdicts.iter().map(|v| &v.problems).collect::<Vec<_>>()
    );

    // A newer version of one of the full backup's files: ClickHouse would read it when it
    // restores the newest incremental, so verify of the incremental fails naming the base.
    let full_manifest = manifest_of(&store, &reports[0]).await;
    let data_files: Vec<&str> = full_manifest
        .objects
        .iter()
        .filter(|o| o.key.ends_with(".bin"))
        .map(|o| o.key.as_str())
        .collect();
    assert!(data_files.len() >= 2, "{data_files:?}");
    let forged = b"not the original column data".to_vec();
    store
        .client()
        .put_object()
        .bucket(&bucket)
        .key(data_files[0])
        .content_md5(base64_md5(&forged))
        .body(forged.into())
        .send()
        .await
        .unwrap();
    let verdicts = verify_all(&config, &store, false).await;
    let incremental = verdicts
        .iter()
        .find(|v| v.snapshot == reports[2].key)
        .unwrap();
    assert_eq!(incremental.status, Status::Failed, "{incremental:?}");
    let named = format!(
        "base backup {}: {} has a newer version above the pinned",
        reports[0].key, data_files[0]
    );
    assert!(
        incremental.problems.iter().any(|p| p.starts_with(&named)),
        "{named}: {:?}",
        incremental.problems
    );

    // A delete marker on another of its files: the same, said as such.
    store
        .client()
        .delete_object()
        .bucket(&bucket)
        .key(data_files[1])
        .send()
        .await
        .unwrap();
    let verdicts = verify_all(&config, &store, false).await;
    let incremental = verdicts
        .iter()
        .find(|v| v.snapshot == reports[2].key)
        .unwrap();
    assert_eq!(incremental.status, Status::Failed);
    let named = format!(
        "base backup {}: {} is hidden by a delete marker",
        reports[0].key, data_files[1]
    );
    assert!(
        incremental.problems.iter().any(|p| p.starts_with(&named)),
        "{named}: {:?}",
        incremental.problems
    );
    // And restore refuses it before ClickHouse is asked.
    sql(&format!("DROP DATABASE {db} SYNC")).await;
    let e = run_restore(&config, &store, &reports[2].key, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("refused before ClickHouse was asked"), "{e}");
    assert!(e.contains(data_files[1]), "{e}");
}

fn base64_md5(bytes: &[u8]) -> String {
    use base64::Engine as _;
    use md5::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
}

async fn clickhouse_tampered_objects_are_refused_before_restore(id: TestId) {
    let (bucket, store) = harness::bucket(&id, true).await;
    let f = fixture(&id, &bucket).await;
    load_tables(&f.db).await;
    let (_, config) = config_for(&id, &bucket, &f, "");
    let report = run_backup(&config, &store).await.expect("backup");
    let manifest = manifest_of(&store, &report).await;
    sql(&format!("DROP DATABASE {} SYNC", f.db)).await;

    // A new version under the same key: ClickHouse would read it instead of the backed-up one.
    let altered = manifest
        .objects
        .iter()
        .find(|o| o.key.ends_with("/data.bin"))
        .expect("a data file")
        .key
        .clone();
    let forged = b"not the original column data".to_vec();
    store
        .client()
        .put_object()
        .bucket(&bucket)
        .key(&altered)
        .content_md5(base64_md5(&forged))
        .body(forged.into())
        .send()
        .await
        .unwrap();
    let e = run_restore(&config, &store, &report.key, false)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("refused before ClickHouse was asked"),
        "{text}"
    );
    assert!(text.contains(&altered), "{text}");
    let dbs = sql(&format!(
        "SELECT count() FROM system.databases WHERE name = '{}'",
        f.db
    ))
    .await;
    assert_eq!(dbs.trim(), "0", "ClickHouse restored nothing");
    // verify says what restore will do: this backup cannot be restored as it is.
    let verdicts = verify_all(&config, &store, false).await;
    assert_eq!(verdicts[0].status, Status::Failed, "{:?}", verdicts[0]);
    assert!(
        verdicts[0]
            .problems
            .iter()
            .any(|p| p.starts_with(&format!("{altered} has a newer version above the pinned"))),
        "{:?}",
        verdicts[0].problems
    );

    // A delete marker hides an object from ClickHouse: refused too.
    let hidden = manifest
        .objects
        .iter()
        .find(|o| o.key.ends_with("/count.txt"))
        .unwrap()
        .key
        .clone();
    store
        .client()
        .delete_object()
        .bucket(&bucket)
        .key(&hidden)
        .send()
        .await
        .unwrap();
    let e = run_restore(&config, &store, &report.key, false)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("{hidden} is hidden by a delete marker")),
        "{e}"
    );
    let verdicts = verify_all(&config, &store, false).await;
    assert_eq!(verdicts[0].status, Status::Failed, "{:?}", verdicts[0]);
    assert!(
        verdicts[0]
            .problems
            .iter()
            .any(|p| p.starts_with(&format!("{hidden} is hidden by a delete marker"))),
        "{:?}",
        verdicts[0].problems
    );
}

async fn clickhouse_failed_backup_leaves_no_manifest(id: TestId) {
    let (bucket, store) = harness::bucket(&id, true).await;
    let f = fixture(&id, &bucket).await;
    load_tables(&f.db).await;
    let broken = Fixture {
        db: f.db.clone(),
        collection: "no_such_collection".into(),
    };
    let (_, config) = config_for(&id, &bucket, &broken, "");
    let e = run_backup(&config, &store).await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("no_such_collection"), "{text}");
    assert!(
        text.contains("BACKUP"),
        "ClickHouse's own error text: {text}"
    );
    let listed = strongroom::list::list_backups(&*store, &config, Engine::Clickhouse)
        .await
        .unwrap();
    assert!(listed.iter().all(|b| !b.complete), "{listed:?}");
    let manifests: Vec<_> = store
        .list(&format!("{}/clickhouse/", config.s3.prefix))
        .await
        .unwrap()
        .into_iter()
        .filter(|o| o.key.ends_with(".manifest.json"))
        .collect();
    assert!(manifests.is_empty(), "{manifests:?}");

    // A BACKUP that ClickHouse reports failed (the database is gone) is reported with its text.
    let (_, config) = config_for(&id, &bucket, &f, "");
    sql(&format!("DROP DATABASE {} SYNC", f.db)).await;
    let e = run_backup(&config, &store).await.unwrap_err();
    assert!(e.to_string().contains(&f.db), "{e}");
}

/// A chdb front end of the test's own, which it may kill and start again (a server restart:
/// `system.backups` forgets every operation).
struct OwnClickHouse {
    child: std::process::Child,
    data: tempfile::TempDir,
    port: u16,
}

impl OwnClickHouse {
    fn start(data: tempfile::TempDir, port: u16) -> OwnClickHouse {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/harness/chdb_http.py");
        let python = std::path::Path::new(&env("STRONGROOM_TEST_VENV")).join("bin/python");
        let child = std::process::Command::new(python)
            .arg(script)
            .arg("--data")
            .arg(data.path())
            .args(["--port", &port.to_string()])
            .args(["--user", &env("STRONGROOM_TEST_CLICKHOUSE_USER")])
            .args([
                "--password-file",
                &env("STRONGROOM_TEST_CLICKHOUSE_PASSWORD_FILE"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "chdb never came up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        OwnClickHouse { child, data, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, then the same data directory and port again.
    fn restart(mut self) -> OwnClickHouse {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let (data, port) = (
            std::mem::replace(&mut self.data, tempfile::tempdir().unwrap()),
            self.port,
        );
        OwnClickHouse::start(data, port)
    }
}

impl Drop for OwnClickHouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn clickhouse_a_backup_lost_by_a_restarted_server_fails_in_bounded_time(id: TestId) {
    let (bucket, store) = harness::bucket(&id, true).await;
    let own = OwnClickHouse::start(tempfile::tempdir().unwrap(), free_port());
    let db = id.database();
    for statement in [
        format!(
            "CREATE NAMED COLLECTION nc_{db} AS url = '{}/{bucket}/', access_key_id = '{}', \
             secret_access_key = '{}'",
            id.s3.endpoint(),
            env("AWS_ACCESS_KEY_ID"),
            env("AWS_SECRET_ACCESS_KEY")
        ),
        format!("CREATE DATABASE {db}"),
        format!("CREATE TABLE {db}.big (id UInt64, v String) ENGINE = MergeTree ORDER BY id"),
        format!(
            "INSERT INTO {db}.big SELECT number, randomPrintableASCII(64) FROM numbers(6000000)"
        ),
    ] {
        sql_on(&own.url(), &statement).await;
    }
    let f = Fixture {
        db: db.clone(),
        collection: format!("nc_{db}"),
    };
    let (yaml, _) = config_for(&id, &bucket, &f, "  lost_after_seconds: 3\n");
    let yaml = yaml.replace(&env("STRONGROOM_TEST_CLICKHOUSE_URL"), &own.url());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &yaml);
    let agent = std::process::Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["backup", "--engine", "clickhouse", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !sql_on(&own.url(), "SELECT status FROM system.backups")
        .await
        .contains("CREATING_BACKUP")
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the BACKUP never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The server restarts mid-BACKUP: it no longer knows the operation.
    let own = own.restart();
    let restarted = std::time::Instant::now();
    let out = agent.wait_with_output().unwrap();
    let text = harness::text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("no longer lists operation"), "{text}");
    assert!(
        restarted.elapsed() < Duration::from_secs(30),
        "failed soon after, not at the backup timeout: {:?}\n{text}",
        restarted.elapsed()
    );
    let manifests: Vec<_> = store
        .list(&format!("{}/clickhouse/", harness::config(&yaml).s3.prefix))
        .await
        .unwrap()
        .into_iter()
        .filter(|o| o.key.ends_with(".manifest.json"))
        .collect();
    assert!(manifests.is_empty(), "{manifests:?}");
    drop(own);
}

async fn clickhouse_a_backup_given_up_on_is_stopped_on_the_server(id: TestId) {
    let (bucket, store) = harness::bucket(&id, true).await;
    let f = fixture(&id, &bucket).await;
    sql(&format!(
        "CREATE TABLE {}.big (id UInt64, v String) ENGINE = MergeTree ORDER BY id",
        f.db
    ))
    .await;
    sql(&format!(
        "INSERT INTO {}.big SELECT number, randomPrintableASCII(64) FROM numbers(6000000)",
        f.db
    ))
    .await;
    let (_, config) = config_for(&id, &bucket, &f, "  backup_timeout_seconds: 1\n");
    let e = run_backup(&config, &store).await.unwrap_err().to_string();
    assert!(e.contains("did not finish within 1 s"), "{e}");
    // The agent asks the server to stop it (KILL QUERY, which ClickHouse 24.1 and later honour
    // for BACKUPs) and says what happened; the chdb engine here lets it run to its end.
    let outcome = e
        .split("Asked to stop the BACKUP: ")
        .nth(1)
        .unwrap_or_else(|| panic!("says whether it could stop it: {e}"));
    assert!(
        outcome.starts_with("ClickHouse stopped it")
            || outcome.starts_with("it ended BACKUP_CREATED before it could be stopped")
            || outcome.starts_with("KILL QUERY was sent but it still runs"),
        "{e}"
    );
    let manifests: Vec<_> = store
        .list(&format!("{}/clickhouse/", config.s3.prefix))
        .await
        .unwrap()
        .into_iter()
        .filter(|o| o.key.ends_with(".manifest.json"))
        .collect();
    assert!(manifests.is_empty(), "{manifests:?}");
}

fn write_config(dir: &std::path::Path, yaml: &str) -> PathBuf {
    let path = dir.join("agent.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_18_is_refused_with_versions_named() {
    let id = TestId {
        test: "clickhouse_18_is_refused",
        s3: S3Kind::Rgw,
    };
    let old_url = env("STRONGROOM_TEST_CLICKHOUSE18_URL");
    // The HTTP client against a real server binary.
    assert_eq!(sql_on(&old_url, "SELECT version()").await.trim(), "18.16.1");
    let (bucket, _store) = harness::bucket(&id, true).await;
    let f = Fixture {
        db: "app".into(),
        collection: "backups_s3".into(),
    };
    let (yaml, _) = config_for(&id, &bucket, &f, "");
    let yaml = yaml.replace(&env("STRONGROOM_TEST_CLICKHOUSE_URL"), &old_url);
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["backup", "--engine", "clickhouse", "--config"])
        .arg(write_config(dir.path(), &yaml))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in [
        "version 18.16.1",
        "needs 22.8 or newer",
        "Upgrade the server",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }

    let port = free_port();
    let daemon = format!(
        "{yaml}daemon:\n  listen: 127.0.0.1:{port}\n  readiness_interval_seconds: 1\n  \
         s3_check_interval_seconds: 1\n"
    );
    let agent = Agent::start(
        &write_config(dir.path(), &daemon),
        port,
        dir.path().join("agent.log"),
    );
    agent.wait_for(
        "readiness to name the version",
        Duration::from_secs(20),
        |a| {
            let (code, body) = a.request("GET", "/readyz", None);
            code == 503 && body.contains("18.16.1") && body.contains("22.8")
        },
    );
    assert_eq!(agent.request("GET", "/healthz", None).0, 200);
    let status = agent.status();
    assert!(!status.clickhouse.ok);
    assert!(
        status.clickhouse.detail.contains("18.16.1"),
        "{:?}",
        status.clickhouse
    );
    assert!(agent.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_runs_clickhouse_and_postgresql_side_by_side() {
    let id = TestId {
        test: "daemon_side_by_side",
        s3: S3Kind::Rgw,
    };
    let pg_db = harness::fresh_database(&id.database()).await;
    harness::load_sample(&pg_db).await;
    let (bucket, store) = harness::bucket(&id, true).await;
    let f = fixture(&id, &bucket).await;
    load_tables(&f.db).await;
    let (ch_yaml, _) = config_for(&id, &bucket, &f, "  schedule: \"*/2 * * * * *\"\n");
    let ch_section: String = ch_yaml
        .split_once("clickhouse:\n")
        .map(|(_, rest)| format!("clickhouse:\n{}", rest.split_once("log:").unwrap().0))
        .unwrap();
    let port = free_port();
    let yaml = format!(
        "{}{ch_section}daemon:\n  listen: 127.0.0.1:{port}\n  readiness_interval_seconds: 1\n  \
         s3_check_interval_seconds: 1\n  retry_initial_seconds: 1\n  retry_max_seconds: 2\n",
        harness::config_yaml(&id, &bucket, "", "  schedule: \"*/2 * * * * *\"\n"),
    );
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        &write_config(dir.path(), &yaml),
        port,
        dir.path().join("agent.log"),
    );
    agent.wait_for("a backup of each engine", Duration::from_secs(90), |a| {
        let status = a.status();
        [Engine::Postgresql, Engine::Clickhouse].iter().all(|e| {
            status
                .engines
                .get(e)
                .is_some_and(|d| d.last_success.is_some())
        })
    });
    agent.wait_for("readiness", Duration::from_secs(10), |a| {
        a.request("GET", "/readyz", None).0 == 200
    });
    let (_, metrics) = agent.request("GET", "/metrics", None);
    for engine in ["postgresql", "clickhouse"] {
        let needle =
            format!("strongroom_backup_runs_total{{engine=\"{engine}\",result=\"success\"}}");
        assert!(metrics.contains(&needle), "{needle}:\n{metrics}");
    }
    let status = agent.status();
    let ch_key = status.engines[&Engine::Clickhouse]
        .last_success
        .clone()
        .unwrap()
        .key
        .unwrap();
    assert!(ch_key.contains("/clickhouse/llama-mapper/"), "{ch_key}");
    assert!(agent.terminate(Duration::from_secs(60)).success());
    let manifest = format!("{}.manifest.json", ch_key.trim_end_matches('/'));
    assert_eq!(store.list_versions(&manifest).await.unwrap().len(), 1);
}

/// The least privilege the ClickHouse server needs on `bucket` for backups under `prefix`:
/// write, read (restores, incremental bases, the agent's checks through the server), list,
/// abort its multipart uploads, and delete only its own `.lock` files. No version deletes, no
/// governance bypass: on a versioned bucket the `.lock` delete only adds a delete marker.
pub fn clickhouse_server_policy(bucket: &str, prefix: &str, principal: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ClickHouseBackupObjects",
                "Effect": "Allow",
                "Principal": {"AWS": [principal]},
                "Action": ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload",
                           "s3:ListMultipartUploadParts"],
                "Resource": [format!("arn:aws:s3:::{bucket}/{prefix}/clickhouse/*")]
            },
            {
                "Sid": "ClickHouseList",
                "Effect": "Allow",
                "Principal": {"AWS": [principal]},
                "Action": ["s3:ListBucket"],
                "Resource": [format!("arn:aws:s3:::{bucket}")]
            },
            {
                "Sid": "ClickHouseLockFileOnly",
                "Effect": "Allow",
                "Principal": {"AWS": [principal]},
                "Action": ["s3:DeleteObject"],
                // `*.lock`, not `*/.lock`: Ceph RGW 16 does not match the latter.
                "Resource": [format!("arn:aws:s3:::{bucket}/{prefix}/clickhouse/*.lock")]
            }
        ]
    })
    .to_string()
}

/// An S3 client with the credentials of one of the harness's RGW policy users.
async fn rgw_client_as(key_var: &str, secret_var: &str) -> aws_sdk_s3::Client {
    let creds =
        aws_sdk_s3::config::Credentials::new(env(key_var), env(secret_var), None, None, "test");
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(S3Kind::Rgw.endpoint())
        .force_path_style(true)
        .credentials_provider(creds)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn denied<T, E>(result: Result<T, aws_sdk_s3::error::SdkError<E>>) -> bool
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug,
{
    use aws_sdk_s3::error::ProvideErrorMetadata as _;
    match result {
        Ok(_) => false,
        Err(e) => e.code() == Some("AccessDenied"),
    }
}

/// On Ceph RGW, which enforces bucket policies: BACKUP succeeds with a server role that may
/// delete nothing but `.lock` files, and that role cannot remove or hide backup data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_server_role_backs_up_but_cannot_delete() {
    let id = TestId {
        test: "clickhouse_least_privilege",
        s3: S3Kind::Rgw,
    };
    let (bucket, store) = harness::bucket(&id, true).await;
    let prefix = format!("backups/{}", id.test.replace('_', "-"));
    let mut policy: serde_json::Value = serde_json::from_str(&clickhouse_server_policy(
        &bucket,
        &prefix,
        "arn:aws:iam:::user/clickhouse-server",
    ))
    .unwrap();
    // RGW users are separate accounts: objects ClickHouse writes belong to its user, so the
    // agent (the bucket owner here) needs a grant to check and set their retention, and this
    // test's verify --deep reads `.backup`. On AWS, with ObjectOwnership BucketOwnerEnforced,
    // the bucket's account owns every object and the agent's own IAM policy decides.
    policy["Statement"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "Sid": "AgentChecksClickHouseObjects",
            "Effect": "Allow",
            "Principal": {"AWS": ["arn:aws:iam:::user/strongroom"]},
            "Action": ["s3:GetObjectRetention", "s3:PutObjectRetention", "s3:GetObject",
                       "s3:GetObjectVersion"],
            "Resource": [format!("arn:aws:s3:::{bucket}/{prefix}/clickhouse/*")]
        }));
    let policy = policy.to_string();
    store
        .client()
        .put_bucket_policy()
        .bucket(&bucket)
        .policy(&policy)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_s3::error::DisplayErrorContext(e)));
    let f = fixture_as(
        &id,
        &bucket,
        (
            "STRONGROOM_TEST_RGW_CLICKHOUSE_KEY",
            "STRONGROOM_TEST_RGW_CLICKHOUSE_SECRET",
        ),
    )
    .await;
    load_tables(&f.db).await;
    let (_, config) = config_for(&id, &bucket, &f, "");
    let report = run_backup(&config, &store)
        .await
        .expect("BACKUP works with the least-privilege server role");
    let manifest = manifest_of(&store, &report).await;

    let server = rgw_client_as(
        "STRONGROOM_TEST_RGW_CLICKHOUSE_KEY",
        "STRONGROOM_TEST_RGW_CLICKHOUSE_SECRET",
    )
    .await;
    let data = manifest
        .objects
        .iter()
        .find(|o| o.key.ends_with("/data.bin"))
        .unwrap();
    // Hiding a backup object behind a delete marker: denied (only .lock may be deleted).
    assert!(denied(
        server
            .delete_object()
            .bucket(&bucket)
            .key(&data.key)
            .send()
            .await
    ));
    // Deleting the data version itself: denied.
    assert!(denied(
        server
            .delete_object()
            .bucket(&bucket)
            .key(&data.key)
            .set_version_id(data.version_id.clone())
            .send()
            .await
    ));
    // Even the .lock file's data version cannot be deleted, only hidden.
    let lock_key = format!("{}.lock", report.key);
    let lock_versions = store.list_versions(&lock_key).await.unwrap();
    assert!(!lock_versions.is_empty(), "ClickHouse wrote {lock_key}");
    assert!(denied(
        server
            .delete_object()
            .bucket(&bucket)
            .key(&lock_key)
            .set_version_id(lock_versions[0].version_id.clone())
            .send()
            .await
    ));
    // Outside its prefix it can do nothing.
    assert!(denied(
        server
            .put_object()
            .bucket(&bucket)
            .key("elsewhere/x")
            .body(b"x".to_vec().into())
            .send()
            .await
    ));
    let verdicts = verify_all(&config, &store, true).await;
    assert_eq!(verdicts[0].status, Status::Ok, "{:?}", verdicts[0].problems);
}
