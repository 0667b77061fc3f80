//! A run's deadline: a child of the run's cancellation token that fires after the configured
//! time, so that a backup stuck behind a lock or a stalled dump is cancelled exactly as a
//! SIGTERM past the grace period cancels it (upload aborted, no manifest), and says why.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// Cancels its token after `seconds`; stops counting when dropped.
pub struct Deadline {
    token: CancellationToken,
    fired: Arc<AtomicBool>,
    timer: JoinHandle<()>,
    setting: &'static str,
    seconds: u64,
}

impl Deadline {
    /// A token cancelled with `parent`, or `seconds` from now (`setting` names the config key).
    pub fn arm(parent: &CancellationToken, seconds: u64, setting: &'static str) -> Deadline {
        let token = parent.child_token();
        let fired = Arc::new(AtomicBool::new(false));
        let timer = tokio::spawn({
            let (token, fired) = (token.clone(), Arc::clone(&fired));
            async move {
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                fired.store(true, Ordering::SeqCst);
                token.cancel();
            }
        });
        Deadline {
            token,
            fired,
            timer,
            setting,
            seconds,
        }
    }

    /// The token the run watches.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// A cancellation that the deadline caused, as what it is.
    pub fn explain(&self, error: Error) -> Error {
        match error {
            Error::Cancelled { key } if self.fired.load(Ordering::SeqCst) => Error::TimedOut {
                key,
                setting: self.setting,
                seconds: self.seconds,
            },
            other => other,
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_after_its_time_and_names_its_setting() {
        let parent = CancellationToken::new();
        let deadline = Deadline::arm(&parent, 30, "postgresql.backup_timeout_seconds");
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(!deadline.token().is_cancelled());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(deadline.token().is_cancelled());
        assert!(!parent.is_cancelled());
        let e = deadline.explain(Error::Cancelled { key: "k".into() });
        assert!(matches!(e, Error::TimedOut { seconds: 30, .. }), "{e}");
        assert!(
            e.to_string().contains("postgresql.backup_timeout_seconds"),
            "{e}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_stays_a_shutdown() {
        let parent = CancellationToken::new();
        let deadline = Deadline::arm(&parent, 30, "x");
        parent.cancel();
        assert!(deadline.token().is_cancelled());
        let e = deadline.explain(Error::Cancelled { key: "k".into() });
        assert!(matches!(e, Error::Cancelled { .. }), "{e}");
    }
}
