//! The S3 key layout from the runbook, and the backup timestamp that names each backup.
//!
//! PostgreSQL: `<prefix>/postgresql/<release>/<timestamp>.sql.gz`, with
//! `<timestamp>.sql.gz.sha256` (sha256sum format) and `<timestamp>.manifest.json` beside it;
//! an opt-in zstd dump is `<timestamp>.sql.zst` with `<timestamp>.sql.zst.sha256`.
//! ClickHouse: `<prefix>/clickhouse/<release>/<timestamp>/`, the folder ClickHouse's own BACKUP
//! writes (its `.backup` metadata inside), with `<timestamp>.manifest.json` beside the folder.
//! Timestamps are UTC `YYYYMMDDTHHMMSSZ`, so keys sort by time as text.
//! This module only builds and parses names; it does no I/O.

use std::fmt;

use time::OffsetDateTime;
use time::macros::format_description;

/// The engines whose backups live in the bucket.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgresql,
    Clickhouse,
}

impl Engine {
    /// Every engine the agent knows; each gets its own scheduler.
    pub const ALL: &'static [Engine] = &[Engine::Postgresql, Engine::Clickhouse];

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgresql => "postgresql",
            Engine::Clickhouse => "clickhouse",
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

/// The objects that make up one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupKeys {
    /// The data: PostgreSQL's `.sql.gz` dump, or ClickHouse's backup folder (ends in `/`).
    pub dump: String,
    /// The checksum file: PostgreSQL's `.sql.gz.sha256`, or ClickHouse's `.backup` metadata
    /// (every file with its size and checksum) inside the folder.
    pub checksum: String,
    pub manifest: String,
    /// Detached Ed25519 signature of the manifest's bytes (when a signing key is configured).
    pub signature: String,
}

/// How a PostgreSQL dump is compressed, and so the suffix of its key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// The runbook's `.sql.gz`: concatenated gzip members.
    #[default]
    Gzip,
    /// `.sql.zst`: concatenated zstd frames.
    Zstd,
}

impl Codec {
    pub const ALL: [Codec; 2] = [Codec::Gzip, Codec::Zstd];

    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }

    /// `.sql.gz` or `.sql.zst`.
    pub fn dump_suffix(self) -> &'static str {
        match self {
            Codec::Gzip => ".sql.gz",
            Codec::Zstd => ".sql.zst",
        }
    }

    /// The dump's sha256sum file: `.sql.gz.sha256` or `.sql.zst.sha256`.
    pub fn checksum_suffix(self) -> &'static str {
        match self {
            Codec::Gzip => ".sql.gz.sha256",
            Codec::Zstd => ".sql.zst.sha256",
        }
    }

    /// The codec of a PostgreSQL dump key, by its suffix.
    pub fn of_dump(key: &str) -> Option<Codec> {
        Codec::ALL
            .into_iter()
            .find(|c| key.ends_with(c.dump_suffix()))
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub const MANIFEST_SUFFIX: &str = ".manifest.json";
pub const SIGNATURE_SUFFIX: &str = ".manifest.json.sig";
/// PostgreSQL's roles, memberships and settings, beside the dump.
pub const GLOBALS_SUFFIX: &str = ".globals.json";
/// ClickHouse's metadata file inside its backup folder.
pub const CLICKHOUSE_METADATA: &str = ".backup";

pub fn postgres_keys(prefix: &str, release: &str, at: Timestamp, codec: Codec) -> BackupKeys {
    let base = format!("{}{at}", engine_folder(prefix, Engine::Postgresql, release));
    BackupKeys {
        dump: format!("{base}{}", codec.dump_suffix()),
        checksum: format!("{base}{}", codec.checksum_suffix()),
        manifest: format!("{base}{MANIFEST_SUFFIX}"),
        signature: format!("{base}{SIGNATURE_SUFFIX}"),
    }
}

/// The globals object of the PostgreSQL backup whose dump is `dump_key`.
pub fn postgres_globals_key(dump_key: &str) -> String {
    let base = Codec::of_dump(dump_key)
        .and_then(|c| dump_key.strip_suffix(c.dump_suffix()))
        .unwrap_or(dump_key);
    format!("{base}{GLOBALS_SUFFIX}")
}

pub fn clickhouse_keys(prefix: &str, release: &str, at: Timestamp) -> BackupKeys {
    let base = format!("{}{at}", engine_folder(prefix, Engine::Clickhouse, release));
    BackupKeys {
        dump: format!("{base}/"),
        checksum: format!("{base}/{CLICKHOUSE_METADATA}"),
        manifest: format!("{base}{MANIFEST_SUFFIX}"),
        signature: format!("{base}{SIGNATURE_SUFFIX}"),
    }
}

/// The keys of `engine`'s backup taken at `at` (`codec`: a PostgreSQL dump's).
pub fn backup_keys(
    prefix: &str,
    engine: Engine,
    release: &str,
    at: Timestamp,
    codec: Codec,
) -> BackupKeys {
    match engine {
        Engine::Postgresql => postgres_keys(prefix, release, at, codec),
        Engine::Clickhouse => clickhouse_keys(prefix, release, at),
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
    if let Some(ts) = name.strip_suffix(&format!("/{CLICKHOUSE_METADATA}")) {
        return Timestamp::parse(ts).map(BackupObject::Dump);
    }
    for codec in Codec::ALL {
        if let Some(ts) = name.strip_suffix(codec.checksum_suffix()) {
            return Timestamp::parse(ts).map(BackupObject::Checksum);
        }
        if let Some(ts) = name.strip_suffix(codec.dump_suffix()) {
            return Timestamp::parse(ts).map(BackupObject::Dump);
        }
    }
    if let Some(ts) = name.strip_suffix(MANIFEST_SUFFIX) {
        return Timestamp::parse(ts).map(BackupObject::Manifest);
    }
    None
}

/// A backup named by its key (as the runbook's `restore.snapshot` gives it), checked against the
/// configured prefix and engine without any request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    pub engine: Engine,
    pub release: String,
    pub timestamp: Timestamp,
    pub keys: BackupKeys,
}

/// Why a snapshot key was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "snapshot key {key:?} refused: {problem}. Give the key as `strongroom list` prints it, e.g. \
     {example}"
)]
pub struct SnapshotKeyError {
    pub key: String,
    pub problem: String,
    pub example: String,
}

/// Parses `<prefix>/postgresql/<release>/<timestamp>.sql.gz` (or `.sql.zst`) or
/// `<prefix>/clickhouse/<release>/<timestamp>` (a trailing `/` allowed): no `..`, no absolute
/// path, no characters outside S3's safe set, nothing outside the configured prefix and engine.
pub fn parse_snapshot(
    prefix: &str,
    engine: Engine,
    key: &str,
) -> Result<SnapshotRef, SnapshotKeyError> {
    let example_suffix = match engine {
        Engine::Postgresql => Codec::Gzip.dump_suffix(),
        Engine::Clickhouse => "",
    };
    let example = format!("{prefix}/{engine}/<release>/20261123T020000Z{example_suffix}");
    let refuse = |problem: &str| SnapshotKeyError {
        key: key.chars().take(200).collect(),
        problem: problem.to_owned(),
        example: example.clone(),
    };
    if key.starts_with("s3://") {
        return Err(refuse("it is a URL; give the key without s3://<bucket>/"));
    }
    if key.is_empty() || key.len() > 1024 {
        return Err(refuse("it is empty or longer than 1024 bytes"));
    }
    let safe = |c: char| c.is_ascii_alphanumeric() || "/!-_.*'()".contains(c);
    if let Some(c) = key.chars().find(|c| !safe(*c)) {
        return Err(refuse(&format!("it contains the character {c:?}")));
    }
    if key.starts_with('/') {
        return Err(refuse("it is an absolute path"));
    }
    let trimmed = match engine {
        Engine::Clickhouse => key.strip_suffix('/').unwrap_or(key),
        Engine::Postgresql => key,
    };
    if trimmed
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(refuse("it has an empty, '.' or '..' path segment"));
    }
    let folder = format!("{prefix}/{engine}/");
    let Some(rest) = trimmed.strip_prefix(&folder) else {
        return Err(refuse(&format!(
            "it is not under the configured prefix and engine ({folder})"
        )));
    };
    let Some((release, file)) = rest.split_once('/') else {
        return Err(refuse("it names no release folder"));
    };
    if !is_release_name(release) {
        return Err(refuse(&format!("{release:?} is not a release name")));
    }
    let (stamp, codec) = match engine {
        Engine::Clickhouse => (file, Codec::default()),
        Engine::Postgresql => match Codec::of_dump(file) {
            Some(codec) => (&file[..file.len() - codec.dump_suffix().len()], codec),
            None => return Err(refuse("it does not name a .sql.gz or .sql.zst dump")),
        },
    };
    let Some(timestamp) = Timestamp::parse(stamp) else {
        return Err(refuse(&format!(
            "{stamp:?} is not a backup timestamp (YYYYMMDDTHHMMSSZ)"
        )));
    };
    Ok(SnapshotRef {
        engine,
        release: release.to_owned(),
        timestamp,
        keys: backup_keys(prefix, engine, release, timestamp, codec),
    })
}

/// A Helm release name: 1-53 of `a-z 0-9 -`, not starting or ending with `-`.
pub fn is_release_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 53
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn keys_follow_the_runbook_layout() {
        let ts = Timestamp::new(datetime!(2026-11-23 02:00:00.750 UTC));
        let keys = postgres_keys("backups/llama-mapper", "prod", ts, Codec::Gzip);
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
    fn snapshot_keys_are_validated_before_any_request() {
        let ok = "backups/app/postgresql/prod/20261123T020000Z.sql.gz";
        let snap = parse_snapshot("backups/app", Engine::Postgresql, ok).unwrap();
        assert_eq!(snap.release, "prod");
        assert_eq!(snap.keys.dump, ok);
        assert_eq!(
            snap.keys.manifest,
            "backups/app/postgresql/prod/20261123T020000Z.manifest.json"
        );
        let zst = "backups/app/postgresql/prod/20261123T020000Z.sql.zst";
        let snap = parse_snapshot("backups/app", Engine::Postgresql, zst).unwrap();
        assert_eq!(snap.keys.dump, zst);
        assert_eq!(snap.keys.checksum, format!("{zst}.sha256"));
        let refused = [
            (
                "backups/app/postgresql/prod/../x/20261123T020000Z.sql.gz",
                "'..'",
            ),
            (
                "/backups/app/postgresql/prod/20261123T020000Z.sql.gz",
                "absolute",
            ),
            ("backups/app/postgresql//20261123T020000Z.sql.gz", "empty"),
            (
                "backups/other/postgresql/prod/20261123T020000Z.sql.gz",
                "not under",
            ),
            (
                "backups/app/clickhouse/prod/20261123T020000Z.sql.gz",
                "not under",
            ),
            (
                "backups/app/postgresql/prod/20261123T020000Z.manifest.json",
                "does not name",
            ),
            (
                "backups/app/postgresql/prod/2026-11-23.sql.gz",
                "not a backup timestamp",
            ),
            (
                "backups/app/postgresql/Prod/20261123T020000Z.sql.gz",
                "not a release name",
            ),
            (
                "backups/app/postgresql/prod/20261123T020000Z.sql.gz;rm",
                "character ';'",
            ),
            ("backups/app/postgresql/prod/x 1.sql.gz", "character ' '"),
            (
                "s3://bucket/backups/app/postgresql/prod/20261123T020000Z.sql.gz",
                "URL",
            ),
            (
                "backups/app/postgresql/20261123T020000Z.sql.gz",
                "no release folder",
            ),
            (
                "backups/app/postgresql/prod/x/20261123T020000Z.sql.gz",
                "not a backup timestamp",
            ),
        ];
        for (key, why) in refused {
            let e = parse_snapshot("backups/app", Engine::Postgresql, key)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{key}: {e}");
            assert!(e.contains("backups/app/postgresql/<release>/"), "{e}");
        }
    }

    #[test]
    fn clickhouse_snapshots_are_folders() {
        let snap = parse_snapshot(
            "backups/app",
            Engine::Clickhouse,
            "backups/app/clickhouse/prod/20261123T023000Z",
        )
        .unwrap();
        assert_eq!(
            snap.keys.dump,
            "backups/app/clickhouse/prod/20261123T023000Z/"
        );
        assert_eq!(
            snap.keys.checksum,
            "backups/app/clickhouse/prod/20261123T023000Z/.backup"
        );
        assert_eq!(
            snap.keys.manifest,
            "backups/app/clickhouse/prod/20261123T023000Z.manifest.json"
        );
        let same = parse_snapshot(
            "backups/app",
            Engine::Clickhouse,
            "backups/app/clickhouse/prod/20261123T023000Z/",
        )
        .unwrap();
        assert_eq!(same, snap);
        let folder = engine_folder("backups/app", Engine::Clickhouse, "prod");
        assert_eq!(
            classify(&folder, &snap.keys.checksum),
            Some(BackupObject::Dump(snap.timestamp))
        );
        for bad in [
            "backups/app/clickhouse/prod/20261123T023000Z//",
            "backups/app/clickhouse/prod/20261123T023000Z/data",
            "backups/app/postgresql/prod/20261123T023000Z",
        ] {
            assert!(
                parse_snapshot("backups/app", Engine::Clickhouse, bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn classify_recognises_only_our_objects() {
        let folder = engine_folder("b", Engine::Postgresql, "r");
        let ts = Timestamp::parse("20261123T020000Z").unwrap();
        for codec in Codec::ALL {
            let keys = postgres_keys("b", "r", ts, codec);
            assert_eq!(classify(&folder, &keys.dump), Some(BackupObject::Dump(ts)));
            assert_eq!(Codec::of_dump(&keys.dump), Some(codec));
            assert_eq!(
                classify(&folder, &keys.checksum),
                Some(BackupObject::Checksum(ts))
            );
            assert_eq!(
                postgres_globals_key(&keys.dump),
                "b/postgresql/r/20261123T020000Z.globals.json"
            );
        }
        let keys = postgres_keys("b", "r", ts, Codec::Gzip);
        assert_eq!(
            classify(&folder, &keys.manifest),
            Some(BackupObject::Manifest(ts))
        );
        assert_eq!(classify(&folder, "b/postgresql/r/notes.txt"), None);
        assert_eq!(classify(&folder, "b/postgresql/other/x.sql.gz"), None);
    }
}
