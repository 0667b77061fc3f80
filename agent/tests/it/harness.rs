//! Shared test plumbing: where the real servers are, per-test names, fixtures.
//!
//! The servers are started by `e2e/harness/with-servers.sh` (which `make test` runs). A test
//! whose server is missing panics with instructions; it never skips.

use std::path::PathBuf;
use std::sync::Arc;

use aws_sdk_s3::Client;
use strongroom::backup::{BackupReport, backup_postgres};
use strongroom::config::Config;
use strongroom::error::Error;
use strongroom::layout::Engine;
use strongroom::locked_write::WritePolicy;
use strongroom::pipeline::Progress;
use strongroom::restore::{self, RestoreOptions, RestoreReport, SnapshotChoice};
use strongroom::signing::ManifestSigner;
use strongroom::signing::ManifestVerifier;
use strongroom::store::s3::S3Store;
use tokio_postgres::NoTls;

/// Reads a variable the harness exports, or fails the test saying how to run it.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: integration tests run against real servers started by \
             `make test` (or `e2e/harness/with-servers.sh cargo test --test it`)"
        )
    })
}

/// The S3 servers every S3 test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Kind {
    /// Ceph RGW: a production S3 daemon.
    Rgw,
    /// moto: enforces "checksum required on lock buckets", verifies nothing.
    Moto,
}

impl S3Kind {
    pub fn name(self) -> &'static str {
        match self {
            S3Kind::Rgw => "rgw",
            S3Kind::Moto => "moto",
        }
    }

    pub fn endpoint(self) -> String {
        env(match self {
            S3Kind::Rgw => "STRONGROOM_TEST_S3_RGW",
            S3Kind::Moto => "STRONGROOM_TEST_S3_MOTO",
        })
    }
}

/// Identifies one test run on one server; every name a test uses derives from it.
#[derive(Debug, Clone, Copy)]
pub struct TestId {
    pub test: &'static str,
    pub s3: S3Kind,
}

impl TestId {
    /// A bucket name unique to this test, server and process run.
    pub fn bucket(&self, suffix: &str) -> String {
        let nonce = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let mut name = format!(
            "sr-{}-{}{suffix}",
            self.test.replace('_', "-"),
            self.s3.name()
        );
        name.truncate(63 - nonce.len() - 1);
        format!("{}-{nonce}", name.trim_end_matches('-'))
    }

    /// The test's own database name: unique per test and server, with room for a suffix
    /// of up to 10 bytes within PostgreSQL's 63.
    pub fn database(&self) -> String {
        use sha2::Digest as _;
        let hash = hex::encode(&sha2::Sha256::digest(self.test.as_bytes())[..3]);
        let short: String = self.test.chars().take(38).collect();
        format!("t_{short}_{hash}_{}", self.s3.name())
    }
}

/// A hung test fails after this long instead of holding up the whole run.
pub const TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(240);

/// Runs `$name(TestId)` once per S3 server, as separate tests `$name::rgw` and `$name::moto`,
/// each failing if it takes longer than [`TEST_TIMEOUT`].
#[macro_export]
macro_rules! on_each_s3 {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::harness::{S3Kind, TestId, TEST_TIMEOUT};
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rgw() {
                let id = TestId { test: stringify!($name), s3: S3Kind::Rgw };
                tokio::time::timeout(TEST_TIMEOUT, super::$name(id))
                    .await
                    .unwrap_or_else(|_| panic!("{} timed out on rgw", stringify!($name)))
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn moto() {
                let id = TestId { test: stringify!($name), s3: S3Kind::Moto };
                tokio::time::timeout(TEST_TIMEOUT, super::$name(id))
                    .await
                    .unwrap_or_else(|_| panic!("{} timed out on moto", stringify!($name)))
            }
        }
    )*};
}

/// PostgreSQL as the harness started it.
pub struct Pg {
    pub socket_dir: String,
    pub port: u16,
    pub password_file: PathBuf,
}

pub fn pg() -> Pg {
    Pg {
        socket_dir: env("STRONGROOM_TEST_PGHOST"),
        port: env("STRONGROOM_TEST_PGPORT").parse().expect("a port"),
        password_file: env("STRONGROOM_TEST_PG_PASSWORD_FILE").into(),
    }
}

/// The CA that issued the harness server's TLS certificate (for `localhost` only).
pub fn pg_ca() -> PathBuf {
    env("STRONGROOM_TEST_PG_CA").into()
}

/// The harness's streaming standby of [`pg`].
pub fn standby() -> Pg {
    Pg {
        socket_dir: env("STRONGROOM_TEST_PG_STANDBY_HOST"),
        port: env("STRONGROOM_TEST_PG_STANDBY_PORT")
            .parse()
            .expect("a port"),
        password_file: env("STRONGROOM_TEST_PG_PASSWORD_FILE").into(),
    }
}

impl Pg {
    /// Waits until `database` exists here and holds `table` (a standby replays the primary's
    /// WAL with some lag, more while the other tests load theirs); panics after two minutes.
    pub async fn wait_for_table(&self, database: &str, table: &str) {
        let start = std::time::Instant::now();
        while !self.has_table(database, table).await {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(120),
                "{table} of {database} did not reach the server at {}:{} in two minutes",
                self.socket_dir,
                self.port
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Whether `database` exists here and holds `table` (a standby may lag).
    pub async fn has_table(&self, database: &str, table: &str) -> bool {
        let Ok((client, connection)) = tokio_postgres::Config::new()
            .host(&self.socket_dir)
            .port(self.port)
            .user("postgres")
            .dbname(database)
            .connect(NoTls)
            .await
        else {
            return false;
        };
        tokio::spawn(connection);
        client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .is_ok_and(|r| r.get(0))
    }
}

/// A superuser connection (trusted over the socket) for setting up and checking databases.
pub async fn admin(database: &str) -> tokio_postgres::Client {
    let pg = pg();
    let (client, connection) = tokio_postgres::Config::new()
        .host(&pg.socket_dir)
        .port(pg.port)
        .user("postgres")
        .dbname(database)
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {database} as postgres: {e}"));
    tokio::spawn(connection);
    client
}

/// Drops and creates `name`, returning a superuser connection to it.
pub async fn fresh_database(name: &str) -> tokio_postgres::Client {
    let root = admin("postgres").await;
    root.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
    root.batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    admin(name).await
}

/// Whether `name` exists on the test server.
pub async fn database_exists(name: &str) -> bool {
    database_exists_on(&admin("postgres").await, name).await
}

/// Whether `name` exists on the server `client` is connected to.
pub async fn database_exists_on(client: &tokio_postgres::Client, name: &str) -> bool {
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            &[&name],
        )
        .await
        .unwrap()
        .get(0)
}

/// Tables, rows, types and names that a faithful dump must reproduce; returns the row counts
/// per `schema.table`.
pub async fn load_sample(db: &tokio_postgres::Client) -> Vec<(String, String, i64)> {
    db.batch_execute(
        r#"
        CREATE SCHEMA billing;
        CREATE TABLE public.storage_records (
            id bigserial PRIMARY KEY,
            body text NOT NULL,
            meta jsonb,
            blob bytea,
            created timestamptz NOT NULL DEFAULT '2026-01-01T00:00:00Z'
        );
        CREATE INDEX storage_records_kind ON public.storage_records ((meta->>'kind'));
        INSERT INTO public.storage_records (body, meta, blob)
            SELECT 'row ' || i || ' ünïcødé ' || md5(i::text),
                   jsonb_build_object('i', i, 'kind', i % 7, 'tags', jsonb_build_array('a', i)),
                   decode(md5(i::text), 'hex')
            FROM generate_series(1, 5000) AS i;
        CREATE TABLE billing."Invoice Lines" (id int PRIMARY KEY, amount numeric(12,2), note text);
        INSERT INTO billing."Invoice Lines"
            SELECT i, i * 1.25, CASE WHEN i % 3 = 0 THEN NULL ELSE E'tab\there' END
            FROM generate_series(1, 1234) AS i;
        CREATE TABLE public.empty_table (x int);
        CREATE VIEW public.record_count AS SELECT count(*) FROM public.storage_records;
        CREATE SEQUENCE public.standalone START 42;
        "#,
    )
    .await
    .expect("sample data loads");
    vec![
        ("billing".into(), "Invoice Lines".into(), 1234),
        ("public".into(), "empty_table".into(), 0),
        ("public".into(), "storage_records".into(), 5000),
    ]
}

/// The YAML a test's agent runs with; `extra_s3` and `extra_pg` are indented lines to add.
pub fn config_yaml(id: &TestId, bucket: &str, extra_s3: &str, extra_pg: &str) -> String {
    let pg = pg();
    format!(
        "release: {release}\n\
         s3:\n  bucket: {bucket}\n  prefix: backups/{test}\n  endpoint: {endpoint}\n  part_size_mib: 5\n{extra_s3}\
         postgresql:\n  host: {socket}\n  port: {port}\n  user: strongroom_backup\n  database: {db}\n  \
         password_file: {pw}\n  compression_level: 1\n{extra_pg}\
         log:\n  format: text\n",
        release = "llama-mapper",
        test = id.test.replace('_', "-"),
        endpoint = id.s3.endpoint(),
        socket = pg.socket_dir,
        port = pg.port,
        db = id.database(),
        pw = pg.password_file.display(),
    )
}

pub fn config(yaml: &str) -> Config {
    Config::from_yaml(yaml, std::path::Path::new("test-config.yaml")).expect("test config is valid")
}

/// Creates a bucket (with Object Lock when `locked`) and returns the agent's store for it.
pub async fn bucket(id: &TestId, locked: bool) -> (String, Arc<S3Store>) {
    let name = id.bucket(if locked { "" } else { "-open" });
    let yaml = format!(
        "release: r\ns3:\n  bucket: {name}\n  endpoint: {}\n",
        id.s3.endpoint()
    );
    let store = S3Store::connect(&config(&yaml).s3).await;
    store
        .client()
        .create_bucket()
        .bucket(&name)
        .object_lock_enabled_for_bucket(locked)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "create bucket {name} on {}: {}",
                id.s3.name(),
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
    (name, Arc::new(store))
}

/// Downloads one object version whole (tests only: the agent itself never buffers objects).
pub async fn download(client: &Client, bucket: &str, key: &str, version: Option<&str>) -> Vec<u8> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_version_id(version.map(str::to_owned))
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)));
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

/// `pg_dump` of `database` without the random `\restrict` key lines (pg_dump >= 15.14 writes a
/// new one into every dump).
pub fn reference_dump(database: &str) -> String {
    let pg = pg();
    let out = std::process::Command::new("pg_dump")
        .args(["--format=plain", "--no-password"])
        .env("PGHOST", &pg.socket_dir)
        .env("PGPORT", pg.port.to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", database)
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    normalise_dump(&String::from_utf8(out.stdout).unwrap())
}

pub fn normalise_dump(dump: &str) -> String {
    dump.lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads a plain SQL dump into `database` with psql, stopping at the first error.
pub fn psql_load(database: &str, sql: &[u8]) {
    use std::io::Write as _;
    let pg = pg();
    let mut child = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"])
        .env("PGHOST", &pg.socket_dir)
        .env("PGPORT", pg.port.to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", database)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql runs");
    let mut stdin = child.stdin.take().unwrap();
    let sql = sql.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&sql));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One backup as the CLI runs it: bucket checks and integrity probe, then the backup.
pub async fn backup(
    config: &Config,
    store: &Arc<S3Store>,
    signer: Option<&ManifestSigner>,
    progress: &Progress,
) -> Result<BackupReport, Error> {
    let policy = WritePolicy::prepare(&**store, &config.s3).await?;
    let cancel = tokio_util::sync::CancellationToken::new();
    backup_postgres(
        config,
        Arc::clone(store),
        &policy,
        signer,
        progress,
        &cancel,
    )
    .await
}

/// One restore as the CLI runs it, into `database` (created if missing).
pub async fn restore(
    config: &Config,
    store: &Arc<S3Store>,
    snapshot_key: &str,
    database: &str,
) -> Result<RestoreReport, Error> {
    let options = RestoreOptions {
        database: Some(database.to_owned()),
        force: false,
        create: true,
        allow_unsigned: false,
        ..RestoreOptions::default()
    };
    restore::preflight(config, &options)?;
    let verifier = match &config.signing.public_key_file {
        Some(path) => Some(ManifestVerifier::load(path)?),
        None => None,
    };
    let choice = SnapshotChoice::Key(snapshot_key.to_owned());
    let snapshot = restore::resolve_snapshot(&**store, config, Engine::Postgresql, &choice).await?;
    let policy = WritePolicy::prepare(&**store, &config.s3).await?;
    restore::restore_postgres(
        config,
        &**store,
        &policy,
        verifier.as_ref(),
        &snapshot,
        &options,
    )
    .await
}

/// A key pair in `dir`; returns (private, public) paths.
pub fn keypair(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    strongroom::signing::keygen(dir).expect("keygen")
}

/// User tables of `database`, as `schema.table`.
pub async fn tables_of(database: &str) -> Vec<String> {
    let client = admin(database).await;
    strongroom::engine::postgres::user_tables(&client, database)
        .await
        .unwrap()
}

/// The tables and partitioned tables of `database` that no `ANALYZE` by hand has analyzed
/// (autovacuum's own count for nothing, and it never analyzes a partitioned table), sorted.
pub async fn unanalyzed(database: &str) -> Vec<String> {
    admin(database)
        .await
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid \
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname !~ '^pg_' \
               AND CASE c.relkind WHEN 'p' THEN NOT EXISTS \
                   (SELECT 1 FROM pg_statistic st WHERE st.starelid = c.oid) \
                   ELSE s.last_analyze IS NULL END \
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Content a faithful restore must reproduce exactly: several schemas, quoted identifiers with
/// embedded quotes, unicode, large text and bytea values, sequences with advanced values,
/// views, a materialized view, a function, comments, an empty table, `storage_records`.
pub async fn load_awkward(db: &tokio_postgres::Client) {
    db.batch_execute(
        r#"
        CREATE SCHEMA billing;
        CREATE SCHEMA "Ünïcode Schema";
        CREATE TABLE public.storage_records (
            id bigserial PRIMARY KEY,
            body text NOT NULL,
            meta jsonb,
            blob bytea,
            created timestamptz NOT NULL DEFAULT '2026-01-01T00:00:00Z'
        );
        COMMENT ON TABLE public.storage_records IS 'the application''s records';
        INSERT INTO public.storage_records (body, meta, blob)
            SELECT 'record ' || i || ' — ünïcødé ✓ ' || md5(i::text),
                   jsonb_build_object('i', i, 'nested', jsonb_build_object('k', 'v' || i)),
                   decode(md5(i::text), 'hex')
            FROM generate_series(1, 2000) AS i;
        INSERT INTO public.storage_records (body, blob)
            SELECT string_agg(md5(i::text), ' '), NULL FROM generate_series(1, 130000) AS i;
        INSERT INTO public.storage_records (body, blob)
            SELECT 'large bytea', string_agg(decode(md5(i::text), 'hex'), ''::bytea)
            FROM generate_series(1, 120000) AS i;
        CREATE TABLE "Ünïcode Schema"."Mixed Case ""Quoted"" Table" (k text PRIMARY KEY, v text);
        INSERT INTO "Ünïcode Schema"."Mixed Case ""Quoted"" Table" VALUES
            ('ключ', 'значение 🚀'), (E'tab	here
newline', E'back\slash'),
            ('quote''s', '"double"'), ('empty', ''), ('null', NULL);
        CREATE SEQUENCE billing.invoice_seq START 1000;
        SELECT setval('billing.invoice_seq', 4242);
        CREATE TABLE billing.invoices (
            id int PRIMARY KEY DEFAULT nextval('billing.invoice_seq'),
            amount numeric(12,2) NOT NULL,
            note text
        );
        INSERT INTO billing.invoices (amount, note)
            SELECT i * 1.25, CASE WHEN i % 3 = 0 THEN NULL ELSE 'note ' || i END
            FROM generate_series(1, 777) AS i;
        CREATE VIEW billing.totals AS SELECT count(*) AS n, sum(amount) AS total FROM billing.invoices;
        CREATE MATERIALIZED VIEW billing.totals_snapshot AS SELECT * FROM billing.totals;
        CREATE FUNCTION public.double_it(x int) RETURNS int LANGUAGE sql AS 'SELECT x * 2';
        CREATE TABLE public.empty_table (x int);
        "#,
    )
    .await
    .expect("awkward data loads");
}

/// A stand-in for the application the smoke checks call: answers 503 until `ready_after` has
/// passed since its first request (an application still starting), then `GET /health` -> `{"status":"ok"}` and
/// `POST /map` with `{"input": X}` -> `{"output": X upper-cased}`. Returns its base URL.
pub async fn start_fake_app(ready_after: std::time::Duration) -> String {
    use http_body_util::{BodyExt as _, Full};
    use hyper::{Request, Response, body::Incoming};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let first_request = Arc::new(std::sync::OnceLock::<std::time::Instant>::new());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let first_request = Arc::clone(&first_request);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let started = *first_request.get_or_init(std::time::Instant::now);
                    async move {
                        let reply = |status: u16, body: String| {
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(bytes::Bytes::from(body)))
                                    .unwrap(),
                            )
                        };
                        if started.elapsed() < ready_after {
                            return reply(503, "starting".into());
                        }
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        match (parts.method.as_str(), parts.uri.path()) {
                            ("GET", "/health") => reply(200, r#"{"status":"ok"}"#.into()),
                            ("POST", "/map") => {
                                let input: serde_json::Value =
                                    serde_json::from_slice(&body).unwrap_or_default();
                                let out = input["input"].as_str().unwrap_or("").to_uppercase();
                                reply(200, serde_json::json!({"output": out, "ms": 1}).to_string())
                            }
                            _ => reply(404, "not found".into()),
                        }
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    url
}

/// What a planted manifest says of its dump's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The original dump's SHA-256 and size: only the bytes are wrong.
    Original,
    /// The planted bytes' own SHA-256 and size: a consistent backup by whoever holds the
    /// writer role.
    Planted,
    /// The original dump's SHA-256, size and section index: only the bytes are wrong.
    OriginalIndexed,
}

/// Plants a backup as a writer with the agent's S3 role could: `days_later` than the backup of
/// dump `key`, with `bytes` as its dump and a copy of the original manifest that pins them and
/// makes `claim` about them, signed by `signer` if given. Returns the planted dump's key.
pub async fn plant_backup(
    store: &S3Store,
    config: &Config,
    key: &str,
    bytes: Vec<u8>,
    claim: Claim,
    signer: Option<&ManifestSigner>,
    days_later: i64,
) -> String {
    plant_backup_with(store, config, key, bytes, claim, signer, days_later, |_| {}).await
}

/// [`plant_backup`] of a backup whose signed manifest claims the original dump's hash and size
/// (so, wherever `bytes` differ, only the bytes are wrong) and has no section index, as an
/// agent before manifest format 3 wrote it.
pub async fn plant_signed_original(
    store: &S3Store,
    config: &Config,
    key: &str,
    bytes: Vec<u8>,
    signer: &ManifestSigner,
    days_later: i64,
) -> String {
    plant_backup(
        store,
        config,
        key,
        bytes,
        Claim::Original,
        Some(signer),
        days_later,
    )
    .await
}

/// [`plant_backup`], with `edit` applied to the manifest before it is signed and written.
#[allow(clippy::too_many_arguments)]
pub async fn plant_backup_with(
    store: &S3Store,
    config: &Config,
    key: &str,
    bytes: Vec<u8>,
    claim: Claim,
    signer: Option<&ManifestSigner>,
    days_later: i64,
    edit: impl FnOnce(&mut strongroom::manifest::Manifest),
) -> String {
    use strongroom::store::{Integrity, ObjectStore, PartChecksum};
    let codec = strongroom::layout::Codec::of_dump(key).expect("a dump key");
    let manifest_key = key.replace(codec.dump_suffix(), ".manifest.json");
    let original = download(store.client(), store.bucket(), &manifest_key, None).await;
    let mut manifest =
        strongroom::manifest::Manifest::from_bytes(&manifest_key, &original).unwrap();
    let later = manifest.started_at + time::Duration::days(days_later);
    let ts = strongroom::layout::Timestamp::new(later);
    let keys = strongroom::layout::postgres_keys(&config.s3.prefix, &config.release, ts, codec);
    let (sha256, size) = {
        use sha2::Digest as _;
        (
            hex::encode(sha2::Sha256::digest(&bytes)),
            bytes.len() as u64,
        )
    };
    let sum = PartChecksum::compute(Integrity::Md5, &bytes);
    let put = store
        .put_object(&keys.dump, bytes::Bytes::from(bytes), sum, None)
        .await
        .unwrap();
    manifest.timestamp = ts.to_string();
    manifest.objects.truncate(1);
    manifest.objects[0].key = keys.dump.clone();
    manifest.objects[0].version_id = put.version_id;
    // Otherwise a planted dump is one gzip stream: no section index (as before the agent
    // wrote one).
    if let Some(pg) = &mut manifest.postgresql
        && claim != Claim::OriginalIndexed
    {
        pg.sections = None;
    }
    if claim == Claim::Planted {
        manifest.objects[0].sha256 = Some(sha256);
        manifest.objects[0].size_bytes = size;
    }
    edit(&mut manifest);
    let bytes = manifest.to_bytes();
    let mut writes = vec![(keys.manifest.clone(), bytes.clone())];
    if let Some(signer) = signer {
        writes.insert(0, (keys.signature.clone(), signer.sign(&bytes).to_bytes()));
    }
    for (k, body) in writes {
        let sum = PartChecksum::compute(Integrity::Md5, &body);
        store
            .put_object(&k, bytes::Bytes::from(body), sum, None)
            .await
            .unwrap();
    }
    keys.dump
}

/// `sql` as a gzip stream.
pub fn gzip(sql: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(sql).unwrap();
    gz.finish().unwrap()
}

/// Runs the agent's binary with `args` and `--config config`, as users run it.
pub fn strongroom(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// A command's stdout and stderr, for messages.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The databases named like the staging databases of restores into `target`.
pub async fn staging_databases(target: &str) -> Vec<String> {
    admin("postgres")
        .await
        .query(
            "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)",
            &[&strongroom::engine::postgres::staging_prefix(target)],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Creates database `name` anew, with `comment` (its quotes doubled).
pub async fn create_database(name: &str, comment: &str) {
    drop_database(name).await;
    let admin = admin("postgres").await;
    // Two statements: CREATE DATABASE cannot run in a batch's implicit transaction.
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "COMMENT ON DATABASE \"{name}\" IS '{}'",
            comment.replace('\'', "''")
        ))
        .await
        .unwrap();
}

/// Creates `databases` and `held` anew, commented as in use, as killed restores or drills
/// leave them; returns a session holding the advisory lock a running restore holds on
/// `held`'s name.
pub async fn plant_leftovers(databases: &[&str], held: &str) -> tokio_postgres::Client {
    for name in databases.iter().chain([&held]) {
        create_database(name, strongroom::restore::abandoned::IN_USE).await;
    }
    let admin = admin("postgres").await;
    admin
        .query_one(
            "SELECT pg_advisory_lock($1)",
            &[&strongroom::restore::abandoned::lock_key(held)],
        )
        .await
        .unwrap();
    admin
}

/// Polls `done` every 20 ms until it says yes; panics after `timeout`, naming `what`.
pub async fn wait_for(
    what: &str,
    timeout: std::time::Duration,
    mut done: impl AsyncFnMut() -> bool,
) {
    let started = std::time::Instant::now();
    while !done().await {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The comment on database `name`, if it has one.
pub async fn database_comment(name: &str) -> Option<String> {
    admin("postgres")
        .await
        .query_one(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0)
}

/// Drops `name` if it exists.
pub async fn drop_database(name: &str) {
    admin("postgres")
        .await
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
}
