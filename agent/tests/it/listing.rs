//! Listing a release stays bounded whatever its size: a release holding 2,600 keys (ClickHouse
//! backups, each a folder of 25 files, written cheaply as small objects: the keys of more than
//! 1,000 PostgreSQL backups) is listed right by `list` and `--latest` in as many
//! ListObjectsV2 requests as its backups fill pages, not its files.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use strongroom::layout::{Engine, Timestamp};
use strongroom::store::s3::S3Store;
use strongroom::store::{Integrity, ObjectStore, PartChecksum};

use crate::fault_proxy::FaultProxy;
use crate::harness::{self, TestId};
use crate::on_each_s3;

on_each_s3!(a_release_of_2600_keys_lists_in_one_page_per_thousand_backups);

const BACKUPS: usize = 100;
/// Files in each ClickHouse backup folder.
const FILES: usize = 25;
/// The newest backups have no manifest: incomplete.
const INCOMPLETE: usize = 5;

async fn put_all(store: &Arc<S3Store>, keys: Vec<String>) {
    futures::stream::iter(keys)
        .map(|key| {
            let store = Arc::clone(store);
            async move {
                let body = Bytes::from_static(b"x");
                let sum = PartChecksum::compute(Integrity::Md5, &body);
                store.put_object(&key, body, sum, None).await.unwrap();
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
}

async fn a_release_of_2600_keys_lists_in_one_page_per_thousand_backups(id: TestId) {
    let (bucket, store) = harness::bucket(&id, false).await;
    let prefix = format!("backups/{}", id.test.replace('_', "-"));
    let start = time::macros::datetime!(2026-01-01 00:00:00 UTC);
    let stamps: Vec<Timestamp> = (0..BACKUPS)
        .map(|i| Timestamp::new(start + time::Duration::hours(i as i64)))
        .collect();
    let mut keys = Vec::new();
    for (i, ts) in stamps.iter().enumerate() {
        let k = strongroom::layout::clickhouse_keys(&prefix, "llama-mapper", *ts);
        keys.push(k.checksum.clone());
        for f in 1..FILES {
            keys.push(format!("{}data/db/t/part_{f}.bin", k.dump));
        }
        if i < BACKUPS - INCOMPLETE {
            keys.push(k.manifest.clone());
        }
    }
    assert!(keys.len() >= 2500, "{}", keys.len());
    put_all(&store, keys).await;

    // Through the proxy, which counts the listing requests.
    let proxy = FaultProxy::start(&id.s3.endpoint()).await;
    let yaml = format!(
        "release: llama-mapper\ns3:\n  bucket: {bucket}\n  prefix: {prefix}\n  endpoint: {}\n  \
         object_lock:\n    required: false\n",
        proxy.url
    );
    let config = harness::config(&yaml);
    let through_proxy = S3Store::connect(&config.s3).await;
    let latest = strongroom::catalog::latest_complete(
        &through_proxy,
        &prefix,
        Engine::Clickhouse,
        "llama-mapper",
    )
    .await
    .unwrap();
    assert_eq!(latest.timestamp, stamps[BACKUPS - INCOMPLETE - 1]);
    let lists = proxy.listings();
    // 100 folders and 95 manifests: one page (a listing of every file, as before, took three).
    assert_eq!(lists, 1, "listing requests");

    let listed =
        strongroom::catalog::backups(&through_proxy, &prefix, Engine::Clickhouse, "llama-mapper")
            .await
            .unwrap();
    assert_eq!(listed.len(), BACKUPS);
    assert_eq!(
        listed.iter().filter(|b| b.complete).count(),
        BACKUPS - INCOMPLETE
    );
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].snapshot.timestamp < w[1].snapshot.timestamp)
    );
    assert_eq!(proxy.listings() - lists, lists);
}
