//! `strongroom drill list`: every stored drill report of a release, oldest first, as a table
//! or JSON, so an auditor sees every quarter at a glance.
//!
//! Reports are read as untrusted. Each is written once, create-only and locked, so the first
//! version of a key is the drill's; a key with other versions above it (the writer role may
//! add versions, never remove one) is flagged, and only its first version is read.

use std::collections::BTreeMap;

use serde::Serialize;

use super::report::{DrillSummary, Verdict, seconds};
use crate::error::Result;
use crate::layout::{Engine, Timestamp};
use crate::store::versions::KeyVersions;
use crate::store::{ObjectStore, read_small};

/// Larger than any report this agent writes (the restore report inside lists every table).
const REPORT_LIMIT: u64 = 16 * 1024 * 1024;

/// `<prefix>/drills/<engine>/<release>/`.
pub fn folder(prefix: &str, engine: Engine, release: &str) -> String {
    format!("{prefix}/drills/{engine}/{release}/")
}

/// `<prefix>/drills/<engine>/<release>/<t0>.json`.
pub fn report_key(prefix: &str, engine: Engine, release: &str, t0: Timestamp) -> String {
    format!("{}{t0}.json", folder(prefix, engine, release))
}

/// One row of `drill list`.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub key: String,
    /// The report, if it could be read.
    pub drill: Option<DrillSummary>,
    /// Why it could not be read, or what is odd about its key.
    pub problems: Vec<String>,
}

/// Every drill report of `engine` for `release`, oldest first.
pub async fn list<S: ObjectStore>(
    store: &S,
    prefix: &str,
    engine: Engine,
    release: &str,
) -> Result<Vec<Entry>> {
    let mut keys: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for v in store
        .list_versions(&folder(prefix, engine, release))
        .await?
    {
        if v.key.ends_with(".json") {
            keys.entry(v.key.clone()).or_default().push(v);
        }
    }
    let mut entries = Vec::with_capacity(keys.len());
    for (key, all) in keys {
        let versions = KeyVersions {
            key: key.clone(),
            all,
        };
        let mut problems = Vec::new();
        if versions.hidden() {
            problems.push("hidden by a delete marker: find out who deleted it".to_owned());
        }
        let Some(first) = versions.oldest().cloned() else {
            problems.push("no data version".into());
            entries.push(Entry {
                key,
                drill: None,
                problems,
            });
            continue;
        };
        if versions.data().count() > 1
            && !versions.all_same_as(first.size, first.etag.as_deref().unwrap_or_default())
        {
            problems.push(format!(
                "other versions were written above the drill's own ({}); the first is shown: \
                 find out who wrote them",
                versions.describe()
            ));
        }
        let drill = match read_small(store, &key, first.version_id.as_deref(), REPORT_LIMIT).await {
            Ok(bytes) => match serde_json::from_slice::<DrillSummary>(&bytes) {
                Ok(d) => Some(d),
                Err(e) => {
                    problems.push(format!("not a drill report this agent reads: {e}"));
                    None
                }
            },
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        entries.push(Entry {
            key,
            drill,
            problems,
        });
    }
    Ok(entries)
}

/// The table `drill list` prints.
pub fn render_table(entries: &[Entry]) -> String {
    let mut out = format!(
        "{:<20} {:<8} {:<6} {:>9} {:>9} {:>9} {:<24} {}\n",
        "DATE (t0, UTC)", "MODE", "RESULT", "RTO", "GOAL", "RPO", "SNAPSHOT", "NOTES"
    );
    for e in entries {
        let notes = e.problems.join("; ");
        match &e.drill {
            Some(d) => {
                let snapshot = d
                    .snapshot
                    .as_deref()
                    .and_then(|s| s.rsplit('/').find(|p| !p.is_empty()))
                    .unwrap_or("-");
                let mut notes = notes;
                if d.verdict == Verdict::Fail {
                    let why = d.failures.join("; ");
                    notes = [why, notes]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join("; ");
                }
                if let Some(p) = &d.projection {
                    notes.push_str(&format!(
                        "{}projected {} for {} GiB: {}",
                        if notes.is_empty() { "" } else { "; " },
                        seconds(p.projected_rto_seconds),
                        p.production_size_gib,
                        p.projected_verdict
                    ));
                }
                out.push_str(&format!(
                    "{:<20} {:<8} {:<6} {:>9} {:>9} {:>9} {:<24} {}\n",
                    Timestamp::new(d.incident_start).to_string(),
                    d.mode.as_str(),
                    d.verdict.to_string(),
                    d.rto_seconds.map_or("-".into(), seconds),
                    seconds(d.rto_goal_seconds),
                    d.rpo_seconds.map_or("-".into(), seconds),
                    snapshot,
                    notes
                ));
            }
            None => out.push_str(&format!(
                "{:<20} {:<8} {:<6} {:>9} {:>9} {:>9} {:<24} {}\n",
                e.key.rsplit('/').next().unwrap_or(&e.key),
                "-",
                "?",
                "-",
                "-",
                "-",
                "-",
                notes
            )),
        }
    }
    if entries.is_empty() {
        out.push_str("(no drills yet: run `strongroom drill`)\n");
    }
    out
}
