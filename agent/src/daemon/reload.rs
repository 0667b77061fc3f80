//! Config reload: the config file's directory is watched (`notify`), so a Kubernetes ConfigMap
//! update, which swaps a `..data` symlink, is seen within a second. A new valid config replaces
//! the old one for everything that reads it afterwards (schedules, checks, the next runs); an
//! invalid one is refused with a log line and a metric, and the old one keeps running. The
//! listen address and log settings apply at start only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::AgentState;

/// Events closer together than this are one change (a symlink swap is several events).
const SETTLE: Duration = Duration::from_millis(300);

/// The first 16 hex digits of the file's SHA-256: which config is live, without showing it.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// Watches `path`'s directory and reloads on changes until `stop` fires. Returns the watcher,
/// which must be kept alive.
pub fn watch(
    path: PathBuf,
    initial_digest: String,
    config: watch::Sender<Arc<Config>>,
    state: Arc<AgentState>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> notify::Result<notify::RecommendedWatcher> {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = events_tx.send(());
        }
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        let mut current = initial_digest;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                event = events.recv() => if event.is_none() { return },
            }
            tokio::time::sleep(SETTLE).await;
            while events.try_recv().is_ok() {}
            reload(&path, &mut current, &config, &state, &metrics);
        }
    });
    Ok(watcher)
}

fn reload(
    path: &Path,
    current: &mut String,
    config: &watch::Sender<Arc<Config>>,
    state: &AgentState,
    metrics: &Metrics,
) {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            // Mid-swap, or removed: the next event will tell.
            tracing::debug!(path = %path.display(), error = %e, "config not readable right now");
            return;
        }
    };
    let digest = digest(&bytes);
    if digest == *current {
        return;
    }
    let text = String::from_utf8_lossy(&bytes);
    let loaded = Config::from_yaml(&text, path).and_then(|new| {
        new.daemon.trigger_token()?;
        Ok(new)
    });
    match loaded {
        Ok(new) => {
            let old = config.borrow().clone();
            if new.daemon.listen != old.daemon.listen {
                tracing::warn!(old = %old.daemon.listen, new = %new.daemon.listen,
                    "daemon.listen changed: it takes effect at the next restart");
            }
            state.set_config(digest.clone(), new.daemon.ready_requires_s3);
            config.send_replace(Arc::new(new));
            metrics.reload(true);
            tracing::info!(digest = %digest, path = %path.display(), "config reloaded");
            *current = digest;
        }
        Err(e) => {
            metrics.reload(false);
            tracing::error!(error = %e,
                "the new config is invalid and was not applied; the previous one keeps running");
            *current = digest;
        }
    }
}
