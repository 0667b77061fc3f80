//! One PostgreSQL backup, from snapshot to manifest; the rule "complete means manifest".
//! [`clickhouse`] does the same for ClickHouse; [`run_recorded`] runs either with its audit
//! event.
//!
//! Order: check the bucket is protected, resolve the integrity header and open the snapshot
//! (concurrently; nothing is written yet), stop if the server is a standby (unless
//! `postgresql.backup_from: any`), stream `pg_dump` into a multipart upload, counting each
//! table's rows in the dump as it streams past ([`row_counts`]), complete the upload only if
//! pg_dump exited 0, read the object back (size, checksum, retention) and check it is the
//! key's first version (a same-second race is lost here), write the `.sha256` file, the
//! globals (roles, memberships, settings, read in the dump's snapshot), the manifest's
//! signature (when a key is configured), and only then the manifest, each create-only and
//! read back. Any failure before the manifest leaves no manifest; a failure before
//! completion leaves no object at all.

pub mod clickhouse;
pub mod deadline;
pub mod row_counts;

use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::audit::{self, Action, EventDraft, Outcome};
use crate::config::{BackupFrom, Config, PostgresConfig};
use crate::engine::postgres::globals::Globals;
use crate::engine::postgres::{self, ConnParams, SnapshotSession};
use crate::error::{Error, Result};
use crate::layout::{self, Engine, Timestamp};
use crate::locked_write::WritePolicy;
use crate::manifest::{Compression, Manifest, ManifestObject, PostgresDetails};
use crate::pipeline::{self, Progress, StreamOptions};
use crate::readback::{self, Confirmed};
use crate::signing::ManifestSigner;
use crate::store::versions::KeyVersions;
use crate::store::{Integrity, ObjectStore};
use deadline::Deadline;

/// What a finished backup reports (also printed by `strongroom backup --json`).
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub engine: Engine,
    pub release: String,
    pub timestamp: String,
    pub key: String,
    pub version_id: Option<String>,
    pub manifest_key: String,
    pub manifest_sha256: String,
    /// Whether a `.manifest.json.sig` was written.
    pub signed: bool,
    pub size_bytes: u64,
    pub uncompressed_size_bytes: u64,
    pub sha256: String,
    pub integrity: Integrity,
    #[serde(with = "time::serde::rfc3339::option")]
    pub retain_until: Option<OffsetDateTime>,
    pub duration_seconds: f64,
    pub tables: usize,
}

/// Refuses to add a version to a key that already holds a backup (or a delete marker).
async fn ensure_key_free<S: ObjectStore>(store: &S, key: &str) -> Result<()> {
    let versions = KeyVersions::of(store, key).await?;
    if !versions.is_empty() {
        return Err(Error::KeyTaken {
            key: store.target(key),
            versions: versions.describe(),
        });
    }
    Ok(())
}

/// Two backups of one release in the same second both find the key free and both upload;
/// where the server ignores `If-None-Match`, both dumps become versions of one key. The first
/// version written wins: every writer checks, after its upload, that no older version is
/// there, and a later one stops before writing anything that marks a backup complete.
fn ensure_first_writer<S: ObjectStore>(store: &S, dump: &Confirmed) -> Result<()> {
    if dump.older.is_empty() {
        return Ok(());
    }
    let versions = KeyVersions::from_listing(&dump.key, &dump.older);
    Err(Error::LostRace {
        key: store.target(&dump.key),
        ours: dump.version_id.clone().unwrap_or_else(|| "(none)".into()),
        first: versions.describe(),
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Writes the signature (when signing) and then the manifest, each locked and read back; the
/// manifest is what marks the backup complete, so it goes last. Returns its SHA-256.
pub(crate) async fn write_manifest<S: ObjectStore>(
    store: &S,
    policy: &WritePolicy,
    signer: Option<&ManifestSigner>,
    keys: &layout::BackupKeys,
    manifest: &Manifest,
    retention: Option<&crate::store::Retention>,
) -> Result<String> {
    let bytes = manifest.to_bytes();
    let sha256 = sha256_hex(&bytes);
    if let Some(signer) = signer {
        let signature = signer.sign(&bytes).to_bytes();
        policy
            .put(store, &keys.signature, signature, retention)
            .await?;
    }
    policy.put(store, &keys.manifest, bytes, retention).await?;
    Ok(sha256)
}

/// A pg_dump or row count that gave up waiting for a table lock, said as such.
fn lock_wait(e: crate::engine::EngineError, seconds: u64) -> Error {
    let text = e.to_string();
    let table = text
        .split_once("LOCK TABLE ")
        .map(|(_, rest)| rest.split_whitespace().next().unwrap_or(rest))
        .or_else(|| {
            text.contains("lock timeout")
                .then(|| text.split_once("(table ")?.1.split(')').next())
                .flatten()
        });
    match table {
        Some(table) if text.contains("timeout") => Error::LockWait {
            table: table.to_owned(),
            seconds,
            detail: text,
        },
        _ => e.into(),
    }
}

/// The snapshot transaction and the pg_dump version.
async fn prepare_pg(pg: &PostgresConfig, params: &ConnParams) -> Result<(SnapshotSession, String)> {
    let (session, version) = tokio::try_join!(
        SnapshotSession::open(params, pg.lock_wait_timeout_seconds),
        postgres::pg_dump_version(&pg.pg_dump)
    )?;
    Ok((session, version))
}

/// The PostgreSQL section and how to connect: local checks only (engine configured, password
/// readable), so a bad config fails before any request.
pub fn preflight(config: &Config) -> Result<(&PostgresConfig, ConnParams)> {
    let pg = config.postgresql()?;
    Ok((pg, pg.backup_params()?))
}

/// Runs one PostgreSQL backup now, writing under `policy` (from [`WritePolicy::prepare`]);
/// `signer` signs the manifest when configured. Cancelled by `cancel`, or after
/// `postgresql.backup_timeout_seconds`.
pub async fn backup_postgres<S: ObjectStore + 'static>(
    config: &Config,
    store: Arc<S>,
    policy: &WritePolicy,
    signer: Option<&ManifestSigner>,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<BackupReport> {
    let (pg, _) = preflight(config)?;
    let deadline = Deadline::arm(
        cancel,
        pg.backup_timeout_seconds,
        "postgresql.backup_timeout_seconds",
    );
    dump_and_upload(config, store, policy, signer, progress, deadline.token())
        .await
        .map_err(|e| deadline.explain(e))
}

async fn dump_and_upload<S: ObjectStore + 'static>(
    config: &Config,
    store: Arc<S>,
    policy: &WritePolicy,
    signer: Option<&ManifestSigner>,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<BackupReport> {
    let (pg, params) = preflight(config)?;
    let s3 = &config.s3;
    let started = OffsetDateTime::now_utc();
    let timestamp = Timestamp::new(started);
    let keys = layout::postgres_keys(
        &s3.prefix,
        &config.release,
        timestamp,
        pg.compression_format,
    );
    let ((), (session, pg_dump_version)) = tokio::try_join!(
        ensure_key_free(&*store, &keys.dump),
        prepare_pg(pg, &params),
    )?;
    if session.in_recovery && pg.backup_from == BackupFrom::Primary {
        session.close().await;
        return Err(Error::Standby {
            target: format!("{}:{}/{}", pg.host, pg.port, pg.database),
        });
    }
    let retention = policy.retention_from(started);
    tracing::info!(key = %keys.dump, database = %pg.database, "backup started");

    let (child, stdout) = postgres::spawn_pg_dump(
        &pg.pg_dump,
        &params,
        &session.snapshot_id,
        pg.lock_wait_timeout_seconds,
    )?;
    let options = StreamOptions {
        parts: s3.part_plan(),
        upload_concurrency: s3.upload_concurrency as usize,
        codec: pg.compression_format,
        compression_level: pg.compression_level(),
        compression_threads: crate::compress::threads(pg.compression_threads),
        block_size: crate::compress::BLOCK_SIZE,
        integrity: policy.integrity,
        sections: true,
    };
    let upload = pipeline::stage(
        Arc::clone(&store),
        &keys.dump,
        stdout,
        options,
        retention.as_ref(),
        progress,
        cancel,
    );
    let catalog = async {
        // A look-up stuck behind a lock must not outlive a cancelled run.
        tokio::select! {
            read = async { Ok((session.user_tables().await?, session.globals().await?)) } => read,
            () = cancel.cancelled() => Ok((Vec::new(), Globals::default())),
        }
    };
    let (staged, catalog) = tokio::join!(upload, catalog);
    let staged = staged?;
    let finished = child.finish().await;
    tracing::debug!(ok = finished.is_ok(), "pg_dump exited");
    let counted = match (finished, catalog) {
        (Ok(()), Ok((user_tables, globals))) => {
            row_counts::count(&session, &user_tables, staged.sections.as_deref(), cancel)
                .await
                .map(|tables| (tables, globals))
        }
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
    };
    let (tables, globals) = match counted {
        Ok(read) => read,
        Err(e) => {
            staged.abort().await;
            return Err(lock_wait(e, pg.lock_wait_timeout_seconds));
        }
    };
    tracing::debug!(tables = tables.len(), "row counts done");
    let snapshot_id = session.snapshot_id.clone();
    let server_version = session.server_version.clone();
    if cancel.is_cancelled() {
        // Dropped, not committed: a COMMIT would wait behind a count still running.
        drop(session);
        staged.abort().await;
        return Err(Error::Cancelled {
            key: store.target(&keys.dump),
        });
    }
    session.close().await;

    let completed = staged.complete().await?;
    let sha256 = hex::encode(completed.sha256);
    let file_name = keys.dump.rsplit('/').next().unwrap_or(&keys.dump);
    let checksum_body = format!("{sha256}  {file_name}\n").into_bytes();
    let checksum_sha = sha256_hex(&checksum_body);
    // Nothing else is written before this run knows its dump is the key's first version.
    let dump = readback::confirm(&*store, &completed.sent, retention.as_ref()).await?;
    ensure_first_writer(&*store, &dump)?;
    let checksum = policy
        .put(&*store, &keys.checksum, checksum_body, retention.as_ref())
        .await?;
    let globals_key = layout::postgres_globals_key(&keys.dump);
    let mut globals_body = serde_json::to_vec_pretty(&globals).expect("serialisable");
    globals_body.push(b'\n');
    let globals_sha = sha256_hex(&globals_body);
    let globals_object = policy
        .put(&*store, &globals_key, globals_body, retention.as_ref())
        .await?;
    tracing::info!(key = %dump.key, version_id = ?dump.version_id, size = dump.size,
        "dump uploaded, read back and locked");

    let finished_at = OffsetDateTime::now_utc();
    let manifest = Manifest {
        objects: vec![
            ManifestObject {
                key: dump.key.clone(),
                version_id: dump.version_id.clone(),
                size_bytes: dump.size,
                sha256: Some(sha256.clone()),
            },
            ManifestObject {
                key: checksum.key.clone(),
                version_id: checksum.version_id.clone(),
                size_bytes: checksum.size,
                sha256: Some(checksum_sha),
            },
            ManifestObject {
                key: globals_object.key.clone(),
                version_id: globals_object.version_id.clone(),
                size_bytes: globals_object.size,
                sha256: Some(globals_sha),
            },
        ],
        postgresql: Some(PostgresDetails {
            database: pg.database.clone(),
            server_version,
            pg_dump_version,
            dump_format: "plain".into(),
            compression: Compression {
                format: pg.compression_format.as_str().into(),
                level: pg.compression_level(),
                block_size_bytes: crate::compress::BLOCK_SIZE as u64,
            },
            uncompressed_size_bytes: completed.uncompressed_size,
            snapshot_id,
            tables: tables.clone(),
            globals_key: Some(globals_key),
            sections: completed.sections.clone(),
        }),
        ..Manifest::header(
            Engine::Postgresql,
            &config.release,
            timestamp,
            (started, finished_at),
            retention.as_ref(),
        )
    };
    let manifest_sha256 = write_manifest(
        &*store,
        policy,
        signer,
        &keys,
        &manifest,
        retention.as_ref(),
    )
    .await?;
    let report = BackupReport {
        engine: Engine::Postgresql,
        release: config.release.clone(),
        timestamp: timestamp.to_string(),
        key: dump.key,
        version_id: dump.version_id,
        manifest_key: keys.manifest,
        manifest_sha256,
        signed: signer.is_some(),
        size_bytes: dump.size,
        uncompressed_size_bytes: completed.uncompressed_size,
        sha256,
        integrity: policy.integrity,
        retain_until: retention.map(|r| r.retain_until),
        duration_seconds: (finished_at - started).as_seconds_f64(),
        tables: tables.len(),
    };
    tracing::info!(manifest = %report.manifest_key, size = report.size_bytes,
        seconds = report.duration_seconds, signed = report.signed, "backup complete");
    Ok(report)
}

/// A backup as `strongroom backup` and the daemon run it: local checks first (bad config fails
/// before any request), the manifest signed when a key is configured, and an audit event
/// recording the result, whatever it is.
pub async fn run_recorded<S: ObjectStore + 'static>(
    config: &Config,
    engine: Engine,
    store: Arc<S>,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<BackupReport> {
    match engine {
        Engine::Postgresql => drop(preflight(config)?),
        Engine::Clickhouse => drop(clickhouse::preflight(config)?),
    }
    let signer = match &config.signing.private_key_file {
        Some(path) => Some(ManifestSigner::load(path)?),
        None => None,
    };
    let prefix = &config.s3.prefix;
    let event = |snapshot, result, detail, manifest_sha256| EventDraft {
        action: Action::Backup,
        engine,
        release: config.release.clone(),
        snapshot,
        result,
        detail,
        manifest_sha256,
    };
    let (policy, clickhouse_run) = match engine {
        Engine::Postgresql => (WritePolicy::prepare(&*store, &config.s3).await, None),
        Engine::Clickhouse => {
            // An unprotected bucket is refused before ClickHouse writes anything; the integrity
            // probe then runs while the server is already backing up.
            let s3 = &config.s3;
            match crate::lock::require_protection(&*store, &s3.bucket, &s3.object_lock).await {
                Err(e) => (Err(e), None),
                Ok(lock) => {
                    let (policy, run) = tokio::join!(
                        WritePolicy::with_lock(&*store, s3, lock),
                        clickhouse::start(config, &*store)
                    );
                    (policy, Some(run))
                }
            }
        }
    };
    let policy = match policy {
        Ok(policy) => policy,
        Err(e) => {
            let draft = event(None, Outcome::Failure, e.to_string(), None);
            audit::record(&*store, None, prefix, draft).await;
            return Err(e);
        }
    };
    let result = match clickhouse_run {
        None => {
            backup_postgres(
                config,
                Arc::clone(&store),
                &policy,
                signer.as_ref(),
                progress,
                cancel,
            )
            .await
        }
        Some(Ok(run)) => {
            clickhouse::finish(
                config,
                &*store,
                run,
                &policy,
                signer.as_ref(),
                progress,
                cancel,
            )
            .await
        }
        Some(Err(e)) => Err(e),
    };
    // A standby's skipped run did nothing: no event (every replica would add one nightly).
    if let Err(Error::Standby { .. }) = &result {
        return result;
    }
    let draft = match &result {
        Ok(r) => event(
            Some(r.key.clone()),
            Outcome::Success,
            format!("{} bytes, {} tables", r.size_bytes, r.tables),
            Some(r.manifest_sha256.clone()),
        ),
        Err(e) => event(None, Outcome::Failure, e.to_string(), None),
    };
    audit::record(&*store, Some(&policy), prefix, draft).await;
    result
}
