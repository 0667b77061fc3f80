//! `strongroom run`: the sidecar. A scheduler per engine ([`scheduler`]) and its drills
//! ([`drills`]), background readiness
//! checks ([`readiness`]), config reload ([`reload`]) and the HTTP endpoints (`http`), sharing
//! one `AgentState`.
//!
//! It never exits because the database or S3 is missing: runs fail and are retried, readiness
//! says what it waits for, the endpoints keep answering. Shutdown is a tree: the caller's token
//! stops scheduling; running backups get `daemon.shutdown_grace_seconds` to finish, then are
//! cancelled (their uploads aborted, no manifest); then HTTP drains and `run` returns.

pub mod drills;
pub mod readiness;
pub mod reload;
pub mod scheduler;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backup;
use crate::catalog;
use crate::clock::Clock;
use crate::config::Config;
use crate::config::ConfigError;
use crate::error::{Error, Result};
use crate::http::{self, App};
use crate::layout::Engine;
use crate::metrics::Metrics;
use crate::pipeline::Progress;
use crate::state::{AgentState, RunRecord};
use crate::store::s3::S3Store;
use scheduler::{EngineScheduler, RunOutcome, Runner};

/// Runs real backups against the configured bucket.
pub struct BackupRunner;

impl Runner for BackupRunner {
    fn run(
        &self,
        engine: Engine,
        config: Arc<Config>,
        progress: Arc<Progress>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, std::result::Result<RunOutcome, String>> {
        Box::pin(async move {
            let store = Arc::new(S3Store::connect(&config.s3).await);
            match backup::run_recorded(&config, engine, store, &progress, &cancel).await {
                Ok(r) => Ok(RunOutcome {
                    key: Some(r.key),
                    size_bytes: Some(r.size_bytes),
                    uncompressed_size_bytes: Some(r.uncompressed_size_bytes),
                    skipped: None,
                }),
                Err(e @ Error::Standby { .. }) => Ok(RunOutcome {
                    skipped: Some(e.to_string()),
                    ..RunOutcome::default()
                }),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn newest(
        &self,
        engine: Engine,
        config: Arc<Config>,
    ) -> BoxFuture<'static, std::result::Result<Option<RunRecord>, String>> {
        Box::pin(async move {
            let store = S3Store::connect(&config.s3).await;
            let listed = catalog::backups(&store, &config.s3.prefix, engine, &config.release)
                .await
                .map_err(|e| e.to_string())?;
            Ok(listed.into_iter().rev().find(|b| b.complete).map(|b| {
                let at = b.snapshot.timestamp.datetime();
                RunRecord {
                    started_at: at,
                    finished_at: at,
                    trigger: None,
                    success: true,
                    key: Some(b.snapshot.keys.dump.clone()),
                    size_bytes: b.size_bytes,
                    uncompressed_size_bytes: None,
                    duration_seconds: 0.0,
                    error: None,
                }
            }))
        })
    }

    fn drill(
        &self,
        engine: Engine,
        config: Arc<Config>,
    ) -> BoxFuture<'static, std::result::Result<crate::drill::DrillSummary, String>> {
        Box::pin(async move {
            use crate::drill::{self, DrillOptions, Mode};
            use crate::restore::SnapshotChoice;
            let options = DrillOptions {
                engine,
                choice: SnapshotChoice::Latest,
                mode: Mode::Scratch,
                keep: false,
                production_size_gib: None,
                allow_unsigned: false,
            };
            let run = async {
                drill::preflight(&config, &options)?;
                let verifier = drill::verifier(&config)?;
                let store = S3Store::connect(&config.s3).await;
                let policy = crate::locked_write::WritePolicy::prepare(&store, &config.s3).await?;
                drill::run(&config, &store, &policy, verifier.as_ref(), &options).await
            };
            let report = run.await.map_err(|e| e.to_string())?;
            tracing::info!(%engine, verdict = ?report.verdict, rto = ?report.rto_seconds,
                report = ?report.report_key, "{}", report.render());
            Ok(report.summary())
        })
    }
}

/// Runs the agent until `shutdown` fires. `config` was loaded from `config_path` (which is
/// watched for changes); `listener` is already bound to `daemon.listen`.
pub async fn run(
    config_path: &Path,
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    clock: Clock,
    runner: Arc<dyn Runner>,
) -> Result<()> {
    let bytes = std::fs::read(config_path).map_err(|source| {
        Error::Config(ConfigError::Read {
            path: config_path.to_owned(),
            source,
        })
    })?;
    let digest = reload::digest(&bytes);
    let state = Arc::new(AgentState::new(
        digest.clone(),
        config.daemon.ready_requires_s3,
        clock.now(),
    ));
    let metrics = Arc::new(Metrics::new());
    let listen = config.daemon.listen.clone();
    let (config_tx, config_rx) = watch::channel(Arc::new(config));
    let stop_scheduling = CancellationToken::new();
    let cancel_runs = CancellationToken::new();
    let tracker = TaskTracker::new();

    let mut triggers = BTreeMap::new();
    let mut schedulers = Vec::new();
    for &engine in Engine::ALL {
        let (trigger_tx, trigger_rx) = mpsc::channel(1);
        triggers.insert(engine, trigger_tx.clone());
        let scheduler = EngineScheduler {
            engine,
            state: Arc::clone(&state),
            metrics: Arc::clone(&metrics),
            clock,
            runner: Arc::clone(&runner),
            config: config_rx.clone(),
            triggers: trigger_rx,
            trigger_sender: trigger_tx,
            stop: stop_scheduling.clone(),
            runs: cancel_runs.clone(),
            tracker: tracker.clone(),
        };
        schedulers.push(tokio::spawn(scheduler.run()));
        let drills = drills::DrillScheduler {
            engine,
            state: Arc::clone(&state),
            metrics: Arc::clone(&metrics),
            clock,
            runner: Arc::clone(&runner),
            config: config_rx.clone(),
            stop: stop_scheduling.clone(),
            tracker: tracker.clone(),
        };
        schedulers.push(tokio::spawn(drills.run()));
    }
    let checks = tokio::spawn(readiness::run(
        Arc::clone(&state),
        Arc::clone(&metrics),
        config_rx.clone(),
        clock,
        stop_scheduling.clone(),
    ));
    let _watcher = match reload::watch(
        config_path.to_owned(),
        digest,
        config_tx,
        Arc::clone(&state),
        Arc::clone(&metrics),
        stop_scheduling.clone(),
    ) {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!(path = %config_path.display(), error = %e,
                "cannot watch the config file: changes need a restart");
            None
        }
    };
    let stop_http = CancellationToken::new();
    let app = Arc::new(App {
        state: Arc::clone(&state),
        metrics: Arc::clone(&metrics),
        config: config_rx.clone(),
        triggers,
        clock,
    });
    let server = tokio::spawn(http::serve(listener, app, stop_http.clone()));
    tracing::info!(%listen, version = env!("CARGO_PKG_VERSION"), "agent running");

    shutdown.cancelled().await;
    let grace = Duration::from_secs(config_rx.borrow().daemon.shutdown_grace_seconds);
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "shutdown requested: no new runs; waiting for running backups"
    );
    stop_scheduling.cancel();
    for handle in schedulers {
        let _ = handle.await;
    }
    let _ = checks.await;
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            grace_seconds = grace.as_secs(),
            "grace period ran out: cancelling running backups (uploads aborted, no manifest)"
        );
        cancel_runs.cancel();
        tracker.wait().await;
    }
    stop_http.cancel();
    let _ = server.await;
    tracing::info!("agent stopped");
    Ok(())
}
