//! The `postgresql:` section: where the database is, how to dump it, and when.
//!
//! The password comes from a file (a mounted Secret) or `PGPASSWORD`, never from this file;
//! [`PostgresConfig::backup_params`] and [`PostgresConfig::restore_params`] turn the section into
//! connection parameters.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, DAY, Invalid, RestoreConfig, defaults, in_range, invalid, read_secret};
use crate::engine::postgres::ConnParams;

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
    /// The `pg_dump` binary; its major version must be >= the server's.
    #[serde(default = "defaults::pg_dump")]
    pub pg_dump: PathBuf,
    /// gzip level 0-9.
    #[serde(default = "defaults::compression_level")]
    pub compression_level: u32,
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
        })
    }

    /// How a restore connects: `restore.user` / `restore.password_file` when set, into
    /// `database`.
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
        })
    }
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
    if pg.compression_level > 9 {
        return Err(invalid(
            "postgresql.compression_level",
            format!("{} is out of range: use 0-9", pg.compression_level),
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
    Ok(())
}
