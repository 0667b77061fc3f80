//! The Object Lock policy: the bucket must be able to keep objects immutable, every object gets
//! a retention computed from the policy, and a retention read back either satisfies the policy
//! or does not. No I/O here beyond asking the store about the bucket.

use time::{Date, Month, OffsetDateTime};

use crate::config::{LockMode, ObjectLockConfig, RetentionPeriod};
use crate::error::{Error, Result};
use crate::store::{ObjectStore, Retention};

/// Retention reads and writes run this many at a time (a ClickHouse backup has an object per
/// file).
pub const RETENTION_CONCURRENCY: usize = 64;

/// The retention every object of a backup must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockPolicy {
    pub mode: LockMode,
    pub period: RetentionPeriod,
}

impl LockPolicy {
    pub fn from_config(config: &ObjectLockConfig) -> LockPolicy {
        LockPolicy {
            mode: config.mode,
            period: config.retention,
        }
    }

    /// The retention for objects written by a backup that started at `start`: whole seconds,
    /// `years` as calendar years (29 February moves to 1 March, never earlier).
    pub fn retention_from(&self, start: OffsetDateTime) -> Retention {
        let start = start
            .to_offset(time::UtcOffset::UTC)
            .replace_nanosecond(0)
            .expect("0 ns is valid");
        let until = match (self.period.days, self.period.years) {
            (Some(days), _) => start + time::Duration::days(i64::from(days)),
            (None, Some(years)) => add_years(start, years),
            (None, None) => start,
        };
        Retention {
            mode: self.mode,
            retain_until: until,
        }
    }
}

fn add_years(at: OffsetDateTime, years: u32) -> OffsetDateTime {
    let year = at.year() + years as i32;
    let date = Date::from_calendar_date(year, at.month(), at.day())
        .or_else(|_| Date::from_calendar_date(year, Month::March, 1))
        .expect("1 March exists");
    at.replace_date(date)
}

/// Whether `actual` protects at least as strongly and as long as `required`.
pub fn satisfies(actual: &Retention, required: &Retention) -> bool {
    let mode_ok = match required.mode {
        LockMode::Governance => true,
        LockMode::Compliance => actual.mode == LockMode::Compliance,
    };
    mode_ok && actual.retain_until >= required.retain_until
}

/// Checks that the bucket has Object Lock and versioning. Returns the policy to apply, or `None`
/// when the bucket is unprotected and `s3.object_lock.required` is false (development only).
pub async fn require_protection<S: ObjectStore>(
    store: &S,
    bucket: &str,
    config: &ObjectLockConfig,
) -> Result<Option<LockPolicy>> {
    let protection = store.protection().await?;
    if protection.object_lock_enabled && protection.versioning_enabled != Some(false) {
        return Ok(Some(LockPolicy::from_config(config)));
    }
    let detail = match (
        protection.object_lock_enabled,
        protection.versioning_enabled,
    ) {
        (false, Some(false)) => "has neither Object Lock nor versioning",
        (false, _) => "has no Object Lock configuration",
        (true, _) => "has Object Lock but versioning is not enabled",
    };
    if config.required {
        return Err(Error::BucketNotProtected {
            bucket: bucket.to_owned(),
            detail,
        });
    }
    tracing::warn!(
        bucket,
        detail,
        "s3.object_lock.required is false: writing backups WITHOUT retention; they can be \
         deleted or overwritten. Use this only for development"
    );
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn policy(mode: LockMode, days: Option<u32>, years: Option<u32>) -> LockPolicy {
        LockPolicy {
            mode,
            period: RetentionPeriod { days, years },
        }
    }

    #[test]
    fn seven_calendar_years_in_whole_seconds() {
        let p = policy(LockMode::Governance, None, Some(7));
        let r = p.retention_from(datetime!(2026-11-23 02:00:00.9 UTC));
        assert_eq!(r.retain_until, datetime!(2033-11-23 02:00:00 UTC));
        let leap = p.retention_from(datetime!(2028-02-29 12:00:00 UTC));
        assert_eq!(leap.retain_until, datetime!(2035-03-01 12:00:00 UTC));
    }

    #[test]
    fn days_are_exact() {
        let p = policy(LockMode::Compliance, Some(30), None);
        let r = p.retention_from(datetime!(2026-01-01 00:00:00 +02:00));
        assert_eq!(r.retain_until, datetime!(2026-01-30 22:00:00 UTC));
        assert_eq!(r.mode, LockMode::Compliance);
    }

    #[test]
    fn satisfaction_needs_long_enough_and_strong_enough() {
        let until = datetime!(2033-11-23 02:00:00 UTC);
        let need = |mode| Retention {
            mode,
            retain_until: until,
        };
        let have = |mode, retain_until| Retention { mode, retain_until };
        let g = LockMode::Governance;
        let c = LockMode::Compliance;
        assert!(satisfies(&have(g, until), &need(g)));
        assert!(satisfies(&have(c, until), &need(g)));
        assert!(!satisfies(&have(g, until), &need(c)));
        assert!(!satisfies(
            &have(g, until - time::Duration::seconds(1)),
            &need(g)
        ));
    }
}
