//! The versions of one key, read once and asked the questions every caller has: which one is
//! pinned, what sits above it, is the key hidden by a delete marker, are several versions the
//! same bytes (an idempotent retry) or different ones (a rewrite).
//!
//! Object Lock protects versions, not keys: anyone who may write can add a version or a delete
//! marker on top of a locked one. Only listing is used here, so a writer without read
//! permission can ask too.

use super::{ObjectStore, ObjectVersion, StoreResult};

/// One key's versions and delete markers, newest first.
#[derive(Debug, Clone, Default)]
pub struct KeyVersions {
    pub key: String,
    pub all: Vec<ObjectVersion>,
}

impl KeyVersions {
    /// Lists `key`'s versions (only that key, not others sharing its prefix).
    pub async fn of<S: ObjectStore>(store: &S, key: &str) -> StoreResult<KeyVersions> {
        let all = store
            .list_versions(key)
            .await?
            .into_iter()
            .filter(|v| v.key == key)
            .collect();
        Ok(KeyVersions {
            key: key.to_owned(),
            all,
        })
    }

    /// From a listing of a wider prefix.
    pub fn from_listing<'a>(
        key: &str,
        listed: impl IntoIterator<Item = &'a ObjectVersion>,
    ) -> Self {
        KeyVersions {
            key: key.to_owned(),
            all: listed
                .into_iter()
                .filter(|v| v.key == key)
                .cloned()
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The latest entry is a delete marker: the key reads as missing.
    pub fn hidden(&self) -> bool {
        self.all.first().is_some_and(|v| v.delete_marker)
    }

    /// Versions that hold data (no delete markers), newest first.
    pub fn data(&self) -> impl Iterator<Item = &ObjectVersion> {
        self.all.iter().filter(|v| !v.delete_marker)
    }

    pub fn delete_markers(&self) -> usize {
        self.all.iter().filter(|v| v.delete_marker).count()
    }

    /// The data version `version_id` (the latest data version when `None`).
    pub fn find(&self, version_id: Option<&str>) -> Option<&ObjectVersion> {
        match version_id {
            Some(id) => self.data().find(|v| v.version_id.as_deref() == Some(id)),
            None => self.data().next(),
        }
    }

    /// Everything newer than `version_id`: other versions and delete markers. Empty when
    /// `version_id` is not listed.
    pub fn above(&self, version_id: Option<&str>) -> &[ObjectVersion] {
        match self
            .all
            .iter()
            .position(|v| !v.delete_marker && v.version_id.as_deref() == version_id)
        {
            Some(at) => &self.all[..at],
            None => &[],
        }
    }

    /// The first version written.
    pub fn oldest(&self) -> Option<&ObjectVersion> {
        self.data().last()
    }

    /// Whether every data version has this size and (unquoted, case-insensitive) ETag, so
    /// they are the same bytes: what a retried write of one body leaves. Listings give no
    /// content hash, and an ETag is an MD5 only for single-part writes without SSE-KMS; a
    /// version without an ETag does not count as the same.
    pub fn all_same_as(&self, size: u64, etag: &str) -> bool {
        self.data().all(|v| {
            v.size == size
                && v.etag
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(etag))
        })
    }

    /// Versions (and delete markers) for messages: `id (N bytes)`, newest first.
    pub fn describe(&self) -> String {
        self.all
            .iter()
            .map(|v| {
                let id = v.version_id.as_deref().unwrap_or("(none)");
                if v.delete_marker {
                    format!("{id} (delete marker)")
                } else {
                    format!("{id} ({} bytes)", v.size)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: &str, size: u64, etag: &str) -> ObjectVersion {
        ObjectVersion {
            key: "k".into(),
            version_id: Some(id.into()),
            size,
            etag: Some(etag.into()),
            ..ObjectVersion::default()
        }
    }

    fn marker(id: &str) -> ObjectVersion {
        ObjectVersion {
            key: "k".into(),
            version_id: Some(id.into()),
            delete_marker: true,
            ..ObjectVersion::default()
        }
    }

    #[test]
    fn pinned_above_hidden_and_identical() {
        let v = KeyVersions {
            key: "k".into(),
            all: vec![marker("m"), version("b", 3, "AA"), version("a", 3, "aa")],
        };
        assert!(v.hidden());
        assert_eq!(v.delete_markers(), 1);
        assert_eq!(v.find(None).unwrap().version_id.as_deref(), Some("b"));
        assert_eq!(v.oldest().unwrap().version_id.as_deref(), Some("a"));
        assert_eq!(v.above(Some("a")).len(), 2);
        assert!(v.above(Some("zz")).is_empty());
        assert!(v.all_same_as(3, "aa"));
        assert!(!v.all_same_as(4, "aa"));
        let other = KeyVersions {
            key: "k".into(),
            all: vec![version("b", 3, "bb"), version("a", 3, "aa")],
        };
        assert!(!other.all_same_as(3, "aa"));
        assert_eq!(other.describe(), "b (3 bytes), a (3 bytes)");
    }
}
