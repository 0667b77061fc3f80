//! Logging: JSON lines for log collectors, human text on a terminal; `RUST_LOG` overrides the
//! configured level. Logs go to stderr so stdout stays for command output (`list --json`).

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Returns true when logs are JSON.
pub fn init(log: &LogConfig) -> bool {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"))
    });
    let json = match log.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.with_target(false).try_init()
    };
    if let Err(e) = result {
        eprintln!("strongroom: logging was already initialised: {e}");
    }
    json
}
