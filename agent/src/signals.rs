//! SIGTERM and SIGINT, what a Kubernetes Job's deadline, a deleted pod and Ctrl-C send, for the
//! commands that stop cleanly on them: `run` shuts down, `drill` puts things back, `restore`
//! discards what it has not committed.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGTERM and SIGINT, watched from [`Stops::watch`] on: from then, neither ends the process
/// by itself.
pub struct Stops {
    term: Signal,
    int: Signal,
}

impl Stops {
    /// Watches both signals; `None` if they cannot both be watched (a signal not watched still
    /// ends the process).
    pub fn watch() -> Option<Stops> {
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some(Stops { term, int }),
            _ => None,
        }
    }

    /// The name of the next signal received.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// The exit status a shell reports for a process that `name` ended (128 + its number).
pub fn exit_status(name: &str) -> i32 {
    match name {
        "SIGINT" => 130,
        _ => 143,
    }
}
