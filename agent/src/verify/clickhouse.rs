//! `verify` for ClickHouse backups: the incremental chain is whole, every base backup's objects
//! are as its manifest pins them (nothing above them that RESTORE would read instead) and
//! locked at least as long as the backup that depends on them, and (`--deep`) the `.backup`
//! metadata is the one the manifest pinned and agrees with every object's size.

use sha2::{Digest as _, Sha256};

use super::Verdict;
pub(crate) use super::objects::shadowed;
use super::objects::{self, Required};
use crate::catalog::{self, FetchedManifest};
use crate::config::Config;
use crate::engine::clickhouse::metadata::BackupMetadata;
use crate::error::Result;
use crate::layout::{self, Engine};
use crate::lock::satisfies;
use crate::manifest::ClickHouseDetails;
use crate::signing::ManifestVerifier;
use crate::store::versions::KeyVersions;
use crate::store::{ObjectStore, Retention, read_small};

/// `.backup` files are small; a bigger one is not ClickHouse's.
const METADATA_LIMIT: u64 = 256 * 1024 * 1024;

/// A chain longer than this is taken for a loop.
const CHAIN_LIMIT: usize = 1000;

/// Problems of one base backup listed one by one before the rest are only counted.
const BASE_PROBLEMS_NAMED: usize = 20;

/// The `.backup` a manifest pins, as read at its version, with its hex SHA-256.
pub(crate) struct PinnedMetadata {
    pub bytes: Vec<u8>,
    pub sha256: String,
}

impl PinnedMetadata {
    pub async fn read<S: ObjectStore>(
        store: &S,
        manifest: &FetchedManifest,
        details: &ClickHouseDetails,
    ) -> Result<PinnedMetadata> {
        let entry = manifest.object(&details.metadata_key)?;
        let bytes = read_small(
            store,
            &details.metadata_key,
            entry.version_id.as_deref(),
            METADATA_LIMIT,
        )
        .await?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Ok(PinnedMetadata { bytes, sha256 })
    }

    /// What is wrong when these are not the bytes the manifest recorded.
    pub fn mismatch(&self, details: &ClickHouseDetails) -> Option<String> {
        (self.sha256 != details.metadata_sha256).then(|| {
            format!(
                "{} hashes to {}, the manifest says {}",
                details.metadata_key, self.sha256, details.metadata_sha256
            )
        })
    }
}

/// The base backups below a ClickHouse backup, newest first, each with its folder and
/// manifest, and what broke the chain if it is not whole down to a full backup.
pub(crate) async fn base_chain<S: ObjectStore>(
    store: &S,
    config: &Config,
    verifier: Option<&ManifestVerifier>,
    details: &ClickHouseDetails,
) -> (Vec<(String, FetchedManifest)>, Option<String>) {
    let mut bases = Vec::new();
    let mut next = details.base_backup.clone();
    while let Some(folder) = next.take() {
        if bases.len() == CHAIN_LIMIT {
            return (
                bases,
                Some(format!(
                    "the base_backup chain is longer than {CHAIN_LIMIT} links"
                )),
            );
        }
        let key = folder.trim_end_matches('/');
        let fetched = match layout::parse_snapshot(&config.s3.prefix, Engine::Clickhouse, key) {
            Ok(snapshot) => catalog::fetch_manifest(store, &snapshot, verifier).await,
            Err(e) => Err(e.into()),
        };
        let manifest = match fetched {
            Ok(m) if m.manifest.clickhouse.is_some() => m,
            Ok(m) => {
                return (
                    bases,
                    Some(format!(
                        "missing link in the chain: base backup {folder}: its manifest {} has \
                         no clickhouse section",
                        m.key
                    )),
                );
            }
            Err(e) => {
                return (
                    bases,
                    Some(format!(
                        "missing link in the chain: base backup {folder}: {e}"
                    )),
                );
            }
        };
        next = manifest
            .manifest
            .clickhouse
            .as_ref()
            .and_then(|d| d.base_backup.clone());
        bases.push((folder, manifest));
    }
    (bases, None)
}

pub(super) async fn check<S: ObjectStore>(
    store: &S,
    config: &Config,
    verifier: Option<&ManifestVerifier>,
    manifest: &FetchedManifest,
    deep: bool,
    verdict: &mut Verdict,
) {
    let Some(details) = &manifest.manifest.clickhouse else {
        verdict
            .problems
            .push("the manifest has no clickhouse section".into());
        return;
    };
    verdict.size_bytes = Some(manifest.manifest.objects.iter().map(|o| o.size_bytes).sum());
    // Every link of the chain down to the full backup must be there, complete and authentic,
    // hold what its manifest pins, and stay locked as long as this backup needs it.
    let (bases, broken) = base_chain(store, config, verifier, details).await;
    verdict.problems.extend(broken);
    for (folder, base) in &bases {
        let required = base_requirement(base, manifest, &verdict.snapshot);
        let (problems, warnings) = check_base(store, config, folder, base, required).await;
        verdict.problems.extend(problems);
        verdict.warnings.extend(warnings);
    }
    if !deep || !verdict.problems.is_empty() {
        return;
    }
    let pinned = match PinnedMetadata::read(store, manifest, details).await {
        Ok(p) => p,
        Err(e) => {
            verdict.problems.push(e.to_string());
            return;
        }
    };
    if let Some(problem) = pinned.mismatch(details) {
        verdict.problems.push(problem);
        return;
    }
    let metadata = match BackupMetadata::parse(&pinned.bytes) {
        Ok(m) => m,
        Err(e) => {
            verdict
                .problems
                .push(format!("{}: {e}", details.metadata_key));
            return;
        }
    };
    let folder = details
        .metadata_key
        .strip_suffix(layout::CLICKHOUSE_METADATA)
        .unwrap_or_default();
    let stored = metadata.stored_objects();
    for (name, size) in &stored {
        let key = format!("{folder}{name}");
        match manifest.manifest.objects.iter().find(|o| o.key == key) {
            Some(o) if o.size_bytes == *size => {}
            Some(o) => verdict.problems.push(format!(
                "{key} is {} bytes in the manifest, .backup says {size}",
                o.size_bytes
            )),
            None => verdict
                .problems
                .push(format!("{key} is in .backup but not in the manifest")),
        }
    }
    if metadata.files.len() as u64 != details.files {
        verdict.problems.push(format!(
            ".backup lists {} files, the manifest says {}",
            metadata.files.len(),
            details.files
        ));
    }
    verdict.deep = Some(format!(
        ".backup sha256 ok, {} files, {} stored objects agree with the manifest",
        metadata.files.len(),
        stored.len()
    ));
}

/// The retention a base backup's objects must carry: its own manifest's mode, until the later
/// of its own retain-until and that of `top`, the backup being verified, which depends on it.
fn base_requirement(
    base: &FetchedManifest,
    top: &FetchedManifest,
    top_folder: &str,
) -> Option<Required> {
    let own = base.manifest.retention.as_ref();
    let dependent = top.manifest.retention.as_ref();
    let mode = own.or(dependent)?.mode;
    let (retain_until, by) = match (own, dependent) {
        (Some(o), Some(d)) if o.retain_until >= d.retain_until => {
            (o.retain_until, "its manifest".to_owned())
        }
        (Some(o), None) => (o.retain_until, "its manifest".to_owned()),
        (_, Some(d)) => (
            d.retain_until,
            format!("the incremental backup {top_folder} that depends on it"),
        ),
        (None, None) => return None,
    };
    Some(Required {
        retention: Retention { mode, retain_until },
        by,
        advice: "; extend it (Object Lock always allows a longer retention): aws s3api \
                 put-object-retention with that date, or run an incremental backup of this \
                 chain, which extends every base",
    })
}

/// One base backup of the chain: its objects as [`objects::check`] sees them, and its manifest
/// and signature retained as `required` says. Problems and warnings name the base.
async fn check_base<S: ObjectStore>(
    store: &S,
    config: &Config,
    folder: &str,
    base: &FetchedManifest,
    required: Option<Required>,
) -> (Vec<String>, Vec<String>) {
    let found = objects::check(store, base, required.as_ref()).await;
    let mut problems = found.problems;
    if let Some(required) = &required {
        problems.extend(marks_retention(store, config, folder, base, required).await);
    }
    if problems.len() > BASE_PROBLEMS_NAMED {
        let more = problems.len() - BASE_PROBLEMS_NAMED;
        problems.truncate(BASE_PROBLEMS_NAMED);
        problems.push(format!("{more} more problem(s) like these"));
    }
    let name = |p: String| format!("base backup {folder}: {p}");
    (
        problems.into_iter().map(name).collect(),
        found.warnings.into_iter().map(name).collect(),
    )
}

/// The retention of a base's manifest (the version read) and of its signature (if it has
/// one): a restore of the chain needs both as long as it needs the base's objects.
async fn marks_retention<S: ObjectStore>(
    store: &S,
    config: &Config,
    folder: &str,
    base: &FetchedManifest,
    required: &Required,
) -> Vec<String> {
    let mut marks = vec![(base.key.clone(), base.version_id.clone())];
    let key = folder.trim_end_matches('/');
    if let Ok(snapshot) = layout::parse_snapshot(&config.s3.prefix, Engine::Clickhouse, key) {
        let signature = snapshot.keys.signature;
        match KeyVersions::of(store, &signature).await {
            Ok(versions) => {
                if let Some(v) = versions.find(None) {
                    marks.push((signature, v.version_id.clone()));
                }
            }
            Err(e) => return vec![e.to_string()],
        }
    }
    let mut problems = Vec::new();
    for (key, version) in marks {
        match store.retention(&key, version.as_deref()).await {
            Ok(Some(r)) if satisfies(&r, &required.retention) => {}
            Ok(r) => problems.push(objects::short_retention(&key, r.as_ref(), required)),
            Err(e) => problems.push(e.to_string()),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Timestamp;
    use crate::manifest::{Manifest, ManifestObject};
    use crate::store::memory::MemoryStore;
    use crate::store::{Integrity, PartChecksum};
    use bytes::Bytes;
    use time::macros::datetime;

    #[tokio::test]
    async fn pinned_metadata_is_read_at_its_version_and_hashed() {
        let store = MemoryStore::default();
        let key = "b/x/.backup";
        let put = |body: &'static [u8]| {
            let sum = PartChecksum::compute(Integrity::Md5, body);
            store.put_object(key, Bytes::from_static(body), sum, None)
        };
        let pinned = put(b"<config/>").await.unwrap().version_id;
        put(b"<config>newer</config>").await.unwrap();
        let started = datetime!(2026-11-23 02:00:00 UTC);
        let manifest = FetchedManifest::unsigned(
            "b/x.manifest.json",
            Manifest {
                objects: vec![ManifestObject {
                    key: key.into(),
                    version_id: pinned,
                    size_bytes: 9,
                    sha256: None,
                }],
                ..Manifest::header(
                    Engine::Clickhouse,
                    "r",
                    Timestamp::new(started),
                    (started, started),
                    None,
                )
            },
        );
        let digest = hex::encode(Sha256::digest(b"<config/>"));
        let mut details = ClickHouseDetails {
            server_version: "26.9".into(),
            backup_id: "id".into(),
            scope: vec![],
            base_backup: None,
            chain_length: 0,
            metadata_key: key.into(),
            metadata_sha256: digest.clone(),
            files: 0,
            total_size_bytes: 0,
            tables: vec![],
        };
        let read = PinnedMetadata::read(&store, &manifest, &details)
            .await
            .unwrap();
        assert_eq!(read.bytes, b"<config/>");
        assert_eq!(read.mismatch(&details), None);
        details.metadata_sha256 = "0".repeat(64);
        assert_eq!(
            read.mismatch(&details),
            Some(format!(
                "b/x/.backup hashes to {digest}, the manifest says {}",
                "0".repeat(64)
            ))
        );
    }

    const OLD: Retention = Retention {
        mode: crate::config::LockMode::Governance,
        retain_until: datetime!(2033-11-22 02:00:00 UTC),
    };
    const NEW: Retention = Retention {
        mode: crate::config::LockMode::Governance,
        retain_until: datetime!(2033-11-23 02:00:00 UTC),
    };

    fn details(metadata_key: &str, base: Option<&str>) -> ClickHouseDetails {
        ClickHouseDetails {
            server_version: "26.9".into(),
            backup_id: "id".into(),
            scope: vec![],
            base_backup: base.map(str::to_owned),
            chain_length: u32::from(base.is_some()),
            metadata_key: metadata_key.into(),
            metadata_sha256: String::new(),
            files: 0,
            total_size_bytes: 0,
            tables: vec![],
        }
    }

    /// A base backup locked until `OLD` in the store, and an incremental on it that requires
    /// `NEW`, as fetched. Returns the base's folder, its data object's key, and the incremental.
    async fn chain(store: &MemoryStore) -> (String, String, FetchedManifest) {
        let at = |ts: &str| Timestamp::parse(ts).unwrap();
        let base = layout::clickhouse_keys("b", "r", at("20261122T020000Z"));
        let top = layout::clickhouse_keys("b", "r", at("20261123T020000Z"));
        let data = format!("{}data/a.bin", base.dump);
        let mut objects = Vec::new();
        for key in [&base.checksum, &data] {
            let body = Bytes::from(format!("contents of {key}"));
            let sum = PartChecksum::compute(Integrity::Md5, &body);
            let size = body.len() as u64;
            let put = store.put_object(key, body, sum, Some(&OLD)).await.unwrap();
            objects.push(ManifestObject {
                key: key.clone(),
                version_id: put.version_id,
                size_bytes: size,
                sha256: None,
            });
        }
        let started = datetime!(2026-11-22 02:00:00 UTC);
        let base_manifest = Manifest {
            objects,
            clickhouse: Some(details(&base.checksum, None)),
            ..Manifest::header(
                Engine::Clickhouse,
                "r",
                at("20261122T020000Z"),
                (started, started),
                Some(&OLD),
            )
        };
        let bytes = base_manifest.to_bytes();
        let sum = PartChecksum::compute(Integrity::Md5, &bytes);
        store
            .put_object(&base.manifest, Bytes::from(bytes), sum, Some(&OLD))
            .await
            .unwrap();
        let incremental = FetchedManifest::unsigned(
            &top.manifest,
            Manifest {
                clickhouse: Some(details(&top.checksum, Some(&base.dump))),
                ..Manifest::header(
                    Engine::Clickhouse,
                    "r",
                    at("20261123T020000Z"),
                    (started, started),
                    Some(&NEW),
                )
            },
        );
        (base.dump, data, incremental)
    }

    async fn verdict_of(store: &MemoryStore, incremental: &FetchedManifest) -> Verdict {
        let config = Config::from_yaml(
            "release: r\ns3:\n  bucket: backups-1\n  prefix: b\nclickhouse:\n  \
             named_collection: nc\n",
            std::path::Path::new("t"),
        )
        .unwrap();
        let mut verdict = Verdict::new(
            Engine::Clickhouse,
            "b/clickhouse/r/20261123T020000Z/".into(),
            "20261123T020000Z".into(),
        );
        check(store, &config, None, incremental, false, &mut verdict).await;
        verdict
    }

    #[tokio::test]
    async fn every_base_object_is_checked_against_the_backup_that_needs_it() {
        let store = MemoryStore::default();
        let (base, data, incremental) = chain(&store).await;
        let verdict = verdict_of(&store, &incremental).await;
        // Its .backup, its data file and its manifest: locked for the base, not for the chain.
        assert_eq!(verdict.problems.len(), 3, "{:?}", verdict.problems);
        for p in &verdict.problems {
            assert!(p.starts_with(&format!("base backup {base}: ")), "{p}");
            assert!(
                p.contains(
                    "the incremental backup b/clickhouse/r/20261123T020000Z/ that depends on it \
                     requires GOVERNANCE until 2033-11-23"
                ),
                "{p}"
            );
            assert!(p.contains("put-object-retention"), "{p}");
        }

        // Extended as the incremental's backup does it: no problem left.
        for (key, versions) in store.objects() {
            for v in versions {
                store
                    .set_retention(&key, Some(&v.version_id), &NEW)
                    .await
                    .unwrap();
            }
        }
        let verdict = verdict_of(&store, &incremental).await;
        assert!(verdict.problems.is_empty(), "{:?}", verdict.problems);

        // A delete marker on a base object: ClickHouse would find no file there.
        store.hide(&data);
        let verdict = verdict_of(&store, &incremental).await;
        assert_eq!(verdict.problems.len(), 1, "{:?}", verdict.problems);
        assert!(
            verdict.problems[0].starts_with(&format!(
                "base backup {base}: {data} is hidden by a delete marker"
            )),
            "{}",
            verdict.problems[0]
        );
    }
}
