//! The `drill:` section: when the sidecar runs restore drills, the RTO goal they are measured
//! against, whether replace drills are allowed, and the smoke checks of a scratch drill.

use serde::{Deserialize, Serialize};

use super::{HttpCheck, Invalid, invalid, restore::validate_http_checks};
use crate::layout::Engine;

/// The runbook's quarterly drill: 04:00 UTC on the first day of each quarter.
pub const DRILL_SCHEDULE: &str = "0 4 1 1,4,7,10 *";
/// The runbook's goals: RTO <= 30 minutes for PostgreSQL, <= 45 minutes for ClickHouse.
pub const POSTGRESQL_RTO_GOAL_SECONDS: f64 = 1800.0;
pub const CLICKHOUSE_RTO_GOAL_SECONDS: f64 = 2700.0;

fn drill_schedule() -> String {
    DRILL_SCHEDULE.into()
}

/// Restore drills (`strongroom drill`, and `strongroom run` when `enabled`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// The sidecar runs a scratch drill of each configured engine on `schedule`.
    #[serde(default)]
    pub enabled: bool,
    /// Cron, UTC; quarterly by default.
    #[serde(default = "drill_schedule")]
    pub schedule: String,
    /// The RTO goal, in seconds (fractions allowed); 1800 for PostgreSQL and 2700 for
    /// ClickHouse when absent.
    #[serde(default)]
    pub rto_goal_seconds: Option<f64>,
    /// Allow `strongroom drill --mode replace`, which renames the live database aside and
    /// restores under its name (staging only).
    #[serde(default)]
    pub allow_replace: bool,
    #[serde(default)]
    pub smoke: DrillSmoke,
}

impl Default for DrillConfig {
    fn default() -> Self {
        DrillConfig {
            enabled: false,
            schedule: drill_schedule(),
            rto_goal_seconds: None,
            allow_replace: false,
            smoke: DrillSmoke::default(),
        }
    }
}

impl DrillConfig {
    /// The goal `engine`'s drills are measured against.
    pub fn rto_goal_seconds(&self, engine: Engine) -> f64 {
        self.rto_goal_seconds.unwrap_or(match engine {
            Engine::Postgresql => POSTGRESQL_RTO_GOAL_SECONDS,
            Engine::Clickhouse => CLICKHOUSE_RTO_GOAL_SECONDS,
        })
    }
}

/// Smoke checks of a scratch drill. The application serves the live database, so a scratch
/// drill calls these instead of `restore.validation.http`; `{database}` in a URL or body is
/// replaced by the scratch database's name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillSmoke {
    #[serde(default)]
    pub http: Vec<HttpCheck>,
}

pub(super) fn validate(drill: &DrillConfig) -> Result<(), Invalid> {
    if let Err(e) = crate::schedule::Schedule::parse(&drill.schedule) {
        return Err(invalid(
            "drill.schedule",
            format!(
                "{:?} is not a usable cron schedule ({e}); use 5 fields (m h dom mon dow, UTC), \
                 e.g. {DRILL_SCHEDULE:?} for quarterly",
                drill.schedule
            ),
        ));
    }
    if let Some(goal) = drill.rto_goal_seconds
        && !(goal > 0.0 && goal <= (7 * super::DAY) as f64)
    {
        return Err(invalid(
            "drill.rto_goal_seconds",
            format!("{goal} is not a goal: give seconds above 0 and at most 7 days (604800)"),
        ));
    }
    validate_http_checks(
        "drill.smoke.http",
        &drill.smoke.http,
        &mut Default::default(),
    )?;
    for (i, check) in drill.smoke.http.iter().enumerate() {
        let named = check.url.contains("{database}")
            || check
                .body
                .as_deref()
                .is_some_and(|b| b.contains("{database}"));
        if !named {
            return Err(invalid(
                &format!("drill.smoke.http[{i}]"),
                "names no {database} in its url or body: the application serves the live \
                 database, so this check would pass whatever the drill restored; pass the \
                 scratch database's name, e.g. url: http://app:8080/health?database={database}",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_default_per_engine_and_one_value_overrides_both() {
        let d = DrillConfig::default();
        assert_eq!(d.rto_goal_seconds(Engine::Postgresql), 1800.0);
        assert_eq!(d.rto_goal_seconds(Engine::Clickhouse), 2700.0);
        let d = DrillConfig {
            rto_goal_seconds: Some(0.001),
            ..DrillConfig::default()
        };
        assert_eq!(d.rto_goal_seconds(Engine::Clickhouse), 0.001);
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = |yaml: &str| {
            let d: DrillConfig = serde_yaml::from_str(yaml).unwrap();
            validate(&d).unwrap_err().key
        };
        assert_eq!(bad("schedule: 'every quarter'"), "drill.schedule");
        assert_eq!(bad("rto_goal_seconds: 0"), "drill.rto_goal_seconds");
        assert_eq!(bad("rto_goal_seconds: .nan"), "drill.rto_goal_seconds");
        assert_eq!(
            bad("smoke: {http: [{name: a, url: 'https://x'}]}"),
            "drill.smoke.http[0].url"
        );
        assert_eq!(
            bad("smoke: {http: [{name: a, url: 'http://app/health'}]}"),
            "drill.smoke.http[0]"
        );
        let ok: DrillConfig =
            serde_yaml::from_str("smoke: {http: [{name: a, url: 'http://app/h?db={database}'}]}")
                .unwrap();
        assert!(validate(&ok).is_ok());
    }
}
