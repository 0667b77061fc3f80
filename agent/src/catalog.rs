//! The bucket's record of backups: find a backup, fetch its manifest and authenticate it.
//!
//! A manifest is read only if its key holds one version, or several of the same bytes (the
//! agent writes each manifest once, create-only; a retried write whose answer was lost can
//! still leave two identical versions where the server ignores If-None-Match), and not when a
//! delete marker hides it; when a public key is configured, only with a valid signature.
//! Restore and verify start here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::layout::{self, BackupObject, Codec, Engine, SnapshotRef, Timestamp};
use crate::manifest::{Manifest, ManifestObject};
use crate::signing::ManifestVerifier;
use crate::store::versions::KeyVersions;
use crate::store::{ObjectStore, ObjectVersion, read_small};

/// Manifests and signatures are small; anything bigger than this is not ours.
const SMALL_OBJECT_LIMIT: u64 = 64 * 1024 * 1024;

/// What is known about a manifest's authenticity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SignatureStatus {
    /// Checked against the configured public key.
    Verified { key_id: String },
    /// No public key is configured, so nothing was checked.
    Unsigned { signature_present: bool },
}

impl fmt::Display for SignatureStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureStatus::Verified { key_id } => write!(f, "signed (key {key_id}), verified"),
            SignatureStatus::Unsigned {
                signature_present: true,
            } => f.write_str(
                "UNSIGNED check: a signature exists but no signing.public_key_file is configured",
            ),
            SignatureStatus::Unsigned {
                signature_present: false,
            } => {
                f.write_str("UNSIGNED: the backup has no signature and no public key is configured")
            }
        }
    }
}

/// A manifest read from the bucket, with what was checked about it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub key: String,
    pub version_id: Option<String>,
    /// Hex SHA-256 of the manifest's bytes, for reports and the audit trail.
    pub sha256: String,
    pub manifest: Manifest,
    pub signature: SignatureStatus,
}

impl FetchedManifest {
    /// The manifest's entry for `key`, which must be there.
    pub fn object(&self, key: &str) -> Result<&ManifestObject> {
        self.manifest
            .objects
            .iter()
            .find(|o| o.key == key)
            .ok_or_else(|| Error::ManifestMismatch {
                manifest: self.key.clone(),
                problem: format!("it does not list {key}"),
            })
    }
}

#[cfg(test)]
impl FetchedManifest {
    /// `manifest` as if fetched, unsigned, from `key`.
    pub fn unsigned(key: &str, manifest: Manifest) -> FetchedManifest {
        FetchedManifest {
            key: key.to_owned(),
            version_id: None,
            sha256: String::new(),
            manifest,
            signature: SignatureStatus::Unsigned {
                signature_present: false,
            },
        }
    }
}

/// Most versions of one manifest or signature that are compared byte for byte.
const IDENTICAL_VERSIONS_LIMIT: usize = 8;

/// The version of `key` to read: its only one, or the first of several that hold the same
/// bytes. A key hidden by a delete marker, or holding different bytes, is refused.
async fn single_version<S: ObjectStore>(store: &S, key: &str) -> Result<Option<ObjectVersion>> {
    let versions = KeyVersions::of(store, key).await?;
    if versions.is_empty() {
        return Ok(None);
    }
    if versions.hidden() {
        return Err(Error::Hidden {
            key: store.target(key),
            versions: versions.describe(),
        });
    }
    let data: Vec<&ObjectVersion> = versions.data().collect();
    let first = *data
        .last()
        .expect("not hidden, so a data version is listed");
    if data.len() > 1 {
        if versions.delete_markers() > 0 || !same_bytes(store, key, &data).await? {
            return Err(Error::ManifestRewritten {
                key: store.target(key),
                versions: data.len(),
            });
        }
        tracing::info!(
            key,
            versions = data.len(),
            "the key holds several versions of the same bytes (a retried write); reading the first"
        );
    }
    Ok(Some(first.clone()))
}

/// Whether the versions hold the same bytes: same size and ETag, or else the same SHA-256
/// when read (an ETag is no content hash under SSE-KMS).
async fn same_bytes<S: ObjectStore>(store: &S, key: &str, data: &[&ObjectVersion]) -> Result<bool> {
    let first = data[0];
    if data.iter().any(|v| v.size != first.size) || data.len() > IDENTICAL_VERSIONS_LIMIT {
        return Ok(false);
    }
    if let Some(etag) = &first.etag
        && data.iter().all(|v| {
            v.etag
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(etag))
        })
    {
        return Ok(true);
    }
    let mut digest = None;
    for v in data {
        let bytes = read_small(store, key, v.version_id.as_deref(), SMALL_OBJECT_LIMIT).await?;
        let this: [u8; 32] = Sha256::digest(&bytes).into();
        if *digest.get_or_insert(this) != this {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Fetches and authenticates the manifest of `snapshot`.
pub async fn fetch_manifest<S: ObjectStore>(
    store: &S,
    snapshot: &SnapshotRef,
    verifier: Option<&ManifestVerifier>,
) -> Result<FetchedManifest> {
    let keys = &snapshot.keys;
    let (manifest_version, signature_version) = tokio::try_join!(
        single_version(store, &keys.manifest),
        single_version(store, &keys.signature)
    )?;
    let manifest_version = manifest_version.ok_or_else(|| Error::NoManifest {
        key: store.target(&keys.manifest),
    })?;
    let version_id = manifest_version.version_id.clone();
    let bytes = read_small(
        store,
        &keys.manifest,
        version_id.as_deref(),
        SMALL_OBJECT_LIMIT,
    )
    .await?;
    let signature = match (verifier, signature_version) {
        (Some(verifier), Some(sig)) => {
            let sig_bytes = read_small(
                store,
                &keys.signature,
                sig.version_id.as_deref(),
                SMALL_OBJECT_LIMIT,
            )
            .await?;
            verifier.verify(&keys.manifest, &bytes, &sig_bytes)?;
            SignatureStatus::Verified {
                key_id: verifier.key_id.clone(),
            }
        }
        (Some(_), None) => {
            return Err(Error::Signing(crate::signing::SigningError::Invalid {
                manifest: store.target(&keys.manifest),
                problem: format!(
                    "{} does not exist, and signing.public_key_file is configured",
                    keys.signature
                ),
            }));
        }
        (None, present) => SignatureStatus::Unsigned {
            signature_present: present.is_some(),
        },
    };
    let manifest = Manifest::from_bytes(&keys.manifest, &bytes)?;
    if manifest.engine != snapshot.engine
        || manifest.release != snapshot.release
        || manifest.timestamp != snapshot.timestamp.to_string()
    {
        return Err(Error::ManifestMismatch {
            manifest: store.target(&keys.manifest),
            problem: format!(
                "it describes {} {} {}, not the snapshot named",
                manifest.engine, manifest.release, manifest.timestamp
            ),
        });
    }
    Ok(FetchedManifest {
        key: keys.manifest.clone(),
        version_id,
        sha256: hex::encode(Sha256::digest(&bytes)),
        manifest,
        signature,
    })
}

/// A backup found by listing.
#[derive(Debug, Clone)]
pub struct Listed {
    pub snapshot: SnapshotRef,
    /// Whether its manifest exists.
    pub complete: bool,
    /// The dump's current size; `None` for ClickHouse, whose backup is a folder of files a
    /// listing by folder does not add up (verify and the manifest have its size).
    pub size_bytes: Option<u64>,
    /// Which of its objects a delete marker hides (Object Lock kept the versions).
    pub hidden: Option<String>,
}

/// Every backup of `engine` for `release`, oldest first. Lists the release's folder page by
/// page with a delimiter, so the requests grow with the number of backups, never with the
/// files inside ClickHouse backups (each of which is one folder entry).
pub async fn backups<S: ObjectStore>(
    store: &S,
    prefix: &str,
    engine: Engine,
    release: &str,
) -> Result<Vec<Listed>> {
    let folder = layout::engine_folder(prefix, engine, release);
    // A PostgreSQL dump's size and codec; a ClickHouse backup's folder (size unknown from a
    // listing).
    let mut dumps: BTreeMap<Timestamp, (Option<u64>, Codec)> = BTreeMap::new();
    let mut manifests = BTreeSet::new();
    let mut token: Option<String> = None;
    loop {
        let page = store
            .list_page(&folder, Some("/"), token.as_deref())
            .await?;
        for sub in &page.folders {
            let stamp = sub
                .strip_prefix(folder.as_str())
                .and_then(|rest| rest.strip_suffix('/'))
                .and_then(Timestamp::parse);
            if let (Engine::Clickhouse, Some(ts)) = (engine, stamp) {
                dumps.insert(ts, (None, Codec::default()));
            }
        }
        for object in &page.objects {
            match layout::classify(&folder, &object.key) {
                Some(BackupObject::Dump(ts)) => {
                    let codec = Codec::of_dump(&object.key).unwrap_or_default();
                    dumps.insert(ts, (Some(object.size), codec));
                }
                Some(BackupObject::Manifest(ts)) => {
                    manifests.insert(ts);
                }
                _ => {}
            }
        }
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    let stamps: BTreeSet<Timestamp> = dumps.keys().chain(&manifests).copied().collect();
    let mut listed = Vec::with_capacity(stamps.len());
    for ts in stamps {
        let listed_dump = dumps.get(&ts).copied();
        let codec = listed_dump.map_or_else(Codec::default, |(_, codec)| codec);
        let mut keys = layout::backup_keys(prefix, engine, release, ts, codec);
        let complete = manifests.contains(&ts);
        // Only a backup missing one of its two marks costs a request: is it hidden?
        let hidden = match (listed_dump.is_some(), complete) {
            (true, true) => None,
            // A ClickHouse folder whose every file is hidden lists as nothing: its `.backup`
            // file says whether it was there.
            (false, _) if engine == Engine::Clickhouse => {
                hidden_part(store, &keys.checksum, "backup's .backup file").await?
            }
            // The listing does not say which codec a hidden dump had: look for either.
            (false, _) => {
                let mut found = None;
                for codec in Codec::ALL {
                    let candidate = layout::backup_keys(prefix, engine, release, ts, codec);
                    if let Some(why) = hidden_part(store, &candidate.dump, "dump").await? {
                        found = Some(why);
                        keys = candidate;
                        break;
                    }
                }
                found
            }
            (true, false) => hidden_part(store, &keys.manifest, "manifest").await?,
        };
        listed.push(Listed {
            snapshot: SnapshotRef {
                engine,
                release: release.to_owned(),
                timestamp: ts,
                keys,
            },
            complete,
            size_bytes: listed_dump.and_then(|(size, _)| size),
            hidden,
        });
    }
    Ok(listed)
}

/// "the dump is hidden by a delete marker", if `key` is.
async fn hidden_part<S: ObjectStore>(store: &S, key: &str, what: &str) -> Result<Option<String>> {
    let versions = KeyVersions::of(store, key).await?;
    Ok(versions.hidden().then(|| {
        format!(
            "the {what} {} is hidden by a delete marker (versions: {})",
            store.target(key),
            versions.describe()
        )
    }))
}

/// The newest backup that has a manifest.
pub async fn latest_complete<S: ObjectStore>(
    store: &S,
    prefix: &str,
    engine: Engine,
    release: &str,
) -> Result<SnapshotRef> {
    backups(store, prefix, engine, release)
        .await?
        .into_iter()
        .rev()
        .find(|b| b.complete)
        .map(|b| b.snapshot)
        .ok_or_else(|| Error::NoBackup {
            folder: store.target(&layout::engine_folder(prefix, engine, release)),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{Integrity, PartChecksum};
    use bytes::Bytes;

    async fn put(store: &MemoryStore, key: &str, body: &'static [u8]) {
        let sum = PartChecksum::compute(Integrity::Md5, body);
        store
            .put_object(key, Bytes::from_static(body), sum, None)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn several_versions_of_the_same_bytes_are_one_manifest() {
        let store = MemoryStore::default();
        put(&store, "m", b"{}").await;
        put(&store, "m", b"{}").await;
        let first = single_version(&store, "m").await.unwrap().unwrap();
        assert_eq!(first.version_id.as_deref(), Some("v1"));
    }

    #[tokio::test]
    async fn different_versions_are_a_rewrite_and_a_delete_marker_hides() {
        let store = MemoryStore::default();
        put(&store, "m", b"{}").await;
        put(&store, "m", b"{ }").await;
        let e = single_version(&store, "m").await.unwrap_err();
        assert!(
            matches!(e, Error::ManifestRewritten { versions: 2, .. }),
            "{e}"
        );
        put(&store, "h", b"{}").await;
        store.hide("h");
        let e = single_version(&store, "h").await.unwrap_err();
        assert!(e.to_string().contains("hidden by a delete marker"), "{e}");
        assert!(single_version(&store, "none").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_clickhouse_backup_whose_files_are_all_hidden_is_listed_hidden() {
        let store = MemoryStore::default();
        let ts = Timestamp::parse("20261123T020000Z").unwrap();
        let keys = layout::clickhouse_keys("b", "r", ts);
        let data = format!("{}data/part.bin", keys.dump);
        for key in [&keys.checksum, &data, &keys.manifest] {
            put(&store, key, b"x").await;
        }
        store.hide(&keys.checksum);
        store.hide(&data);
        let listed = backups(&store, "b", Engine::Clickhouse, "r").await.unwrap();
        assert_eq!(listed.len(), 1);
        let hidden = listed[0].hidden.as_deref().expect("listed as hidden");
        assert!(hidden.contains(".backup"), "{hidden}");
    }

    #[tokio::test]
    async fn a_hidden_zstd_dump_is_listed_hidden_under_its_own_key() {
        let store = MemoryStore::default();
        let ts = Timestamp::parse("20261123T020000Z").unwrap();
        let keys = layout::postgres_keys("b", "r", ts, Codec::Zstd);
        for key in [&keys.dump, &keys.manifest] {
            put(&store, key, b"x").await;
        }
        store.hide(&keys.dump);
        let listed = backups(&store, "b", Engine::Postgresql, "r").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].snapshot.keys, keys);
        let hidden = listed[0].hidden.as_deref().expect("listed as hidden");
        assert!(hidden.contains(".sql.zst"), "{hidden}");
    }
}
