//! What `verify` says about PostgreSQL backups someone tampered with through the bucket, against
//! real PostgreSQL and each S3 server: a manifest hidden by a delete marker fails (it is not an
//! incomplete run), a newer version or a delete marker above a pinned dump stays a warning
//! (restore reads the pinned version by its id), and a dump in an archive storage class is
//! reported, and its restore says to restore it from the archive first. The ClickHouse side
//! (where a newer version fails verify) is in `clickhouse.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{ObjectLockMode, StorageClass};
use strongroom::config::{Config, LockMode};
use strongroom::layout::Engine;
use strongroom::manifest::Manifest;
use strongroom::pipeline::Progress;
use strongroom::signing::{ManifestSigner, ManifestVerifier};
use strongroom::store::s3::S3Store;
use strongroom::store::{Integrity, ObjectStore, PartChecksum};
use strongroom::verify::{self, Selection, Status, Verdict};

use crate::harness::{self, S3Kind, TestId};
use crate::on_each_s3;

on_each_s3!(
    a_hidden_manifest_fails_verify_as_hidden,
    a_newer_dump_version_or_delete_marker_is_a_warning_for_postgresql,
);

/// The test's config file (restoring as `postgres`, `extra` appended) and its parsed form.
fn config_file(id: &TestId, bucket: &str, dir: &Path, extra: &str) -> (PathBuf, Config) {
    let yaml = format!(
        "{}restore:\n  user: postgres\n{extra}",
        harness::config_yaml(id, bucket, "", "")
    );
    let path = dir.join("agent.yaml");
    std::fs::write(&path, &yaml).unwrap();
    (path, harness::config(&yaml))
}

/// A backup of the sample database into a new locked bucket.
async fn backed_up(
    id: &TestId,
    dir: &Path,
    extra: &str,
) -> (Arc<S3Store>, PathBuf, Config, String) {
    let db = harness::fresh_database(&id.database()).await;
    harness::load_sample(&db).await;
    let (bucket, store) = harness::bucket(id, true).await;
    let (path, config) = config_file(id, &bucket, dir, extra);
    let signer = config
        .signing
        .private_key_file
        .as_ref()
        .map(|p| ManifestSigner::load(p).unwrap());
    let report = harness::backup(&config, &store, signer.as_ref(), &Progress::default())
        .await
        .unwrap_or_else(|e| panic!("backup on {}: {e}", id.s3.name()));
    (store, path, config, report.key)
}

fn strongroom(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The verdicts of `verify --engine postgresql` on every backup, as the library gives them.
async fn verify_all(store: &S3Store, config: &Config) -> Vec<Verdict> {
    let selected = verify::select(store, config, Engine::Postgresql, &Selection::All)
        .await
        .unwrap();
    let mut verdicts = Vec::new();
    for (snapshot, complete) in &selected {
        verdicts.push(verify::verify_one(store, config, snapshot, *complete, None, false).await);
    }
    verdicts
}

/// A DELETE without version id on a locked bucket: Object Lock allows it (it protects
/// versions, not keys) and it adds a delete marker.
async fn hide(store: &S3Store, key: &str) {
    store
        .client()
        .delete_object()
        .bucket(store.bucket())
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("hide {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)));
}

async fn a_hidden_manifest_fails_verify_as_hidden(id: TestId) {
    let dir = tempfile::tempdir().unwrap();
    let (store, path, _config, key) = backed_up(&id, dir.path(), "").await;
    let out = strongroom(&path, &["verify", "--engine", "postgresql", "--all"]);
    assert!(out.status.success(), "{}", text(&out));

    let manifest = key.replace(".sql.gz", ".manifest.json");
    hide(&store, &manifest).await;
    let out = strongroom(&path, &["verify", "--engine", "postgresql", "--all"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("FAIL "), "{all}");
    assert!(
        all.contains(&format!("{manifest} is hidden by a delete marker")),
        "{all}"
    );
    assert!(!all.contains("SKIP"), "not an incomplete run: {all}");
    assert!(!all.contains("incomplete: no manifest"), "{all}");
    // Named by its key, the same.
    let out = strongroom(
        &path,
        &["verify", "--engine", "postgresql", "--snapshot", &key],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("is hidden by a delete marker"),
        "{}",
        text(&out)
    );
}

async fn a_newer_dump_version_or_delete_marker_is_a_warning_for_postgresql(id: TestId) {
    let dir = tempfile::tempdir().unwrap();
    let (store, _path, config, key) = backed_up(&id, dir.path(), "").await;
    let bytes = b"-- not the dump\n".to_vec();
    let sum = PartChecksum::compute(Integrity::Md5, &bytes);
    let newer = store
        .put_object(&key, bytes::Bytes::from(bytes), sum, None)
        .await
        .unwrap();
    let verdicts = verify_all(&store, &config).await;
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].status, Status::Ok, "{:?}", verdicts[0].problems);
    let warnings = verdicts[0].warnings.join("\n");
    assert!(
        warnings.contains(&format!(
            "{key} has 1 other version(s) the manifest does not pin"
        )) && warnings.contains(newer.version_id.as_deref().unwrap())
            && warnings.contains("restore reads the pinned version by its id"),
        "{warnings}"
    );

    hide(&store, &key).await;
    let verdicts = verify_all(&store, &config).await;
    assert_eq!(verdicts.len(), 1, "the backup is still listed");
    assert_eq!(verdicts[0].status, Status::Ok, "{:?}", verdicts[0].problems);
    let warnings = verdicts[0].warnings.join("\n");
    assert!(
        warnings.contains(&format!("{key} is hidden by a delete marker")),
        "{warnings}"
    );
}

/// Stores a copy of the backup of `key` one day later, its dump in storage class `class`
/// (as a lifecycle rule would move it) and locked as the original, with a signed manifest
/// pinning it. Returns the copy's dump key.
async fn archived_copy(
    store: &S3Store,
    config: &Config,
    key: &str,
    signer: &ManifestSigner,
    class: StorageClass,
) -> Result<String, String> {
    let manifest_key = key.replace(".sql.gz", ".manifest.json");
    let original = harness::download(store.client(), store.bucket(), &manifest_key, None).await;
    let mut manifest = Manifest::from_bytes(&manifest_key, &original).unwrap();
    let ts = strongroom::layout::Timestamp::new(manifest.started_at + time::Duration::days(1));
    let keys = strongroom::layout::postgres_keys(
        &config.s3.prefix,
        &config.release,
        ts,
        strongroom::layout::Codec::Gzip,
    );
    let dump = harness::download(store.client(), store.bucket(), key, None).await;
    let retention = manifest.retention.clone().expect("a locked backup");
    let put = store
        .client()
        .put_object()
        .bucket(store.bucket())
        .key(&keys.dump)
        .content_md5(base64_md5(&dump))
        .storage_class(class)
        .object_lock_mode(match retention.mode {
            LockMode::Governance => ObjectLockMode::Governance,
            LockMode::Compliance => ObjectLockMode::Compliance,
        })
        .object_lock_retain_until_date(DateTime::from_secs(retention.retain_until.unix_timestamp()))
        .body(dump.into())
        .send()
        .await
        .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string())?;
    manifest.timestamp = ts.to_string();
    manifest.objects.truncate(1);
    manifest.objects[0].key = keys.dump.clone();
    manifest.objects[0].version_id = put.version_id;
    let bytes = manifest.to_bytes();
    for (k, body) in [
        (&keys.signature, signer.sign(&bytes).to_bytes()),
        (&keys.manifest, bytes),
    ] {
        let sum = PartChecksum::compute(Integrity::Md5, &body);
        store
            .put_object(k, bytes::Bytes::from(body), sum, None)
            .await
            .unwrap();
    }
    Ok(keys.dump)
}

fn base64_md5(bytes: &[u8]) -> String {
    use base64::Engine as _;
    use md5::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
}

/// On moto only: Ceph RGW 16 has no GLACIER storage class unless its zone placement defines
/// one, and refuses a PUT naming it (checked first here, so this test notices if that changes
/// and should run there too). moto keeps the class and answers GET with InvalidObjectState,
/// as AWS does for an object not restored from the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_dump_is_reported_and_its_restore_says_restore_it_first() {
    tokio::time::timeout(harness::TEST_TIMEOUT, archived_dump())
        .await
        .expect("timed out")
}

async fn archived_dump() {
    let rgw = TestId {
        test: "archived_dump",
        s3: S3Kind::Rgw,
    };
    let (_, rgw_store) = harness::bucket(&rgw, true).await;
    let put = |class: StorageClass| {
        rgw_store
            .client()
            .put_object()
            .bucket(rgw_store.bucket())
            .key("x")
            .content_md5(base64_md5(b"x"))
            .storage_class(class)
            .body(b"x".to_vec().into())
            .send()
    };
    put(StorageClass::Standard).await.expect("a STANDARD put");
    let code = put(StorageClass::Glacier).await.map(|_| ()).map_err(|e| {
        use aws_sdk_s3::error::ProvideErrorMetadata as _;
        e.code().map(str::to_owned)
    });
    assert_eq!(
        code,
        Err(Some("InvalidArgument".to_owned())),
        "Ceph RGW no longer refuses StorageClass GLACIER: run this test on rgw too"
    );

    let id = TestId {
        test: "archived_dump",
        s3: S3Kind::Moto,
    };
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = harness::keypair(dir.path());
    let signing = format!(
        "signing:\n  private_key_file: {}\n  public_key_file: {}\n",
        private.display(),
        public.display()
    );
    let (store, _path, config, key) = backed_up(&id, dir.path(), &signing).await;
    let signer = ManifestSigner::load(&private).unwrap();
    let archived = archived_copy(&store, &config, &key, &signer, StorageClass::Glacier)
        .await
        .expect("moto accepts StorageClass GLACIER");

    let verifier = ManifestVerifier::load(&public).unwrap();
    let snapshot =
        strongroom::layout::parse_snapshot(&config.s3.prefix, Engine::Postgresql, &archived)
            .unwrap();
    let verdict =
        verify::verify_one(&*store, &config, &snapshot, true, Some(&verifier), false).await;
    // moto answers GetObjectRetention of an archived object as it would a GET
    // (InvalidObjectState); the store then reads the retention with HEAD, as AWS would give it.
    assert!(verdict.problems.is_empty(), "{:?}", verdict.problems);
    let warnings = verdict.warnings.join("\n");
    assert!(
        warnings.contains("archived")
            && warnings.contains(&format!("{archived} (GLACIER)"))
            && warnings.contains("restored from the archive"),
        "{warnings}"
    );
    let target = format!("{}_archived", id.database());
    harness::drop_database(&target).await;
    let e = harness::restore(&config, &store, &archived, &target)
        .await
        .expect_err("an archived dump cannot be read");
    let e = e.to_string();
    assert!(e.contains("restore it from the archive first"), "{e}");
    assert!(e.contains(&archived), "{e}");
    assert!(!e.contains("denied"), "not a permission error: {e}");
    // Refused from the listing, before the target was created.
    let exists: i64 = harness::admin("postgres")
        .await
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&target],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(exists, 0, "the target was touched");
}
