//! What the running agent knows about itself: per engine the last attempt and success, the next
//! run, the run in progress with its live counters; the readiness checks' latest results.
//!
//! Shared by the scheduler (writes runs), the readiness loop (writes checks) and the HTTP
//! endpoints (read snapshots). One mutex, held only to copy small values: a status request
//! never waits on I/O. [`StatusDoc`] is the `/status` JSON, also read by `strongroom status`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::layout::Engine;
use crate::pipeline::Progress;

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    Retry,
    CatchUp,
    Manual,
}

/// One finished run (or, seeded from the bucket at start, the newest complete backup).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    pub trigger: Option<Trigger>,
    pub success: bool,
    pub key: Option<String>,
    pub size_bytes: Option<u64>,
    pub uncompressed_size_bytes: Option<u64>,
    pub duration_seconds: f64,
    pub error: Option<String>,
}

/// The latest result of one readiness check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub checked_at: Option<OffsetDateTime>,
}

impl Check {
    fn pending() -> Check {
        Check {
            ok: false,
            detail: "not checked yet".into(),
            checked_at: None,
        }
    }
}

struct Running {
    started_at: OffsetDateTime,
    trigger: Trigger,
    progress: Arc<Progress>,
}

#[derive(Default)]
struct EngineStatus {
    schedule: Option<String>,
    next_run: Option<OffsetDateTime>,
    last_attempt: Option<RunRecord>,
    last_success: Option<RunRecord>,
    consecutive_failures: u32,
    skipped_while_running: u64,
    last_skip: Option<SkipRecord>,
    uploaded_bytes_finished: u64,
    running: Option<Running>,
}

/// A run that was skipped on purpose (a standby): when, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkipRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub reason: String,
}

/// One engine's scheduled drills, as `/status` shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DrillDoc {
    pub schedule: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_run: Option<OffsetDateTime>,
    pub running: bool,
    /// The last drill this agent ran (PASS or FAIL, with RTO, RPO and its report's key).
    pub last: Option<crate::drill::DrillSummary>,
    /// The last drill that passed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_success_at: Option<OffsetDateTime>,
    /// Why the last scheduled drill could not run at all.
    pub last_error: Option<String>,
    /// The last drill skipped because a backup of the engine was running.
    pub last_skip: Option<SkipRecord>,
}

struct Inner {
    config_digest: String,
    ready_requires_s3: bool,
    engines: BTreeMap<Engine, EngineStatus>,
    drills: BTreeMap<Engine, DrillDoc>,
    database: Check,
    clickhouse: Check,
    s3: Check,
    restore_in_progress: bool,
    clickhouse_restore_in_progress: bool,
}

/// The agent's shared state.
pub struct AgentState {
    started_at: OffsetDateTime,
    inner: Mutex<Inner>,
}

/// Live progress of a run, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressDoc {
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub trigger: Trigger,
    pub elapsed_seconds: f64,
    pub bytes_read: u64,
    pub bytes_uploaded: u64,
    pub rate_bytes_per_second: f64,
    /// The previous backup's uncompressed size: the best estimate of this one's.
    pub estimated_total_bytes: Option<u64>,
    pub eta_seconds: Option<f64>,
}

/// One engine in `/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineDoc {
    pub schedule: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_run: Option<OffsetDateTime>,
    /// `idle` or `running`.
    pub state: String,
    pub consecutive_failures: u32,
    /// Scheduled runs that found the previous one still going.
    pub skipped_while_running: u64,
    /// The last run skipped on purpose (the server is a standby), with the reason.
    #[serde(default)]
    pub last_skip: Option<SkipRecord>,
    pub last_attempt: Option<RunRecord>,
    pub last_success: Option<RunRecord>,
    pub running: Option<ProgressDoc>,
}

/// The `/status` document. No secrets: keys, sizes, times, check results and the config's
/// digest, never the config itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    pub version: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub config_digest: String,
    pub ready: bool,
    /// What the agent is waiting for, in words (empty when ready).
    pub waiting_for: Vec<String>,
    /// PostgreSQL.
    pub database: Check,
    /// ClickHouse (ok, saying so, when none is configured).
    pub clickhouse: Check,
    pub s3: Check,
    pub restore_in_progress: bool,
    pub engines: BTreeMap<Engine, EngineDoc>,
    /// Scheduled restore drills (`drill.enabled`), per engine.
    #[serde(default)]
    pub drills: BTreeMap<Engine, DrillDoc>,
}

impl AgentState {
    pub fn new(config_digest: String, ready_requires_s3: bool, started_at: OffsetDateTime) -> Self {
        AgentState {
            started_at,
            inner: Mutex::new(Inner {
                config_digest,
                ready_requires_s3,
                engines: BTreeMap::new(),
                drills: BTreeMap::new(),
                database: Check::pending(),
                clickhouse: Check::pending(),
                s3: Check::pending(),
                restore_in_progress: false,
                clickhouse_restore_in_progress: false,
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set_config(&self, digest: String, ready_requires_s3: bool) {
        self.with(|i| {
            i.config_digest = digest;
            i.ready_requires_s3 = ready_requires_s3;
        });
    }

    pub fn set_schedule(
        &self,
        engine: Engine,
        schedule: Option<String>,
        next_run: Option<OffsetDateTime>,
    ) {
        self.with(|i| {
            let e = i.engines.entry(engine).or_default();
            e.schedule = schedule;
            e.next_run = next_run;
        });
    }

    /// Marks a run as started, unless one is already going (then counts the skip).
    pub fn try_start(
        &self,
        engine: Engine,
        trigger: Trigger,
        progress: Arc<Progress>,
        now: OffsetDateTime,
    ) -> bool {
        self.with(|i| {
            let e = i.engines.entry(engine).or_default();
            if e.running.is_some() {
                e.skipped_while_running += 1;
                return false;
            }
            e.running = Some(Running {
                started_at: now,
                trigger,
                progress,
            });
            true
        })
    }

    /// Records a finished run.
    pub fn finish(&self, engine: Engine, record: RunRecord) {
        self.with(|i| {
            let e = i.engines.entry(engine).or_default();
            if let Some(running) = e.running.take() {
                e.uploaded_bytes_finished +=
                    running.progress.bytes_uploaded.load(Ordering::Relaxed);
            }
            if record.success {
                e.consecutive_failures = 0;
                e.last_success = Some(record.clone());
            } else {
                e.consecutive_failures += 1;
            }
            e.last_attempt = Some(record);
        });
    }

    /// Records a run that did nothing on purpose; failures and successes are not touched.
    pub fn skip(&self, engine: Engine, reason: String, at: OffsetDateTime) {
        self.with(|i| {
            let e = i.engines.entry(engine).or_default();
            e.running = None;
            e.last_skip = Some(SkipRecord { at, reason });
        });
    }

    /// Seeds the last success from the bucket (at start), unless a run already set it.
    pub fn seed_last_success(&self, engine: Engine, record: RunRecord) {
        self.with(|i| {
            let e = i.engines.entry(engine).or_default();
            if e.last_success.is_none() {
                e.last_success = Some(record);
            }
        });
    }

    /// Updates one engine's drill entry (`None` schedule: drills are off for it).
    pub fn update_drill(&self, engine: Engine, f: impl FnOnce(&mut DrillDoc)) {
        self.with(|i| f(i.drills.entry(engine).or_default()));
    }

    /// Stops showing drills for `engine` (they were turned off).
    pub fn clear_drill(&self, engine: Engine) {
        self.with(|i| i.drills.remove(&engine));
    }

    pub fn is_running(&self, engine: Engine) -> bool {
        self.with(|i| i.engines.get(&engine).is_some_and(|e| e.running.is_some()))
    }

    pub fn consecutive_failures(&self, engine: Engine) -> u32 {
        self.with(|i| i.engines.get(&engine).map_or(0, |e| e.consecutive_failures))
    }

    pub fn set_database(&self, check: Check, restore_in_progress: bool) {
        self.with(|i| {
            i.database = check;
            i.restore_in_progress = restore_in_progress;
        });
    }

    pub fn set_clickhouse(&self, check: Check, restore_in_progress: bool) {
        self.with(|i| {
            i.clickhouse = check;
            i.clickhouse_restore_in_progress = restore_in_progress;
        });
    }

    pub fn set_s3(&self, check: Check) {
        self.with(|i| i.s3 = check);
    }

    /// Bytes uploaded by finished runs plus the running one (monotonic).
    pub fn uploaded_bytes(&self, engine: Engine) -> u64 {
        self.with(|i| {
            i.engines.get(&engine).map_or(0, |e| {
                e.uploaded_bytes_finished
                    + e.running
                        .as_ref()
                        .map_or(0, |r| r.progress.bytes_uploaded.load(Ordering::Relaxed))
            })
        })
    }

    /// Whether the container can do its job, and if not, what it waits for. Never depends on
    /// backup age: a stale backup must not take the database out of service.
    pub fn readiness(&self) -> (bool, Vec<String>) {
        self.with(|i| {
            let mut waiting = Vec::new();
            if !i.database.ok {
                waiting.push(format!("database: {}", i.database.detail));
            }
            if i.ready_requires_s3 && !i.s3.ok {
                waiting.push(format!("s3: {}", i.s3.detail));
            }
            if !i.clickhouse.ok {
                waiting.push(format!("clickhouse: {}", i.clickhouse.detail));
            }
            if i.restore_in_progress {
                waiting.push("a restore into this database is in progress".into());
            }
            if i.clickhouse_restore_in_progress {
                waiting.push("a ClickHouse RESTORE is in progress on this server".into());
            }
            (waiting.is_empty(), waiting)
        })
    }

    /// The `/status` document at `now`.
    pub fn status(&self, now: OffsetDateTime) -> StatusDoc {
        let (ready, waiting_for) = self.readiness();
        self.with(|i| StatusDoc {
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: self.started_at,
            config_digest: i.config_digest.clone(),
            ready,
            waiting_for,
            database: i.database.clone(),
            clickhouse: i.clickhouse.clone(),
            s3: i.s3.clone(),
            restore_in_progress: i.restore_in_progress || i.clickhouse_restore_in_progress,
            engines: i
                .engines
                .iter()
                .map(|(engine, e)| (*engine, engine_doc(e, now)))
                .collect(),
            drills: i.drills.clone(),
        })
    }
}

fn engine_doc(e: &EngineStatus, now: OffsetDateTime) -> EngineDoc {
    let running = e.running.as_ref().map(|r| {
        let elapsed = (now - r.started_at).as_seconds_f64().max(0.0);
        let bytes_read = r.progress.bytes_read.load(Ordering::Relaxed);
        let rate = if elapsed > 0.0 {
            bytes_read as f64 / elapsed
        } else {
            0.0
        };
        let estimated_total_bytes = e
            .last_success
            .as_ref()
            .and_then(|s| s.uncompressed_size_bytes);
        ProgressDoc {
            started_at: r.started_at,
            trigger: r.trigger,
            elapsed_seconds: elapsed,
            bytes_read,
            bytes_uploaded: r.progress.bytes_uploaded.load(Ordering::Relaxed),
            rate_bytes_per_second: rate,
            estimated_total_bytes,
            eta_seconds: estimated_total_bytes
                .filter(|_| rate > 0.0)
                .map(|total| (total.saturating_sub(bytes_read)) as f64 / rate),
        }
    });
    EngineDoc {
        schedule: e.schedule.clone(),
        next_run: e.next_run,
        state: if running.is_some() { "running" } else { "idle" }.into(),
        consecutive_failures: e.consecutive_failures,
        skipped_while_running: e.skipped_while_running,
        last_skip: e.last_skip.clone(),
        last_attempt: e.last_attempt.clone(),
        last_success: e.last_success.clone(),
        running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn record(success: bool) -> RunRecord {
        RunRecord {
            started_at: datetime!(2026-11-23 02:00:00 UTC),
            finished_at: datetime!(2026-11-23 02:01:00 UTC),
            trigger: Some(Trigger::Schedule),
            success,
            key: Some("k".into()),
            size_bytes: Some(10),
            uncompressed_size_bytes: Some(1000),
            duration_seconds: 60.0,
            error: (!success).then(|| "boom".into()),
        }
    }

    #[test]
    fn one_run_at_a_time_and_skips_are_counted() {
        let state = AgentState::new("d".into(), true, datetime!(2026-11-23 00:00:00 UTC));
        let now = datetime!(2026-11-23 02:00:00 UTC);
        let progress = Arc::new(Progress::default());
        assert!(state.try_start(Engine::Postgresql, Trigger::Schedule, progress.clone(), now));
        assert!(!state.try_start(Engine::Postgresql, Trigger::Manual, progress.clone(), now));
        progress.bytes_read.store(500, Ordering::Relaxed);
        progress.bytes_uploaded.store(50, Ordering::Relaxed);
        state.seed_last_success(Engine::Postgresql, record(true));
        let doc = state.status(now + time::Duration::seconds(5));
        let pg = &doc.engines[&Engine::Postgresql];
        assert_eq!(pg.state, "running");
        assert_eq!(pg.skipped_while_running, 1);
        let running = pg.running.as_ref().unwrap();
        assert_eq!(running.rate_bytes_per_second, 100.0);
        assert_eq!(running.eta_seconds, Some(5.0));
        assert_eq!(state.uploaded_bytes(Engine::Postgresql), 50);
        state.finish(Engine::Postgresql, record(false));
        state.finish(Engine::Postgresql, record(false));
        assert_eq!(state.consecutive_failures(Engine::Postgresql), 2);
        assert_eq!(state.uploaded_bytes(Engine::Postgresql), 50);
        state.finish(Engine::Postgresql, record(true));
        assert_eq!(state.consecutive_failures(Engine::Postgresql), 0);
    }

    #[test]
    fn readiness_names_what_it_waits_for_and_never_backup_age() {
        let state = AgentState::new("d".into(), true, datetime!(2026-11-23 00:00:00 UTC));
        let (ready, waiting) = state.readiness();
        assert!(!ready);
        assert_eq!(waiting.len(), 3, "{waiting:?}");
        let ok = |detail: &str| Check {
            ok: true,
            detail: detail.into(),
            checked_at: None,
        };
        state.set_database(ok("answers"), false);
        state.set_clickhouse(ok("not configured"), false);
        state.set_s3(ok("reachable"));
        // Ready although the last backup failed and is ancient.
        state.finish(Engine::Postgresql, record(false));
        assert!(state.readiness().0);
        state.set_database(ok("answers"), true);
        let (ready, waiting) = state.readiness();
        assert!(!ready && waiting[0].contains("restore"), "{waiting:?}");
        state.set_database(ok("answers"), false);
        state.set_clickhouse(ok("answers"), true);
        let (ready, waiting) = state.readiness();
        assert!(
            !ready && waiting[0].contains("ClickHouse RESTORE"),
            "{waiting:?}"
        );
        state.set_clickhouse(ok("answers"), false);
        state.set_s3(Check {
            ok: false,
            detail: "connection refused".into(),
            checked_at: None,
        });
        assert!(!state.readiness().0);
        state.set_config("d2".into(), false);
        assert!(state.readiness().0, "ready_requires_s3: false ignores S3");
    }
}
