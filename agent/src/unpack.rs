//! Streams one object version through SHA-256 and gunzip into a sink, in one pass.
//!
//! The download runs on the async side (hashing every byte as it arrives); decompression and
//! writing run on a blocking thread, fed through a small bounded channel, so memory stays
//! bounded and a slow sink (psql) slows the download instead of filling memory. The sink is
//! handed back still open when the stream ends: the caller compares the hash with the manifest
//! and only then lets the sink finish (for restore: lets psql commit). The gzip stream must be
//! complete: a truncated member, a bad CRC or trailing garbage is an error.

use std::io::{BufReader, Read, Write};
use std::time::Instant;

use bytes::{Buf as _, Bytes};
use flate2::read::MultiGzDecoder;
use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::store::{ObjectStore, StoreError};

/// Chunks buffered between download and decompression.
const CHANNEL_CHUNKS: usize = 16;
/// Decompressed bytes handed to the sink per write.
const WRITE_BUFFER: usize = 256 * 1024;

/// The outcome of a completed pass.
#[derive(Debug)]
pub struct Unpacked<W> {
    /// The sink, still open.
    pub sink: W,
    pub sha256: [u8; 32],
    /// Compressed bytes received.
    pub size: u64,
    /// Decompressed bytes written to the sink.
    pub uncompressed: u64,
    /// Seconds until the last byte arrived from the store.
    pub download_seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{target} is not a complete gzip stream: {source}. The object is damaged or truncated")]
    Gzip {
        target: String,
        source: std::io::Error,
    },
    /// Writing to the sink failed (for restore: psql stopped reading).
    #[error("writing the decompressed data failed: {source}")]
    Sink { source: std::io::Error },
    #[error("internal error: the decompression thread failed: {0}; please report this")]
    Thread(String),
}

/// A blocking `Read` over chunks sent from the async side.
struct ChannelReader {
    chunks: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

enum ThreadError {
    Gzip(std::io::Error),
    Sink(std::io::Error),
}

fn decompress<W: Write>(reader: ChannelReader, mut sink: W) -> Result<(W, u64), (W, ThreadError)> {
    let mut decoder = MultiGzDecoder::new(BufReader::with_capacity(WRITE_BUFFER, reader));
    let mut buf = vec![0; WRITE_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((sink, ThreadError::Gzip(e))),
        };
        if let Err(e) = sink.write_all(&buf[..n]) {
            return Err((sink, ThreadError::Sink(e)));
        }
        total += n as u64;
    }
    match sink.flush() {
        Ok(()) => Ok((sink, total)),
        Err(e) => Err((sink, ThreadError::Sink(e))),
    }
}

/// Downloads `key` at `version_id`, hashing it, and writes its decompressed content to `sink`.
/// On error the sink is dropped: a caller for whom closing the sink means "commit" (psql) must
/// hold another handle on it (a duplicated fd) and stop the consumer before letting go.
pub async fn gunzip_into<S, W>(
    store: &S,
    key: &str,
    version_id: Option<&str>,
    sink: W,
) -> Result<Unpacked<W>, UnpackError>
where
    S: ObjectStore,
    W: Write + Send + 'static,
{
    let started = Instant::now();
    let body = store.get(key, version_id).await?;
    unpack_body(store, key, body, started, sink).await
}

/// [`gunzip_into`] for the `len` bytes at `offset` (whole gzip members: a section of a dump).
pub async fn gunzip_range_into<S, W>(
    store: &S,
    key: &str,
    version_id: Option<&str>,
    (offset, len): (u64, u64),
    sink: W,
) -> Result<Unpacked<W>, UnpackError>
where
    S: ObjectStore,
    W: Write + Send + 'static,
{
    let started = Instant::now();
    let body = store.get_range(key, version_id, offset, len).await?;
    unpack_body(store, key, body, started, sink).await
}

async fn unpack_body<S, W>(
    store: &S,
    key: &str,
    body: crate::store::ObjectBody,
    started: Instant,
    sink: W,
) -> Result<Unpacked<W>, UnpackError>
where
    S: ObjectStore,
    W: Write + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
    let reader = ChannelReader {
        chunks: receiver,
        current: Bytes::new(),
    };
    let worker = tokio::task::spawn_blocking(move || decompress(reader, sink));
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut chunks = body.chunks;
    let mut download_error = None;
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(chunk) => {
                hasher.update(&chunk);
                size += chunk.len() as u64;
                if sender.send(chunk).await.is_err() {
                    break; // the worker stopped; its error says why
                }
            }
            Err(e) => {
                download_error = Some(e);
                break;
            }
        }
    }
    let download_seconds = started.elapsed().as_secs_f64();
    drop(sender);
    let outcome = worker
        .await
        .map_err(|e| UnpackError::Thread(e.to_string()))?;
    if let Some(e) = download_error {
        return Err(e.into());
    }
    match outcome {
        Ok((sink, uncompressed)) => Ok(Unpacked {
            sink,
            sha256: hasher.finalize().into(),
            size,
            uncompressed,
            download_seconds,
        }),
        Err((_, ThreadError::Gzip(source))) => Err(UnpackError::Gzip {
            target: store.target(key),
            source,
        }),
        Err((_, ThreadError::Sink(source))) => Err(UnpackError::Sink { source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{Integrity, PartChecksum};

    fn gzip_members(parts: &[&[u8]]) -> Vec<u8> {
        parts
            .iter()
            .flat_map(|p| crate::compress::gzip_member(p, 6).unwrap())
            .collect()
    }

    async fn stored(bytes: Vec<u8>) -> (MemoryStore, Option<String>) {
        let store = MemoryStore::default();
        let sum = PartChecksum::compute(Integrity::Md5, &bytes);
        let put = store
            .put_object("k", Bytes::from(bytes), sum, None)
            .await
            .unwrap();
        (store, put.version_id)
    }

    #[tokio::test]
    async fn concatenated_members_arrive_whole_with_the_hash_of_the_object() {
        let text: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let gz = gzip_members(&[&text[..100_000], &text[100_000..], b""]);
        let (store, version) = stored(gz.clone()).await;
        let out = gunzip_into(&store, "k", version.as_deref(), Vec::new())
            .await
            .unwrap();
        assert_eq!(out.sink, text);
        assert_eq!(out.uncompressed, text.len() as u64);
        assert_eq!(out.size, gz.len() as u64);
        assert_eq!(out.sha256, <[u8; 32]>::from(Sha256::digest(&gz)));
    }

    #[tokio::test]
    async fn truncated_and_trailing_garbage_are_incomplete_gzip() {
        let gz = gzip_members(&[b"hello world, hello world", b"second member"]);
        for bad in [
            gz[..gz.len() - 5].to_vec(),
            [gz.clone(), b"junk".to_vec()].concat(),
        ] {
            let (store, version) = stored(bad).await;
            let e = gunzip_into(&store, "k", version.as_deref(), Vec::new())
                .await
                .unwrap_err();
            assert!(matches!(e, UnpackError::Gzip { .. }), "{e}");
            assert!(e.to_string().contains("not a complete gzip stream"), "{e}");
        }
    }

    #[derive(Debug)]
    struct FailingSink;
    impl Write for FailingSink {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_sink_that_stops_reading_stops_the_pass() {
        let gz = gzip_members(&[&vec![7u8; 2_000_000]]);
        let (store, version) = stored(gz).await;
        let e = gunzip_into(&store, "k", version.as_deref(), FailingSink)
            .await
            .unwrap_err();
        assert!(matches!(e, UnpackError::Sink { .. }), "{e}");
    }
}
