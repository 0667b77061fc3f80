//! `strongroom restore` for PostgreSQL: verify before commit, in one pass, then validate.
//!
//! The snapshot key is checked before any request; the manifest is fetched and authenticated;
//! the dump is read by the VersionId the manifest pins and streamed through SHA-256, gunzip and
//! the SQL-only guard into psql, inside the agent's own transaction, which [`psql_load`]
//! commits only after the hash and size matched the manifest and every table held the rows the
//! manifest counts. A dump with a section index loads in parallel ([`parallel`]) into a
//! staging database ([`staging`]) that takes the target's place only once its rows were
//! counted against the manifest (and analyzed). Then SQL checks and HTTP smoke checks run, and
//! the report is printed and stored, locked, under `<prefix>/reports/`. [`clickhouse`]
//! restores ClickHouse backups with the same report.

pub mod abandoned;
pub mod clickhouse;
mod copy_freeze;
pub mod globals;
pub mod landed;
pub mod parallel;
pub mod psql_load;
pub mod run_once;
pub mod session;
pub mod staging;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::catalog::{self, SignatureStatus};
use crate::config::Config;
use crate::engine::postgres::{self, ConnParams, per_table};
use crate::error::{Error, Result};
use crate::layout::{self, Engine, SnapshotRef, Timestamp};
use crate::locked_write::WritePolicy;
use crate::signing::ManifestVerifier;
use crate::store::ObjectStore;
use crate::store::versions::KeyVersions;
use crate::validate::{self, CheckResult};

/// Which backup to restore.
#[derive(Debug, Clone)]
pub enum SnapshotChoice {
    /// A dump key, exactly as the runbook's `restore.snapshot`.
    Key(String),
    /// The newest complete backup of the configured release.
    Latest,
}

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// The target database; `postgresql.database` when absent.
    pub database: Option<String>,
    /// Load even into a database that has tables.
    pub force: bool,
    /// Create the target database if it does not exist.
    pub create: bool,
    /// Restore even without `signing.public_key_file` (`--allow-unsigned`; also
    /// `restore.allow_unsigned`).
    pub allow_unsigned: bool,
    /// PostgreSQL: create the roles the backup names that the server lacks (from its globals
    /// object) before loading, this faithfully; existing roles are never altered.
    pub with_globals: Option<crate::engine::postgres::globals::Fidelity>,
    /// Run these smoke checks instead of `restore.validation.http` (a scratch drill's, which
    /// call the application with the scratch database's name).
    pub smoke: Option<Vec<crate::config::HttpCheck>>,
    /// ClickHouse: restore each database under its name plus this suffix (`RESTORE ... AS`).
    pub rename_suffix: Option<String>,
    /// Do not store the restore report under `<prefix>/reports/` (a drill stores its own).
    pub no_report: bool,
    /// Comment a database the restore creates as in use ([`abandoned::IN_USE`]): a scratch
    /// drill's, which holds its name and drops it when done.
    pub mark_created: bool,
    /// PostgreSQL: once cancelled (`strongroom restore` on SIGTERM or SIGINT), a restore whose
    /// data is still loading (into the staging database, or into psql before the agent writes
    /// its `COMMIT`) stops and discards what it loaded ([`Error::RestoreStopped`]); one past
    /// that point goes on to swap, validate and report.
    pub stop: Option<CancellationToken>,
}

/// Durations of the restore's phases. Download and load overlap (one pass): download ends
/// when the last byte arrived, load when the data was in place (a one-session load's row
/// counts and `ANALYZE` run in its transaction, before psql commits: they are part of it).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phases {
    pub download_seconds: f64,
    pub load_seconds: f64,
    /// `ANALYZE` of a parallel restore's staging copy before the swap, failed or not (a
    /// failure is in the warnings), at the same time as its row counts after the load (both
    /// outside `load_seconds`; what was analyzed as it landed is within it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analyze_seconds: Option<f64>,
    /// The row counts (a parallel restore's, of its staging copy before the swap) and the SQL
    /// checks.
    pub validation_seconds: f64,
    /// Of `validation_seconds`: a parallel restore's row counts of its staging copy after the
    /// load, a read of every table not counted as it landed (those are within
    /// `load_seconds`), so they grow with the database as the load does (a one-session load
    /// counts in its transaction, within `load_seconds`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_count_seconds: Option<f64>,
    pub smoke_seconds: f64,
    pub total_seconds: f64,
}

/// The restore report: printed on stdout and stored under `<prefix>/reports/`.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub format_version: u32,
    pub engine: Engine,
    pub release: String,
    pub snapshot: String,
    pub version_id: Option<String>,
    pub manifest_key: String,
    pub manifest_sha256: String,
    pub signature: SignatureStatus,
    pub signature_summary: String,
    pub target_database: String,
    pub expected_sha256: String,
    pub actual_sha256: String,
    pub size_bytes: u64,
    pub uncompressed_size_bytes: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    pub phases: Phases,
    pub checks: Vec<CheckResult>,
    pub warnings: Vec<String>,
    /// The roles created before loading (`--with-globals`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub globals: Option<crate::engine::postgres::globals::Applied>,
    /// How a section-indexed dump was loaded (sessions, sections, phase times).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel: Option<parallel::ParallelLoad>,
    /// True when every check passed.
    pub passed: bool,
    /// Where the report was stored.
    pub report_key: Option<String>,
    /// Why it could not be stored (the restore itself is done either way).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_error: Option<String>,
}

impl RestoreReport {
    /// The failed checks, by name, for the error message.
    pub fn failed_checks(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect()
    }
}

/// Resolves the snapshot: a key is checked without any request; `Latest` lists the bucket.
pub async fn resolve_snapshot<S: ObjectStore>(
    store: &S,
    config: &Config,
    engine: Engine,
    choice: &SnapshotChoice,
) -> Result<SnapshotRef> {
    match choice {
        SnapshotChoice::Key(key) => Ok(layout::parse_snapshot(&config.s3.prefix, engine, key)?),
        SnapshotChoice::Latest => {
            catalog::latest_complete(store, &config.s3.prefix, engine, &config.release).await
        }
    }
}

/// What [`prepare_target`] found.
struct PreparedTarget {
    /// The restore created the database, or will (`absent`).
    created: bool,
    /// It does not exist: a parallel restore's staging database takes its name.
    absent: bool,
    /// It has tables of its own (only possible with `--force`).
    has_tables: bool,
}

/// Creates the target if asked, and refuses a non-empty one unless forced. A missing target
/// that a parallel load's staging database can become (`parallel`; not a scratch drill's,
/// which is marked and held under its own name) is left absent, if the role may create
/// databases: its staging database takes the name at the end, and a failed restore leaves
/// nothing behind.
async fn prepare_target(
    params: &ConnParams,
    options: &RestoreOptions,
    parallel: bool,
) -> Result<PreparedTarget> {
    let maintenance = params.with_database("postgres");
    let mut created = false;
    if !postgres::database_exists(&maintenance, &params.database).await? {
        if !options.create {
            return Err(Error::TargetMissing {
                database: params.database.clone(),
            });
        }
        if parallel && !options.mark_created && postgres::can_create_database(&maintenance).await? {
            return Ok(PreparedTarget {
                created: true,
                absent: true,
                has_tables: false,
            });
        }
        postgres::create_database(&maintenance, &params.database).await?;
        tracing::info!(database = %params.database, "target database created");
        created = true;
        if options.mark_created {
            abandoned::mark_in_use(&maintenance, &params.database).await;
        }
    }
    let client = postgres::connect(params).await?;
    let tables = postgres::user_tables(&client, &params.database).await?;
    if !tables.is_empty() && !options.force {
        return Err(Error::TargetNotEmpty {
            database: params.database.clone(),
            count: tables.len(),
            sample: tables
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(PreparedTarget {
        created,
        absent: false,
        has_tables: !tables.is_empty(),
    })
}

/// Newer versions under the pinned key are never restored, but they are worth knowing about.
/// An archived pinned version that is not readable is refused here, before the target is
/// touched. A listing names the storage class even once a copy was restored from the archive,
/// so a GET decides (it opens the body and drops it unread).
async fn version_warnings<S: ObjectStore>(
    store: &S,
    key: &str,
    pinned: Option<&str>,
) -> Result<Vec<String>> {
    let versions = KeyVersions::of(store, key).await?;
    if versions.find(pinned).is_some_and(|v| v.archived()) {
        store.get(key, pinned).await?;
    }
    let others = KeyVersions::from_listing(
        key,
        versions
            .all
            .iter()
            .filter(|v| v.delete_marker || v.version_id.as_deref() != pinned),
    );
    let mut warnings = Vec::new();
    if versions.hidden() {
        warnings.push(format!(
            "{key} is hidden by a delete marker; the pinned version was read by its id. Find \
             out who deleted it"
        ));
    }
    if others.data().next().is_some() {
        warnings.push(format!(
            "{key} also has versions the manifest does not pin ({}); they were not restored. \
             The agent writes each dump once (a race between two backups leaves a second \
             version): find out who wrote them",
            others.describe()
        ));
    }
    Ok(warnings)
}

/// The PostgreSQL section and how the restore connects to `options`' target: local checks
/// only (engine configured, passwords readable), so a bad config fails before any request.
pub fn preflight<'c>(
    config: &'c Config,
    options: &RestoreOptions,
) -> Result<(&'c crate::config::PostgresConfig, ConnParams)> {
    let pg = config.postgresql()?;
    let database = options.database.as_deref().unwrap_or(&pg.database);
    if database.is_empty() || database.len() > 63 {
        return Err(Error::BadTarget {
            database: database.to_owned(),
        });
    }
    require_signatures(config, options)?;
    Ok((pg, pg.restore_params(&config.restore, database)?))
}

/// Restores `snapshot` (from [`resolve_snapshot`]) into the target database, validates it, and
/// stores the report under `policy`.
pub async fn restore_postgres<S: ObjectStore>(
    config: &Config,
    store: &S,
    policy: &WritePolicy,
    verifier: Option<&ManifestVerifier>,
    snapshot: &SnapshotRef,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    let (_, params) = preflight(config, options)?;
    let database = params.database.clone();
    let started_at = OffsetDateTime::now_utc();
    let started = Instant::now();
    let manifest = catalog::fetch_manifest(store, snapshot, verifier).await?;
    let details = manifest
        .manifest
        .postgresql
        .clone()
        .ok_or_else(|| Error::ManifestMismatch {
            manifest: manifest.key.clone(),
            problem: "it has no postgresql section".into(),
        })?;
    let entry = manifest.object(&snapshot.keys.dump)?.clone();
    let mut warnings =
        version_warnings(store, &snapshot.keys.dump, entry.version_id.as_deref()).await?;
    // An index that does not check out (an earlier agent wrote a multi-line COPY statement's
    // last line into it) costs the parallel load, not the restore: the one-session load checks
    // the whole object against its SHA-256 in the manifest and needs no index.
    let mut index = parallel::index(&manifest, &entry, &details).unwrap_or_else(|e| {
        warnings.push(format!(
            "{e}; the dump was loaded in one session, checked against its SHA-256"
        ));
        None
    });
    stop_point(options, &database)?;
    let target = prepare_target(&params, options, index.is_some()).await?;
    let created = target.created;
    if index.is_some() && target.has_tables {
        warnings.push(format!(
            "--force into {database}, which has tables: the dump was loaded into it in one \
             session, not in parallel through a staging database"
        ));
        index = None;
    }
    if index.is_some()
        && !target.absent
        && !postgres::can_replace_database(&params, &database).await?
    {
        warnings.push(format!(
            "the restore role may not create databases or does not own {database}, so the dump \
             was loaded into it in one session; grant it CREATEDB and ownership of the target \
             for a parallel restore"
        ));
        index = None;
    }
    stop_point(options, &database)?;
    let staging = match index {
        Some(_) => {
            warnings.extend(staging::sweep_abandoned(&params).await);
            match staging::Staging::create(&params, target.absent).await? {
                staging::Created::Ready(staging) => Some(*staging),
                staging::Created::CannotCarry(why) => {
                    warnings.push(format!(
                        "the restore role may not make a copy of {database} with its \
                         tablespace, grants and settings ({why}), so the dump was loaded into \
                         it in one session, which keeps them; run the restore as a role that \
                         may (a superuser) for a parallel restore"
                    ));
                    index = None;
                    None
                }
            }
        }
        None => None,
    };
    let load_params = staging
        .as_ref()
        .map_or_else(|| params.clone(), |s| s.params());
    tracing::info!(snapshot = %snapshot.keys.dump, version_id = ?entry.version_id,
        database = %database, staging = ?staging.as_ref().map(|s| &s.name),
        signature = %manifest.signature, "restore started");
    let mut analyze_seconds = None;
    // The counts and the ANALYZE after a parallel load, which run at the same time.
    let mut checks_seconds = Duration::ZERO;
    let loaded = async {
        let globals = match options.with_globals {
            Some(fidelity) => {
                // A staging database takes over the target's own settings at the swap;
                // the backup's are for a database the restore created.
                let fresh = created;
                globals::apply(store, &manifest, &details, &load_params, fresh, fidelity)
                    .await?
                    .map(Some)
                    .unwrap_or_else(|| {
                        warnings.push(
                            "--with-globals: this backup has no globals object (an older agent \
                             took it); no roles were created"
                                .into(),
                        );
                        None
                    })
            }
            None => None,
        };
        let key = &snapshot.keys.dump;
        let (unpacked, parallel, counted, counting) = match index {
            Some(sections) => {
                // Into the staging database: nothing of it is visible before the swap, so the
                // whole load may be stopped (its psql sessions are killed).
                let load = parallel::load(
                    store,
                    config,
                    &load_params,
                    &manifest,
                    key,
                    sections,
                    &details.tables,
                );
                let (loaded, how, checked) =
                    unless_stopped(options.stop.as_ref(), &database, load).await?;
                // Verify before commit: the staging copy takes the target's place only if it
                // holds every table's rows as the manifest counts them (those counted as they
                // landed are not counted again). The ANALYZE runs at the same time (the load is
                // over, so they share the cores; neither blocks the other), the load's sessions
                // split between them: a count that does not match drops the staging copy,
                // analyzed or not.
                let checking = Instant::now();
                let sessions = config.restore.sessions();
                let (count_sessions, analyze_sessions) = if config.restore.analyze {
                    ((sessions - sessions / 2).max(1), (sessions / 2).max(1))
                } else {
                    (sessions, 0)
                };
                let counts = async {
                    let counts = verified_row_counts(
                        &load_params,
                        &details.tables,
                        &checked.counted,
                        count_sessions,
                        &snapshot.keys.dump,
                        &database,
                    );
                    let counts = unless_stopped(options.stop.as_ref(), &database, counts).await?;
                    Ok((counts, checking.elapsed()))
                };
                let analyzed = async {
                    if !config.restore.analyze {
                        return Ok(None);
                    }
                    let analyzed = analyze_staging(
                        &load_params,
                        &checked.analyzed,
                        analyze_sessions,
                        &database,
                        options,
                    );
                    analyzed.await.map(Some)
                };
                let ((counts, counting), analyzed) =
                    futures::future::try_join(counts, analyzed).await?;
                checks_seconds = checking.elapsed();
                if let Some((seconds, warning)) = analyzed {
                    analyze_seconds = Some(seconds);
                    warnings.extend(warning);
                }
                (loaded, Some(how), counts, counting)
            }
            None => (
                psql_load::load(
                    store,
                    config,
                    &params,
                    &manifest,
                    key,
                    &details.tables,
                    options.stop.as_ref(),
                )
                .await?,
                None,
                // psql committed only after the row-count guard passed; its time is the load's.
                validate::guarded_row_counts(&details.tables),
                Duration::ZERO,
            ),
        };
        Ok::<_, Error>((globals, unpacked, parallel, counted, counting))
    }
    .await;
    let (globals, unpacked, parallel, counted, counting) = match (loaded, staging) {
        (Ok(loaded), Some(staging)) => {
            warnings.extend(staging.replace(&database).await?);
            loaded
        }
        (Ok(loaded), None) => loaded,
        (Err(e), None) => return Err(e),
        (Err(e), Some(staging)) => {
            let name = staging.name.clone();
            let problem = staging.discard().await;
            let dropped = problem.map_or_else(
                || format!(" (its staging database {name} was dropped)"),
                |p| format!(" ({p})"),
            );
            return Err(e.with_staging(dropped));
        }
    };
    let load_seconds = (started.elapsed() - checks_seconds).as_secs_f64();

    let validation_started = Instant::now();
    let mut checks = counted;
    sql_checks(config, &params, &mut checks).await;
    let validation_seconds = (validation_started.elapsed() + counting).as_secs_f64();
    let smoke_seconds = smoke_checks(config, options, &mut checks).await;

    let passed = checks.iter().all(|c| c.passed);
    let mut report = RestoreReport {
        format_version: 1,
        engine: Engine::Postgresql,
        release: snapshot.release.clone(),
        snapshot: snapshot.keys.dump.clone(),
        version_id: entry.version_id.clone(),
        manifest_key: manifest.key.clone(),
        manifest_sha256: manifest.sha256.clone(),
        signature_summary: manifest.signature.to_string(),
        signature: manifest.signature.clone(),
        target_database: database,
        expected_sha256: entry.sha256.clone().unwrap_or_default(),
        actual_sha256: hex::encode(unpacked.sha256),
        size_bytes: unpacked.size,
        uncompressed_size_bytes: unpacked.uncompressed,
        started_at,
        finished_at: OffsetDateTime::now_utc(),
        phases: Phases {
            download_seconds: unpacked.download_seconds,
            load_seconds,
            analyze_seconds,
            validation_seconds,
            row_count_seconds: parallel.is_some().then_some(counting.as_secs_f64()),
            smoke_seconds,
            total_seconds: started.elapsed().as_secs_f64(),
        },
        checks,
        warnings,
        globals,
        parallel,
        passed,
        report_key: None,
        report_error: None,
    };
    store_report(store, policy, config, snapshot, options, &mut report).await;
    Ok(report)
}

/// The row counts of the restored copy in `staging`, all as the manifest counts them, or the
/// error that keeps it from being committed. The tables (by index) in `counted` were counted
/// as they landed.
async fn verified_row_counts(
    staging: &ConnParams,
    tables: &[postgres::TableRows],
    counted: &HashSet<usize>,
    sessions: usize,
    snapshot: &str,
    database: &str,
) -> Result<Vec<CheckResult>> {
    let checks = validate::row_counts(staging, tables, counted, sessions)
        .await
        .map_err(|source| Error::CountFailed {
            database: database.to_owned(),
            source: Box::new(source),
            staging: String::new(),
        })?;
    if checks.iter().all(|c| c.passed) {
        return Ok(checks);
    }
    Err(Error::RowCountsDiffer {
        snapshot: snapshot.to_owned(),
        database: database.to_owned(),
        differences: validate::differences(&checks, validate::DIFFERENCES_NAMED),
        staging: String::new(),
    })
}

/// `ANALYZE`s the staging copy but the tables (by oid) `analyzed` as they landed, over
/// `sessions` (stoppable, as the load); returns how long it took and, if it failed, the
/// warning that says so (statistics are not worth failing a verified restore for).
async fn analyze_staging(
    staging: &ConnParams,
    analyzed: &HashSet<u32>,
    sessions: usize,
    database: &str,
    options: &RestoreOptions,
) -> Result<(f64, Option<String>)> {
    let started = Instant::now();
    let analyzed = per_table::analyze(staging, analyzed, sessions);
    let analyzed = unless_stopped(options.stop.as_ref(), database, async {
        Ok(analyzed.await)
    })
    .await?;
    let warning = match analyzed {
        Ok(relations) => {
            tracing::info!(relations, "restored copy analyzed");
            None
        }
        Err(e) => Some(format!(
            "ANALYZE of the restored copy failed ({e}); the planner has no statistics for some \
             tables until autovacuum analyzes them: run ANALYZE in {database}"
        )),
    };
    Ok((started.elapsed().as_secs_f64(), warning))
}

/// Adds the configured SQL checks to `checks`. The dump is committed by now, so a database
/// that cannot be queried is a failed check in the report, not an error that would lose it.
async fn sql_checks(config: &Config, params: &ConnParams, checks: &mut Vec<CheckResult>) {
    let sql = &config.restore.validation.sql;
    if sql.is_empty() {
        return;
    }
    match postgres::connect(params).await {
        Ok(client) => checks.extend(validate::sql_checks(&client, sql).await),
        Err(e) => checks.push(CheckResult {
            kind: validate::CheckKind::Sql,
            name: format!("SQL checks on {}", params.database),
            expected: format!("{} checks run", sql.len()),
            actual: format!("failed: {e}"),
            passed: false,
        }),
    }
}

/// Local checks for a restore of `engine` (its config section, passwords, options), so a bad
/// config fails before any request.
pub fn preflight_engine(config: &Config, engine: Engine, options: &RestoreOptions) -> Result<()> {
    match engine {
        Engine::Postgresql => preflight(config, options).map(drop),
        Engine::Clickhouse => clickhouse::preflight(config, options).map(drop),
    }
}

/// Refuses bytes read from `key` (at the manifest's pinned version) whose SHA-256 or size is
/// not the manifest's, naming both.
pub(crate) fn check_pinned<S: ObjectStore>(
    store: &S,
    key: &str,
    entry: &crate::manifest::ManifestObject,
    actual_sha256: &[u8],
    actual_size: u64,
) -> Result<()> {
    let actual = hex::encode(actual_sha256);
    let expected = entry.sha256.clone().unwrap_or_default();
    if actual == expected && actual_size == entry.size_bytes {
        return Ok(());
    }
    Err(Error::HashMismatch {
        key: store.target(key),
        version: entry.version_id.as_deref().unwrap_or("(none)").to_owned(),
        expected,
        actual,
        expected_size: entry.size_bytes,
        actual_size,
    })
}

/// Refuses to restore unsigned backups unless allowed: without a public key, nothing tells a
/// backup the agent wrote from one planted by whoever holds the writer role.
pub fn require_signatures(config: &Config, options: &RestoreOptions) -> Result<()> {
    if config.signing.public_key_file.is_none()
        && !options.allow_unsigned
        && !config.restore.allow_unsigned
    {
        return Err(Error::UnsignedRefused);
    }
    Ok(())
}

/// Fails as stopped if `options.stop` was cancelled: checked before the steps that change
/// the server (the target created, the staging database created), which the signal then spares.
fn stop_point(options: &RestoreOptions, database: &str) -> Result<()> {
    match &options.stop {
        Some(stop) if stop.is_cancelled() => Err(stopped(database)),
        _ => Ok(()),
    }
}

/// [`Error::RestoreStopped`] for `database`, before any staging database was made.
fn stopped(database: &str) -> Error {
    Error::RestoreStopped {
        database: database.to_owned(),
        staging: String::new(),
    }
}

/// `work`, unless `stop` is cancelled first: then `work` is dropped (its psql processes are
/// killed, its sessions closed) and the restore fails as stopped. For work that commits
/// nothing visible.
pub(crate) async fn unless_stopped<T>(
    stop: Option<&CancellationToken>,
    database: &str,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let Some(stop) = stop else {
        return work.await;
    };
    tokio::select! {
        biased;
        done = work => done,
        () = stop.cancelled() => Err(stopped(database)),
    }
}

/// Restores `snapshot` with its engine's procedure, validates it and stores the report.
pub async fn restore_snapshot<S: ObjectStore>(
    config: &Config,
    store: &S,
    policy: &WritePolicy,
    verifier: Option<&ManifestVerifier>,
    snapshot: &SnapshotRef,
    options: &RestoreOptions,
) -> Result<RestoreReport> {
    match snapshot.engine {
        Engine::Postgresql => {
            restore_postgres(config, store, policy, verifier, snapshot, options).await
        }
        Engine::Clickhouse => {
            clickhouse::restore_clickhouse(config, store, policy, verifier, snapshot, options).await
        }
    }
}

/// Runs the application's HTTP smoke checks (or the options' own) into `checks`; returns how
/// long they took.
async fn smoke_checks(
    config: &Config,
    options: &RestoreOptions,
    checks: &mut Vec<CheckResult>,
) -> f64 {
    let started = Instant::now();
    let v = &config.restore.validation;
    checks.extend(
        validate::http::http_checks(
            options.smoke.as_deref().unwrap_or(&v.http),
            Duration::from_secs(v.http_timeout_seconds),
            Duration::from_secs(v.http_interval_seconds),
        )
        .await,
    );
    started.elapsed().as_secs_f64()
}

/// Stores the report, locked, under `<prefix>/reports/<engine>/<release>/`, and records in it
/// where, or why not: a restore that committed is not undone by a report that could not be
/// stored, and the report is still printed.
async fn store_report<S: ObjectStore>(
    store: &S,
    policy: &WritePolicy,
    config: &Config,
    snapshot: &SnapshotRef,
    options: &RestoreOptions,
    report: &mut RestoreReport,
) {
    if options.no_report {
        return;
    }
    match put_report(store, policy, config, snapshot, report).await {
        Ok(key) => report.report_key = Some(key),
        Err(e) => {
            tracing::error!(error = %e, "the restore report could not be stored");
            report.report_error = Some(e.to_string());
        }
    }
}

async fn put_report<S: ObjectStore>(
    store: &S,
    policy: &WritePolicy,
    config: &Config,
    snapshot: &SnapshotRef,
    report: &RestoreReport,
) -> Result<String> {
    let now = OffsetDateTime::now_utc();
    // A random suffix: two restores of one snapshot in the same second (into two targets)
    // each keep their own report.
    let key = format!(
        "{}/reports/{}/{}/{}-restore-of-{}-{}.json",
        config.s3.prefix,
        snapshot.engine,
        snapshot.release,
        Timestamp::new(now),
        snapshot.timestamp,
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut stored = report.clone();
    stored.report_key = Some(key.clone());
    let mut bytes = serde_json::to_vec_pretty(&stored).expect("serialisable");
    bytes.push(b'\n');
    policy
        .put(store, &key, bytes, policy.retention_from(now).as_ref())
        .await?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{Integrity, PartChecksum, StoreError};

    #[tokio::test]
    async fn an_archived_dump_is_refused_until_restored_from_the_archive() {
        let store = MemoryStore::default();
        let key = "b/postgresql/r/20261123T020000Z.sql.gz";
        let body = Bytes::from_static(b"dump");
        let sum = PartChecksum::compute(Integrity::Md5, &body);
        let put = store.put_object(key, body, sum, None).await.unwrap();
        let pinned = put.version_id.as_deref();
        assert!(
            version_warnings(&store, key, pinned)
                .await
                .unwrap()
                .is_empty()
        );
        store.archive(key, "GLACIER");
        let e = version_warnings(&store, key, pinned).await.unwrap_err();
        assert!(
            matches!(e, Error::Store(StoreError::Archived { .. })),
            "{e}"
        );
        // Listings still say GLACIER; the restored copy is readable, so the restore goes on.
        store.restore_from_archive(key);
        assert!(
            version_warnings(&store, key, pinned)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
