//! The `s3:` section: the bucket, how uploads are sent (part size, concurrency, integrity
//! header, retries) and the Object Lock policy every object gets, with its validation. The
//! store itself (requests) is in `crate::store`; the lock arithmetic in `crate::lock`.

use serde::{Deserialize, Serialize};

use super::{Invalid, defaults, in_range, invalid};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix under which all engines' backups live, e.g. `backups/llama-mapper`.
    #[serde(default = "defaults::prefix")]
    pub prefix: String,
    #[serde(default = "defaults::region")]
    pub region: String,
    /// For S3-compatible stores (Ceph RGW, MinIO, ...); AWS's endpoint when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`). Defaults to true when `endpoint` is set,
    /// since most self-hosted stores have no wildcard DNS for virtual-hosted buckets.
    #[serde(default)]
    pub force_path_style: Option<bool>,
    #[serde(default)]
    pub integrity: IntegrityMode,
    #[serde(default = "defaults::part_size_mib")]
    pub part_size_mib: u32,
    #[serde(default = "defaults::upload_concurrency")]
    pub upload_concurrency: u32,
    /// Attempts per S3 request (the first and its retries), with exponential backoff and
    /// jitter for throttling (SlowDown, 503), 5xx and connection resets; a part is retried on
    /// its own. Past the limit the backup fails cleanly (upload aborted, no manifest).
    #[serde(default = "defaults::s3_max_attempts")]
    pub max_attempts: u32,
    /// The largest compressed dump a backup must be able to upload: parts grow from
    /// `part_size_mib` as far as this needs within S3's 10,000 parts (and so does memory).
    #[serde(default = "defaults::max_dump_size_gib")]
    pub max_dump_size_gib: u32,
    #[serde(default)]
    pub object_lock: ObjectLockConfig,
}

impl S3Config {
    /// The part sizes of a dump's upload (validated with the config).
    pub fn part_plan(&self) -> crate::pipeline::parts::PartPlan {
        crate::pipeline::parts::PartPlan::new(self.part_size_mib, self.max_dump_size_gib)
            .expect("validated with the config")
    }

    pub fn path_style(&self) -> bool {
        self.force_path_style.unwrap_or(self.endpoint.is_some())
    }
}

/// Which integrity header every upload request carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntegrityMode {
    /// Probe the endpoint once and use the strongest checksum it verifies.
    #[default]
    Auto,
    Md5,
    Sha256,
    Crc32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLockConfig {
    /// Refuse to write into a bucket without Object Lock and versioning. Set to false only for
    /// development; backups then carry no retention at all.
    #[serde(default = "defaults::yes")]
    pub required: bool,
    #[serde(default)]
    pub mode: LockMode,
    #[serde(default)]
    pub retention: RetentionPeriod,
}

impl Default for ObjectLockConfig {
    fn default() -> Self {
        ObjectLockConfig {
            required: true,
            mode: LockMode::default(),
            retention: RetentionPeriod::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LockMode {
    /// Deletable early only with `s3:BypassGovernanceRetention` (break-glass).
    #[default]
    Governance,
    /// Nobody, not even the root account, can delete before the date.
    Compliance,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// How long each object stays locked: exactly one of `days` or `years`, like S3's own
/// default-retention rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPeriod {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub years: Option<u32>,
}

impl RetentionPeriod {
    /// The period in days, a year counted as 365 (as a bucket's default-retention rule counts
    /// it); `days` wins when both are set, as in [`crate::lock::LockPolicy::retention_from`].
    pub fn approx_days(&self) -> i64 {
        match (self.days, self.years) {
            (Some(days), _) => i64::from(days),
            (None, Some(years)) => 365 * i64::from(years),
            (None, None) => 0,
        }
    }
}

impl Default for RetentionPeriod {
    fn default() -> Self {
        RetentionPeriod {
            days: None,
            years: Some(defaults::RETENTION_YEARS),
        }
    }
}

pub(super) fn validate(s3: &S3Config) -> Result<(), Invalid> {
    let b = &s3.bucket;
    let bucket_ok = (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric();
    if !bucket_ok {
        return Err(invalid(
            "s3.bucket",
            format!(
                "{b:?} is not a valid bucket name: use 3-63 lowercase letters, digits, '.' \
                 and '-', starting and ending with a letter or digit"
            ),
        ));
    }
    validate_prefix(&s3.prefix)?;
    if s3.region.trim().is_empty() {
        return Err(invalid(
            "s3.region",
            "must not be empty; use e.g. `us-east-1`",
        ));
    }
    if let Some(endpoint) = &s3.endpoint
        && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
    {
        return Err(invalid(
            "s3.endpoint",
            format!("{endpoint:?} is not a URL: use http://host:port or https://host"),
        ));
    }
    if !(5..=1024).contains(&s3.part_size_mib) {
        return Err(invalid(
            "s3.part_size_mib",
            format!(
                "{} is out of range: S3 parts are 5 MiB to 5 GiB; use 5-1024",
                s3.part_size_mib
            ),
        ));
    }
    in_range(
        "s3.max_dump_size_gib",
        s3.max_dump_size_gib.into(),
        1..=50_000,
    )?;
    in_range("s3.max_attempts", s3.max_attempts.into(), 1..=20)?;
    if let Err(problem) =
        crate::pipeline::parts::PartPlan::new(s3.part_size_mib, s3.max_dump_size_gib)
    {
        return Err(invalid("s3.max_dump_size_gib", problem));
    }
    if !(1..=16).contains(&s3.upload_concurrency) {
        return Err(invalid(
            "s3.upload_concurrency",
            format!("{} is out of range: use 1-16", s3.upload_concurrency),
        ));
    }
    let r = s3.object_lock.retention;
    match (r.days, r.years) {
        (Some(0), None) | (None, Some(0)) => Err(invalid(
            "s3.object_lock.retention",
            "a retention of 0 is not a retention: use days >= 1 or years >= 1",
        )),
        (Some(days), None) => in_range("s3.object_lock.retention.days", days.into(), 1..=36_500),
        (None, Some(years)) => in_range("s3.object_lock.retention.years", years.into(), 1..=100),
        _ => Err(invalid(
            "s3.object_lock.retention",
            "set exactly one of `days` or `years` (the default is `years: 7`)",
        )),
    }
}

/// A prefix is a sequence of non-empty, non-dot segments of S3-safe characters.
pub fn validate_prefix(prefix: &str) -> Result<(), Invalid> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "!-_.*'()".contains(c);
    let ok = !prefix.is_empty()
        && prefix
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && seg.chars().all(safe));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "s3.prefix",
            format!(
                "{prefix:?} is not a usable key prefix: use '/'-separated segments of letters, \
                 digits and !-_.*'() with no leading, trailing or doubled '/' and no '.' or '..' \
                 segment, e.g. `backups/llama-mapper`"
            ),
        ))
    }
}
