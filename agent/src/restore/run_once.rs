//! One restore per run: after a restore passed, a marker is stored, locked, under
//! `<prefix>/reports/<engine>/<release>/runs/`, keyed by a hash of (snapshot, target, run id).
//! A restore with the same three refuses to run while that marker exists, unless asked to run
//! again: a Job re-created by a GitOps tool, or a manifest applied again, must not load the
//! snapshot a second time over data that has lived on since.
//!
//! The marker is read as untrusted: whoever may write to the bucket can plant one, and the
//! worst it does is stop a restore with a message that says how to run it anyway.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::Result;
use crate::layout::Engine;
use crate::locked_write::WritePolicy;
use crate::store::{ObjectStore, StoreError, read_small};

/// Larger than any marker this agent writes.
const MARKER_LIMIT: u64 = 64 * 1024;

/// What was restored, where, by which run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunMarker {
    pub run_id: String,
    pub snapshot: String,
    pub target: String,
    pub report_key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
}

/// The marker's key for this run.
pub fn marker_key(
    prefix: &str,
    engine: Engine,
    release: &str,
    snapshot: &str,
    target: &str,
    run_id: &str,
) -> String {
    let mut hash = Sha256::new();
    for part in [snapshot, target, run_id] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let digest = hex::encode(hash.finalize());
    format!(
        "{prefix}/reports/{engine}/{release}/runs/{}.json",
        &digest[..32]
    )
}

/// What an earlier run left under `key`, described for the refusal; `None` if nothing.
pub async fn earlier_run<S: ObjectStore>(store: &S, key: &str) -> Result<Option<String>> {
    let bytes = match read_small(store, key, None, MARKER_LIMIT).await {
        Ok(bytes) => bytes,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(Some(match serde_json::from_slice::<RunMarker>(&bytes) {
        Ok(m) => format!(
            "run {} restored {} into {} at {} (report {})",
            m.run_id, m.snapshot, m.target, m.finished_at, m.report_key
        ),
        Err(e) => format!(
            "an unreadable marker ({e}): check who wrote it, the backup writer role should not"
        ),
    }))
}

/// Stores the marker create-only and locked like the reports.
pub async fn record<S: ObjectStore>(
    store: &S,
    policy: &WritePolicy,
    key: &str,
    marker: &RunMarker,
) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(marker).expect("serialisable");
    bytes.push(b'\n');
    let retention = policy.retention_from(marker.finished_at);
    policy.put(store, key, bytes, retention.as_ref()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_changes_with_snapshot_target_and_run_id() {
        let key = |s, t, r| marker_key("b", Engine::Postgresql, "rel", s, t, r);
        let base = key("s1", "h:5432/db", "1");
        assert!(base.starts_with("b/reports/postgresql/rel/runs/"), "{base}");
        assert_eq!(base, key("s1", "h:5432/db", "1"));
        assert_ne!(base, key("s2", "h:5432/db", "1"));
        assert_ne!(base, key("s1", "h:5432/db2", "1"));
        assert_ne!(base, key("s1", "h:5432/db", "2"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(key("ab", "c", "1"), key("a", "bc", "1"));
    }
}
