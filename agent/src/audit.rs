//! The tamper-evident audit trail: every backup, verify and restore appends an event that
//! carries the SHA-256 of the event before it.
//!
//! S3 has no append, so each event is its own locked object under
//! `<prefix>/audit/<engine>/<release>/`, named
//! `<sequence>-<timestamp>-<action>-<sha256 of the event>.json`. Because the name carries the
//! hash, the next writer can chain from a listing alone: the backup writer, which may not read,
//! can still append. Every event is also logged as a JSON line (target `strongroom::audit`).
//! [`verify_chain`] walks the chain and reports gaps, forks, altered and hidden events.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::error::Result;
use crate::layout::{Engine, Timestamp};
use crate::locked_write::WritePolicy;
use crate::store::ObjectVersion;
use crate::store::list_all;
use crate::store::versions::KeyVersions;
use crate::store::{ObjectStore, read_small};

pub const FORMAT_VERSION: u32 = 1;
const EVENT_LIMIT: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Backup,
    Verify,
    Restore,
    Drill,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Backup => "backup",
            Action::Verify => "verify",
            Action::Restore => "restore",
            Action::Drill => "drill",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
}

/// One event, exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    pub format_version: u32,
    /// 1 for the first event of a chain, +1 for each next one.
    pub sequence: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub action: Action,
    pub engine: Engine,
    pub release: String,
    /// The backup's dump key, when the action concerns one backup.
    pub snapshot: Option<String>,
    pub result: Outcome,
    /// A one-line summary, or the error.
    pub detail: String,
    /// Hex SHA-256 of the backup's manifest bytes, when known.
    pub manifest_sha256: Option<String>,
    /// Hex SHA-256 of the previous event's bytes; `None` only for the first event.
    pub previous_sha256: Option<String>,
    pub agent_version: String,
    /// The pod (HOSTNAME) that acted.
    pub host: Option<String>,
}

/// What the caller knows about the action.
#[derive(Debug, Clone)]
pub struct EventDraft {
    pub action: Action,
    pub engine: Engine,
    pub release: String,
    pub snapshot: Option<String>,
    pub result: Outcome,
    pub detail: String,
    pub manifest_sha256: Option<String>,
}

/// `<prefix>/audit/<engine>/<release>/`
pub fn folder(prefix: &str, engine: Engine, release: &str) -> String {
    format!("{prefix}/audit/{engine}/{release}/")
}

/// The sequence number and content hash an event's key states.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EventKey {
    sequence: u64,
    sha256: String,
}

fn parse_key(folder: &str, key: &str) -> Option<EventKey> {
    let name = key.strip_prefix(folder)?.strip_suffix(".json")?;
    let mut parts = name.split('-');
    let sequence = parts.next()?.parse().ok()?;
    let _timestamp = Timestamp::parse(parts.next()?)?;
    let _action = parts.next()?;
    let sha256 = parts.next()?;
    (parts.next().is_none() && sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| EventKey {
            sequence,
            sha256: sha256.to_owned(),
        })
}

/// Appends an event: logs it as a JSON line, then writes it locked (when `policy` is known:
/// without a usable bucket there is only the log line). Returns the event's key.
pub async fn append<S: ObjectStore>(
    store: &S,
    policy: Option<&WritePolicy>,
    prefix: &str,
    draft: EventDraft,
) -> Result<Option<String>> {
    let folder = folder(prefix, draft.engine, &draft.release);
    let head = match policy {
        Some(_) => list_all(store, &folder)
            .await?
            .iter()
            .filter_map(|o| parse_key(&folder, &o.key))
            .max_by_key(|k| k.sequence),
        None => None,
    };
    let now = OffsetDateTime::now_utc();
    let event = AuditEvent {
        format_version: FORMAT_VERSION,
        sequence: head.as_ref().map_or(1, |h| h.sequence + 1),
        time: now,
        action: draft.action,
        engine: draft.engine,
        release: draft.release,
        snapshot: draft.snapshot,
        result: draft.result,
        detail: draft.detail,
        manifest_sha256: draft.manifest_sha256,
        previous_sha256: head.map(|h| h.sha256),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        host: std::env::var("HOSTNAME").ok(),
    };
    let mut bytes = serde_json::to_vec_pretty(&event).expect("serialisable");
    bytes.push(b'\n');
    let sha256 = hex::encode(Sha256::digest(&bytes));
    tracing::info!(target: "strongroom::audit",
        event = %serde_json::to_string(&event).expect("serialisable"), sha256, "audit event");
    let Some(policy) = policy else {
        return Ok(None);
    };
    let key = format!(
        "{folder}{:010}-{}-{}-{sha256}.json",
        event.sequence,
        Timestamp::new(now),
        event.action.as_str()
    );
    policy
        .put(store, &key, bytes, policy.retention_from(now).as_ref())
        .await?;
    Ok(Some(key))
}

/// Appends an event; a failure to write it is logged (the event itself is in the log line
/// [`append`] wrote first) and never hides the result of the action it records.
pub async fn record<S: ObjectStore>(
    store: &S,
    policy: Option<&WritePolicy>,
    prefix: &str,
    draft: EventDraft,
) {
    if let Err(e) = append(store, policy, prefix, draft).await {
        tracing::error!(error = %e, "could not write the audit event (it is in the log above)");
    }
}

/// The result of walking a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub folder: String,
    pub events: usize,
    /// Each problem names the event (by sequence) and what is wrong with it.
    pub problems: Vec<String>,
}

/// Walks the chain in `folder`: sequence without gaps or forks, every event's bytes hashing to
/// the name it was written under, every event pointing at the hash of the one before.
pub async fn verify_chain<S: ObjectStore>(
    store: &S,
    prefix: &str,
    engine: Engine,
    release: &str,
) -> Result<ChainReport> {
    let folder = folder(prefix, engine, release);
    let mut problems = Vec::new();
    let mut events: BTreeMap<u64, Vec<(String, EventKey)>> = BTreeMap::new();
    for object in list_all(store, &folder).await? {
        match parse_key(&folder, &object.key) {
            Some(k) => events.entry(k.sequence).or_default().push((object.key, k)),
            None => problems.push(format!(
                "unexpected object {} in the audit folder",
                object.key
            )),
        }
    }
    let listed = store.list_versions(&folder).await?;
    let mut by_key: BTreeMap<&str, Vec<&ObjectVersion>> = BTreeMap::new();
    for v in &listed {
        by_key.entry(v.key.as_str()).or_default().push(v);
    }
    // Versions per key that hold data; several of the same bytes are one write retried.
    let mut version_counts: BTreeMap<String, usize> = BTreeMap::new();
    for (key, entries) in by_key {
        let versions = KeyVersions::from_listing(key, entries);
        let Some(first) = versions.oldest() else {
            continue;
        };
        let same = versions.delete_markers() == 0
            && versions.all_same_as(first.size, first.etag.as_deref().unwrap_or(""));
        let count = if same { 1 } else { versions.all.len() };
        version_counts.insert(key.to_owned(), count);
    }
    let current: BTreeSet<&String> = events.values().flatten().map(|(k, _)| k).collect();
    let hidden: BTreeMap<u64, &String> = version_counts
        .keys()
        .filter(|k| !current.contains(k))
        .filter_map(|k| parse_key(&folder, k).map(|p| (p.sequence, k)))
        .collect();
    for (seq, key) in &hidden {
        problems.push(format!(
            "event {seq} was removed: {key} is hidden by a delete marker"
        ));
    }
    let last = events.keys().next_back().copied().unwrap_or(0);
    for seq in 1..=last {
        if !events.contains_key(&seq) && !hidden.contains_key(&seq) {
            problems.push(format!("event {seq} is missing from the chain"));
        }
    }
    let mut previous: Option<(u64, String)> = None;
    for (seq, entries) in &events {
        if entries.len() > 1 {
            problems.push(format!(
                "event {seq} exists {} times: two writers forked the chain",
                entries.len()
            ));
        }
        for (key, named) in entries {
            if version_counts.get(key).copied().unwrap_or(0) > 1 {
                problems.push(format!(
                    "event {seq} was rewritten: {key} has several versions"
                ));
            }
            let bytes = read_small(store, key, None, EVENT_LIMIT).await?;
            let actual = hex::encode(Sha256::digest(&bytes));
            if actual != named.sha256 {
                problems.push(format!(
                    "event {seq} was altered: its content hashes to {actual}, not the {} it was \
                     written with",
                    named.sha256
                ));
            }
            match serde_json::from_slice::<AuditEvent>(&bytes) {
                Ok(event) => {
                    if event.sequence != *seq {
                        problems.push(format!("event {seq} says it is event {}", event.sequence));
                    }
                    let expected_previous = previous
                        .as_ref()
                        .filter(|(p, _)| p + 1 == *seq)
                        .map(|(_, sha)| sha.clone());
                    let link_known = *seq == 1 || expected_previous.is_some();
                    if link_known && event.previous_sha256 != expected_previous {
                        problems.push(format!(
                            "event {seq} does not link to event {}: it names {:?}",
                            seq - 1,
                            event.previous_sha256
                        ));
                    }
                }
                Err(e) => problems.push(format!("event {seq} is not a valid event: {e}")),
            }
        }
        if let Some((_, named)) = entries.first() {
            previous = Some((*seq, named.sha256.clone()));
        }
    }
    Ok(ChainReport {
        folder: store.target(&folder),
        events: events.values().map(Vec::len).sum(),
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Integrity;
    use crate::store::PartChecksum;
    use crate::store::memory::MemoryStore;
    use bytes::Bytes;

    const POLICY: WritePolicy = WritePolicy {
        integrity: Integrity::Md5,
        lock: None,
    };

    fn draft(action: Action) -> EventDraft {
        EventDraft {
            action,
            engine: Engine::Postgresql,
            release: "r".into(),
            snapshot: Some("p/postgresql/r/20261123T020000Z.sql.gz".into()),
            result: Outcome::Success,
            detail: "ok".into(),
            manifest_sha256: None,
        }
    }

    async fn chain_of(n: usize) -> (MemoryStore, Vec<String>) {
        let store = MemoryStore::default();
        let mut keys = Vec::new();
        for _ in 0..n {
            keys.push(
                append(&store, Some(&POLICY), "p", draft(Action::Backup))
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        (store, keys)
    }

    #[tokio::test]
    async fn events_chain_by_hash_and_verify() {
        let (store, keys) = chain_of(3).await;
        assert!(keys[0].starts_with("p/audit/postgresql/r/0000000001-"));
        assert!(keys[2].starts_with("p/audit/postgresql/r/0000000003-"));
        let report = verify_chain(&store, "p", Engine::Postgresql, "r")
            .await
            .unwrap();
        assert_eq!(report.events, 3);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let second = read_small(&store, &keys[1], None, EVENT_LIMIT)
            .await
            .unwrap();
        let second: AuditEvent = serde_json::from_slice(&second).unwrap();
        assert_eq!(
            second.previous_sha256.as_deref(),
            Some(
                parse_key("p/audit/postgresql/r/", &keys[0])
                    .unwrap()
                    .sha256
                    .as_str()
            )
        );
    }

    #[tokio::test]
    async fn an_altered_event_is_reported() {
        let (store, keys) = chain_of(3).await;
        let forged = b"{\"forged\": true}\n";
        let sum = PartChecksum::compute(Integrity::Md5, forged);
        store
            .put_object(&keys[1], Bytes::from_static(forged), sum, None)
            .await
            .unwrap();
        let report = verify_chain(&store, "p", Engine::Postgresql, "r")
            .await
            .unwrap();
        let all = report.problems.join("\n");
        assert!(all.contains("event 2 was altered"), "{all}");
        assert!(all.contains("event 2 was rewritten"), "{all}");
    }

    #[test]
    fn keys_parse_only_when_well_formed() {
        let f = "p/audit/postgresql/r/";
        let sha = "a".repeat(64);
        let good = format!("{f}0000000007-20261123T020000Z-backup-{sha}.json");
        assert_eq!(parse_key(f, &good).unwrap().sequence, 7);
        assert!(
            parse_key(
                f,
                &format!("{f}0000000007-20261123T020000Z-backup-abc.json")
            )
            .is_none()
        );
        assert!(parse_key(f, &format!("{f}x-20261123T020000Z-backup-{sha}.json")).is_none());
        assert!(parse_key(f, &format!("{f}0000000007-bad-backup-{sha}.json")).is_none());
    }
}
