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
use strongroom::locked_write::WritePolicy;
use strongroom::pipeline::Progress;
use strongroom::signing::ManifestSigner;
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

    /// The test's own database name.
    pub fn database(&self) -> String {
        let mut name = format!("t_{}_{}", self.test, self.s3.name());
        name.truncate(63);
        name
    }
}

/// Runs `$name(TestId)` once per S3 server, as separate tests `$name::rgw` and `$name::moto`.
#[macro_export]
macro_rules! on_each_s3 {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::harness::{S3Kind, TestId};
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rgw() {
                super::$name(TestId { test: stringify!($name), s3: S3Kind::Rgw }).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn moto() {
                super::$name(TestId { test: stringify!($name), s3: S3Kind::Moto }).await
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
    backup_postgres(config, Arc::clone(store), &policy, signer, progress).await
}
