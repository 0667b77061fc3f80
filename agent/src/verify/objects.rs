//! The objects one manifest pins, against a single listing of their versions: each present at
//! its pinned VersionId with the recorded size, retained at least as required, and what sits
//! above it judged as the backup's restore will meet it.
//!
//! The engines' restores read differently, so the same listing means different things:
//! PostgreSQL's restore fetches the pinned version by its id, so a newer version or a delete
//! marker above it is a warning; ClickHouse's RESTORE reads the newest version of every file,
//! so either makes the backup unrestorable as it is: a problem. An object in an archive
//! storage class (GLACIER, DEEP_ARCHIVE) is intact but cannot be read until it is restored
//! from the archive: a warning for both. Nothing here reads an object's data.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use time::OffsetDateTime;

use crate::catalog::FetchedManifest;
use crate::layout::Engine;
use crate::lock::{RETENTION_CONCURRENCY, satisfies};
use crate::manifest::ManifestObject;
use crate::store::versions::KeyVersions;
use crate::store::{ObjectStore, ObjectVersion, Retention};

/// Archived keys named in a warning before the rest are only counted.
const ARCHIVED_NAMED: usize = 5;

/// The retention every object must carry, and who requires it (for messages).
#[derive(Debug, Clone)]
pub(crate) struct Required {
    pub retention: Retention,
    /// "the manifest", "the incremental backup X that depends on it".
    pub by: String,
    /// What to do when an object falls short, appended to the message ("" for none).
    pub advice: &'static str,
}

/// What the objects of one manifest look like in the bucket.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    /// The earliest retain-until among objects whose retention satisfied the requirement.
    pub retain_until: Option<OffsetDateTime>,
    /// The listed size of the manifest's first object (the dump, or `.backup`).
    pub first_size: Option<u64>,
}

/// Why ClickHouse's RESTORE would not read `pinned` under `versions`' key: a delete marker or
/// a newer version above it. Older versions (uploads ClickHouse retried) are harmless.
pub(crate) fn shadowed(versions: &KeyVersions, pinned_id: Option<&str>) -> Option<String> {
    if versions.above(pinned_id).is_empty() {
        return None;
    }
    let pinned = pinned_id.unwrap_or("(none)");
    Some(if versions.hidden() {
        format!(
            "{} is hidden by a delete marker above the pinned version {pinned} (versions: {}): \
             ClickHouse's RESTORE reads the newest version of each file and would find none",
            versions.key,
            versions.describe()
        )
    } else {
        format!(
            "{} has a newer version above the pinned {pinned} (versions: {}): ClickHouse's \
             RESTORE reads the newest version of each file and would read that instead",
            versions.key,
            versions.describe()
        )
    })
}

/// Presence by version, size, what sits above, storage class and retention of every object in
/// `manifest`, read from one listing.
pub(crate) async fn check<S: ObjectStore>(
    store: &S,
    manifest: &FetchedManifest,
    required: Option<&Required>,
) -> Findings {
    let mut findings = Findings::default();
    let objects = &manifest.manifest.objects;
    // One listing covers every object: they share the backup's key prefix.
    let listing_prefix = common_prefix(objects.iter().map(|o| o.key.as_str()));
    let listed = match store.list_versions(listing_prefix).await {
        Ok(v) => v,
        Err(e) => {
            findings.problems.push(e.to_string());
            return findings;
        }
    };
    let mut by_key: BTreeMap<String, Vec<ObjectVersion>> = BTreeMap::new();
    for v in listed {
        by_key.entry(v.key.clone()).or_default().push(v);
    }
    let engine = manifest.manifest.engine;
    let mut present = Vec::new();
    let mut archived = Vec::new();
    for object in objects {
        let versions = KeyVersions {
            key: object.key.clone(),
            all: by_key.remove(&object.key).unwrap_or_default(),
        };
        let pinned_id = object.version_id.as_deref();
        let Some(found) = versions.find(pinned_id) else {
            findings
                .problems
                .push(match (versions.hidden(), versions.data().next()) {
                    (true, None) => format!(
                        "{} is hidden by a delete marker and version {} is missing (versions: {})",
                        object.key,
                        pinned_id.unwrap_or("(none)"),
                        versions.describe()
                    ),
                    _ => format!(
                        "{} version {} is missing",
                        object.key,
                        pinned_id.unwrap_or("(none)")
                    ),
                });
            continue;
        };
        above_pinned(engine, &versions, pinned_id, &mut findings);
        if found.size != object.size_bytes || (found.size == 0 && object.sha256.is_some()) {
            findings.problems.push(format!(
                "{} is {} bytes, the manifest says {}",
                object.key, found.size, object.size_bytes
            ));
        }
        if found.archived() {
            archived.push(format!(
                "{} ({})",
                object.key,
                found.storage_class.as_deref().unwrap_or_default()
            ));
        }
        if object.key == objects[0].key {
            findings.first_size = Some(found.size);
        }
        present.push(object);
    }
    if !archived.is_empty() {
        findings.warnings.push(archived_warning(&archived));
    }
    if let Some(required) = required {
        check_retention(store, &present, required, &mut findings).await;
    }
    findings
}

/// Versions and delete markers other than the pinned one, judged by how `engine` restores.
fn above_pinned(
    engine: Engine,
    versions: &KeyVersions,
    pinned_id: Option<&str>,
    findings: &mut Findings,
) {
    match engine {
        Engine::Clickhouse => {
            if let Some(problem) = shadowed(versions, pinned_id) {
                findings.problems.push(format!(
                    "{problem}; `strongroom restore` refuses this backup: restore another \
                     one, and find out who wrote to the bucket"
                ));
            }
        }
        Engine::Postgresql => {
            if versions.hidden() {
                findings.warnings.push(format!(
                    "{} is hidden by a delete marker (versions: {}); restore reads the pinned \
                     version by its id, so it still works. Find out who deleted it",
                    versions.key,
                    versions.describe()
                ));
            }
            let others = versions
                .data()
                .filter(|v| v.version_id.as_deref() != pinned_id)
                .count();
            if others > 0 {
                findings.warnings.push(format!(
                    "{} has {others} other version(s) the manifest does not pin (versions: {}); \
                     restore reads the pinned version by its id",
                    versions.key,
                    versions.describe()
                ));
            }
        }
    }
}

/// One warning for all archived objects, naming the first few.
fn archived_warning(archived: &[String]) -> String {
    let named = archived
        .iter()
        .take(ARCHIVED_NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let more = archived.len().saturating_sub(ARCHIVED_NAMED);
    format!(
        "{} object(s) are archived in an archive storage class: {named}{}. They are intact, \
         but a restore cannot read them until they are restored from the archive (aws s3api \
         restore-object, which takes hours), and `verify --deep` cannot read them either",
        archived.len(),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}

/// Every present object's retention, read many at a time (a ClickHouse backup has an object
/// per file), against `required`.
async fn check_retention<S: ObjectStore>(
    store: &S,
    present: &[&ManifestObject],
    required: &Required,
    findings: &mut Findings,
) {
    let mut retentions = futures::stream::iter(present.iter().map(|object| async move {
        let actual = store
            .retention(&object.key, object.version_id.as_deref())
            .await;
        (object, actual)
    }))
    .buffered(RETENTION_CONCURRENCY);
    while let Some((object, actual)) = retentions.next().await {
        match actual {
            Ok(Some(actual)) if satisfies(&actual, &required.retention) => {
                let until = findings.retain_until.get_or_insert(actual.retain_until);
                *until = (*until).min(actual.retain_until);
            }
            Ok(actual) => {
                findings
                    .problems
                    .push(short_retention(&object.key, actual.as_ref(), required))
            }
            Err(e) => findings.problems.push(e.to_string()),
        }
    }
}

/// "`key` retention is ..., ... requires ...".
pub(crate) fn short_retention(
    key: &str,
    actual: Option<&Retention>,
    required: &Required,
) -> String {
    format!(
        "{key} retention is {}, {} requires {} until {}{}",
        actual.map_or("missing".into(), |a| format!(
            "{} until {}",
            a.mode.as_str(),
            a.retain_until
        )),
        required.by,
        required.retention.mode.as_str(),
        required.retention.retain_until,
        required.advice
    )
}

/// The longest common prefix of `keys`, cut back to a character boundary.
fn common_prefix<'a>(mut keys: impl Iterator<Item = &'a str>) -> &'a str {
    let Some(first) = keys.next() else { return "" };
    let mut len = first.len();
    for key in keys {
        len = first
            .bytes()
            .zip(key.bytes())
            .take(len)
            .take_while(|(a, b)| a == b)
            .count();
    }
    while !first.is_char_boundary(len) {
        len -= 1;
    }
    &first[..len]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Timestamp;
    use crate::manifest::Manifest;
    use crate::store::memory::MemoryStore;
    use crate::store::{Integrity, PartChecksum};
    use bytes::Bytes;
    use time::macros::datetime;

    async fn put(store: &MemoryStore, key: &str, body: &str) -> ManifestObject {
        let body = Bytes::from(body.to_owned());
        let sum = PartChecksum::compute(Integrity::Md5, &body);
        let size = body.len() as u64;
        let put = store.put_object(key, body, sum, None).await.unwrap();
        ManifestObject {
            key: key.into(),
            version_id: put.version_id,
            size_bytes: size,
            sha256: None,
        }
    }

    fn manifest(engine: Engine, objects: Vec<ManifestObject>) -> FetchedManifest {
        let started = datetime!(2026-11-23 02:00:00 UTC);
        FetchedManifest::unsigned(
            "b/x.manifest.json",
            Manifest {
                objects,
                ..Manifest::header(
                    engine,
                    "r",
                    Timestamp::new(started),
                    (started, started),
                    None,
                )
            },
        )
    }

    /// The same tampering, judged per engine: a newer version on one object, a delete marker on
    /// another, and a third archived.
    async fn tampered(engine: Engine) -> Findings {
        let store = MemoryStore::default();
        let objects = vec![
            put(&store, "b/x/newer", "pinned").await,
            put(&store, "b/x/hidden", "pinned").await,
            put(&store, "b/x/cold", "pinned").await,
        ];
        put(&store, "b/x/newer", "other bytes").await;
        store.hide("b/x/hidden");
        store.archive("b/x/cold", "GLACIER");
        check(&store, &manifest(engine, objects), None).await
    }

    #[tokio::test]
    async fn clickhouse_fails_what_restore_would_read_instead() {
        let found = tampered(Engine::Clickhouse).await;
        assert_eq!(found.problems.len(), 2, "{:?}", found.problems);
        assert!(
            found.problems[0].starts_with("b/x/newer has a newer version above the pinned v1"),
            "{}",
            found.problems[0]
        );
        assert!(
            found.problems[1].starts_with("b/x/hidden is hidden by a delete marker above"),
            "{}",
            found.problems[1]
        );
        assert!(
            found
                .problems
                .iter()
                .all(|p| p.contains("refuses this backup"))
        );
        assert_eq!(found.warnings.len(), 1, "{:?}", found.warnings);
        assert!(
            found.warnings[0].contains("1 object(s) are archived")
                && found.warnings[0].contains("b/x/cold (GLACIER)"),
            "{}",
            found.warnings[0]
        );
    }

    #[tokio::test]
    async fn postgresql_warns_as_restore_reads_the_pinned_version() {
        let found = tampered(Engine::Postgresql).await;
        assert!(found.problems.is_empty(), "{:?}", found.problems);
        assert_eq!(found.warnings.len(), 3, "{:?}", found.warnings);
        assert!(found.warnings[0].starts_with("b/x/newer has 1 other version(s)"));
        assert!(found.warnings[1].starts_with("b/x/hidden is hidden by a delete marker"));
        assert!(found.warnings[2].contains("archived"));
    }

    #[tokio::test]
    async fn older_clickhouse_versions_are_retries_and_harmless() {
        let store = MemoryStore::default();
        put(&store, "b/x/retried", "first attempt").await;
        let pinned = put(&store, "b/x/retried", "the upload").await;
        let found = check(&store, &manifest(Engine::Clickhouse, vec![pinned]), None).await;
        assert!(found.problems.is_empty(), "{:?}", found.problems);
        assert!(found.warnings.is_empty(), "{:?}", found.warnings);
    }
}
