//! The `restore:` section: who loads a backup, how it connects (role, TLS), and the SQL and
//! HTTP checks run afterwards.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{
    ClickHouseRestoreConfig, DAY, Invalid, PostgresConfig, defaults, in_range, invalid,
    postgres::validate_tls,
};
use crate::engine::postgres::SslMode;

/// How `strongroom restore` loads a dump and what it checks afterwards.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreConfig {
    /// The role that loads the dump (it owns what it creates); `postgresql.user` when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// The restore role's password file (the runbook's `restore.postgresql.passwordSecretRef`);
    /// `postgresql.password_file`, then `PGPASSWORD`, when absent.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The restore's TLS mode; `postgresql.sslmode` when absent (a restore may run from
    /// another network than the sidecar, e.g. a CronJob over TCP).
    #[serde(default)]
    pub sslmode: Option<SslMode>,
    /// The restore's CA file; `postgresql.sslrootcert` when absent.
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
    #[serde(default = "defaults::psql")]
    pub psql: PathBuf,
    /// psql sessions that load a section-indexed dump in parallel; 0 means one per available
    /// core. 1 still loads through the staging database; older dumps load in one session.
    #[serde(default)]
    pub jobs: usize,
    /// `ANALYZE` the restored database before it becomes visible (before the staging copy's
    /// swap, or in the one session's transaction before its `COMMIT`), so the planner has
    /// statistics from the first query instead of from autovacuum's first pass.
    #[serde(default = "defaults::yes")]
    pub analyze: bool,
    /// Restore backups without a verified signature. Off: without `signing.public_key_file`
    /// nothing tells a backup the agent wrote from one planted by whoever holds the writer
    /// role (the database pod).
    #[serde(default)]
    pub allow_unsigned: bool,
    #[serde(default)]
    pub validation: ValidationConfig,
    /// The ClickHouse restore's login and SQL checks.
    #[serde(default)]
    pub clickhouse: ClickHouseRestoreConfig,
}

impl RestoreConfig {
    /// psql sessions for a parallel load: `jobs`, or one per available core when 0.
    pub fn sessions(&self) -> usize {
        crate::compress::threads(self.jobs)
    }
}

impl Default for RestoreConfig {
    fn default() -> Self {
        RestoreConfig {
            user: None,
            password_file: None,
            sslmode: None,
            sslrootcert: None,
            psql: defaults::psql(),
            jobs: 0,
            analyze: true,
            allow_unsigned: false,
            validation: ValidationConfig::default(),
            clickhouse: ClickHouseRestoreConfig::default(),
        }
    }
}

/// Checks run after every restore, besides the row counts from the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    #[serde(default)]
    pub sql: Vec<SqlCheck>,
    #[serde(default)]
    pub http: Vec<HttpCheck>,
    #[serde(default = "defaults::http_timeout_seconds")]
    pub http_timeout_seconds: u64,
    #[serde(default = "defaults::http_interval_seconds")]
    pub http_interval_seconds: u64,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            sql: Vec::new(),
            http: Vec::new(),
            http_timeout_seconds: defaults::http_timeout_seconds(),
            http_interval_seconds: defaults::http_interval_seconds(),
        }
    }
}

/// A query whose first column of its first row must meet `expect`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlCheck {
    pub name: String,
    pub query: String,
    pub expect: Expectation,
}

/// Conditions on a value, all of which must hold; at least one is required.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The value as text, exactly.
    #[serde(default)]
    pub equals: Option<String>,
    /// The value as a number, at least this.
    #[serde(default)]
    pub min: Option<f64>,
    /// The value as a number, at most this.
    #[serde(default)]
    pub max: Option<f64>,
}

/// A request to the application, retried until it passes or the timeout ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    pub name: String,
    #[serde(default = "defaults::http_method")]
    pub method: String,
    /// `http://` only: smoke checks talk to the application's in-cluster Service.
    pub url: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default = "defaults::http_expect_status")]
    pub expect_status: u16,
    #[serde(default)]
    pub expect_body_contains: Option<String>,
    /// Every key here must be in the JSON response with an equal value (nested objects too).
    #[serde(default)]
    pub expect_json: Option<serde_json::Value>,
}

pub(super) fn validate(
    restore: &RestoreConfig,
    postgresql: Option<&PostgresConfig>,
) -> Result<(), Invalid> {
    // Only the restore's own keys: postgresql's were checked with their section.
    if restore.sslmode.is_some() || restore.sslrootcert.is_some() {
        let mode = restore
            .sslmode
            .or(postgresql.map(|pg| pg.sslmode))
            .unwrap_or_default();
        let root = restore
            .sslrootcert
            .as_deref()
            .or(postgresql.and_then(|pg| pg.sslrootcert.as_deref()));
        let mode_key = match restore.sslmode {
            Some(_) => "restore.sslmode",
            None => "postgresql.sslmode",
        };
        validate_tls(mode_key, mode, "restore.sslrootcert", root)?;
    }
    in_range("restore.jobs", restore.jobs as u64, 0..=64)?;
    let v = &restore.validation;
    let mut names = std::collections::BTreeSet::new();
    for (i, check) in v.sql.iter().enumerate() {
        let key = format!("restore.validation.sql[{i}]");
        if check.name.trim().is_empty() || !names.insert(check.name.clone()) {
            return Err(invalid(&key, "every check needs a unique, non-empty name"));
        }
        if check.query.trim().is_empty() {
            return Err(invalid(&format!("{key}.query"), "must not be empty"));
        }
        if check.expect == Expectation::default() {
            return Err(invalid(
                &format!("{key}.expect"),
                "give at least one of equals, min or max",
            ));
        }
    }
    validate_http_checks("restore.validation.http", &v.http, &mut names)?;
    in_range(
        "restore.validation.http_timeout_seconds",
        v.http_timeout_seconds,
        1..=DAY,
    )?;
    in_range(
        "restore.validation.http_interval_seconds",
        v.http_interval_seconds,
        1..=3600,
    )?;
    Ok(())
}

/// Checks a list of HTTP smoke checks under `key` (`restore.validation.http`,
/// `drill.smoke.http`): unique names (shared with `names`), http:// URLs, known methods.
pub(super) fn validate_http_checks(
    key: &str,
    checks: &[HttpCheck],
    names: &mut std::collections::BTreeSet<String>,
) -> Result<(), Invalid> {
    for (i, check) in checks.iter().enumerate() {
        let key = format!("{key}[{i}]");
        if check.name.trim().is_empty() || !names.insert(check.name.clone()) {
            return Err(invalid(&key, "every check needs a unique, non-empty name"));
        }
        if !check.url.starts_with("http://") {
            return Err(invalid(
                &format!("{key}.url"),
                format!(
                    "{:?} is not an http:// URL; smoke checks call the application's \
                     in-cluster Service over plain HTTP",
                    check.url
                ),
            ));
        }
        if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"].contains(&check.method.as_str()) {
            return Err(invalid(
                &format!("{key}.method"),
                format!(
                    "{:?}: use GET, POST, PUT, PATCH, DELETE or HEAD",
                    check.method
                ),
            ));
        }
        if !(100..=599).contains(&check.expect_status) {
            return Err(invalid(
                &format!("{key}.expect_status"),
                format!("{} is not an HTTP status", check.expect_status),
            ));
        }
    }
    Ok(())
}
