//! `s3.integrity: auto`: find out once per endpoint which integrity header the server verifies.
//!
//! For each candidate (SHA-256 and MD5, concurrently) the probe starts a throw-away multipart upload
//! under `<prefix>/.strongroom/probe/`, sends one part with the correct checksum (must be
//! accepted) and one with a wrong checksum (a verifying server refuses it), then aborts the
//! upload. Aborted uploads leave no object, so nothing lands in the locked bucket and no delete
//! permission is needed. A server that verifies neither still gets `Content-MD5`, which every
//! implementation accepts and lock buckets require; the read-back then rests on ETags and sizes.

use bytes::Bytes;

use super::{Integrity, ObjectStore, PartChecksum, StoreResult};
use crate::config::IntegrityMode;

/// The outcome of resolving `s3.integrity`, with the reason for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityChoice {
    pub integrity: Integrity,
    pub reason: String,
    /// Whether the server was seen to verify the chosen header; `None` when it was configured.
    pub server_verifies: Option<bool>,
}

const BODY: &[u8] = b"strongroom integrity probe: this multipart upload is always aborted\n";

/// Resolve the configured mode; only `auto` makes requests.
pub async fn resolve<S: ObjectStore>(
    store: &S,
    mode: IntegrityMode,
    prefix: &str,
) -> StoreResult<IntegrityChoice> {
    let forced = |integrity, what: &str| IntegrityChoice {
        integrity,
        reason: format!("s3.integrity is set to {what}"),
        server_verifies: None,
    };
    match mode {
        IntegrityMode::Md5 => return Ok(forced(Integrity::Md5, "md5")),
        IntegrityMode::Sha256 => return Ok(forced(Integrity::Sha256, "sha256")),
        IntegrityMode::Crc32 => return Ok(forced(Integrity::Crc32, "crc32")),
        IntegrityMode::Auto => {}
    }
    let key = |kind: &str| format!("{prefix}/.strongroom/probe/{}-{kind}", uuid::Uuid::new_v4());
    let (sha256_key, md5_key) = (key("sha256"), key("md5"));
    let (sha256, md5) = tokio::try_join!(
        verifies(store, &sha256_key, Integrity::Sha256),
        verifies(store, &md5_key, Integrity::Md5),
    )?;
    if sha256 {
        return Ok(IntegrityChoice {
            integrity: Integrity::Sha256,
            reason: "the server verifies x-amz-checksum-sha256 (a part with a wrong SHA-256 was \
                     refused)"
                .into(),
            server_verifies: Some(true),
        });
    }
    if md5 {
        return Ok(IntegrityChoice {
            integrity: Integrity::Md5,
            reason: "the server ignores x-amz-checksum-sha256 but verifies Content-MD5 (a part \
                     with a wrong MD5 was refused)"
                .into(),
            server_verifies: Some(true),
        });
    }
    Ok(IntegrityChoice {
        integrity: Integrity::Md5,
        reason: "the server verifies neither x-amz-checksum-sha256 nor Content-MD5; sending \
                 Content-MD5, which Object Lock buckets require, and relying on the read-back of \
                 ETag and size"
            .into(),
        server_verifies: Some(false),
    })
}

/// True if a correct checksum is accepted and a wrong one refused.
async fn verifies<S: ObjectStore>(store: &S, key: &str, integrity: Integrity) -> StoreResult<bool> {
    let upload_id = store.create_multipart(key, integrity, None).await?;
    let good = PartChecksum::compute(integrity, BODY);
    let bad = PartChecksum::compute(integrity, b"not the body");
    let body = Bytes::from_static(BODY);
    let accepted = store
        .upload_part(key, &upload_id, 1, body.clone(), good)
        .await;
    let refused_wrong = match &accepted {
        Ok(_) => store
            .upload_part(key, &upload_id, 2, body, bad)
            .await
            .is_err(),
        Err(_) => false,
    };
    if let Err(e) = store.abort_multipart(key, &upload_id).await {
        tracing::warn!(key, error = %e, "could not abort the integrity probe upload; \
            the bucket's lifecycle rule for incomplete uploads will remove it");
    }
    if let Err(e) = &accepted {
        tracing::info!(key, integrity = integrity.as_str(), error = %e,
            "the server refused a part with a correct checksum of this kind");
    }
    Ok(accepted.is_ok() && refused_wrong)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn forced_modes_make_no_requests() {
        let store = MemoryStore::default();
        let choice = resolve(&store, IntegrityMode::Crc32, "p").await.unwrap();
        assert_eq!(choice.integrity, Integrity::Crc32);
        assert_eq!(store.request_count(), 0);
    }

    #[tokio::test]
    async fn auto_prefers_sha256_when_verified_and_leaves_nothing_behind() {
        let store = MemoryStore::default().verifying(&[Integrity::Sha256, Integrity::Md5]);
        let choice = resolve(&store, IntegrityMode::Auto, "p").await.unwrap();
        assert_eq!(choice.integrity, Integrity::Sha256);
        assert!(store.objects().is_empty());
        assert_eq!(store.open_uploads(), 0);
    }

    #[tokio::test]
    async fn auto_falls_back_to_md5() {
        let store = MemoryStore::default().verifying(&[Integrity::Md5]);
        let choice = resolve(&store, IntegrityMode::Auto, "p").await.unwrap();
        assert_eq!(choice.integrity, Integrity::Md5);
        assert!(choice.reason.contains("verifies Content-MD5"));
        let store = MemoryStore::default().verifying(&[]);
        let choice = resolve(&store, IntegrityMode::Auto, "p").await.unwrap();
        assert_eq!(choice.integrity, Integrity::Md5);
        assert!(choice.reason.contains("verifies neither"));
        assert_eq!(store.open_uploads(), 0);
    }
}
