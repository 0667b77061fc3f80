//! The backup manifest: the record that makes a backup complete.
//!
//! It is written last, only after every object of the backup was uploaded, read back and
//! locked, and it pins each object by S3 VersionId with its size and SHA-256, so a restore can
//! fetch exactly those bytes and check them. The format is versioned ([`FORMAT_VERSION`]);
//! readers refuse versions they do not know. Signing is not part of this module.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::LockMode;
use crate::engine::postgres::TableRows;
use crate::layout::Engine;

/// Bumped on any change that an older reader would misread or refuse. 2 added
/// `postgresql.globals_key` (older agents refuse its unknown field; this one reads 1 and 2).
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format this agent still reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub engine: Engine,
    pub release: String,
    /// The backup's name, `YYYYMMDDTHHMMSSZ`.
    pub timestamp: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    pub agent_version: String,
    /// The retention every object below carries (checked after upload); absent only when the
    /// bucket has no Object Lock and `s3.object_lock.required` was false.
    pub retention: Option<ManifestRetention>,
    /// Every object of the backup, data first, each pinned by version.
    pub objects: Vec<ManifestObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgresql: Option<PostgresDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clickhouse: Option<ClickHouseDetails>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestRetention {
    pub mode: LockMode,
    #[serde(with = "time::serde::rfc3339")]
    pub retain_until: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestObject {
    pub key: String,
    /// The S3 version holding exactly these bytes; a later version under the same key is not
    /// this backup.
    pub version_id: Option<String>,
    pub size_bytes: u64,
    /// Lowercase hex SHA-256 of the object's bytes as stored: always for PostgreSQL. ClickHouse
    /// uploads its files itself; for those, `.backup` holds each file's CityHash128, and the
    /// manifest pins `.backup` by version and digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresDetails {
    pub database: String,
    pub server_version: String,
    pub pg_dump_version: String,
    /// `plain` SQL, as `pg_dump --format=plain` writes it.
    pub dump_format: String,
    pub compression: Compression,
    pub uncompressed_size_bytes: u64,
    /// The exported snapshot both the dump and `tables` were read in.
    pub snapshot_id: String,
    /// Exact row counts, in the dump's snapshot.
    pub tables: Vec<TableRows>,
    /// The key of the roles, memberships and settings object (in `objects`), read in the same
    /// snapshot; absent in backups from before it was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub globals_key: Option<String>,
    /// The dump's sections, in order, tiling the object: each is whole gzip members, so it can
    /// be fetched with a ranged GET and loaded on its own (absent before format 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sections: Option<Vec<DumpSection>>,
}

/// What part of a plain dump a section holds, and so when and where it may be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SectionKind {
    /// pg_dump's session settings before its first object: every session loads them first.
    Preamble,
    /// Schemas, types, functions, tables...: one session, before anything else.
    PreData,
    /// One table's rows (or a chunk of them), sequence values, large objects: in parallel.
    Data,
    /// An index, or a constraint that builds one: in parallel, one table per session.
    Index,
    /// The rest of the post-data (foreign keys, triggers, attachments, grants...): one
    /// session, in the dump's order, after every index.
    PostData,
}

/// One section of the dump object: its compressed byte range and how to load it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpSection {
    pub kind: SectionKind,
    /// Offset of its first compressed byte in the object.
    pub offset: u64,
    /// Compressed bytes.
    pub size_bytes: u64,
    pub uncompressed_size_bytes: u64,
    /// Lowercase hex SHA-256 of its compressed bytes, as stored.
    pub sha256: String,
    /// `data`: the table its COPY loads; `index`: the table it is built on (as the dump
    /// names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// `data` that starts inside a COPY's rows: that COPY statement, sent before them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<String>,
    /// `data` that ends inside a COPY's rows: the restore ends the COPY after them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ends_in_copy: bool,
    /// The dump's `SET default_tablespace = ...;` in effect where the section starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespace: Option<String>,
    /// The COPY rows it holds, counted while the dump streamed past, by the table each COPY
    /// names (as the dump writes it). Not written to the manifest (its `tables` has each
    /// table's count, from these).
    #[serde(skip)]
    pub copy_rows: Vec<(String, u64)>,
}

/// What a ClickHouse backup holds, as the server and its `.backup` metadata describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseDetails {
    pub server_version: String,
    /// The BACKUP operation's id in `system.backups`.
    pub backup_id: String,
    /// What was backed up, e.g. `database app`.
    pub scope: Vec<String>,
    /// The backup this one is incremental to (its folder key), if any.
    pub base_backup: Option<String>,
    /// 0 for a full backup, else how many incremental links lead back to the full one.
    pub chain_length: u32,
    /// Key, version and SHA-256 of ClickHouse's `.backup` metadata.
    pub metadata_key: String,
    pub metadata_sha256: String,
    /// Files listed in `.backup` (including those held by the base backup).
    pub files: u64,
    /// Bytes of all those files.
    pub total_size_bytes: u64,
    /// Row counts read from the backup's own `count.txt` files (MergeTree tables);
    /// `rows` is absent for engines that record none.
    pub tables: Vec<ClickHouseTable>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseTable {
    pub database: String,
    pub table: String,
    pub rows: Option<u64>,
    pub parts: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    /// `gzip` (concatenated members, one per block) or `zstd` (concatenated frames, one per
    /// block).
    pub format: String,
    pub level: u32,
    pub block_size_bytes: u64,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {key} is not valid: {source}")]
    Invalid {
        key: String,
        source: serde_json::Error,
    },
    #[error(
        "manifest {key} has format version {found}; this agent reads versions \
         {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}. \
         Use a newer strongroom to read it"
    )]
    UnknownVersion { key: String, found: u32 },
}

impl Manifest {
    /// A manifest of `engine`'s backup with no objects or details yet (fill in with struct
    /// update syntax).
    pub fn header(
        engine: Engine,
        release: &str,
        timestamp: crate::layout::Timestamp,
        (started_at, finished_at): (OffsetDateTime, OffsetDateTime),
        retention: Option<&crate::store::Retention>,
    ) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            engine,
            release: release.to_owned(),
            timestamp: timestamp.to_string(),
            started_at,
            finished_at,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            retention: retention.map(|r| ManifestRetention {
                mode: r.mode,
                retain_until: r.retain_until,
            }),
            objects: Vec::new(),
            postgresql: None,
            clickhouse: None,
        }
    }

    /// The exact bytes stored (and, later, signed).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        bytes.push(b'\n');
        bytes
    }

    pub fn from_bytes(key: &str, bytes: &[u8]) -> Result<Manifest, ManifestError> {
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let version: Version =
            serde_json::from_slice(bytes).map_err(|source| ManifestError::Invalid {
                key: key.to_owned(),
                source,
            })?;
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version.format_version) {
            return Err(ManifestError::UnknownVersion {
                key: key.to_owned(),
                found: version.format_version,
            });
        }
        serde_json::from_slice(bytes).map_err(|source| ManifestError::Invalid {
            key: key.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sample() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            engine: Engine::Postgresql,
            release: "prod".into(),
            timestamp: "20261123T020000Z".into(),
            started_at: datetime!(2026-11-23 02:00:00 UTC),
            finished_at: datetime!(2026-11-23 02:03:10.5 UTC),
            agent_version: "0.1.0".into(),
            retention: Some(ManifestRetention {
                mode: LockMode::Governance,
                retain_until: datetime!(2033-11-23 02:00:00 UTC),
            }),
            objects: vec![ManifestObject {
                key: "b/postgresql/prod/20261123T020000Z.sql.gz".into(),
                version_id: Some("v1".into()),
                size_bytes: 10,
                sha256: Some("ab".repeat(32)),
            }],
            postgresql: Some(PostgresDetails {
                database: "app".into(),
                server_version: "15.18".into(),
                pg_dump_version: "pg_dump (PostgreSQL) 15.18".into(),
                dump_format: "plain".into(),
                compression: Compression {
                    format: "gzip".into(),
                    level: 6,
                    block_size_bytes: 1 << 20,
                },
                uncompressed_size_bytes: 100,
                snapshot_id: "00000003-00000002-1".into(),
                tables: vec![TableRows {
                    schema: "public".into(),
                    table: "storage_records".into(),
                    rows: 42,
                }],
                globals_key: None,
                sections: None,
            }),
            clickhouse: None,
        }
    }

    #[test]
    fn round_trips_through_its_bytes() {
        let m = sample();
        let bytes = m.to_bytes();
        assert_eq!(Manifest::from_bytes("k", &bytes).unwrap(), m);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"engine\": \"postgresql\""), "{text}");
        assert!(
            text.contains("\"retain_until\": \"2033-11-23T02:00:00Z\""),
            "{text}"
        );
    }

    #[test]
    fn unknown_format_version_is_refused_by_name() {
        let text = String::from_utf8(sample().to_bytes())
            .unwrap()
            .replace("\"format_version\": 3", "\"format_version\": 9");
        let e = Manifest::from_bytes("k", text.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("format version 9"), "{e}");
    }
}
