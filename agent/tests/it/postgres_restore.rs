//! PostgreSQL restores against real PostgreSQL and each real S3 server: exact round trips,
//! verification before commit, signatures, targets, validation.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use sha2::{Digest as _, Sha256};
use strongroom::config::Config;
use strongroom::error::Error;
use strongroom::manifest::Manifest;
use strongroom::pipeline::Progress;
use strongroom::signing::ManifestSigner;
use strongroom::store::s3::S3Store;
use strongroom::store::{Integrity, ObjectStore, PartChecksum};
use strongroom::validate::CheckKind;

use crate::harness::{self, TestId, drop_database};
use crate::on_each_s3;

on_each_s3!(
    round_trip_is_exact_signed_and_validated,
    a_newer_version_under_the_key_is_never_restored,
    bytes_that_do_not_match_the_manifest_are_never_committed,
    tampered_manifest_wrong_key_and_missing_signature_are_refused,
    non_empty_target_is_refused_and_untouched,
    missing_manifest_is_refused_before_postgres,
);

/// The test's config, signed with the key pair in `keys` (if any), restoring as `postgres`.
fn config(id: &TestId, bucket: &str, keys: Option<(&Path, &Path)>, restore_extra: &str) -> Config {
    let mut yaml = harness::config_yaml(id, bucket, "", "");
    if let Some((private, public)) = keys {
        yaml.push_str(&format!(
            "signing:\n  private_key_file: {}\n  public_key_file: {}\n",
            private.display(),
            public.display()
        ));
    }
    yaml.push_str(&format!(
        "restore:\n  user: postgres\n  validation:\n    http_timeout_seconds: 20\n    \
         http_interval_seconds: 1\n{restore_extra}"
    ));
    harness::config(&yaml)
}

/// A signed backup of the awkward fixture; returns the store, config and dump key.
async fn signed_backup(
    id: &TestId,
    keys_dir: &Path,
    restore_extra: &str,
) -> (Arc<S3Store>, Config, String) {
    let db = harness::fresh_database(&id.database()).await;
    harness::load_awkward(&db).await;
    let (private, public) = harness::keypair(keys_dir);
    let (bucket, store) = harness::bucket(id, true).await;
    let config = config(id, &bucket, Some((&private, &public)), restore_extra);
    let signer = ManifestSigner::load(&private).unwrap();
    let report = harness::backup(&config, &store, Some(&signer), &Progress::default())
        .await
        .unwrap_or_else(|e| panic!("backup: {e}"));
    assert!(report.signed);
    (store, config, report.key)
}

fn target(id: &TestId, suffix: &str) -> String {
    format!("{}_{suffix}", id.database())
}

async fn round_trip_is_exact_signed_and_validated(id: TestId) {
    let app = harness::start_fake_app(Duration::from_millis(1500)).await;
    let checks = format!(
        "    sql:\n      - name: storage_records present\n        query: SELECT count(*) FROM storage_records\n        expect: {{min: 2000}}\n      - name: sample row\n        query: SELECT body FROM storage_records WHERE id = 1\n        expect: {{equals: \"record 1 — ünïcødé ✓ c4ca4238a0b923820dcc509a6f75849b\"}}\n    http:\n      - name: health\n        url: {app}/health\n        expect_json: {{status: ok}}\n      - name: map known input\n        method: POST\n        url: {app}/map\n        headers: {{Content-Type: application/json}}\n        body: '{{\"input\": \"llama\"}}'\n        expect_json: {{output: LLAMA}}\n"
    );
    let keys = tempfile::tempdir().unwrap();
    let (store, config, key) = signed_backup(&id, keys.path(), &checks).await;
    let restored = target(&id, "restored");
    drop_database(&restored).await;

    let report = harness::restore(&config, &store, &key, &restored)
        .await
        .unwrap_or_else(|e| panic!("restore on {}: {e}", id.s3.name()));

    // The restored database is the source, schema and data, byte for byte of pg_dump.
    assert_eq!(
        harness::reference_dump(&restored),
        harness::reference_dump(&id.database())
    );
    assert!(report.passed, "{:#?}", report.checks);
    assert_eq!(report.snapshot, key);
    assert_eq!(report.expected_sha256, report.actual_sha256);
    assert!(
        report.signature_summary.contains("verified"),
        "{}",
        report.signature_summary
    );
    let kinds = |k| report.checks.iter().filter(|c| c.kind == k).count();
    assert_eq!(kinds(CheckKind::RowCount), 4, "{:#?}", report.checks);
    assert_eq!(kinds(CheckKind::Sql), 2);
    assert_eq!(kinds(CheckKind::Http), 2);
    let health = report.checks.iter().find(|c| c.name == "health").unwrap();
    assert!(
        !health.actual.contains("attempt 1)"),
        "the app was waited for: {}",
        health.actual
    );
    assert!(report.phases.load_seconds > 0.0 && report.phases.smoke_seconds >= 1.0);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    // The report is stored, locked, under <prefix>/reports/.
    let report_key = report.report_key.clone().unwrap();
    assert!(
        report_key.contains("/reports/postgresql/llama-mapper/"),
        "{report_key}"
    );
    let stored = harness::download(store.client(), store.bucket(), &report_key, None).await;
    let stored: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(stored["actual_sha256"], report.actual_sha256.as_str());
    assert!(store.retention(&report_key, None).await.unwrap().is_some());
}

async fn a_newer_version_under_the_key_is_never_restored(id: TestId) {
    let keys = tempfile::tempdir().unwrap();
    let (store, config, key) = signed_backup(&id, keys.path(), "").await;
    // Anyone with write access can add a version under the key; Object Lock does not stop it.
    let mut flipped = harness::download(store.client(), store.bucket(), &key, None).await;
    for byte in flipped.iter_mut().skip(100).step_by(997) {
        *byte ^= 0xff;
    }
    let sum = PartChecksum::compute(Integrity::Md5, &flipped);
    let newer = store
        .put_object(&key, Bytes::from(flipped), sum, None)
        .await
        .unwrap();

    let restored = target(&id, "pinned");
    drop_database(&restored).await;
    let report = harness::restore(&config, &store, &key, &restored)
        .await
        .unwrap();
    assert_ne!(report.version_id, newer.version_id);
    assert_eq!(
        harness::reference_dump(&restored),
        harness::reference_dump(&id.database())
    );
    let warnings = report.warnings.join("\n");
    assert!(
        warnings.contains(newer.version_id.as_deref().unwrap())
            && warnings.contains("not restored"),
        "{warnings}"
    );
}

async fn bytes_that_do_not_match_the_manifest_are_never_committed(id: TestId) {
    let keys = tempfile::tempdir().unwrap();
    let (store, config, key) = signed_backup(&id, keys.path(), "").await;
    let signer = ManifestSigner::load(&keys.path().join("strongroom-signing.key")).unwrap();
    let original = harness::download(store.client(), store.bucket(), &key, None).await;

    // (1) Valid gzip of valid SQL with one value changed: psql would load all of it happily,
    // so only the end-of-stream hash check stands between it and a commit.
    let mut sql = String::new();
    MultiGzDecoder::new(&original[..])
        .read_to_string(&mut sql)
        .unwrap();
    let altered = sql.replacen("record 1 — ", "record X — ", 1);
    assert_ne!(altered, sql);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(altered.as_bytes()).unwrap();
    let forged =
        harness::plant_signed_original(&store, &config, &key, gz.finish().unwrap(), &signer, 1)
            .await;
    let restored = target(&id, "altered");
    drop_database(&restored).await;
    let err = harness::restore(&config, &store, &forged, &restored)
        .await
        .expect_err("altered bytes must not be restored");
    let message = err.to_string();
    assert!(matches!(err, Error::HashMismatch { .. }), "{message}");
    let expected = hex::encode(Sha256::digest(&original));
    assert!(
        message.contains(&expected),
        "both hashes are named: {message}"
    );
    assert!(message.contains("unchanged"), "{message}");
    assert!(
        harness::tables_of(&restored).await.is_empty(),
        "nothing was committed"
    );

    // (2) Flipped bytes inside the compressed stream: refused as well, target empty.
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x55;
    let forged = harness::plant_signed_original(&store, &config, &key, flipped, &signer, 2).await;
    let restored = target(&id, "flipped");
    drop_database(&restored).await;
    let err = harness::restore(&config, &store, &forged, &restored)
        .await
        .expect_err("corrupt bytes must not be restored");
    assert!(
        matches!(err, Error::HashMismatch { .. } | Error::Unpack(_)),
        "{err}"
    );
    assert!(
        harness::tables_of(&restored).await.is_empty(),
        "nothing was committed"
    );
}

async fn tampered_manifest_wrong_key_and_missing_signature_are_refused(id: TestId) {
    let keys = tempfile::tempdir().unwrap();
    let (store, config, key) = signed_backup(&id, keys.path(), "").await;
    let manifest_key = key.replace(".sql.gz", ".manifest.json");
    let signature_key = format!("{manifest_key}.sig");
    let restored = target(&id, "refused");
    drop_database(&restored).await;

    // A tampered copy of the manifest (one row count changed) beside the original signature,
    // under a new timestamp so it is the only version of its key.
    let original = harness::download(store.client(), store.bucket(), &manifest_key, None).await;
    let signature = harness::download(store.client(), store.bucket(), &signature_key, None).await;
    let mut manifest = Manifest::from_bytes(&manifest_key, &original).unwrap();
    let ts = strongroom::layout::Timestamp::new(manifest.started_at + time::Duration::days(2));
    let forged = strongroom::layout::postgres_keys(
        &config.s3.prefix,
        &config.release,
        ts,
        strongroom::layout::Codec::Gzip,
    );
    manifest.timestamp = ts.to_string();
    manifest.postgresql.as_mut().unwrap().tables[0].rows += 1;
    for (k, body) in [
        (&forged.manifest, manifest.to_bytes()),
        (&forged.signature, signature),
    ] {
        let sum = PartChecksum::compute(Integrity::Md5, &body);
        store
            .put_object(k, Bytes::from(body), sum, None)
            .await
            .unwrap();
    }
    let sum = PartChecksum::compute(Integrity::Md5, b"x");
    store
        .put_object(&forged.dump, Bytes::from_static(b"x"), sum, None)
        .await
        .unwrap();
    let err = harness::restore(&config, &store, &forged.dump, &restored)
        .await
        .expect_err("a tampered manifest is refused");
    assert!(
        err.to_string()
            .contains("does not match the manifest's bytes"),
        "{err}"
    );

    // The right backup, checked with another public key.
    let other = tempfile::tempdir().unwrap();
    let (_, other_public) = harness::keypair(other.path());
    let mut wrong = config.clone();
    wrong.signing.public_key_file = Some(other_public);
    let err = harness::restore(&wrong, &store, &key, &restored)
        .await
        .expect_err("another key is refused");
    assert!(err.to_string().contains("signed by key"), "{err}");

    // A public key is configured but the backup carries no signature. (A second backup in the
    // same second would be refused as a duplicate key, so wait for the next one.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut unsigned = config.clone();
    unsigned.signing.private_key_file = None;
    let plain = harness::backup(&unsigned, &store, None, &Progress::default())
        .await
        .unwrap();
    assert!(!plain.signed);
    let err = harness::restore(&config, &store, &plain.key, &restored)
        .await
        .expect_err("an unsigned backup is refused when a public key is configured");
    assert!(err.to_string().contains(".sig does not exist"), "{err}");
    // Nothing was touched: the target was never even created.
    let exists = harness::admin("postgres")
        .await
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&restored],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(exists, 0);
}

async fn non_empty_target_is_refused_and_untouched(id: TestId) {
    let keys = tempfile::tempdir().unwrap();
    let (store, config, key) = signed_backup(&id, keys.path(), "").await;
    let occupied = target(&id, "occupied");
    let db = harness::fresh_database(&occupied).await;
    db.batch_execute("CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (42);")
        .await
        .unwrap();
    let before = harness::reference_dump(&occupied);
    let err = harness::restore(&config, &store, &key, &occupied)
        .await
        .expect_err("a non-empty target is refused");
    assert!(matches!(err, Error::TargetNotEmpty { .. }), "{err}");
    assert!(err.to_string().contains("public.keep_me"), "{err}");
    assert_eq!(harness::reference_dump(&occupied), before);
}

async fn missing_manifest_is_refused_before_postgres(id: TestId) {
    let (bucket, store) = harness::bucket(&id, true).await;
    let mut config = config(&id, &bucket, None, "  allow_unsigned: true\n");
    // No PostgreSQL at all: reaching it would be a connection error, not the manifest error.
    config.postgresql.as_mut().unwrap().host = "/nonexistent".into();
    let key = format!(
        "{}/postgresql/llama-mapper/20261123T020000Z.sql.gz",
        config.s3.prefix
    );
    let sum = PartChecksum::compute(Integrity::Md5, b"incomplete");
    store
        .put_object(&key, Bytes::from_static(b"incomplete"), sum, None)
        .await
        .unwrap();
    let err = harness::restore(&config, &store, &key, "never")
        .await
        .expect_err("a backup without manifest is refused");
    assert!(matches!(err, Error::NoManifest { .. }), "{err}");
    assert!(err.to_string().contains("incomplete"), "{err}");
}
