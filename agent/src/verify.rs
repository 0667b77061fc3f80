//! `strongroom verify`: the runbook's "verify object presence and non-zero size ... checksum",
//! made strict.
//!
//! For each backup: the manifest is present (one version, not hidden) and its signature valid;
//! every object it lists is present at its pinned VersionId with the recorded, non-zero size,
//! with nothing above it that its restore would read instead, and carries a retention at least
//! as strong and as long as the manifest's ([`objects`]). `--deep` also streams the dump,
//! checking its SHA-256 and that the gzip stream is complete, and checks the `.sha256` file's
//! content. Backups without a manifest are reported as incomplete, not failed: they are the
//! remains of failed runs, locked like everything else; a manifest hidden by a delete marker
//! is a failure. ClickHouse backups get their own checks, down their incremental chain, in
//! [`clickhouse`].

pub(crate) mod clickhouse;
mod objects;

use std::io::sink;

use serde::Serialize;
use time::OffsetDateTime;

use crate::catalog::{self, FetchedManifest};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::layout::{Codec, Engine, SnapshotRef};
use crate::signing::ManifestVerifier;
use crate::store::versions::KeyVersions;
use crate::store::{ObjectStore, Retention, read_small};
use crate::unpack;

/// Which backups to verify.
#[derive(Debug, Clone)]
pub enum Selection {
    Snapshot(String),
    Latest,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
    /// No manifest: not a backup (a run that did not complete).
    Incomplete,
}

/// The verdict on one backup.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub engine: Engine,
    pub snapshot: String,
    pub timestamp: String,
    pub status: Status,
    pub signature: String,
    pub manifest_sha256: Option<String>,
    pub size_bytes: Option<u64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub retain_until: Option<OffsetDateTime>,
    /// What `--deep` established, when run.
    pub deep: Option<String>,
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

impl Verdict {
    /// A verdict with nothing found yet.
    fn new(engine: Engine, snapshot: String, timestamp: String) -> Verdict {
        Verdict {
            engine,
            snapshot,
            timestamp,
            status: Status::Ok,
            signature: String::new(),
            manifest_sha256: None,
            size_bytes: None,
            retain_until: None,
            deep: None,
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// The backups `selection` names, oldest first, each with whether it has a manifest.
pub async fn select<S: ObjectStore>(
    store: &S,
    config: &Config,
    engine: Engine,
    selection: &Selection,
) -> Result<Vec<(SnapshotRef, bool)>> {
    let prefix = &config.s3.prefix;
    Ok(match selection {
        Selection::Snapshot(key) => {
            vec![(crate::layout::parse_snapshot(prefix, engine, key)?, true)]
        }
        Selection::Latest => vec![(
            catalog::latest_complete(store, prefix, engine, &config.release).await?,
            true,
        )],
        Selection::All => catalog::backups(store, prefix, engine, &config.release)
            .await?
            .into_iter()
            .map(|b| (b.snapshot, b.complete))
            .collect(),
    })
}

/// Verifies one backup; never fails as a whole, every problem lands in the verdict.
pub async fn verify_one<S: ObjectStore>(
    store: &S,
    config: &Config,
    snapshot: &SnapshotRef,
    complete: bool,
    verifier: Option<&ManifestVerifier>,
    deep: bool,
) -> Verdict {
    let mut verdict = Verdict::new(
        snapshot.engine,
        snapshot.keys.dump.clone(),
        snapshot.timestamp.to_string(),
    );
    if !complete {
        check_incomplete(store, snapshot, &mut verdict).await;
        if !verdict.problems.is_empty() {
            verdict.status = Status::Failed;
        }
        return verdict;
    }
    match catalog::fetch_manifest(store, snapshot, verifier).await {
        Ok(manifest) => {
            verdict.signature = manifest.signature.to_string();
            verdict.manifest_sha256 = Some(manifest.sha256.clone());
            check_objects(store, config, &manifest, &mut verdict).await;
            match snapshot.engine {
                Engine::Postgresql => {
                    if deep && verdict.problems.is_empty() {
                        check_deep(store, snapshot, &manifest, &mut verdict).await;
                    }
                }
                Engine::Clickhouse => {
                    clickhouse::check(store, config, verifier, &manifest, deep, &mut verdict).await;
                }
            }
        }
        Err(e) => {
            verdict.signature = "-".into();
            verdict.problems.push(e.to_string());
        }
    }
    if !verdict.problems.is_empty() {
        verdict.status = Status::Failed;
    }
    verdict
}

/// Presence by version, size, what sits above, storage class and retention of every object
/// in the manifest ([`objects`]), into `verdict`.
async fn check_objects<S: ObjectStore>(
    store: &S,
    config: &Config,
    manifest: &FetchedManifest,
    verdict: &mut Verdict,
) {
    let required = manifest
        .manifest
        .retention
        .as_ref()
        .map(|r| objects::Required {
            retention: Retention {
                mode: r.mode,
                retain_until: r.retain_until,
            },
            by: "the manifest".into(),
            advice: "",
        });
    if required.is_none() && config.s3.object_lock.required {
        verdict.problems.push(
            "the manifest records no retention: the backup was written without Object Lock".into(),
        );
    }
    let found = objects::check(store, manifest, required.as_ref()).await;
    verdict.problems.extend(found.problems);
    verdict.warnings.extend(found.warnings);
    verdict.retain_until = found.retain_until;
    verdict.size_bytes = found.first_size;
}

/// A backup listed without a manifest: the remains of a run that did not finish, unless a
/// delete marker hides the manifest (a complete backup someone hid: a problem).
async fn check_incomplete<S: ObjectStore>(
    store: &S,
    snapshot: &SnapshotRef,
    verdict: &mut Verdict,
) {
    verdict.signature = "-".into();
    let key = &snapshot.keys.manifest;
    match KeyVersions::of(store, key).await {
        Ok(versions) if versions.hidden() => verdict.problems.push(
            Error::Hidden {
                key: store.target(key),
                versions: versions.describe(),
            }
            .to_string(),
        ),
        Ok(_) => verdict.status = Status::Incomplete,
        Err(e) => verdict.problems.push(e.to_string()),
    }
}

/// Streams the dump (SHA-256, complete gzip or zstd, uncompressed size) and checks the `.sha256` file.
async fn check_deep<S: ObjectStore>(
    store: &S,
    snapshot: &SnapshotRef,
    manifest: &FetchedManifest,
    verdict: &mut Verdict,
) {
    let keys = &snapshot.keys;
    let Ok(dump) = manifest.object(&keys.dump) else {
        verdict
            .problems
            .push(format!("the manifest does not list {}", keys.dump));
        return;
    };
    let expected = dump.sha256.clone().unwrap_or_default();
    let codec = Codec::of_dump(&keys.dump).unwrap_or_default();
    let source = unpack::Compressed {
        key: &keys.dump,
        version_id: dump.version_id.as_deref(),
        codec,
        range: None,
    };
    match unpack::unpack_into(store, source, sink()).await {
        Ok(unpacked) => {
            let actual = hex::encode(unpacked.sha256);
            if actual != expected {
                verdict.problems.push(format!(
                    "{} hashes to {actual}, the manifest says {expected}",
                    keys.dump
                ));
            }
            let expected_plain = manifest
                .manifest
                .postgresql
                .as_ref()
                .map(|p| p.uncompressed_size_bytes);
            if expected_plain.is_some_and(|n| n != unpacked.uncompressed) {
                verdict.problems.push(format!(
                    "{} decompresses to {} bytes, the manifest says {}",
                    keys.dump,
                    unpacked.uncompressed,
                    expected_plain.unwrap_or_default()
                ));
            }
            verdict.deep = Some(format!(
                "sha256 {}, {codec} complete ({} bytes of SQL)",
                if actual == expected { "ok" } else { "MISMATCH" },
                unpacked.uncompressed
            ));
        }
        Err(e) => verdict.problems.push(e.to_string()),
    }
    if let Ok(entry) = manifest.object(&keys.checksum) {
        match read_small(store, &keys.checksum, entry.version_id.as_deref(), 4096).await {
            Ok(bytes) => {
                let name = keys.dump.rsplit('/').next().unwrap_or_default();
                if bytes != format!("{expected}  {name}\n").as_bytes() {
                    verdict.problems.push(format!(
                        "{} does not hold the dump's SHA-256 in sha256sum format",
                        keys.checksum
                    ));
                }
            }
            Err(e) => verdict.problems.push(e.to_string()),
        }
    }
}

/// One line per verdict, as `strongroom verify` prints it.
pub fn render_line(v: &Verdict) -> String {
    let status = match v.status {
        Status::Ok => "OK  ",
        Status::Failed => "FAIL",
        Status::Incomplete => "SKIP",
    };
    let size = v.size_bytes.map_or("-".into(), crate::list::human_size);
    let until = v.retain_until.map_or("not locked".into(), |t| {
        format!("locked until {}", t.date())
    });
    let mut line = format!(
        "{status} {} {} {size}, {until}, {}",
        v.timestamp, v.engine, v.signature
    );
    if v.status == Status::Incomplete {
        line = format!(
            "{status} {} {} incomplete: no manifest (a run that did not finish)",
            v.timestamp, v.engine
        );
    }
    if let Some(deep) = &v.deep {
        line.push_str(&format!("; deep: {deep}"));
    }
    for w in &v.warnings {
        line.push_str(&format!("\n       warning: {w}"));
    }
    for p in &v.problems {
        line.push_str(&format!("\n       problem: {p}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LockMode;
    use crate::layout::Timestamp;
    use crate::manifest::{Manifest, ManifestObject};
    use crate::store::memory::MemoryStore;
    use crate::store::{Integrity, PartChecksum};
    use bytes::Bytes;
    use time::macros::datetime;

    const REQUIRED: Retention = Retention {
        mode: LockMode::Governance,
        retain_until: datetime!(2033-11-23 02:00:00 UTC),
    };

    async fn put(store: &MemoryStore, key: &str, lock: Option<&Retention>) -> ManifestObject {
        let body = Bytes::from(format!("contents of {key}"));
        let sum = PartChecksum::compute(Integrity::Md5, &body);
        let size = body.len() as u64;
        let put = store.put_object(key, body, sum, lock).await.unwrap();
        ManifestObject {
            key: key.into(),
            version_id: put.version_id,
            size_bytes: size,
            sha256: None,
        }
    }

    #[tokio::test]
    async fn every_object_is_checked_for_presence_size_and_retention() {
        let store = MemoryStore::default();
        let longer = Retention {
            retain_until: datetime!(2034-01-01 00:00:00 UTC),
            ..REQUIRED
        };
        let mut objects = vec![
            put(&store, "b/x/.backup", Some(&longer)).await,
            put(&store, "b/x/data/a.bin", Some(&REQUIRED)).await,
            put(&store, "b/x/data/short.bin", None).await,
            put(&store, "b/x/data/resized.bin", Some(&REQUIRED)).await,
        ];
        objects[3].size_bytes += 1;
        objects.push(ManifestObject {
            key: "b/x/data/gone.bin".into(),
            version_id: Some("v-gone".into()),
            size_bytes: 1,
            sha256: None,
        });
        let started = datetime!(2026-11-23 02:00:00 UTC);
        let manifest = FetchedManifest::unsigned(
            "b/x.manifest.json",
            Manifest {
                objects,
                ..Manifest::header(
                    Engine::Clickhouse,
                    "r",
                    Timestamp::new(started),
                    (started, started),
                    Some(&REQUIRED),
                )
            },
        );
        let config = Config::from_yaml(
            "release: r\ns3:\n  bucket: backups-1\nclickhouse:\n  named_collection: nc\n",
            std::path::Path::new("t"),
        )
        .unwrap();
        let mut verdict = Verdict::new(Engine::Clickhouse, "b/x/".into(), "x".into());
        check_objects(&store, &config, &manifest, &mut verdict).await;
        assert_eq!(
            verdict.problems,
            [
                "b/x/data/resized.bin is 32 bytes, the manifest says 33".to_owned(),
                "b/x/data/gone.bin version v-gone is missing".to_owned(),
                "b/x/data/short.bin retention is missing, the manifest requires GOVERNANCE \
                 until 2033-11-23 2:00:00.0 +00:00:00"
                    .to_owned(),
            ]
        );
        assert_eq!(verdict.retain_until, Some(REQUIRED.retain_until));
        assert_eq!(
            verdict.size_bytes,
            Some("contents of b/x/.backup".len() as u64)
        );
    }

    #[tokio::test]
    async fn a_hidden_manifest_fails_and_a_missing_one_is_incomplete() {
        let store = MemoryStore::default();
        let config = Config::from_yaml(
            "release: r\ns3:\n  bucket: backups-1\n  prefix: b\n",
            std::path::Path::new("t"),
        )
        .unwrap();
        let ts = Timestamp::parse("20261123T020000Z").unwrap();
        let snapshot = SnapshotRef {
            engine: Engine::Postgresql,
            release: "r".into(),
            timestamp: ts,
            keys: crate::layout::postgres_keys("b", "r", ts, crate::layout::Codec::Gzip),
        };
        let verdict = verify_one(&store, &config, &snapshot, false, None, false).await;
        assert_eq!(verdict.status, Status::Incomplete);

        put(&store, &snapshot.keys.manifest, None).await;
        store.hide(&snapshot.keys.manifest);
        let verdict = verify_one(&store, &config, &snapshot, false, None, false).await;
        assert_eq!(verdict.status, Status::Failed);
        assert_eq!(verdict.problems.len(), 1);
        assert!(
            verdict.problems[0].starts_with(&format!(
                "mem://{} is hidden by a delete marker",
                snapshot.keys.manifest
            )),
            "{}",
            verdict.problems[0]
        );
        assert!(render_line(&verdict).starts_with("FAIL "));
    }
}
