//! Backup schedules: cron expressions evaluated in UTC, the period between runs, jitter, and the
//! backoff between retries after a failure. Pure computations; the loop that waits on them is
//! in `daemon::scheduler`.
//!
//! Five fields (`m h dom mon dow`) as in crontab, an optional leading seconds field (six
//! fields), and the `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly` aliases. Always UTC: no
//! daylight-saving gaps or repeats.

use std::str::FromStr as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use time::OffsetDateTime;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    text: String,
}

fn to_chrono(t: OffsetDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()).expect("in chrono's range")
}

fn from_chrono(t: DateTime<Utc>) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.timestamp())
        .expect("in time's range")
        .replace_nanosecond(t.timestamp_subsec_nanos())
        .expect("valid nanoseconds")
}

impl Schedule {
    /// Parses a cron expression; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let cron = Cron::from_str(text.trim()).map_err(|e| e.to_string())?;
        let schedule = Schedule {
            cron,
            text: text.trim().to_owned(),
        };
        // An expression that never fires (e.g. 30 February) is refused here, not at 2 a.m.
        schedule
            .next_after(OffsetDateTime::now_utc())
            .ok_or_else(|| format!("{text:?} never fires"))?;
        Ok(schedule)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first run strictly after `t`.
    pub fn next_after(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        self.cron
            .find_next_occurrence(&to_chrono(t), false)
            .ok()
            .map(from_chrono)
    }

    /// The time between the next two runs after `t`: how old a backup may get before the
    /// schedule has missed one.
    pub fn period_after(&self, t: OffsetDateTime) -> Option<Duration> {
        let first = self.next_after(t)?;
        let second = self.next_after(first)?;
        (second - first).try_into().ok()
    }
}

/// The wait before retry number `failures` (1 for the first retry): `initial` doubling each
/// time, never more than `max`.
pub fn retry_delay(failures: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    initial.saturating_mul(factor).min(max)
}

/// A random delay in `0..=max` seconds, so that many agents on one schedule do not all hit the
/// database host and S3 in the same second.
pub fn jitter(max_seconds: u64) -> Duration {
    if max_seconds == 0 {
        return Duration::ZERO;
    }
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return Duration::ZERO;
    }
    Duration::from_secs(u64::from_le_bytes(bytes) % (max_seconds + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn next(expr: &str, after: OffsetDateTime) -> OffsetDateTime {
        Schedule::parse(expr).unwrap().next_after(after).unwrap()
    }

    #[test]
    fn runbook_defaults_fire_at_their_utc_times() {
        let t = datetime!(2026-11-23 01:59:59 UTC);
        assert_eq!(next("0 2 * * *", t), datetime!(2026-11-23 02:00:00 UTC));
        assert_eq!(next("30 2 * * *", t), datetime!(2026-11-23 02:30:00 UTC));
        // Strictly after: a run at exactly 02:00 schedules the next day's.
        let at = datetime!(2026-11-23 02:00:00 UTC);
        assert_eq!(next("0 2 * * *", at), datetime!(2026-11-24 02:00:00 UTC));
    }

    #[test]
    fn month_ends_and_leap_days() {
        let t = datetime!(2026-01-31 12:00:00 UTC);
        assert_eq!(next("0 0 31 * *", t), datetime!(2026-03-31 00:00:00 UTC));
        assert_eq!(next("0 0 29 2 *", t), datetime!(2028-02-29 00:00:00 UTC));
        assert_eq!(
            next("0 3 1 * *", datetime!(2026-12-31 23:00:00 UTC)),
            datetime!(2027-01-01 03:00:00 UTC)
        );
    }

    #[test]
    fn utc_has_no_daylight_saving_gaps() {
        // 29 March 2026 is the EU spring-forward day: 02:30 exists in UTC.
        let t = datetime!(2026-03-29 00:00:00 UTC);
        assert_eq!(next("30 2 * * *", t), datetime!(2026-03-29 02:30:00 UTC));
    }

    #[test]
    fn aliases_and_seconds() {
        let t = datetime!(2026-11-23 10:15:00 UTC);
        assert_eq!(next("@daily", t), datetime!(2026-11-24 00:00:00 UTC));
        assert_eq!(next("@hourly", t), datetime!(2026-11-23 11:00:00 UTC));
        assert_eq!(next("*/5 * * * * *", t), datetime!(2026-11-23 10:15:05 UTC));
    }

    #[test]
    fn periods() {
        let t = datetime!(2026-11-23 10:15:00 UTC);
        let daily = Schedule::parse("0 2 * * *").unwrap();
        assert_eq!(daily.period_after(t), Some(Duration::from_secs(86_400)));
        let seconds = Schedule::parse("*/3 * * * * *").unwrap();
        assert_eq!(seconds.period_after(t), Some(Duration::from_secs(3)));
    }

    #[test]
    fn bad_expressions_say_why() {
        assert!(Schedule::parse("0 25 * * *").is_err());
        assert!(Schedule::parse("every night").is_err());
        let never = Schedule::parse("0 0 30 2 *").unwrap_err();
        assert!(never.contains("never fires"), "{never}");
    }

    #[test]
    fn retries_back_off_to_a_ceiling() {
        let (i, m) = (Duration::from_secs(60), Duration::from_secs(3600));
        assert_eq!(retry_delay(1, i, m), Duration::from_secs(60));
        assert_eq!(retry_delay(2, i, m), Duration::from_secs(120));
        assert_eq!(retry_delay(4, i, m), Duration::from_secs(480));
        assert_eq!(retry_delay(10, i, m), m);
        assert_eq!(retry_delay(u32::MAX, i, m), m);
    }

    #[test]
    fn jitter_stays_in_range() {
        assert_eq!(jitter(0), Duration::ZERO);
        for _ in 0..100 {
            assert!(jitter(5) <= Duration::from_secs(5));
        }
    }
}
