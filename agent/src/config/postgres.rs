//! The `postgresql:` section: where the database is, how to dump it, and when.
//!
//! The password comes from a file (a mounted Secret) or `PGPASSWORD`, never from this file;
//! [`PostgresConfig::backup_params`] and [`PostgresConfig::restore_params`] turn the section into
//! connection parameters, reading the password and the `sslrootcert` CA file (a missing one is a
//! config error, before any connection).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ConfigError, DAY, Invalid, RestoreConfig, defaults, in_range, invalid, read_secret};
use crate::engine::postgres::{ConnParams, RootCert, SslMode, TlsParams};
use crate::layout::Codec;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// A Unix-socket directory (starts with `/`) or a host name.
    #[serde(default = "defaults::pg_host")]
    pub host: String,
    #[serde(default = "defaults::pg_port")]
    pub port: u16,
    #[serde(default = "defaults::pg_user")]
    pub user: String,
    pub database: String,
    /// File holding the password (a mounted Secret). Without it, `PGPASSWORD` is used if set,
    /// else no password (peer or trust authentication over the socket).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS over TCP for the agent's sessions, pg_dump and psql, with libpq's meanings; `prefer`
    /// (libpq's default) encrypts when the server accepts TLS and checks no certificate. A
    /// socket host never uses TLS.
    #[serde(default)]
    pub sslmode: SslMode,
    /// PEM file of the CA(s) the server's certificate must chain to. Needed by `verify-ca` and
    /// `verify-full` (there is no system-roots default: pg_dump 15 cannot use them, and the
    /// managed databases' CAs are not in them); with `prefer`/`require` the chain is then
    /// checked too, as libpq does.
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
    /// The `pg_dump` binary; its major version must be >= the server's.
    #[serde(default = "defaults::pg_dump")]
    pub pg_dump: PathBuf,
    /// `gzip` (the runbook's `.sql.gz`) or `zstd` (an opt-in `.sql.zst`).
    #[serde(default)]
    pub compression_format: Codec,
    /// gzip 0-9 (default 6, the runbook's `gzip -6`) or zstd 1-19 (default 3).
    #[serde(default)]
    pub compression_level: Option<u32>,
    /// Threads compressing in parallel; 0 means one per available core.
    #[serde(default)]
    pub compression_threads: usize,
    #[serde(default = "defaults::connect_timeout_seconds")]
    pub connect_timeout_seconds: u64,
    /// When `strongroom run` backs up: cron, UTC (the runbook's `backups.postgresql.schedule`).
    #[serde(default = "defaults::postgresql_schedule")]
    pub schedule: String,
    /// Up to this many seconds of random delay after each scheduled time.
    #[serde(default)]
    pub jitter_seconds: u64,
    /// On start, back up at once if the newest complete backup in the bucket is older than one
    /// schedule period (pods restart; the bucket, not local state, is the truth).
    #[serde(default)]
    pub catch_up: bool,
    /// How long pg_dump and the agent's own session wait for a table lock before the backup
    /// fails (pg_dump `--lock-wait-timeout`, `lock_timeout`): one `ACCESS EXCLUSIVE` lock (a
    /// migration) must not hold the backup, and every later slot, for ever.
    #[serde(default = "defaults::lock_wait_timeout_seconds")]
    pub lock_wait_timeout_seconds: u64,
    /// A backup still running after this long is cancelled (upload aborted, no manifest) and
    /// recorded failed with the reason.
    #[serde(default = "defaults::backup_timeout_seconds")]
    pub backup_timeout_seconds: u64,
    /// Which server may be backed up: `primary` (a standby's run is skipped, so the sidecars of
    /// a StatefulSet's replicas do not all back up at the same cron second) or `any`.
    #[serde(default)]
    pub backup_from: BackupFrom,
}

/// `postgresql.backup_from`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupFrom {
    #[default]
    Primary,
    Any,
}

impl PostgresConfig {
    /// `compression_level`, or the format's default: gzip 6, zstd 3.
    pub fn compression_level(&self) -> u32 {
        self.compression_level
            .unwrap_or(match self.compression_format {
                Codec::Gzip => defaults::GZIP_LEVEL,
                Codec::Zstd => defaults::ZSTD_LEVEL,
            })
    }

    /// The password from `password_file`, else from `PGPASSWORD`, else none.
    pub fn password(&self) -> Result<Option<String>, ConfigError> {
        if let Some(path) = &self.password_file {
            return read_secret("postgresql.password_file", path).map(Some);
        }
        Ok(std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()))
    }

    /// How the backup connects: the configured role and database.
    pub fn backup_params(&self) -> Result<ConnParams, ConfigError> {
        Ok(ConnParams {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            database: self.database.clone(),
            password: self.password()?,
            connect_timeout_seconds: self.connect_timeout_seconds,
            tls: self.tls()?,
        })
    }

    /// The backup's TLS: `sslmode` and the CAs of `sslrootcert` (read now).
    pub fn tls(&self) -> Result<TlsParams, ConfigError> {
        tls_params(
            (self.sslmode, "postgresql.sslmode"),
            self.sslrootcert
                .as_deref()
                .map(|path| (path, "postgresql.sslrootcert")),
            "postgresql.sslrootcert",
        )
    }

    /// The restore's TLS: `restore.sslmode` / `restore.sslrootcert`, each defaulting to this
    /// section's, with the key that supplied each value (for messages).
    pub fn restore_tls(&self, restore: &RestoreConfig) -> Result<TlsParams, ConfigError> {
        let mode = match restore.sslmode {
            Some(mode) => (mode, "restore.sslmode"),
            None => (self.sslmode, "postgresql.sslmode"),
        };
        let root = match (&restore.sslrootcert, &self.sslrootcert) {
            (Some(path), _) => Some((path.as_path(), "restore.sslrootcert")),
            (None, Some(path)) => Some((path.as_path(), "postgresql.sslrootcert")),
            (None, None) => None,
        };
        let unset_key = if restore.sslmode.is_some() {
            "restore.sslrootcert"
        } else {
            "postgresql.sslrootcert"
        };
        tls_params(mode, root, unset_key)
    }

    /// How a restore connects: `restore.user` / `restore.password_file` when set, into
    /// `database`, with [`PostgresConfig::restore_tls`].
    pub fn restore_params(
        &self,
        restore: &RestoreConfig,
        database: &str,
    ) -> Result<ConnParams, ConfigError> {
        let password = match &restore.password_file {
            Some(path) => Some(read_secret("restore.password_file", path)?),
            None => self.password()?,
        };
        Ok(ConnParams {
            host: self.host.clone(),
            port: self.port,
            user: restore.user.clone().unwrap_or_else(|| self.user.clone()),
            database: database.to_owned(),
            password,
            connect_timeout_seconds: self.connect_timeout_seconds,
            tls: self.restore_tls(restore)?,
        })
    }
}

/// TLS parameters from a mode and a CA file, each with the key that set it; `unset_key` names
/// the CA key to set when there is none. The file is read only when the mode can use it.
fn tls_params(
    (mode, mode_key): (SslMode, &'static str),
    root: Option<(&Path, &'static str)>,
    unset_key: &'static str,
) -> Result<TlsParams, ConfigError> {
    let root_key = root.map_or(unset_key, |(_, key)| key);
    let root_cert = match root {
        Some((path, key)) if mode != SslMode::Disable => Some(RootCert::load(path).map_err(
            |problem| ConfigError::RootCert {
                key,
                path: path.to_owned(),
                problem,
            },
        )?),
        _ => None,
    };
    // Validation refuses a verifying mode without a CA file first; this is the last guard.
    TlsParams::new(mode, root_cert, mode_key, root_key).map_err(|problem| ConfigError::RootCert {
        key: root_key,
        path: root.map_or_else(|| PathBuf::from("no file set"), |(path, _)| path.to_owned()),
        problem,
    })
}

pub(super) fn validate(pg: &PostgresConfig) -> Result<(), Invalid> {
    if pg.host.trim().is_empty() {
        return Err(invalid(
            "postgresql.host",
            "must not be empty; use a socket directory such as /var/run/postgresql or a host name",
        ));
    }
    if pg.port == 0 {
        return Err(invalid("postgresql.port", "0 is not a port; use e.g. 5432"));
    }
    if pg.user.is_empty() || pg.user.len() > 63 {
        return Err(invalid("postgresql.user", "use a role name of 1-63 bytes"));
    }
    if pg.database.is_empty() || pg.database.len() > 63 {
        return Err(invalid(
            "postgresql.database",
            format!("{:?}: use a database name of 1-63 bytes", pg.database),
        ));
    }
    let levels = match pg.compression_format {
        Codec::Gzip => 0..=9,
        Codec::Zstd => 1..=19,
    };
    if !levels.contains(&pg.compression_level()) {
        return Err(invalid(
            "postgresql.compression_level",
            format!(
                "{} is out of range for {}: use {}-{}",
                pg.compression_level(),
                pg.compression_format,
                levels.start(),
                levels.end()
            ),
        ));
    }
    if pg.compression_threads > 64 {
        return Err(invalid(
            "postgresql.compression_threads",
            format!(
                "{} is out of range: use 0 (one per core) to 64",
                pg.compression_threads
            ),
        ));
    }
    if let Err(e) = crate::schedule::Schedule::parse(&pg.schedule) {
        return Err(invalid(
            "postgresql.schedule",
            format!(
                "{:?} is not a usable cron schedule ({e}); use 5 fields (m h dom mon dow, UTC), \
                 6 with seconds first, or @daily/@hourly/...",
                pg.schedule
            ),
        ));
    }
    if pg.connect_timeout_seconds == 0 {
        return Err(invalid(
            "postgresql.connect_timeout_seconds",
            "0 would never connect; use e.g. 10",
        ));
    }
    in_range(
        "postgresql.connect_timeout_seconds",
        pg.connect_timeout_seconds,
        1..=3600,
    )?;
    in_range("postgresql.jitter_seconds", pg.jitter_seconds, 0..=DAY)?;
    in_range(
        "postgresql.lock_wait_timeout_seconds",
        pg.lock_wait_timeout_seconds,
        1..=DAY,
    )?;
    in_range(
        "postgresql.backup_timeout_seconds",
        pg.backup_timeout_seconds,
        1..=7 * DAY,
    )?;
    validate_tls(
        "postgresql.sslmode",
        pg.sslmode,
        "postgresql.sslrootcert",
        pg.sslrootcert.as_deref(),
    )
}

/// A verifying `sslmode` needs a CA file, and a CA file needs a path. Whether the file is
/// there and usable is checked when it is read ([`PostgresConfig::backup_params`]).
pub(super) fn validate_tls(
    mode_key: &str,
    mode: SslMode,
    root_key: &str,
    root: Option<&Path>,
) -> Result<(), Invalid> {
    if root.is_some_and(|p| p.as_os_str().is_empty()) {
        return Err(invalid(
            root_key,
            "must not be empty; give the path of the CA's PEM file, or leave the key out",
        ));
    }
    if mode.verifies() && root.is_none() {
        return Err(invalid(
            root_key,
            format!(
                "`{mode_key}: {}` needs the PEM file of the CA that issued the server's \
                 certificate (for RDS, Cloud SQL or Azure, the provider's CA bundle); the \
                 system trust store is not used. Or choose `{mode_key}: require` to encrypt \
                 without checking the certificate",
                mode.as_str()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};
    use crate::engine::postgres::SslMode;

    const BASE: &str = "release: app\ns3:\n  bucket: backups-1\npostgresql:\n  database: app\n  \
                        host: db.example\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, Path::new("test.yaml"))
    }

    /// `BASE` with `pg` lines added to `postgresql:` and `restore` as a `restore:` section.
    fn yaml(pg: &str, restore: &str) -> String {
        let mut text = BASE.to_owned();
        for line in pg.lines() {
            text.push_str(&format!("  {line}\n"));
        }
        if !restore.is_empty() {
            text.push_str("restore:\n");
            for line in restore.lines() {
                text.push_str(&format!("  {line}\n"));
            }
        }
        text
    }

    fn ca_file(dir: &Path) -> String {
        let path = dir.join("ca.crt");
        std::fs::write(&path, crate::engine::postgres::tls::tests::TEST_CA_PEM).unwrap();
        path.display().to_string()
    }

    #[test]
    fn sslmode_defaults_to_prefer_for_backups_and_restores() {
        let c = parse(BASE).unwrap();
        let pg = c.postgresql.as_ref().unwrap();
        assert_eq!(pg.sslmode, SslMode::Prefer);
        assert_eq!(pg.sslrootcert, None);
        assert_eq!(c.restore.sslmode, None);
        let backup = pg.backup_params().unwrap();
        assert_eq!(backup.tls.effective_mode(&backup.host), SslMode::Prefer);
        let restore = pg.restore_params(&c.restore, "other").unwrap();
        assert_eq!(restore.tls.effective_mode(&restore.host), SslMode::Prefer);
    }

    #[test]
    fn every_libpq_mode_parses_and_unknown_ones_are_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_file(dir.path());
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            let c = parse(&yaml(&format!("sslmode: {mode}\nsslrootcert: {ca}"), "")).unwrap();
            assert_eq!(c.postgresql.unwrap().sslmode.as_str(), mode);
        }
        for (pg, restore, key) in [
            ("sslmode: verify_full", "", "postgresql.sslmode"),
            ("sslmode: allow", "", "postgresql.sslmode"),
            ("", "sslmode: strict", "restore.sslmode"),
        ] {
            let e = parse(&yaml(pg, restore)).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
            assert!(e.contains("verify-full") && e.contains("disable"), "{e}");
        }
        let e = parse(&yaml("sslrootcrt: /x", "")).unwrap_err().to_string();
        assert!(e.contains("unknown field `sslrootcrt`"), "{e}");
    }

    #[test]
    fn verifying_modes_need_sslrootcert() {
        for mode in ["verify-ca", "verify-full"] {
            let e = parse(&yaml(&format!("sslmode: {mode}"), ""))
                .unwrap_err()
                .to_string();
            assert!(e.contains("`postgresql.sslrootcert`"), "{e}");
            assert!(e.contains(mode) && e.contains("CA"), "{e}");
            let e = parse(&yaml("", &format!("sslmode: {mode}")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("`restore.sslrootcert`"), "{e}");
            assert!(e.contains("restore.sslmode"), "{e}");
        }
        let e = parse(&yaml("sslrootcert: \"\"", ""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`postgresql.sslrootcert`: must not be empty"),
            "{e}"
        );
        // prefer and require need none.
        parse(&yaml("sslmode: require", "")).unwrap();
    }

    #[test]
    fn restore_tls_falls_back_to_postgresql_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_file(dir.path());
        let other = dir.path().join("other.crt");
        std::fs::copy(&ca, &other).unwrap();

        // Nothing set for the restore: postgresql's mode and CA.
        let c = parse(&yaml(
            &format!("sslmode: verify-full\nsslrootcert: {ca}"),
            "",
        ))
        .unwrap();
        let pg = c.postgresql.as_ref().unwrap();
        let p = pg.restore_params(&c.restore, "t").unwrap();
        assert_eq!(p.tls.effective_mode(&p.host), SslMode::VerifyFull);
        assert_eq!(p.tls.root_cert_path(&p.host), Some(Path::new(&ca)));

        // Only the mode set: postgresql's CA still serves.
        let c = parse(&yaml(
            &format!("sslmode: require\nsslrootcert: {ca}"),
            "sslmode: verify-ca",
        ))
        .unwrap();
        let pg = c.postgresql.as_ref().unwrap();
        let p = pg.restore_params(&c.restore, "t").unwrap();
        assert_eq!(p.tls.effective_mode(&p.host), SslMode::VerifyCa);
        assert_eq!(p.tls.root_cert_path(&p.host), Some(Path::new(&ca)));
        let b = pg.backup_params().unwrap();
        assert_eq!(b.tls.effective_mode(&b.host), SslMode::Require);

        // Both set: the restore's own.
        let c = parse(&yaml(
            "sslmode: disable",
            &format!("sslmode: verify-full\nsslrootcert: {}", other.display()),
        ))
        .unwrap();
        let pg = c.postgresql.as_ref().unwrap();
        let p = pg.restore_params(&c.restore, "t").unwrap();
        assert_eq!(p.tls.effective_mode(&p.host), SslMode::VerifyFull);
        assert_eq!(p.tls.root_cert_path(&p.host), Some(other.as_path()));
        let b = pg.backup_params().unwrap();
        assert_eq!(b.tls.effective_mode(&b.host), SslMode::Disable);
        assert_eq!(b.tls.root_cert_path(&b.host), None);
    }

    #[test]
    fn a_missing_or_unusable_ca_file_is_a_config_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("absent.crt");
        let c = parse(&yaml(
            &format!("sslmode: verify-full\nsslrootcert: {}", absent.display()),
            "",
        ))
        .unwrap();
        let pg = c.postgresql.as_ref().unwrap();
        for e in [
            pg.backup_params().unwrap_err(),
            pg.restore_params(&c.restore, "t").unwrap_err(),
        ] {
            let text = e.to_string();
            assert!(matches!(e, ConfigError::RootCert { .. }), "{text}");
            assert!(text.contains("`postgresql.sslrootcert`"), "{text}");
            assert!(text.contains("absent.crt"), "{text}");
            let exit = crate::error::Error::from(e).exit_code();
            assert_eq!(exit, crate::error::EXIT_USAGE);
        }

        // The restore's own CA file is named as the restore's.
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let c = parse(&yaml(
            "",
            &format!("sslmode: verify-ca\nsslrootcert: {}", not_pem.display()),
        ))
        .unwrap();
        let pg = c.postgresql.as_ref().unwrap();
        let e = pg.restore_params(&c.restore, "t").unwrap_err().to_string();
        assert!(e.contains("`restore.sslrootcert`"), "{e}");
        assert!(e.contains("no PEM certificate"), "{e}");
        pg.backup_params().unwrap();

        // `disable` never reads the file.
        let c = parse(&yaml(
            &format!("sslmode: disable\nsslrootcert: {}", absent.display()),
            "",
        ))
        .unwrap();
        c.postgresql.unwrap().backup_params().unwrap();
    }
}
