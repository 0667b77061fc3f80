//! How the agent writes any object: the integrity header chosen for the endpoint, the Object
//! Lock retention of the policy, and a read-back before the write counts.
//!
//! [`WritePolicy::prepare`] checks the bucket's protection and resolves `s3.integrity` once per
//! command; [`WritePolicy::put`] writes one small object (manifest, signature, checksum file,
//! report, audit event) and confirms it. Large dumps go through `pipeline` with the same policy.

use bytes::Bytes;
use time::OffsetDateTime;

use crate::config::S3Config;
use crate::error::Result;
use crate::lock::{self, LockPolicy};
use crate::readback::{self, Confirmed, Sent};
use crate::store::checksum::expected_single;
use crate::store::probe;
use crate::store::{Integrity, ObjectStore, PartChecksum, Retention};

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

    /// Writes a small object with integrity header and `retention`, then confirms it.
    pub async fn put<S: ObjectStore>(
        &self,
        store: &S,
        key: &str,
        body: Vec<u8>,
        retention: Option<&Retention>,
    ) -> Result<Confirmed> {
        let checksum = PartChecksum::compute(self.integrity, &body);
        let size = body.len() as u64;
        let answer = store
            .put_object(key, Bytes::from(body), checksum, retention)
            .await?;
        let sent = Sent {
            key: key.to_owned(),
            size,
            expected: expected_single(&checksum),
            answer,
        };
        readback::confirm(store, &sent, retention).await
    }
}
