//! One restore per run: after a restore passed, a marker is stored, locked, under
//! `<prefix>/reports/<engine>/<release>/runs/`, keyed by a hash of (snapshot, target, run id).
//! A restore with the same three refuses to run while that marker exists, unless asked to run
//! again: a Job re-created by a GitOps tool, or a manifest applied again, must not load the
//! snapshot a second time over data that has lived on since.
//!
//! The marker is read as untrusted: whoever may write under `reports/` can plant one (the
//! Terraform module's writer policy may not), and the worst it does is stop a restore, which
//! fails (exit 5) saying what the marker claims and how to run anyway: a Job that restores
//! nothing never looks like one that succeeded.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::{Error, Result};
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

/// One restore run: its id, where it loads, and the key of its marker.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: String,
    pub snapshot: String,
    pub target: String,
    pub key: String,
}

impl Run {
    pub fn new(
        prefix: &str,
        engine: Engine,
        release: &str,
        snapshot: &str,
        target: &str,
        id: &str,
    ) -> Run {
        Run {
            id: id.to_owned(),
            snapshot: snapshot.to_owned(),
            target: target.to_owned(),
            key: marker_key(prefix, engine, release, snapshot, target, id),
        }
    }
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

/// Refuses the run if a marker exists under its key: [`Error::AlreadyRestored`] saying what
/// the marker claims (or that it does not describe this run, which only someone else's write
/// explains). `Ok(true)` when a marker exists and `rerun` lets the restore go on anyway.
pub async fn check<S: ObjectStore>(store: &S, run: &Run, rerun: bool) -> Result<bool> {
    let bytes = match read_small(store, &run.key, None, MARKER_LIMIT).await {
        Ok(bytes) => bytes,
        Err(StoreError::NotFound { .. }) => return Ok(false),
        Err(e) => {
            return Err(Error::RunMarker {
                key: store.target(&run.key),
                problem: format!(
                    "{e}. The restore's role needs s3:GetObject on <prefix>/reports/* to read \
                     it (or run without --run-id)"
                ),
            });
        }
    };
    if rerun {
        return Ok(true);
    }
    let earlier = match serde_json::from_slice::<RunMarker>(&bytes) {
        Ok(m) if m.run_id == run.id && m.snapshot == run.snapshot && m.target == run.target => {
            format!(
                "run {} restored it at {} (report {})",
                m.run_id, m.finished_at, m.report_key
            )
        }
        Ok(m) => format!(
            "the marker there describes another restore ({} into {}, run {}): it was not \
             written by this agent for this run; find out who wrote it",
            m.snapshot, m.target, m.run_id
        ),
        Err(e) => {
            format!("the marker there is not one this agent writes ({e}): find out who wrote it")
        }
    };
    Err(Error::AlreadyRestored {
        snapshot: run.snapshot.clone(),
        target: run.target.clone(),
        run_id: run.id.clone(),
        marker: store.target(&run.key),
        earlier,
    })
}

/// Stores the marker create-only and locked like the reports.
pub async fn record<S: ObjectStore>(
    store: &S,
    policy: &WritePolicy,
    run: &Run,
    report_key: &str,
    finished_at: OffsetDateTime,
) -> Result<()> {
    let marker = RunMarker {
        run_id: run.id.clone(),
        snapshot: run.snapshot.clone(),
        target: run.target.clone(),
        report_key: report_key.to_owned(),
        finished_at,
    };
    let mut bytes = serde_json::to_vec_pretty(&marker).expect("serialisable");
    bytes.push(b'\n');
    let retention = policy.retention_from(finished_at);
    match policy.put(store, &run.key, bytes, retention.as_ref()).await {
        Ok(_) => Ok(()),
        Err(Error::KeyTaken { .. }) => Err(Error::RunMarker {
            key: store.target(&run.key),
            problem: "another restore with this run id finished first and left its marker; \
                      this one restored too (its report is stored): two runs with one run id \
                      ran at once"
                .into(),
        }),
        Err(e) => Err(Error::RunMarker {
            key: store.target(&run.key),
            problem: format!(
                "{e}; so a restore with this run id would run again. Give the restore's role \
                 s3:PutObject on <prefix>/reports/*"
            ),
        }),
    }
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
