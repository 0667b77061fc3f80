//! Prometheus metrics: a registry owned by the agent (not a global), units in the names, few
//! labels (`engine`, `result`, `dependency`).
//!
//! Operators alert on `strongroom_backup_last_success_timestamp_seconds`; duration, size,
//! failures, skips, the in-progress gauge, uploaded bytes, config reloads, dependency state and
//! build info complete the picture. Values that live in [`AgentState`] are copied in at scrape
//! time ([`Metrics::render`]), so the registry never disagrees with `/status`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::layout::Engine;
use crate::state::{AgentState, RunRecord};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineLabel {
    engine: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    engine: String,
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkipLabels {
    engine: String,
    /// `running` (the previous run was still going) or `standby`.
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabel {
    dependency: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    last_success: Family<EngineLabel, FloatGauge>,
    last_failure: Family<EngineLabel, FloatGauge>,
    duration: Family<EngineLabel, FloatGauge>,
    size: Family<EngineLabel, Gauge>,
    runs: Family<RunLabels, Counter>,
    skipped: Family<SkipLabels, Counter>,
    in_progress: Family<EngineLabel, Gauge>,
    consecutive_failures: Family<EngineLabel, Gauge>,
    uploaded: Family<EngineLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    dependency_up: Family<DependencyLabel, Gauge>,
    ready: Gauge,
    drill_last_success: Family<EngineLabel, FloatGauge>,
    drill_last_rto: Family<EngineLabel, FloatGauge>,
    drill_goal: Family<EngineLabel, FloatGauge>,
    drill_runs: Family<RunLabels, Counter>,
    drill_skipped: Family<EngineLabel, Counter>,
}

fn engine(e: Engine) -> EngineLabel {
    EngineLabel {
        engine: e.as_str().into(),
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("strongroom");
        let m = Metrics {
            last_success: Family::default(),
            last_failure: Family::default(),
            duration: Family::default(),
            size: Family::default(),
            runs: Family::default(),
            skipped: Family::default(),
            in_progress: Family::default(),
            consecutive_failures: Family::default(),
            uploaded: Family::default(),
            reloads: Family::default(),
            dependency_up: Family::default(),
            ready: Gauge::default(),
            drill_last_success: Family::default(),
            drill_last_rto: Family::default(),
            drill_goal: Family::default(),
            drill_runs: Family::default(),
            drill_skipped: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "backup_last_success_timestamp_seconds",
            "Unix time the last successful backup finished (alert on its age)",
            m.last_success.clone(),
        );
        registry.register(
            "backup_last_failure_timestamp_seconds",
            "Unix time the last failed backup finished",
            m.last_failure.clone(),
        );
        registry.register(
            "backup_duration_seconds",
            "Duration of the last backup, successful or not",
            m.duration.clone(),
        );
        registry.register(
            "backup_size_bytes",
            "Compressed size of the last successful backup",
            m.size.clone(),
        );
        registry.register(
            "backup_runs",
            "Finished backup runs by result",
            m.runs.clone(),
        );
        registry.register(
            "backup_skipped",
            "Runs skipped: reason running (the previous one was still going) or standby (the \
             server is a standby and postgresql.backup_from is primary)",
            m.skipped.clone(),
        );
        registry.register(
            "backup_in_progress",
            "1 while a backup of the engine runs",
            m.in_progress.clone(),
        );
        registry.register(
            "backup_consecutive_failures",
            "Failed runs since the last success",
            m.consecutive_failures.clone(),
        );
        registry.register(
            "backup_bytes_uploaded",
            "Compressed bytes accepted by S3",
            m.uploaded.clone(),
        );
        registry.register(
            "config_reloads",
            "Config file reloads by result (failure: the old config kept running)",
            m.reloads.clone(),
        );
        registry.register(
            "dependency_up",
            "1 if the last readiness check of the dependency passed",
            m.dependency_up.clone(),
        );
        registry.register("ready", "1 if /readyz answers 200", m.ready.clone());
        registry.register(
            "drill_last_success_timestamp_seconds",
            "Unix time the last passing restore drill ended (alert on its age)",
            m.drill_last_success.clone(),
        );
        registry.register(
            "drill_last_rto_seconds",
            "RTO measured by the last restore drill (incident start to healthy)",
            m.drill_last_rto.clone(),
        );
        registry.register(
            "drill_rto_goal_seconds",
            "The RTO goal drills are measured against (drill.rto_goal_seconds)",
            m.drill_goal.clone(),
        );
        registry.register(
            "drill_runs",
            "Finished restore drills by result: pass, fail (a check or the goal), error (it \
             could not run)",
            m.drill_runs.clone(),
        );
        registry.register(
            "drill_skipped",
            "Scheduled drills skipped because a backup of the engine was running",
            m.drill_skipped.clone(),
        );
        registry.register(
            "build",
            "Agent build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Metrics { registry, ..m }
    }

    /// Records a finished run.
    pub fn record_run(&self, e: Engine, run: &RunRecord) {
        let label = engine(e);
        let finished = run.finished_at.unix_timestamp_nanos() as f64 / 1e9;
        self.duration
            .get_or_create(&label)
            .set(run.duration_seconds);
        if run.success {
            self.last_success.get_or_create(&label).set(finished);
            if let Some(size) = run.size_bytes {
                self.size.get_or_create(&label).set(size as i64);
            }
        } else {
            self.last_failure.get_or_create(&label).set(finished);
        }
        self.runs
            .get_or_create(&RunLabels {
                engine: label.engine,
                result: if run.success { "success" } else { "failure" }.into(),
            })
            .inc();
    }

    /// Seeds the last-success gauges from the bucket at start, so a restarted pod does not
    /// look like it never backed up.
    pub fn seed_last_success(&self, e: Engine, run: &RunRecord) {
        let label = engine(e);
        let gauge = self.last_success.get_or_create(&label);
        if gauge.get() == 0.0 {
            gauge.set(run.finished_at.unix_timestamp() as f64);
            if let Some(size) = run.size_bytes {
                self.size.get_or_create(&label).set(size as i64);
            }
        }
    }

    /// Drills of `e` are scheduled against `goal` seconds: the goal is exported, and every
    /// result starts at 0 so the first failure is an increase.
    pub fn drill_goal(&self, e: Engine, goal: f64) {
        self.drill_goal.get_or_create(&engine(e)).set(goal);
        for result in ["pass", "fail", "error"] {
            drop(self.drill_runs.get_or_create(&RunLabels {
                engine: e.as_str().into(),
                result: result.into(),
            }));
        }
    }

    /// A finished drill: `result` is pass, fail or error; `rto` when measured.
    pub fn record_drill(
        &self,
        e: Engine,
        result: &str,
        rto: Option<f64>,
        finished_at: time::OffsetDateTime,
    ) {
        let label = engine(e);
        if let Some(rto) = rto {
            self.drill_last_rto.get_or_create(&label).set(rto);
        }
        if result == "pass" {
            self.drill_last_success
                .get_or_create(&label)
                .set(finished_at.unix_timestamp_nanos() as f64 / 1e9);
        }
        self.drill_runs
            .get_or_create(&RunLabels {
                engine: label.engine,
                result: result.into(),
            })
            .inc();
    }

    pub fn drill_skipped(&self, e: Engine) {
        self.drill_skipped.get_or_create(&engine(e)).inc();
    }

    /// A run skipped for `reason` (`running` or `standby`).
    pub fn skipped(&self, e: Engine, reason: &str) {
        self.skipped
            .get_or_create(&SkipLabels {
                engine: e.as_str().into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    pub fn dependency(&self, name: &str, up: bool) {
        self.dependency_up
            .get_or_create(&DependencyLabel {
                dependency: name.into(),
            })
            .set(i64::from(up));
    }

    /// The OpenMetrics text, with the live values copied in from `state`.
    pub fn render(&self, state: &AgentState, engines: &[Engine]) -> String {
        for &e in engines {
            let label = engine(e);
            self.in_progress
                .get_or_create(&label)
                .set(i64::from(state.is_running(e)));
            self.consecutive_failures
                .get_or_create(&label)
                .set(i64::from(state.consecutive_failures(e)));
            let counter = self.uploaded.get_or_create(&label);
            let total = state.uploaded_bytes(e);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        self.ready.set(i64::from(state.readiness().0));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Progress;
    use crate::state::Trigger;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use time::macros::datetime;

    #[test]
    fn families_are_named_with_units_and_track_state() {
        let state = AgentState::new("d".into(), true, datetime!(2026-11-23 00:00:00 UTC));
        let metrics = Metrics::new();
        let progress = Arc::new(Progress::default());
        state.try_start(
            Engine::Postgresql,
            Trigger::Schedule,
            progress.clone(),
            datetime!(2026-11-23 02:00:00 UTC),
        );
        progress.bytes_uploaded.store(4096, Ordering::Relaxed);
        let text = metrics.render(&state, &[Engine::Postgresql]);
        assert!(
            text.contains("strongroom_backup_in_progress{engine=\"postgresql\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("strongroom_backup_bytes_uploaded_total{engine=\"postgresql\"} 4096"),
            "{text}"
        );
        assert!(text.contains("strongroom_build_info{version=\""), "{text}");
        let run = RunRecord {
            started_at: datetime!(2026-11-23 02:00:00 UTC),
            finished_at: datetime!(2026-11-23 02:00:30 UTC),
            trigger: Some(Trigger::Schedule),
            success: true,
            key: None,
            size_bytes: Some(123),
            uncompressed_size_bytes: None,
            duration_seconds: 30.0,
            error: None,
        };
        state.finish(Engine::Postgresql, run.clone());
        metrics.record_run(Engine::Postgresql, &run);
        metrics.reload(false);
        let text = metrics.render(&state, &[Engine::Postgresql]);
        assert!(
            text.contains("strongroom_backup_in_progress{engine=\"postgresql\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "strongroom_backup_last_success_timestamp_seconds{engine=\"postgresql\"} 1795399230"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "strongroom_backup_runs_total{engine=\"postgresql\",result=\"success\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("strongroom_backup_size_bytes{engine=\"postgresql\"} 123"),
            "{text}"
        );
        assert!(
            text.contains("strongroom_config_reloads_total{result=\"failure\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("strongroom_backup_bytes_uploaded_total{engine=\"postgresql\"} 4096"),
            "{text}"
        );
    }
}
