//! One ClickHouse backup: the server's own `BACKUP ... TO S3 ASYNC`, then the proof that it is
//! complete and locked, and only then the manifest.
//!
//! After `BACKUP_CREATED` the agent reads, at the same time, ClickHouse's `.backup` metadata and
//! every part's row count from the backup's `count.txt` files (both through the server) and the
//! folder's object versions. It checks that every file the metadata stores is there with its
//! size (pinning the newest version: ClickHouse retries uploads), checks (and where the bucket
//! default did not apply, sets) each object's retention, follows `base_backup` links for row
//! counts stored in earlier backups, extends the retention of the incremental chain below it
//! ([`chain`]), and writes the signed manifest. A failed, timed-out or cancelled BACKUP leaves
//! no manifest.

mod chain;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::BackupReport;
use crate::catalog;
use crate::config::clickhouse::Login;
use crate::config::{ClickHouseConfig, Config};
use crate::engine::EngineError;
use crate::engine::clickhouse::metadata::{BackupMetadata, FileEntry};
use crate::engine::clickhouse::{self, ClickHouse, Destination, Scope, ServerVersion};
use crate::error::{Error, Result};
use crate::layout::{self, BackupKeys, Engine, Timestamp};
use crate::lock::RETENTION_CONCURRENCY;
use crate::locked_write::WritePolicy;
use crate::manifest::{ClickHouseDetails, ClickHouseTable, Manifest, ManifestObject};
use crate::pipeline::Progress;
use crate::readback::ensure_retention;
use crate::signing::ManifestSigner;
use crate::store::versions::KeyVersions;
use crate::store::{ObjectStore, ObjectVersion, Retention};

/// The ClickHouse section and its login: local checks only.
pub fn preflight(config: &Config) -> Result<(&ClickHouseConfig, Login)> {
    let ch = config.clickhouse()?;
    Ok((ch, ch.backup_login()?))
}

/// Where the server writes, as configured (named collection or environment credentials).
pub fn destination(ch: &ClickHouseConfig) -> Destination {
    match (&ch.named_collection, &ch.bucket_url) {
        (Some(name), _) => Destination::Named(name.clone()),
        (None, Some(url)) => Destination::Url(url.clone()),
        (None, None) => unreachable!("config validation requires one of them"),
    }
}

/// What to back up, as configured.
pub fn scope(ch: &ClickHouseConfig) -> Scope {
    if !ch.tables.is_empty() {
        Scope::Tables(ch.tables.clone())
    } else if !ch.databases.is_empty() {
        Scope::Databases(ch.databases.clone())
    } else {
        Scope::All
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn fail(key: &str, problem: impl Into<String>) -> Error {
    Error::Verification {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// The key of ClickHouse's lock file, written and deleted by every BACKUP.
fn is_lock_file(folder: &str, key: &str) -> bool {
    key.strip_prefix(folder) == Some(".lock")
}

/// The backup an incremental one builds on.
struct Base {
    /// Its folder, named as `base_backup`.
    folder: String,
    /// The new backup's chain length.
    length: u32,
    /// It and the backups below it, newest first: the new backup extends their retention.
    chain: Vec<chain::Link>,
}

/// The previous backup to base this one on, when incremental backups are on and the chain is
/// shorter than `full_every`. Any doubt (a manifest of the chain that cannot be read through
/// the server, or does not fit) means a full backup.
async fn choose_base<S: ObjectStore>(
    config: &Config,
    ch: &ClickHouseConfig,
    store: &S,
    server: &ClickHouse,
    destination: &Destination,
) -> Option<Base> {
    if ch.full_every <= 1 {
        return None;
    }
    let latest = catalog::latest_complete(
        store,
        &config.s3.prefix,
        Engine::Clickhouse,
        &config.release,
    )
    .await
    .ok()?;
    let source = chain::ThroughServer {
        server,
        destination,
    };
    let links = match chain::read_chain(&config.s3.prefix, &latest.keys.dump, &source).await {
        Ok(links) => links,
        Err(e) => {
            tracing::warn!(base = %latest.keys.dump, error = %e,
                "cannot read the chain below the previous backup; taking a full backup");
            return None;
        }
    };
    let length = links.first()?.manifest.clickhouse.as_ref()?.chain_length + 1;
    (length < ch.full_every).then_some(Base {
        folder: latest.keys.dump,
        length,
        chain: links,
    })
}

/// What already exists under a new backup's folder, for [`Error::KeyTaken`]: a second writer
/// in the same second, or a clock that went backwards.
fn taken(folder: &str, listed: &[ObjectVersion]) -> Option<String> {
    let inside: Vec<&ObjectVersion> = listed
        .iter()
        .filter(|v| v.key.starts_with(folder))
        .collect();
    let first = inside.first()?;
    Some(format!(
        "{} version(s) and delete marker(s) already under the folder, e.g. {}",
        inside.len(),
        KeyVersions::from_listing(&first.key, inside.iter().copied()).describe()
    ))
}

/// A BACKUP the server is running.
pub struct Started {
    server: ClickHouse,
    version: ServerVersion,
    started: OffsetDateTime,
    timestamp: Timestamp,
    keys: BackupKeys,
    destination: Destination,
    scope: Scope,
    base: Option<Base>,
    id: String,
}

/// Checks the server and the destination, then starts `BACKUP ... ASYNC`. Needs no write
/// policy, so callers may prepare one meanwhile.
pub async fn start<S: ObjectStore>(config: &Config, store: &S) -> Result<Started> {
    let (ch, login) = preflight(config)?;
    let server = ClickHouse::new(&login);
    let started = OffsetDateTime::now_utc();
    let timestamp = Timestamp::new(started);
    let keys = layout::clickhouse_keys(&config.s3.prefix, &config.release, timestamp);
    let (version, existing) = tokio::try_join!(
        async { Ok::<_, Error>(server.require_backup_support().await?) },
        async { Ok(store.list_versions(&keys.dump).await?) },
    )?;
    if let Some(versions) = taken(&keys.dump, &existing) {
        return Err(Error::KeyTaken {
            key: store.target(&keys.dump),
            versions,
        });
    }
    let destination = destination(ch);
    let scope = scope(ch);
    let base = choose_base(config, ch, store, &server, &destination).await;
    let id = format!(
        "strongroom-{}-{timestamp}-{}",
        config.release,
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let statement = clickhouse::backup_statement(
        &scope,
        &destination,
        &keys.dump,
        &id,
        base.as_ref().map(|b| b.folder.as_str()),
    );
    tracing::info!(folder = %keys.dump, server_version = %version.text, %statement,
        "ClickHouse backup started");
    server.execute("BACKUP", &statement).await?;
    Ok(Started {
        server,
        version,
        started,
        timestamp,
        keys,
        destination,
        scope,
        base,
        id,
    })
}

/// Waits for a started BACKUP, proves it complete and locked, and writes the manifest.
pub async fn finish<S: ObjectStore>(
    config: &Config,
    store: &S,
    run: Started,
    policy: &WritePolicy,
    signer: Option<&ManifestSigner>,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<BackupReport> {
    let ch = config.clickhouse()?;
    let Started {
        server,
        version,
        started,
        timestamp,
        keys,
        destination,
        scope,
        base,
        id,
    } = run;
    let retention = policy.retention_from(started);
    let wait = server.wait(
        &id,
        Duration::from_secs(ch.backup_timeout_seconds),
        Duration::from_millis(ch.poll_interval_ms),
        Duration::from_secs(ch.lost_after_seconds),
        |op| progress.set(op.bytes_read, op.total_size),
    );
    let op = tokio::select! {
        op = wait => match op {
            Err(e @ EngineError::ClickHouseTimeout { .. }) => {
                // Giving up: stop it where the server can, and say whether it could.
                let stopped = server.stop(&id).await;
                tracing::warn!(id = %id, outcome = %stopped, "BACKUP timed out");
                return Err(Error::ClickHouseGivenUp { cause: e.to_string(), stopped });
            }
            op => op?,
        },
        () = cancel.cancelled() => {
            let stopped = server.stop(&id).await;
            tracing::warn!(id = %id, outcome = %stopped, "BACKUP cancelled");
            return Err(Error::ClickHouseGivenUp {
                cause: Error::Cancelled { key: store.target(&keys.dump) }.to_string(),
                stopped,
            });
        }
    };
    if !op.succeeded() {
        return Err(EngineError::ClickHouseFailed {
            what: "BACKUP",
            id,
            status: op.status,
            error: op.error,
        }
        .into());
    }
    tracing::info!(
        files = op.num_files,
        bytes = op.total_size,
        "BACKUP_CREATED; checking it"
    );

    let (metadata_bytes, listed, counts) = tokio::try_join!(
        async { Ok::<_, Error>(server.read_object(&destination, &keys.checksum).await?) },
        async { Ok(store.list_versions(&keys.dump).await?) },
        async { Ok(server.part_row_counts(&destination, &keys.dump).await?) },
    )?;
    let metadata = BackupMetadata::parse(&metadata_bytes)
        .map_err(|problem| fail(&store.target(&keys.checksum), problem))?;
    let objects = check_listing(store, &keys, listed, &metadata, metadata_bytes.len() as u64)?;
    let ((), tables, ()) = tokio::try_join!(
        async {
            match &retention {
                Some(required) => lock_all(store, &objects, required).await,
                None => Ok(()),
            }
        },
        row_counts(&server, &destination, &keys.dump, &metadata, counts),
        async {
            // Every base must stay locked as long as this backup, which needs it to restore.
            if let (Some(base), Some(required)) = (&base, &retention) {
                chain::extend(store, &keys.dump, &base.chain, required).await?;
            }
            Ok(())
        },
    )?;

    let metadata_sha256 = sha256_hex(&metadata_bytes);
    let metadata_version = objects
        .iter()
        .find(|o| o.key == keys.checksum)
        .and_then(|o| o.version_id.clone());
    let size_bytes: u64 = objects.iter().map(|o| o.size).sum();
    let finished_at = OffsetDateTime::now_utc();
    let manifest = Manifest {
        objects: objects
            .iter()
            .map(|o| ManifestObject {
                key: o.key.clone(),
                version_id: o.version_id.clone(),
                size_bytes: o.size,
                sha256: (o.key == keys.checksum).then(|| metadata_sha256.clone()),
            })
            .collect(),
        clickhouse: Some(ClickHouseDetails {
            server_version: version.text.clone(),
            backup_id: id,
            scope: scope.describe(),
            base_backup: base.as_ref().map(|b| b.folder.clone()),
            chain_length: base.as_ref().map_or(0, |b| b.length),
            metadata_key: keys.checksum.clone(),
            metadata_sha256: metadata_sha256.clone(),
            files: metadata.files.len() as u64,
            total_size_bytes: metadata.files.iter().map(|f| f.size).sum(),
            tables: tables.clone(),
        }),
        ..Manifest::header(
            Engine::Clickhouse,
            &config.release,
            timestamp,
            (started, finished_at),
            retention.as_ref(),
        )
    };
    let manifest_sha256 =
        super::write_manifest(store, policy, signer, &keys, &manifest, retention.as_ref()).await?;
    let report = BackupReport {
        engine: Engine::Clickhouse,
        release: config.release.clone(),
        timestamp: timestamp.to_string(),
        key: keys.dump.clone(),
        version_id: metadata_version,
        manifest_key: keys.manifest.clone(),
        manifest_sha256,
        signed: signer.is_some(),
        size_bytes,
        uncompressed_size_bytes: op.total_size.max(size_bytes),
        sha256: metadata_sha256,
        integrity: policy.integrity,
        retain_until: retention.map(|r| r.retain_until),
        duration_seconds: (finished_at - started).as_seconds_f64(),
        tables: tables.len(),
    };
    tracing::info!(manifest = %report.manifest_key, objects = objects.len(),
        size = report.size_bytes, seconds = report.duration_seconds, "backup complete");
    Ok(report)
}

/// Every object `.backup` stores must be listed with its size, its newest version pinned;
/// returns the folder's objects (`.backup` first, ClickHouse's deleted `.lock` left out).
fn check_listing<S: ObjectStore>(
    store: &S,
    keys: &BackupKeys,
    listed: Vec<ObjectVersion>,
    metadata: &BackupMetadata,
    metadata_size: u64,
) -> Result<Vec<ObjectVersion>> {
    let folder = &keys.dump;
    let mut by_key: BTreeMap<String, Vec<ObjectVersion>> = BTreeMap::new();
    for v in listed {
        if v.key.starts_with(folder.as_str()) && !is_lock_file(folder, &v.key) {
            by_key.entry(v.key.clone()).or_default().push(v);
        }
    }
    // ClickHouse retries a failed or slow upload, and on a versioned bucket each attempt is a
    // version: the newest is the one RESTORE reads, so it is the one pinned. A delete marker is
    // never pinned: a key whose newest entry is one has no current version at all.
    let mut current: BTreeMap<String, ObjectVersion> = BTreeMap::new();
    for (key, all) in by_key {
        let versions = KeyVersions { key, all };
        if versions.hidden() {
            return Err(fail(
                &store.target(&versions.key),
                format!(
                    "hidden by a delete marker right after the BACKUP (versions: {}): \
                     something deletes here; find out what, and run the backup again",
                    versions.describe()
                ),
            ));
        }
        let Some(newest) = versions.find(None).cloned() else {
            continue;
        };
        if versions.all.len() > 1 {
            tracing::warn!(
                key = versions.key,
                versions = %versions.describe(),
                "ClickHouse wrote this file more than once (a retried upload); pinning the newest"
            );
        }
        current.insert(versions.key, newest);
    }
    let mut expected = metadata.stored_objects();
    expected.insert(layout::CLICKHOUSE_METADATA.to_owned(), metadata_size);
    for (name, size) in &expected {
        let key = format!("{folder}{name}");
        match current.get(&key) {
            None => {
                return Err(fail(
                    &store.target(&key),
                    "listed in .backup but not in the bucket",
                ));
            }
            Some(v) if v.size != *size => {
                return Err(fail(
                    &store.target(&key),
                    format!("{} bytes stored, .backup says {size}", v.size),
                ));
            }
            Some(_) => {}
        }
    }
    let mut objects: Vec<ObjectVersion> = current.into_values().collect();
    objects.sort_by_key(|o| (o.key != keys.checksum, o.key.clone()));
    Ok(objects)
}

/// Checks every object's retention, setting it where the bucket default did not apply.
async fn lock_all<S: ObjectStore>(
    store: &S,
    objects: &[ObjectVersion],
    required: &Retention,
) -> Result<()> {
    let checks: Vec<_> = objects
        .iter()
        .map(|o| ensure_retention(store, &o.key, o.version_id.as_deref(), required))
        .collect();
    futures::stream::iter(checks)
        .buffer_unordered(RETENTION_CONCURRENCY)
        .try_for_each(|_| async { Ok(()) })
        .await
}

/// One backup of a chain: its folder, metadata and the row counts stored in it.
struct Level {
    folder: String,
    metadata: BackupMetadata,
    counts: BTreeMap<String, u64>,
}

/// The folder a recorded `base_backup` (e.g. `S3(collection, 'b/x/')`) points at.
fn base_folder(recorded: &str, destination: &Destination) -> Option<String> {
    let start = recorded.find('\'')? + 1;
    let end = recorded.rfind('\'')?;
    let quoted = recorded.get(start..end)?;
    match destination {
        Destination::Named(_) => Some(quoted.to_owned()),
        Destination::Url(url) => quoted.strip_prefix(url.as_str()).map(str::to_owned),
    }
}

/// Per-table row counts from each part's `count.txt`, found in this backup (`counts`, read
/// while `.backup` was) or along its base chain. Tables without parts have 0 rows; tables whose
/// engine keeps no counts have none.
async fn row_counts(
    server: &ClickHouse,
    destination: &Destination,
    folder: &str,
    metadata: &BackupMetadata,
    counts: BTreeMap<String, u64>,
) -> Result<Vec<ClickHouseTable>> {
    let mut chain = vec![Level {
        folder: folder.to_owned(),
        metadata: metadata.clone(),
        counts,
    }];
    let mut tables: BTreeMap<(String, String), ClickHouseTable> = BTreeMap::new();
    for (database, table) in metadata.tables() {
        tables.insert(
            (database.clone(), table.clone()),
            ClickHouseTable {
                database,
                table,
                rows: None,
                parts: 0,
            },
        );
    }
    for (database, table, entry) in metadata.part_counts() {
        let mut wanted = entry.clone();
        let mut level = 0;
        let rows = loop {
            let here = &chain[level];
            let found = if level == 0 {
                here.metadata.file(&wanted.name)
            } else {
                same_content(&here.metadata, &wanted)
            };
            let Some(file) = found else {
                return Err(fail(
                    &format!("{}{}", here.folder, wanted.name),
                    format!(
                        "an incremental backup takes it ({} bytes, checksum {}) from this base \
                         backup, whose .backup lists no such file",
                        wanted.size,
                        wanted.checksum.as_deref().unwrap_or("none")
                    ),
                ));
            };
            if !file.in_base() {
                break here.counts.get(file.stored_as()).copied().ok_or_else(|| {
                    fail(
                        &format!("{}{}", here.folder, file.stored_as()),
                        "the part's row count could not be read",
                    )
                })?;
            }
            wanted = file.clone();
            level += 1;
            if level == chain.len() {
                let recorded = here.metadata.base_backup.clone().unwrap_or_default();
                let base = base_folder(&recorded, destination).ok_or_else(|| {
                    fail(
                        &format!("{}.backup", here.folder),
                        format!("its base backup {recorded:?} is not in this bucket"),
                    )
                })?;
                let bytes = server
                    .read_object(
                        destination,
                        &format!("{base}{}", layout::CLICKHOUSE_METADATA),
                    )
                    .await?;
                let metadata = BackupMetadata::parse(&bytes)
                    .map_err(|p| fail(&format!("{base}.backup"), p))?;
                let counts = server.part_row_counts(destination, &base).await?;
                chain.push(Level {
                    folder: base,
                    metadata,
                    counts,
                });
            }
        };
        let t = tables
            .entry((database.clone(), table.clone()))
            .or_insert_with(|| ClickHouseTable {
                database,
                table,
                rows: None,
                parts: 0,
            });
        t.rows = Some(t.rows.unwrap_or(0) + rows);
        t.parts += 1;
    }
    // A MergeTree table without parts is empty; other engines keep no count.
    for t in tables.values_mut() {
        if t.rows.is_none() && is_mergetree_without_parts(metadata, t) {
            t.rows = Some(0);
        }
    }
    Ok(tables.into_values().collect())
}

/// The entry of a base backup's `.backup` that holds `file`'s bytes. ClickHouse takes a file
/// from the base by size and checksum, not by name: a new part's `count.txt` can come from
/// another part's that holds the same number. Its own name is preferred.
fn same_content<'m>(base: &'m BackupMetadata, file: &FileEntry) -> Option<&'m FileEntry> {
    let same = |f: &&FileEntry| f.size == file.size && f.checksum == file.checksum;
    let by_name = base.file(&file.name).filter(same);
    match &file.checksum {
        Some(_) => by_name.or_else(|| base.files.iter().find(same)),
        None => base.file(&file.name),
    }
}

/// No `data/<db>/<table>/` files at all: nothing was stored for the table, so it is empty.
fn is_mergetree_without_parts(metadata: &BackupMetadata, table: &ClickHouseTable) -> bool {
    let prefix = format!("data/{}/{}/", escape(&table.database), escape(&table.table));
    !metadata.files.iter().any(|f| f.name.starts_with(&prefix))
}

/// ClickHouse's `escapeForFileName`.
fn escape(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_folders_are_read_from_the_recorded_expression() {
        let named = Destination::Named("nc".into());
        assert_eq!(
            base_folder("S3(nc, 'b/clickhouse/r/20261122T023000Z/')", &named).as_deref(),
            Some("b/clickhouse/r/20261122T023000Z/")
        );
        let url = Destination::Url("https://bucket.s3.amazonaws.com/".into());
        assert_eq!(
            base_folder("S3('https://bucket.s3.amazonaws.com/b/x/')", &url).as_deref(),
            Some("b/x/")
        );
        assert_eq!(base_folder("S3('https://other/b/x/')", &url), None);
        assert_eq!(escape("my-table"), "my%2Dtable");
    }

    fn listed(key: &str, id: &str, size: u64, marker: bool) -> ObjectVersion {
        ObjectVersion {
            key: key.into(),
            version_id: Some(id.into()),
            size,
            delete_marker: marker,
            ..ObjectVersion::default()
        }
    }

    /// Marks each key's first entry the latest, as S3 lists them.
    fn latest_first(mut listing: Vec<ObjectVersion>) -> Vec<ObjectVersion> {
        for i in 0..listing.len() {
            listing[i].is_latest = i == 0 || listing[i - 1].key != listing[i].key;
        }
        listing
    }

    /// A folder whose `.backup` stores one 4-byte file.
    fn one_file() -> (BackupKeys, BackupMetadata) {
        let keys = layout::clickhouse_keys("b", "r", Timestamp::parse("20261123T020000Z").unwrap());
        let metadata = BackupMetadata::parse(
            b"<config><contents><file><name>data/a.bin</name><size>4</size></file>\
              </contents></config>",
        )
        .unwrap();
        (keys, metadata)
    }

    #[test]
    fn the_newest_data_version_is_pinned_and_a_delete_marker_never() {
        let store = crate::store::memory::MemoryStore::default();
        let (keys, metadata) = one_file();
        let data = format!("{}data/a.bin", keys.dump);
        let lock = format!("{}.lock", keys.dump);
        // A retried upload, a marker between the attempts, and ClickHouse's deleted .lock.
        let listing = vec![
            listed(&keys.checksum, "m1", 10, false),
            listed(&data, "v3", 4, false),
            listed(&data, "dm", 0, true),
            listed(&data, "v1", 4, false),
            listed(&lock, "l2", 0, true),
            listed(&lock, "l1", 1, false),
        ];
        let objects =
            check_listing(&store, &keys, latest_first(listing.clone()), &metadata, 10).unwrap();
        let pinned: Vec<_> = objects
            .iter()
            .map(|o| (o.key.as_str(), o.version_id.as_deref().unwrap()))
            .collect();
        assert_eq!(
            pinned,
            [(keys.checksum.as_str(), "m1"), (data.as_str(), "v3")]
        );

        // A marker on top: nothing to pin, the backup fails naming the key.
        let mut hidden = listing;
        hidden.insert(1, listed(&data, "dm2", 0, true));
        let e = check_listing(&store, &keys, latest_first(hidden), &metadata, 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&data), "{e}");
        assert!(e.contains("hidden by a delete marker"), "{e}");
    }

    #[test]
    fn a_base_file_is_found_by_its_content() {
        let base = BackupMetadata::parse(
            b"<config><contents>\
              <file><name>data/a/t/all_3_3_0/count.txt</name><size>2</size><checksum>c10</checksum></file>\
              <file><name>data/a/t/all_1_1_0/count.txt</name><size>2</size><checksum>c99</checksum></file>\
              </contents></config>",
        )
        .unwrap();
        let wanted = |name: &str, checksum: &str| FileEntry {
            name: name.into(),
            size: 2,
            checksum: Some(checksum.into()),
            use_base: true,
            base_size: 2,
            data_file: None,
        };
        // A new part holding 10 rows, like all_3_3_0 in the base: ClickHouse took that file.
        let found = same_content(&base, &wanted("data/a/t/all_4_4_0/count.txt", "c10"));
        assert_eq!(found.unwrap().name, "data/a/t/all_3_3_0/count.txt");
        // Its own name wins only with the same content.
        let found = same_content(&base, &wanted("data/a/t/all_1_1_0/count.txt", "c10"));
        assert_eq!(found.unwrap().name, "data/a/t/all_3_3_0/count.txt");
        assert!(same_content(&base, &wanted("data/a/t/all_5_5_0/count.txt", "c77")).is_none());
    }

    #[test]
    fn anything_under_the_new_folder_means_it_is_taken() {
        let (keys, _) = one_file();
        assert_eq!(taken(&keys.dump, &[]), None);
        let other = listed(
            "b/clickhouse/r/20261123T020000Z.manifest.json",
            "x",
            1,
            false,
        );
        assert_eq!(taken(&keys.dump, &[other]), None);
        let inside = listed(&format!("{}.backup", keys.dump), "v1", 3, false);
        let found = taken(&keys.dump, &[inside]).unwrap();
        assert!(found.contains("v1 (3 bytes)"), "{found}");
    }
}
