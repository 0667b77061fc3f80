//! The bucket's record of backups: find a backup, fetch its manifest and authenticate it.
//!
//! A manifest is read only if its key holds exactly one version (the agent never rewrites a
//! manifest, so a second version means tampering or a bug), and, when a public key is
//! configured, only with a valid signature. Restore and verify start here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::layout::{self, BackupObject, Engine, SnapshotRef, Timestamp};
use crate::manifest::{Manifest, ManifestObject};
use crate::signing::ManifestVerifier;
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

/// The only version of `key`, or an error saying why there is not exactly one.
async fn single_version<S: ObjectStore>(store: &S, key: &str) -> Result<Option<ObjectVersion>> {
    let mut versions: Vec<ObjectVersion> = store
        .list_versions(key)
        .await?
        .into_iter()
        .filter(|v| v.key == key)
        .collect();
    match versions.len() {
        0 => Ok(None),
        1 => Ok(versions.pop()),
        n => Err(Error::ManifestRewritten {
            key: store.target(key),
            versions: n,
        }),
    }
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
    /// The dump's current size (ClickHouse: every object in the backup's folder).
    pub size_bytes: u64,
}

/// Every backup of `engine` for `release`, oldest first.
pub async fn backups<S: ObjectStore>(
    store: &S,
    prefix: &str,
    engine: Engine,
    release: &str,
) -> Result<Vec<Listed>> {
    let folder = layout::engine_folder(prefix, engine, release);
    let mut dumps: BTreeMap<Timestamp, u64> = BTreeMap::new();
    let mut folder_sizes: BTreeMap<Timestamp, u64> = BTreeMap::new();
    let mut manifests = BTreeSet::new();
    for object in store.list(&folder).await? {
        if engine == Engine::Clickhouse
            && let Some(ts) = object
                .key
                .strip_prefix(folder.as_str())
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(stamp, _)| Timestamp::parse(stamp))
        {
            *folder_sizes.entry(ts).or_default() += object.size;
        }
        match layout::classify(&folder, &object.key) {
            Some(BackupObject::Dump(ts)) => {
                dumps.insert(ts, object.size);
            }
            Some(BackupObject::Manifest(ts)) => {
                manifests.insert(ts);
            }
            _ => {}
        }
    }
    for (ts, size) in dumps.iter_mut() {
        if let Some(total) = folder_sizes.get(ts) {
            *size = *total;
        }
    }
    Ok(dumps
        .into_iter()
        .map(|(ts, size_bytes)| Listed {
            snapshot: SnapshotRef {
                engine,
                release: release.to_owned(),
                timestamp: ts,
                keys: layout::backup_keys(prefix, engine, release, ts),
            },
            complete: manifests.contains(&ts),
            size_bytes,
        })
        .collect())
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
