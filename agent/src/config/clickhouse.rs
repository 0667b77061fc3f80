//! The `clickhouse:` section: which server, what to back up, and how the server reaches S3.
//!
//! Credentials for S3 never appear in SQL: the server uses a named collection from its own
//! configuration (`named_collection`) or its environment credentials, e.g. IRSA (`bucket_url`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, DAY, Invalid, in_range, invalid, read_secret};

pub const URL: &str = "http://127.0.0.1:8123";
pub const USER: &str = "default";
/// The runbook's `backups.clickhouse.schedule`, 02:30 UTC.
pub const SCHEDULE: &str = "30 2 * * *";
/// A BACKUP of the whole server may take hours on big tables; past this it is reported failed.
pub const BACKUP_TIMEOUT_SECONDS: u64 = 6 * 3600;
/// The runbook's ClickHouse RTO is 45 minutes.
pub const RESTORE_TIMEOUT_SECONDS: u64 = 45 * 60;
/// A BACKUP's end is noticed within this; a poll is one small query to a local server.
pub const POLL_INTERVAL_MS: u64 = 100;
pub const CONNECT_TIMEOUT_SECONDS: u64 = 10;

fn url() -> String {
    URL.into()
}
fn user() -> String {
    USER.into()
}
fn schedule() -> String {
    SCHEDULE.into()
}
fn backup_timeout_seconds() -> u64 {
    BACKUP_TIMEOUT_SECONDS
}
fn restore_timeout_seconds() -> u64 {
    RESTORE_TIMEOUT_SECONDS
}
fn poll_interval_ms() -> u64 {
    POLL_INTERVAL_MS
}
fn connect_timeout_seconds() -> u64 {
    CONNECT_TIMEOUT_SECONDS
}
fn lost_after_seconds() -> u64 {
    60
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// The local server's HTTP interface.
    #[serde(default = "url")]
    pub url: String,
    #[serde(default = "user")]
    pub user: String,
    /// File holding the password (the runbook's `backups.clickhouse.passwordSecretRef`); no
    /// password when absent.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Back up these databases. With neither this nor `tables`, everything except the system
    /// databases (`ALL EXCEPT DATABASES system, information_schema, INFORMATION_SCHEMA`).
    #[serde(default)]
    pub databases: Vec<String>,
    /// Back up these tables, as `database.table`.
    #[serde(default)]
    pub tables: Vec<String>,
    /// A named collection in the server's configuration whose `url` is the bucket's root
    /// (`https://<bucket>.s3.<region>.amazonaws.com/`) and which holds the credentials.
    #[serde(default)]
    pub named_collection: Option<String>,
    /// Instead of a named collection: the bucket's root URL; the server then signs with its
    /// environment credentials (`use_environment_credentials`, e.g. IRSA).
    #[serde(default)]
    pub bucket_url: Option<String>,
    /// When `strongroom run` backs up: cron, UTC.
    #[serde(default = "schedule")]
    pub schedule: String,
    #[serde(default)]
    pub jitter_seconds: u64,
    #[serde(default)]
    pub catch_up: bool,
    /// Incremental backups: every `full_every`-th backup is full, the others are based on the
    /// previous one (`base_backup`). 0 or 1: always full.
    #[serde(default)]
    pub full_every: u32,
    #[serde(default = "backup_timeout_seconds")]
    pub backup_timeout_seconds: u64,
    #[serde(default = "restore_timeout_seconds")]
    pub restore_timeout_seconds: u64,
    /// How often `system.backups` is polled while a BACKUP or RESTORE runs.
    #[serde(default = "poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// A BACKUP or RESTORE missing from `system.backups` this long (a restarted server forgets
    /// its operations) has failed; the agent stops waiting instead of polling until the timeout.
    #[serde(default = "lost_after_seconds")]
    pub lost_after_seconds: u64,
    #[serde(default = "connect_timeout_seconds")]
    pub connect_timeout_seconds: u64,
}

/// `restore.clickhouse`: who restores, and the SQL checks run against ClickHouse afterwards.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseRestoreConfig {
    /// `clickhouse.user` when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// The runbook's `restore.clickhouse.passwordSecretRef`; `clickhouse.password_file` when
    /// absent.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// E.g. `SELECT count() FROM app.storage_records` with `expect: {min: 1}`.
    #[serde(default)]
    pub sql: Vec<super::SqlCheck>,
}

/// How the agent logs in to ClickHouse.
#[derive(Clone)]
pub struct Login {
    pub url: String,
    pub user: String,
    pub password: Option<String>,
    pub connect_timeout_seconds: u64,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ClickHouseConfig {
    /// The backup's login: `user` and `password_file`.
    pub fn backup_login(&self) -> Result<Login, ConfigError> {
        let password = match &self.password_file {
            Some(path) => Some(read_secret("clickhouse.password_file", path)?),
            None => None,
        };
        Ok(self.login(self.user.clone(), password))
    }

    /// The restore's login: `restore.clickhouse.*` where set, else the backup's.
    pub fn restore_login(&self, restore: &ClickHouseRestoreConfig) -> Result<Login, ConfigError> {
        let password = match &restore.password_file {
            Some(path) => Some(read_secret("restore.clickhouse.password_file", path)?),
            None => self.backup_login()?.password,
        };
        let user = restore.user.clone().unwrap_or_else(|| self.user.clone());
        Ok(self.login(user, password))
    }

    fn login(&self, user: String, password: Option<String>) -> Login {
        Login {
            url: self.url.clone(),
            user,
            password,
            connect_timeout_seconds: self.connect_timeout_seconds,
        }
    }
}

/// Names ClickHouse accepts unquoted are all we need; anything else is refused, so no
/// identifier from the config is ever pasted into SQL unchecked.
pub fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

pub(super) fn validate(ch: &ClickHouseConfig) -> Result<(), Invalid> {
    if !(ch.url.starts_with("http://") || ch.url.starts_with("https://")) {
        return Err(invalid(
            "clickhouse.url",
            format!("{:?}: use the HTTP interface, e.g. {URL}", ch.url),
        ));
    }
    if ch.user.is_empty() {
        return Err(invalid(
            "clickhouse.user",
            "must not be empty; e.g. `backup`",
        ));
    }
    for db in &ch.databases {
        if !is_identifier(db) {
            return Err(invalid(
                "clickhouse.databases",
                format!("{db:?} is not a plain database name (letters, digits, _)"),
            ));
        }
    }
    for table in &ch.tables {
        let ok = table
            .split_once('.')
            .is_some_and(|(db, t)| is_identifier(db) && is_identifier(t));
        if !ok {
            return Err(invalid(
                "clickhouse.tables",
                format!("{table:?}: use `database.table` with plain names (letters, digits, _)"),
            ));
        }
    }
    if !ch.databases.is_empty() && !ch.tables.is_empty() {
        return Err(invalid(
            "clickhouse.tables",
            "set either clickhouse.databases or clickhouse.tables, not both",
        ));
    }
    match (&ch.named_collection, &ch.bucket_url) {
        (Some(name), None) if is_identifier(name) => {}
        (Some(name), None) => {
            return Err(invalid(
                "clickhouse.named_collection",
                format!("{name:?} is not a plain name (letters, digits, _)"),
            ));
        }
        (None, Some(url))
            if (url.starts_with("https://") || url.starts_with("http://"))
                && url.ends_with('/')
                && !url.contains('\'')
                && !url.contains('@') => {}
        (None, Some(url)) => {
            return Err(invalid(
                "clickhouse.bucket_url",
                format!(
                    "{url:?}: give the bucket's root URL ending in '/', without credentials, \
                     e.g. https://my-bucket.s3.eu-west-1.amazonaws.com/"
                ),
            ));
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                "clickhouse.bucket_url",
                "set either clickhouse.named_collection or clickhouse.bucket_url, not both",
            ));
        }
        (None, None) => {
            return Err(invalid(
                "clickhouse.named_collection",
                "required: name the server-side named collection holding the bucket URL and \
                 credentials (or set clickhouse.bucket_url for environment credentials/IRSA); \
                 credentials are never put into BACKUP statements",
            ));
        }
    }
    if let Err(e) = crate::schedule::Schedule::parse(&ch.schedule) {
        return Err(invalid(
            "clickhouse.schedule",
            format!("{:?} is not a usable cron schedule ({e})", ch.schedule),
        ));
    }
    for (key, value, range) in [
        (
            "clickhouse.backup_timeout_seconds",
            ch.backup_timeout_seconds,
            1..=7 * DAY,
        ),
        (
            "clickhouse.restore_timeout_seconds",
            ch.restore_timeout_seconds,
            1..=7 * DAY,
        ),
        (
            "clickhouse.lost_after_seconds",
            ch.lost_after_seconds,
            1..=3600,
        ),
        (
            "clickhouse.poll_interval_ms",
            ch.poll_interval_ms,
            1..=60_000,
        ),
        (
            "clickhouse.connect_timeout_seconds",
            ch.connect_timeout_seconds,
            1..=3600,
        ),
        ("clickhouse.jitter_seconds", ch.jitter_seconds, 0..=DAY),
        ("clickhouse.full_every", ch.full_every.into(), 0..=10_000),
    ] {
        in_range(key, value, range)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<ClickHouseConfig, String> {
        let c: ClickHouseConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        validate(&c).map_err(|e| format!("{}: {}", e.key, e.problem))?;
        Ok(c)
    }

    #[test]
    fn defaults_follow_the_runbook() {
        let c = parse("named_collection: backups_s3").unwrap();
        assert_eq!(c.schedule, "30 2 * * *");
        assert_eq!(c.url, URL);
        assert_eq!(c.full_every, 0);
    }

    #[test]
    fn credentials_source_is_required_and_exclusive() {
        let e = parse("databases: [app]").unwrap_err();
        assert!(
            e.contains("clickhouse.named_collection") && e.contains("never"),
            "{e}"
        );
        let e = parse("named_collection: a\nbucket_url: https://b.s3.amazonaws.com/").unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = parse("bucket_url: https://AKIA:secret@b.s3.amazonaws.com/").unwrap_err();
        assert!(e.contains("without credentials"), "{e}");
        parse("bucket_url: https://b.s3.amazonaws.com/").unwrap();
    }

    #[test]
    fn names_pasted_into_sql_are_plain() {
        let e = parse("named_collection: a\ndatabases: ['app; DROP']").unwrap_err();
        assert!(e.contains("clickhouse.databases"), "{e}");
        let e = parse("named_collection: a\ntables: [app]").unwrap_err();
        assert!(e.contains("database.table"), "{e}");
        let e = parse("named_collection: \"x'y\"").unwrap_err();
        assert!(e.contains("clickhouse.named_collection"), "{e}");
        parse("named_collection: a\ntables: [app.storage_records]").unwrap();
    }
}
