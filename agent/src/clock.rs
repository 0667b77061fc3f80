//! Wall-clock time for the scheduler, which tests can pause.
//!
//! Schedules are wall-clock (UTC) times, but tests run the scheduler under tokio's paused clock;
//! [`Clock::Tokio`] maps tokio's (pausable) instants onto the wall clock from a fixed origin.
//! Waits are capped at a minute, so a wall clock that jumps (NTP, a resumed VM) is noticed.

use std::time::Duration;

use time::OffsetDateTime;

/// The longest single sleep: after it, the scheduler looks at the clock again.
const MAX_NAP: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system's wall clock.
    System,
    /// Wall time that advances with tokio's clock (paused in tests).
    Tokio {
        origin: OffsetDateTime,
        instant: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that starts at `origin` now and follows tokio's time.
    pub fn following_tokio(origin: OffsetDateTime) -> Clock {
        Clock::Tokio {
            origin,
            instant: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        match self {
            Clock::System => OffsetDateTime::now_utc(),
            Clock::Tokio { origin, instant } => *origin + instant.elapsed(),
        }
    }

    /// Returns at `at` (or never, for `None`).
    pub async fn sleep_until(&self, at: Option<OffsetDateTime>) {
        let Some(at) = at else {
            return std::future::pending().await;
        };
        loop {
            let left = at - self.now();
            if left <= time::Duration::ZERO {
                return;
            }
            let nap = Duration::try_from(left).unwrap_or(MAX_NAP).min(MAX_NAP);
            tokio::time::sleep(nap).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[tokio::test(start_paused = true)]
    async fn a_paused_clock_sleeps_until_the_wall_time() {
        let clock = Clock::following_tokio(datetime!(2026-11-23 01:59:00 UTC));
        clock
            .sleep_until(Some(datetime!(2026-11-23 02:00:00 UTC)))
            .await;
        assert_eq!(clock.now(), datetime!(2026-11-23 02:00:00 UTC));
        clock
            .sleep_until(Some(datetime!(2026-11-23 05:00:00 UTC)))
            .await;
        assert_eq!(clock.now(), datetime!(2026-11-23 05:00:00 UTC));
    }
}
