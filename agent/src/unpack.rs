//! Streams one object version through SHA-256 and its decompressor (gzip or zstd) into a sink,
//! in one pass.
//!
//! The download runs on the async side (hashing every byte as it arrives); decompression and
//! writing run on a blocking thread, fed through a small bounded channel, so memory stays
//! bounded and a slow sink (psql) slows the download instead of filling memory. The sink is
//! handed back still open when the stream ends: the caller compares the hash with the manifest
//! and only then lets the sink finish (for restore: lets psql commit). The stream must be
//! complete: a truncated member or frame, a bad CRC or frame checksum, or trailing garbage is an
//! error. zstd frames may not ask for a window over 2 MiB (the agent writes 1 MiB frames), so a
//! hostile object cannot make the decoder allocate more before its hash is checked.

use std::io::{BufReader, Read, Write};
use std::time::Instant;

use bytes::{Buf as _, Bytes};
use flate2::read::MultiGzDecoder;
use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::layout::Codec;
use crate::store::{ObjectStore, StoreError};

/// Chunks buffered between download and decompression.
const CHANNEL_CHUNKS: usize = 16;
/// Decompressed bytes handed to the sink per write.
const WRITE_BUFFER: usize = 256 * 1024;
/// The largest zstd window accepted: 2 MiB (log2).
const ZSTD_WINDOW_LOG_MAX: u32 = 21;

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
    #[error(
        "{target} is not a complete {codec} stream: {source}. The object is damaged or truncated"
    )]
    Decompress {
        target: String,
        codec: Codec,
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
    Decompress(std::io::Error),
    Sink(std::io::Error),
}

/// A reader of the decompressed bytes of `compressed`: every gzip member or zstd frame in turn.
pub fn decoder<'a, R: Read + Send + 'a>(
    codec: Codec,
    compressed: R,
) -> std::io::Result<Box<dyn Read + Send + 'a>> {
    let buffered = BufReader::with_capacity(WRITE_BUFFER, compressed);
    Ok(match codec {
        Codec::Gzip => Box::new(MultiGzDecoder::new(buffered)),
        Codec::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(buffered)?;
            decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(decoder)
        }
    })
}

fn decompress<W: Write>(
    codec: Codec,
    reader: ChannelReader,
    mut sink: W,
) -> Result<(W, u64), (W, ThreadError)> {
    let mut decoder = match decoder(codec, reader) {
        Ok(decoder) => decoder,
        Err(e) => return Err((sink, ThreadError::Decompress(e))),
    };
    let mut buf = vec![0; WRITE_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((sink, ThreadError::Decompress(e))),
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

/// Where the compressed bytes come from: one object version, whole or a byte range of it.
#[derive(Debug, Clone, Copy)]
pub struct Compressed<'a> {
    pub key: &'a str,
    pub version_id: Option<&'a str>,
    pub codec: Codec,
    /// `(offset, length)`: whole members or frames (a section of a dump); `None`: the object.
    pub range: Option<(u64, u64)>,
}

/// Downloads `source`, hashing it, and writes its decompressed content to `sink`. On error the
/// sink is dropped: a caller for whom closing the sink means "commit" (psql) must hold another
/// handle on it (a duplicated fd) and stop the consumer before letting go.
pub async fn unpack_into<S, W>(
    store: &S,
    source: Compressed<'_>,
    sink: W,
) -> Result<Unpacked<W>, UnpackError>
where
    S: ObjectStore,
    W: Write + Send + 'static,
{
    let started = Instant::now();
    let Compressed {
        key,
        version_id,
        codec,
        range,
    } = source;
    let body = match range {
        None => store.get(key, version_id).await?,
        Some((offset, len)) => store.get_range(key, version_id, offset, len).await?,
    };
    let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
    let reader = ChannelReader {
        chunks: receiver,
        current: Bytes::new(),
    };
    let worker = tokio::task::spawn_blocking(move || decompress(codec, reader, sink));
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
        Err((_, ThreadError::Decompress(source))) => Err(UnpackError::Decompress {
            target: store.target(key),
            codec,
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

    fn whole(version: &Option<String>, codec: Codec) -> Compressed<'_> {
        Compressed {
            key: "k",
            version_id: version.as_deref(),
            codec,
            range: None,
        }
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
        let out = unpack_into(&store, whole(&version, Codec::Gzip), Vec::new())
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
            let e = unpack_into(&store, whole(&version, Codec::Gzip), Vec::new())
                .await
                .unwrap_err();
            assert!(matches!(e, UnpackError::Decompress { .. }), "{e}");
            assert!(e.to_string().contains("not a complete gzip stream"), "{e}");
        }
    }

    #[tokio::test]
    async fn zstd_frames_arrive_whole_and_damage_is_refused() {
        let text: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let zst: Vec<u8> = [&text[..100_000], &text[100_000..], b""]
            .iter()
            .flat_map(|p| crate::compress::zstd_frame(p, 3).unwrap())
            .collect();
        let (store, version) = stored(zst.clone()).await;
        let out = unpack_into(&store, whole(&version, Codec::Zstd), Vec::new())
            .await
            .unwrap();
        assert_eq!(out.sink, text);
        assert_eq!(out.sha256, <[u8; 32]>::from(Sha256::digest(&zst)));
        let mut flipped = zst.clone();
        flipped[zst.len() / 2] ^= 0x55;
        for bad in [
            zst[..zst.len() - 5].to_vec(),
            [zst.clone(), b"junk".to_vec()].concat(),
            flipped,
        ] {
            let (store, version) = stored(bad).await;
            let e = unpack_into(&store, whole(&version, Codec::Zstd), Vec::new())
                .await
                .unwrap_err();
            assert!(e.to_string().contains("not a complete zstd stream"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_zstd_frame_asking_for_a_large_window_is_refused() {
        // A long-range frame written by the zstd tool itself would need a 128 MiB window.
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.window_log(27).unwrap();
        std::io::Write::write_all(&mut encoder, &vec![1u8; 4 << 20]).unwrap();
        let (store, version) = stored(encoder.finish().unwrap()).await;
        let e = unpack_into(&store, whole(&version, Codec::Zstd), Vec::new())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not a complete zstd stream"), "{e}");
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
        let e = unpack_into(&store, whole(&version, Codec::Gzip), FailingSink)
            .await
            .unwrap_err();
        assert!(matches!(e, UnpackError::Sink { .. }), "{e}");
    }
}
