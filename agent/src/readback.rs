//! Proves that an uploaded object version is complete and locked before anything refers to it.
//!
//! Uses metadata-only calls, so a writer that may not read backup data can run it: the server's
//! answer to the write (checksum or ETag), ListObjectVersions (present, size), and
//! GetObjectRetention. HEAD is used only where a server cannot list versions. A retention that
//! is missing or short (some servers ignore lock headers on multipart uploads) is set with
//! PutObjectRetention and checked again.

use crate::error::{Error, Result};
use crate::lock::satisfies;
use crate::store::checksum::Expected;
use crate::store::versions::KeyVersions;
use crate::store::{ObjectHead, ObjectStore, ObjectVersion, PutResult, Retention};

/// What the agent sent, and what the server answered to the write.
#[derive(Debug, Clone)]
pub struct Sent {
    pub key: String,
    pub size: u64,
    pub expected: Expected,
    pub answer: PutResult,
}

/// An object version that is present, whole and locked as required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    pub key: String,
    pub version_id: Option<String>,
    pub size: u64,
    pub etag: Option<String>,
    pub retention: Option<Retention>,
    /// Other versions and delete markers under the key, newer and older than this one, as
    /// listed (empty where the server cannot list versions). A create-only write that the
    /// server did not refuse can leave some: a retry of the same write, or another writer.
    pub newer: Vec<ObjectVersion>,
    pub older: Vec<ObjectVersion>,
}

fn fail(key: &str, problem: impl Into<String>) -> Error {
    Error::Verification {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// Check `sent` against the server; `lock` is the retention the object must carry (if any).
pub async fn confirm<S: ObjectStore>(
    store: &S,
    sent: &Sent,
    lock: Option<&Retention>,
) -> Result<Confirmed> {
    let key = sent.key.as_str();
    let version_id = sent.answer.version_id.clone();
    if lock.is_some() && version_id.is_none() {
        return Err(fail(
            key,
            "the server returned no VersionId although the bucket is versioned; the object \
             cannot be pinned. Check the bucket's versioning",
        ));
    }
    let (stored, newer, older) = stored_version(store, key, version_id.as_deref()).await?;
    if stored.size != sent.size {
        return Err(fail(
            key,
            format!(
                "stored size is {} bytes but {} were sent",
                stored.size, sent.size
            ),
        ));
    }
    if stored.size == 0 {
        return Err(fail(key, "the stored object is empty"));
    }
    check_integrity(sent, stored.etag.as_deref())?;
    let retention = match lock {
        Some(required) => {
            Some(ensure_retention(store, key, version_id.as_deref(), required).await?)
        }
        None => None,
    };
    Ok(Confirmed {
        key: key.to_owned(),
        version_id,
        size: stored.size,
        etag: stored.etag,
        retention,
        newer,
        older,
    })
}

/// The stored ETag (or, for flexible checksums, the server's answer to the write) must equal
/// the value computed locally from the bytes sent.
fn check_integrity(sent: &Sent, stored_etag: Option<&str>) -> Result<()> {
    let key = sent.key.as_str();
    match &sent.expected {
        Expected::Etag(want) => {
            let got = stored_etag.filter(|e| !e.is_empty()).or(sent
                .answer
                .etag
                .as_deref()
                .filter(|e| !e.is_empty()));
            match got {
                Some(got) if got.eq_ignore_ascii_case(want) => Ok(()),
                Some(got) => Err(fail(
                    key,
                    format!(
                        "the stored ETag {got} differs from the {want} computed from the bytes \
                         sent: the object is not what was uploaded (with SSE-KMS the ETag is \
                         not an MD5; use s3.integrity sha256 there)"
                    ),
                )),
                None => Err(fail(key, "the server reports no ETag for the object")),
            }
        }
        Expected::Checksum(want) => match &sent.answer.checksum {
            Some(got) if got == want => Ok(()),
            Some(got) => Err(fail(
                key,
                format!(
                    "the server's checksum {got} differs from the {want} computed from the \
                     bytes sent"
                ),
            )),
            None => Err(fail(
                key,
                "the server returned no checksum for the upload: it does not support flexible \
                 checksums. Set s3.integrity to auto or md5",
            )),
        },
    }
}

/// Size and ETag of the version from ListObjectVersions, with the versions newer and older
/// than it; else (servers without it) from HEAD.
async fn stored_version<S: ObjectStore>(
    store: &S,
    key: &str,
    version_id: Option<&str>,
) -> Result<(ObjectHead, Vec<ObjectVersion>, Vec<ObjectVersion>)> {
    match KeyVersions::of(store, key).await {
        Ok(versions) => versions
            .find(version_id)
            .map(|v| {
                let newer = versions.above(v.version_id.as_deref()).to_vec();
                let older = versions.all[newer.len() + 1..].to_vec();
                let head = ObjectHead {
                    size: v.size,
                    etag: v.etag.clone(),
                };
                (head, newer, older)
            })
            .ok_or_else(|| {
                fail(
                    key,
                    format!(
                        "version {} is not listed after the upload completed",
                        version_id.unwrap_or("(none)")
                    ),
                )
            }),
        Err(e) if e.is_unsupported() => {
            tracing::debug!(key, error = %e, "ListObjectVersions unusable here; using HEAD");
            Ok((store.head(key, version_id).await?, Vec::new(), Vec::new()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads the retention; sets it if missing or short; reads it again.
pub async fn ensure_retention<S: ObjectStore>(
    store: &S,
    key: &str,
    version_id: Option<&str>,
    required: &Retention,
) -> Result<Retention> {
    let current = store.retention(key, version_id).await?;
    if let Some(r) = current.filter(|r| satisfies(r, required)) {
        return Ok(r);
    }
    tracing::debug!(
        key,
        found = ?current,
        "retention missing or short after upload (the server ignored the lock headers); \
         setting it with PutObjectRetention"
    );
    store.set_retention(key, version_id, required).await?;
    match store.retention(key, version_id).await? {
        Some(r) if satisfies(&r, required) => Ok(r),
        other => Err(fail(
            key,
            format!(
                "retention is {other:?} after PutObjectRetention, the policy requires {} until {}",
                required.mode.as_str(),
                required.retain_until
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LockMode;
    use crate::store::checksum::expected_single;
    use crate::store::memory::MemoryStore;
    use crate::store::{Integrity, PartChecksum};
    use bytes::Bytes;
    use time::macros::datetime;

    const LOCK: Retention = Retention {
        mode: LockMode::Governance,
        retain_until: datetime!(2033-11-23 02:00:00 UTC),
    };

    async fn put(store: &MemoryStore, body: &'static [u8], lock: Option<&Retention>) -> Sent {
        let checksum = PartChecksum::compute(Integrity::Md5, body);
        let answer = store
            .put_object("k", Bytes::from_static(body), checksum, lock)
            .await
            .unwrap();
        Sent {
            key: "k".into(),
            size: body.len() as u64,
            expected: expected_single(&checksum),
            answer,
        }
    }

    #[tokio::test]
    async fn confirms_a_locked_object() {
        let store = MemoryStore::default();
        let sent = put(&store, b"data", Some(&LOCK)).await;
        let ok = confirm(&store, &sent, Some(&LOCK)).await.unwrap();
        assert_eq!(ok.size, 4);
        assert_eq!(ok.retention, Some(LOCK));
    }

    #[tokio::test]
    async fn sets_missing_retention_and_checks_again() {
        let store = MemoryStore::default();
        let sent = put(&store, b"data", None).await;
        let ok = confirm(&store, &sent, Some(&LOCK)).await.unwrap();
        assert_eq!(ok.retention, Some(LOCK));
        let stored = store.objects();
        assert_eq!(stored["k"][0].retention, Some(LOCK));
    }

    #[tokio::test]
    async fn size_and_etag_mismatches_fail() {
        let store = MemoryStore::default();
        let mut sent = put(&store, b"data", Some(&LOCK)).await;
        sent.size = 5;
        let e = confirm(&store, &sent, Some(&LOCK)).await.unwrap_err();
        assert!(
            e.to_string().contains("stored size is 4 bytes but 5"),
            "{e}"
        );
        let mut sent = put(&store, b"data", Some(&LOCK)).await;
        sent.expected = Expected::Etag("0".repeat(32));
        let e = confirm(&store, &sent, Some(&LOCK)).await.unwrap_err();
        assert!(e.to_string().contains("stored ETag"), "{e}");
    }

    #[tokio::test]
    async fn missing_server_checksum_is_an_error() {
        let store = MemoryStore::default();
        let mut sent = put(&store, b"data", Some(&LOCK)).await;
        sent.expected = Expected::Checksum("abc".into());
        let e = confirm(&store, &sent, Some(&LOCK)).await.unwrap_err();
        assert!(
            e.to_string().contains("Set s3.integrity to auto or md5"),
            "{e}"
        );
    }
}
