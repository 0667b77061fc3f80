//! `verify` for ClickHouse backups: the incremental chain is whole, and (`--deep`) the
//! `.backup` metadata is the one the manifest pinned and agrees with every object's size.

use sha2::{Digest as _, Sha256};

use super::Verdict;
pub(crate) use super::objects::shadowed;
use crate::catalog::{self, FetchedManifest};
use crate::config::Config;
use crate::engine::clickhouse::metadata::BackupMetadata;
use crate::error::Result;
use crate::layout::{self, Engine};
use crate::manifest::ClickHouseDetails;
use crate::signing::ManifestVerifier;
use crate::store::{ObjectStore, read_small};

/// `.backup` files are small; a bigger one is not ClickHouse's.
const METADATA_LIMIT: u64 = 256 * 1024 * 1024;

/// A chain longer than this is taken for a loop.
const CHAIN_LIMIT: usize = 1000;

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
    // Every link of the chain down to the full backup must be there, complete and authentic.
    let (bases, broken) = base_chain(store, config, verifier, details).await;
    verdict.problems.extend(broken);
    if !bases.is_empty() && verdict.problems.is_empty() {
        verdict.warnings.push(format!(
            "incremental: {} base backup(s) below it are present (verify them too)",
            bases.len()
        ));
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
}
