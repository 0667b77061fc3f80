//! An in-memory [`ObjectStore`] for unit tests: versioned objects, multipart uploads, retention,
//! optional checksum verification and injected failures. Integration tests use real servers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};

use super::checksum::{Expected, expected_multipart, expected_single};
use super::{
    BucketProtection, Integrity, ListPage, ObjectBody, ObjectHead, ObjectStore, ObjectSummary,
    ObjectVersion, PartChecksum, PutResult, Retention, StoreError, StoreResult, UploadedPart,
};

#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub version_id: String,
    pub data: Bytes,
    pub etag: String,
    pub retention: Option<Retention>,
    /// A delete marker (no data).
    pub delete_marker: bool,
    pub storage_class: Option<String>,
    /// An archived version with a temporary copy restored from the archive: readable.
    pub restored_copy: bool,
}

/// An open multipart upload: its lock and the parts received so far.
struct OpenUpload {
    lock: Option<Retention>,
    parts: BTreeMap<i32, Bytes>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Vec<StoredVersion>>,
    uploads: HashMap<String, OpenUpload>,
    next_id: u64,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    requests: AtomicUsize,
    verified: Vec<Integrity>,
    /// Fail the upload of this part number (1-based), once.
    pub fail_part: Mutex<Option<i32>>,
    /// Drop lock headers on multipart uploads, as some servers do.
    pub ignore_multipart_lock: bool,
    /// Ignore `If-None-Match`, as Ceph RGW does on versioned buckets.
    ignore_conditions: bool,
    /// Entries per listing page (1000 on S3).
    page_size: usize,
}

impl MemoryStore {
    /// GetObject, whole or `(offset, len)`.
    fn get_part(
        &self,
        key: &str,
        version_id: Option<&str>,
        range: Option<(u64, u64)>,
    ) -> StoreResult<ObjectBody> {
        self.count();
        let version = self.find(key, version_id)?;
        if version.storage_class.is_some() && !version.restored_copy {
            return Err(StoreError::Archived {
                op: "GetObject",
                target: self.target(key),
            });
        }
        let data = match range {
            None => version.data,
            Some((offset, len)) => {
                let end = (offset + len).min(version.data.len() as u64) as usize;
                version.data.slice((offset as usize).min(end)..end)
            }
        };
        // Several chunks, as a network stream would deliver them.
        let chunks: Vec<StoreResult<Bytes>> = data
            .chunks(4096)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Ok(ObjectBody {
            size: data.len() as u64,
            chunks: Box::pin(futures::stream::iter(chunks)),
        })
    }

    /// Listings in pages of `entries` (0: one page).
    pub fn paged(mut self, entries: usize) -> Self {
        self.page_size = entries;
        self
    }

    pub fn ignoring_conditions(mut self) -> Self {
        self.ignore_conditions = true;
        self
    }

    pub fn verifying(mut self, integrities: &[Integrity]) -> Self {
        self.verified = integrities.to_vec();
        self
    }

    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn objects(&self) -> BTreeMap<String, Vec<StoredVersion>> {
        self.state.lock().unwrap().objects.clone()
    }

    pub fn open_uploads(&self) -> usize {
        self.state.lock().unwrap().uploads.len()
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
    }

    fn check(&self, key: &str, body: &[u8], checksum: &PartChecksum) -> StoreResult<()> {
        let actual = PartChecksum::compute(checksum.integrity(), body);
        if self.verified.contains(&checksum.integrity()) && actual != *checksum {
            return Err(StoreError::Service {
                op: "UploadPart",
                target: self.target(key),
                code: "BadDigest".into(),
                message: "checksum mismatch".into(),
            });
        }
        Ok(())
    }

    fn store(&self, key: &str, data: Bytes, etag: String, retention: Option<Retention>) -> String {
        let mut state = self.state.lock().unwrap();
        state.next_id += 1;
        let version_id = format!("v{}", state.next_id);
        state
            .objects
            .entry(key.to_owned())
            .or_default()
            .push(StoredVersion {
                version_id: version_id.clone(),
                data,
                etag,
                retention,
                delete_marker: false,
                storage_class: None,
                restored_copy: false,
            });
        version_id
    }

    /// Puts a delete marker on `key`, as a DELETE without version id would.
    pub fn hide(&self, key: &str) {
        let mut state = self.state.lock().unwrap();
        state.next_id += 1;
        let version_id = format!("v{}", state.next_id);
        state
            .objects
            .entry(key.to_owned())
            .or_default()
            .push(StoredVersion {
                version_id,
                data: Bytes::new(),
                etag: String::new(),
                retention: None,
                delete_marker: true,
                storage_class: None,
                restored_copy: false,
            });
    }

    /// Moves every version of `key` to `class` (GLACIER...), as a lifecycle rule would.
    pub fn archive(&self, key: &str, class: &str) {
        let mut state = self.state.lock().unwrap();
        for v in state.objects.get_mut(key).into_iter().flatten() {
            v.storage_class = Some(class.to_owned());
        }
    }

    /// Makes the archived versions of `key` readable again, as `RestoreObject` does; listings
    /// still name the archive class.
    pub fn restore_from_archive(&self, key: &str) {
        let mut state = self.state.lock().unwrap();
        for v in state.objects.get_mut(key).into_iter().flatten() {
            v.restored_copy = true;
        }
    }
}

impl ObjectStore for MemoryStore {
    fn target(&self, key: &str) -> String {
        format!("mem://{key}")
    }

    async fn protection(&self) -> StoreResult<BucketProtection> {
        self.count();
        Ok(BucketProtection {
            object_lock_enabled: true,
            versioning_enabled: Some(true),
        })
    }

    async fn create_multipart(
        &self,
        _key: &str,
        _integrity: Integrity,
        lock: Option<&Retention>,
    ) -> StoreResult<String> {
        self.count();
        let lock = if self.ignore_multipart_lock {
            None
        } else {
            lock.copied()
        };
        let id = uuid::Uuid::new_v4().to_string();
        self.state.lock().unwrap().uploads.insert(
            id.clone(),
            OpenUpload {
                lock,
                parts: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
        checksum: PartChecksum,
    ) -> StoreResult<UploadedPart> {
        self.count();
        let mut fail = self.fail_part.lock().unwrap();
        if *fail == Some(number) {
            *fail = None;
            return Err(StoreError::Service {
                op: "UploadPart",
                target: self.target(key),
                code: "InternalError".into(),
                message: "injected failure".into(),
            });
        }
        drop(fail);
        self.check(key, &body, &checksum)?;
        let etag = match expected_single(&PartChecksum::compute(Integrity::Md5, &body)) {
            Expected::Etag(e) => e,
            Expected::Checksum(c) => c,
        };
        let size = body.len() as u64;
        let mut state = self.state.lock().unwrap();
        let upload = state
            .uploads
            .get_mut(upload_id)
            .ok_or(StoreError::NotFound {
                op: "UploadPart",
                target: format!("mem://{key}"),
            })?;
        upload.parts.insert(number, body);
        Ok(UploadedPart {
            number,
            etag,
            checksum,
            size,
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> StoreResult<PutResult> {
        self.count();
        let OpenUpload {
            lock,
            parts: stored,
        } = self
            .state
            .lock()
            .unwrap()
            .uploads
            .remove(upload_id)
            .ok_or(StoreError::NotFound {
                op: "CompleteMultipartUpload",
                target: self.target(key),
            })?;
        let mut data = BytesMut::new();
        for part in parts {
            data.extend_from_slice(&stored[&part.number]);
        }
        let md5s: Vec<PartChecksum> = parts
            .iter()
            .map(|p| PartChecksum::compute(Integrity::Md5, &stored[&p.number]))
            .collect();
        let etag = match expected_multipart(&md5s) {
            Some(Expected::Etag(e)) => Some(e),
            _ => None,
        };
        let checksums: Vec<PartChecksum> = parts.iter().map(|p| p.checksum).collect();
        let checksum = match expected_multipart(&checksums) {
            Some(Expected::Checksum(c)) if self.verified.contains(&checksums[0].integrity()) => {
                Some(c)
            }
            _ => None,
        };
        let version_id = self.store(key, data.freeze(), etag.clone().unwrap_or_default(), lock);
        Ok(PutResult {
            version_id: Some(version_id),
            etag,
            checksum,
        })
    }

    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> StoreResult<()> {
        self.count();
        self.state.lock().unwrap().uploads.remove(upload_id);
        Ok(())
    }

    async fn put_new(
        &self,
        key: &str,
        body: Bytes,
        checksum: PartChecksum,
        lock: Option<&Retention>,
    ) -> StoreResult<PutResult> {
        let exists = self
            .state
            .lock()
            .unwrap()
            .objects
            .get(key)
            .and_then(|vs| vs.last())
            .is_some_and(|v| !v.delete_marker);
        if exists && !self.ignore_conditions {
            self.count();
            return Err(StoreError::PreconditionFailed {
                op: "PutObject",
                target: self.target(key),
            });
        }
        self.put_object(key, body, checksum, lock).await
    }

    async fn put_object(
        &self,
        key: &str,
        body: Bytes,
        checksum: PartChecksum,
        lock: Option<&Retention>,
    ) -> StoreResult<PutResult> {
        self.count();
        self.check(key, &body, &checksum)?;
        let etag = match expected_single(&PartChecksum::compute(Integrity::Md5, &body)) {
            Expected::Etag(e) => Some(e),
            Expected::Checksum(_) => None,
        };
        let checksum = match expected_single(&checksum) {
            Expected::Checksum(c) => Some(c),
            Expected::Etag(_) => None,
        };
        let version_id = self.store(key, body, etag.clone().unwrap_or_default(), lock.copied());
        Ok(PutResult {
            version_id: Some(version_id),
            etag,
            checksum,
        })
    }

    async fn list_versions(&self, prefix: &str) -> StoreResult<Vec<ObjectVersion>> {
        self.count();
        let state = self.state.lock().unwrap();
        Ok(state
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .flat_map(|(k, versions)| {
                let last = versions.len() - 1;
                versions
                    .iter()
                    .enumerate()
                    .rev()
                    .map(move |(i, v)| ObjectVersion {
                        key: k.clone(),
                        version_id: Some(v.version_id.clone()),
                        size: v.data.len() as u64,
                        etag: (!v.delete_marker).then(|| v.etag.clone()),
                        is_latest: i == last,
                        last_modified: None,
                        delete_marker: v.delete_marker,
                        storage_class: v.storage_class.clone(),
                    })
            })
            .collect())
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
    ) -> StoreResult<ListPage> {
        self.count();
        let state = self.state.lock().unwrap();
        let mut page = ListPage::default();
        let current = state
            .objects
            .iter()
            .filter(|(k, vs)| k.starts_with(prefix) && vs.last().is_some_and(|v| !v.delete_marker))
            .filter(|(k, _)| token.is_none_or(|t| k.as_str() > t));
        let mut entries = 0;
        for (key, versions) in current {
            let folder = delimiter.and_then(|d| {
                let rest = &key[prefix.len()..];
                rest.find(d)
                    .map(|at| key[..prefix.len() + at + d.len()].to_owned())
            });
            // The next page starts after this entry: past every key of a folder.
            let resume = match folder {
                Some(folder) if page.folders.last() == Some(&folder) => continue,
                Some(folder) => {
                    let resume = format!("{folder}\u{10FFFF}");
                    page.folders.push(folder);
                    resume
                }
                None => {
                    page.objects.push(ObjectSummary {
                        key: key.clone(),
                        size: versions.last().map_or(0, |v| v.data.len() as u64),
                        last_modified: None,
                    });
                    key.clone()
                }
            };
            entries += 1;
            if self.page_size > 0 && entries == self.page_size {
                page.next = Some(resume);
                break;
            }
        }
        Ok(page)
    }

    async fn head(&self, key: &str, version_id: Option<&str>) -> StoreResult<ObjectHead> {
        self.count();
        self.find(key, version_id).map(|v| ObjectHead {
            size: v.data.len() as u64,
            etag: Some(v.etag.clone()),
        })
    }

    async fn get(&self, key: &str, version_id: Option<&str>) -> StoreResult<ObjectBody> {
        self.get_part(key, version_id, None)
    }

    async fn get_range(
        &self,
        key: &str,
        version_id: Option<&str>,
        offset: u64,
        len: u64,
    ) -> StoreResult<ObjectBody> {
        self.get_part(key, version_id, Some((offset, len)))
    }

    async fn retention(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> StoreResult<Option<Retention>> {
        self.count();
        self.find(key, version_id).map(|v| v.retention)
    }

    async fn set_retention(
        &self,
        key: &str,
        version_id: Option<&str>,
        retention: &Retention,
    ) -> StoreResult<()> {
        self.count();
        let mut state = self.state.lock().unwrap();
        let versions = state.objects.get_mut(key).ok_or(StoreError::NotFound {
            op: "PutObjectRetention",
            target: format!("mem://{key}"),
        })?;
        let version = versions
            .iter_mut()
            .find(|v| Some(v.version_id.as_str()) == version_id)
            .ok_or(StoreError::NotFound {
                op: "PutObjectRetention",
                target: format!("mem://{key}"),
            })?;
        version.retention = Some(*retention);
        Ok(())
    }
}

impl MemoryStore {
    fn find(&self, key: &str, version_id: Option<&str>) -> StoreResult<StoredVersion> {
        let state = self.state.lock().unwrap();
        let versions = state.objects.get(key);
        let found = match version_id {
            Some(id) => versions.and_then(|vs| vs.iter().find(|v| v.version_id == id)),
            None => versions.and_then(|vs| vs.last()),
        };
        match found {
            Some(v) if !v.delete_marker => Ok(v.clone()),
            _ => Err(StoreError::NotFound {
                op: "HeadObject",
                target: self.target(key),
            }),
        }
    }
}
