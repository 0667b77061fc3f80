//! Parallel restores from the dump's section index, against real PostgreSQL and each real S3
//! server: an exact round trip of a database with partitions, large objects, a table cut into
//! chunks and rows that look like the end of COPY data; a damaged section refused with nothing
//! visible; a manifest from before the index restored in one session; the opt-in zstd dump
//! read by `zstd -dc`, `verify --deep` and a parallel restore; a COPY statement over two lines
//! (no index: one session) and a signed index that does not fit its dump (one session, with a
//! warning); staging databases that killed restores left behind dropped by the next restore,
//! unless a restore holds them or someone is connected; a target with no tables but other
//! objects kept aside, its comment carried to the restored database; a new target created
//! while the restore ran replaced the same way; the target's grants, settings and ICU locale
//! kept, and a restore role that may not copy them loading in one session. (SIGKILL of the
//! agent during the parallel phases: `restore_trust`.)

use std::path::Path;
use std::sync::Arc;

use strongroom::config::Config;
use strongroom::engine::postgres;
use strongroom::error::Error;
use strongroom::layout::Engine;
use strongroom::manifest::{Manifest, SectionKind};
use strongroom::pipeline::Progress;
use strongroom::restore::RestoreReport;
use strongroom::signing::ManifestSigner;
use strongroom::store::s3::S3Store;
use strongroom::verify::{self, Selection, Status};

use crate::harness::{self, Claim, TestId, drop_database};
use crate::on_each_s3;

on_each_s3!(
    a_parallel_restore_of_an_awkward_database_equals_the_source,
    a_damaged_section_is_refused_and_nothing_becomes_visible,
    a_manifest_without_a_section_index_restores_in_one_session,
    a_zstd_backup_verifies_deep_and_restores_in_parallel,
    a_copy_statement_over_two_lines_restores_in_one_session,
    a_section_index_that_does_not_check_out_restores_in_one_session,
    staging_databases_interrupted_restores_left_are_dropped_unless_in_use,
    a_target_with_objects_but_no_tables_is_kept_aside_and_gives_its_comment,
    a_copy_without_the_manifests_rows_is_never_committed,
    a_latin1_dump_is_counted_before_commit_under_its_unicode_names,
    an_analyze_that_fails_is_a_warning_and_the_restore_goes_on,
);

/// More of what a section index must get right, on top of [`harness::load_awkward`].
const AWKWARD_SECTIONS: &str = r#"
    CREATE TABLE public.events (id int, at date NOT NULL, body text) PARTITION BY RANGE (at);
    CREATE TABLE public.events_2025 PARTITION OF public.events
        FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
    CREATE TABLE public.events_2026 PARTITION OF public.events
        FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
    ALTER TABLE public.events ADD PRIMARY KEY (id, at);
    CREATE INDEX events_body ON public.events (body);
    INSERT INTO public.events
        SELECT i, date '2025-06-01' + (i % 400), 'event ' || i FROM generate_series(1, 5000) i;
    -- Rows whose COPY text holds backslash-dot and header-like lines.
    CREATE TABLE public.tricky (id int PRIMARY KEY, v text);
    INSERT INTO public.tricky VALUES (1, E'\\.'), (2, E'\\.\n\\.'), (3, E'\n--\n-- Data for Name: x; Type: TABLE DATA; Schema: public; Owner: x\n--\n'),
        (4, E'\\\\.'), (5, repeat('long ', 300000));
    CREATE TABLE public.referrer (id int PRIMARY KEY, tricky_id int REFERENCES public.tricky(id));
    INSERT INTO public.referrer SELECT i, 1 + i % 5 FROM generate_series(1, 100) i;
    CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
        -- Name: fake; Type: INDEX; Schema: public; Owner: x
        RETURN NEW; END $$;
    CREATE TRIGGER referrer_touch BEFORE UPDATE ON public.referrer
        FOR EACH ROW EXECUTE FUNCTION public.touch();
    DO $$ BEGIN
        EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO strongroom_backup',
            lo_from_bytea(0, 'a large object'));
        EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO strongroom_backup',
            lo_from_bytea(0, decode(repeat('ab', 100000), 'hex')));
    END $$;
    -- Over 64 MiB of COPY text: cut into chunks.
    CREATE TABLE public.big (id int PRIMARY KEY, pad text);
    INSERT INTO public.big SELECT i, md5(i::text) || repeat('x', 80) FROM generate_series(1, 600000) i;
    CREATE UNIQUE INDEX big_pad ON public.big (pad);
    -- Extended statistics come in the post-data, after the table was analyzed as it landed.
    CREATE STATISTICS public.big_stats (ndistinct) ON id, pad FROM public.big;
    -- Inheritance: the backup counts a parent's rows with its descendants', as count(*) does.
    CREATE TABLE public.inh_parent (id int, v text);
    CREATE TABLE public.inh_child (extra int) INHERITS (public.inh_parent);
    CREATE TABLE public.inh_grandchild () INHERITS (public.inh_child);
    INSERT INTO public.inh_parent SELECT i, 'p' FROM generate_series(1, 10) i;
    INSERT INTO public.inh_child SELECT i, 'c', i FROM generate_series(1, 20) i;
    INSERT INTO public.inh_grandchild SELECT i, 'g', i FROM generate_series(1, 30) i;
    -- Over 1 MiB under a quoted name: truncated and loaded with COPY FREEZE.
    CREATE TABLE "Ünïcode Schema"."Frozen ""Quoted"" Rows" (id int PRIMARY KEY, v text);
    INSERT INTO "Ünïcode Schema"."Frozen ""Quoted"" Rows"
        SELECT i, repeat(md5(i::text), 2) FROM generate_series(1, 20000) i;
"#;

/// A signed backup of the fixture with `restore.jobs: 2`; returns the store, config and key.
async fn indexed_backup(
    id: &TestId,
    keys: &Path,
) -> (Arc<S3Store>, Config, ManifestSigner, String) {
    indexed_backup_with(id, keys, "").await
}

/// [`indexed_backup`] with more keys (`extra_pg`) in the `postgresql:` section.
async fn indexed_backup_with(
    id: &TestId,
    keys: &Path,
    extra_pg: &str,
) -> (Arc<S3Store>, Config, ManifestSigner, String) {
    let db = harness::fresh_database(&id.database()).await;
    harness::load_awkward(&db).await;
    db.batch_execute(AWKWARD_SECTIONS)
        .await
        .expect("fixture loads");
    signed_backup(id, keys, extra_pg).await
}

/// A signed backup of the test's database as it is, with `restore.jobs: 2`.
async fn signed_backup(
    id: &TestId,
    keys: &Path,
    extra_pg: &str,
) -> (Arc<S3Store>, Config, ManifestSigner, String) {
    let (private, public) = harness::keypair(keys);
    let (bucket, store) = harness::bucket(id, true).await;
    let yaml = format!(
        "{}signing:\n  private_key_file: {}\n  public_key_file: {}\nrestore:\n  user: postgres\n  jobs: 2\n",
        harness::config_yaml(id, &bucket, "", extra_pg),
        private.display(),
        public.display()
    );
    let config = harness::config(&yaml);
    let signer = ManifestSigner::load(&private).unwrap();
    let report = harness::backup(&config, &store, Some(&signer), &Progress::default())
        .await
        .unwrap_or_else(|e| panic!("backup: {e}"));
    (store, config, signer, report.key)
}

async fn manifest_of(store: &S3Store, key: &str) -> Manifest {
    let codec = strongroom::layout::Codec::of_dump(key).expect("a dump key");
    let manifest_key = key.replace(codec.dump_suffix(), ".manifest.json");
    let bytes = harness::download(store.client(), store.bucket(), &manifest_key, None).await;
    Manifest::from_bytes(&manifest_key, &bytes).unwrap()
}

/// Restores `key` into the test's database name plus `_<suffix>` and checks that it loaded in
/// one session and equals the source; returns the report.
async fn restore_in_one_session(
    id: &TestId,
    config: &Config,
    store: &Arc<S3Store>,
    key: &str,
    suffix: &str,
) -> RestoreReport {
    let restored = format!("{}_{suffix}", id.database());
    drop_database(&restored).await;
    let report = harness::restore(config, store, key, &restored)
        .await
        .unwrap_or_else(|e| panic!("restore: {e}"));
    assert!(report.parallel.is_none());
    assert_eq!(
        harness::reference_dump(&restored),
        harness::reference_dump(&id.database())
    );
    report
}

/// `dump` with the rows of each COPY sorted.
fn rows_sorted(dump: &str) -> String {
    let mut out = Vec::new();
    let mut rows: Option<Vec<&str>> = None;
    for line in dump.lines() {
        match &mut rows {
            Some(r) if line == "\\." => {
                r.sort_unstable();
                out.append(r);
                out.push(line);
                rows = None;
            }
            Some(r) => r.push(line),
            None => {
                out.push(line);
                if line.starts_with("COPY ") && line.ends_with(" FROM stdin;") {
                    rows = Some(Vec::new());
                }
            }
        }
    }
    out.join("\n")
}

fn first_difference(a: &str, b: &str) -> String {
    let (mut a, mut b) = (a.lines(), b.lines());
    for n in 1.. {
        match (a.next(), b.next()) {
            (None, None) => break,
            (x, y) if x != y => {
                let short = |l: Option<&str>| l.map(|l| l.chars().take(200).collect::<String>());
                return format!("line {n}: {:?} vs {:?}", short(x), short(y));
            }
            _ => {}
        }
    }
    "none".into()
}

async fn a_parallel_restore_of_an_awkward_database_equals_the_source(id: TestId) {
    let keys = tempfile::tempdir().unwrap();
    let (store, config, _, key) = indexed_backup(&id, keys.path()).await;
    let manifest = manifest_of(&store, &key).await;
    let sections = manifest
        .postgresql
        .unwrap()
        .sections
        .expect("a section index");
    let of = |kind| sections.iter().filter(|s| s.kind == kind).count();
    assert!(of(SectionKind::Data) > 10, "{sections:#?}");
    assert!(
        sections
            .iter()
            .any(|s| s.copy.as_deref() == Some("COPY public.big (id, pad) FROM stdin;")),
        "public.big is cut into chunks"
    );
    let indexed: Vec<&str> = sections
        .iter()
        .filter(|s| s.kind == SectionKind::Index)
        .filter_map(|s| s.table.as_deref())
        .collect();
    for table in [
        "public.big",
        "public.events",
        "public.events_2025",
        "public.tricky",
    ] {
        assert!(indexed.contains(&table), "{table}: {indexed:?}");
    }
    assert!(of(SectionKind::PostData) >= 1);

    let restored = format!("{}_par", id.database());
    drop_database(&restored).await;
    let report = harness::restore(&config, &store, &key, &restored)
        .await
        .unwrap_or_else(|e| panic!("restore on {}: {e}", id.s3.name()));
    let parallel = report.parallel.as_ref().expect("loaded in parallel");
    assert_eq!(parallel.jobs, 2);
    assert_eq!(parallel.sections, sections.len());
    // Over 1 MiB of COPY text: public.big (two chunks), public.tricky, the quoted table and
    // public.storage_records.
    assert_eq!(parallel.frozen_tables, 4);
    // Counted (and analyzed) as they landed, beside the load: at least the frozen ones the
    // second session loads while the first still loads public.big (their counts wait for their
    // COMMIT: TRUNCATE locked them in their transaction); public.big lands last, when the
    // checks stop, and is counted after the load.
    assert!(
        parallel.counted_while_loading >= 2 && parallel.analyzed_while_loading >= 2,
        "{parallel:?}"
    );
    assert!(report.passed, "{:#?}", report.checks);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let (ours, source) = (
        rows_sorted(&harness::reference_dump(&restored)),
        rows_sorted(&harness::reference_dump(&id.database())),
    );
    assert!(
        ours == source,
        "the restored database is not the source: {}",
        first_difference(&ours, &source)
    );
    assert!(harness::staging_databases(&restored).await.is_empty());
    // Analyzed before the swap: every table, and the partitioned one autovacuum never analyzes;
    // public.big again once its extended statistics existed.
    assert_eq!(harness::unanalyzed(&restored).await, Vec::<String>::new());
    let built: i64 = harness::admin(&restored)
        .await
        .query_one(
            "SELECT count(*) FROM pg_stats_ext WHERE statistics_name = 'big_stats'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(built, 1, "big_stats has data");
    assert!(report.phases.analyze_seconds.is_some());
    // Its row counts are timed on their own: a drill's projection scales them with the load.
    assert!(report.phases.row_count_seconds.is_some_and(|s| s > 0.0));
    // COPY FREEZE wrote every page of the big tables frozen (and all-visible); a small table
    // was loaded without it.
    let db = harness::admin(&restored).await;
    db.batch_execute("CREATE EXTENSION pg_visibility")
        .await
        .unwrap();
    for (table, frozen) in [
        ("public.big", true),
        ("public.tricky", true),
        (r#""Ünïcode Schema"."Frozen ""Quoted"" Rows""#, true),
        ("public.storage_records", true),
        ("public.referrer", false),
    ] {
        let all_frozen: bool = db
            .query_one(
                "SELECT bool_and(all_frozen AND all_visible) FROM pg_visibility_map($1::text::regclass)",
                &[&table],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(all_frozen, frozen, "{table}");
    }
}

async fn a_damaged_section_is_refused_and_nothing_becomes_visible(id: TestId) {
    let keys = tempfile::tempdir().unwrap();
    let (store, config, signer, key) = indexed_backup(&id, keys.path()).await;
    let manifest = manifest_of(&store, &key).await;
    let sections = manifest.postgresql.unwrap().sections.unwrap();
    // Damage the last data section: every other one loads first, and commits in staging.
    let last = sections
        .iter()
        .rfind(|s| s.kind == SectionKind::Data)
        .unwrap();
    let mut bytes = harness::download(store.client(), store.bucket(), &key, None).await;
    let at = (last.offset + last.size_bytes / 2) as usize;
    bytes[at] ^= 0x01;
    let planted = harness::plant_backup(
        &store,
        &config,
        &key,
        bytes,
        Claim::OriginalIndexed,
        Some(&signer),
        1,
    )
    .await;
    let restored = format!("{}_dmg", id.database());
    drop_database(&restored).await;
    let err = harness::restore(&config, &store, &planted, &restored)
        .await
        .expect_err("a damaged section is refused");
    let message = err.to_string();
    // The hash check at the section's end, or before it the gzip CRC or the guard reading
    // what the damaged bytes decompress to.
    assert!(
        ["section at bytes", "gzip", "refused"]
            .iter()
            .any(|m| message.contains(m)),
        "{message}"
    );
    assert!(
        !harness::database_exists(&restored).await,
        "nothing is visible: the new target is not there"
    );
    assert_eq!(
        harness::staging_databases(&restored).await,
        Vec::<String>::new()
    );
}

async fn a_manifest_without_a_section_index_restores_in_one_session(id: TestId) {
    let keys = tempfile::tempdir().unwrap();
    let (store, config, signer, key) = indexed_backup(&id, keys.path()).await;
    let bytes = harness::download(store.client(), store.bucket(), &key, None).await;
    let older = harness::plant_signed_original(&store, &config, &key, bytes, &signer, 1).await;
    assert!(
        manifest_of(&store, &older)
            .await
            .postgresql
            .unwrap()
            .sections
            .is_none()
    );
    let report = restore_in_one_session(&id, &config, &store, &older, "old").await;
    assert_eq!(report.expected_sha256, report.actual_sha256);
    // Analyzed in the load's transaction, before its COMMIT.
    let restored = format!("{}_old", id.database());
    assert_eq!(harness::unanalyzed(&restored).await, Vec::<String>::new());
}

async fn a_zstd_backup_verifies_deep_and_restores_in_parallel(id: TestId) {
    let keys = tempfile::tempdir().unwrap();
    let (store, config, signer, key) =
        indexed_backup_with(&id, keys.path(), "  compression_format: zstd\n").await;
    assert!(key.ends_with(".sql.zst"), "{key}");
    let details = manifest_of(&store, &key).await.postgresql.unwrap();
    assert_eq!(details.compression.format, "zstd");
    let sections = details.sections.expect("a section index");
    assert!(
        sections
            .iter()
            .filter(|s| s.kind == SectionKind::Data)
            .count()
            > 10
    );

    // The zstd tool reads the object whole, as the runbook's gunzip reads a .sql.gz.
    let bytes = harness::download(store.client(), store.bucket(), &key, None).await;
    let mut zstd = std::process::Command::new("zstd")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the zstd tool runs");
    let mut stdin = zstd.stdin.take().unwrap();
    let feed = {
        let bytes = bytes.clone();
        std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &bytes))
    };
    let plain = zstd.wait_with_output().unwrap();
    feed.join().unwrap().unwrap();
    assert!(plain.status.success());
    assert_eq!(plain.stdout.len() as u64, details.uncompressed_size_bytes);

    let selected = verify::select(&*store, &config, Engine::Postgresql, &Selection::All)
        .await
        .unwrap();
    assert_eq!(selected.len(), 1);
    let (snapshot, complete) = &selected[0];
    assert_eq!(snapshot.keys.dump, key);
    let verdict = verify::verify_one(&*store, &config, snapshot, *complete, None, true).await;
    assert_eq!(verdict.status, Status::Ok, "{:?}", verdict.problems);
    assert!(
        verdict
            .deep
            .as_deref()
            .is_some_and(|d| d.contains("zstd complete")),
        "{:?}",
        verdict.deep
    );

    let restored = format!("{}_zst", id.database());
    drop_database(&restored).await;
    let report = harness::restore(&config, &store, &key, &restored)
        .await
        .unwrap_or_else(|e| panic!("restore on {}: {e}", id.s3.name()));
    assert_eq!(
        report.parallel.as_ref().map(|p| p.sections),
        Some(sections.len())
    );
    assert!(report.passed, "{:#?}", report.checks);
    let (ours, source) = (
        rows_sorted(&harness::reference_dump(&restored)),
        rows_sorted(&harness::reference_dump(&id.database())),
    );
    assert!(ours == source, "{}", first_difference(&ours, &source));

    // A damaged frame is refused, in a section or in one session, before anything is visible.
    let last = sections
        .iter()
        .rfind(|s| s.kind == SectionKind::Data)
        .unwrap();
    for claim in [Claim::OriginalIndexed, Claim::Original] {
        let mut damaged = bytes.clone();
        damaged[(last.offset + last.size_bytes / 2) as usize] ^= 0x01;
        let days = if claim == Claim::Original { 2 } else { 1 };
        let planted =
            harness::plant_backup(&store, &config, &key, damaged, claim, Some(&signer), days).await;
        assert!(planted.ends_with(".sql.zst"), "{planted}");
        let target = format!("{}_zd{days}", id.database());
        drop_database(&target).await;
        let err = harness::restore(&config, &store, &planted, &target)
            .await
            .expect_err("a damaged zstd frame is refused");
        let message = err.to_string();
        assert!(
            ["section at bytes", "zstd", "refused", "hash"]
                .iter()
                .any(|m| message.contains(m)),
            "{message}"
        );
        // Nothing is visible: the parallel load's new target is not there, the one-session
        // load's (created first) has no tables.
        match claim {
            Claim::OriginalIndexed => assert!(!harness::database_exists(&target).await),
            _ => assert!(harness::tables_of(&target).await.is_empty()),
        }
        assert_eq!(
            harness::staging_databases(&target).await,
            Vec::<String>::new()
        );
    }
}

/// A column name with a line break in it makes pg_dump write that table's COPY statement over two
/// lines, whose last one names no table: the backup makes no section index, and the restore
/// loads the dump in one session, exactly.
async fn a_copy_statement_over_two_lines_restores_in_one_session(id: TestId) {
    let keys = tempfile::tempdir().unwrap();
    let db = harness::fresh_database(&id.database()).await;
    db.batch_execute(
        "CREATE TABLE public.t (id int PRIMARY KEY, \"line\nbreak\" text);
         INSERT INTO public.t SELECT i, 'row ' || i FROM generate_series(1, 1000) i;",
    )
    .await
    .expect("fixture loads");
    let (store, config, _, key) = signed_backup(&id, keys.path(), "").await;
    let dump = harness::download(store.client(), store.bucket(), &key, None).await;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(&dump[..]), &mut text)
        .unwrap();
    assert!(
        text.contains("COPY public.t (id, \"line\nbreak\") FROM stdin;\n"),
        "pg_dump writes the statement over two lines"
    );
    let sections = manifest_of(&store, &key).await.postgresql.unwrap().sections;
    assert!(sections.is_none(), "{sections:?}");
    let report = restore_in_one_session(&id, &config, &store, &key, "lines").await;
    assert!(report.passed, "{:?}", report.checks);
}

/// A signed index that does not fit its dump (an earlier agent wrote the last line of a COPY
/// statement spread over lines as a chunk's COPY line) costs the parallel load, not the
/// restore: it says so and loads the dump in one session, checked against its SHA-256.
async fn a_section_index_that_does_not_check_out_restores_in_one_session(id: TestId) {
    let keys = tempfile::tempdir().unwrap();
    let (store, config, signer, key) = indexed_backup(&id, keys.path()).await;
    let bytes = harness::download(store.client(), store.bucket(), &key, None).await;
    let planted = harness::plant_backup_with(
        &store,
        &config,
        &key,
        bytes,
        Claim::OriginalIndexed,
        Some(&signer),
        1,
        |manifest| {
            let sections = manifest.postgresql.as_mut().unwrap().sections.as_mut();
            let chunk = sections
                .unwrap()
                .iter_mut()
                .find(|s| s.copy.is_some())
                .expect("a table cut into chunks");
            chunk.copy = Some("pad) FROM stdin;".into());
        },
    )
    .await;
    let report = restore_in_one_session(&id, &config, &store, &planted, "unindexed").await;
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("no pg_dump line") && w.contains("one session")),
        "{:?}",
        report.warnings
    );
    assert!(report.passed, "{:?}", report.checks);
}

async fn staging_databases_interrupted_restores_left_are_dropped_unless_in_use(id: TestId) {
    let keys = tempfile::tempdir().unwrap();
    let db = harness::fresh_database(&id.database()).await;
    db.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000);",
    )
    .await
    .unwrap();
    let (store, config, _, key) = signed_backup(&id, keys.path(), "").await;
    let target = format!("{}_swept", id.database());
    drop_database(&target).await;
    let prefix = strongroom::engine::postgres::staging_prefix(&target);
    let [abandoned, held, busy, odd, unmarked] = [
        "20260101t000000z_abcd",
        "20260101t000001z_beef",
        "20260101t000002z_cafe",
        "by_hand",
        "20260101t000003z_0123",
    ]
    .map(|suffix| format!("{prefix}{suffix}"));
    // A restore still loading holds its staging database's lock; someone looks at another;
    // one has a name of the agent's shape but not its comment (an earlier version made it).
    let admin = harness::plant_leftovers(&[&abandoned, &busy, &odd, &unmarked], &held).await;
    admin
        .batch_execute(&format!("COMMENT ON DATABASE \"{unmarked}\" IS NULL"))
        .await
        .unwrap();
    let looking = harness::admin(&busy).await;

    let report = harness::restore(&config, &store, &key, &target)
        .await
        .unwrap_or_else(|e| panic!("restore: {e}"));
    assert!(report.parallel.is_some());
    let about_leftovers: Vec<&String> = report
        .warnings
        .iter()
        .filter(|w| w.contains(&prefix))
        .collect();
    let said = |start: &str, has: &str| {
        about_leftovers
            .iter()
            .any(|w| w.starts_with(start) && w.contains(has))
    };
    assert!(
        said(&format!("dropped {abandoned}, "), "interrupted"),
        "{about_leftovers:?}"
    );
    assert!(
        said(&format!("{busy} is "), "could not be dropped"),
        "{about_leftovers:?}"
    );
    assert_eq!(about_leftovers.len(), 2, "{about_leftovers:?}");
    let mut left = harness::staging_databases(&target).await;
    left.sort();
    let mut want = vec![held.clone(), busy.clone(), odd.clone(), unmarked.clone()];
    want.sort();
    assert_eq!(left, want);
    assert_eq!(
        harness::reference_dump(&target),
        harness::reference_dump(&id.database())
    );
    // The restored database no longer carries the staging database's comment.
    let comment = harness::database_comment(&target).await;
    assert_eq!(comment, None);

    // A restore's hold on a name: it checks out while held, and is an error, naming the
    // database, once the server ended its session.
    let maintenance = config
        .postgresql()
        .unwrap()
        .restore_params(&config.restore, "postgres")
        .unwrap();
    let name = format!("{prefix}20260101t000004z_4444");
    let hold = strongroom::restore::abandoned::hold(&maintenance, &name)
        .await
        .unwrap();
    hold.check().await.unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
             AND classid = (($1::bigint >> 32) & 4294967295)::oid \
             AND objid = ($1::bigint & 4294967295)::oid",
            &[&strongroom::restore::abandoned::lock_key(&name)],
        )
        .await
        .unwrap();
    harness::wait_for(
        "the check to see the lock gone",
        std::time::Duration::from_secs(10),
        async || {
            hold.check()
                .await
                .is_err_and(|e| e.to_string().contains(&name))
        },
    )
    .await;
    drop(looking);
    drop(admin);
    for name in &want {
        drop_database(name).await;
    }
}

async fn a_target_with_objects_but_no_tables_is_kept_aside_and_gives_its_comment(id: TestId) {
    let keys = tempfile::tempdir().unwrap();
    let db = harness::fresh_database(&id.database()).await;
    db.batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);")
        .await
        .unwrap();
    let (store, config, _, key) = signed_backup(&id, keys.path(), "").await;
    // No tables (so the restore goes ahead), but a large object and a view someone made.
    let target = format!("{}_objects", id.database());
    harness::create_database(&target, "the map's data").await;
    harness::admin(&target)
        .await
        .batch_execute("SELECT lo_from_bytea(0, 'keep me'); CREATE VIEW v AS SELECT 1 AS one;")
        .await
        .unwrap();

    let report = harness::restore(&config, &store, &key, &target)
        .await
        .unwrap_or_else(|e| panic!("restore: {e}"));
    assert!(report.parallel.is_some());
    let kept = report
        .warnings
        .iter()
        .find(|w| w.contains("relations: 1") && w.contains("large objects: 1"))
        .unwrap_or_else(|| panic!("{:?}", report.warnings));
    let aside = kept
        .split("kept as ")
        .nth(1)
        .and_then(|rest| rest.split('.').next())
        .unwrap()
        .to_owned();
    let objects: i64 = harness::admin(&aside)
        .await
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(objects, 1, "the large object is in {aside}");
    assert_eq!(
        harness::reference_dump(&target),
        harness::reference_dump(&id.database())
    );
    let comment = harness::database_comment(&target).await;
    assert_eq!(comment.as_deref(), Some("the map's data"));
    drop_database(&aside).await;
}

/// A new target (`--create`) that someone creates while the restore runs is replaced like one
/// that existed: the restored copy takes its name, and what was made there is kept aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_target_created_while_the_restore_ran_is_replaced_and_kept_aside() {
    let id = TestId {
        test: "a_new_target_created_while_the_restore_ran",
        s3: harness::S3Kind::Rgw,
    };
    let target = id.database();
    drop_database(&target).await;
    let yaml = harness::config_yaml(&id, "unused", "", "") + "restore:\n  user: postgres\n";
    let config = harness::config(&yaml);
    let params = (config.postgresql().unwrap())
        .restore_params(&config.restore, &target)
        .unwrap();
    use strongroom::restore::staging::{Created, Staging};
    let Created::Ready(staging) = Staging::create(&params, true).await.unwrap() else {
        panic!("a new target carries nothing");
    };
    harness::admin(&staging.name)
        .await
        .batch_execute("CREATE TABLE public.restored (x int)")
        .await
        .unwrap();
    harness::fresh_database(&target)
        .await
        .batch_execute("CREATE TABLE public.late (x int)")
        .await
        .unwrap();
    let warnings = staging.replace(&target).await.unwrap();
    assert_eq!(harness::tables_of(&target).await, ["public.restored"]);
    let aside = (warnings.iter())
        .find_map(|w| w.split("kept as ").nth(1)?.split('.').next())
        .unwrap_or_else(|| panic!("{warnings:?}"))
        .to_owned();
    assert_eq!(harness::tables_of(&aside).await, ["public.late"]);
    drop_database(&aside).await;
    drop_database(&target).await;
}

/// A signed manifest whose row counts its dump does not hold (the backup's counts and its
/// dump disagree): neither load commits, in parallel through the staging database or in one
/// session, and the target keeps what it had.
async fn a_copy_without_the_manifests_rows_is_never_committed(id: TestId) {
    let keys = tempfile::tempdir().unwrap();
    let (store, config, signer, key) = indexed_backup(&id, keys.path()).await;
    let bytes = harness::download(store.client(), store.bucket(), &key, None).await;
    let miscount = |manifest: &mut Manifest| {
        let tables = &mut manifest.postgresql.as_mut().unwrap().tables;
        let tricky = tables.iter_mut().find(|t| t.table == "tricky").unwrap();
        tricky.rows += 1;
        let big = tables.iter_mut().find(|t| t.table == "big").unwrap();
        big.rows -= 1;
    };
    let target = format!("{}_miscounted", id.database());
    drop_database(&target).await;
    harness::create_database(&target, "the map's data").await;
    harness::admin(&target)
        .await
        .batch_execute("CREATE VIEW v AS SELECT 1 AS one;")
        .await
        .unwrap();
    for (claim, days, parallel) in [
        (Claim::OriginalIndexed, 1, true),
        (Claim::Original, 2, false),
    ] {
        let planted = harness::plant_backup_with(
            &store,
            &config,
            &key,
            bytes.clone(),
            claim,
            Some(&signer),
            days,
            miscount,
        )
        .await;
        let indexed = manifest_of(&store, &planted)
            .await
            .postgresql
            .unwrap()
            .sections
            .is_some();
        assert_eq!(indexed, parallel);
        let err = harness::restore(&config, &store, &planted, &target)
            .await
            .expect_err("a copy short of the manifest's rows is refused");
        let message = err.to_string();
        assert!(
            matches!(err, Error::RowCountsDiffer { .. })
                && message.contains("rows in public.tricky: expected 6, found 5")
                && message.contains("rows in public.big: expected 599999, found 600000")
                && message.contains("nothing was committed"),
            "parallel {parallel}: {message}"
        );
        assert_eq!(message.contains("staging database"), parallel, "{message}");
        assert!(harness::tables_of(&target).await.is_empty(), "{message}");
        let views: i64 = harness::admin(&target)
            .await
            .query_one("SELECT count(*) FROM pg_views WHERE viewname = 'v'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(views, 1, "the target is the one it was");
        assert_eq!(
            harness::staging_databases(&target).await,
            Vec::<String>::new()
        );
        assert_eq!(
            harness::database_comment(&target).await.as_deref(),
            Some("the map's data")
        );
    }
}

/// A LATIN1 database's dump sets that client encoding; the count guard that follows it in the
/// one session names the tables in UTF-8 and must say so, or a table named in non-ASCII
/// letters reads as missing and no such backup could be restored.
async fn a_latin1_dump_is_counted_before_commit_under_its_unicode_names(id: TestId) {
    let keys = tempfile::tempdir().unwrap();
    let name = id.database();
    let root = harness::admin("postgres").await;
    for statement in [
        format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        format!(
            "CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'LATIN1' \
             LC_COLLATE 'C' LC_CTYPE 'C'"
        ),
    ] {
        root.batch_execute(&statement).await.unwrap();
    }
    harness::admin(&name)
        .await
        .batch_execute(
            "CREATE SCHEMA \"Ünï\"; CREATE TABLE \"Ünï\".\"Çà\" (id int PRIMARY KEY, v text);
             INSERT INTO \"Ünï\".\"Çà\" SELECT i, 'é ' || i FROM generate_series(1, 7) i;",
        )
        .await
        .unwrap();
    let (store, config, signer, key) = signed_backup(&id, keys.path(), "").await;
    let bytes = harness::download(store.client(), store.bucket(), &key, None).await;
    let mut text = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::MultiGzDecoder::new(&bytes[..]),
        &mut text,
    )
    .unwrap();
    assert!(
        String::from_utf8_lossy(&text).contains("SET client_encoding = 'LATIN1';"),
        "a LATIN1 dump"
    );
    let older = harness::plant_signed_original(&store, &config, &key, bytes, &signer, 1).await;
    let restored = format!("{name}_latin1");
    drop_database(&restored).await;
    let report = harness::restore(&config, &store, &older, &restored)
        .await
        .unwrap_or_else(|e| panic!("restore: {e}"));
    assert!(report.parallel.is_none());
    let counted = report
        .checks
        .iter()
        .find(|c| c.name == "rows in Ünï.Çà")
        .unwrap_or_else(|| panic!("{:#?}", report.checks));
    assert!(counted.passed && counted.expected == "7", "{counted:?}");
    assert_eq!(harness::tables_of(&restored).await, ["Ünï.Çà"]);
}

/// Statistics are not worth failing a verified restore for: an `ANALYZE` that fails (here an
/// expression index whose function refuses to run under `ANALYZE`) leaves a warning, and the
/// restore commits, in parallel and in one session.
async fn an_analyze_that_fails_is_a_warning_and_the_restore_goes_on(id: TestId) {
    let keys = tempfile::tempdir().unwrap();
    let db = harness::fresh_database(&id.database()).await;
    db.batch_execute(
        "CREATE FUNCTION public.picky(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
         BEGIN
           IF current_query() ILIKE 'analyze%' OR current_query() ILIKE 'do $strongroom_analyze$%'
           THEN RAISE EXCEPTION 'picky refuses to be analyzed'; END IF;
           RETURN i;
         END $$;
         CREATE TABLE public.t (id int PRIMARY KEY);
         CREATE INDEX t_picky ON public.t (public.picky(id));
         INSERT INTO public.t SELECT generate_series(1, 100);",
    )
    .await
    .expect("fixture loads");
    let (store, config, signer, key) = signed_backup(&id, keys.path(), "").await;
    let restored = format!("{}_picky", id.database());
    drop_database(&restored).await;
    let report = harness::restore(&config, &store, &key, &restored)
        .await
        .unwrap_or_else(|e| panic!("parallel restore: {e}"));
    assert!(report.parallel.is_some() && report.passed, "{report:#?}");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("ANALYZE of the restored copy failed")
                && w.contains("picky refuses to be analyzed")),
        "{:?}",
        report.warnings
    );
    assert_eq!(harness::tables_of(&restored).await, ["public.t"]);
    assert!(harness::staging_databases(&restored).await.is_empty());

    let bytes = harness::download(store.client(), store.bucket(), &key, None).await;
    let older = harness::plant_signed_original(&store, &config, &key, bytes, &signer, 1).await;
    let restored = format!("{}_picky1", id.database());
    drop_database(&restored).await;
    let report = harness::restore(&config, &store, &older, &restored)
        .await
        .unwrap_or_else(|e| panic!("one-session restore: {e}"));
    assert!(report.parallel.is_none() && report.passed, "{report:#?}");
    assert_eq!(harness::tables_of(&restored).await, ["public.t"]);
}

/// What a database carries besides its contents, as one sorted list: its ACL, connection
/// limit, locale provider and collation, and the settings made on it.
async fn database_properties(database: &str) -> Vec<String> {
    harness::admin("postgres")
        .await
        .query(
            "SELECT 'acl ' || coalesce((SELECT string_agg(a::text, ' ' ORDER BY a::text) \
                FROM unnest(d.datacl) a), 'default') FROM pg_database d WHERE d.datname = $1 \
             UNION ALL SELECT format('limit %s provider %s icu %s collate %s', datconnlimit, \
                datlocprovider, coalesce(daticulocale, '-'), datcollate) \
                FROM pg_database WHERE datname = $1 \
             UNION ALL SELECT 'settings ' || coalesce(r.rolname, '-') || ' ' \
                || array_to_string(s.setconfig, '|') \
                FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase \
                LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE d.datname = $1 \
             ORDER BY 1",
            &[&database],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A small signed backup of the test's database, its table owned by `owner`.
async fn small_backup(id: &TestId, keys: &Path, owner: &str) -> (Arc<S3Store>, Config, String) {
    let db = harness::fresh_database(&id.database()).await;
    db.batch_execute(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, name text); ALTER TABLE t OWNER TO {owner}; \
         INSERT INTO t SELECT i, 'n' || i FROM generate_series(1, 1000) i;"
    ))
    .await
    .unwrap();
    let (store, config, _, key) = signed_backup(id, keys, "").await;
    (store, config, key)
}

/// Drops `target` and what restores into it may have left (staging and replaced copies),
/// then drops `roles` (cluster-wide: with their grants on databases, `DROP OWNED BY`), so a
/// run that failed half-way does not stop the next; then runs `setup`, a statement at a time
/// (CREATE DATABASE cannot run in a batch's implicit transaction).
async fn fresh_target(target: &str, roles: &[&str], setup: &[String]) {
    let root = harness::admin("postgres").await;
    let prefixes = ["restoring", "replaced"].map(|what| postgres::derived_prefix(target, what));
    let names: Vec<String> = (root
        .query("SELECT datname::text FROM pg_database", &[])
        .await)
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for name in names {
        if name == target || prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            drop_database(&name).await;
        }
    }
    for role in roles {
        root.batch_execute(&format!(
            "DO $$BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN \
               EXECUTE 'DROP OWNED BY {role}'; EXECUTE 'DROP ROLE {role}'; END IF; END$$"
        ))
        .await
        .unwrap();
    }
    for sql in setup {
        root.batch_execute(sql).await.unwrap();
    }
}

/// The database a chart or operator made, which a restore goes into, keeps what it carries:
/// a parallel restore puts a staging database in its place by rename, which takes over its
/// grants (`PUBLIC` may not connect; one role may, and may grant that on, which it did), its
/// connection limit, its settings (one of which, `default_transaction_read_only`, would have
/// failed the load had it run under it), a role's settings in it and its ICU locale, as
/// `gunzip | psql` into it keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_restore_keeps_the_targets_grants_settings_and_locale() {
    let id = TestId {
        test: "restore_keeps_target_properties",
        s3: harness::S3Kind::Rgw,
    };
    let keys = tempfile::tempdir().unwrap();
    let (store, config, key) = small_backup(&id, keys.path(), "postgres").await;
    let target = format!("{}_made", id.database());
    let (delegate, reader) = ("strongroom_it_keeps_delegate", "strongroom_it_keeps_reader");
    let db = format!("\"{target}\"");
    fresh_target(
        &target,
        &[reader, delegate],
        &[
            format!("CREATE ROLE {delegate}"),
            format!("CREATE ROLE {reader} LOGIN"),
            format!(
                "CREATE DATABASE {db} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' \
                 LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' CONNECTION LIMIT 40"
            ),
            format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"),
            format!("GRANT CONNECT ON DATABASE {db} TO {delegate} WITH GRANT OPTION"),
            format!("SET ROLE {delegate}; GRANT CONNECT ON DATABASE {db} TO {reader}; RESET ROLE"),
            format!("ALTER DATABASE {db} SET search_path = app, \"$user\", public"),
            format!("ALTER DATABASE {db} SET default_transaction_read_only = on"),
            format!("ALTER ROLE {reader} IN DATABASE {db} SET statement_timeout = '7s'"),
        ],
    )
    .await;
    let before = database_properties(&target).await;
    assert_eq!(
        before,
        [
            format!("acl postgres=CTc/postgres {delegate}=c*/postgres {reader}=c/{delegate}")
                .as_str(),
            "limit 40 provider i icu de-DE collate C.UTF-8",
            "settings - search_path=app, \"$user\", public|default_transaction_read_only=on",
            &format!("settings {reader} statement_timeout=7s"),
        ]
    );

    let report = harness::restore(&config, &store, &key, &target)
        .await
        .unwrap_or_else(|e| panic!("restore: {e}"));
    assert!(report.parallel.is_some(), "{:?}", report.warnings);
    assert_eq!(database_properties(&target).await, before);
    assert_eq!(
        harness::reference_dump(&target),
        harness::reference_dump(&id.database())
    );
    fresh_target(&target, &[reader, delegate], &[]).await;
}

/// The swap gives the restored copy the target's grants as they are then: a grant revoked on
/// the target while the restore loaded is not on its copy, though the copy had it from its
/// creation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_revoked_while_the_restore_loads_is_not_on_the_restored_copy() {
    let id = TestId {
        test: "grant_revoked_while_loading",
        s3: harness::S3Kind::Rgw,
    };
    let target = id.database();
    let (stays, goes) = ("strongroom_it_revoked_stays", "strongroom_it_revoked_goes");
    let db = format!("\"{target}\"");
    fresh_target(
        &target,
        &[stays, goes],
        &[
            format!("CREATE ROLE {stays}"),
            format!("CREATE ROLE {goes}"),
            format!("CREATE DATABASE {db}"),
            format!("GRANT CONNECT ON DATABASE {db} TO {stays}, {goes}"),
        ],
    )
    .await;
    let yaml = harness::config_yaml(&id, "unused", "", "") + "restore:\n  user: postgres\n";
    let params = (harness::config(&yaml).postgresql().unwrap())
        .restore_params(&harness::config(&yaml).restore, &target)
        .unwrap();
    use strongroom::restore::staging::{Created, Staging};
    let Created::Ready(staging) = Staging::create(&params, false).await.unwrap() else {
        panic!("a superuser carries everything");
    };
    // The copy has the target's grants while it loads.
    let copy = database_properties(&staging.name).await;
    assert!(copy[0].contains(&format!("{goes}=c/postgres")), "{copy:?}");
    harness::admin("postgres")
        .await
        .batch_execute(&format!("REVOKE CONNECT ON DATABASE {db} FROM {goes}"))
        .await
        .unwrap();
    let before = database_properties(&target).await;
    staging.replace(&target).await.unwrap();
    assert_eq!(database_properties(&target).await, before);
    assert!(!before[0].contains(goes), "{before:?}");
    fresh_target(&target, &[stays, goes], &[]).await;
}

/// A restore role that may not write the target's settings back (here a role's setting in
/// it, which only a superuser or the role's admin may make) finds out before anything loads,
/// and loads into the target in one session, which keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_role_that_may_not_copy_the_targets_settings_loads_in_one_session() {
    let id = TestId {
        test: "restore_cannot_copy_settings",
        s3: harness::S3Kind::Rgw,
    };
    let (owner, reader) = ("strongroom_it_copy_owner", "strongroom_it_copy_reader");
    let target = format!("{}_made", id.database());
    let db = format!("\"{target}\"");
    let password = std::fs::read_to_string(harness::pg().password_file).unwrap();
    drop_database(&id.database()).await;
    fresh_target(
        &target,
        &[reader, owner],
        &[
            format!("CREATE ROLE {reader}"),
            format!(
                "CREATE ROLE {owner} LOGIN CREATEDB PASSWORD '{}'",
                password.trim()
            ),
            format!("CREATE DATABASE {db} OWNER {owner}"),
            format!("ALTER DATABASE {db} SET work_mem = '5MB'"),
            format!("ALTER ROLE {reader} IN DATABASE {db} SET statement_timeout = '7s'"),
        ],
    )
    .await;
    let keys = tempfile::tempdir().unwrap();
    let (store, mut config, key) = small_backup(&id, keys.path(), owner).await;
    config.restore.user = Some(owner.into());
    let before = database_properties(&target).await;

    let report = harness::restore(&config, &store, &key, &target)
        .await
        .unwrap_or_else(|e| panic!("restore: {e}"));
    assert!(report.parallel.is_none());
    let warning = (report.warnings.iter())
        .find(|w| w.contains("may not make a copy of"))
        .unwrap_or_else(|| panic!("{:?}", report.warnings));
    // The statement is named against the target (its copy is gone).
    assert!(
        warning.contains(&format!("ALTER ROLE \"{reader}\" IN DATABASE {db}")),
        "{warning}"
    );
    assert_eq!(database_properties(&target).await, before);
    assert_eq!(
        harness::reference_dump(&target),
        harness::reference_dump(&id.database())
    );
    // No staging database is left.
    let prefix = postgres::staging_prefix(&target);
    let left: Vec<String> = (harness::admin("postgres").await)
        .query("SELECT datname::text FROM pg_database", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|name| name.starts_with(&prefix))
        .collect();
    assert_eq!(left, Vec::<String>::new());
    drop_database(&id.database()).await;
    fresh_target(&target, &[reader, owner], &[]).await;
}
