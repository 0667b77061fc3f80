//! One engine's schedule loop: waits for the next cron time (or a retry, a manual trigger, a
//! config change), starts a run unless one is still going (then counts the skip), and backs off
//! after failures. It does not know which engine it runs: a [`Runner`] does the work.
//!
//! At start it reads the newest complete backup from the bucket (the truth after a pod restart)
//! to seed `/status` and the metrics, and, with `catch_up`, runs at once if that backup is older
//! than one schedule period. If the bucket cannot be read yet it keeps trying in the background.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::BoxFuture;
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::Config;
use crate::layout::Engine;
use crate::metrics::Metrics;
use crate::pipeline::Progress;
use crate::schedule::{Schedule, jitter, retry_delay};
use crate::state::{AgentState, RunRecord, Trigger};

/// What a successful run produced.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    pub key: Option<String>,
    pub size_bytes: Option<u64>,
    pub uncompressed_size_bytes: Option<u64>,
    /// The run was skipped on purpose (a standby), and why; nothing was written.
    pub skipped: Option<String>,
}

/// Does the work the scheduler decides on.
pub trait Runner: Send + Sync + 'static {
    /// One backup of `engine` under `config`; the error is the message for `/status`.
    fn run(
        &self,
        engine: Engine,
        config: Arc<Config>,
        progress: Arc<Progress>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<RunOutcome, String>>;

    /// The newest complete backup in the bucket, if any.
    fn newest(
        &self,
        engine: Engine,
        config: Arc<Config>,
    ) -> BoxFuture<'static, Result<Option<RunRecord>, String>>;

    /// One scheduled scratch drill of `engine`: its summary (PASS or FAIL), or why it could
    /// not run at all.
    fn drill(
        &self,
        engine: Engine,
        config: Arc<Config>,
    ) -> BoxFuture<'static, Result<crate::drill::DrillSummary, String>> {
        let _ = (engine, config);
        Box::pin(async { Err("this runner runs no drills".to_owned()) })
    }
}

/// Everything one engine's loop needs.
pub struct EngineScheduler {
    pub engine: Engine,
    pub state: Arc<AgentState>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub runner: Arc<dyn Runner>,
    pub config: watch::Receiver<Arc<Config>>,
    pub triggers: mpsc::Receiver<Trigger>,
    /// To trigger itself (catch-up).
    pub trigger_sender: mpsc::Sender<Trigger>,
    /// Stops scheduling (shutdown's first step); running backups go on.
    pub stop: CancellationToken,
    /// Cancels running backups (when the grace period runs out).
    pub runs: CancellationToken,
    /// Holds the running backups, so shutdown can wait for them.
    pub tracker: TaskTracker,
}

/// The schedule of `engine` in `config`, if the engine is configured.
fn schedule_of(engine: Engine, config: &Config) -> Option<(Schedule, u64, bool)> {
    match engine {
        Engine::Postgresql => config.postgresql.as_ref().and_then(|pg| {
            Schedule::parse(&pg.schedule)
                .ok()
                .map(|s| (s, pg.jitter_seconds, pg.catch_up))
        }),
        Engine::Clickhouse => config.clickhouse.as_ref().and_then(|ch| {
            Schedule::parse(&ch.schedule)
                .ok()
                .map(|s| (s, ch.jitter_seconds, ch.catch_up))
        }),
    }
}

impl EngineScheduler {
    pub async fn run(mut self) {
        let engine = self.engine;
        let (done_tx, mut done_rx) = mpsc::channel::<bool>(4);
        self.bootstrap();
        let mut retry_at: Option<OffsetDateTime> = None;
        // The cron slot being waited for and its jittered firing time.
        let mut planned: Option<(OffsetDateTime, OffsetDateTime)> = None;
        loop {
            let config = self.config.borrow_and_update().clone();
            let Some((schedule, jitter_seconds, _)) = schedule_of(engine, &config) else {
                self.state.set_schedule(engine, None, None);
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    changed = self.config.changed() => if changed.is_err() { return },
                }
                continue;
            };
            let now = self.clock.now();
            let slot = schedule.next_after(now);
            let fire = match (planned, slot) {
                (Some((s, fire)), Some(slot)) if s == slot => Some(fire),
                (_, Some(slot)) => {
                    let fire = slot + jitter(jitter_seconds);
                    planned = Some((slot, fire));
                    Some(fire)
                }
                (_, None) => None,
            };
            let next = match (fire, retry_at) {
                (Some(f), Some(r)) => Some(f.min(r)),
                (f, r) => f.or(r),
            };
            self.state
                .set_schedule(engine, Some(schedule.as_str().to_owned()), next);
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                changed = self.config.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    planned = None;
                }
                Some(trigger) = self.triggers.recv() => self.start(&config, trigger, &done_tx),
                Some(success) = done_rx.recv() => {
                    retry_at = if success {
                        None
                    } else {
                        let failures = self.state.consecutive_failures(engine);
                        let d = &config.daemon;
                        let delay = retry_delay(
                            failures,
                            Duration::from_secs(d.retry_initial_seconds),
                            Duration::from_secs(d.retry_max_seconds),
                        );
                        tracing::info!(%engine, failures, retry_in_seconds = delay.as_secs(),
                            "backup failed; will retry");
                        Some(self.clock.now() + delay)
                    };
                }
                _ = self.clock.sleep_until(next) => {
                    let trigger = if next.is_some() && next == retry_at {
                        retry_at = None;
                        Trigger::Retry
                    } else {
                        planned = None;
                        Trigger::Schedule
                    };
                    self.start(&config, trigger, &done_tx);
                }
            }
        }
    }

    /// Starts a run on the tracker, unless one is going.
    fn start(&self, config: &Arc<Config>, trigger: Trigger, done: &mpsc::Sender<bool>) {
        let engine = self.engine;
        let progress = Arc::new(Progress::default());
        let started_at = self.clock.now();
        if !self
            .state
            .try_start(engine, trigger, Arc::clone(&progress), started_at)
        {
            self.metrics.skipped(engine, "running");
            tracing::warn!(%engine, ?trigger,
                "a backup is still running; this run is skipped, not started twice");
            return;
        }
        let (runner, state, metrics, clock) = (
            Arc::clone(&self.runner),
            Arc::clone(&self.state),
            Arc::clone(&self.metrics),
            self.clock,
        );
        let (config, cancel, done) = (Arc::clone(config), self.runs.child_token(), done.clone());
        self.tracker.spawn(async move {
            tracing::info!(%engine, ?trigger, "backup run started");
            let timer = Instant::now();
            // A panic inside a run is a failed run, recorded like any other: the engine must
            // not stay "running" for ever, skipping every later slot.
            let outcome =
                std::panic::AssertUnwindSafe(runner.run(engine, config, progress, cancel))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "(no message)".into());
                        Err(format!(
                            "internal error: the backup run panicked ({what}); nothing of it \
                         counts as a backup. Please report this with the agent's log"
                        ))
                    });
            if let Ok(RunOutcome {
                skipped: Some(reason),
                ..
            }) = &outcome
            {
                tracing::info!(%engine, reason = %reason, "backup run skipped");
                state.skip(engine, reason.clone(), clock.now());
                metrics.skipped(engine, "standby");
                let _ = done.send(true).await;
                return;
            }
            let record = RunRecord {
                started_at,
                finished_at: clock.now(),
                trigger: Some(trigger),
                success: outcome.is_ok(),
                key: outcome.as_ref().ok().and_then(|o| o.key.clone()),
                size_bytes: outcome.as_ref().ok().and_then(|o| o.size_bytes),
                uncompressed_size_bytes: outcome
                    .as_ref()
                    .ok()
                    .and_then(|o| o.uncompressed_size_bytes),
                duration_seconds: timer.elapsed().as_secs_f64(),
                error: outcome.as_ref().err().cloned(),
            };
            match &record.error {
                None => {
                    tracing::info!(%engine, key = ?record.key, seconds = record.duration_seconds,
                    "backup run succeeded")
                }
                Some(e) => tracing::error!(%engine, error = %e, "backup run failed"),
            }
            state.finish(engine, record.clone());
            metrics.record_run(engine, &record);
            let _ = done.send(record.success).await;
        });
    }

    /// Seeds the last success from the bucket and decides catch-up, retrying until the bucket
    /// answers or scheduling stops.
    fn bootstrap(&self) {
        let engine = self.engine;
        let (runner, state, metrics, clock) = (
            Arc::clone(&self.runner),
            Arc::clone(&self.state),
            Arc::clone(&self.metrics),
            self.clock,
        );
        let (config, trigger, stop) = (
            self.config.clone(),
            self.trigger_sender.clone(),
            self.stop.clone(),
        );
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(5);
            loop {
                let current = config.borrow().clone();
                let Some((schedule, _, catch_up)) = schedule_of(engine, &current) else {
                    return;
                };
                match runner.newest(engine, Arc::clone(&current)).await {
                    Ok(newest) => {
                        if let Some(record) = &newest {
                            state.seed_last_success(engine, record.clone());
                            metrics.seed_last_success(engine, record);
                        }
                        let now = clock.now();
                        let period = schedule.period_after(now).unwrap_or(Duration::MAX);
                        let stale = newest.as_ref().is_none_or(|r| {
                            Duration::try_from(now - r.finished_at).unwrap_or(Duration::ZERO)
                                > period
                        });
                        if catch_up && stale {
                            tracing::info!(%engine, newest = ?newest.map(|r| r.finished_at),
                                "catch-up: the newest backup is older than one schedule period");
                            let _ = trigger.try_send(Trigger::CatchUp);
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(%engine, error = %e, retry_in_seconds = wait.as_secs(),
                            "cannot read the bucket yet; will try again");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        wait = (wait * 2).min(Duration::from_secs(60));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use time::macros::datetime;

    /// A runner that takes `duration` per run, panics in the first `panic` runs and fails the
    /// first `fail` runs after them.
    struct FakeRunner {
        duration: Duration,
        panic: AtomicUsize,
        fail: AtomicUsize,
        started: Mutex<Vec<(OffsetDateTime, Trigger)>>,
        clock: Clock,
        newest: Option<RunRecord>,
        concurrent: AtomicUsize,
        max_concurrent: AtomicUsize,
    }

    impl Runner for Arc<FakeRunner> {
        fn run(
            &self,
            _: Engine,
            _: Arc<Config>,
            _: Arc<Progress>,
            cancel: CancellationToken,
        ) -> BoxFuture<'static, Result<RunOutcome, String>> {
            let me = Arc::clone(self);
            Box::pin(async move {
                let now = me.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
                me.max_concurrent.fetch_max(now, Ordering::SeqCst);
                me.started
                    .lock()
                    .unwrap()
                    .push((me.clock.now(), Trigger::Schedule));
                tokio::select! {
                    _ = tokio::time::sleep(me.duration) => {}
                    _ = cancel.cancelled() => {
                        me.concurrent.fetch_sub(1, Ordering::SeqCst);
                        return Err("cancelled".into());
                    }
                }
                me.concurrent.fetch_sub(1, Ordering::SeqCst);
                if me.panic.load(Ordering::SeqCst) > 0 {
                    me.panic.fetch_sub(1, Ordering::SeqCst);
                    panic!("a bug in the run");
                }
                let failing = me.fail.load(Ordering::SeqCst) > 0;
                if failing {
                    me.fail.fetch_sub(1, Ordering::SeqCst);
                    return Err("database went away".into());
                }
                Ok(RunOutcome::default())
            })
        }

        fn newest(
            &self,
            _: Engine,
            _: Arc<Config>,
        ) -> BoxFuture<'static, Result<Option<RunRecord>, String>> {
            let newest = self.newest.clone();
            Box::pin(async move { Ok(newest) })
        }
    }

    struct Harness {
        runner: Arc<FakeRunner>,
        state: Arc<AgentState>,
        stop: CancellationToken,
        triggers: mpsc::Sender<Trigger>,
        config: watch::Sender<Arc<Config>>,
    }

    fn config(schedule: &str, extra: &str) -> Arc<Config> {
        let yaml = format!(
            "release: r\ns3:\n  bucket: b-1\npostgresql:\n  database: app\n  schedule: \"{schedule}\"\n{extra}"
        );
        Arc::new(Config::from_yaml(&yaml, std::path::Path::new("t")).unwrap())
    }

    fn start(
        schedule: &str,
        extra: &str,
        duration: Duration,
        fail: usize,
        newest: Option<RunRecord>,
    ) -> Harness {
        start_with(config(schedule, extra), duration, fail, newest)
    }

    fn start_with(
        config: Arc<Config>,
        duration: Duration,
        fail: usize,
        newest: Option<RunRecord>,
    ) -> Harness {
        let clock = Clock::following_tokio(datetime!(2026-11-23 01:59:00 UTC));
        let runner = Arc::new(FakeRunner {
            duration,
            panic: AtomicUsize::new(0),
            fail: AtomicUsize::new(fail),
            started: Mutex::new(Vec::new()),
            clock,
            newest,
            concurrent: AtomicUsize::new(0),
            max_concurrent: AtomicUsize::new(0),
        });
        let state = Arc::new(AgentState::new("d".into(), true, clock.now()));
        let (config_tx, config_rx) = watch::channel(config);
        let (trigger_tx, trigger_rx) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let scheduler = EngineScheduler {
            engine: Engine::Postgresql,
            state: Arc::clone(&state),
            metrics: Arc::new(Metrics::new()),
            clock,
            runner: Arc::new(Arc::clone(&runner)),
            config: config_rx,
            triggers: trigger_rx,
            trigger_sender: trigger_tx.clone(),
            stop: stop.clone(),
            runs: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        tokio::spawn(scheduler.run());
        Harness {
            runner,
            state,
            stop,
            triggers: trigger_tx,
            config: config_tx,
        }
    }

    fn started(h: &Harness) -> Vec<OffsetDateTime> {
        h.runner
            .started
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _)| *t)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn runs_at_each_scheduled_time() {
        let h = start("0 2 * * *", "", Duration::from_secs(60), 0, None);
        tokio::time::sleep(Duration::from_secs(2 * 86_400 + 3600)).await;
        assert_eq!(
            started(&h),
            [
                datetime!(2026-11-23 02:00:00 UTC),
                datetime!(2026-11-24 02:00:00 UTC),
                datetime!(2026-11-25 02:00:00 UTC)
            ]
        );
        h.stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn an_overrunning_backup_is_never_doubled_and_the_skip_is_counted() {
        // Every 10 s, each run takes 25 s.
        let h = start("*/10 * * * * *", "", Duration::from_secs(25), 0, None);
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(h.runner.max_concurrent.load(Ordering::SeqCst), 1);
        let doc = h.state.status(datetime!(2026-11-23 02:00:00 UTC));
        let pg = &doc.engines[&Engine::Postgresql];
        assert!(pg.skipped_while_running >= 4, "{pg:?}");
        assert!(started(&h).len() >= 3);
        h.stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_run_is_a_failure_and_the_schedule_goes_on() {
        let h = start("0 2 * * *", "", Duration::from_secs(1), 0, None);
        h.runner.panic.store(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(86_400 + 3600)).await;
        let doc = h.state.status(datetime!(2026-11-24 04:00:00 UTC));
        let pg = &doc.engines[&Engine::Postgresql];
        // The panic was recorded as a failure and retried; the next day ran too.
        let first = started(&h)[0];
        assert_eq!(first, datetime!(2026-11-23 02:00:00 UTC));
        assert!(started(&h).len() >= 3, "{:?}", started(&h));
        assert_eq!(pg.state, "idle", "{pg:?}");
        assert!(pg.last_success.is_some(), "{pg:?}");
        h.stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_is_recorded_with_its_message() {
        let h = start("0 2 * * *", "", Duration::from_secs(1), 0, None);
        h.runner.panic.store(1, Ordering::SeqCst);
        // 01:59 + 90 s: the 02:00 run has panicked, its retry is a minute away.
        tokio::time::sleep(Duration::from_secs(90)).await;
        let doc = h.state.status(datetime!(2026-11-23 02:00:30 UTC));
        let pg = &doc.engines[&Engine::Postgresql];
        let error = pg.last_attempt.as_ref().unwrap().error.clone();
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("panicked (a bug in the run)")),
            "{pg:?}"
        );
        h.stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_with_backoff_before_the_next_slot() {
        let extra = "daemon:\n  retry_initial_seconds: 60\n  retry_max_seconds: 600\n";
        let h = start("0 2 * * *", extra, Duration::from_secs(1), 2, None);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        // 02:00 fails, retry 1 min after, fails, retry 2 min after, succeeds.
        let t = started(&h);
        assert_eq!(t.len(), 3, "{t:?}");
        assert_eq!(t[1] - t[0], time::Duration::seconds(61));
        assert_eq!(t[2] - t[1], time::Duration::seconds(121));
        assert_eq!(h.state.consecutive_failures(Engine::Postgresql), 0);
        h.stop.cancel();
    }

    fn finished(at: OffsetDateTime) -> RunRecord {
        RunRecord {
            started_at: at,
            finished_at: at,
            trigger: None,
            success: true,
            key: Some("k".into()),
            size_bytes: None,
            uncompressed_size_bytes: None,
            duration_seconds: 60.0,
            error: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn catch_up_runs_at_once_only_when_the_bucket_is_stale() {
        let mut catch_up = (*config("0 2 * * *", "")).clone();
        catch_up.postgresql.as_mut().unwrap().catch_up = true;
        let catch_up = Arc::new(catch_up);
        let two_days_ago = datetime!(2026-11-21 02:01:00 UTC);
        let an_hour_ago = datetime!(2026-11-23 01:00:00 UTC);
        // Stale, catch_up off: nothing before 02:00. (The clock starts at 01:59.)
        let h = start_with(
            config("0 2 * * *", ""),
            Duration::from_secs(1),
            0,
            Some(finished(two_days_ago)),
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(started(&h).is_empty());
        h.stop.cancel();
        // Fresh, catch_up on: nothing either.
        let h = start_with(
            Arc::clone(&catch_up),
            Duration::from_secs(1),
            0,
            Some(finished(an_hour_ago)),
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(started(&h).is_empty());
        h.stop.cancel();
        // Stale (or no backup at all), catch_up on: at once.
        for newest in [Some(finished(two_days_ago)), None] {
            let h = start_with(Arc::clone(&catch_up), Duration::from_secs(1), 0, newest);
            tokio::time::sleep(Duration::from_secs(30)).await;
            assert_eq!(started(&h).len(), 1);
            let doc = h.state.status(datetime!(2026-11-23 02:00:00 UTC));
            let last = doc.engines[&Engine::Postgresql]
                .last_attempt
                .clone()
                .unwrap();
            assert_eq!(last.trigger, Some(Trigger::CatchUp));
            h.stop.cancel();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_manual_trigger_runs_now() {
        let h = start("0 2 * * *", "", Duration::from_secs(1), 0, None);
        h.triggers.send(Trigger::Manual).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(started(&h), [datetime!(2026-11-23 01:59:00 UTC)]);
        h.stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_schedule_takes_effect_without_a_restart() {
        let h = start("0 2 * * *", "", Duration::from_secs(1), 0, None);
        tokio::time::sleep(Duration::from_secs(30)).await;
        h.config.send(config("*/5 * * * * *", "")).unwrap();
        tokio::time::sleep(Duration::from_secs(20)).await;
        let t = started(&h);
        assert!(t.len() >= 3, "{t:?}");
        assert!(t[0] < datetime!(2026-11-23 02:00:00 UTC), "{t:?}");
        h.stop.cancel();
    }
}
