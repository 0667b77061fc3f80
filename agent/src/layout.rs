//! The S3 key layout from the runbook, and the backup timestamp that names each backup.
//!
//! PostgreSQL: `<prefix>/postgresql/<release>/<timestamp>.sql.gz`, with
//! `<timestamp>.sql.gz.sha256` (sha256sum format) and `<timestamp>.manifest.json` beside it.
//! Timestamps are UTC `YYYYMMDDTHHMMSSZ`, so keys sort by time as text.
//! This module only builds and parses names; it does no I/O.

use std::fmt;

use time::OffsetDateTime;
use time::macros::format_description;

/// The engines whose backups live in the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgresql,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgresql => "postgresql",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backup's name: the UTC second it started, e.g. `20261123T020000Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(OffsetDateTime);

const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

impl Timestamp {
    /// Truncates to whole seconds, in UTC.
    pub fn new(at: OffsetDateTime) -> Timestamp {
        let utc = at.to_offset(time::UtcOffset::UTC);
        Timestamp(utc.replace_nanosecond(0).expect("0 ns is valid"))
    }

    pub fn now() -> Timestamp {
        Timestamp::new(OffsetDateTime::now_utc())
    }

    pub fn parse(text: &str) -> Option<Timestamp> {
        let parsed = time::PrimitiveDateTime::parse(text, FORMAT).ok()?;
        Some(Timestamp(parsed.assume_utc()))
    }

    pub fn datetime(self) -> OffsetDateTime {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.format(FORMAT).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

/// `<prefix>/<engine>/<release>/`: the folder holding one release's backups of one engine.
pub fn engine_folder(prefix: &str, engine: Engine, release: &str) -> String {
    format!("{prefix}/{engine}/{release}/")
}

/// The objects that make up one PostgreSQL backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresKeys {
    pub dump: String,
    pub checksum: String,
    pub manifest: String,
}

pub const DUMP_SUFFIX: &str = ".sql.gz";
pub const CHECKSUM_SUFFIX: &str = ".sql.gz.sha256";
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

pub fn postgres_keys(prefix: &str, release: &str, at: Timestamp) -> PostgresKeys {
    let base = format!("{}{at}", engine_folder(prefix, Engine::Postgresql, release));
    PostgresKeys {
        dump: format!("{base}{DUMP_SUFFIX}"),
        checksum: format!("{base}{CHECKSUM_SUFFIX}"),
        manifest: format!("{base}{MANIFEST_SUFFIX}"),
    }
}

/// What a key inside an engine folder is, if it is one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupObject {
    Dump(Timestamp),
    Checksum(Timestamp),
    Manifest(Timestamp),
}

/// Classify a key found by listing `folder` (which ends in '/').
pub fn classify(folder: &str, key: &str) -> Option<BackupObject> {
    let name = key.strip_prefix(folder)?;
    if let Some(ts) = name.strip_suffix(CHECKSUM_SUFFIX) {
        return Timestamp::parse(ts).map(BackupObject::Checksum);
    }
    if let Some(ts) = name.strip_suffix(DUMP_SUFFIX) {
        return Timestamp::parse(ts).map(BackupObject::Dump);
    }
    if let Some(ts) = name.strip_suffix(MANIFEST_SUFFIX) {
        return Timestamp::parse(ts).map(BackupObject::Manifest);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn keys_follow_the_runbook_layout() {
        let ts = Timestamp::new(datetime!(2026-11-23 02:00:00.750 UTC));
        let keys = postgres_keys("backups/llama-mapper", "prod", ts);
        assert_eq!(
            keys.dump,
            "backups/llama-mapper/postgresql/prod/20261123T020000Z.sql.gz"
        );
        assert_eq!(
            keys.checksum,
            "backups/llama-mapper/postgresql/prod/20261123T020000Z.sql.gz.sha256"
        );
        assert_eq!(
            keys.manifest,
            "backups/llama-mapper/postgresql/prod/20261123T020000Z.manifest.json"
        );
    }

    #[test]
    fn timestamps_are_utc_and_sort_as_text() {
        let a = Timestamp::new(datetime!(2026-11-23 23:59:59 -03:00));
        let b = Timestamp::new(datetime!(2026-11-24 03:00:00 UTC));
        assert_eq!(a.to_string(), "20261124T025959Z");
        assert!(a < b && a.to_string() < b.to_string());
        assert_eq!(Timestamp::parse(&a.to_string()), Some(a));
        assert_eq!(Timestamp::parse("2026-11-24T02:59:59Z"), None);
    }

    #[test]
    fn classify_recognises_only_our_objects() {
        let folder = engine_folder("b", Engine::Postgresql, "r");
        let ts = Timestamp::parse("20261123T020000Z").unwrap();
        let keys = postgres_keys("b", "r", ts);
        assert_eq!(classify(&folder, &keys.dump), Some(BackupObject::Dump(ts)));
        assert_eq!(
            classify(&folder, &keys.checksum),
            Some(BackupObject::Checksum(ts))
        );
        assert_eq!(
            classify(&folder, &keys.manifest),
            Some(BackupObject::Manifest(ts))
        );
        assert_eq!(classify(&folder, "b/postgresql/r/notes.txt"), None);
        assert_eq!(classify(&folder, "b/postgresql/other/x.sql.gz"), None);
    }
}
