//! One conformance suite for the agent's store operations, run against every S3 server the
//! harness starts. Where servers legitimately differ (which checksums they verify), the test
//! pins what each one does, so a changed server shows up here first.

use bytes::Bytes;
use strongroom::config::{IntegrityMode, LockMode};
use strongroom::store::checksum::{Expected, expected_multipart};
use strongroom::store::probe;
use strongroom::store::{Integrity, ObjectStore, PartChecksum, Retention};
use time::OffsetDateTime;

use crate::harness::{self, S3Kind, TestId};
use crate::on_each_s3;

on_each_s3!(
    bucket_protection_is_detected,
    integrity_probe_finds_what_the_server_verifies,
    multipart_upload_etag_and_versions,
    retention_is_set_and_read_back,
);

async fn bucket_protection_is_detected(id: TestId) {
    let (_, locked) = harness::bucket(&id, true).await;
    let p = locked.protection().await.unwrap();
    assert!(p.object_lock_enabled);
    assert_ne!(p.versioning_enabled, Some(false));
    let (_, open) = harness::bucket(&id, false).await;
    assert!(!open.protection().await.unwrap().object_lock_enabled);
}

async fn integrity_probe_finds_what_the_server_verifies(id: TestId) {
    let (_, store) = harness::bucket(&id, true).await;
    let choice = probe::resolve(&*store, IntegrityMode::Auto, "p")
        .await
        .unwrap();
    // Ceph RGW 16 verifies Content-MD5 and ignores flexible checksums; moto verifies neither.
    assert_eq!(choice.integrity, Integrity::Md5, "{}", choice.reason);
    let expected = match id.s3 {
        S3Kind::Rgw => "verifies Content-MD5",
        S3Kind::Moto => "verifies neither",
    };
    assert!(
        choice.reason.contains(expected),
        "{}: {}",
        id.s3.name(),
        choice.reason
    );
    // The probe leaves nothing behind.
    assert!(store.list_versions("p/").await.unwrap().is_empty());
}

async fn multipart_upload_etag_and_versions(id: TestId) {
    let (_, store) = harness::bucket(&id, true).await;
    let key = "p/object.bin";
    let mut checksums = Vec::new();
    let upload = store
        .create_multipart(key, Integrity::Md5, None)
        .await
        .unwrap();
    let mut parts = Vec::new();
    for (n, size) in [(1, 5 * 1024 * 1024), (2, 1234)] {
        let body = Bytes::from(vec![n as u8; size]);
        let sum = PartChecksum::compute(Integrity::Md5, &body);
        checksums.push(sum);
        parts.push(store.upload_part(key, &upload, n, body, sum).await.unwrap());
    }
    let first = store
        .complete_multipart(key, &upload, &parts)
        .await
        .unwrap();
    let Some(Expected::Etag(etag)) = expected_multipart(&checksums) else {
        panic!("md5 parts give an ETag")
    };
    let versions = store.list_versions(key).await.unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].etag.as_deref(), Some(etag.as_str()));
    assert_eq!(versions[0].size, 5 * 1024 * 1024 + 1234);
    assert_eq!(versions[0].version_id, first.version_id);
    // A second write under the key is a new version; the first stays readable by its id.
    let body = Bytes::from_static(b"second");
    let sum = PartChecksum::compute(Integrity::Md5, &body);
    let second = store.put_object(key, body, sum, None).await.unwrap();
    assert_ne!(second.version_id, first.version_id);
    assert_eq!(store.list_versions(key).await.unwrap().len(), 2);
    let head = store.head(key, first.version_id.as_deref()).await.unwrap();
    assert_eq!(head.size, 5 * 1024 * 1024 + 1234);
    let listed = store.list("p/").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, 6);
}

async fn retention_is_set_and_read_back(id: TestId) {
    let (_, store) = harness::bucket(&id, true).await;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let lock = Retention {
        mode: LockMode::Governance,
        retain_until: now + time::Duration::days(1),
    };
    let body = Bytes::from_static(b"locked");
    let sum = PartChecksum::compute(Integrity::Md5, &body);
    let put = store
        .put_object("p/a", body, sum, Some(&lock))
        .await
        .unwrap();
    let v = put.version_id.as_deref();
    assert_eq!(store.retention("p/a", v).await.unwrap(), Some(lock));
    let longer = Retention {
        retain_until: now + time::Duration::days(2),
        ..lock
    };
    store.set_retention("p/a", v, &longer).await.unwrap();
    assert_eq!(store.retention("p/a", v).await.unwrap(), Some(longer));
    // An object written without lock headers into a bucket without default retention.
    let body = Bytes::from_static(b"plain");
    let sum = PartChecksum::compute(Integrity::Md5, &body);
    let put = store.put_object("p/b", body, sum, None).await.unwrap();
    assert_eq!(
        store
            .retention("p/b", put.version_id.as_deref())
            .await
            .unwrap(),
        None
    );
}
