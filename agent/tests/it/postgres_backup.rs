//! PostgreSQL backups end to end against real PostgreSQL and each real S3 server.

use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flate2::read::MultiGzDecoder;
use sha2::{Digest as _, Sha256};
use strongroom::config::LockMode;
use strongroom::error::Error;
use strongroom::layout::Engine;
use strongroom::manifest::Manifest;
use strongroom::pipeline::Progress;
use strongroom::store::ObjectStore;
use time::OffsetDateTime;

use crate::harness::{self, TestId};
use crate::on_each_s3;

on_each_s3!(
    backup_is_complete_locked_and_restorable,
    row_counts_come_from_the_dump_which_reads_each_table_once,
    a_backup_from_a_standby_holds_no_unlogged_rows_and_says_so,
    pg_dump_failing_mid_stream_leaves_nothing_complete,
    bucket_without_object_lock_is_refused,
);

fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    MultiGzDecoder::new(bytes)
        .read_to_string(&mut out)
        .expect("the object is a complete gzip stream");
    out
}

async fn backup_is_complete_locked_and_restorable(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    let mut expected_tables = harness::load_sample(&db).await;
    expected_tables.sort();
    let (bucket, store) = harness::bucket(&id, true).await;
    let config = harness::config(&harness::config_yaml(&id, &bucket, "", ""));
    let before = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();

    let report = harness::backup(&config, &store, None, &Progress::default())
        .await
        .unwrap_or_else(|e| panic!("backup on {}: {e}", id.s3.name()));

    // The key is the runbook's layout.
    let folder = format!(
        "backups/{}/postgresql/llama-mapper/",
        id.test.replace('_', "-")
    );
    assert!(report.key.starts_with(&folder), "{}", report.key);
    let ts = &report.key[folder.len()..report.key.len() - ".sql.gz".len()];
    assert_eq!(ts, report.timestamp);
    assert_eq!(report.manifest_key, format!("{folder}{ts}.manifest.json"));

    // The manifest pins the dump by version, with sizes, hash and row counts.
    let client = store.client();
    let manifest_bytes = harness::download(client, &bucket, &report.manifest_key, None).await;
    let manifest = Manifest::from_bytes(&report.manifest_key, &manifest_bytes).unwrap();
    assert_eq!(manifest.format_version, 3);
    assert_eq!(manifest.engine, Engine::Postgresql);
    assert_eq!(manifest.release, "llama-mapper");
    assert_eq!(manifest.timestamp, report.timestamp);
    assert!(manifest.started_at <= manifest.finished_at);
    let dump_entry = &manifest.objects[0];
    assert_eq!(dump_entry.key, report.key);
    assert_eq!(dump_entry.version_id, report.version_id);
    let dump = harness::download(
        client,
        &bucket,
        &report.key,
        dump_entry.version_id.as_deref(),
    )
    .await;
    assert_eq!(dump_entry.size_bytes, dump.len() as u64);
    assert_eq!(
        dump_entry.sha256.as_deref(),
        Some(hex::encode(Sha256::digest(&dump)).as_str())
    );
    let pg = manifest.postgresql.as_ref().unwrap();
    assert_eq!(pg.database, id.database());
    assert!(
        pg.server_version.starts_with("15."),
        "{}",
        pg.server_version
    );
    assert!(
        pg.pg_dump_version.starts_with("pg_dump (PostgreSQL) 1"),
        "{}",
        pg.pg_dump_version
    );
    assert_eq!(pg.compression.level, 1);
    assert_eq!(pg.compression.format, "gzip");
    // The section index tiles the object: each range is whole gzip members with its hash.
    let sections = pg.sections.as_ref().expect("a section index");
    let mut offset = 0usize;
    for s in sections {
        assert_eq!(s.offset as usize, offset);
        let bytes = &dump[offset..offset + s.size_bytes as usize];
        assert_eq!(s.sha256, hex::encode(Sha256::digest(bytes)));
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(bytes), &mut text)
            .unwrap();
        assert_eq!(text.len() as u64, s.uncompressed_size_bytes);
        offset += s.size_bytes as usize;
    }
    assert_eq!(offset, dump.len());
    let kinds: Vec<_> = sections.iter().map(|s| s.kind).collect();
    use strongroom::manifest::SectionKind;
    assert_eq!(kinds[..2], [SectionKind::Preamble, SectionKind::PreData]);
    assert!(
        kinds.contains(&SectionKind::Data) && kinds.contains(&SectionKind::Index),
        "{kinds:?}"
    );
    let mut tables: Vec<(String, String, i64)> = pg
        .tables
        .iter()
        .map(|t| (t.schema.clone(), t.table.clone(), t.rows))
        .collect();
    tables.sort();
    assert_eq!(tables, expected_tables);
    let retention = manifest.retention.as_ref().expect("locked bucket");
    assert_eq!(retention.mode, LockMode::Governance);
    let seven_years = before.replace_year(before.year() + 7).unwrap();
    assert!(
        retention.retain_until >= seven_years,
        "{:?}",
        retention.retain_until
    );

    // The object is what pg_dump produces for the same database, and loads back to it.
    let sql = gunzip(&dump);
    assert_eq!(pg.uncompressed_size_bytes, sql.len() as u64);
    let reference = harness::reference_dump(&id.database());
    assert_eq!(harness::normalise_dump(&sql), reference);
    let copy = format!("{}_copy", id.database());
    harness::fresh_database(&copy).await;
    harness::psql_load(&copy, sql.as_bytes());
    assert_eq!(harness::reference_dump(&copy), reference);

    // The sha256sum-format sidecar.
    let checksum_key = format!("{folder}{ts}.sql.gz.sha256");
    let line = harness::download(client, &bucket, &checksum_key, None).await;
    assert_eq!(
        String::from_utf8(line).unwrap(),
        format!("{}  {ts}.sql.gz\n", dump_entry.sha256.as_deref().unwrap())
    );
    assert_eq!(manifest.objects[1].key, checksum_key);

    // Every object carries retention >= policy, as the server reports it.
    for key in [&report.key, &checksum_key, &report.manifest_key] {
        let versions = store.list_versions(key).await.unwrap();
        let version = versions.iter().find(|v| &v.key == key).expect("listed");
        let r = store
            .retention(key, version.version_id.as_deref())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key} has no retention on {}", id.s3.name()));
        assert_eq!(r.mode, LockMode::Governance, "{key}");
        assert!(r.retain_until >= seven_years, "{key}: {:?}", r.retain_until);
    }

    // Deleting the locked version without bypass is refused by the server.
    let denied = client
        .delete_object()
        .bucket(&bucket)
        .key(&report.key)
        .set_version_id(report.version_id.clone())
        .send()
        .await;
    let err = denied.expect_err("a locked version cannot be deleted");
    assert_eq!(
        aws_sdk_s3::error::ProvideErrorMetadata::code(&err),
        Some("AccessDenied"),
        "{}",
        aws_sdk_s3::error::DisplayErrorContext(&err)
    );
    let still = harness::download(client, &bucket, &report.key, report.version_id.as_deref()).await;
    assert_eq!(still, dump);
}

/// Sequential scans of each user table of `database` so far, by `schema.table`, once every
/// other session on it has ended (a backend reports its scans when it ends).
async fn seq_scans(watcher: &tokio_postgres::Client, database: &str) -> Vec<(String, i64)> {
    let start = std::time::Instant::now();
    loop {
        let others: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&database],
            )
            .await
            .unwrap()
            .get(0);
        if others == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{others} sessions stay on {database}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What an ending backend reported is there once it has left pg_stat_activity; wait for
    // the figures to hold still as well.
    let read = || async {
        let rows = watcher
            .query(
                "SELECT schemaname || '.' || relname, seq_scan FROM pg_stat_user_tables \
                 ORDER BY 1",
                &[],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect::<Vec<(String, i64)>>()
    };
    let mut figures = read().await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let again = read().await;
        if again == figures {
            return figures;
        }
        figures = again;
    }
}

async fn row_counts_come_from_the_dump_which_reads_each_table_once(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    let mut expected = harness::load_sample(&db).await;
    // A count(*) of a table counts the rows of the tables that inherit from it.
    db.batch_execute(
        "CREATE TABLE public.parent (id int, v text);
         CREATE TABLE public.child (extra int) INHERITS (public.parent);
         CREATE TABLE public.grandchild () INHERITS (public.child);
         INSERT INTO public.parent SELECT i, 'p' FROM generate_series(1, 10) i;
         INSERT INTO public.child SELECT i, 'c', i FROM generate_series(1, 20) i;
         INSERT INTO public.grandchild SELECT i, 'g', i FROM generate_series(1, 30) i;",
    )
    .await
    .unwrap();
    for (table, rows) in [("child", 50), ("grandchild", 30), ("parent", 60)] {
        expected.push(("public".into(), table.into(), rows));
    }
    expected.sort();
    let (bucket, store) = harness::bucket(&id, true).await;
    let config = harness::config(&harness::config_yaml(&id, &bucket, "", ""));
    // The loading session's own scans (its index builds) count from before the backup.
    drop(db);
    let watcher = harness::admin(&id.database()).await;
    let before = seq_scans(&watcher, &id.database()).await;

    let report = harness::backup(&config, &store, None, &Progress::default())
        .await
        .unwrap_or_else(|e| panic!("backup on {}: {e}", id.s3.name()));

    let bytes = harness::download(store.client(), &bucket, &report.manifest_key, None).await;
    let manifest = Manifest::from_bytes(&report.manifest_key, &bytes).unwrap();
    let mut tables: Vec<(String, String, i64)> = (manifest.postgresql.unwrap().tables.iter())
        .map(|t| (t.schema.clone(), t.table.clone(), t.rows))
        .collect();
    tables.sort();
    assert_eq!(tables, expected);
    // pg_dump's COPY read each table once, and nothing else did.
    let after = seq_scans(&watcher, &id.database()).await;
    let scanned: Vec<(String, i64)> = (after.iter().zip(&before))
        .map(|((table, n), (was, m))| {
            assert_eq!(table, was);
            (table.clone(), n - m)
        })
        .collect();
    let once: Vec<(String, i64)> = before.iter().map(|(t, _)| (t.clone(), 1)).collect();
    assert_eq!(scanned, once);
}

/// pg_dump on a standby dumps no rows of unlogged tables (the standby cannot read them): the
/// backup succeeds, and its manifest says it holds none of them.
async fn a_backup_from_a_standby_holds_no_unlogged_rows_and_says_so(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    db.batch_execute(
        "CREATE TABLE public.kept (x int); INSERT INTO public.kept SELECT generate_series(1, 7);
         CREATE UNLOGGED TABLE public.cache (x int); INSERT INTO public.cache VALUES (1), (2);",
    )
    .await
    .unwrap();
    let standby = harness::standby();
    standby.wait_for_table(&id.database(), "kept").await;
    let (bucket, store) = harness::bucket(&id, true).await;
    let primary = harness::pg();
    let yaml = harness::config_yaml(&id, &bucket, "", "  backup_from: any\n")
        .replace(&primary.socket_dir, &standby.socket_dir)
        .replace(
            &format!("port: {}", primary.port),
            &format!("port: {}", standby.port),
        );
    let config = harness::config(&yaml);

    let report = harness::backup(&config, &store, None, &Progress::default())
        .await
        .unwrap_or_else(|e| panic!("backup from the standby on {}: {e}", id.s3.name()));

    let bytes = harness::download(store.client(), &bucket, &report.manifest_key, None).await;
    let manifest = Manifest::from_bytes(&report.manifest_key, &bytes).unwrap();
    let tables: Vec<(String, i64)> = (manifest.postgresql.unwrap().tables.iter())
        .map(|t| (t.table.clone(), t.rows))
        .collect();
    assert_eq!(tables, [("cache".to_owned(), 0), ("kept".to_owned(), 7)]);
}

async fn pg_dump_failing_mid_stream_leaves_nothing_complete(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    // ~100 MB of poorly compressible text, so several 5 MiB parts are uploaded before the end.
    db.batch_execute(
        "CREATE TABLE aa_small AS SELECT i, md5(i::text) AS v FROM generate_series(1, 1000) i;
         CREATE TABLE zz_big AS
           SELECT i, md5(i::text) || md5((i + 1)::text) || md5((i * 7)::text) AS v
           FROM generate_series(1, 1000000) i;",
    )
    .await
    .unwrap();
    let (bucket, store) = harness::bucket(&id, true).await;
    let config = harness::config(&harness::config_yaml(
        &id,
        &bucket,
        "  upload_concurrency: 1\n",
        "",
    ));
    let progress = Arc::new(Progress::default());

    let run = {
        let (config, store, progress) = (config.clone(), Arc::clone(&store), Arc::clone(&progress));
        tokio::spawn(async move { harness::backup(&config, &store, None, &progress).await })
    };
    // Kill pg_dump's server connection while it streams the big table and after at least one
    // part was uploaded: the dump is cut off mid-stream by a real server-side failure.
    let admin = harness::admin("postgres").await;
    let mut killed = false;
    for _ in 0..3000 {
        let uploading = progress.bytes_uploaded.load(Ordering::Relaxed) > 0;
        if uploading {
            let rows = admin
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = 'strongroom-pg_dump' AND datname = $1 \
                       AND query LIKE 'COPY public.zz_big%' AND state = 'active'",
                    &[&id.database()],
                )
                .await
                .unwrap();
            if !rows.is_empty() {
                killed = true;
                break;
            }
        }
        if run.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        killed,
        "pg_dump finished before it could be interrupted mid-stream"
    );
    let err = run.await.unwrap().expect_err("the backup must fail");
    let message = err.to_string();
    assert!(matches!(err, Error::Engine(_)), "{message}");
    assert!(
        message.contains("pg_dump") && message.contains("exit status"),
        "{message}"
    );
    // libpq reports the termination as the server's FATAL message, or, when the socket
    // closed before that message was read, as a closed connection.
    assert!(
        message.contains("terminat") || message.contains("server closed the connection"),
        "stderr tail is in the message: {message}"
    );

    // No manifest, no object, no upload left open.
    let folder = format!("backups/{}/", id.test.replace('_', "-"));
    let versions = store.list_versions(&folder).await.unwrap();
    assert!(versions.is_empty(), "objects left behind: {versions:?}");
    let uploads = store
        .client()
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let open: Vec<_> = uploads
        .uploads()
        .iter()
        .filter(|u| u.key().is_some_and(|k| k.starts_with(&folder)))
        .collect();
    assert!(open.is_empty(), "open uploads: {open:?}");
    assert!(progress.bytes_uploaded.load(Ordering::Relaxed) >= 5 * 1024 * 1024);
}

async fn bucket_without_object_lock_is_refused(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    harness::load_sample(&db).await;
    let (bucket, store) = harness::bucket(&id, false).await;
    let config = harness::config(&harness::config_yaml(&id, &bucket, "", ""));
    let err = harness::backup(&config, &store, None, &Progress::default())
        .await
        .expect_err("an unlocked bucket is refused");
    let message = err.to_string();
    assert!(matches!(err, Error::BucketNotProtected { .. }), "{message}");
    assert!(
        message.contains(&bucket) && message.contains("Object Lock"),
        "{message}"
    );
    assert!(
        message.contains("s3.object_lock.required: false"),
        "{message}"
    );
    assert!(store.list_versions("").await.unwrap().is_empty());

    // Development opt-out: the backup runs, and its manifest says it is not locked.
    let lax = harness::config_yaml(&id, &bucket, "  object_lock:\n    required: false\n", "");
    let report = harness::backup(&harness::config(&lax), &store, None, &Progress::default())
        .await
        .unwrap();
    assert_eq!(report.retain_until, None);
    let bytes = harness::download(store.client(), &bucket, &report.manifest_key, None).await;
    let manifest = Manifest::from_bytes(&report.manifest_key, &bytes).unwrap();
    assert!(manifest.retention.is_none());
}
