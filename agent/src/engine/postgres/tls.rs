//! TLS for the agent's own PostgreSQL sessions, with libpq's `sslmode` meanings.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and leaves every certificate
//! check to its TLS connector. This module builds that connector (rustls, through
//! tokio-postgres-rustls) so that each mode checks what libpq checks:
//!
//! | mode | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` | if the server accepts TLS, else plain | no; with `sslrootcert` set, its chain (libpq does the same when its root file exists) |
//! | `require` | always | as `prefer` |
//! | `verify-ca` | always | the chain must lead to a CA in `sslrootcert` |
//! | `verify-full` | always | the chain, and the host name (or IP address) in its subjectAltName |
//!
//! A Unix-socket host (starting with `/`) never uses TLS, whatever the mode, as in libpq.
//! pg_dump and psql get the same settings as `PGSSLMODE` / `PGSSLROOTCERT` and let libpq
//! apply them (`ConnParams::apply_env`). [`TlsParams::explain`] turns a failed connection whose
//! cause is TLS (or its absence) into a message naming the host, the setting and what to check.
//!
//! Not here: client certificates (`sslcert`/`sslkey`), CRLs, the system trust store (a CA must
//! be named by `sslrootcert`; pg_dump 15's libpq has no `sslrootcert=system`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use serde::{Deserialize, Serialize};
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

/// `sslmode`, with libpq's meaning (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    /// libpq's default: managed databases that enforce TLS work without configuration, and a
    /// server without TLS still does.
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling (`PGSSLMODE`, the config file).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the mode checks the server's certificate against `sslrootcert`.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// The CAs of an `sslrootcert` file, read once when the config becomes connection parameters
/// (a missing or unusable file is then a config error, before any connection).
#[derive(Clone, Debug)]
pub struct RootCert {
    pub path: PathBuf,
    roots: Arc<RootCertStore>,
}

impl RootCert {
    /// Reads the PEM certificates in `path`; the error says what is wrong with the file.
    pub fn load(path: &Path) -> Result<RootCert, String> {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
        let mut roots = RootCertStore::empty();
        for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
            let cert = cert.map_err(|e| format!("it is not valid PEM: {e}"))?;
            roots.add(cert).map_err(|e| {
                format!(
                    "certificate {} in it is not a usable CA certificate: {e}",
                    i + 1
                )
            })?;
        }
        if roots.is_empty() {
            return Err("it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
        }
        Ok(RootCert {
            path: path.to_owned(),
            roots: Arc::new(roots),
        })
    }
}

/// How one connection uses TLS, and which config keys said so (for messages).
#[derive(Clone)]
pub struct TlsParams {
    mode: SslMode,
    root_cert: Option<RootCert>,
    mode_key: &'static str,
    root_key: &'static str,
}

impl std::fmt::Debug for TlsParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sslmode={}", self.mode.as_str())?;
        if let Some(root) = &self.root_cert {
            write!(f, " sslrootcert={}", root.path.display())?;
        }
        Ok(())
    }
}

impl TlsParams {
    /// `mode` as set by `mode_key`, with the CAs of `root_key`. The verifying modes need a
    /// root certificate (the config's validation says so first); `disable` ignores it.
    pub fn new(
        mode: SslMode,
        root_cert: Option<RootCert>,
        mode_key: &'static str,
        root_key: &'static str,
    ) -> Result<TlsParams, String> {
        if mode.verifies() && root_cert.is_none() {
            return Err(format!(
                "`{mode_key}: {}` needs `{root_key}`, the PEM file of the CA that issued the \
                 server's certificate",
                mode.as_str()
            ));
        }
        Ok(TlsParams {
            mode,
            root_cert: root_cert.filter(|_| mode != SslMode::Disable),
            mode_key,
            root_key,
        })
    }

    /// What a connection to `host` does: a Unix socket never uses TLS.
    pub fn effective_mode(&self, host: &str) -> SslMode {
        if host.starts_with('/') {
            SslMode::Disable
        } else {
            self.mode
        }
    }

    /// The CA file a connection to `host` uses, if any.
    pub fn root_cert_path(&self, host: &str) -> Option<&Path> {
        match self.effective_mode(host) {
            SslMode::Disable => None,
            _ => self.root_cert.as_ref().map(|r| r.path.as_path()),
        }
    }

    /// The mode tokio-postgres negotiates; the certificate checks are the connector's.
    pub(super) fn session_mode(&self, host: &str) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Pg;
        match self.effective_mode(host) {
            SslMode::Disable => Pg::Disable,
            SslMode::Prefer => Pg::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Pg::Require,
        }
    }

    /// The connector that checks what the mode asks for.
    pub(super) fn connector(&self) -> Result<MakeRustlsConnect, rustls::Error> {
        // Explicit, not the process default: the S3 client's rustls is built with aws-lc-rs,
        // and an implicit choice would panic the day a second provider is compiled in.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        let builder =
            ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?;
        let config = match (self.mode, &self.root_cert) {
            // rustls's own verifier: chain, validity, and the name (DNS or IP subjectAltName).
            (SslMode::VerifyFull, Some(root)) => {
                builder.with_root_certificates(Arc::clone(&root.roots))
            }
            (_, Some(root)) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly {
                    roots: Arc::clone(&root.roots),
                    algorithms,
                })),
            (_, None) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified { algorithms })),
        };
        Ok(MakeRustlsConnect::new(config.with_no_client_auth()))
    }

    /// Why a connection to `host` failed, when TLS or its absence is the reason: the problem
    /// and what to do. `None` for every other failure.
    pub fn explain(&self, host: &str, error: &tokio_postgres::Error) -> Option<TlsFailure> {
        let mode = self.effective_mode(host);
        if mode == SslMode::Disable {
            // The server's pg_hba.conf takes only TLS from here (`hostssl`).
            let db = error.as_db_error()?;
            if db.code() == &SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && db.message().contains("no encryption")
                && !host.starts_with('/')
            {
                return Some(TlsFailure {
                    problem: format!(
                        "the server refused an unencrypted connection ({}) and `{}` is disable",
                        db.message(),
                        self.mode_key
                    ),
                    advice: format!(
                        "the server takes only TLS connections from here (pg_hba.conf hostssl): \
                         set `{}` to verify-full with `{}` (the CA of the server's certificate), \
                         or to require to encrypt without checking the certificate",
                        self.mode_key, self.root_key
                    ),
                });
            }
            return None;
        }
        if let Some(tls) = rustls_error(error) {
            return Some(self.certificate_failure(host, mode, tls));
        }
        if causes(error).any(|c| c.to_string() == "server does not support TLS") {
            return Some(TlsFailure {
                problem: format!(
                    "the server does not accept TLS connections and `{}` is {}",
                    self.mode_key,
                    mode.as_str()
                ),
                advice: format!(
                    "enable TLS on the server (ssl = on), or set `{}` to prefer (or disable) if \
                     unencrypted connections are acceptable on this network",
                    self.mode_key
                ),
            });
        }
        None
    }

    fn certificate_failure(&self, host: &str, mode: SslMode, error: &rustls::Error) -> TlsFailure {
        let mode_is = format!("`{}` is {}", self.mode_key, mode.as_str());
        let root = match &self.root_cert {
            Some(r) => format!("`{}` ({})", self.root_key, r.path.display()),
            None => format!("`{}`", self.root_key),
        };
        let rustls::Error::InvalidCertificate(cert) = error else {
            return TlsFailure {
                problem: format!("the TLS handshake failed: {error} ({mode_is})"),
                advice: format!(
                    "check `{}` and {root}, and the server's TLS settings (ssl_cert_file, \
                     ssl_min_protocol_version)",
                    self.mode_key
                ),
            };
        };
        match cert {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                let names = match cert {
                    CertificateError::NotValidForNameContext { presented, .. }
                        if !presented.is_empty() =>
                    {
                        format!(
                            " (it names {})",
                            presented
                                .iter()
                                .map(|n| plain_name(n))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                    _ => String::new(),
                };
                TlsFailure {
                    problem: format!(
                        "the server's certificate is not valid for the host name {host:?}{names} \
                         and {mode_is}, which checks the name"
                    ),
                    advice: format!(
                        "set `postgresql.host` to a name the certificate holds (and check it is \
                         the server you mean), or set `{}` to verify-ca to check only that the \
                         certificate was issued by a CA in {root}",
                        self.mode_key
                    ),
                }
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsFailure {
                problem: format!("the server's certificate is not valid now: {cert} ({mode_is})"),
                advice: "renew the server's certificate, and check this machine's clock".into(),
            },
            CertificateError::UnknownIssuer | CertificateError::BadSignature => TlsFailure {
                problem: format!(
                    "the server's certificate was not issued by a CA in {root} ({cert:?}) and \
                     {mode_is}{}",
                    if mode.verifies() {
                        ""
                    } else {
                        ", which checks the chain when a CA file is set (as libpq does)"
                    }
                ),
                advice: format!(
                    "check that `{}` holds the CA that issued the server's certificate \
                     (managed databases publish theirs: RDS, Cloud SQL, Azure), and that \
                     `postgresql.host` is the server you mean",
                    self.root_key
                ),
            },
            _ => TlsFailure {
                problem: format!("the server's certificate was refused: {cert} ({mode_is})"),
                advice: format!(
                    "check the server's certificate against {root} and `{}`",
                    self.mode_key
                ),
            },
        }
    }
}

/// A connection failure caused by TLS: what failed and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFailure {
    pub problem: String,
    pub advice: String,
}

/// The causes of a tokio-postgres error, outermost first.
fn causes<'e>(
    error: &'e tokio_postgres::Error,
) -> impl Iterator<Item = &'e (dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(error), |s| s.source())
}

/// The rustls error inside a tokio-postgres error, if the handshake failed: tokio-rustls wraps
/// it in an `io::Error`, whose `source()` skips it, so each link is unwrapped by hand.
fn rustls_error(error: &tokio_postgres::Error) -> Option<&rustls::Error> {
    causes(error).find_map(|s| {
        s.downcast_ref::<rustls::Error>().or_else(|| {
            s.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        })
    })
}

/// `DnsName("localhost")` (rustls's rendering of a subjectAltName) as `localhost`.
fn plain_name(name: &str) -> &str {
    for prefix in ["DnsName(\"", "IpAddress("] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return rest.trim_end_matches(')').trim_end_matches('"');
        }
    }
    name
}

/// `verify-ca`, and `prefer`/`require` with `sslrootcert`: the chain must lead to one of
/// `roots` and be valid now; the name is not checked (libpq's verify-ca). Built from the same
/// rustls functions its own verifier uses, minus the name check.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `prefer` and `require` without `sslrootcert`: encrypt, check no certificate (libpq's
/// `SSL_VERIFY_NONE`). The handshake signature is still verified, which proves only that the
/// peer holds the key of the certificate it shows, not who it is: such a session resists
/// eavesdropping, not an active man in the middle. Use verify-full for that.
#[derive(Debug)]
struct Unverified {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CA certificate (its key was thrown away when it was made): parses, trusts nothing real.
    pub(crate) const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBrDCCAVGgAwIBAgIULuoIvfniZAvdqpS+EVeUCoqEooswCgYIKoZIzj0EAwIw
IjEgMB4GA1UEAwwXc3Ryb25ncm9vbSB1bml0LXRlc3QgQ0EwIBcNMjYxMjAxMjMx
NzU3WhgPMjEyNjExMDcyMzE3NTdaMCIxIDAeBgNVBAMMF3N0cm9uZ3Jvb20gdW5p
dC10ZXN0IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEgmneU0n6wtQMiYSK
wG9Ch1Tj12M/vCVFTmGx0vedi7ZMn+N1I9iGPqMUzB3Q0g9MRn/Bu2Jm4pbZU454
FV8ze6NjMGEwHQYDVR0OBBYEFG8kMQnwGP5W0F0bkDHpgQ2YZI3xMB8GA1UdIwQY
MBaAFG8kMQnwGP5W0F0bkDHpgQ2YZI3xMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0P
AQH/BAQDAgIEMAoGCCqGSM49BAMCA0kAMEYCIQC1y6b7Mn7+xXtMKKqRon8INuhQ
DluOdpkau7lUbNKSawIhAKTz7Imd/QRdHDLNOmLNWoaBC+V3TMM6ei7GJ9zv3H7n
-----END CERTIFICATE-----
";

    fn root(dir: &Path) -> RootCert {
        let path = dir.join("ca.crt");
        std::fs::write(&path, TEST_CA_PEM).unwrap();
        RootCert::load(&path).unwrap()
    }

    fn params(mode: SslMode, root: Option<RootCert>) -> Result<TlsParams, String> {
        TlsParams::new(mode, root, "postgresql.sslmode", "postgresql.sslrootcert")
    }

    #[test]
    fn modes_have_libpq_spellings_and_prefer_is_the_default() {
        assert_eq!(SslMode::default(), SslMode::Prefer);
        for mode in [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            let yaml = serde_yaml::to_string(&mode).unwrap();
            assert_eq!(yaml.trim(), mode.as_str());
            assert_eq!(
                serde_yaml::from_str::<SslMode>(mode.as_str()).unwrap(),
                mode
            );
        }
        assert!(serde_yaml::from_str::<SslMode>("verify_full").is_err());
    }

    #[test]
    fn a_socket_never_uses_tls_and_tcp_maps_to_tokio_postgres_modes() {
        use tokio_postgres::config::SslMode as Pg;
        let dir = tempfile::tempdir().unwrap();
        let full = params(SslMode::VerifyFull, Some(root(dir.path()))).unwrap();
        assert_eq!(full.effective_mode("/var/run/postgresql"), SslMode::Disable);
        assert_eq!(full.session_mode("/var/run/postgresql"), Pg::Disable);
        assert_eq!(full.root_cert_path("/var/run/postgresql"), None);
        assert_eq!(full.effective_mode("db.example"), SslMode::VerifyFull);
        assert_eq!(full.session_mode("db.example"), Pg::Require);
        assert_eq!(
            full.root_cert_path("db.example"),
            Some(dir.path().join("ca.crt").as_path())
        );
        for (mode, expected) in [
            (SslMode::Disable, Pg::Disable),
            (SslMode::Prefer, Pg::Prefer),
            (SslMode::Require, Pg::Require),
        ] {
            assert_eq!(params(mode, None).unwrap().session_mode("h"), expected);
        }
        let ca = params(SslMode::VerifyCa, Some(root(dir.path()))).unwrap();
        assert_eq!(ca.session_mode("h"), Pg::Require);
        // `disable` drops a CA it would never use.
        let off = params(SslMode::Disable, Some(root(dir.path()))).unwrap();
        assert_eq!(off.root_cert_path("h"), None);
    }

    #[test]
    fn verifying_modes_need_a_root_certificate() {
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let e = params(mode, None).unwrap_err();
            assert!(e.contains("postgresql.sslrootcert"), "{e}");
            assert!(e.contains(mode.as_str()), "{e}");
        }
    }

    #[test]
    fn every_mode_builds_a_connector() {
        let dir = tempfile::tempdir().unwrap();
        for (mode, with_root) in [
            (SslMode::Disable, false),
            (SslMode::Prefer, false),
            (SslMode::Prefer, true),
            (SslMode::Require, false),
            (SslMode::Require, true),
            (SslMode::VerifyCa, true),
            (SslMode::VerifyFull, true),
        ] {
            let root = with_root.then(|| root(dir.path()));
            assert!(params(mode, root).unwrap().connector().is_ok(), "{mode:?}");
        }
    }

    #[test]
    fn unusable_ca_files_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = RootCert::load(&dir.path().join("absent.crt")).unwrap_err();
        assert!(missing.contains("cannot read it"), "{missing}");
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "just text\n").unwrap();
        let e = RootCert::load(&not_pem).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let key_only = dir.path().join("key.pem");
        std::fs::write(
            &key_only,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = RootCert::load(&key_only).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = RootCert::load(&garbage).unwrap_err();
        assert!(e.contains("certificate 1"), "{e}");
        let two = dir.path().join("two.pem");
        std::fs::write(&two, format!("{TEST_CA_PEM}{TEST_CA_PEM}")).unwrap();
        assert!(RootCert::load(&two).is_ok());
    }

    #[test]
    fn rustls_names_are_shown_plainly() {
        assert_eq!(plain_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(plain_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(plain_name("DirectoryName"), "DirectoryName");
    }
}
