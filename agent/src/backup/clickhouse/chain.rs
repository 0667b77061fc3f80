//! The incremental chain below a new ClickHouse backup, and the retention it must keep.
//!
//! An incremental backup stores only new parts; RESTORE reads the rest from its base, and the
//! base's base, down to a full backup. So every object of every base must stay locked at least
//! as long as the newest backup that depends on it. Object Lock always allows extending a
//! retention, so before its manifest is written a new incremental extends its whole chain to
//! its own retain-until: every object each base manifest pins, and that base's manifest and
//! signature. Nothing is ever shortened, and a version keeps its mode.
//!
//! The backup writer reads nothing from the bucket itself: base manifests are read through the
//! ClickHouse server (as [`super::choose_base`] reads the previous one), and only listed and
//! retention-checked here. A chain that cannot be read means a full backup instead; a
//! retention that cannot be extended fails the backup (no manifest).

use std::future::Future;

use futures::{StreamExt as _, TryStreamExt as _};

use crate::engine::clickhouse::{ClickHouse, Destination};
use crate::error::{Error, Result};
use crate::layout::{self, BackupKeys, Engine};
use crate::lock::RETENTION_CONCURRENCY;
use crate::manifest::Manifest;
use crate::store::versions::KeyVersions;
use crate::store::{ObjectStore, Retention};

/// Where the chain's manifests are read from: the ClickHouse server (the backup writer may not
/// read the bucket), or a map in unit tests.
pub(crate) trait ManifestSource: Sync {
    fn read(&self, key: &str) -> impl Future<Output = Result<Vec<u8>>> + Send;
}

/// The server reading objects of the bucket it backs up to.
pub(crate) struct ThroughServer<'a> {
    pub server: &'a ClickHouse,
    pub destination: &'a Destination,
}

impl ManifestSource for ThroughServer<'_> {
    async fn read(&self, key: &str) -> Result<Vec<u8>> {
        Ok(self.server.read_object(self.destination, key).await?)
    }
}

/// One base backup of the chain, as its manifest pins it.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    /// The base's folder (ends in `/`).
    pub folder: String,
    pub keys: BackupKeys,
    pub manifest: Manifest,
}

/// Reads the chain from `folder` down to its full backup, newest first, from `source`. Each
/// manifest must describe the ClickHouse
/// backup in its folder, pin only objects inside that folder, and record one link less than
/// the one above it.
pub(crate) async fn read_chain(
    prefix: &str,
    folder: &str,
    source: &impl ManifestSource,
) -> Result<Vec<Link>> {
    let mut links: Vec<Link> = Vec::new();
    let mut next = Some(folder.to_owned());
    while let Some(folder) = next.take() {
        let snapshot =
            layout::parse_snapshot(prefix, Engine::Clickhouse, folder.trim_end_matches('/'))?;
        let keys = snapshot.keys;
        let bytes = source.read(&keys.manifest).await?;
        let manifest = Manifest::from_bytes(&keys.manifest, &bytes)?;
        let unfit = |problem: String| Error::ManifestMismatch {
            manifest: keys.manifest.clone(),
            problem,
        };
        let Some(details) = &manifest.clickhouse else {
            return Err(unfit("it has no clickhouse section".into()));
        };
        if manifest.engine != Engine::Clickhouse
            || manifest.timestamp != snapshot.timestamp.to_string()
        {
            return Err(unfit(format!(
                "it describes {} {}, not the backup in {folder}",
                manifest.engine, manifest.timestamp
            )));
        }
        if let Some(outside) = manifest
            .objects
            .iter()
            .find(|o| !o.key.starts_with(folder.as_str()))
        {
            return Err(unfit(format!("it pins {}, outside {folder}", outside.key)));
        }
        if let Some(above) = links.last() {
            let above_length = above.manifest.clickhouse.as_ref().map(|d| d.chain_length);
            if above_length != Some(details.chain_length + 1) {
                return Err(unfit(format!(
                    "it records chain length {}, but {} above it records {}",
                    details.chain_length,
                    above.keys.manifest,
                    above_length.unwrap_or_default()
                )));
            }
        }
        next = details.base_backup.clone();
        if next.is_some() && details.chain_length == 0 {
            return Err(unfit(
                "it names a base backup but records chain length 0".into(),
            ));
        }
        links.push(Link {
            folder,
            keys,
            manifest,
        });
    }
    Ok(links)
}

/// Extends the retention of everything `chain` needs to at least `until`: each link's pinned
/// objects, and every version of its manifest and signature. Returns how many versions were
/// extended (the others already were locked long enough).
pub(crate) async fn extend<S: ObjectStore>(
    store: &S,
    dependent: &str,
    chain: &[Link],
    until: &Retention,
) -> Result<usize> {
    let mut targets: Vec<(String, Option<String>)> = Vec::new();
    for link in chain {
        targets.extend(
            link.manifest
                .objects
                .iter()
                .map(|o| (o.key.clone(), o.version_id.clone())),
        );
        for key in [&link.keys.manifest, &link.keys.signature] {
            let versions = KeyVersions::of(store, key).await?;
            targets.extend(versions.data().map(|v| (key.clone(), v.version_id.clone())));
        }
    }
    // Collected first: a lazily mapped stream of borrowing futures is not `Send` enough for
    // the daemon's boxed backup future.
    let checks: Vec<_> = targets
        .iter()
        .map(|(key, version)| extend_one(store, dependent, key, version.as_deref(), until))
        .collect();
    let changed: Vec<bool> = futures::stream::iter(checks)
        .buffer_unordered(RETENTION_CONCURRENCY)
        .try_collect()
        .await?;
    let extended = changed.into_iter().filter(|c| *c).count();
    let bases: Vec<&str> = chain.iter().map(|l| l.folder.as_str()).collect();
    tracing::info!(
        bases = %bases.join(", "),
        versions = targets.len(),
        extended,
        until = %until.retain_until,
        "the incremental chain is locked at least as long as the new backup"
    );
    Ok(extended)
}

/// Extends one version to `until` (keeping its mode) unless it already is locked that long;
/// returns whether it changed anything.
async fn extend_one<S: ObjectStore>(
    store: &S,
    dependent: &str,
    key: &str,
    version: Option<&str>,
    until: &Retention,
) -> Result<bool> {
    let short = |problem: String| Error::Verification {
        key: store.target(key),
        problem: format!(
            "it must stay locked until {} as the incremental backup {dependent} depends on \
             it, and {problem}. No manifest was written; the writer role needs \
             s3:GetObjectRetention and s3:PutObjectRetention on the base backups' objects",
            until.retain_until
        ),
    };
    let current = store
        .retention(key, version)
        .await
        .map_err(|e| short(format!("reading its retention failed: {e}")))?;
    if current.is_some_and(|r| r.retain_until >= until.retain_until) {
        return Ok(false);
    }
    let wanted = Retention {
        mode: current.map_or(until.mode, |r| r.mode),
        retain_until: until.retain_until,
    };
    store
        .set_retention(key, version, &wanted)
        .await
        .map_err(|e| short(format!("extending it failed: {e}")))?;
    match store.retention(key, version).await {
        Ok(Some(r)) if r.retain_until >= until.retain_until => Ok(true),
        Ok(other) => Err(short(format!(
            "after PutObjectRetention its retention is {}",
            other.map_or("missing".into(), |r| format!(
                "{} until {}",
                r.mode.as_str(),
                r.retain_until
            ))
        ))),
        Err(e) => Err(short(format!("reading its retention back failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LockMode;
    use crate::layout::Timestamp;
    use crate::manifest::{ClickHouseDetails, ManifestObject};
    use crate::store::memory::MemoryStore;
    use crate::store::{Integrity, PartChecksum};
    use bytes::Bytes;
    use std::collections::BTreeMap;
    use time::macros::datetime;

    const OLD: Retention = Retention {
        mode: LockMode::Governance,
        retain_until: datetime!(2033-11-22 02:00:00 UTC),
    };
    const NEW: Retention = Retention {
        mode: LockMode::Governance,
        retain_until: datetime!(2033-11-23 02:00:00 UTC),
    };

    async fn put(store: &MemoryStore, key: &str, lock: &Retention) -> Option<String> {
        let body = Bytes::from(format!("contents of {key}"));
        let sum = PartChecksum::compute(Integrity::Md5, &body);
        store
            .put_object(key, body, sum, Some(lock))
            .await
            .unwrap()
            .version_id
    }

    /// A backup at `at` in `store` (objects, manifest, and a signature when `signed`), with
    /// `base` below it; returns its folder and manifest bytes.
    async fn backup(
        store: &MemoryStore,
        at: &str,
        base: Option<(&str, u32)>,
        signed: bool,
    ) -> (String, Vec<u8>) {
        let ts = Timestamp::parse(at).unwrap();
        let keys = layout::clickhouse_keys("b", "r", ts);
        let mut objects = Vec::new();
        for name in [".backup", "data/app/t/all_1_1_0/data.bin"] {
            let key = format!("{}{name}", keys.dump);
            let version_id = put(store, &key, &OLD).await;
            objects.push(ManifestObject {
                key,
                version_id,
                size_bytes: 1,
                sha256: None,
            });
        }
        let started = datetime!(2026-11-22 02:00:00 UTC);
        let manifest = Manifest {
            objects,
            clickhouse: Some(ClickHouseDetails {
                server_version: "26.9".into(),
                backup_id: "id".into(),
                scope: vec![],
                base_backup: base.map(|(f, _)| f.to_owned()),
                chain_length: base.map_or(0, |(_, l)| l),
                metadata_key: keys.checksum.clone(),
                metadata_sha256: String::new(),
                files: 0,
                total_size_bytes: 0,
                tables: vec![],
            }),
            ..Manifest::header(Engine::Clickhouse, "r", ts, (started, started), Some(&OLD))
        };
        let bytes = manifest.to_bytes();
        let sum = PartChecksum::compute(Integrity::Md5, &bytes);
        store
            .put_object(&keys.manifest, Bytes::from(bytes.clone()), sum, Some(&OLD))
            .await
            .unwrap();
        if signed {
            put(store, &keys.signature, &OLD).await;
        }
        (keys.dump, bytes)
    }

    /// The manifests of these backup folders, by manifest key.
    fn manifests<const N: usize>(folders: [(&String, Vec<u8>); N]) -> BTreeMap<String, Vec<u8>> {
        folders
            .into_iter()
            .map(|(folder, bytes)| {
                let key = format!("{}.manifest.json", folder.trim_end_matches('/'));
                (key, bytes)
            })
            .collect()
    }

    impl ManifestSource for BTreeMap<String, Vec<u8>> {
        async fn read(&self, key: &str) -> Result<Vec<u8>> {
            Ok(self[key].clone())
        }
    }

    #[tokio::test]
    async fn the_whole_chain_is_read_and_extended_never_shortened() {
        let store = MemoryStore::default();
        let (full, full_bytes) = backup(&store, "20261122T020000Z", None, true).await;
        let (inc, inc_bytes) = backup(&store, "20261122T030000Z", Some((&full, 1)), false).await;
        let manifests = manifests([(&full, full_bytes), (&inc, inc_bytes)]);
        let chain = read_chain("b", &inc, &manifests).await.unwrap();
        assert_eq!(
            chain.iter().map(|l| l.folder.as_str()).collect::<Vec<_>>(),
            [inc.as_str(), full.as_str()]
        );
        // 2 objects + manifest per link, and the full backup's signature.
        assert_eq!(extend(&store, "b/new/", &chain, &NEW).await.unwrap(), 7);
        for (key, versions) in store.objects() {
            for v in versions {
                assert_eq!(v.retention, Some(NEW), "{key}");
            }
        }
        // Already long enough: nothing is set again, and a later date is never shortened.
        assert_eq!(extend(&store, "b/new/", &chain, &NEW).await.unwrap(), 0);
        assert_eq!(extend(&store, "b/new/", &chain, &OLD).await.unwrap(), 0);
        assert!(
            store
                .objects()
                .values()
                .flatten()
                .all(|v| v.retention == Some(NEW))
        );
    }

    #[tokio::test]
    async fn a_chain_that_does_not_fit_is_refused() {
        let store = MemoryStore::default();
        let (full, full_bytes) = backup(&store, "20261122T020000Z", None, false).await;
        // Claims two links below it, but its base is a full backup.
        let (inc, inc_bytes) = backup(&store, "20261122T030000Z", Some((&full, 2)), false).await;
        let manifests = manifests([(&full, full_bytes), (&inc, inc_bytes)]);
        let e = read_chain("b", &inc, &manifests)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("chain length 0"), "{e}");
        assert!(e.contains(full.trim_end_matches('/')), "{e}");
    }
}
