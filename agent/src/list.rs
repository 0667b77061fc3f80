//! `strongroom list`: the backups of this release in the bucket, complete or not.
//!
//! A backup is complete when its manifest exists (the manifest is written last, after every
//! object was read back and locked). Retention is read per backup with GetObjectRetention, a
//! metadata call that both the writer and the reader roles may make. Reads no backup data.

use futures::StreamExt as _;
use serde::Serialize;
use time::OffsetDateTime;

use crate::catalog;
use crate::config::{Config, LockMode};
use crate::error::Result;
use crate::layout::Engine;
use crate::store::ObjectStore;

/// One backup as found in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupEntry {
    pub engine: Engine,
    pub timestamp: String,
    pub key: String,
    /// The dump's size; `None` for ClickHouse backups (a folder of files).
    pub size_bytes: Option<u64>,
    /// True when the manifest exists.
    pub complete: bool,
    /// What a delete marker hides, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden: Option<String>,
    pub lock_mode: Option<LockMode>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub retain_until: Option<OffsetDateTime>,
}

/// All backups of `engine` for the configured release, oldest first.
pub async fn list_backups<S: ObjectStore>(
    store: &S,
    config: &Config,
    engine: Engine,
) -> Result<Vec<BackupEntry>> {
    let listed = catalog::backups(store, &config.s3.prefix, engine, &config.release).await?;
    let entries = futures::stream::iter(listed)
        .map(|b| async move {
            // A ClickHouse backup's retention is read on its `.backup` metadata.
            let locked_key = match engine {
                Engine::Postgresql => &b.snapshot.keys.dump,
                Engine::Clickhouse => &b.snapshot.keys.checksum,
            };
            let retention = match store.retention(locked_key, None).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(key = %locked_key, error = %e, "retention unknown");
                    None
                }
            };
            BackupEntry {
                engine,
                timestamp: b.snapshot.timestamp.to_string(),
                key: b.snapshot.keys.dump.clone(),
                size_bytes: b.size_bytes,
                complete: b.complete,
                hidden: b.hidden.clone(),
                lock_mode: retention.map(|r| r.mode),
                retain_until: retention.map(|r| r.retain_until),
            }
        })
        .buffered(8)
        .collect()
        .await;
    Ok(entries)
}

/// Bytes as B/KiB/MiB/GiB with one decimal.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The table `strongroom list` prints.
pub fn render_table(entries: &[BackupEntry]) -> String {
    let mut out = format!(
        "{:<18} {:<11} {:>10} {:<22} {:<10} {}\n",
        "TIMESTAMP", "ENGINE", "SIZE", "RETAIN UNTIL", "STATUS", "KEY"
    );
    for e in entries {
        let until = match (e.lock_mode, e.retain_until) {
            (Some(mode), Some(t)) => format!(
                "{} {}",
                t.date(),
                if mode == LockMode::Compliance {
                    "COMPL"
                } else {
                    "GOV"
                }
            ),
            _ => "not locked/unknown".into(),
        };
        out.push_str(&format!(
            "{:<18} {:<11} {:>10} {:<22} {:<10} {}\n",
            e.timestamp,
            e.engine.as_str(),
            e.size_bytes.map_or("-".into(), human_size),
            until,
            match (&e.hidden, e.complete) {
                (Some(_), _) => "HIDDEN",
                (None, true) => "complete",
                (None, false) => "INCOMPLETE",
            },
            e.key
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{Integrity, PartChecksum, Retention};
    use bytes::Bytes;
    use time::macros::datetime;

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[tokio::test]
    async fn a_dump_without_manifest_is_incomplete() {
        let config = crate::config::Config::from_yaml(
            "release: r\ns3:\n  bucket: bkt\n  prefix: p\n",
            std::path::Path::new("t"),
        )
        .unwrap();
        let store = MemoryStore::default();
        let lock = Retention {
            mode: LockMode::Governance,
            retain_until: datetime!(2033-01-01 00:00:00 UTC),
        };
        for (key, body) in [
            ("p/postgresql/r/20261122T020000Z.sql.gz", &b"old"[..]),
            ("p/postgresql/r/20261122T020000Z.manifest.json", b"{}"),
            ("p/postgresql/r/20261123T020000Z.sql.gz", b"newer"),
            ("p/postgresql/other/20261123T020000Z.sql.gz", b"x"),
            ("p/postgresql/r/20261124T020000Z.sql.zst", b"zstd"),
            ("p/postgresql/r/20261124T020000Z.manifest.json", b"{}"),
        ] {
            let sum = PartChecksum::compute(Integrity::Md5, body);
            store
                .put_object(key, Bytes::copy_from_slice(body), sum, Some(&lock))
                .await
                .unwrap();
        }
        let entries = list_backups(&store, &config, Engine::Postgresql)
            .await
            .unwrap();
        assert_eq!(entries.len(), 3);
        assert!(entries[0].complete && !entries[1].complete && entries[2].complete);
        assert_eq!(entries[1].size_bytes, Some(5));
        assert_eq!(entries[2].key, "p/postgresql/r/20261124T020000Z.sql.zst");
        assert_eq!(entries[2].size_bytes, Some(4));
        assert_eq!(entries[0].retain_until, Some(lock.retain_until));
        let table = render_table(&entries);
        assert!(
            table.contains("INCOMPLETE") && table.contains("2033-01-01 GOV"),
            "{table}"
        );
    }
}
