//! How the agent writes any object: the integrity header chosen for the endpoint, the Object
//! Lock retention of the policy, and a read-back before the write counts.
//!
//! [`WritePolicy::prepare`] checks the bucket's protection and resolves `s3.integrity` once per
//! command; [`WritePolicy::put`] writes one small object (manifest, signature, checksum file,
//! report, audit event) and confirms it. Large dumps go through `pipeline` with the same policy.

use bytes::Bytes;
use time::OffsetDateTime;

use crate::config::S3Config;
use crate::error::{Error, Result};
use crate::lock::{self, LockPolicy};
use crate::readback::{self, Confirmed, Sent};
use crate::store::checksum::expected_single;
use crate::store::probe;
use crate::store::versions::KeyVersions;
use crate::store::{Integrity, ObjectStore, PartChecksum, Retention, StoreError};

/// The integrity header and lock policy for every write of one command.
#[derive(Debug, Clone, Copy)]
pub struct WritePolicy {
    pub integrity: Integrity,
    /// `None` only for an unprotected bucket with `s3.object_lock.required: false`.
    pub lock: Option<LockPolicy>,
}

impl WritePolicy {
    /// Checks the bucket's protection and resolves the integrity header (probing if `auto`).
    /// Writes nothing but aborted probe uploads.
    pub async fn prepare<S: ObjectStore>(store: &S, s3: &S3Config) -> Result<WritePolicy> {
        let lock = lock::require_protection(store, &s3.bucket, &s3.object_lock).await?;
        WritePolicy::with_lock(store, s3, lock).await
    }

    /// The policy for a bucket whose protection [`lock::require_protection`] has already
    /// checked: resolves `s3.integrity` only.
    pub async fn with_lock<S: ObjectStore>(
        store: &S,
        s3: &S3Config,
        lock: Option<LockPolicy>,
    ) -> Result<WritePolicy> {
        let choice = probe::resolve(store, s3.integrity, &s3.prefix).await?;
        tracing::info!(integrity = choice.integrity.as_str(), reason = %choice.reason,
            "integrity header chosen");
        Ok(WritePolicy {
            integrity: choice.integrity,
            lock,
        })
    }

    /// The retention for objects written by an action that started at `start`.
    pub fn retention_from(&self, start: OffsetDateTime) -> Option<Retention> {
        self.lock.map(|p| p.retention_from(start))
    }

    /// Writes a small object create-only, with integrity header and `retention`, then
    /// confirms it. A key that holds the same bytes already counts as written (this write,
    /// retried by the SDK after its answer was lost); any other content under the key is
    /// another writer's, and an error.
    pub async fn put<S: ObjectStore>(
        &self,
        store: &S,
        key: &str,
        body: Vec<u8>,
        retention: Option<&Retention>,
    ) -> Result<Confirmed> {
        let checksum = PartChecksum::compute(self.integrity, &body);
        let md5 = md5_hex(&body);
        let size = body.len() as u64;
        let answer = match store
            .put_new(key, Bytes::from(body), checksum, retention)
            .await
        {
            Ok(answer) => answer,
            Err(StoreError::PreconditionFailed { .. }) => {
                return adopt_existing(store, key, size, &md5, retention).await;
            }
            Err(e) => return Err(e.into()),
        };
        let sent = Sent {
            key: key.to_owned(),
            size,
            expected: expected_single(&checksum),
            answer,
        };
        let confirmed = readback::confirm(store, &sent, retention).await?;
        // Where the server ignored If-None-Match, other versions may sit beside this one.
        let others = KeyVersions::from_listing(key, confirmed.newer.iter().chain(&confirmed.older));
        if !others.is_empty() {
            if others.delete_markers() > 0 || !others.all_same_as(size, &md5) {
                return Err(Error::KeyTaken {
                    key: store.target(key),
                    versions: others.describe(),
                });
            }
            tracing::info!(
                key,
                others = others.all.len(),
                "the key also holds the same bytes from an earlier attempt of this write"
            );
        }
        Ok(confirmed)
    }
}

/// The server refused a create-only write: the key holds a version. If every version is these
/// bytes (an earlier attempt of this write succeeded), that first version is the write.
async fn adopt_existing<S: ObjectStore>(
    store: &S,
    key: &str,
    size: u64,
    md5: &str,
    retention: Option<&Retention>,
) -> Result<Confirmed> {
    let versions = KeyVersions::of(store, key).await?;
    let same =
        !versions.hidden() && versions.delete_markers() == 0 && versions.all_same_as(size, md5);
    let Some(first) = versions.oldest().filter(|_| same) else {
        return Err(Error::KeyTaken {
            key: store.target(key),
            versions: versions.describe(),
        });
    };
    tracing::info!(key, version_id = ?first.version_id,
        "create-only write refused, and the key holds these very bytes: an earlier attempt of \
         this write succeeded");
    let version_id = first.version_id.clone();
    let retention = match retention {
        Some(required) => {
            Some(readback::ensure_retention(store, key, version_id.as_deref(), required).await?)
        }
        None => None,
    };
    Ok(Confirmed {
        key: key.to_owned(),
        version_id,
        size,
        etag: first.etag.clone(),
        retention,
        newer: versions.all[..versions.all.len() - 1].to_vec(),
        older: Vec::new(),
    })
}

/// Hex MD5 of `bytes`: the ETag S3 gives a single-request write (without SSE-KMS).
fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    const POLICY: WritePolicy = WritePolicy {
        integrity: Integrity::Md5,
        lock: None,
    };

    #[tokio::test]
    async fn a_retried_write_of_the_same_bytes_is_the_first_one() {
        let store = MemoryStore::default();
        let first = POLICY
            .put(&store, "m", b"manifest".to_vec(), None)
            .await
            .unwrap();
        // The SDK sends it again after a lost answer; the memory store honours If-None-Match.
        let again = POLICY
            .put(&store, "m", b"manifest".to_vec(), None)
            .await
            .unwrap();
        assert_eq!(again.version_id, first.version_id);
        assert_eq!(store.objects()["m"].len(), 1);
    }

    #[tokio::test]
    async fn other_bytes_under_the_key_are_another_writers() {
        let store = MemoryStore::default();
        POLICY
            .put(&store, "m", b"manifest".to_vec(), None)
            .await
            .unwrap();
        let e = POLICY
            .put(&store, "m", b"another manifest".to_vec(), None)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::KeyTaken { .. }), "{e}");
        assert!(e.to_string().contains("already holds other content"), "{e}");
        assert_eq!(store.objects()["m"].len(), 1, "nothing was added");
    }

    #[tokio::test]
    async fn where_the_server_ignores_the_header_an_identical_version_beside_is_accepted() {
        let store = MemoryStore::default();
        // As Ceph RGW on a versioned bucket: the first attempt landed, the retry did too.
        let body = Bytes::from_static(b"manifest");
        let sum = PartChecksum::compute(Integrity::Md5, &body);
        store.put_object("m", body, sum, None).await.unwrap();
        let store = store.ignoring_conditions();
        let confirmed = POLICY
            .put(&store, "m", b"manifest".to_vec(), None)
            .await
            .unwrap();
        assert_eq!(confirmed.older.len(), 1);
        // But a different version beside it is refused.
        let body = Bytes::from_static(b"forged");
        let sum = PartChecksum::compute(Integrity::Md5, &body);
        store.put_object("n", body, sum, None).await.unwrap();
        let e = POLICY
            .put(&store, "n", b"manifest".to_vec(), None)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::KeyTaken { .. }), "{e}");
    }
}
