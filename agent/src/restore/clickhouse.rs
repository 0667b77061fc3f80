//! `strongroom restore --engine clickhouse`: verify every object, then ClickHouse's RESTORE,
//! then validate.
//!
//! ClickHouse's RESTORE reads the newest version of each object and checks no checksums, so the
//! agent proves first, with listings and the manifest, that what ClickHouse will read is exactly
//! what was backed up: every object present at its pinned VersionId with its size and no newer
//! version or delete marker above it, readable (an archived object must be restored from the
//! archive first), `.backup` hashing to the manifest's digest, and the same for every backup
//! of an incremental chain. Target tables must not hold data (unless `--force`). Then
//! `RESTORE ... ASYNC` runs and is followed in `system.backups`; row counts are compared with the
//! manifest's, and the configured SQL and HTTP checks run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::{Phases, RestoreOptions, RestoreReport};
use crate::backup::clickhouse::destination;
use crate::catalog::{self, FetchedManifest};
use crate::config::Config;
use crate::config::clickhouse::Login;
use crate::engine::EngineError;
use crate::engine::clickhouse::{self, ClickHouse, Scope};
use crate::error::{Error, Result};
use crate::layout::{Engine, SnapshotRef};
use crate::manifest::ClickHouseDetails;
use crate::signing::ManifestVerifier;
use crate::store::versions::KeyVersions;
use crate::store::{ObjectStore, ObjectVersion};
use crate::validate::{self, CheckKind, CheckResult};
use crate::verify::clickhouse::{PinnedMetadata, base_chain, shadowed};

/// The restore's login; options that only apply to PostgreSQL are refused.
pub fn preflight(config: &Config, options: &RestoreOptions) -> Result<Login> {
    super::require_signatures(config, options)?;
    let ch = config.clickhouse()?;
    if options.database.is_some() {
        return Err(Error::OptionNotForEngine {
            option: "--database",
            engine: "clickhouse",
        });
    }
    if options.create {
        return Err(Error::OptionNotForEngine {
            option: "--create",
            engine: "clickhouse",
        });
    }
    if options.with_globals.is_some() {
        return Err(Error::OptionNotForEngine {
            option: "--with-globals",
            engine: "clickhouse",
        });
    }
    Ok(ch.restore_login(&config.restore.clickhouse)?)
}

fn details(manifest: &FetchedManifest) -> Result<ClickHouseDetails> {
    manifest
        .manifest
        .clickhouse
        .clone()
        .ok_or_else(|| Error::ManifestMismatch {
            manifest: manifest.key.clone(),
            problem: "it has no clickhouse section".into(),
        })
}

/// The scope recorded in the manifest, as a RESTORE clause.
pub(crate) fn recorded_scope(details: &ClickHouseDetails) -> Scope {
    let pick = |prefix: &str| -> Vec<String> {
        details
            .scope
            .iter()
            .filter_map(|s| s.strip_prefix(prefix).map(str::to_owned))
            .collect()
    };
    let (databases, tables) = (pick("database "), pick("table "));
    if !tables.is_empty() {
        Scope::Tables(tables)
    } else if !databases.is_empty() {
        Scope::Databases(databases)
    } else {
        Scope::All
    }
}

/// Problems that make ClickHouse read other bytes than the manifest pins (or none at all), for
/// one backup, and the SHA-256 of its `.backup` as read.
async fn check_backup<S: ObjectStore>(
    store: &S,
    manifest: &FetchedManifest,
    folder: &str,
) -> Result<(Vec<String>, String)> {
    let details = details(manifest)?;
    let mut listed: BTreeMap<String, Vec<ObjectVersion>> = BTreeMap::new();
    for v in store.list_versions(folder).await? {
        listed.entry(v.key.clone()).or_default().push(v);
    }
    let mut problems = Vec::new();
    for object in &manifest.manifest.objects {
        let versions = KeyVersions {
            key: object.key.clone(),
            all: listed.remove(&object.key).unwrap_or_default(),
        };
        let pinned_id = object.version_id.as_deref();
        let Some(pinned) = versions.find(pinned_id) else {
            problems.push(format!(
                "{} version {} is missing (versions: {})",
                object.key,
                pinned_id.unwrap_or("(none)"),
                versions.describe()
            ));
            continue;
        };
        if pinned.size != object.size_bytes {
            problems.push(format!(
                "{} is {} bytes, the manifest says {}",
                object.key, pinned.size, object.size_bytes
            ));
        }
        // Older versions (an upload ClickHouse retried) are harmless: it reads the newest.
        problems.extend(shadowed(&versions, pinned_id));
        if pinned.archived()
            && let Err(e) = store.get(&object.key, pinned_id).await
        {
            // Readable again once restored from the archive; only then does ClickHouse
            // read it. The probe opens the body and drops it unread.
            problems.push(e.to_string());
        }
    }
    let metadata = PinnedMetadata::read(store, manifest, &details).await?;
    problems.extend(metadata.mismatch(&details));
    Ok((problems, metadata.sha256))
}

/// A backup whose every object, and every base backup's, is what its manifest pins.
struct CheckedChain {
    /// The backup's folder, then its base backups' (newest first).
    folders: Vec<String>,
    /// The SHA-256 of the backup's `.backup` as read.
    metadata_sha256: String,
}

/// Checks the backup and every base it builds on, newest first.
async fn check_chain<S: ObjectStore>(
    store: &S,
    config: &Config,
    verifier: Option<&ManifestVerifier>,
    snapshot: &SnapshotRef,
    manifest: &FetchedManifest,
) -> Result<CheckedChain> {
    let (mut problems, metadata_sha256) =
        check_backup(store, manifest, &snapshot.keys.dump).await?;
    let (bases, broken) = base_chain(store, config, verifier, &details(manifest)?).await;
    problems.extend(broken);
    let mut folders = vec![snapshot.keys.dump.clone()];
    for (folder, base_manifest) in bases {
        problems.extend(check_backup(store, &base_manifest, &folder).await?.0);
        folders.push(folder);
    }
    if problems.is_empty() {
        Ok(CheckedChain {
            folders,
            metadata_sha256,
        })
    } else {
        Err(Error::RestoreRefused {
            snapshot: snapshot.keys.dump.clone(),
            problems: problems.join("; "),
        })
    }
}

/// ClickHouse read the newest version of each object at some point during the RESTORE, and
/// checks no checksums: the versions proven before it must still be the newest after it, or
/// the restored tables may hold bytes that no one verified.
async fn unchanged_during_restore<S: ObjectStore>(
    store: &S,
    config: &Config,
    verifier: Option<&ManifestVerifier>,
    snapshot: &SnapshotRef,
    manifest: &FetchedManifest,
) -> CheckResult {
    let actual = match check_chain(store, config, verifier, snapshot, manifest).await {
        Ok(_) => None,
        Err(Error::RestoreRefused { problems, .. }) => Some(problems),
        Err(e) => Some(format!("could not be checked: {e}")),
    };
    CheckResult {
        kind: CheckKind::Objects,
        name: "objects unchanged while ClickHouse restored".into(),
        expected: "every pinned version still the newest".into(),
        passed: actual.is_none(),
        actual: actual.unwrap_or_else(|| "every pinned version still the newest".into()),
    }
}

/// The database a table of `database` is restored into: the same, or renamed with the suffix.
fn target_database(database: &str, options: &RestoreOptions) -> String {
    format!(
        "{database}{}",
        options.rename_suffix.as_deref().unwrap_or_default()
    )
}

/// Refuses tables that hold data, unless forced.
async fn check_targets(
    server: &ClickHouse,
    details: &ClickHouseDetails,
    options: &RestoreOptions,
) -> Result<()> {
    let force = options.force;
    let mut full = Vec::new();
    for t in &details.tables {
        let database = target_database(&t.database, options);
        if let Some(rows) = server.table_rows(&database, &t.table).await?
            && rows > 0
        {
            full.push(format!("{database}.{} ({rows} rows)", t.table));
        }
    }
    if full.is_empty() || force {
        Ok(())
    } else {
        Err(Error::TablesNotEmpty {
            tables: full.join(", "),
        })
    }
}

/// Row counts against the manifest, then the configured SQL checks, in which `{database}`
/// names the (first) restored database: its own name, or the renamed one in a drill.
async fn validate_tables(
    server: &ClickHouse,
    details: &ClickHouseDetails,
    config: &Config,
    options: &RestoreOptions,
) -> Vec<CheckResult> {
    let mut checks = Vec::new();
    for t in &details.tables {
        let Some(expected) = t.rows else { continue };
        let database = target_database(&t.database, options);
        // RESTORE is done: a count that fails is a failed check in the report.
        let (actual, passed) = match server.table_rows(&database, &t.table).await {
            Ok(actual) => (
                actual.map_or("table missing".into(), |n| n.to_string()),
                actual == Some(expected),
            ),
            Err(e) => (format!("counting failed: {e}"), false),
        };
        checks.push(CheckResult {
            kind: CheckKind::RowCount,
            name: format!("rows in {database}.{}", t.table),
            expected: expected.to_string(),
            actual,
            passed,
        });
    }
    let first = match recorded_scope(details) {
        Scope::Databases(d) => d.first().cloned(),
        Scope::Tables(t) => t
            .first()
            .and_then(|t| t.split_once('.'))
            .map(|(d, _)| d.into()),
        Scope::All => None,
    };
    for check in &config.restore.clickhouse.sql {
        // In a drill, a check that does not say `{database}` would query the live source and
        // pass whatever the restore did.
        if options.rename_suffix.is_some() && !check.query.contains("{database}") {
            checks.push(CheckResult {
                kind: CheckKind::Sql,
                name: check.name.clone(),
                expected: validate::describe(&check.expect),
                actual: "not run: in a drill the query must name {database} (the renamed \
                         database), or it checks the live one"
                    .into(),
                passed: false,
            });
            continue;
        }
        let query = match &first {
            Some(db) => check
                .query
                .replace("{database}", &target_database(db, options)),
            None => check.query.clone(),
        };
        let (passed, actual) = match server.scalar(&query).await {
            Ok(Some(value)) => (validate::meets(&check.expect, &value), value),
            Ok(None) => (false, "no rows".into()),
            Err(e) => (false, format!("query failed: {e}")),
        };
        checks.push(CheckResult {
            kind: CheckKind::Sql,
            name: check.name.clone(),
            expected: validate::describe(&check.expect),
            actual,
            passed,
        });
    }
    checks
}

/// Restores `snapshot` into the configured ClickHouse server, validates it, stores the report.
pub async fn restore_clickhouse<S: ObjectStore>(
    config: &Config,
    store: &S,
    policy: &crate::locked_write::WritePolicy,
    verifier: Option<&ManifestVerifier>,
    snapshot: &SnapshotRef,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    let login = preflight(config, options)?;
    let ch = config.clickhouse()?;
    let server = ClickHouse::new(&login);
    let started_at = OffsetDateTime::now_utc();
    let started = Instant::now();
    let manifest = catalog::fetch_manifest(store, snapshot, verifier).await?;
    let details = details(&manifest)?;
    let (version, chain) = tokio::try_join!(
        async { Ok::<_, Error>(server.require_backup_support().await?) },
        check_chain(store, config, verifier, snapshot, &manifest),
    )?;
    let scope = recorded_scope(&details);
    if options.rename_suffix.is_some() && scope == Scope::All {
        return Err(Error::RestoreRefused {
            snapshot: snapshot.keys.dump.clone(),
            problems: "a backup of ALL databases cannot be restored under other names \
                       (RESTORE ALL takes no AS): drill a backup with clickhouse.databases or \
                       clickhouse.tables set"
                .into(),
        });
    }
    check_targets(&server, &details, options).await?;
    let download_seconds = started.elapsed().as_secs_f64();
    let id = format!(
        "strongroom-restore-{}-{}",
        snapshot.timestamp,
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let statement = clickhouse::restore_statement(
        &scope,
        &destination(ch),
        &snapshot.keys.dump,
        &id,
        options.force,
        options.rename_suffix.as_deref(),
    );
    tracing::info!(snapshot = %snapshot.keys.dump, chain = chain.folders.len(),
        server_version = %version.text, signature = %manifest.signature, %statement,
        "objects match the manifest; ClickHouse restores");
    server.execute("RESTORE", &statement).await?;
    let op = server
        .wait(
            &id,
            Duration::from_secs(ch.restore_timeout_seconds),
            Duration::from_millis(ch.poll_interval_ms),
            Duration::from_secs(ch.lost_after_seconds),
            |_| {},
        )
        .await?;
    if !op.succeeded() {
        return Err(EngineError::ClickHouseFailed {
            what: "RESTORE",
            id,
            status: op.status,
            error: op.error,
        }
        .into());
    }
    let load_seconds = started.elapsed().as_secs_f64();

    let validation_started = Instant::now();
    let mut checks = validate_tables(&server, &details, config, options).await;
    checks.push(unchanged_during_restore(store, config, verifier, snapshot, &manifest).await);
    let validation_seconds = validation_started.elapsed().as_secs_f64();
    let smoke_seconds = super::smoke_checks(config, options, &mut checks).await;
    let metadata = manifest.object(&details.metadata_key)?;
    let size_bytes = manifest.manifest.objects.iter().map(|o| o.size_bytes).sum();
    let passed = checks.iter().all(|c| c.passed);
    let mut warnings = Vec::new();
    let bases = &chain.folders[1..];
    if !bases.is_empty() {
        warnings.push(format!(
            "incremental backup: restored through {} base backup(s): {}",
            bases.len(),
            bases.join(", ")
        ));
    }
    let mut report = RestoreReport {
        format_version: 1,
        engine: Engine::Clickhouse,
        release: snapshot.release.clone(),
        snapshot: snapshot.keys.dump.clone(),
        version_id: metadata.version_id.clone(),
        manifest_key: manifest.key.clone(),
        manifest_sha256: manifest.sha256.clone(),
        signature_summary: manifest.signature.to_string(),
        signature: manifest.signature.clone(),
        target_database: match &options.rename_suffix {
            Some(suffix) => scope.renamed(suffix).describe().join(", "),
            None => scope.describe().join(", "),
        },
        expected_sha256: details.metadata_sha256.clone(),
        actual_sha256: chain.metadata_sha256,
        size_bytes,
        uncompressed_size_bytes: details.total_size_bytes,
        started_at,
        finished_at: OffsetDateTime::now_utc(),
        phases: Phases {
            download_seconds,
            load_seconds,
            analyze_seconds: None,
            validation_seconds,
            row_count_seconds: None,
            smoke_seconds,
            total_seconds: started.elapsed().as_secs_f64(),
        },
        checks,
        warnings,
        globals: None,
        parallel: None,
        passed,
        report_key: None,
        report_error: None,
    };
    super::store_report(store, policy, config, snapshot, options, &mut report).await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{self, Timestamp};
    use crate::manifest::{Manifest, ManifestObject};
    use crate::store::memory::MemoryStore;
    use crate::store::{Integrity, PartChecksum};
    use bytes::Bytes;
    use sha2::{Digest as _, Sha256};
    use time::macros::datetime;

    #[tokio::test]
    async fn hidden_newer_and_archived_objects_are_refused_by_name() {
        let store = MemoryStore::default();
        let ts = Timestamp::parse("20261123T020000Z").unwrap();
        let keys = layout::clickhouse_keys("b", "r", ts);
        let names = ["data/hidden.bin", "data/newer.bin", "data/cold.bin"];
        let mut objects = Vec::new();
        let mut digest = String::new();
        for key in std::iter::once(keys.checksum.clone())
            .chain(names.iter().map(|n| format!("{}{n}", keys.dump)))
        {
            let body = Bytes::from(format!("contents of {key}"));
            if key == keys.checksum {
                digest = hex::encode(Sha256::digest(&body));
            }
            let sum = PartChecksum::compute(Integrity::Md5, &body);
            let size = body.len() as u64;
            let put = store.put_object(&key, body, sum, None).await.unwrap();
            objects.push(ManifestObject {
                key,
                version_id: put.version_id,
                size_bytes: size,
                sha256: None,
            });
        }
        let started = datetime!(2026-11-23 02:00:00 UTC);
        let manifest = FetchedManifest::unsigned(
            &keys.manifest,
            Manifest {
                objects,
                clickhouse: Some(ClickHouseDetails {
                    server_version: "26.9".into(),
                    backup_id: "id".into(),
                    scope: vec![],
                    base_backup: None,
                    chain_length: 0,
                    metadata_key: keys.checksum.clone(),
                    metadata_sha256: digest,
                    files: 3,
                    total_size_bytes: 0,
                    tables: vec![],
                }),
                ..Manifest::header(Engine::Clickhouse, "r", ts, (started, started), None)
            },
        );
        let (problems, _) = check_backup(&store, &manifest, &keys.dump).await.unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let config = Config::from_yaml(
            "release: r\ns3:\n  bucket: backups-1\nclickhouse:\n  named_collection: nc\n",
            std::path::Path::new("t"),
        )
        .unwrap();
        let snapshot = SnapshotRef {
            engine: Engine::Clickhouse,
            release: "r".into(),
            timestamp: ts,
            keys: keys.clone(),
        };
        let after = unchanged_during_restore(&store, &config, None, &snapshot, &manifest).await;
        assert!(after.passed, "{after:?}");

        let [hidden, newer, cold] = names.map(|n| format!("{}{n}", keys.dump));
        store.hide(&hidden);
        let body = Bytes::from_static(b"other");
        let sum = PartChecksum::compute(Integrity::Md5, &body);
        store.put_object(&newer, body, sum, None).await.unwrap();
        store.archive(&cold, "DEEP_ARCHIVE");
        let (problems, _) = check_backup(&store, &manifest, &keys.dump).await.unwrap();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!("{hidden} is hidden by a delete marker")),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].starts_with(&format!("{newer} has a newer version above")),
            "{}",
            problems[1]
        );
        assert!(problems[2].contains(&cold), "{}", problems[2]);
        assert!(
            problems[2].contains("restore it from the archive first"),
            "{}",
            problems[2]
        );
        // The same, found after a RESTORE: a failed check in the report.
        let after = unchanged_during_restore(&store, &config, None, &snapshot, &manifest).await;
        assert!(!after.passed);
        assert!(after.actual.contains(&newer), "{}", after.actual);
    }
}
