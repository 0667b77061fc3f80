//! `strongroom preflight`: is this bucket, with these credentials, fit for backups? One line per
//! check, read with the backup writer's credentials (the Helm test pod runs it as the backup's
//! ServiceAccount):
//!
//! - `object-lock`, `versioning`, `default-retention`: the bucket's protection;
//! - `integrity`: which integrity header the server verifies (the `s3.integrity: auto` probe,
//!   an aborted multipart upload that leaves nothing);
//! - `clock`: the skew between this clock and the server's `Date` (retention dates and backup
//!   timestamps come from this clock);
//! - `write`, `list`, `retention`: the role can write a locked object, list its versions (as
//!   the read-back of every upload does), and the lock is on it as written;
//! - `no-delete`: the role cannot delete (a delete without version id of the probe object).
//!
//! What the run leaves in the bucket: one small probe object under
//! `<prefix>/.strongroom/preflight/`, locked for one day, and, only where the role may delete,
//! a delete marker on it. It never removes anything else and needs no permission beyond the
//! writer's.

use std::fmt;

use bytes::Bytes;
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::config::Config;
use crate::layout::Timestamp;
use crate::store::s3::S3Store;
use crate::store::{Integrity, ObjectStore, PartChecksum, Retention, StoreError, probe};

/// Beyond this the clocks disagree enough to matter (NTP keeps nodes within a second; S3
/// refuses requests skewed by 15 minutes).
const MAX_SKEW_SECONDS: i64 = 60;
/// The probe object's retention: long enough to prove the lock, short enough to expire soon.
const PROBE_RETENTION: Duration = Duration::days(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Ok,
    /// Worth knowing, not a reason to refuse the bucket.
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: CheckStatus,
    pub detail: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            CheckStatus::Ok => "ok  ",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "FAIL",
        };
        write!(f, "{status} {:<17} {}", self.name, self.detail)
    }
}

fn check(name: &'static str, status: CheckStatus, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
    }
}

/// Runs every check; none stops the others (a missing permission fails its own line).
pub async fn run(store: &S3Store, config: &Config, now: OffsetDateTime) -> Vec<Check> {
    let bucket = store.target("");
    let mut checks = Vec::new();
    let protection = store.protection().await;
    let lock_enabled = protection.as_ref().ok().map(|p| p.object_lock_enabled);
    let versioning_known = match &protection {
        Ok(p) => {
            checks.push(if p.object_lock_enabled {
                check(
                    "object-lock",
                    CheckStatus::Ok,
                    format!("{bucket} has Object Lock"),
                )
            } else {
                check(
                    "object-lock",
                    CheckStatus::Fail,
                    format!(
                        "{bucket} has no Object Lock: backups there could be deleted or \
                         overwritten. Create the bucket with Object Lock (the Terraform module \
                         infra/terraform/s3_worm_bucket does)"
                    ),
                )
            });
            p.versioning_enabled
        }
        Err(e) => {
            checks.push(check(
                "object-lock",
                CheckStatus::Fail,
                format!("cannot read the bucket's protection: {e}"),
            ));
            None
        }
    };
    if let Some(enabled) = versioning_known {
        checks.push(versioning_check(&bucket, enabled, "GetBucketVersioning"));
    }
    checks.push(default_retention_check(store, config).await);
    checks.push(integrity_check(store, config).await);
    checks.push(clock_check(store, config).await);
    let probe_key = format!(
        "{}/.strongroom/preflight/{}-{}-{}.txt",
        config.s3.prefix,
        config.release,
        Timestamp::new(now),
        uuid::Uuid::new_v4()
    );
    let body = format!(
        "strongroom preflight probe of release {} at {}: locked for one day, never read\n",
        config.release,
        Timestamp::new(now)
    );
    let retention = Retention {
        mode: config.s3.object_lock.mode,
        retain_until: (now + PROBE_RETENTION)
            .replace_nanosecond(0)
            .expect("0 is a valid nanosecond"),
    };
    let body = Bytes::from(body);
    let checksum = PartChecksum::compute(Integrity::Md5, &body);
    let written = match store
        .put_object(&probe_key, body, checksum, Some(&retention))
        .await
    {
        Ok(put) => {
            checks.push(check(
                "write",
                CheckStatus::Ok,
                format!(
                    "wrote {} (version {})",
                    store.target(&probe_key),
                    put.version_id.as_deref().unwrap_or("none")
                ),
            ));
            if versioning_known.is_none() {
                // The server's versioning answer was unreadable: the write's version id tells.
                let versioned = put.version_id.as_deref().is_some_and(|v| v != "null");
                checks.push(versioning_check(
                    &bucket,
                    versioned,
                    "the probe write's version id",
                ));
            }
            Some(put.version_id)
        }
        Err(e) => {
            let hint = if lock_enabled == Some(false) {
                "a locked write cannot succeed in a bucket without Object Lock".to_owned()
            } else {
                format!(
                    "the backup role must allow s3:PutObject and s3:PutObjectRetention on {}/*",
                    config.s3.prefix
                )
            };
            checks.push(check("write", CheckStatus::Fail, format!("{e}; {hint}")));
            if versioning_known.is_none() {
                checks.push(check(
                    "versioning",
                    CheckStatus::Fail,
                    format!(
                        "cannot tell whether {bucket} keeps versions: the server's \
                         GetBucketVersioning answer was unreadable and the probe write failed"
                    ),
                ));
            }
            None
        }
    };
    match written {
        Some(version) => {
            checks.push(list_check(store, config, &probe_key, version.as_deref()).await);
            checks.push(retention_check(store, &probe_key, version.as_deref(), &retention).await);
            checks.push(delete_check(store, &probe_key).await);
        }
        None => {
            for name in ["list", "retention", "no-delete"] {
                checks.push(check(
                    name,
                    CheckStatus::Fail,
                    "not checked: it needs the probe object, and the write failed",
                ));
            }
        }
    }
    checks
}

fn versioning_check(bucket: &str, enabled: bool, source: &str) -> Check {
    if enabled {
        check(
            "versioning",
            CheckStatus::Ok,
            format!("{bucket} keeps versions ({source})"),
        )
    } else {
        check(
            "versioning",
            CheckStatus::Fail,
            format!(
                "{bucket} does not keep versions ({source}): an overwrite would replace a \
                 backup. Enable versioning (Object Lock requires it)"
            ),
        )
    }
}

async fn default_retention_check(store: &S3Store, config: &Config) -> Check {
    let wanted = &config.s3.object_lock;
    let wanted_days = wanted.retention.approx_days();
    match store.default_retention().await {
        Ok(Some(rule)) => {
            let have = format!("{} for {} days", rule.mode, rule.period_days());
            if rule.period_days() < wanted_days {
                check(
                    "default-retention",
                    CheckStatus::Fail,
                    format!(
                        "the bucket's default retention is {have}, shorter than \
                         s3.object_lock.retention ({wanted_days} days): raise the bucket's \
                         default retention"
                    ),
                )
            } else if rule.mode != wanted.mode.as_str() {
                check(
                    "default-retention",
                    CheckStatus::Warn,
                    format!(
                        "the bucket's default retention is {have}; the agent locks each object \
                         in {} (s3.object_lock.mode)",
                        wanted.mode.as_str()
                    ),
                )
            } else {
                check("default-retention", CheckStatus::Ok, have)
            }
        }
        Ok(None) => check(
            "default-retention",
            CheckStatus::Fail,
            "the bucket has no default retention: an object whose lock headers a server ignores \
             (Ceph RGW and moto ignore them on multipart uploads) would stay unlocked until the \
             agent sets its retention. Set a default retention (GOVERNANCE, 7 years)",
        ),
        Err(StoreError::Service { code, .. }) if code == "ObjectLockConfigurationNotFoundError" => {
            check(
                "default-retention",
                CheckStatus::Fail,
                "the bucket has no Object Lock configuration, so no default retention",
            )
        }
        Err(e) => check(
            "default-retention",
            CheckStatus::Fail,
            format!(
                "cannot read the default retention: {e}; the role needs s3:GetBucketObjectLockConfiguration"
            ),
        ),
    }
}

async fn integrity_check(store: &S3Store, config: &Config) -> Check {
    match probe::resolve(store, crate::config::IntegrityMode::Auto, &config.s3.prefix).await {
        Ok(choice) if choice.server_verifies == Some(false) => {
            check("integrity", CheckStatus::Warn, choice.reason)
        }
        Ok(choice) => check("integrity", CheckStatus::Ok, choice.reason),
        Err(e) => check(
            "integrity",
            CheckStatus::Fail,
            format!(
                "the integrity probe (an aborted multipart upload) failed: {e}; the backup role \
                 must allow multipart uploads and s3:AbortMultipartUpload on {}/*",
                config.s3.prefix
            ),
        ),
    }
}

async fn clock_check(store: &S3Store, config: &Config) -> Check {
    let absent = format!(
        "{}/.strongroom/preflight/absent-{}",
        config.s3.prefix,
        uuid::Uuid::new_v4()
    );
    // This clock's reading at the middle of the request, against the server's.
    let before = OffsetDateTime::now_utc();
    let answer = store.server_date(&absent).await;
    let elapsed: Duration = OffsetDateTime::now_utc() - before;
    let local = before + elapsed / 2_i32;
    match answer {
        Ok(server) => {
            let skew = (local - server).whole_seconds();
            let detail = format!("this clock is {skew:+} s from the server's Date ({server})");
            if skew.abs() > MAX_SKEW_SECONDS {
                check(
                    "clock",
                    CheckStatus::Fail,
                    format!(
                        "{detail}, more than {MAX_SKEW_SECONDS} s: retention dates and backup \
                         timestamps come from this clock; synchronise the node's clock (NTP)"
                    ),
                )
            } else {
                check("clock", CheckStatus::Ok, detail)
            }
        }
        Err(problem) => check(
            "clock",
            CheckStatus::Fail,
            format!(
                "cannot read the server's time: {problem}; check that the endpoint is an S3 \
                 server and answers HEAD requests"
            ),
        ),
    }
}

/// The read-back of every upload lists the key's versions: the probe's must be listed.
async fn list_check(store: &S3Store, config: &Config, key: &str, version: Option<&str>) -> Check {
    match store.list_versions(key).await {
        Ok(versions)
            if versions
                .iter()
                .any(|v| v.key == key && v.version_id.as_deref() == version) =>
        {
            check(
                "list",
                CheckStatus::Ok,
                "the probe's version is listed (the read-back of every upload lists versions)",
            )
        }
        Ok(versions) => check(
            "list",
            CheckStatus::Fail,
            format!(
                "listing the probe's versions did not show the version just written ({} \
                 entries): the read-back of every backup would fail",
                versions.len()
            ),
        ),
        Err(e) => check(
            "list",
            CheckStatus::Fail,
            format!(
                "{e}; the backup role must allow s3:ListBucketVersions and s3:ListBucket on the \
                 bucket for the prefix {}/",
                config.s3.prefix
            ),
        ),
    }
}

async fn retention_check(
    store: &S3Store,
    key: &str,
    version: Option<&str>,
    wanted: &Retention,
) -> Check {
    let describe = |r: &Retention| format!("{} until {}", r.mode.as_str(), r.retain_until);
    match store.retention(key, version).await {
        Ok(Some(r))
            if r.mode == wanted.mode
                && r.retain_until >= wanted.retain_until
                && r.retain_until <= wanted.retain_until + Duration::minutes(1) =>
        {
            check(
                "retention",
                CheckStatus::Ok,
                format!("the probe is locked {}", describe(&r)),
            )
        }
        Ok(Some(r)) if r.mode == wanted.mode && r.retain_until > wanted.retain_until => check(
            "retention",
            CheckStatus::Warn,
            format!(
                "the probe is locked {}, longer than the {} it was written with: the server \
                 applied another retention (the bucket default?) than the one sent; the agent \
                 checks every backup's retention after upload",
                describe(&r),
                describe(wanted)
            ),
        ),
        Ok(Some(r)) => check(
            "retention",
            CheckStatus::Fail,
            format!(
                "the probe is locked {}, not {} as written: this server does not keep the \
                 retention it is sent",
                describe(&r),
                describe(wanted)
            ),
        ),
        Ok(None) => check(
            "retention",
            CheckStatus::Fail,
            "the probe object has no retention although the write asked for one: this server \
             does not lock objects",
        ),
        Err(e) => check(
            "retention",
            CheckStatus::Fail,
            format!(
                "{e}; the backup role must allow s3:GetObjectRetention (the read-back needs it)"
            ),
        ),
    }
}

async fn delete_check(store: &S3Store, key: &str) -> Check {
    match store.probe_delete(key).await {
        Err(StoreError::PermissionDenied { code, .. }) if code == "AccessDenied" => check(
            "no-delete",
            CheckStatus::Ok,
            "a delete of the probe was refused (AccessDenied): this role cannot delete",
        ),
        Ok(()) => check(
            "no-delete",
            CheckStatus::Fail,
            format!(
                "this role may delete: a delete without version id of {} succeeded and left a \
                 delete marker on it (the locked version stays). Remove s3:DeleteObject and \
                 s3:DeleteObjectVersion from the backup role (the Terraform module's \
                 writer_policy_json grants neither)",
                store.target(key)
            ),
        ),
        Err(e) => check(
            "no-delete",
            CheckStatus::Fail,
            format!(
                "the delete probe was answered with {e}, not AccessDenied, so it does not tell \
                 whether this role may delete; run preflight again, and if this persists check \
                 the role's policy for s3:DeleteObject"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_its_check_and_status() {
        let line = check("no-delete", CheckStatus::Fail, "this role may delete").to_string();
        assert_eq!(line, "FAIL no-delete         this role may delete");
        let line = check("clock", CheckStatus::Ok, "+0 s").to_string();
        assert!(line.starts_with("ok   clock "), "{line}");
    }
}
