//! Streams a dump into one S3 object: source -> parallel gzip -> SHA-256 -> multipart upload.
//!
//! Nothing is held whole: memory is bounded by the compressor's blocks plus the part being
//! filled plus `upload_concurrency` parts in flight. [`stage`] uploads every part but does not
//! complete the upload, because only the caller knows whether the source (pg_dump) exited
//! cleanly; it then calls [`Staged::complete`] or [`Staged::abort`]. On any error inside
//! `stage`, and on cancellation, the multipart upload is aborted before the error is returned,
//! so no partial object ever becomes visible.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use futures::TryStreamExt as _;
use sha2::{Digest, Sha256};
use std::io::Read;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::compress::{self, Sections};
use crate::error::{Error, Result};
use crate::layout::Codec;
use crate::manifest::DumpSection;
use crate::readback::Sent;
use crate::store::checksum::expected_multipart;
use crate::store::{Integrity, ObjectStore, PartChecksum, Retention, StoreError, UploadedPart};

pub mod parts;

use parts::{MAX_PARTS, PartPlan};

/// How the stream is compressed and uploaded.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    pub parts: PartPlan,
    pub upload_concurrency: usize,
    pub codec: Codec,
    pub compression_level: u32,
    pub compression_threads: usize,
    pub block_size: usize,
    pub integrity: Integrity,
    /// The source is a plain dump: index its sections ([`crate::engine::postgres::sections`]).
    pub sections: bool,
}

/// Live counters for status reporting, updated as work happens (shared with part tasks).
#[derive(Debug, Default, Clone)]
pub struct Progress {
    /// Uncompressed bytes read from the source.
    pub bytes_read: Arc<AtomicU64>,
    /// Compressed bytes accepted by the store, counted as each part completes.
    pub bytes_uploaded: Arc<AtomicU64>,
}

impl Progress {
    /// Sets both counters, for work done elsewhere (ClickHouse uploads itself).
    pub fn set(&self, read: u64, uploaded: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.bytes_read.store(read, Relaxed);
        self.bytes_uploaded.store(uploaded, Relaxed);
    }
}

/// Every part uploaded, upload not yet completed.
pub struct Staged<S: ObjectStore> {
    store: Arc<S>,
    key: String,
    upload_id: String,
    parts: Vec<UploadedPart>,
    /// Compressed bytes.
    pub size: u64,
    pub uncompressed_size: u64,
    pub sha256: [u8; 32],
    /// The dump's sections with their compressed ranges and hashes, when indexed.
    pub sections: Option<Vec<DumpSection>>,
}

/// A completed upload, ready for read-back.
#[derive(Debug, Clone)]
pub struct Completed {
    pub sent: Sent,
    pub uncompressed_size: u64,
    pub sha256: [u8; 32],
    pub sections: Option<Vec<DumpSection>>,
}

impl<S: ObjectStore + 'static> Staged<S> {
    /// Makes the object visible. Aborts the upload if completing fails.
    pub async fn complete(self) -> Result<Completed> {
        let answer = self
            .store
            .complete_multipart(&self.key, &self.upload_id, &self.parts)
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                abort(&*self.store, &self.key, &self.upload_id).await;
                return Err(e.into());
            }
        };
        let checksums: Vec<PartChecksum> = self.parts.iter().map(|p| p.checksum).collect();
        let expected = expected_multipart(&checksums).expect("a staged upload has parts");
        Ok(Completed {
            sent: Sent {
                key: self.key,
                size: self.size,
                expected,
                answer,
            },
            uncompressed_size: self.uncompressed_size,
            sha256: self.sha256,
            sections: self.sections,
        })
    }

    /// Discards the upload: nothing becomes visible.
    pub async fn abort(self) {
        abort(&*self.store, &self.key, &self.upload_id).await;
    }
}

async fn abort<S: ObjectStore>(store: &S, key: &str, upload_id: &str) {
    match store.abort_multipart(key, upload_id).await {
        Ok(()) => tracing::info!(key, "multipart upload aborted; no object was created"),
        Err(e) => tracing::error!(
            key,
            upload_id,
            error = %e,
            "could not abort the multipart upload; no object is visible, and the bucket's \
             lifecycle rule for incomplete uploads will remove its parts"
        ),
    }
}

/// Uploads `source` compressed into `key`, without completing the upload. If `cancel` fires
/// first, the upload is aborted and [`Error::Cancelled`] returned.
pub async fn stage<S, R>(
    store: Arc<S>,
    key: &str,
    source: R,
    options: StreamOptions,
    lock: Option<&Retention>,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Staged<S>>
where
    S: ObjectStore + 'static,
    R: Read + Send + 'static,
{
    let upload_id = store.create_multipart(key, options.integrity, lock).await?;
    let uploaded = tokio::select! {
        // Dropping the upload drops its part tasks and the compressor; then abort below.
        _ = cancel.cancelled() => Err(Error::Cancelled { key: store.target(key) }),
        outcome = upload_parts(&store, key, &upload_id, source, options, progress) => outcome,
    };
    match uploaded {
        Ok(streamed) => Ok(Staged {
            store,
            key: key.to_owned(),
            upload_id,
            parts: streamed.parts,
            size: streamed.size,
            uncompressed_size: streamed.uncompressed,
            sha256: streamed.sha256,
            sections: streamed.sections,
        }),
        Err(e) => {
            abort(&*store, key, &upload_id).await;
            Err(e)
        }
    }
}

/// What [`upload_parts`] sent.
struct Streamed {
    parts: Vec<UploadedPart>,
    size: u64,
    uncompressed: u64,
    sha256: [u8; 32],
    sections: Option<Vec<DumpSection>>,
}

/// The compressed range and hash of each section, as its members go by.
#[derive(Default)]
struct SectionRanges {
    done: Vec<(u64, u64, [u8; 32])>,
    open: Option<(u64, Sha256)>,
}

impl SectionRanges {
    fn member(&mut self, offset: u64, member: &compress::Member) {
        if member.starts_section {
            self.close(offset);
            self.open = Some((offset, Sha256::new()));
        }
        if let Some((_, hasher)) = &mut self.open {
            hasher.update(&member.data);
        }
    }

    fn close(&mut self, end: u64) {
        if let Some((start, hasher)) = self.open.take() {
            self.done
                .push((start, end - start, hasher.finalize().into()));
        }
    }

    /// The sections the dump was cut into, with these ranges; `None` (logged) when the
    /// sectioner made no index or the two do not agree.
    fn index(mut self, key: &str, end: u64, found: Option<&Sections>) -> Option<Vec<DumpSection>> {
        self.close(end);
        let found = found?.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut sections = match found {
            Some(Ok(sections)) => sections,
            Some(Err(why)) => {
                tracing::warn!(key, reason = %why, "the dump has no section index: restores \
                    of this backup load it in one session");
                return None;
            }
            None => return None,
        };
        if sections.len() != self.done.len() {
            tracing::warn!(
                key,
                sections = sections.len(),
                ranges = self.done.len(),
                "internal error: sections and compressed ranges disagree; no section index"
            );
            return None;
        }
        for (section, (offset, size, sha256)) in sections.iter_mut().zip(self.done) {
            section.offset = offset;
            section.size_bytes = size;
            section.sha256 = hex::encode(sha256);
        }
        Some(sections)
    }
}

async fn upload_parts<S, R>(
    store: &Arc<S>,
    key: &str,
    upload_id: &str,
    source: R,
    options: StreamOptions,
    progress: &Progress,
) -> Result<Streamed>
where
    S: ObjectStore + 'static,
    R: Read + Send + 'static,
{
    let found = options.sections.then(compress::Sections::default);
    let members = compress::compress(
        source,
        options.codec,
        options.compression_level,
        options.compression_threads,
        options.block_size,
        found.clone(),
    );
    let mut ranges = SectionRanges::default();
    let mut members = std::pin::pin!(members);
    let mut hasher = Sha256::new();
    let (mut size, mut uncompressed) = (0u64, 0u64);
    // Each part is one allocation of exactly its size, filled and frozen without copying: a
    // growing buffer would double its capacity and pin up to 2x the part size per part.
    let mut buffer = BytesMut::with_capacity(options.parts.size(1));
    let mut in_flight: JoinSet<Result<UploadedPart>> = JoinSet::new();
    let mut parts = Vec::new();
    let mut number = 1;
    let mut uploader = PartUploader {
        store,
        key,
        upload_id,
        integrity: options.integrity,
        uploaded: Arc::clone(&progress.bytes_uploaded),
    };
    while let Some(member) = members
        .try_next()
        .await
        .map_err(|source| Error::SourceRead {
            key: key.to_owned(),
            source,
        })?
    {
        hasher.update(&member.data);
        ranges.member(size, &member);
        size += member.data.len() as u64;
        uncompressed += member.input_len as u64;
        progress
            .bytes_read
            .fetch_add(member.input_len as u64, Ordering::Relaxed);
        let mut rest = &member.data[..];
        while !rest.is_empty() {
            let target = options.parts.size(number);
            let take = rest.len().min(target - buffer.len());
            buffer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if buffer.len() == target {
                while in_flight.len() >= options.upload_concurrency {
                    parts.push(joined(in_flight.join_next().await)?);
                }
                let next = BytesMut::with_capacity(options.parts.size(number + 1));
                uploader.spawn(&mut in_flight, number, std::mem::replace(&mut buffer, next))?;
                number += 1;
            }
        }
    }
    tracing::debug!(key, uncompressed, size, "source read to the end");
    if !buffer.is_empty() || number == 1 {
        uploader.spawn(&mut in_flight, number, buffer)?;
    }
    while let Some(done) = in_flight.join_next().await {
        parts.push(joined(Some(done))?);
    }
    parts.sort_by_key(|p| p.number);
    Ok(Streamed {
        parts,
        size,
        uncompressed,
        sha256: hasher.finalize().into(),
        sections: ranges.index(key, size, found.as_ref()),
    })
}

fn joined(
    done: Option<std::result::Result<Result<UploadedPart>, tokio::task::JoinError>>,
) -> Result<UploadedPart> {
    done.expect("called only with parts in flight")
        .map_err(|e| Error::TaskFailed {
            task: "part upload",
            detail: e.to_string(),
        })?
}

struct PartUploader<'a, S> {
    store: &'a Arc<S>,
    key: &'a str,
    upload_id: &'a str,
    integrity: Integrity,
    uploaded: Arc<AtomicU64>,
}

impl<S: ObjectStore + 'static> PartUploader<'_, S> {
    /// Starts uploading one part on its own task, so uploads progress while compression goes on.
    fn spawn(
        &mut self,
        tasks: &mut JoinSet<Result<UploadedPart>>,
        number: i32,
        body: BytesMut,
    ) -> Result<()> {
        if number > MAX_PARTS {
            return Err(Error::TooLarge {
                key: self.key.to_owned(),
                parts: MAX_PARTS,
            });
        }
        let (store, key, upload_id) = (
            Arc::clone(self.store),
            self.key.to_owned(),
            self.upload_id.to_owned(),
        );
        let (integrity, uploaded) = (self.integrity, Arc::clone(&self.uploaded));
        let body = body.freeze();
        tracing::debug!(
            key = self.key,
            part = number,
            bytes = body.len(),
            "part upload started"
        );
        tasks.spawn(async move {
            let for_hash = body.clone();
            let checksum =
                tokio::task::spawn_blocking(move || PartChecksum::compute(integrity, &for_hash))
                    .await
                    .map_err(|e| Error::TaskFailed {
                        task: "part checksum",
                        detail: e.to_string(),
                    })?;
            let part = store
                .upload_part(&key, &upload_id, number, body, checksum)
                .await
                .map_err(|e: StoreError| Error::from(e))?;
            uploaded.fetch_add(part.size, Ordering::Relaxed);
            tracing::debug!(key, part = number, "part uploaded");
            Ok(part)
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use flate2::read::MultiGzDecoder;

    fn options(part_size: usize) -> StreamOptions {
        StreamOptions {
            parts: PartPlan::of_bytes(part_size as u64, 3),
            upload_concurrency: 2,
            codec: Codec::Gzip,
            compression_level: 1,
            compression_threads: 2,
            block_size: 1000,
            integrity: Integrity::Md5,
            sections: false,
        }
    }

    fn input(len: usize) -> Vec<u8> {
        // Poorly compressible so that parts fill up.
        let mut x: u32 = 12345;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect()
    }

    #[tokio::test]
    async fn staged_parts_complete_into_the_gzip_of_the_input() {
        let store = Arc::new(MemoryStore::default().verifying(&[Integrity::Md5]));
        let data = input(50_000);
        let progress = Progress::default();
        let staged = stage(
            store.clone(),
            "k",
            std::io::Cursor::new(data.clone()),
            options(7_000),
            None,
            &progress,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert!(staged.parts.len() > 3, "{} parts", staged.parts.len());
        assert_eq!(staged.uncompressed_size, 50_000);
        let done = staged.complete().await.unwrap();
        let stored = store.objects()["k"][0].data.clone();
        assert_eq!(stored.len() as u64, done.sent.size);
        assert_eq!(done.sha256, <[u8; 32]>::from(Sha256::digest(&stored)));
        let mut out = Vec::new();
        MultiGzDecoder::new(&stored[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        assert_eq!(progress.bytes_read.load(Ordering::Relaxed), 50_000);
        assert_eq!(
            progress.bytes_uploaded.load(Ordering::Relaxed),
            stored.len() as u64
        );
        let crate::store::checksum::Expected::Etag(want) = &done.sent.expected else {
            panic!("md5 parts give an ETag expectation");
        };
        assert_eq!(done.sent.answer.etag.as_deref(), Some(want.as_str()));
    }

    #[tokio::test]
    async fn a_failed_part_aborts_the_upload_and_leaves_no_object() {
        let store = Arc::new(MemoryStore::default());
        *store.fail_part.lock().unwrap() = Some(3);
        let result = stage(
            store.clone(),
            "k",
            std::io::Cursor::new(input(50_000)),
            options(7_000),
            None,
            &Progress::default(),
            &CancellationToken::new(),
        )
        .await;
        let e = result.err().expect("the injected failure surfaces");
        assert!(e.to_string().contains("injected failure"), "{e}");
        assert!(store.objects().is_empty());
        assert_eq!(store.open_uploads(), 0);
    }

    #[tokio::test]
    async fn zstd_parts_complete_into_the_zstd_frames_of_the_input() {
        let store = Arc::new(MemoryStore::default());
        let data = input(50_000);
        let staged = stage(
            store.clone(),
            "k",
            std::io::Cursor::new(data.clone()),
            StreamOptions {
                codec: Codec::Zstd,
                compression_level: 3,
                ..options(7_000)
            },
            None,
            &Progress::default(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        staged.complete().await.unwrap();
        let stored = store.objects()["k"][0].data.clone();
        assert_eq!(zstd::decode_all(&stored[..]).unwrap(), data);
    }

    #[tokio::test]
    async fn empty_input_is_one_valid_empty_gzip_part() {
        let store = Arc::new(MemoryStore::default());
        let staged = stage(
            store.clone(),
            "k",
            std::io::Cursor::new(Vec::new()),
            options(7_000),
            None,
            &Progress::default(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(staged.parts.len(), 1);
        staged.complete().await.unwrap();
        let stored = store.objects()["k"][0].data.clone();
        let mut out = Vec::new();
        MultiGzDecoder::new(&stored[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }

    /// A source that trickles forever, like a pg_dump stuck behind a lock.
    struct Trickle;
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(std::time::Duration::from_millis(5));
            let n = buf.len().min(3000);
            buf[..n].fill(7);
            Ok(n)
        }
    }

    #[tokio::test]
    async fn cancellation_aborts_the_upload() {
        let store = Arc::new(MemoryStore::default());
        let cancel = CancellationToken::new();
        let canceller = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                cancel.cancel();
            })
        };
        let result = stage(
            store.clone(),
            "k",
            Trickle,
            options(7_000),
            None,
            &Progress::default(),
            &cancel,
        )
        .await;
        canceller.await.unwrap();
        assert!(matches!(result, Err(Error::Cancelled { .. })));
        assert!(store.objects().is_empty());
        assert_eq!(store.open_uploads(), 0);
    }
}
