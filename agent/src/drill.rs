//! `strongroom drill`: the runbook's restore drill, measured. The incident starts (t0) when the
//! drill starts; the latest backup (or a chosen one) is restored, verified before commit and
//! validated like any restore, and the drill ends when the smoke checks answer healthy:
//! RTO = healthy - t0, RPO = t0 - the backup's snapshot time.
//!
//! - **scratch** restores into a new database (`<db>_drill_<ts>`; ClickHouse: each database
//!   renamed with `_drill_<ts>` through RESTORE's `AS`), creating the roles the backup names
//!   that the server lacks, runs `drill.smoke.http` with the scratch name, and drops the
//!   scratch target unless `--keep` (which comments it as kept). The source is never
//!   touched. A PostgreSQL scratch drill first drops the scratch databases killed drills left
//!   (still commented as in use, and held by no running drill: [`restore::abandoned`]).
//! - **replace** (PostgreSQL, `drill.allow_replace` only) renames the live database aside,
//!   restores under its name and polls the application's `restore.validation.http` until
//!   healthy; on any failure the restored copy is dropped and the original renamed back.
//!
//! The report ([`report`]) is printed, stored locked under
//! `<prefix>/drills/<engine>/<release>/<t0>.json`, and appended to the audit chain;
//! [`history`] lists the stored reports.

pub mod history;
pub mod report;

use time::OffsetDateTime;

use crate::audit::{self, Action, EventDraft, Outcome};
use crate::config::{Config, HttpCheck};
use crate::engine::clickhouse::{ClickHouse, Scope};
use crate::engine::postgres::globals::Fidelity;
use crate::engine::postgres::{self, ConnParams, derived_name, name_suffix as suffix};
use crate::error::{Error, Result};
use crate::layout::{Engine, Timestamp};
use crate::locked_write::WritePolicy;
use crate::restore::{self, RestoreOptions, SnapshotChoice, abandoned};
use crate::signing::ManifestVerifier;
use crate::store::ObjectStore;
use report::Phase;
pub use report::{DrillReport, DrillSummary, Mode, Verdict};

/// What `strongroom drill` was asked.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub engine: Engine,
    pub choice: SnapshotChoice,
    pub mode: Mode,
    /// Keep the scratch target (to look at it); the report says where it is.
    pub keep: bool,
    /// Project the RTO to a production backup of this size (GiB as stored).
    pub production_size_gib: Option<f64>,
    pub allow_unsigned: bool,
}

/// The restore options of this drill into `target`.
fn restore_options(config: &Config, options: &DrillOptions, target: &Target) -> RestoreOptions {
    let smoke = |database: &str| -> Vec<HttpCheck> {
        let fill = |s: &str| s.replace("{database}", database);
        config
            .drill
            .smoke
            .http
            .iter()
            .map(|c| HttpCheck {
                url: fill(&c.url),
                body: c.body.as_deref().map(fill),
                ..c.clone()
            })
            .collect()
    };
    let base = RestoreOptions {
        allow_unsigned: allow_unsigned(config, options),
        no_report: true,
        ..RestoreOptions::default()
    };
    match target {
        Target::Postgres { database, aside } => RestoreOptions {
            database: Some(database.clone()),
            // Replace mode creates the database itself, shaped like the original.
            create: aside.is_none(),
            mark_created: aside.is_none(),
            with_globals: Some(Fidelity::Owner),
            smoke: aside.is_none().then(|| smoke(database)),
            ..base
        },
        Target::Clickhouse { suffix, databases } => RestoreOptions {
            rename_suffix: Some(suffix.clone()),
            smoke: Some(smoke(&databases.first().cloned().unwrap_or_default())),
            ..base
        },
    }
}

/// Where the drill restores.
#[derive(Debug, Clone)]
enum Target {
    /// A PostgreSQL database (the scratch one, or the live one in replace mode), and where the
    /// live one was renamed to in replace mode.
    Postgres {
        database: String,
        aside: Option<String>,
    },
    /// ClickHouse databases renamed with `suffix`: exactly these (from the manifest's scope).
    Clickhouse {
        suffix: String,
        databases: Vec<String>,
    },
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Postgres { database, .. } => database.clone(),
            Target::Clickhouse { databases, .. } => databases.join(", "),
        }
    }
}

/// Local checks: the engine and its restore login are configured, replace is allowed and has
/// the application's checks to wait for, a ClickHouse backup can be renamed.
pub fn preflight(config: &Config, options: &DrillOptions) -> Result<()> {
    let refuse = |problem: &str| {
        Err(Error::DrillRefused {
            problem: problem.to_owned(),
        })
    };
    if options.mode == Mode::Replace {
        if options.engine == Engine::Clickhouse {
            return refuse(
                "replace drills are for PostgreSQL; drill ClickHouse with --mode scratch (it \
                 restores into renamed databases)",
            );
        }
        if !config.drill.allow_replace {
            return refuse(
                "--mode replace renames the live database aside; set drill.allow_replace: \
                 true in this (staging) config to allow it",
            );
        }
        if config.restore.validation.http.is_empty() {
            return refuse(
                "a replace drill measures the RTO to API healthy: configure the application's \
                 /health and /map checks in restore.validation.http",
            );
        }
    }
    if options.engine == Engine::Clickhouse
        && let Some(ch) = &config.clickhouse
        && ch.databases.is_empty()
        && ch.tables.is_empty()
    {
        return refuse(
            "this agent backs up ALL ClickHouse databases, which RESTORE cannot rename: set \
             clickhouse.databases (or clickhouse.tables) to drill",
        );
    }
    if options
        .production_size_gib
        .is_some_and(|g| !(g > 0.0 && g < 1e6))
    {
        return Err(Error::BadArguments {
            problem: "--production-size-gib must be a size in GiB above 0".into(),
        });
    }
    let probe = RestoreOptions {
        allow_unsigned: allow_unsigned(config, options),
        ..RestoreOptions::default()
    };
    restore::preflight_engine(config, options.engine, &probe)
}

/// A signing key of either half checks signatures ([`verifier`]); without one, only
/// `--allow-unsigned` or `restore.allow_unsigned` lets a drill restore.
fn allow_unsigned(config: &Config, options: &DrillOptions) -> bool {
    options.allow_unsigned || config.signing.private_key_file.is_some()
}

/// The drill's signature check: `signing.public_key_file`, or else the public half of
/// `signing.private_key_file` (the sidecar that signs its backups drills them).
pub fn verifier(config: &Config) -> Result<Option<ManifestVerifier>> {
    let s = &config.signing;
    Ok(match (&s.public_key_file, &s.private_key_file) {
        (Some(public), _) => Some(ManifestVerifier::load(public)?),
        (None, Some(private)) => Some(crate::signing::ManifestSigner::load(private)?.verifier()),
        (None, None) => None,
    })
}

fn maintenance(config: &Config) -> Result<ConnParams> {
    let pg = config.postgresql()?;
    Ok(pg.restore_params(&config.restore, "postgres")?)
}

/// Runs one drill (after [`preflight`]), prints nothing, stores its report and audit event,
/// and returns the report: its verdict says PASS or FAIL.
pub async fn run<S: ObjectStore>(
    config: &Config,
    store: &S,
    policy: &WritePolicy,
    verifier: Option<&ManifestVerifier>,
    options: &DrillOptions,
) -> Result<DrillReport> {
    let t0 = OffsetDateTime::now_utc();
    let engine = options.engine;
    let mut report = DrillReport {
        format_version: 1,
        engine,
        release: config.release.clone(),
        mode: options.mode,
        target: String::new(),
        snapshot: None,
        snapshot_time: None,
        incident_start: t0,
        healthy_at: None,
        phases: Vec::new(),
        rto_seconds: None,
        rpo_seconds: None,
        rto_goal_seconds: config.drill.rto_goal_seconds(engine),
        verdict: Verdict::Fail,
        failures: Vec::new(),
        size_bytes: None,
        uncompressed_size_bytes: None,
        throughput_mb_per_second: None,
        projection: None,
        cleanup: Vec::new(),
        restore: None,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        report_key: None,
        report_error: None,
        report_sha256: None,
    };
    tracing::info!(%engine, mode = options.mode.as_str(), "drill started: incident at t0");
    if let Err(e) = drill(config, store, policy, verifier, options, &mut report).await {
        report.failures.push(e.to_string());
    }
    report.conclude(options.production_size_gib);
    store_report(store, policy, config, &mut report).await;
    record(store, policy, config, &report).await;
    tracing::info!(%engine, verdict = %report.verdict, rto = ?report.rto_seconds,
        report = ?report.report_key, "drill finished");
    Ok(report)
}

/// Where this drill restores `manifest`'s backup.
fn target_of(
    config: &Config,
    options: &DrillOptions,
    manifest: &crate::catalog::FetchedManifest,
) -> Result<Target> {
    let t0 = OffsetDateTime::now_utc();
    Ok(match options.engine {
        Engine::Postgresql => {
            let live = config.postgresql()?.database.clone();
            match options.mode {
                Mode::Scratch => Target::Postgres {
                    database: derived_name(&live, &suffix(t0, "drill")),
                    aside: None,
                },
                Mode::Replace => Target::Postgres {
                    aside: Some(derived_name(&live, &suffix(t0, "predrill"))),
                    database: live,
                },
            }
        }
        Engine::Clickhouse => {
            let details =
                manifest
                    .manifest
                    .clickhouse
                    .as_ref()
                    .ok_or_else(|| Error::ManifestMismatch {
                        manifest: manifest.key.clone(),
                        problem: "it has no clickhouse section".into(),
                    })?;
            let suffix = suffix(t0, "drill");
            let databases = clickhouse_databases(&restore::clickhouse::recorded_scope(details))
                .map_err(|problem| Error::RestoreRefused {
                    snapshot: manifest.key.clone(),
                    problems: problem,
                })?
                .iter()
                .map(|d| format!("{d}{suffix}"))
                .collect();
            Target::Clickhouse { suffix, databases }
        }
    })
}

/// The databases a ClickHouse scope restores into, every name a plain identifier (they come
/// from the manifest, and go into SQL).
fn clickhouse_databases(scope: &Scope) -> std::result::Result<Vec<String>, String> {
    let names: Vec<&str> = match scope {
        Scope::All => {
            return Err("a backup of ALL databases cannot be restored under other names".into());
        }
        Scope::Databases(d) => d.iter().map(String::as_str).collect(),
        Scope::Tables(t) => t
            .iter()
            .map(|t| t.split_once('.').map(|(d, _)| d).ok_or(t.as_str()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|t| format!("table {t:?} names no database, so it cannot be renamed"))?,
    };
    let mut out: Vec<String> = Vec::new();
    for name in names {
        if !crate::config::clickhouse::is_identifier(name) {
            return Err(format!("{name:?} is not a plain database name"));
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

/// The drill's steps into `report`; an error is a failure of the drill (cleanup has run).
async fn drill<S: ObjectStore>(
    config: &Config,
    store: &S,
    policy: &WritePolicy,
    verifier: Option<&ManifestVerifier>,
    options: &DrillOptions,
    report: &mut DrillReport,
) -> Result<()> {
    let t0 = report.incident_start;
    // The backup is chosen and its manifest authenticated before anything is touched: a
    // replace drill never renames the live database for a backup that cannot restore.
    let chosen = async {
        let snapshot =
            restore::resolve_snapshot(store, config, options.engine, &options.choice).await?;
        let manifest = crate::catalog::fetch_manifest(store, &snapshot, verifier).await?;
        manifest.object(&snapshot.keys.checksum)?;
        Ok::<_, Error>((snapshot, manifest))
    }
    .await;
    report
        .phases
        .push(Phase::new("choose snapshot", t0, OffsetDateTime::now_utc()));
    let (snapshot, manifest) = chosen?;
    report.snapshot = Some(snapshot.keys.dump.clone());
    report.snapshot_time = Some(snapshot.timestamp.datetime());
    let target = target_of(config, options, &manifest)?;
    report.target = target.describe();
    // A scratch drill drops what killed drills left, then holds its own database's name until
    // it is done (see restore::abandoned).
    let held = match &target {
        Target::Postgres {
            database,
            aside: None,
        } => {
            let maintenance = maintenance(config)?;
            sweep_scratch(config, &maintenance, report).await?;
            Some(abandoned::hold(&maintenance, database).await?)
        }
        _ => None,
    };
    match &target {
        Target::Postgres {
            database,
            aside: None,
        } if postgres::database_exists(&maintenance(config)?, database).await? => {
            return Err(Error::DrillRefused {
                problem: format!("the scratch database {database} exists already"),
            });
        }
        Target::Postgres {
            database,
            aside: Some(aside),
        } => {
            let started = OffsetDateTime::now_utc();
            let maintenance = maintenance(config)?;
            tracing::warn!(database = %database, aside = %aside,
                "replace drill: the live database is renamed aside; should this agent die, \
                 rename it back with ALTER DATABASE");
            postgres::rename_database(&maintenance, database, aside).await?;
            report.cleanup.push(format!(
                "the live database {database} was renamed to {aside}"
            ));
            // The restored copy becomes the live database: like the original, with its
            // grants and settings, so the application connects as before.
            let created = async {
                postgres::create_database_like(
                    &maintenance,
                    database,
                    postgres::Like::Database(aside),
                )
                .await?;
                postgres::carry_over(&maintenance, aside, database).await
            };
            if let Err(e) = created.await {
                report.failures.push(format!(
                    "creating {database} like {aside}, with its grants and settings, failed: {e}"
                ));
                put_back(config, database, aside, report).await;
                return Ok(());
            }
            report.phases.push(Phase::new(
                "incident: live database renamed aside",
                started,
                OffsetDateTime::now_utc(),
            ));
        }
        Target::Clickhouse { databases, .. } => {
            let existing = clickhouse_existing(config, databases).await?;
            if !existing.is_empty() {
                return Err(Error::DrillRefused {
                    problem: format!(
                        "the scratch databases exist already: {}",
                        existing.join(", ")
                    ),
                });
            }
        }
        Target::Postgres { .. } => {}
    }
    let restore_options = restore_options(config, options, &target);
    // SIGTERM or SIGINT (a Job's deadline, a pod deleted, Ctrl-C) stops the restore (psql is
    // killed: nothing commits) and the drill cleans up: a replace drill puts the original back.
    let restored = tokio::select! {
        r = restore::restore_snapshot(config, store, policy, verifier, &snapshot, &restore_options) => Some(r),
        signal = interrupted() => {
            report.failures.push(format!(
                "interrupted by {signal} during the restore: it was stopped, nothing committed"
            ));
            None
        }
    };
    let passed = match &restored {
        Some(Ok(r)) => {
            report.record_restore(r);
            r.passed
        }
        Some(Err(e)) => {
            report.failures.push(format!("the restore failed: {e}"));
            false
        }
        None => false,
    };
    report.restore = restored.and_then(|r| r.ok());
    // A stopped parallel restore's staging database is being dropped: done before the target.
    report
        .cleanup
        .extend(restore::staging::drop_stopped().await);
    // Lost, another drill may have dropped the scratch database while this one used it.
    if let Some(held) = &held
        && let Err(e) = held.check().await
    {
        report.failures.push(e.to_string());
    }
    clean_up(config, options, &target, passed, report).await;
    drop(held);
    Ok(())
}

/// Resolves on SIGTERM or SIGINT with the signal's name; never, if they cannot be watched.
async fn interrupted() -> &'static str {
    match crate::signals::Stops::watch() {
        Some(mut signals) => signals.next().await,
        None => std::future::pending().await,
    }
}

/// After a failed replace drill: the restored copy is renamed aside (nothing is dropped: it
/// may hold what the application wrote meanwhile), the original renamed back. Says what
/// exists where if that fails.
async fn put_back(config: &Config, database: &str, aside: &str, report: &mut DrillReport) {
    let failed = derived_name(database, &suffix(OffsetDateTime::now_utc(), "drillfailed"));
    let result = async {
        let maintenance = maintenance(config)?;
        if postgres::database_exists(&maintenance, database).await? {
            postgres::rename_database(&maintenance, database, &failed).await?;
        }
        postgres::rename_database(&maintenance, aside, database).await?;
        Ok::<_, Error>(())
    }
    .await;
    match result {
        Ok(()) => report.cleanup.push(format!(
            "the drill failed: the original {aside} was renamed back to {database}; the \
             restored copy is kept as {failed} (drop it when done)"
        )),
        Err(e) => {
            let what = format!(
                "PUTTING THE ORIGINAL BACK FAILED ({e}): the original is {aside}, unless \
                 already renamed back to {database}; a restored copy may be {database} or \
                 {failed}. Check pg_database and rename the original back by hand"
            );
            tracing::error!(problem = %what, "drill cleanup");
            report.failures.push(what);
        }
    }
}

/// Comments `database` (a scratch database kept with `--keep`) as kept, in place of the
/// comment that marks it in use: later drills, which drop the scratch databases killed drills
/// left ([`sweep_scratch`]), leave it.
async fn mark_kept(config: &Config, database: &str) -> Result<()> {
    let maintenance = maintenance(config)?;
    postgres::comment_database(&maintenance, database, "kept by strongroom drill --keep").await?;
    Ok(())
}

/// Drops the scratch databases of this database's drills that killed drills left (and their
/// staging databases), saying so in the report ([`abandoned::sweep`]: a drill still running
/// holds its scratch database, and one kept with `--keep` is no longer commented as in use).
async fn sweep_scratch(
    config: &Config,
    maintenance: &ConnParams,
    report: &mut DrillReport,
) -> Result<()> {
    let live = &config.postgresql()?.database;
    let scratch = abandoned::sweep(
        maintenance,
        &postgres::derived_prefix(live, "drill"),
        "the scratch database of an earlier drill",
    )
    .await;
    report.cleanup.extend(scratch.said);
    for database in &scratch.abandoned {
        let staging = abandoned::sweep(
            maintenance,
            &postgres::staging_prefix(database),
            "the staging database of an earlier drill's restore",
        )
        .await;
        report.cleanup.extend(staging.said);
    }
    Ok(())
}

/// Drops the scratch target and the roles the drill created (unless kept), or, after a failed
/// replace drill, puts the original back. What was done goes into the report.
async fn clean_up(
    config: &Config,
    options: &DrillOptions,
    target: &Target,
    passed: bool,
    report: &mut DrillReport,
) {
    let created_roles: Vec<String> = report
        .restore
        .as_ref()
        .and_then(|r| r.globals.as_ref())
        .map(|g| g.created_roles.clone())
        .unwrap_or_default();
    let result: Result<String> = async {
        match target {
            Target::Postgres {
                database,
                aside: None,
            } if options.keep => Ok(format!(
                "the scratch database {database} was kept (--keep){}{}",
                if created_roles.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", with the roles created for it: {}",
                        created_roles.join(", ")
                    )
                },
                match mark_kept(config, database).await {
                    Ok(()) => String::new(),
                    Err(e) => format!(
                        "; it could not be marked as kept ({e}), so a later drill may drop it"
                    ),
                }
            )),
            Target::Postgres {
                database,
                aside: None,
            } => {
                let maintenance = maintenance(config)?;
                postgres::drop_database(&maintenance, database).await?;
                postgres::drop_roles(&maintenance, &created_roles).await?;
                Ok(format!(
                    "the scratch database {database} was dropped{}",
                    if created_roles.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", and the roles created for it: {}",
                            created_roles.join(", ")
                        )
                    }
                ))
            }
            Target::Postgres {
                database,
                aside: Some(aside),
            } if passed => Ok(format!(
                "every check passed: {database} is the restored backup; the original is kept \
                 as {aside} (drop it when it is no longer needed)"
            )),
            Target::Postgres {
                database,
                aside: Some(aside),
            } => {
                put_back(config, database, aside, report).await;
                Ok(String::new())
            }
            Target::Clickhouse { suffix, .. } if options.keep => Ok(format!(
                "the scratch databases *{suffix} were kept (--keep)"
            )),
            Target::Clickhouse { databases, .. } => drop_clickhouse(config, databases).await,
        }
    }
    .await;
    match result {
        Ok(done) if done.is_empty() => {}
        Ok(done) => report.cleanup.push(done),
        Err(e) => {
            let what = format!("cleaning up {} failed: {e}", target.describe());
            tracing::error!(problem = %what, "drill cleanup");
            report.failures.push(what);
        }
    }
}

async fn clickhouse_server(config: &Config) -> Result<ClickHouse> {
    let login = config
        .clickhouse()?
        .restore_login(&config.restore.clickhouse)?;
    Ok(ClickHouse::new(&login))
}

/// Which of `databases` exist on the server.
async fn clickhouse_existing(config: &Config, databases: &[String]) -> Result<Vec<String>> {
    let server = clickhouse_server(config).await?;
    let mut existing = Vec::new();
    for name in databases {
        // Plain identifiers only (checked in `clickhouse_databases`).
        let found = server
            .scalar(&format!(
                "SELECT count() FROM system.databases WHERE name = '{name}'"
            ))
            .await?;
        if found.as_deref() != Some("0") {
            existing.push(name.clone());
        }
    }
    Ok(existing)
}

/// Drops exactly the databases this drill restored into.
async fn drop_clickhouse(config: &Config, databases: &[String]) -> Result<String> {
    let server = clickhouse_server(config).await?;
    for name in databases {
        server
            .execute(
                "DROP DATABASE",
                &format!("DROP DATABASE IF EXISTS `{name}` SYNC"),
            )
            .await?;
    }
    Ok(format!(
        "the scratch databases were dropped: {}",
        databases.join(", ")
    ))
}

/// Stores the report create-only and locked under `<prefix>/drills/<engine>/<release>/`.
async fn store_report<S: ObjectStore>(
    store: &S,
    policy: &WritePolicy,
    config: &Config,
    report: &mut DrillReport,
) {
    let t0 = Timestamp::new(report.incident_start);
    let key = history::report_key(&config.s3.prefix, report.engine, &report.release, t0);
    let retention = policy.retention_from(OffsetDateTime::now_utc());
    let put = |key: String| {
        let mut stored = report.clone();
        stored.report_key = Some(key.clone());
        let mut bytes = serde_json::to_vec_pretty(&stored).expect("serialisable");
        bytes.push(b'\n');
        let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        async move {
            policy
                .put(store, &key, bytes, retention.as_ref())
                .await
                .map(|_| (key, sha256))
        }
    };
    // Two drills started in the same second: the second keeps its report beside the first.
    let stored = match put(key.clone()).await {
        Err(Error::KeyTaken { .. }) => {
            let nonce = &uuid::Uuid::new_v4().simple().to_string()[..8];
            put(key.replace(".json", &format!("-{nonce}.json"))).await
        }
        other => other,
    };
    match stored {
        Ok((key, sha256)) => {
            report.report_key = Some(key);
            report.report_sha256 = Some(sha256);
        }
        Err(e) => {
            tracing::error!(error = %e, "the drill report could not be stored");
            report.report_error = Some(e.to_string());
        }
    }
}

/// The drill's audit event.
async fn record<S: ObjectStore>(
    store: &S,
    policy: &WritePolicy,
    config: &Config,
    report: &DrillReport,
) {
    let detail = format!(
        "{} drill into {}: {}, RTO {} (goal {}), RPO {}{}; report {} (sha256 {})",
        report.mode.as_str(),
        report.target,
        report.verdict,
        report.rto_seconds.map_or("-".into(), report::seconds),
        report::seconds(report.rto_goal_seconds),
        report.rpo_seconds.map_or("-".into(), report::seconds),
        if report.failures.is_empty() {
            String::new()
        } else {
            format!("; {}", report.failures.join("; "))
        },
        report.report_key.as_deref().unwrap_or("not stored"),
        report.report_sha256.as_deref().unwrap_or("-")
    );
    let draft = EventDraft {
        action: Action::Drill,
        engine: report.engine,
        release: report.release.clone(),
        snapshot: report.snapshot.clone(),
        result: match report.verdict {
            Verdict::Pass => Outcome::Success,
            Verdict::Fail => Outcome::Failure,
        },
        detail,
        manifest_sha256: report.restore.as_ref().map(|r| r.manifest_sha256.clone()),
    };
    audit::record(store, Some(policy), &config.s3.prefix, draft).await;
}

/// The error `strongroom drill` exits with when the drill failed.
pub fn failed(report: &DrillReport) -> Option<Error> {
    (report.verdict == Verdict::Fail).then(|| Error::DrillFailed {
        engine: report.engine,
        failures: report.failures.join("; "),
        report: report
            .report_key
            .clone()
            .unwrap_or_else(|| "no stored report (see report_error)".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn scratch_names_fit_postgres_and_never_split_a_character() {
        let t0 = datetime!(2026-12-01 04:00:00 UTC);
        let s = suffix(t0, "drill");
        assert!(s.starts_with("_drill_20261201t040000z_"), "{s}");
        assert_eq!(s.len(), "_drill_20261201t040000z_1a2b".len());
        assert_ne!(
            s,
            suffix(t0, "drill"),
            "two drills in one second share no name"
        );
        assert_eq!(derived_name("app", &s), format!("app{s}"));
        let long = "é".repeat(40);
        let name = derived_name(&long, &s);
        assert!(name.len() <= 63, "{}", name.len());
        assert!(name.ends_with(&s));
        let (a, b) = (format!("{long}_rgw"), format!("{long}_moto"));
        assert_ne!(derived_name(&a, &s), derived_name(&b, &s));
    }
}
