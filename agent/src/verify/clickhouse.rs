//! `verify` for ClickHouse backups: the incremental chain is whole, and (`--deep`) the
//! `.backup` metadata is the one the manifest pinned and agrees with every object's size.

use sha2::{Digest as _, Sha256};

use super::Verdict;
use crate::catalog::{self, FetchedManifest};
use crate::config::Config;
use crate::engine::clickhouse::metadata::BackupMetadata;
use crate::layout::{self, Engine};
use crate::signing::ManifestVerifier;
use crate::store::{ObjectStore, read_small};

/// `.backup` files are small; a bigger one is not ClickHouse's.
const METADATA_LIMIT: u64 = 256 * 1024 * 1024;

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
    let mut base = details.base_backup.clone();
    let mut links = 0;
    while let Some(folder) = base.take() {
        links += 1;
        let key = folder.trim_end_matches('/');
        let fetched = match layout::parse_snapshot(&config.s3.prefix, Engine::Clickhouse, key) {
            Ok(snapshot) => catalog::fetch_manifest(store, &snapshot, verifier).await,
            Err(e) => Err(e.into()),
        };
        match fetched {
            Ok(m) if links < 1000 => {
                base = m.manifest.clickhouse.and_then(|d| d.base_backup);
            }
            Ok(_) => verdict
                .problems
                .push("the base_backup chain is longer than 1000 links".into()),
            Err(e) => verdict.problems.push(format!(
                "missing link in the chain: base backup {folder}: {e}"
            )),
        }
    }
    if links > 0 && verdict.problems.is_empty() {
        verdict.warnings.push(format!(
            "incremental: {links} base backup(s) below it are present (verify them too)"
        ));
    }
    if !deep || !verdict.problems.is_empty() {
        return;
    }
    let Ok(entry) = manifest.object(&details.metadata_key) else {
        verdict.problems.push(format!(
            "the manifest does not list {}",
            details.metadata_key
        ));
        return;
    };
    let bytes = match read_small(
        store,
        &details.metadata_key,
        entry.version_id.as_deref(),
        METADATA_LIMIT,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => {
            verdict.problems.push(e.to_string());
            return;
        }
    };
    let digest = hex::encode(Sha256::digest(&bytes));
    if digest != details.metadata_sha256 {
        verdict.problems.push(format!(
            "{} hashes to {digest}, the manifest says {}",
            details.metadata_key, details.metadata_sha256
        ));
        return;
    }
    let metadata = match BackupMetadata::parse(&bytes) {
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
