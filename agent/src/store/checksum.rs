//! Integrity checksums sent with each write request, and the value a server reports back for the
//! finished object, computed locally so the read-back can compare them.
//!
//! Object Lock buckets refuse writes without `Content-MD5` or an `x-amz-checksum-*` header, and
//! some servers reject the SDK's default streaming (aws-chunked) trailers, so the agent always
//! computes the checksum of an in-memory part itself and sends it as a plain header.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::Md5;
use sha2::{Digest, Sha256};

/// Which integrity header the agent sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Integrity {
    /// `Content-MD5`: understood by every S3 implementation, verified by most.
    Md5,
    /// `x-amz-checksum-sha256`, verified by AWS and some others; ignored by older servers.
    Sha256,
    /// `x-amz-checksum-crc32`: cheaper, same support as SHA-256.
    Crc32,
}

impl Integrity {
    pub fn as_str(self) -> &'static str {
        match self {
            Integrity::Md5 => "md5",
            Integrity::Sha256 => "sha256",
            Integrity::Crc32 => "crc32",
        }
    }
}

/// The checksum of one request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartChecksum {
    Md5([u8; 16]),
    Sha256([u8; 32]),
    Crc32([u8; 4]),
}

impl PartChecksum {
    pub fn compute(integrity: Integrity, data: &[u8]) -> PartChecksum {
        match integrity {
            Integrity::Md5 => PartChecksum::Md5(Md5::digest(data).into()),
            Integrity::Sha256 => PartChecksum::Sha256(Sha256::digest(data).into()),
            Integrity::Crc32 => PartChecksum::Crc32(crc32fast::hash(data).to_be_bytes()),
        }
    }

    pub fn integrity(&self) -> Integrity {
        match self {
            PartChecksum::Md5(_) => Integrity::Md5,
            PartChecksum::Sha256(_) => Integrity::Sha256,
            PartChecksum::Crc32(_) => Integrity::Crc32,
        }
    }

    fn raw(&self) -> &[u8] {
        match self {
            PartChecksum::Md5(d) => d,
            PartChecksum::Sha256(d) => d,
            PartChecksum::Crc32(d) => d,
        }
    }

    /// The header value: base64 of the raw digest (what S3 expects for every algorithm).
    pub fn base64(&self) -> String {
        B64.encode(self.raw())
    }
}

/// What the server should report for a finished object, so the read-back can compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// The ETag (without quotes): MD5-based for unencrypted and SSE-S3 objects on every server.
    Etag(String),
    /// The server-computed checksum for the flexible-checksum algorithm in use.
    Checksum(String),
}

/// Expected server value for a single PUT with this checksum.
pub fn expected_single(checksum: &PartChecksum) -> Expected {
    match checksum {
        PartChecksum::Md5(d) => Expected::Etag(hex::encode(d)),
        other => Expected::Checksum(other.base64()),
    }
}

/// Expected server value for a multipart upload made of these parts: S3's composite rule,
/// the digest of the concatenated part digests, then `-<number of parts>`.
pub fn expected_multipart(parts: &[PartChecksum]) -> Option<Expected> {
    let first = parts.first()?;
    let n = parts.len();
    let concat: Vec<u8> = parts.iter().flat_map(|p| p.raw().to_vec()).collect();
    Some(match first.integrity() {
        Integrity::Md5 => Expected::Etag(format!("{}-{n}", hex::encode(Md5::digest(&concat)))),
        Integrity::Sha256 => {
            Expected::Checksum(format!("{}-{n}", B64.encode(Sha256::digest(&concat))))
        }
        Integrity::Crc32 => Expected::Checksum(format!(
            "{}-{n}",
            B64.encode(crc32fast::hash(&concat).to_be_bytes())
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_base64_of_the_raw_digest() {
        // Known answers: md5("") and sha256("") and crc32("abc").
        assert_eq!(
            PartChecksum::compute(Integrity::Md5, b"").base64(),
            "1B2M2Y8AsgTpgAmY7PhCfg=="
        );
        assert_eq!(
            PartChecksum::compute(Integrity::Sha256, b"").base64(),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(
            PartChecksum::compute(Integrity::Crc32, b"abc").base64(),
            B64.encode(0x352441c2u32.to_be_bytes())
        );
    }

    #[test]
    fn multipart_etag_is_md5_of_part_md5s_with_part_count() {
        let a = PartChecksum::compute(Integrity::Md5, b"part one");
        let b = PartChecksum::compute(Integrity::Md5, b"part two");
        let mut cat = Vec::new();
        for p in [&a, &b] {
            if let PartChecksum::Md5(d) = p {
                cat.extend_from_slice(d);
            }
        }
        let want = format!("{}-2", hex::encode(Md5::digest(&cat)));
        assert_eq!(expected_multipart(&[a, b]), Some(Expected::Etag(want)));
        assert_eq!(expected_multipart(&[]), None);
    }

    #[test]
    fn single_put_expectations() {
        let md5 = PartChecksum::compute(Integrity::Md5, b"x");
        assert_eq!(
            expected_single(&md5),
            Expected::Etag("9dd4e461268c8034f5c8564e155c67a6".into())
        );
        let sha = PartChecksum::compute(Integrity::Sha256, b"x");
        assert_eq!(expected_single(&sha), Expected::Checksum(sha.base64()));
    }
}
