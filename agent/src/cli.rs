//! The command line: argument definitions and dispatch into the library.
//!
//! `main.rs` parses, loads the config and sets up logging; everything a command does is here or
//! below, so it can be called from tests without a process. Each backup, verify and restore
//! ends with an audit event, whatever its result.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::{self, Action, EventDraft, Outcome};
use crate::backup;
use crate::clock::Clock;
use crate::config::Config;
use crate::daemon;
use crate::error::{Error, Result};
use crate::layout::Engine;
use crate::list;
use crate::locked_write::WritePolicy;
use crate::pipeline::Progress;
use crate::restore::{self, RestoreOptions, SnapshotChoice, run_once};
use crate::signing::{self, ManifestVerifier};
use crate::status_client;
use crate::store::s3::S3Store;
use crate::verify::{self, Selection, Status};

#[derive(Debug, Parser)]
#[command(
    name = "strongroom",
    version,
    about = "Backups of PostgreSQL into Object-Lock S3: provably complete, untampered, restorable"
)]
pub struct Cli {
    /// The YAML config file.
    #[arg(long, global = true, env = "STRONGROOM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one backup now and exit.
    Backup {
        #[arg(long, value_enum)]
        engine: EngineArg,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the backups of this release in the bucket.
    List {
        #[arg(long, value_enum)]
        engine: Option<EngineArg>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check backups: manifest and signature, objects by version, sizes, retention.
    Verify {
        #[arg(long, value_enum, default_value = "postgresql")]
        engine: EngineArg,
        #[command(flatten)]
        which: Which,
        /// Also stream each dump: SHA-256 and a complete gzip stream.
        #[arg(long)]
        deep: bool,
        /// Print JSON instead of one line per backup.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into a database, verifying before committing; print the report.
    Restore {
        #[arg(long, value_enum)]
        engine: EngineArg,
        #[command(flatten)]
        which: WhichOne,
        /// Target database (default: postgresql.database).
        #[arg(long)]
        database: Option<String>,
        /// Load even into a database that already has tables.
        #[arg(long)]
        force: bool,
        /// Create the target database if it does not exist.
        #[arg(long)]
        create: bool,
        /// Restore a backup even though no signing.public_key_file is configured to check it
        /// (also restore.allow_unsigned); the report says UNSIGNED.
        #[arg(long)]
        allow_unsigned: bool,
        /// This restore's run id (the chart's restore.runId): a restore of the same snapshot
        /// into the same target with the same id runs once; a passed one leaves a marker under
        /// <prefix>/reports/.
        #[arg(long, value_name = "ID")]
        run_id: Option<String>,
        /// Run even though a restore with this --run-id already passed.
        #[arg(long, requires = "run_id")]
        rerun: bool,
        /// PostgreSQL: first create the roles the backup names that this server lacks (from
        /// the backup's globals: roles without passwords, memberships, settings); existing
        /// roles are never altered. For a restore into a fresh cluster.
        #[arg(long)]
        with_globals: bool,
    },
    /// Restore drill: restore the latest backup into a scratch database (or, in staging, in
    /// place of the live one), validate it, and measure RTO and RPO against the goal; the
    /// report is printed and stored, locked, under <prefix>/drills/. `drill list` shows them.
    Drill(DrillArgs),
    /// Check the bucket and these credentials: Object Lock, versioning, default retention,
    /// verified integrity header, clock skew, locked writes, and that the role cannot delete.
    /// Leaves one small probe object, locked for a day, under <prefix>/.strongroom/preflight/.
    Preflight {
        /// Print JSON instead of one line per check.
        #[arg(long)]
        json: bool,
    },
    /// Validate a config file without contacting anything (exit 64 naming the key on error).
    CheckConfig,
    /// Parse the arguments after `--` as a strongroom command line and run nothing (the Helm
    /// chart's tests check the commands the chart renders with it).
    #[command(hide = true)]
    CheckArgs {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the agent: scheduled backups, /healthz /readyz /status /metrics, config reload.
    Run,
    /// Show a running agent's status (e.g. through kubectl port-forward).
    Status {
        /// The agent's address.
        #[arg(long, default_value = "http://127.0.0.1:9550")]
        url: String,
        /// Fail (exit 1) if an enabled engine has no successful backup younger than this.
        #[arg(long, default_value = "26h", value_parser = humantime::parse_duration)]
        max_age: std::time::Duration,
        /// Print the agent's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Generate an Ed25519 key pair for signing manifests.
    Keygen {
        /// Directory to write strongroom-signing.key (0600) and strongroom-signing.pub into.
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DrillArgs {
    #[command(subcommand)]
    pub command: Option<DrillCommand>,
    #[arg(long, value_enum, default_value = "postgresql")]
    pub engine: EngineArg,
    /// The backup's key; the newest complete backup when absent (--latest).
    #[arg(long, value_name = "KEY", conflicts_with = "latest")]
    pub snapshot: Option<String>,
    /// The newest complete backup (the default).
    #[arg(long)]
    pub latest: bool,
    /// scratch: into a new database, dropped afterwards. replace: rename the live database
    /// aside and restore under its name (needs drill.allow_replace: true).
    #[arg(long, value_enum, default_value = "scratch")]
    pub mode: crate::drill::Mode,
    /// Keep the scratch database(s) afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Also project the RTO to a production backup of this size (GiB, as stored in the
    /// bucket), at the throughput measured here.
    #[arg(long, value_name = "GIB")]
    pub production_size_gib: Option<f64>,
    /// Drill a backup even though no signing.public_key_file is configured to check it.
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Print the report as JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// The drills of this release: date, snapshot, RTO against the goal, RPO, result.
    List {
        #[arg(long, value_enum, default_value = "postgresql")]
        engine: EngineArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the chain of events and report any gap, fork or altered event.
    Verify {
        #[arg(long, value_enum, default_value = "postgresql")]
        engine: EngineArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Exactly one of `--snapshot`, `--latest`, `--all`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Which {
    /// The backup's key, e.g. backups/app/postgresql/<release>/<timestamp>.sql.gz
    #[arg(long, value_name = "KEY")]
    snapshot: Option<String>,
    /// The newest complete backup.
    #[arg(long)]
    latest: bool,
    /// Every backup of the release.
    #[arg(long)]
    all: bool,
}

/// Exactly one of `--snapshot`, `--latest`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct WhichOne {
    /// The backup's key, exactly as the runbook's restore.snapshot.
    #[arg(long, value_name = "KEY")]
    snapshot: Option<String>,
    /// The newest complete backup.
    #[arg(long)]
    latest: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EngineArg {
    Postgresql,
    Clickhouse,
}

impl From<EngineArg> for Engine {
    fn from(e: EngineArg) -> Engine {
        match e {
            EngineArg::Postgresql => Engine::Postgresql,
            EngineArg::Clickhouse => Engine::Clickhouse,
        }
    }
}

impl Command {
    /// Whether the command reads the config file (keygen and status do not).
    pub fn needs_config(&self) -> bool {
        !matches!(
            self,
            Command::Keygen { .. } | Command::Status { .. } | Command::CheckArgs { .. }
        )
    }
}

/// Runs a command that needs no config.
pub async fn run_without_config(command: Command) -> Result<()> {
    match command {
        Command::Keygen { out_dir } => {
            let (private, public) = signing::keygen(&out_dir)?;
            println!(
                "private key: {} (mount it as the backup agent's signing.private_key_file)\n\
                 public key:  {} (give it to verify and restore as signing.public_key_file)",
                private.display(),
                public.display()
            );
        }
        Command::Status { url, max_age, json } => {
            let doc = status_client::fetch(&url).await?;
            let (table, stale) = status_client::render(&doc, OffsetDateTime::now_utc(), max_age);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&doc).expect("serialisable")
                );
            } else {
                print!("{table}");
            }
            if !stale.is_empty() {
                return Err(Error::Stale {
                    engines: stale.join(", "),
                    max_age: humantime::format_duration(max_age).to_string(),
                });
            }
        }
        Command::CheckArgs { args } => {
            let argv = std::iter::once("strongroom".to_owned()).chain(args);
            match Cli::try_parse_from(argv) {
                Ok(parsed) => println!("parses: {:?}", parsed.command),
                Err(e) => {
                    return Err(Error::BadArguments {
                        problem: e.to_string(),
                    });
                }
            }
        }
        _ => unreachable!("every other command needs a config"),
    }
    Ok(())
}

/// A token the first SIGTERM or SIGINT cancels: a PostgreSQL restore whose data is still
/// loading stops and discards it; one past that point swaps, validates and reports
/// ([`RestoreOptions::stop`]). A second signal ends the process at once (psql dies with it:
/// nothing half-loaded commits).
fn stop_on_signal() -> Option<CancellationToken> {
    let Some(mut signals) = crate::signals::Stops::watch() else {
        tracing::warn!(
            "cannot watch SIGTERM and SIGINT: a signal ends the restore where it is (nothing \
             half-loaded commits; the next parallel restore drops a staging database left behind)"
        );
        return None;
    };
    let stop = CancellationToken::new();
    let stopping = stop.clone();
    tokio::spawn(async move {
        let name = signals.next().await;
        tracing::warn!(
            signal = name,
            "stopping the restore: data still loading is discarded; a restore whose data \
             loaded swaps it in, validates and reports (a second signal ends it at once)"
        );
        stopping.cancel();
        let name = signals.next().await;
        tracing::error!(signal = name, "second signal: exiting now");
        std::process::exit(crate::signals::exit_status(name));
    });
    Some(stop)
}

/// `strongroom run`: binds the listener, turns SIGTERM/SIGINT into a shutdown, runs the agent.
async fn run_daemon(config: Config, config_path: &Path) -> Result<()> {
    // A token file that cannot be read, or is empty, is a config error now, not a 503 later.
    config.daemon.trigger_token()?;
    let addr = config.daemon.listen.clone();
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    let shutdown = CancellationToken::new();
    let signalled = shutdown.clone();
    tokio::spawn(async move {
        let Some(mut signals) = crate::signals::Stops::watch() else {
            tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
            return;
        };
        let name = signals.next().await;
        tracing::info!(signal = name, "shutting down");
        signalled.cancel();
    });
    daemon::run(
        config_path,
        config,
        listener,
        shutdown,
        Clock::System,
        Arc::new(daemon::BackupRunner),
    )
    .await
}

/// Where a restore loads, for its run marker: the server and the database.
fn restore_target(config: &Config, engine: Engine, options: &RestoreOptions) -> String {
    match (engine, &config.postgresql, &config.clickhouse) {
        (Engine::Postgresql, Some(pg), _) => format!(
            "{}:{}/{}",
            pg.host,
            pg.port,
            options.database.as_deref().unwrap_or(&pg.database)
        ),
        (Engine::Clickhouse, _, Some(ch)) => ch.url.clone(),
        _ => String::new(),
    }
}

fn load_verifier(config: &Config) -> Result<Option<ManifestVerifier>> {
    Ok(match &config.signing.public_key_file {
        Some(path) => Some(ManifestVerifier::load(path)?),
        None => None,
    })
}

async fn record(store: &S3Store, policy: Option<&WritePolicy>, prefix: &str, draft: EventDraft) {
    audit::record(store, policy, prefix, draft).await
}

/// `strongroom drill` and `strongroom drill list`.
async fn drill_command(config: &Config, store: &S3Store, args: DrillArgs) -> Result<()> {
    use crate::drill::{self, DrillOptions, history};
    if let Some(DrillCommand::List { engine, json }) = args.command {
        let engine = Engine::from(engine);
        let entries = history::list(store, &config.s3.prefix, engine, &config.release).await?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&entries).expect("serialisable")
            );
        } else {
            print!("{}", history::render_table(&entries));
        }
        return Ok(());
    }
    let engine = Engine::from(args.engine);
    let choice = match args.snapshot {
        Some(key) => {
            crate::layout::parse_snapshot(&config.s3.prefix, engine, &key)?;
            SnapshotChoice::Key(key)
        }
        None => SnapshotChoice::Latest,
    };
    let options = DrillOptions {
        engine,
        choice,
        mode: args.mode,
        keep: args.keep,
        production_size_gib: args.production_size_gib,
        allow_unsigned: args.allow_unsigned,
    };
    drill::preflight(config, &options)?;
    let verifier = drill::verifier(config)?;
    let policy = WritePolicy::prepare(store, &config.s3).await?;
    let report = drill::run(config, store, &policy, verifier.as_ref(), &options).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialisable")
        );
    } else {
        print!("{}", report.render());
    }
    match drill::failed(&report) {
        Some(e) => Err(e),
        None if report.report_key.is_none() => Err(Error::DrillNotStored {
            problem: report.report_error.clone().unwrap_or_default(),
        }),
        None => Ok(()),
    }
}

/// Runs a command with a loaded, valid config (read from `config_path`).
pub async fn run(command: Command, config: Config, config_path: &Path) -> Result<()> {
    match command {
        Command::Run => return run_daemon(config, config_path).await,
        Command::CheckConfig => {
            println!(
                "{}",
                crate::inspect::check_config::summary(&config, config_path)
            );
            return Ok(());
        }
        _ => {}
    }
    let store = Arc::new(S3Store::connect(&config.s3).await);
    let prefix = config.s3.prefix.clone();
    match command {
        Command::Backup { engine, json } => {
            let cancel = tokio_util::sync::CancellationToken::new();
            let report = backup::run_recorded(
                &config,
                Engine::from(engine),
                Arc::clone(&store),
                &Progress::default(),
                &cancel,
            )
            .await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serialisable")
                );
            } else {
                println!(
                    "backup complete: {} ({}, {} uncompressed, version {}{})\nmanifest: {}",
                    report.key,
                    list::human_size(report.size_bytes),
                    list::human_size(report.uncompressed_size_bytes),
                    report.version_id.as_deref().unwrap_or("-"),
                    if report.signed {
                        ", signed"
                    } else {
                        ", UNSIGNED"
                    },
                    report.manifest_key
                );
            }
        }
        Command::List { engine, json } => {
            let engine = engine.map_or(Engine::Postgresql, Engine::from);
            let entries = list::list_backups(&*store, &config, engine).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&entries).expect("serialisable")
                );
            } else {
                print!("{}", list::render_table(&entries));
            }
        }
        Command::Verify {
            engine,
            which,
            deep,
            json,
        } => {
            let engine = Engine::from(engine);
            let selection = match (which.snapshot, which.latest) {
                (Some(key), _) => Selection::Snapshot(key),
                (None, true) => Selection::Latest,
                (None, false) => Selection::All,
            };
            // Key checks first: a bad key makes no request at all.
            if let Selection::Snapshot(key) = &selection {
                crate::layout::parse_snapshot(&prefix, engine, key)?;
            }
            let verifier = load_verifier(&config)?;
            let backups = verify::select(&*store, &config, engine, &selection).await?;
            let policy = WritePolicy::prepare(&*store, &config.s3).await;
            if let Err(e) = &policy {
                tracing::warn!(error = %e, "audit events will only be logged");
            }
            let mut verdicts = Vec::new();
            for (snapshot, complete) in &backups {
                let verdict = verify::verify_one(
                    &*store,
                    &config,
                    snapshot,
                    *complete,
                    verifier.as_ref(),
                    deep,
                )
                .await;
                if verdict.status != Status::Incomplete {
                    let draft = EventDraft {
                        action: Action::Verify,
                        engine,
                        release: snapshot.release.clone(),
                        snapshot: Some(snapshot.keys.dump.clone()),
                        result: if verdict.status == Status::Ok {
                            Outcome::Success
                        } else {
                            Outcome::Failure
                        },
                        detail: if verdict.problems.is_empty() {
                            format!("ok{}", if deep { " (deep)" } else { "" })
                        } else {
                            verdict.problems.join("; ")
                        },
                        manifest_sha256: verdict.manifest_sha256.clone(),
                    };
                    record(&store, policy.as_ref().ok(), &prefix, draft).await;
                }
                if !json {
                    println!("{}", verify::render_line(&verdict));
                }
                verdicts.push(verdict);
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&verdicts).expect("serialisable")
                );
            }
            let failed = verdicts
                .iter()
                .filter(|v| v.status == Status::Failed)
                .count();
            if failed > 0 {
                return Err(Error::VerifyFailed {
                    failed,
                    total: verdicts.len(),
                });
            }
        }
        Command::Restore {
            engine,
            which,
            database,
            force,
            create,
            allow_unsigned,
            run_id,
            rerun,
            with_globals,
        } => {
            let engine = Engine::from(engine);
            let choice = match which.snapshot {
                Some(key) => SnapshotChoice::Key(key),
                None => SnapshotChoice::Latest,
            };
            let options = RestoreOptions {
                database,
                force,
                create,
                allow_unsigned,
                with_globals: with_globals
                    .then_some(crate::engine::postgres::globals::Fidelity::Faithful),
                stop: (engine == Engine::Postgresql)
                    .then(stop_on_signal)
                    .flatten(),
                ..RestoreOptions::default()
            };
            // Key checks and local files first: a bad key makes no request at all.
            if let SnapshotChoice::Key(key) = &choice {
                crate::layout::parse_snapshot(&prefix, engine, key)?;
            }
            restore::preflight_engine(&config, engine, &options)?;
            let verifier = load_verifier(&config)?;
            let snapshot = restore::resolve_snapshot(&*store, &config, engine, &choice).await?;
            let run = run_id.map(|id| {
                let target = restore_target(&config, engine, &options);
                run_once::Run::new(
                    &prefix,
                    engine,
                    &snapshot.release,
                    &snapshot.keys.dump,
                    &target,
                    &id,
                )
            });
            // A rerun over an existing marker keeps that first marker (markers are
            // create-only, like every object).
            let marked = match &run {
                Some(run) => run_once::check(&*store, run, rerun).await?,
                None => false,
            };
            let policy = WritePolicy::prepare(&*store, &config.s3).await?;
            let result = restore::restore_snapshot(
                &config,
                &*store,
                &policy,
                verifier.as_ref(),
                &snapshot,
                &options,
            )
            .await;
            let draft = EventDraft {
                action: Action::Restore,
                engine,
                release: snapshot.release.clone(),
                snapshot: Some(snapshot.keys.dump.clone()),
                result: match &result {
                    Ok(r) if r.passed => Outcome::Success,
                    _ => Outcome::Failure,
                },
                detail: match &result {
                    Ok(r) if r.passed => format!(
                        "into {} in {:.1}s, {} checks passed",
                        r.target_database,
                        r.phases.total_seconds,
                        r.checks.len()
                    ),
                    Ok(r) => format!("checks failed: {}", r.failed_checks().join(", ")),
                    Err(e) => e.to_string(),
                },
                manifest_sha256: result.as_ref().ok().map(|r| r.manifest_sha256.clone()),
            };
            record(&store, Some(&policy), &prefix, draft).await;
            let report = result?;
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("serialisable")
            );
            if !report.passed {
                return Err(Error::ValidationFailed {
                    failed: report.failed_checks().join(", "),
                    report_key: report
                        .report_key
                        .clone()
                        .unwrap_or_else(|| "no stored report (see report_error)".into()),
                });
            }
            if let Some(problem) = report.report_error {
                return Err(Error::ReportNotStored {
                    database: report.target_database,
                    problem,
                });
            }
            if let (Some(run), Some(report_key), false) = (&run, &report.report_key, marked) {
                // Restored and validated either way: a marker that could not be stored is
                // exit 3, like a report that could not be.
                if let Err(e) =
                    run_once::record(&*store, &policy, run, report_key, report.finished_at).await
                {
                    return Err(Error::ReportNotStored {
                        database: report.target_database,
                        problem: e.to_string(),
                    });
                }
            }
        }
        Command::Audit {
            command: AuditCommand::Verify { engine, json },
        } => {
            let report =
                audit::verify_chain(&*store, &prefix, Engine::from(engine), &config.release)
                    .await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serialisable")
                );
            } else if report.problems.is_empty() {
                println!(
                    "audit chain {}: {} events, intact",
                    report.folder, report.events
                );
            } else {
                println!(
                    "audit chain {}: {} events, BROKEN:",
                    report.folder, report.events
                );
                for p in &report.problems {
                    println!("  {p}");
                }
            }
            if !report.problems.is_empty() {
                return Err(Error::AuditBroken {
                    folder: report.folder,
                    problems: report.problems.len(),
                });
            }
        }
        Command::Drill(args) => drill_command(&config, &store, args).await?,
        Command::Preflight { json } => {
            let checks =
                crate::inspect::preflight::run(&store, &config, OffsetDateTime::now_utc()).await;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&checks).expect("serialisable")
                );
            } else {
                for c in &checks {
                    println!("{c}");
                }
            }
            let failed: Vec<&str> = checks
                .iter()
                .filter(|c| c.status == crate::inspect::preflight::CheckStatus::Fail)
                .map(|c| c.name)
                .collect();
            if !failed.is_empty() {
                return Err(Error::PreflightFailed {
                    target: format!("s3://{}/{prefix}", store.bucket()),
                    failed: failed.join(", "),
                });
            }
        }
        Command::Keygen { .. } | Command::Status { .. } | Command::CheckArgs { .. } => {
            run_without_config(command).await?
        }
        Command::Run | Command::CheckConfig => unreachable!("handled above"),
    }
    Ok(())
}
