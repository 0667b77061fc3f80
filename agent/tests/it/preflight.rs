//! `strongroom preflight` against each S3 server, run as users run it (the binary, a config
//! file): a bucket with Object Lock and a default retention passes every bucket check, and the
//! harness's owner credentials, which may delete, fail `no-delete`; a bucket without Object
//! Lock, and one without versioning, fail with the check named (on moto, whose
//! GetBucketVersioning answer is unreadable, as "cannot tell"). The passing `no-delete` (a role
//! that may not delete) is proven in `make tf-check` with the Terraform module's writer policy,
//! on Ceph RGW (e2e/terraform/rgw_policies.py) and on a moto with IAM enforcement
//! (e2e/terraform/moto_preflight.py): the harness's moto enforces no permissions, and
//! LocalStack's community edition none either.

use aws_sdk_s3::types::{
    BucketVersioningStatus, DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled,
    ObjectLockRetentionMode, ObjectLockRule, VersioningConfiguration,
};
use serde_json::Value;

use crate::harness::{self, TestId};
use crate::on_each_s3;

on_each_s3!(
    a_locked_bucket_passes_and_a_role_that_may_delete_fails,
    a_bucket_without_object_lock_fails_its_checks,
    a_bucket_without_versioning_fails_the_versioning_check,
);

/// Runs preflight with `--json`; returns the exit code and each check's (name, status, detail).
fn preflight(id: &TestId, bucket: &str) -> (i32, Vec<(String, String, String)>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let yaml = format!(
        "release: llama-mapper\ns3:\n  bucket: {bucket}\n  prefix: backups/{}\n  endpoint: {}\n",
        id.test.replace('_', "-"),
        id.s3.endpoint()
    );
    std::fs::write(&path, yaml).unwrap();
    let out = harness::strongroom(&path, &["preflight", "--json"]);
    let text = harness::text(&out);
    let checks: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("preflight prints JSON ({e}): {text}"));
    let checks = checks
        .iter()
        .map(|c| {
            let field = |f: &str| c[f].as_str().unwrap().to_owned();
            (field("name"), field("status"), field("detail"))
        })
        .collect();
    (out.status.code().unwrap_or(-1), checks, text)
}

fn status_of<'a>(checks: &'a [(String, String, String)], name: &str) -> (&'a str, &'a str) {
    checks
        .iter()
        .find(|c| c.0 == name)
        .map(|c| (c.1.as_str(), c.2.as_str()))
        .unwrap_or_else(|| panic!("no check {name} in {checks:?}"))
}

async fn a_locked_bucket_passes_and_a_role_that_may_delete_fails(id: TestId) {
    let (bucket, store) = harness::bucket(&id, true).await;
    store
        .client()
        .put_object_lock_configuration()
        .bucket(&bucket)
        .object_lock_configuration(
            ObjectLockConfiguration::builder()
                .object_lock_enabled(ObjectLockEnabled::Enabled)
                .rule(
                    ObjectLockRule::builder()
                        .default_retention(
                            DefaultRetention::builder()
                                .mode(ObjectLockRetentionMode::Governance)
                                .years(7)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let (code, checks, text) = preflight(&id, &bucket);
    for name in [
        "object-lock",
        "versioning",
        "default-retention",
        "clock",
        "write",
        "list",
        "retention",
    ] {
        assert_eq!(status_of(&checks, name).0, "ok", "{name}: {text}");
    }
    // RGW verifies Content-MD5; moto verifies no integrity header (a warning, not a failure).
    let integrity = status_of(&checks, "integrity").0;
    assert_eq!(
        integrity,
        if id.s3.name() == "rgw" { "ok" } else { "warn" },
        "{text}"
    );
    // The harness's credentials own the bucket: they may delete, and preflight says so.
    let (status, detail) = status_of(&checks, "no-delete");
    assert_eq!(status, "fail", "{text}");
    assert!(detail.contains("this role may delete"), "{detail}");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("failed checks no-delete"), "{text}");
    // What the run left: one probe under .strongroom/preflight/, locked, under a delete marker.
    let folder = format!(
        "backups/{}/.strongroom/preflight/",
        id.test.replace('_', "-")
    );
    let versions = store
        .client()
        .list_object_versions()
        .bucket(&bucket)
        .prefix(&folder)
        .send();
    let versions = versions.await.unwrap();
    assert_eq!(versions.versions().len(), 1, "{versions:?}");
    assert_eq!(versions.delete_markers().len(), 1, "{versions:?}");
}

async fn a_bucket_without_object_lock_fails_its_checks(id: TestId) {
    let (bucket, store) = harness::bucket(&id, false).await;
    store
        .client()
        .put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let (code, checks, text) = preflight(&id, &bucket);
    let (status, detail) = status_of(&checks, "object-lock");
    assert_eq!(status, "fail", "{text}");
    assert!(detail.contains("has no Object Lock"), "{detail}");
    assert_eq!(status_of(&checks, "default-retention").0, "fail", "{text}");
    // moto's GetBucketVersioning answer is unreadable, and without Object Lock the locked
    // probe write cannot tell either: preflight says it cannot confirm versioning.
    let versioning = if id.s3.name() == "moto" { "fail" } else { "ok" };
    assert_eq!(status_of(&checks, "versioning").0, versioning, "{text}");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("object-lock"), "{text}");
    // Every check has its line, even those the failed write kept from running.
    let (status, detail) = status_of(&checks, "no-delete");
    assert_eq!(status, "fail", "{text}");
    assert!(detail.contains("not checked"), "{detail}");
}

async fn a_bucket_without_versioning_fails_the_versioning_check(id: TestId) {
    let (bucket, _store) = harness::bucket(&id, false).await;
    let (code, checks, text) = preflight(&id, &bucket);
    let (status, detail) = status_of(&checks, "versioning");
    assert_eq!(status, "fail", "{text}");
    let expected = if id.s3.name() == "moto" {
        "cannot tell whether"
    } else {
        "does not keep versions"
    };
    assert!(detail.contains(expected), "{detail}");
    assert_eq!(status_of(&checks, "object-lock").0, "fail", "{text}");
    assert_eq!(code, 1, "{text}");
}
