//! `strongroom drill`: the runbook's restore drill, measured. The incident starts (t0) when the
//! drill starts; the latest backup (or a chosen one) is restored, verified before commit and
//! validated like any restore, and the drill ends when the smoke checks answer healthy:
//! RTO = healthy - t0, RPO = t0 - the backup's snapshot time.
//!
//! - **scratch** restores into a new database (`<db>_drill_<ts>`; ClickHouse: each database
//!   renamed with `_drill_<ts>` through RESTORE's `AS`), creating the roles the backup names
//!   that the server lacks, runs `drill.smoke.http` with the scratch name, and drops the
//!   scratch target unless `--keep`. The source is never touched.
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
use crate::engine::clickhouse::ClickHouse;
use crate::engine::postgres::{self, ConnParams};
use crate::error::{Error, Result};
use crate::layout::{Engine, Timestamp};
use crate::locked_write::WritePolicy;
use crate::restore::{self, RestoreOptions, RestoreReport, SnapshotChoice};
use crate::signing::ManifestVerifier;
use crate::store::ObjectStore;
pub use report::{DrillReport, DrillSummary, Mode, Verdict};
use report::{LOAD_PHASE, Phase};

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

/// The restore options of this drill into `target` (the scratch or live database), or, for
/// ClickHouse, with the databases renamed by `suffix`.
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
        Target::Postgres { database, .. } => RestoreOptions {
            database: Some(database.clone()),
            create: true,
            with_globals: true,
            smoke: (options.mode == Mode::Scratch).then(|| smoke(database)),
            ..base
        },
        Target::Clickhouse { suffix, first } => RestoreOptions {
            rename_suffix: Some(suffix.clone()),
            smoke: Some(smoke(&format!("{first}{suffix}"))),
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
    /// ClickHouse databases renamed with `suffix`; `first` is the first configured database
    /// (for `{database}` in smoke checks).
    Clickhouse { suffix: String, first: String },
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Postgres { database, .. } => database.clone(),
            Target::Clickhouse { suffix, .. } => format!("databases *{suffix}"),
        }
    }
}

/// `_drill_20261201t040000z`: lowercase, so psql users need no quotes.
fn suffix(t0: OffsetDateTime, what: &str) -> String {
    format!("_{what}_{}", Timestamp::new(t0)).to_ascii_lowercase()
}

/// `<db><suffix>`; a `db` too long for PostgreSQL's 63 bytes is shortened and keeps a hash of
/// its full name, so two long names that share a beginning stay apart.
fn derived_name(database: &str, suffix: &str) -> String {
    if database.len() + suffix.len() <= 63 {
        return format!("{database}{suffix}");
    }
    use sha2::Digest as _;
    let hash = hex::encode(&sha2::Sha256::digest(database.as_bytes())[..3]);
    let mut keep = 63 - suffix.len() - hash.len() - 1;
    while !database.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}_{hash}{suffix}", &database[..keep])
}

/// Local checks: the engine and its restore login are configured, replace is allowed.
pub fn preflight(config: &Config, options: &DrillOptions) -> Result<()> {
    if options.mode == Mode::Replace {
        if options.engine == Engine::Clickhouse {
            return Err(Error::DrillRefused {
                problem: "replace drills are for PostgreSQL; drill ClickHouse with --mode \
                          scratch (it restores into renamed databases)"
                    .into(),
            });
        }
        if !config.drill.allow_replace {
            return Err(Error::DrillRefused {
                problem: "--mode replace renames the live database aside; set \
                          drill.allow_replace: true in this (staging) config to allow it"
                    .into(),
            });
        }
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

/// Runs one drill, prints nothing, stores its report and audit event, and returns the report
/// (its verdict says PASS or FAIL). Errors only for what stops a drill before it starts.
pub async fn run<S: ObjectStore>(
    config: &Config,
    store: &S,
    policy: &WritePolicy,
    verifier: Option<&ManifestVerifier>,
    options: &DrillOptions,
) -> Result<DrillReport> {
    preflight(config, options)?;
    let t0 = OffsetDateTime::now_utc();
    let engine = options.engine;
    let target = match engine {
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
        Engine::Clickhouse => Target::Clickhouse {
            suffix: suffix(t0, "drill"),
            first: config
                .clickhouse()?
                .databases
                .first()
                .cloned()
                .unwrap_or_default(),
        },
    };
    let mut report = DrillReport {
        format_version: 1,
        engine,
        release: config.release.clone(),
        mode: options.mode,
        target: target.describe(),
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
    };
    tracing::info!(%engine, mode = options.mode.as_str(), target = %report.target,
        "drill started: incident at t0");
    if let Err(e) = drill(
        config,
        store,
        policy,
        verifier,
        options,
        &target,
        &mut report,
    )
    .await
    {
        report.failures.push(e.to_string());
    }
    report.conclude(options.production_size_gib);
    store_report(store, policy, config, &mut report).await;
    record(store, policy, config, &report).await;
    tracing::info!(%engine, verdict = ?report.verdict, rto = ?report.rto_seconds,
        report = ?report.report_key, "drill finished");
    Ok(report)
}

/// The drill's steps into `report`; an error is a failure of the drill (cleanup has run).
async fn drill<S: ObjectStore>(
    config: &Config,
    store: &S,
    policy: &WritePolicy,
    verifier: Option<&ManifestVerifier>,
    options: &DrillOptions,
    target: &Target,
    report: &mut DrillReport,
) -> Result<()> {
    let t0 = report.incident_start;
    let snapshot = restore::resolve_snapshot(store, config, options.engine, &options.choice).await;
    report
        .phases
        .push(Phase::new("choose snapshot", t0, OffsetDateTime::now_utc()));
    let snapshot = snapshot?;
    report.snapshot = Some(snapshot.keys.dump.clone());
    report.snapshot_time = Some(snapshot.timestamp.datetime());
    if let Target::Postgres {
        database,
        aside: None,
    } = target
        && postgres::database_exists(&maintenance(config)?, database).await?
    {
        return Err(Error::DrillRefused {
            problem: format!("the scratch database {database} exists already; drop it first"),
        });
    }
    if let Target::Postgres {
        database,
        aside: Some(aside),
    } = target
    {
        let started = OffsetDateTime::now_utc();
        postgres::rename_database(&maintenance(config)?, database, aside).await?;
        report.phases.push(Phase::new(
            "incident: live database renamed aside",
            started,
            OffsetDateTime::now_utc(),
        ));
        report.cleanup.push(format!(
            "the live database {database} was renamed to {aside}"
        ));
    }
    let restore_options = restore_options(config, options, target);
    let restored =
        restore::restore_snapshot(config, store, policy, verifier, &snapshot, &restore_options)
            .await;
    let passed = match &restored {
        Ok(r) => {
            record_restore(report, r);
            r.passed
        }
        Err(e) => {
            report.failures.push(format!("the restore failed: {e}"));
            false
        }
    };
    report.restore = restored.ok();
    clean_up(config, options, target, passed, report).await;
    Ok(())
}

/// Phases, sizes and health from the restore's own report.
fn record_restore(report: &mut DrillReport, r: &RestoreReport) {
    let at = |s: f64| r.started_at + time::Duration::seconds_f64(s);
    let p = &r.phases;
    let loaded = at(p.load_seconds);
    let validated = loaded + time::Duration::seconds_f64(p.validation_seconds);
    let healthy = validated + time::Duration::seconds_f64(p.smoke_seconds);
    report
        .phases
        .push(Phase::new(LOAD_PHASE, r.started_at, loaded));
    report
        .phases
        .push(Phase::new("validation", loaded, validated));
    report
        .phases
        .push(Phase::new("smoke checks healthy", validated, healthy));
    report.size_bytes = Some(r.size_bytes);
    report.uncompressed_size_bytes = Some(r.uncompressed_size_bytes);
    if r.passed {
        report.healthy_at = Some(healthy);
    } else {
        report
            .failures
            .push(format!("checks failed: {}", r.failed_checks().join(", ")));
    }
}

/// Drops the scratch target (unless kept), or, after a failed replace drill, drops the
/// restored copy and renames the original back. What was done goes into the report.
async fn clean_up(
    config: &Config,
    options: &DrillOptions,
    target: &Target,
    passed: bool,
    report: &mut DrillReport,
) {
    let result: Result<String> = async {
        match target {
            Target::Postgres {
                database,
                aside: None,
            } if options.keep => Ok(format!("the scratch database {database} was kept (--keep)")),
            Target::Postgres {
                database,
                aside: None,
            } => {
                postgres::drop_database(&maintenance(config)?, database).await?;
                Ok(format!("the scratch database {database} was dropped"))
            }
            Target::Postgres {
                database,
                aside: Some(aside),
            } if passed => Ok(format!(
                "the drill passed: {database} is the restored backup; the original is kept as \
                 {aside} (drop it when it is no longer needed)"
            )),
            Target::Postgres {
                database,
                aside: Some(aside),
            } => {
                let maintenance = maintenance(config)?;
                postgres::drop_database(&maintenance, database).await?;
                postgres::rename_database(&maintenance, aside, database).await?;
                Ok(format!(
                    "the drill failed: the restored copy was dropped and the original {aside} \
                     renamed back to {database}"
                ))
            }
            Target::Clickhouse { suffix, .. } if options.keep => Ok(format!(
                "the scratch databases *{suffix} were kept (--keep)"
            )),
            Target::Clickhouse { suffix, .. } => drop_clickhouse(config, suffix).await,
        }
    }
    .await;
    match result {
        Ok(done) => report.cleanup.push(done),
        Err(e) => {
            let what = match target {
                Target::Postgres {
                    database,
                    aside: Some(aside),
                } => format!(
                    "PUTTING THE ORIGINAL BACK FAILED: it is {aside} (or already {database}); \
                     rename it back by hand: {e}"
                ),
                _ => format!("cleaning up {} failed: {e}", target.describe()),
            };
            tracing::error!(problem = %what, "drill cleanup");
            report.failures.push(what);
        }
    }
}

/// Drops every database this drill restored (those ending in its suffix).
async fn drop_clickhouse(config: &Config, suffix: &str) -> Result<String> {
    let login = config
        .clickhouse()?
        .restore_login(&config.restore.clickhouse)?;
    let server = ClickHouse::new(&login);
    // The suffix is `_drill_` and a timestamp: letters, digits and `_` only.
    let names = server
        .scalar(&format!(
            "SELECT arrayStringConcat(groupArray(name), ',') FROM system.databases \
             WHERE endsWith(name, '{suffix}')"
        ))
        .await?
        .unwrap_or_default();
    let names: Vec<&str> = names.split(',').filter(|n| !n.is_empty()).collect();
    for name in &names {
        server
            .execute(
                "DROP DATABASE",
                &format!("DROP DATABASE IF EXISTS `{name}` SYNC"),
            )
            .await?;
    }
    Ok(format!(
        "the scratch databases were dropped: {}",
        if names.is_empty() {
            "(none was created)".to_owned()
        } else {
            names.join(", ")
        }
    ))
}

/// Stores the report create-only and locked under `<prefix>/drills/<engine>/<release>/`.
async fn store_report<S: ObjectStore>(
    store: &S,
    policy: &WritePolicy,
    config: &Config,
    report: &mut DrillReport,
) {
    let key = history::report_key(
        &config.s3.prefix,
        report.engine,
        &report.release,
        Timestamp::new(report.incident_start),
    );
    let mut stored = report.clone();
    stored.report_key = Some(key.clone());
    let mut bytes = serde_json::to_vec_pretty(&stored).expect("serialisable");
    bytes.push(b'\n');
    let retention = policy.retention_from(OffsetDateTime::now_utc());
    match policy.put(store, &key, bytes, retention.as_ref()).await {
        Ok(_) => report.report_key = Some(key),
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
        "{} drill into {}: {:?}, RTO {} (goal {}), RPO {}{}; report {}",
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
        report.report_key.as_deref().unwrap_or("not stored")
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
        assert_eq!(s, "_drill_20261201t040000z");
        assert_eq!(derived_name("app", &s), "app_drill_20261201t040000z");
        let long = "é".repeat(40);
        let name = derived_name(&long, &s);
        assert!(name.len() <= 63, "{}", name.len());
        assert!(name.ends_with(&s));
        let (a, b) = (format!("{long}_rgw"), format!("{long}_moto"));
        assert_ne!(derived_name(&a, &s), derived_name(&b, &s));
    }
}
