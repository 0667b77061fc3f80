//! Scheduled restore drills (`drill.enabled`): per engine, a scratch drill of the latest backup
//! on `drill.schedule`, never while a backup of that engine runs (that slot is skipped and
//! counted). Results go to `/status` and the `strongroom_drill_*` metrics; the drill itself
//! stores its report and audit event ([`crate::drill`]).

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::scheduler::Runner;
use crate::clock::Clock;
use crate::config::Config;
use crate::drill::Verdict;
use crate::layout::Engine;
use crate::metrics::Metrics;
use crate::schedule::Schedule;
use crate::state::{AgentState, SkipRecord};

/// One engine's drill loop.
pub struct DrillScheduler {
    pub engine: Engine,
    pub state: Arc<AgentState>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub runner: Arc<dyn Runner>,
    pub config: watch::Receiver<Arc<Config>>,
    pub stop: CancellationToken,
    pub tracker: TaskTracker,
}

/// The drill schedule of `engine`, if drills are on and the engine is configured.
fn schedule_of(engine: Engine, config: &Config) -> Option<Schedule> {
    let configured = match engine {
        Engine::Postgresql => config.postgresql.is_some(),
        Engine::Clickhouse => config.clickhouse.is_some(),
    };
    (config.drill.enabled && configured)
        .then(|| Schedule::parse(&config.drill.schedule).ok())
        .flatten()
}

impl DrillScheduler {
    pub async fn run(mut self) {
        let engine = self.engine;
        let running = Arc::new(tokio::sync::Mutex::new(()));
        loop {
            let config = self.config.borrow_and_update().clone();
            let Some(schedule) = schedule_of(engine, &config) else {
                self.state.clear_drill(engine);
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    changed = self.config.changed() => if changed.is_err() { return },
                }
                continue;
            };
            self.metrics
                .drill_goal(engine, config.drill.rto_goal_seconds(engine));
            let next = schedule.next_after(self.clock.now());
            self.state.update_drill(engine, |d| {
                d.schedule = Some(schedule.as_str().to_owned());
                d.next_run = next;
            });
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                changed = self.config.changed() => if changed.is_err() { return },
                _ = self.clock.sleep_until(next) => self.fire(&config, &running),
            }
        }
    }

    /// Starts a drill on the tracker, unless a backup of the engine (or the previous drill)
    /// is running.
    fn fire(&self, config: &Arc<Config>, running: &Arc<tokio::sync::Mutex<()>>) {
        let engine = self.engine;
        let now = self.clock.now();
        let held = Arc::clone(running).try_lock_owned();
        let busy = if self.state.is_running(engine) {
            Some("a backup of the engine was running")
        } else if held.is_err() {
            Some("the previous drill was still running")
        } else {
            None
        };
        let (Some(held), None) = (held.ok(), busy) else {
            let reason = busy.unwrap_or_default();
            tracing::warn!(%engine, reason, "scheduled drill skipped");
            self.metrics.drill_skipped(engine);
            self.state.update_drill(engine, |d| {
                d.last_skip = Some(SkipRecord {
                    at: now,
                    reason: reason.to_owned(),
                });
            });
            return;
        };
        let (runner, state, metrics, clock) = (
            Arc::clone(&self.runner),
            Arc::clone(&self.state),
            Arc::clone(&self.metrics),
            self.clock,
        );
        let config = Arc::clone(config);
        self.tracker.spawn(async move {
            let _held = held;
            state.update_drill(engine, |d| d.running = true);
            tracing::info!(%engine, "scheduled drill started");
            let result = runner.drill(engine, config).await;
            let finished = clock.now();
            match &result {
                Ok(summary) => {
                    let verdict = match summary.verdict {
                        Verdict::Pass => "pass",
                        Verdict::Fail => "fail",
                    };
                    metrics.record_drill(engine, verdict, summary.rto_seconds, finished);
                }
                Err(e) => {
                    tracing::error!(%engine, error = %e, "scheduled drill could not run");
                    metrics.record_drill(engine, "error", None, finished);
                }
            }
            state.update_drill(engine, |d| {
                d.running = false;
                match result {
                    Ok(summary) => {
                        if summary.verdict == Verdict::Pass {
                            d.last_success_at = Some(finished);
                        }
                        d.last = Some(summary);
                        d.last_error = None;
                    }
                    Err(e) => d.last_error = Some(e),
                }
            });
        });
    }
}
