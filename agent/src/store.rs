//! The object-store operations the agent needs, behind one small trait.
//!
//! [`ObjectStore`] is what the backup pipeline, the read-back and `list` are written against;
//! [`s3::S3Store`] implements it with aws-sdk-s3, and unit tests use an in-memory fake. Errors
//! carry a meaning callers can branch on (not found, denied, locked, unparsable answer) and always
//! the `s3://bucket/key` they concern. There is deliberately no delete operation: nothing in the
//! agent deletes from the backup bucket.

pub mod checksum;
pub mod probe;
pub mod s3;
pub mod s3_probes;
pub mod versions;

use std::future::Future;

use bytes::Bytes;
use time::OffsetDateTime;

pub use checksum::{Integrity, PartChecksum};

use crate::config::LockMode;

/// Object Lock settings sent with a write, or read back from an object version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub mode: LockMode,
    /// Whole seconds: some servers reject or truncate sub-second dates.
    pub retain_until: OffsetDateTime,
}

/// Whether the bucket can keep objects immutable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketProtection {
    pub object_lock_enabled: bool,
    /// `None` when the server's answer could not be read (some emulators send malformed XML);
    /// Object Lock cannot be enabled without versioning, so the lock flag decides then.
    pub versioning_enabled: Option<bool>,
}

/// One version of an object, or a delete marker, as listed (metadata only, no data read).
/// Versions of one key are listed newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectVersion {
    pub key: String,
    pub version_id: Option<String>,
    pub size: u64,
    /// Without quotes.
    pub etag: Option<String>,
    pub is_latest: bool,
    pub last_modified: Option<OffsetDateTime>,
    /// A delete marker: no data; while it is the latest, the key reads as missing.
    pub delete_marker: bool,
    /// `None` for STANDARD; GLACIER, DEEP_ARCHIVE... must be restored before they can be read.
    pub storage_class: Option<String>,
}

impl ObjectVersion {
    /// Whether reading it needs an S3 RestoreObject first.
    pub fn archived(&self) -> bool {
        matches!(
            self.storage_class.as_deref(),
            Some("GLACIER" | "DEEP_ARCHIVE" | "GLACIER_IR_ARCHIVE")
        )
    }
}

/// What HEAD says about a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    /// Without quotes.
    pub etag: Option<String>,
}

/// A streamed object body: chunks as they arrive, never the whole object in memory.
pub struct ObjectBody {
    pub size: u64,
    pub chunks: futures::stream::BoxStream<'static, StoreResult<Bytes>>,
}

/// A current object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSummary {
    pub key: String,
    pub size: u64,
    pub last_modified: Option<OffsetDateTime>,
}

/// One page of a listing of current objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// With a delimiter: the "folders" directly under the prefix (each ends in it).
    pub folders: Vec<String>,
    pub objects: Vec<ObjectSummary>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<String>,
}

/// What the server said after a write completed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutResult {
    pub version_id: Option<String>,
    /// Without quotes.
    pub etag: Option<String>,
    /// The checksum the server computed for the integrity algorithm in use, if it reported one.
    pub checksum: Option<String>,
}

/// A part accepted by the server, needed to complete the upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    pub number: i32,
    pub etag: String,
    pub checksum: PartChecksum,
    pub size: u64,
}

/// A store error always names the operation and the `s3://bucket/key` it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("s3 {op} {target}: not found")]
    NotFound { op: &'static str, target: String },
    /// A create-only write found the key taken.
    #[error("s3 {op} {target}: the key already exists, and this write may only create it")]
    PreconditionFailed { op: &'static str, target: String },
    /// The version is in an archive storage class.
    #[error(
        "s3 {op} {target}: the object is archived (InvalidObjectState): restore it from the \
         archive first (aws s3api restore-object), wait until it is readable, then run again"
    )]
    Archived { op: &'static str, target: String },
    #[error(
        "s3 {op} {target} was denied ({code}: {message}); the agent's credentials lack this \
         permission. The writer role needs the actions listed in README.md (Permissions)"
    )]
    PermissionDenied {
        op: &'static str,
        target: String,
        code: String,
        message: String,
    },
    #[error("s3 {op} {target}: the server's answer could not be read ({detail})")]
    Unparsable {
        op: &'static str,
        target: String,
        detail: String,
    },
    #[error("s3 {op} {target} failed: {code}: {message}")]
    Service {
        op: &'static str,
        target: String,
        code: String,
        message: String,
    },
    #[error(
        "s3 object {target} is {size} bytes, more than the {limit} expected of it; refusing to read it"
    )]
    TooLarge {
        target: String,
        size: u64,
        limit: u64,
    },
    #[error(
        "s3 {op} {target} failed before the server answered: {detail}; check s3.endpoint, the \
         network and the credentials"
    )]
    Transport {
        op: &'static str,
        target: String,
        detail: String,
    },
}

impl StoreError {
    /// The S3 error code, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            StoreError::PermissionDenied { code, .. } | StoreError::Service { code, .. } => {
                Some(code)
            }
            _ => None,
        }
    }

    /// Whether the server does not implement the call usably (malformed answer, not
    /// implemented), in which case a caller may fall back to another call (HEAD).
    pub fn is_unsupported(&self) -> bool {
        match self {
            StoreError::Unparsable { .. } => true,
            StoreError::Service { code, .. } => {
                matches!(code.as_str(), "NotImplemented" | "MethodNotAllowed")
            }
            _ => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The operations the agent performs on the backup bucket. No delete, by design.
pub trait ObjectStore: Send + Sync {
    /// `s3://bucket/key`, for messages.
    fn target(&self, key: &str) -> String;

    fn protection(&self) -> impl Future<Output = StoreResult<BucketProtection>> + Send;

    /// Starts a multipart upload whose parts will carry `integrity` checksums and whose object
    /// is locked by `lock` (servers that ignore this get the retention set after completion).
    fn create_multipart(
        &self,
        key: &str,
        integrity: Integrity,
        lock: Option<&Retention>,
    ) -> impl Future<Output = StoreResult<String>> + Send;

    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
        checksum: PartChecksum,
    ) -> impl Future<Output = StoreResult<UploadedPart>> + Send;

    fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> impl Future<Output = StoreResult<PutResult>> + Send;

    fn abort_multipart(
        &self,
        key: &str,
        upload_id: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// A create-only single-request write (`If-None-Match: *`): refused with
    /// [`StoreError::PreconditionFailed`] if the key exists, where the server honours the
    /// header (AWS S3, moto; Ceph RGW 16 only on unversioned buckets). Elsewhere it is a plain
    /// write, and the caller must look at the key's versions.
    fn put_new(
        &self,
        key: &str,
        body: Bytes,
        checksum: PartChecksum,
        lock: Option<&Retention>,
    ) -> impl Future<Output = StoreResult<PutResult>> + Send;

    /// A single-request write for small objects (manifests, checksum files).
    fn put_object(
        &self,
        key: &str,
        body: Bytes,
        checksum: PartChecksum,
        lock: Option<&Retention>,
    ) -> impl Future<Output = StoreResult<PutResult>> + Send;

    /// All versions and delete markers of objects whose key starts with `prefix`, each key's
    /// newest first. Needs only list permission.
    fn list_versions(
        &self,
        prefix: &str,
    ) -> impl Future<Output = StoreResult<Vec<ObjectVersion>>> + Send;

    /// One page (up to 1000 entries) of the current objects under `prefix`, from `token` (a
    /// previous page's `next`); with `delimiter`, keys below the next delimiter are grouped into
    /// [`ListPage::folders`]. A truncated page without a continuation token is an error, never
    /// a short listing.
    fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
    ) -> impl Future<Output = StoreResult<ListPage>> + Send;

    /// Size and ETag of one object version, read with HEAD: the fallback where listing versions
    /// is not available. HEAD needs read permission on AWS.
    fn head(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> impl Future<Output = StoreResult<ObjectHead>> + Send;

    /// Streams one object version (the latest when `version_id` is `None`).
    fn get(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> impl Future<Output = StoreResult<ObjectBody>> + Send;

    /// Streams `len` bytes from `offset` of one object version (a ranged GET).
    fn get_range(
        &self,
        key: &str,
        version_id: Option<&str>,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = StoreResult<ObjectBody>> + Send;

    /// The version's retention, `None` if it has none.
    fn retention(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> impl Future<Output = StoreResult<Option<Retention>>> + Send;

    fn set_retention(
        &self,
        key: &str,
        version_id: Option<&str>,
        retention: &Retention,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Every current object under `prefix`, page after page. For folders whose size is bounded
/// (an audit chain, a test); a release's backups are listed with a delimiter instead.
pub async fn list_all<S: ObjectStore>(store: &S, prefix: &str) -> StoreResult<Vec<ObjectSummary>> {
    let mut objects = Vec::new();
    let mut token = None;
    loop {
        let page = store.list_page(prefix, None, token.as_deref()).await?;
        objects.extend(page.objects);
        match page.next {
            Some(next) => token = Some(next),
            None => return Ok(objects),
        }
    }
}

/// Reads a small object (manifest, signature, audit event) whole, refusing anything larger than
/// `limit` bytes so a hostile object cannot exhaust memory.
pub async fn read_small<S: ObjectStore>(
    store: &S,
    key: &str,
    version_id: Option<&str>,
    limit: u64,
) -> StoreResult<Vec<u8>> {
    use futures::TryStreamExt as _;
    let body = store.get(key, version_id).await?;
    if body.size > limit {
        return Err(StoreError::TooLarge {
            target: store.target(key),
            size: body.size,
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(body.size as usize);
    let mut chunks = body.chunks;
    while let Some(chunk) = chunks.try_next().await? {
        if (bytes.len() + chunk.len()) as u64 > limit {
            return Err(StoreError::TooLarge {
                target: store.target(key),
                size: (bytes.len() + chunk.len()) as u64,
                limit,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[cfg(test)]
pub mod memory;
