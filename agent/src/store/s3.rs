//! [`ObjectStore`] on aws-sdk-s3: multipart uploads with precomputed integrity headers, Object
//! Lock on every write, metadata-only read-back calls, and S3 error codes mapped to
//! [`StoreError`].
//!
//! The SDK's automatic request checksums are turned off (`WhenRequired`): for streaming bodies
//! they become aws-chunked uploads with trailers, which Ceph RGW rejects. The agent sends its own
//! checksum of each in-memory part instead ([`PartChecksum`]).

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart,
    ObjectLockEnabled, ObjectLockMode, ObjectLockRetention, ObjectLockRetentionMode,
};
use aws_smithy_types::DateTime;
use bytes::Bytes;
use time::OffsetDateTime;

use super::{
    BucketProtection, Integrity, ListPage, ObjectBody, ObjectHead, ObjectStore, ObjectSummary,
    ObjectVersion, PartChecksum, PutResult, Retention, StoreError, StoreResult, UploadedPart,
};
use crate::config::{LockMode, S3Config};

/// An S3 bucket reached with the standard AWS credential chain (env, web identity/IRSA, profile).
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
}

impl S3Store {
    /// GetObject, whole or one range, as a stream of chunks.
    async fn get_object(
        &self,
        key: &str,
        version_id: Option<&str>,
        range: Option<String>,
    ) -> StoreResult<ObjectBody> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .set_range(range)
            .send()
            .await
            .map_err(|e| self.err("GetObject", key, e))?;
        let target = self.target(key);
        let chunks = futures::stream::unfold(Some(out.body), move |body| {
            let target = target.clone();
            async move {
                let mut body = body?;
                match body.next().await? {
                    Ok(chunk) => Some((Ok(chunk), Some(body))),
                    Err(e) => Some((
                        Err(StoreError::Transport {
                            op: "GetObject",
                            target,
                            detail: DisplayErrorContext(&e).to_string(),
                        }),
                        None,
                    )),
                }
            }
        });
        Ok(ObjectBody {
            size: out.content_length.unwrap_or_default().max(0) as u64,
            chunks: Box::pin(chunks),
        })
    }

    /// Builds the client; no request is made until the first operation.
    pub async fn connect(config: &S3Config) -> S3Store {
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .load()
            .await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(config.max_attempts)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(20)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        S3Store {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
        }
    }

    /// The SDK client, for operations outside the agent's trait (tests, restore downloads).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Every current object under `prefix` (tests and tools; the agent lists page by page).
    pub async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectSummary>> {
        super::list_all(self, prefix).await
    }

    /// PutObject with integrity header and lock; create-only (`If-None-Match: *`) if asked.
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        checksum: PartChecksum,
        lock: Option<&Retention>,
        create_only: bool,
    ) -> StoreResult<PutResult> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(body.len() as i64)
            .body(ByteStream::from(body));
        if create_only {
            req = req.if_none_match("*");
        }
        req = match checksum {
            PartChecksum::Md5(_) => req.content_md5(checksum.base64()),
            PartChecksum::Sha256(_) => req.checksum_sha256(checksum.base64()),
            PartChecksum::Crc32(_) => req.checksum_crc32(checksum.base64()),
        };
        if let Some(lock) = lock {
            req = req
                .object_lock_mode(ObjectLockMode::from(lock.mode.as_str()))
                .object_lock_retain_until_date(to_smithy(lock.retain_until));
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.err("PutObject", key, e))?;
        Ok(PutResult {
            version_id: out.version_id().map(str::to_owned),
            etag: out.e_tag().map(unquote),
            checksum: match checksum {
                PartChecksum::Sha256(_) => out.checksum_sha256().map(str::to_owned),
                PartChecksum::Crc32(_) => out.checksum_crc32().map(str::to_owned),
                PartChecksum::Md5(_) => None,
            },
        })
    }

    fn err<E>(&self, op: &'static str, key: &str, err: SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        map_error(op, self.target(key), err)
    }
}

fn to_smithy(at: OffsetDateTime) -> DateTime {
    DateTime::from_secs(at.unix_timestamp())
}

fn from_smithy(at: &DateTime) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(at.secs()).ok()
}

fn parse_mode(mode: &str) -> Option<LockMode> {
    match mode {
        "GOVERNANCE" => Some(LockMode::Governance),
        "COMPLIANCE" => Some(LockMode::Compliance),
        _ => None,
    }
}

fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

fn checksum_algorithm(integrity: Integrity) -> Option<ChecksumAlgorithm> {
    match integrity {
        Integrity::Md5 => None,
        Integrity::Sha256 => Some(ChecksumAlgorithm::Sha256),
        Integrity::Crc32 => Some(ChecksumAlgorithm::Crc32),
    }
}

/// Maps SDK errors to [`StoreError`]; `target` is `s3://bucket/key`.
pub fn map_error<E>(op: &'static str, target: String, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        // Some emulators answer with malformed XML; the SDK then reports a "service error"
        // with a success status, or a response error.
        SdkError::ServiceError(ctx) if ctx.raw().status().is_success() => StoreError::Unparsable {
            op,
            target,
            detail: DisplayErrorContext(&err).to_string(),
        },
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().unwrap_or_default().to_owned();
            let message = ctx.err().message().unwrap_or_default().to_owned();
            match (code.as_str(), status) {
                ("NoSuchKey" | "NotFound" | "NoSuchVersion" | "NoSuchUpload", _) | ("", 404) => {
                    StoreError::NotFound { op, target }
                }
                ("PreconditionFailed", _) | (_, 412) => {
                    StoreError::PreconditionFailed { op, target }
                }
                ("InvalidObjectState", _) => StoreError::Archived { op, target },
                ("AccessDenied", _) | (_, 403) => StoreError::PermissionDenied {
                    op,
                    target,
                    code,
                    message,
                },
                _ => StoreError::Service {
                    op,
                    target,
                    code: if code.is_empty() {
                        format!("HTTP {status}")
                    } else {
                        code
                    },
                    message,
                },
            }
        }
        SdkError::ResponseError(_) => StoreError::Unparsable {
            op,
            target,
            detail: DisplayErrorContext(&err).to_string(),
        },
        _ => StoreError::Transport {
            op,
            target,
            detail: DisplayErrorContext(&err).to_string(),
        },
    }
}

impl ObjectStore for S3Store {
    fn target(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, key)
    }

    async fn protection(&self) -> StoreResult<BucketProtection> {
        let lock = self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await;
        let object_lock_enabled = match lock {
            Ok(out) => out
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| *e == ObjectLockEnabled::Enabled),
            Err(e) => match self.err("GetObjectLockConfiguration", "", e) {
                StoreError::Service { code, .. }
                    if code == "ObjectLockConfigurationNotFoundError" =>
                {
                    false
                }
                other => return Err(other),
            },
        };
        let versioning = self
            .client
            .get_bucket_versioning()
            .bucket(&self.bucket)
            .send()
            .await;
        let versioning_enabled = match versioning {
            Ok(out) => Some(out.status() == Some(&BucketVersioningStatus::Enabled)),
            Err(e) => match self.err("GetBucketVersioning", "", e) {
                StoreError::Unparsable { .. } => None,
                other => return Err(other),
            },
        };
        Ok(BucketProtection {
            object_lock_enabled,
            versioning_enabled,
        })
    }

    async fn create_multipart(
        &self,
        key: &str,
        integrity: Integrity,
        lock: Option<&Retention>,
    ) -> StoreResult<String> {
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_checksum_algorithm(checksum_algorithm(integrity));
        if let Some(lock) = lock {
            req = req
                .object_lock_mode(ObjectLockMode::from(lock.mode.as_str()))
                .object_lock_retain_until_date(to_smithy(lock.retain_until));
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.err("CreateMultipartUpload", key, e))?;
        out.upload_id.ok_or_else(|| StoreError::Unparsable {
            op: "CreateMultipartUpload",
            target: self.target(key),
            detail: "no UploadId in the answer".into(),
        })
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
        checksum: PartChecksum,
    ) -> StoreResult<UploadedPart> {
        let size = body.len() as u64;
        let req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(size as i64)
            .body(ByteStream::from(body));
        let req = match checksum {
            PartChecksum::Md5(_) => req.content_md5(checksum.base64()),
            PartChecksum::Sha256(_) => req.checksum_sha256(checksum.base64()),
            PartChecksum::Crc32(_) => req.checksum_crc32(checksum.base64()),
        };
        // No SigV4 payload hash: the part's integrity header (which the server checks) and the
        // read-back already cover its bytes, and hashing 8 MiB on an async worker delays the
        // agent's own endpoints by milliseconds.
        let out = req
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.err("UploadPart", key, e))?;
        Ok(UploadedPart {
            number,
            etag: out.e_tag().map(unquote).unwrap_or_default(),
            checksum,
            size,
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> StoreResult<PutResult> {
        let completed: Vec<CompletedPart> = parts
            .iter()
            .map(|p| {
                let part = CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(format!("\"{}\"", p.etag));
                match p.checksum {
                    PartChecksum::Md5(_) => part,
                    PartChecksum::Sha256(_) => part.checksum_sha256(p.checksum.base64()),
                    PartChecksum::Crc32(_) => part.checksum_crc32(p.checksum.base64()),
                }
                .build()
            })
            .collect();
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("CompleteMultipartUpload", key, e))?;
        let integrity = parts.first().map(|p| p.checksum.integrity());
        Ok(PutResult {
            version_id: out.version_id().map(str::to_owned),
            etag: out.e_tag().map(unquote),
            checksum: match integrity {
                Some(Integrity::Sha256) => out.checksum_sha256().map(str::to_owned),
                Some(Integrity::Crc32) => out.checksum_crc32().map(str::to_owned),
                _ => None,
            },
        })
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.err("AbortMultipartUpload", key, e))?;
        Ok(())
    }

    async fn put_new(
        &self,
        key: &str,
        body: Bytes,
        checksum: PartChecksum,
        lock: Option<&Retention>,
    ) -> StoreResult<PutResult> {
        self.put(key, body, checksum, lock, true).await
    }

    async fn put_object(
        &self,
        key: &str,
        body: Bytes,
        checksum: PartChecksum,
        lock: Option<&Retention>,
    ) -> StoreResult<PutResult> {
        self.put(key, body, checksum, lock, false).await
    }

    async fn list_versions(&self, prefix: &str) -> StoreResult<Vec<ObjectVersion>> {
        let mut versions = Vec::new();
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            let out = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| self.err("ListObjectVersions", prefix, e))?;
            versions.extend(out.versions().iter().map(|v| {
                ObjectVersion {
                    key: v.key().unwrap_or_default().to_owned(),
                    version_id: v.version_id().map(str::to_owned),
                    size: v.size().unwrap_or_default().max(0) as u64,
                    etag: v.e_tag().map(unquote),
                    is_latest: v.is_latest().unwrap_or(false),
                    last_modified: v.last_modified().and_then(from_smithy),
                    delete_marker: false,
                    storage_class: v
                        .storage_class()
                        .map(|c| c.as_str().to_owned())
                        .filter(|c| c != "STANDARD"),
                }
            }));
            versions.extend(out.delete_markers().iter().map(|m| ObjectVersion {
                key: m.key().unwrap_or_default().to_owned(),
                version_id: m.version_id().map(str::to_owned),
                is_latest: m.is_latest().unwrap_or(false),
                last_modified: m.last_modified().and_then(from_smithy),
                delete_marker: true,
                ..ObjectVersion::default()
            }));
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            version_marker = out.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                return Err(StoreError::Unparsable {
                    op: "ListObjectVersions",
                    target: self.target(prefix),
                    detail: "the page is truncated but carries no key marker; refusing to take \
                             a partial listing for the whole"
                        .into(),
                });
            }
        }
        // S3 sends versions and delete markers apart: each key's newest first again (stable,
        // so the server's order stands among versions of the same second).
        versions.sort_by(|a, b| {
            a.key
                .cmp(&b.key)
                .then(b.is_latest.cmp(&a.is_latest))
                .then(b.last_modified.cmp(&a.last_modified))
        });
        Ok(versions)
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
    ) -> StoreResult<ListPage> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_owned))
            .set_continuation_token(token.map(str::to_owned))
            .send()
            .await
            .map_err(|e| self.err("ListObjectsV2", prefix, e))?;
        let next = match (out.is_truncated(), out.next_continuation_token()) {
            (Some(true), Some(next)) => Some(next.to_owned()),
            (Some(true), None) => {
                return Err(StoreError::Unparsable {
                    op: "ListObjectsV2",
                    target: self.target(prefix),
                    detail: "the page is truncated but carries no continuation token; \
                             refusing to take a partial listing for the whole"
                        .into(),
                });
            }
            _ => None,
        };
        Ok(ListPage {
            folders: out
                .common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(str::to_owned))
                .collect(),
            objects: out
                .contents()
                .iter()
                .map(|o| ObjectSummary {
                    key: o.key().unwrap_or_default().to_owned(),
                    size: o.size().unwrap_or_default().max(0) as u64,
                    last_modified: o.last_modified().and_then(from_smithy),
                })
                .collect(),
            next,
        })
    }

    async fn head(&self, key: &str, version_id: Option<&str>) -> StoreResult<ObjectHead> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .send()
            .await
            .map_err(|e| self.err("HeadObject", key, e))?;
        Ok(ObjectHead {
            size: out.content_length().unwrap_or_default().max(0) as u64,
            etag: out.e_tag().map(unquote),
        })
    }

    async fn get(&self, key: &str, version_id: Option<&str>) -> StoreResult<ObjectBody> {
        self.get_object(key, version_id, None).await
    }

    async fn get_range(
        &self,
        key: &str,
        version_id: Option<&str>,
        offset: u64,
        len: u64,
    ) -> StoreResult<ObjectBody> {
        if len == 0 {
            return Ok(ObjectBody {
                size: 0,
                chunks: Box::pin(futures::stream::empty()),
            });
        }
        let range = format!("bytes={offset}-{}", offset + len - 1);
        let body = self.get_object(key, version_id, Some(range)).await?;
        if body.size != len {
            return Err(StoreError::Transport {
                op: "GetObject",
                target: self.target(key),
                detail: format!(
                    "asked for {len} bytes from offset {offset} and got {}: the server ignored \
                     the Range header or the object is shorter",
                    body.size
                ),
            });
        }
        Ok(body)
    }

    async fn retention(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> StoreResult<Option<Retention>> {
        let answer = self
            .client
            .get_object_retention()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .send()
            .await;
        let err = match answer {
            Ok(out) => {
                return Ok(out.retention().and_then(|r| {
                    Some(Retention {
                        mode: parse_mode(r.mode()?.as_str())?,
                        retain_until: from_smithy(r.retain_until_date()?)?,
                    })
                }));
            }
            Err(e) => self.err("GetObjectRetention", key, e),
        };
        match &err {
            StoreError::Service { code, .. }
                if code == "NoSuchObjectLockConfiguration"
                    || code == "ObjectLockConfigurationNotFoundError" =>
            {
                Ok(None)
            }
            // moto answers GetObjectRetention of an archived object as it would a GET.
            e if e.is_unsupported() || matches!(e, StoreError::Archived { .. }) => {
                tracing::debug!(key, error = %e, "GetObjectRetention unusable here; using HEAD");
                let out = self
                    .client
                    .head_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .set_version_id(version_id.map(str::to_owned))
                    .send()
                    .await
                    .map_err(|e| self.err("HeadObject", key, e))?;
                Ok((|| {
                    Some(Retention {
                        mode: parse_mode(out.object_lock_mode()?.as_str())?,
                        retain_until: from_smithy(out.object_lock_retain_until_date()?)?,
                    })
                })())
            }
            _ => Err(err),
        }
    }

    async fn set_retention(
        &self,
        key: &str,
        version_id: Option<&str>,
        retention: &Retention,
    ) -> StoreResult<()> {
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .retention(
                ObjectLockRetention::builder()
                    .mode(ObjectLockRetentionMode::from(retention.mode.as_str()))
                    .retain_until_date(to_smithy(retention.retain_until))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("PutObjectRetention", key, e))?;
        Ok(())
    }
}
