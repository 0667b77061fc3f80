//! The drill report: phases with their times, RTO, RPO, throughput, the goal with PASS/FAIL,
//! and the projection to a production size. A format with no I/O; [`super`] fills it in,
//! prints it and stores it.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::layout::Engine;
use crate::restore::RestoreReport;

/// Where the drill restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Into a new scratch database, dropped afterwards; the source is never touched.
    Scratch,
    /// The live database renamed aside, the backup restored under its name.
    Replace,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Scratch => "scratch",
            Mode::Replace => "replace",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Restored, every check passed, and the RTO met the goal.
    Pass,
    /// Anything else: the report says which.
    Fail,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
        })
    }
}

/// One phase of the drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    pub seconds: f64,
}

impl Phase {
    pub fn new(name: &str, started_at: OffsetDateTime, finished_at: OffsetDateTime) -> Phase {
        Phase {
            name: name.to_owned(),
            started_at,
            finished_at,
            seconds: (finished_at - started_at).as_seconds_f64().max(0.0),
        }
    }
}

/// The RTO a production-sized backup implies, measured here on a smaller one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    /// Always "projection": nothing of this was measured at that size.
    pub label: String,
    /// The production backup's size as stored in the bucket (what `strongroom list` shows).
    pub production_size_gib: f64,
    pub projected_rto_seconds: f64,
    pub projected_verdict: Verdict,
    /// How it was computed.
    pub model: String,
    /// Why the projection may be far off, when it may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caveat: Option<String>,
}

/// Below this, the fixed costs (psql's start, the target's checks) dominate the load phase
/// and the measured throughput says little about a large restore.
const MEANINGFUL_SIZE: u64 = 256 << 20;

/// What a drill measured and found. Stored under `<prefix>/drills/<engine>/<release>/`.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub format_version: u32,
    pub engine: Engine,
    pub release: String,
    pub mode: Mode,
    /// The scratch database(s), or the live database in replace mode.
    pub target: String,
    /// The restored backup's key, once chosen.
    pub snapshot: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub snapshot_time: Option<OffsetDateTime>,
    /// t0: the simulated incident starts when the drill starts.
    #[serde(with = "time::serde::rfc3339")]
    pub incident_start: OffsetDateTime,
    /// When the smoke checks answered healthy (absent when they never did).
    #[serde(with = "time::serde::rfc3339::option")]
    pub healthy_at: Option<OffsetDateTime>,
    pub phases: Vec<Phase>,
    /// healthy_at - incident_start.
    pub rto_seconds: Option<f64>,
    /// incident_start - snapshot_time: the data a real incident at t0 would lose.
    pub rpo_seconds: Option<f64>,
    pub rto_goal_seconds: f64,
    pub verdict: Verdict,
    /// Why the drill failed, when it did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    /// The backup as stored, and uncompressed.
    pub size_bytes: Option<u64>,
    pub uncompressed_size_bytes: Option<u64>,
    /// Stored bytes per second through download, verify and load (MB = 10^6 bytes).
    pub throughput_mb_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projection: Option<Projection>,
    /// What happened to the scratch target or the renamed-aside original.
    pub cleanup: Vec<String>,
    /// The restore's own report: checks, signature, hashes.
    pub restore: Option<RestoreReport>,
    pub agent_version: String,
    pub report_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_error: Option<String>,
    /// The stored report's SHA-256 (recorded in the audit chain; not part of the report).
    #[serde(skip)]
    pub report_sha256: Option<String>,
}

/// What `drill list` reads back from a stored report (any report this agent wrote parses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillSummary {
    pub engine: Engine,
    pub release: String,
    pub mode: Mode,
    pub target: String,
    pub snapshot: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub incident_start: OffsetDateTime,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
    pub rto_goal_seconds: f64,
    pub verdict: Verdict,
    #[serde(default)]
    pub failures: Vec<String>,
    #[serde(default)]
    pub projection: Option<Projection>,
    #[serde(default)]
    pub report_key: Option<String>,
}

impl DrillReport {
    /// The summary `/status`, the metrics and `drill list` use.
    pub fn summary(&self) -> DrillSummary {
        DrillSummary {
            engine: self.engine,
            release: self.release.clone(),
            mode: self.mode,
            target: self.target.clone(),
            snapshot: self.snapshot.clone(),
            incident_start: self.incident_start,
            rto_seconds: self.rto_seconds,
            rpo_seconds: self.rpo_seconds,
            rto_goal_seconds: self.rto_goal_seconds,
            verdict: self.verdict,
            failures: self.failures.clone(),
            projection: self.projection.clone(),
            report_key: self.report_key.clone(),
        }
    }

    /// Phases, sizes and health from the restore's own report.
    pub fn record_restore(&mut self, r: &RestoreReport) {
        let p = &r.phases;
        let after = |t: OffsetDateTime, s: f64| t + time::Duration::seconds_f64(s);
        let loaded = after(r.started_at, p.load_seconds);
        // A parallel restore counts its staging copy's rows and analyzes it at the same time,
        // then swaps it in and runs the SQL checks (the rest of its validation).
        let counting = p.row_count_seconds.unwrap_or(0.0);
        let counted = after(loaded, counting);
        let analyzed = after(loaded, p.analyze_seconds.unwrap_or(0.0));
        let checked = counted.max(analyzed);
        let validated = after(checked, (p.validation_seconds - counting).max(0.0));
        let healthy = after(validated, p.smoke_seconds);
        self.phases
            .push(Phase::new(LOAD_PHASE, r.started_at, loaded));
        if p.row_count_seconds.is_some() {
            self.phases
                .push(Phase::new(ROW_COUNT_PHASE, loaded, counted));
        }
        if p.analyze_seconds.is_some() {
            self.phases.push(Phase::new("analyze", loaded, analyzed));
        }
        self.phases
            .push(Phase::new("validation", checked, validated));
        self.phases
            .push(Phase::new("smoke checks healthy", validated, healthy));
        self.size_bytes = Some(r.size_bytes);
        self.uncompressed_size_bytes = Some(r.uncompressed_size_bytes);
        if r.passed {
            self.healthy_at = Some(healthy);
        } else {
            self.failures
                .push(format!("checks failed: {}", r.failed_checks().join(", ")));
        }
    }

    /// Sets RTO, RPO, throughput, the verdict and the projection from what was recorded.
    pub fn conclude(&mut self, production_size_gib: Option<f64>) {
        self.rto_seconds = self
            .healthy_at
            .map(|h| (h - self.incident_start).as_seconds_f64());
        self.rpo_seconds = self
            .snapshot_time
            .map(|s| (self.incident_start - s).as_seconds_f64());
        let load = self
            .phases
            .iter()
            .find(|p| p.name == LOAD_PHASE)
            .map(|p| p.seconds);
        self.throughput_mb_per_second = match (self.size_bytes, load) {
            (Some(size), Some(seconds)) if seconds > 0.0 => Some(size as f64 / 1e6 / seconds),
            _ => None,
        };
        match self.rto_seconds {
            Some(rto) if rto > self.rto_goal_seconds => self.failures.push(format!(
                "RTO {} is over the goal of {} (drill.rto_goal_seconds)",
                seconds(rto),
                seconds(self.rto_goal_seconds)
            )),
            Some(_) => {}
            None if self.failures.is_empty() => self
                .failures
                .push("the restore never answered healthy".into()),
            None => {}
        }
        self.verdict = if self.failures.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        // What grows with the backup's size: the load, and the row counts of a restored copy
        // (a read of every table).
        let counting: f64 = (self.phases.iter())
            .filter(|p| p.name == ROW_COUNT_PHASE)
            .map(|p| p.seconds)
            .sum();
        self.projection = match (production_size_gib, self.rto_seconds, load, self.size_bytes) {
            (Some(gib), Some(rto), Some(load), Some(size)) if size > 0 => {
                let production = gib * (1u64 << 30) as f64;
                let scaled = load + counting;
                let projected = rto - scaled + scaled * production / size as f64;
                Some(Projection {
                    label: "projection".into(),
                    production_size_gib: gib,
                    projected_rto_seconds: projected,
                    projected_verdict: if projected <= self.rto_goal_seconds {
                        Verdict::Pass
                    } else {
                        Verdict::Fail
                    },
                    model: format!(
                        "RTO - scaled + scaled x (production size / this backup's {size} \
                         bytes), scaled = load + row counts: download, verify and load (at the \
                         measured {:.1} MB/s) and the row counts of the restored copy (a read \
                         of every table) scale with the backup's size; the other phases are \
                         taken as fixed",
                        size as f64 / 1e6 / load.max(f64::MIN_POSITIVE)
                    ),
                    caveat: (size < MEANINGFUL_SIZE).then(|| {
                        format!(
                            "this backup is {}: fixed costs dominate its load time, so the \
                             projection overstates the RTO; drill a staging copy of at least \
                             256 MiB for a useful one",
                            crate::list::human_size(size)
                        )
                    }),
                })
            }
            _ => None,
        };
    }

    /// The readable summary printed on stdout.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} drill of {} ({}): {}\n",
            self.mode.as_str(),
            self.engine,
            self.release,
            self.verdict
        );
        let line = |k: &str, v: String| format!("  {k:<22} {v}\n");
        out += &line(
            "snapshot",
            self.snapshot
                .clone()
                .unwrap_or_else(|| "(none chosen)".into()),
        );
        out += &line("target", self.target.clone());
        out += &line(
            "RTO",
            format!(
                "{} (goal {})",
                self.rto_seconds.map_or("-".into(), seconds),
                seconds(self.rto_goal_seconds)
            ),
        );
        out += &line("RPO", self.rpo_seconds.map_or("-".into(), seconds));
        if let Some(t) = self.throughput_mb_per_second {
            out += &line("throughput", format!("{t:.1} MB/s (as stored)"));
        }
        for p in &self.phases {
            out += &line(
                &p.name,
                format!(
                    "{} .. {} ({})",
                    clock(p.started_at),
                    clock(p.finished_at),
                    seconds(p.seconds)
                ),
            );
        }
        if let Some(p) = &self.projection {
            out += &line(
                "projection",
                format!(
                    "{} for {} GiB: {} (PROJECTED, not measured)",
                    seconds(p.projected_rto_seconds),
                    p.production_size_gib,
                    p.projected_verdict
                ),
            );
            if let Some(c) = &p.caveat {
                out += &line("", c.clone());
            }
        }
        for f in &self.failures {
            out += &line("failure", f.clone());
        }
        for c in &self.cleanup {
            out += &line("cleanup", c.clone());
        }
        out += &line(
            "report",
            match (&self.report_key, &self.report_error) {
                (Some(k), _) => k.clone(),
                (None, Some(e)) => format!("NOT STORED: {e}"),
                (None, None) => "-".into(),
            },
        );
        out
    }
}

/// The name of the phase that downloads, verifies and loads (the throughput's).
const LOAD_PHASE: &str = "download+verify+load";

/// The name of the phase that counts a parallel restore's rows before its swap.
const ROW_COUNT_PHASE: &str = "row counts";

fn clock(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// `3ms`, `45.3s`, `12m 3s`, `2h 5m`, `3d 4h`.
pub fn seconds(s: f64) -> String {
    let whole = s.round() as i64;
    match s {
        s if s < 1.0 => format!("{:.0}ms", s * 1000.0),
        s if s < 60.0 => format!("{s:.1}s"),
        s if s < 3600.0 => format!("{}m {}s", whole / 60, whole % 60),
        s if s < 86400.0 => format!("{}h {}m", whole / 3600, whole % 3600 / 60),
        _ => format!("{}d {}h", whole / 86400, whole % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn report() -> DrillReport {
        let t0 = datetime!(2026-12-01 04:00:00 UTC);
        DrillReport {
            format_version: 1,
            engine: Engine::Postgresql,
            release: "prod".into(),
            mode: Mode::Scratch,
            target: "app_drill_x".into(),
            snapshot: Some("b/postgresql/prod/20261201T020000Z.sql.gz".into()),
            snapshot_time: Some(datetime!(2026-12-01 02:00:00 UTC)),
            incident_start: t0,
            healthy_at: Some(t0 + time::Duration::seconds(100)),
            phases: vec![Phase::new(
                LOAD_PHASE,
                t0 + time::Duration::seconds(10),
                t0 + time::Duration::seconds(90),
            )],
            rto_seconds: None,
            rpo_seconds: None,
            rto_goal_seconds: 1800.0,
            verdict: Verdict::Fail,
            failures: vec![],
            size_bytes: Some(800_000_000),
            uncompressed_size_bytes: Some(4_000_000_000),
            throughput_mb_per_second: None,
            projection: None,
            cleanup: vec![],
            restore: None,
            agent_version: "0".into(),
            report_key: None,
            report_error: None,
            report_sha256: None,
        }
    }

    #[test]
    fn rto_rpo_throughput_and_verdict() {
        let mut r = report();
        r.conclude(None);
        assert_eq!(r.rto_seconds, Some(100.0));
        assert_eq!(r.rpo_seconds, Some(7200.0));
        assert_eq!(r.throughput_mb_per_second, Some(10.0));
        assert_eq!(r.verdict, Verdict::Pass);
        assert!(r.projection.is_none());

        let mut r = report();
        r.rto_goal_seconds = 99.0;
        r.conclude(None);
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.failures[0].contains("over the goal"), "{:?}", r.failures);

        let mut r = report();
        r.healthy_at = None;
        r.conclude(None);
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.rto_seconds, None);
    }

    #[test]
    fn the_projection_scales_the_load_phase_and_says_it_is_one() {
        let mut r = report();
        // 800 MB here in 80 s; 8 GB (7.45 GiB) takes 800 s of load plus 20 s fixed.
        r.conclude(Some(8e9 / (1u64 << 30) as f64));
        let p = r.projection.clone().unwrap();
        assert_eq!(p.label, "projection");
        assert!((p.projected_rto_seconds - 820.0).abs() < 1e-6, "{p:?}");
        assert_eq!(p.projected_verdict, Verdict::Pass);
        assert!(r.render().contains("PROJECTED, not measured"));
        assert!(p.caveat.is_none(), "{p:?}");
        let mut r = report();
        r.conclude(Some(80e9 / (1u64 << 30) as f64));
        assert_eq!(r.projection.unwrap().projected_verdict, Verdict::Fail);
        // A small backup's throughput is mostly fixed cost: the projection says so.
        let mut r = report();
        r.size_bytes = Some(500_000);
        r.conclude(Some(1.0));
        assert!(r.projection.unwrap().caveat.unwrap().contains("overstates"));
    }

    #[test]
    fn the_projection_scales_the_row_counts_with_the_load() {
        // 80 s of load and 5 s counting the restored copy's rows, of a 100 s RTO: 10 times the
        // size reads 10 times the rows.
        let mut r = report();
        let t0 = r.incident_start;
        r.phases.push(Phase::new(
            ROW_COUNT_PHASE,
            t0 + time::Duration::seconds(90),
            t0 + time::Duration::seconds(95),
        ));
        r.conclude(Some(8e9 / (1u64 << 30) as f64));
        let p = r.projection.unwrap();
        assert!((p.projected_rto_seconds - 865.0).abs() < 1e-6, "{p:?}");
        assert!(p.model.contains("row counts"), "{}", p.model);
        // The throughput is still the load's alone.
        assert_eq!(r.throughput_mb_per_second, Some(10.0));
    }

    #[test]
    fn the_summary_reads_back_from_the_stored_json() {
        let mut r = report();
        r.conclude(None);
        let json = serde_json::to_vec(&r).unwrap();
        let back: DrillSummary = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.verdict, Verdict::Pass);
        assert_eq!(back.rto_seconds, Some(100.0));
        assert_eq!(back.snapshot, r.snapshot);
        assert_eq!(seconds(45.34), "45.3s");
        assert_eq!(seconds(723.0), "12m 3s");
        assert_eq!(seconds(0.001), "1ms");
    }
}
