//! Parallel gzip for a stream: the input is cut into fixed-size blocks, each block is compressed
//! on tokio's blocking pool as an independent gzip member, and members come out in input order.
//!
//! Concatenated gzip members are one valid `.gz` file (RFC 1952 section 2.2): `gunzip`,
//! `zcat | psql` and flate2's `MultiGzDecoder` read it whole. At most `threads` blocks are being
//! compressed at once, so memory is bounded by about `2 x threads x block size`. The `gzp` crate
//! does the same with its own thread pool behind a blocking `Write`; doing it on tokio's pool
//! keeps back-pressure inside the async pipeline and adds no dependency.

use std::io::Write as _;

use bytes::{Bytes, BytesMut};
use flate2::Compression;
use flate2::write::GzEncoder;
use futures::{Stream, TryStreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// 1 MiB blocks: the ratio lost to restarting the 32 KiB window per block is well under 1%,
/// and two cores get enough blocks to stay busy.
pub const BLOCK_SIZE: usize = 1 << 20;

/// One compressed gzip member and the number of input bytes it holds.
#[derive(Debug)]
pub struct Member {
    pub gzip: Bytes,
    pub input_len: usize,
}

/// Compresses `block` as one complete gzip member.
pub fn gzip_member(block: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(block.len() / 2 + 64),
        Compression::new(level),
    );
    encoder.write_all(block)?;
    encoder.finish()
}

/// Reads up to `size` bytes, fewer only at end of input.
async fn read_block<R: AsyncRead + Unpin>(
    reader: &mut R,
    size: usize,
) -> std::io::Result<BytesMut> {
    let mut block = BytesMut::with_capacity(size);
    while block.len() < size {
        if reader.read_buf(&mut block).await? == 0 {
            break;
        }
    }
    Ok(block)
}

/// The gzip members of `reader`'s bytes, in order. An empty input still yields one (empty)
/// member, so the output is always a valid gzip file.
pub fn compress<R>(
    reader: R,
    level: u32,
    threads: usize,
    block_size: usize,
) -> impl Stream<Item = std::io::Result<Member>> + Send
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let blocks =
        futures::stream::try_unfold((reader, true), move |(mut reader, first)| async move {
            let block = read_block(&mut reader, block_size).await?;
            if block.is_empty() && !first {
                return Ok(None);
            }
            Ok(Some((block.freeze(), (reader, false))))
        });
    blocks
        .map_ok(move |block| async move {
            let input_len = block.len();
            let gzip = tokio::task::spawn_blocking(move || gzip_member(&block, level))
                .await
                .map_err(std::io::Error::other)??;
            Ok(Member {
                gzip: Bytes::from(gzip),
                input_len,
            })
        })
        .try_buffered(threads.max(1))
}

/// Threads to use: `configured`, or one per available core when 0.
pub fn threads(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;
    use std::io::Read as _;

    async fn roundtrip(input: Vec<u8>, block: usize, threads: usize) -> (Vec<u8>, usize) {
        let members: Vec<Member> = compress(std::io::Cursor::new(input), 6, threads, block)
            .try_collect()
            .await
            .unwrap();
        let count = members.len();
        let gz: Vec<u8> = members.iter().flat_map(|m| m.gzip.to_vec()).collect();
        let mut out = Vec::new();
        MultiGzDecoder::new(&gz[..]).read_to_end(&mut out).unwrap();
        (out, count)
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i * 7 % 251) as u8 ^ (i / 1000) as u8)
            .collect()
    }

    #[tokio::test]
    async fn concatenated_members_decode_to_the_input_in_order() {
        for (len, block, threads) in [(0, 16, 2), (1, 16, 2), (16, 16, 2), (10_000, 333, 3)] {
            let input = sample(len);
            let (out, members) = roundtrip(input.clone(), block, threads).await;
            assert_eq!(out, input, "len {len} block {block}");
            assert_eq!(members, len.div_ceil(block).max(1));
        }
    }

    #[tokio::test]
    async fn system_gunzip_reads_the_output() {
        let input = sample(200_000);
        let members: Vec<Member> = compress(std::io::Cursor::new(input.clone()), 6, 2, 50_000)
            .try_collect()
            .await
            .unwrap();
        let gz: Vec<u8> = members.iter().flat_map(|m| m.gzip.to_vec()).collect();
        let mut child = std::process::Command::new("gzip")
            .args(["-dc"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip is installed");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&gz));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, input);
    }
}
