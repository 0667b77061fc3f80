//! Signed manifests: Ed25519 over the manifest's exact bytes, key files, and `keygen`.
//!
//! The backup side signs with a private key (a mounted Secret); verify and restore check with a
//! public key configured separately, so a restore Job never holds the private key. The
//! signature lives in `<timestamp>.manifest.json.sig`, written before the manifest (which stays
//! the mark of a complete backup). Keys are PKCS#8 / SPKI PEM, so `openssl pkey` reads them.
//! This module does no S3 I/O.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File names `keygen` writes.
pub const PRIVATE_KEY_FILE: &str = "strongroom-signing.key";
pub const PUBLIC_KEY_FILE: &str = "strongroom-signing.pub";

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("cannot read the {what} key file {path}: {detail}; check signing.{what}_key_file")]
    KeyFile {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite a signing key")]
    Exists { path: PathBuf },
    #[error("the system random generator failed: {0}")]
    Random(String),
    #[error(
        "manifest {manifest} has no valid signature: {problem}. The manifest may have been \
         altered, or signed with another key; do not restore from it before finding out why"
    )]
    Invalid { manifest: String, problem: String },
}

/// The detached signature object's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    pub format_version: u32,
    pub algorithm: String,
    /// First 16 hex digits of SHA-256 of the public key: which key to check with.
    pub key_id: String,
    /// Hex SHA-256 of the signed manifest bytes (informative; the signature is what counts).
    pub manifest_sha256: String,
    /// Base64 Ed25519 signature of the manifest bytes.
    pub signature: String,
}

impl SignatureFile {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("serialisable");
        bytes.push(b'\n');
        bytes
    }
}

fn key_id(public: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(public.as_bytes())[..8])
}

/// Signs manifests (backup side).
pub struct ManifestSigner {
    key: SigningKey,
    key_id: String,
}

impl ManifestSigner {
    pub fn load(path: &Path) -> Result<Self, SigningError> {
        let err = |detail: String| SigningError::KeyFile {
            what: "private",
            path: path.to_owned(),
            detail,
        };
        let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let key = SigningKey::from_pkcs8_pem(&pem)
            .map_err(|e| err(format!("not a PKCS#8 PEM Ed25519 private key ({e})")))?;
        let key_id = key_id(&key.verifying_key());
        Ok(ManifestSigner { key, key_id })
    }

    /// The verifier of this key's signatures (a sidecar that signs can check its own backups
    /// without a public key file).
    pub fn verifier(&self) -> ManifestVerifier {
        ManifestVerifier {
            key: self.key.verifying_key(),
            key_id: self.key_id.clone(),
        }
    }

    pub fn sign(&self, manifest: &[u8]) -> SignatureFile {
        SignatureFile {
            format_version: 1,
            algorithm: "ed25519".into(),
            key_id: self.key_id.clone(),
            manifest_sha256: hex::encode(Sha256::digest(manifest)),
            signature: B64.encode(self.key.sign(manifest).to_bytes()),
        }
    }
}

/// Checks manifest signatures (verify and restore side).
pub struct ManifestVerifier {
    key: VerifyingKey,
    pub key_id: String,
}

impl ManifestVerifier {
    pub fn load(path: &Path) -> Result<Self, SigningError> {
        let err = |detail: String| SigningError::KeyFile {
            what: "public",
            path: path.to_owned(),
            detail,
        };
        let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let key = VerifyingKey::from_public_key_pem(&pem)
            .map_err(|e| err(format!("not an SPKI PEM Ed25519 public key ({e})")))?;
        let key_id = key_id(&key);
        Ok(ManifestVerifier { key, key_id })
    }

    /// Checks `signature_file` (the `.sig` object's bytes) against `manifest`'s exact bytes.
    pub fn verify(
        &self,
        manifest_key: &str,
        manifest: &[u8],
        signature_file: &[u8],
    ) -> Result<(), SigningError> {
        let invalid = |problem: String| SigningError::Invalid {
            manifest: manifest_key.to_owned(),
            problem,
        };
        let file: SignatureFile = serde_json::from_slice(signature_file)
            .map_err(|e| invalid(format!("the signature file is not valid ({e})")))?;
        if file.algorithm != "ed25519" {
            return Err(invalid(format!("unknown algorithm {:?}", file.algorithm)));
        }
        if file.key_id != self.key_id {
            return Err(invalid(format!(
                "signed by key {}, but the configured public key is {}",
                file.key_id, self.key_id
            )));
        }
        let raw = B64
            .decode(&file.signature)
            .map_err(|e| invalid(format!("the signature is not base64 ({e})")))?;
        let signature = Signature::from_slice(&raw)
            .map_err(|e| invalid(format!("the signature is malformed ({e})")))?;
        self.key
            .verify(manifest, &signature)
            .map_err(|_| invalid("the signature does not match the manifest's bytes".into()))
    }
}

/// Writes a new key pair into `dir`; the private key file is created 0600 and never overwritten.
pub fn keygen(dir: &Path) -> Result<(PathBuf, PathBuf), SigningError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| SigningError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .expect("an Ed25519 key always encodes");
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("an Ed25519 key always encodes");
    let private_path = dir.join(PRIVATE_KEY_FILE);
    let public_path = dir.join(PUBLIC_KEY_FILE);
    for path in [&private_path, &public_path] {
        if path.exists() {
            return Err(SigningError::Exists { path: path.clone() });
        }
    }
    write_new(&private_path, private.as_bytes(), 0o600)?;
    write_new(&public_path, public.as_bytes(), 0o644)?;
    Ok((private_path, public_path))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SigningError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(|source| SigningError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path) -> (ManifestSigner, ManifestVerifier) {
        let (private, public) = keygen(dir).unwrap();
        (
            ManifestSigner::load(&private).unwrap(),
            ManifestVerifier::load(&public).unwrap(),
        )
    }

    #[test]
    fn a_signature_covers_the_exact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, verifier) = pair(dir.path());
        let manifest = b"{\"version_id\": \"v1\"}\n";
        let sig = signer.sign(manifest).to_bytes();
        verifier.verify("m", manifest, &sig).unwrap();
        let e = verifier
            .verify("m", b"{\"version_id\": \"v2\"}\n", &sig)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match the manifest's bytes"), "{e}");
    }

    #[test]
    fn another_key_is_refused_by_id() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (signer, _) = pair(a.path());
        let (_, other) = pair(b.path());
        let sig = signer.sign(b"m").to_bytes();
        let e = other.verify("m", b"m", &sig).unwrap_err().to_string();
        assert!(
            e.contains("signed by key") && e.contains(&other.key_id),
            "{e}"
        );
    }

    #[test]
    fn keygen_never_overwrites_and_protects_the_private_key() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (private, _) = keygen(dir.path()).unwrap();
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            keygen(dir.path()),
            Err(SigningError::Exists { .. })
        ));
    }

    #[test]
    fn garbage_key_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "not a key").unwrap();
        let e = ManifestVerifier::load(&path).err().unwrap().to_string();
        assert!(
            e.contains("signing.public_key_file") && e.contains("SPKI PEM"),
            "{e}"
        );
    }
}
