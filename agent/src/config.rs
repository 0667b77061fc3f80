//! The agent's configuration file: serde model, defaults and validation.
//!
//! One YAML file configures everything. Unknown keys are rejected, every default is in
//! [`defaults`], and [`Config::load`] validates the whole file before any command touches a
//! database or a bucket, naming the offending key, the bad value and what is allowed.
//! Secrets are never in this file: the PostgreSQL password comes from a file or `PGPASSWORD`
//! ([`PostgresConfig::password`]), S3 credentials from the standard AWS chain.
//! This module does not open connections; it only describes them. The engine and restore
//! sections live in [`postgres`], [`clickhouse`] and [`restore`], the bucket's in [`s3`], the
//! restore drills' in [`drill`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Every default value, in one place, so the README and the code cannot drift apart silently.
pub mod clickhouse;
pub mod drill;
pub mod postgres;
pub mod restore;
pub mod s3;

pub use clickhouse::{ClickHouseConfig, ClickHouseRestoreConfig};
pub use drill::DrillConfig;
pub use postgres::{BackupFrom, PostgresConfig};
pub use restore::{Expectation, HttpCheck, RestoreConfig, SqlCheck, ValidationConfig};
pub use s3::{
    IntegrityMode, LockMode, ObjectLockConfig, RetentionPeriod, S3Config, validate_prefix,
};

pub mod defaults {
    pub const PREFIX: &str = "backups";
    pub const REGION: &str = "us-east-1";
    /// 8 MiB parts: small enough that two in flight plus one filling stay far below the 64 MiB
    /// memory budget, large enough that a 1 GB dump needs only ~20-60 requests.
    pub const PART_SIZE_MIB: u32 = 8;
    /// Parts uploaded concurrently. Memory is bounded by part size x (this + 1).
    pub const UPLOAD_CONCURRENCY: u32 = 2;
    /// Seven years, the runbook's default retention.
    pub const RETENTION_YEARS: u32 = 7;
    pub const PG_HOST: &str = "/var/run/postgresql";
    pub const PG_PORT: u16 = 5432;
    pub const PG_USER: &str = "postgres";
    pub const PG_DUMP: &str = "pg_dump";
    /// The runbook's `gzip -6`.
    pub const GZIP_LEVEL: u32 = 6;
    /// zstd's own default: faster than `gzip -1` with a better ratio than `gzip -6`.
    pub const ZSTD_LEVEL: u32 = 3;
    pub const CONNECT_TIMEOUT_SECONDS: u64 = 10;
    pub const LOG_LEVEL: &str = "info";
    pub const PSQL: &str = "psql";
    /// How long HTTP smoke checks are retried: an application restarting against a restored
    /// database may need minutes.
    pub const HTTP_TIMEOUT_SECONDS: u64 = 300;
    pub const HTTP_INTERVAL_SECONDS: u64 = 5;
    pub const HTTP_EXPECT_STATUS: u16 = 200;
    /// The runbook's schedules (UTC).
    pub const POSTGRESQL_SCHEDULE: &str = "0 2 * * *";
    /// The agent's HTTP endpoints (probes, status, metrics).
    pub const LISTEN: &str = "0.0.0.0:9550";
    pub const READINESS_INTERVAL_SECONDS: u64 = 10;
    pub const S3_CHECK_INTERVAL_SECONDS: u64 = 30;
    /// Kubernetes' default terminationGracePeriodSeconds is 30; the chart raises both.
    pub const SHUTDOWN_GRACE_SECONDS: u64 = 60;
    pub const RETRY_INITIAL_SECONDS: u64 = 60;
    pub const RETRY_MAX_SECONDS: u64 = 3600;

    pub(super) fn prefix() -> String {
        PREFIX.into()
    }
    pub(super) fn region() -> String {
        REGION.into()
    }
    pub(super) fn part_size_mib() -> u32 {
        PART_SIZE_MIB
    }
    pub(super) fn s3_max_attempts() -> u32 {
        10
    }
    pub(super) fn max_dump_size_gib() -> u32 {
        1024
    }
    pub(super) fn upload_concurrency() -> u32 {
        UPLOAD_CONCURRENCY
    }
    pub(super) fn yes() -> bool {
        true
    }
    pub(super) fn pg_host() -> String {
        PG_HOST.into()
    }
    pub(super) fn pg_port() -> u16 {
        PG_PORT
    }
    pub(super) fn pg_user() -> String {
        PG_USER.into()
    }
    pub(super) fn pg_dump() -> std::path::PathBuf {
        PG_DUMP.into()
    }
    pub(super) fn lock_wait_timeout_seconds() -> u64 {
        600
    }
    pub(super) fn backup_timeout_seconds() -> u64 {
        6 * 3600
    }
    pub(super) fn connect_timeout_seconds() -> u64 {
        CONNECT_TIMEOUT_SECONDS
    }
    pub(super) fn log_level() -> String {
        LOG_LEVEL.into()
    }
    pub(super) fn postgresql_schedule() -> String {
        POSTGRESQL_SCHEDULE.into()
    }
    pub(super) fn listen() -> String {
        LISTEN.into()
    }
    pub(super) fn readiness_interval_seconds() -> u64 {
        READINESS_INTERVAL_SECONDS
    }
    pub(super) fn s3_check_interval_seconds() -> u64 {
        S3_CHECK_INTERVAL_SECONDS
    }
    pub(super) fn shutdown_grace_seconds() -> u64 {
        SHUTDOWN_GRACE_SECONDS
    }
    pub(super) fn retry_initial_seconds() -> u64 {
        RETRY_INITIAL_SECONDS
    }
    pub(super) fn retry_max_seconds() -> u64 {
        RETRY_MAX_SECONDS
    }
    pub(super) fn psql() -> std::path::PathBuf {
        PSQL.into()
    }
    pub(super) fn http_timeout_seconds() -> u64 {
        HTTP_TIMEOUT_SECONDS
    }
    pub(super) fn http_interval_seconds() -> u64 {
        HTTP_INTERVAL_SECONDS
    }
    pub(super) fn http_method() -> String {
        "GET".into()
    }
    pub(super) fn http_expect_status() -> u16 {
        HTTP_EXPECT_STATUS
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Helm release name; part of every S3 key (`<prefix>/<engine>/<release>/...`).
    pub release: String,
    pub s3: S3Config,
    /// Present when this agent backs up a PostgreSQL database.
    #[serde(default)]
    pub postgresql: Option<PostgresConfig>,
    /// Present when this agent backs up a ClickHouse server.
    #[serde(default)]
    pub clickhouse: Option<ClickHouseConfig>,
    #[serde(default)]
    pub signing: SigningConfig,
    #[serde(default)]
    pub restore: RestoreConfig,
    #[serde(default)]
    pub drill: DrillConfig,
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub log: LogConfig,
}

/// `strongroom run`: the sidecar's endpoints, readiness checks, retries and shutdown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// `host:port` of /healthz, /readyz, /status, /backup/last, /metrics. Changing it needs a
    /// restart.
    #[serde(default = "defaults::listen")]
    pub listen: String,
    /// How often readiness checks the database (and at most how stale /readyz can be).
    #[serde(default = "defaults::readiness_interval_seconds")]
    pub readiness_interval_seconds: u64,
    /// How often readiness checks the bucket (S3 requests cost money; they are cached).
    #[serde(default = "defaults::s3_check_interval_seconds")]
    pub s3_check_interval_seconds: u64,
    /// Whether an unreachable bucket makes the pod NotReady. Off: the sidecar shares the
    /// database's pod, and a bucket outage or an expired IRSA token must not take every
    /// database out of its Service; the bucket's state stays in /status, in
    /// `strongroom_dependency_up{dependency="s3"}` and so in alerts.
    #[serde(default)]
    pub ready_requires_s3: bool,
    /// How long SIGTERM waits for a running backup before aborting it.
    #[serde(default = "defaults::shutdown_grace_seconds")]
    pub shutdown_grace_seconds: u64,
    /// After a failed run, retry after this long, doubling up to `retry_max_seconds` (and
    /// never later than the next scheduled run).
    #[serde(default = "defaults::retry_initial_seconds")]
    pub retry_initial_seconds: u64,
    #[serde(default = "defaults::retry_max_seconds")]
    pub retry_max_seconds: u64,
    /// File holding the bearer token for `POST /backup`; without it the trigger is off.
    #[serde(default)]
    pub trigger_token_file: Option<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            listen: defaults::listen(),
            readiness_interval_seconds: defaults::readiness_interval_seconds(),
            s3_check_interval_seconds: defaults::s3_check_interval_seconds(),
            ready_requires_s3: false,
            shutdown_grace_seconds: defaults::shutdown_grace_seconds(),
            retry_initial_seconds: defaults::retry_initial_seconds(),
            retry_max_seconds: defaults::retry_max_seconds(),
            trigger_token_file: None,
        }
    }
}

impl DaemonConfig {
    /// The trigger token, if configured (read on each use, so a rotated Secret is picked up).
    pub fn trigger_token(&self) -> Result<Option<String>, ConfigError> {
        self.trigger_token_file
            .as_deref()
            .map(|path| read_secret("daemon.trigger_token_file", path))
            .transpose()
    }
}

/// Manifest signing keys. The backup side needs only the private key, verify and restore only
/// the public key; without a public key every verify/restore result says "UNSIGNED".
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
}

/// Reads a one-line secret file (a mounted Secret), without its trailing newline.
pub(super) fn read_secret(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    let raw = std::fs::read_to_string(path).map_err(|source| ConfigError::Secret {
        key,
        path: path.to_owned(),
        source,
    })?;
    let secret = raw.strip_suffix('\n').unwrap_or(&raw);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.is_empty() {
        return Err(ConfigError::EmptySecret {
            key,
            path: path.to_owned(),
        });
    }
    Ok(secret.to_owned())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter (`info`, `strongroom=debug,warn`); `RUST_LOG` overrides it.
    #[serde(default = "defaults::log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: defaults::log_level(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON lines, unless stderr is a terminal.
    #[default]
    Auto,
    Json,
    Text,
}

/// What can be wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; check the --config path")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("config file {path}: key `{key}`: {problem}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
    },
    #[error(
        "cannot read the secret named by `{key}` from {path}: {source}; check that the Secret \
         is mounted and readable by the agent's user"
    )]
    Secret {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// An empty secret is a missing one (an empty Secret key), never a password or token.
    #[error(
        "the secret named by `{key}` ({path}) is empty; put the value in the Secret (a missing \
         key in a Kubernetes Secret mounts as an empty or absent file)"
    )]
    EmptySecret { key: &'static str, path: PathBuf },
    /// The `sslrootcert` file is missing, unreadable or holds no usable CA certificate.
    #[error(
        "cannot use the CA file named by `{key}` ({path}): {problem}; mount the PEM file of the \
         CA that issued the PostgreSQL server's certificate there, readable by the agent's user"
    )]
    RootCert {
        key: &'static str,
        path: PathBuf,
        problem: String,
    },
}

/// A validation failure before it is tied to a file.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub problem: String,
}

fn invalid(key: &str, problem: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// Seconds in a day, for bounds.
const DAY: u64 = 86_400;

/// Every number later code computes with is bounded, so that no valid config can overflow a
/// time or a duration (`retention: {years: 8000}` once panicked).
fn in_range(key: &str, value: u64, range: std::ops::RangeInclusive<u64>) -> Result<(), Invalid> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(invalid(
        key,
        format!(
            "{value} is out of range: use {} to {}",
            range.start(),
            range.end()
        ),
    ))
}

impl Config {
    /// The PostgreSQL section, or the error telling the user to add it.
    pub fn postgresql(&self) -> Result<&PostgresConfig, crate::error::Error> {
        self.postgresql
            .as_ref()
            .ok_or(crate::error::Error::EngineNotConfigured {
                engine: "postgresql",
            })
    }

    /// The ClickHouse section, or the error telling the user to add it.
    pub fn clickhouse(&self) -> Result<&ClickHouseConfig, crate::error::Error> {
        self.clickhouse
            .as_ref()
            .ok_or(crate::error::Error::EngineNotConfigured {
                engine: "clickhouse",
            })
    }

    /// Whether `engine` has a section in this config.
    pub fn has_engine(&self, engine: crate::layout::Engine) -> bool {
        match engine {
            crate::layout::Engine::Postgresql => self.postgresql.is_some(),
            crate::layout::Engine::Clickhouse => self.clickhouse.is_some(),
        }
    }

    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_yaml(&text, path)
    }

    /// Parse and validate YAML text; `origin` names it in error messages.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_owned(),
            source,
        })?;
        config.validate().map_err(|e| ConfigError::Invalid {
            path: origin.to_owned(),
            key: e.key,
            problem: e.problem,
        })?;
        Ok(config)
    }

    /// Check every value that serde's types cannot express.
    pub fn validate(&self) -> Result<(), Invalid> {
        validate_release(&self.release)?;
        s3::validate(&self.s3)?;
        if let Some(pg) = &self.postgresql {
            postgres::validate(pg)?;
        }
        if let Some(ch) = &self.clickhouse {
            clickhouse::validate(ch)?;
        }
        restore::validate(&self.restore, self.postgresql.as_ref())?;
        drill::validate(&self.drill)?;
        validate_daemon(&self.daemon)?;
        if self.log.level.trim().is_empty() {
            return Err(invalid("log.level", "must not be empty; use e.g. `info`"));
        }
        Ok(())
    }
}

fn validate_release(release: &str) -> Result<(), Invalid> {
    if crate::layout::is_release_name(release) {
        Ok(())
    } else {
        Err(invalid(
            "release",
            format!(
                "{release:?} is not a Helm release name: use 1-53 lowercase letters, digits \
                 and '-', starting and ending with a letter or digit"
            ),
        ))
    }
}

fn validate_daemon(d: &DaemonConfig) -> Result<(), Invalid> {
    if d.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(invalid(
            "daemon.listen",
            format!("{:?} is not host:port; use e.g. 0.0.0.0:9550", d.listen),
        ));
    }
    for (key, value, range) in [
        (
            "daemon.readiness_interval_seconds",
            d.readiness_interval_seconds,
            1..=3600,
        ),
        (
            "daemon.s3_check_interval_seconds",
            d.s3_check_interval_seconds,
            1..=DAY,
        ),
        (
            "daemon.retry_initial_seconds",
            d.retry_initial_seconds,
            1..=DAY,
        ),
        ("daemon.retry_max_seconds", d.retry_max_seconds, 1..=7 * DAY),
        (
            "daemon.shutdown_grace_seconds",
            d.shutdown_grace_seconds,
            0..=DAY,
        ),
    ] {
        in_range(key, value, range)?;
    }
    if d.retry_max_seconds < d.retry_initial_seconds {
        return Err(invalid(
            "daemon.retry_max_seconds",
            "must be at least daemon.retry_initial_seconds",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "release: app\ns3:\n  bucket: backups-1\npostgresql:\n  database: app\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, Path::new("test.yaml"))
    }

    fn error_of(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.s3.prefix, "backups");
        assert_eq!(c.s3.integrity, IntegrityMode::Auto);
        assert!(c.s3.object_lock.required);
        assert_eq!(c.s3.object_lock.mode, LockMode::Governance);
        assert_eq!(c.s3.object_lock.retention.years, Some(7));
        assert!(!c.s3.path_style());
        let pg = c.postgresql.unwrap();
        assert_eq!(pg.host, "/var/run/postgresql");
        assert_eq!(pg.port, 5432);
        assert_eq!(pg.compression_level(), 6);
        assert_eq!(pg.compression_format, crate::layout::Codec::Gzip);
    }

    #[test]
    fn endpoint_implies_path_style_unless_overridden() {
        let c = parse(&MINIMAL.replace("bucket:", "endpoint: http://s3:9000\n  bucket:")).unwrap();
        assert!(c.s3.path_style());
        let text = MINIMAL.replace(
            "bucket:",
            "endpoint: http://s3:9000\n  force_path_style: false\n  bucket:",
        );
        assert!(!parse(&text).unwrap().s3.path_style());
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let e = error_of(&MINIMAL.replace("bucket:", "buckett: x\n  bucket:"));
        assert!(e.contains("s3"), "{e}");
        assert!(e.contains("unknown field `buckett`"), "{e}");
        assert!(e.contains("bucket"), "{e}");
    }

    #[test]
    fn bad_enum_value_lists_the_allowed_ones() {
        let text = MINIMAL.replace("bucket:", "object_lock:\n    mode: governance\n  bucket:");
        let e = error_of(&text);
        assert!(e.contains("s3.object_lock.mode"), "{e}");
        assert!(e.contains("governance"), "{e}");
        assert!(e.contains("GOVERNANCE") && e.contains("COMPLIANCE"), "{e}");
        let e = error_of(&MINIMAL.replace("bucket:", "integrity: sha1\n  bucket:"));
        assert!(e.contains("s3.integrity") && e.contains("sha1"), "{e}");
        assert!(
            e.contains("md5") && e.contains("sha256") && e.contains("crc32"),
            "{e}"
        );
    }

    /// Every bounded number at its largest allowed value: valid, and nothing computed from it
    /// overflows.
    #[test]
    fn the_largest_valid_numbers_compute_without_panicking() {
        let yaml = "release: app\ns3:\n  bucket: backups-1\n  object_lock:\n    retention: \
                    {years: 100}\npostgresql:\n  database: app\n  jitter_seconds: 86400\n  \
                    connect_timeout_seconds: 3600\nclickhouse:\n  named_collection: s3\n  \
                    backup_timeout_seconds: 604800\n  restore_timeout_seconds: 604800\n  \
                    poll_interval_ms: 60000\n  jitter_seconds: 86400\n  full_every: 10000\n\
                    restore:\n  validation:\n    http_timeout_seconds: 86400\n    \
                    http_interval_seconds: 3600\ndaemon:\n  readiness_interval_seconds: 3600\n  \
                    s3_check_interval_seconds: 86400\n  shutdown_grace_seconds: 86400\n  \
                    retry_initial_seconds: 86400\n  retry_max_seconds: 604800\n";
        let config = Config::from_yaml(yaml, Path::new("t")).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let years = crate::lock::LockPolicy::from_config(&config.s3.object_lock);
        assert!(years.retention_from(now).retain_until > now);
        let days = crate::lock::LockPolicy {
            mode: LockMode::Governance,
            period: RetentionPeriod {
                days: Some(36_500),
                years: None,
            },
        };
        assert!(days.retention_from(now).retain_until > now);
        let d = &config.daemon;
        let delay = crate::schedule::retry_delay(
            u32::MAX,
            std::time::Duration::from_secs(d.retry_initial_seconds),
            std::time::Duration::from_secs(d.retry_max_seconds),
        );
        let _ = now + delay + crate::schedule::jitter(86_400);
        let _ = std::time::Instant::now()
            + std::time::Duration::from_secs(config.clickhouse.unwrap().backup_timeout_seconds)
            + std::time::Duration::from_secs(d.shutdown_grace_seconds);
        // One more than allowed is refused, naming the key.
        for (from, to, key) in [
            (
                "{years: 100}",
                "{years: 8000}",
                "s3.object_lock.retention.years",
            ),
            (
                "retry_max_seconds: 604800",
                "retry_max_seconds: 604801",
                "daemon.retry_max_seconds",
            ),
            (
                "full_every: 10000",
                "full_every: 10001",
                "clickhouse.full_every",
            ),
        ] {
            let e = Config::from_yaml(&yaml.replace(from, to), Path::new("t")).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
    }

    #[test]
    fn invalid_values_name_key_value_and_what_is_allowed() {
        let cases = [
            (
                MINIMAL.replace("release: app", "release: App_1"),
                "`release`",
                "App_1",
            ),
            (
                MINIMAL.replace("backups-1", "Bad_Bucket"),
                "`s3.bucket`",
                "Bad_Bucket",
            ),
            (
                MINIMAL.replace("bucket:", "prefix: /abs/x\n  bucket:"),
                "`s3.prefix`",
                "/abs/x",
            ),
            (
                MINIMAL.replace("bucket:", "prefix: a/../b\n  bucket:"),
                "`s3.prefix`",
                "a/../b",
            ),
            (
                MINIMAL.replace("bucket:", "part_size_mib: 2\n  bucket:"),
                "`s3.part_size_mib`",
                "5-1024",
            ),
            (
                MINIMAL.replace("database: app", "database: app\n  compression_level: 11"),
                "`postgresql.compression_level`",
                "0-9",
            ),
            (
                MINIMAL.replace(
                    "database: app",
                    "database: app\n  compression_format: zstd\n  compression_level: 0",
                ),
                "`postgresql.compression_level`",
                "for zstd: use 1-19",
            ),
            (
                MINIMAL.replace("database: app", "database: app\n  compression_format: xz"),
                "compression_format",
                "gzip",
            ),
            (
                MINIMAL.replace("bucket:", "endpoint: s3.local\n  bucket:"),
                "`s3.endpoint`",
                "s3.local",
            ),
        ];
        for (text, key, detail) in cases {
            let e = error_of(&text);
            assert!(e.contains(key), "{key}: {e}");
            assert!(e.contains(detail), "{key}: {e}");
            assert!(e.contains("test.yaml"), "{e}");
        }
    }

    #[test]
    fn retention_needs_exactly_one_unit() {
        let both = MINIMAL.replace(
            "bucket:",
            "object_lock:\n    retention: {days: 1, years: 1}\n  bucket:",
        );
        assert!(error_of(&both).contains("exactly one of `days` or `years`"));
        let zero = MINIMAL.replace(
            "bucket:",
            "object_lock:\n    retention: {days: 0}\n  bucket:",
        );
        assert!(error_of(&zero).contains("`s3.object_lock.retention`"));
        let days = MINIMAL.replace(
            "bucket:",
            "object_lock:\n    retention: {days: 30}\n  bucket:",
        );
        let c = parse(&days).unwrap();
        assert_eq!(c.s3.object_lock.retention.days, Some(30));
        assert_eq!(c.s3.object_lock.retention.years, None);
    }

    #[test]
    fn restore_checks_are_validated() {
        let base = format!("{MINIMAL}restore:\n  validation:\n");
        let ok = format!(
            "{base}    sql:\n      - name: rows\n        query: SELECT count(*) FROM t\n        expect: {{min: 1}}\n    http:\n      - name: health\n        url: http://app:8080/health\n        expect_json: {{status: ok}}\n"
        );
        let c = parse(&ok).unwrap();
        assert_eq!(c.restore.validation.sql[0].expect.min, Some(1.0));
        assert_eq!(c.restore.validation.http[0].method, "GET");
        assert_eq!(c.restore.validation.http[0].expect_status, 200);
        let no_expect = ok.replace("expect: {min: 1}", "expect: {}");
        assert!(error_of(&no_expect).contains("restore.validation.sql[0].expect"));
        let https = ok.replace("http://app", "https://app");
        assert!(error_of(&https).contains("restore.validation.http[0].url"));
        let dup = ok.replace("name: health", "name: rows");
        assert!(error_of(&dup).contains("unique"));
    }

    #[test]
    fn schedules_and_daemon_settings_are_validated() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.postgresql.unwrap().schedule, "0 2 * * *");
        assert_eq!(c.daemon.listen, "0.0.0.0:9550");
        let bad = MINIMAL.replace("database: app", "database: app\n  schedule: \"0 25 * * *\"");
        let e = error_of(&bad);
        assert!(
            e.contains("`postgresql.schedule`") && e.contains("0 25 * * *"),
            "{e}"
        );
        let listen = format!("{MINIMAL}daemon:\n  listen: localhost\n");
        assert!(error_of(&listen).contains("`daemon.listen`"));
    }

    #[test]
    fn missing_required_key_is_named() {
        let e = error_of("release: app\ns3: {}\n");
        assert!(e.contains("missing field `bucket`"), "{e}");
    }

    #[test]
    fn password_file_is_read_without_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cr3t\n").unwrap();
        let mut pg = parse(MINIMAL).unwrap().postgresql.unwrap();
        pg.password_file = Some(file);
        assert_eq!(pg.password().unwrap().as_deref(), Some("s3cr3t"));
        pg.password_file = Some(dir.path().join("absent"));
        let e = pg.password().unwrap_err().to_string();
        assert!(
            e.contains("postgresql.password_file") && e.contains("absent"),
            "{e}"
        );
    }
}
