//! `strongroom drill` as users run it, against real PostgreSQL (and a second, empty cluster)
//! and real S3 servers: a scratch drill that passes against a generous goal and fails against
//! 1 ms while the source stays byte-identical; a drill into a fresh cluster through the
//! backup's globals; replace drills against a small application reading the database, one
//! of them forced to fail so the original is put back; the scratch databases killed drills
//! left dropped by the next drill, a kept one left; locked reports, the audit chain and
//! `drill list`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tokio_postgres::NoTls;

use crate::harness::{self, S3Kind, TestId, env, strongroom, text};
use crate::on_each_s3;

on_each_s3!(scratch_drill_measures_passes_fails_and_leaves_the_source_alone);

fn config_file(id: &TestId, bucket: &str, dir: &Path, pg: &str, extra: &str) -> PathBuf {
    let yaml = format!(
        "{}restore:\n  user: postgres\n  allow_unsigned: true\n  validation:\n    \
         http_timeout_seconds: 10\n    http_interval_seconds: 1\n{extra}",
        harness::config_yaml(id, bucket, "", pg)
    );
    let path = dir.join("agent.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn backup(config: &Path) -> String {
    let out = strongroom(config, &["backup", "--engine", "postgresql", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["key"].as_str().unwrap().to_owned()
}

/// Runs `strongroom drill ARGS --json`; the exit code and the report.
fn drill(config: &Path, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["drill", "--json"];
    all.extend_from_slice(args);
    let out = strongroom(config, &all);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("drill printed no JSON report ({e}): {}", text(&out)));
    (out.status.code().unwrap_or(-1), report, text(&out))
}

/// The databases whose names start like `db`'s and hold `drill` (what drills leave behind).
async fn drill_leftovers(db: &str) -> Vec<String> {
    harness::admin("postgres")
        .await
        .query(
            "SELECT datname::text FROM pg_database WHERE datname LIKE $1",
            &[&format!("{}%drill%", &db[..20])],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A psql that waits 20 s before it runs: a signal lands while the drill's restore loads.
fn slow_psql(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let slow = dir.join("slow-psql");
    std::fs::write(
        &slow,
        "#!/bin/sh\n[ \"$1\" = --version ] && exec psql --version\nsleep 20\nexec psql \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    slow
}

/// Starts `strongroom drill ARGS --json` in the background.
fn spawn_drill(config: &Path, args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["drill", "--json", "--config"])
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGTERM to a running drill; its output once it exited.
fn sigterm(drill: std::process::Child) -> std::process::Output {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(drill.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    drill.wait_with_output().unwrap()
}

/// The test's bucket, and its database (returned: the name) with the sample tables.
async fn sample_source(id: &TestId) -> (String, String) {
    let (bucket, _) = harness::bucket(id, true).await;
    let db = id.database();
    harness::load_sample(&harness::fresh_database(&db).await).await;
    (bucket, db)
}

/// Whether one of the report's cleanup lines says `what`.
fn cleanup_says(report: &Value, what: &str) -> bool {
    report["cleanup"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c.as_str().unwrap().contains(what))
}

async fn database_exists(host: &str, port: u16, name: &str) -> bool {
    harness::database_exists_on(&connect(host, port, "postgres").await, name).await
}

async fn connect(host: &str, port: u16, database: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::Config::new()
        .host(host)
        .port(port)
        .user("postgres")
        .dbname(database)
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {database} on {host}: {e}"));
    tokio::spawn(connection);
    client
}

/// The retention mode the bucket holds for `key`.
async fn lock_mode(store: &strongroom::store::s3::S3Store, bucket: &str, key: &str) -> String {
    // HEAD: moto answers GetObjectRetention with the object's body.
    let out = store
        .client()
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "retention of {key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
    out.object_lock_mode()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default()
}

async fn scratch_drill_measures_passes_fails_and_leaves_the_source_alone(id: TestId) {
    let (bucket, store) = harness::bucket(&id, true).await;
    let db = id.database();
    let client = harness::fresh_database(&db).await;
    let tables = harness::load_sample(&client).await;
    let app = harness::start_fake_app(std::time::Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let smoke = format!(
        "drill:\n  smoke:\n    http:\n      - name: app on the scratch database\n        \
         url: \"{app}/health?database={{database}}\"\n        expect_json: {{status: ok}}\n"
    );
    let config = config_file(&id, &bucket, dir.path(), "", &smoke);
    let key = backup(&config);
    let before = harness::reference_dump(&db);

    let (code, report, out) = drill(&config, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(report["verdict"], "PASS", "{report:#}");
    assert_eq!(report["mode"], "scratch");
    assert_eq!(report["snapshot"], key.as_str());
    let scratch = report["target"].as_str().unwrap().to_owned();
    assert!(
        scratch.starts_with(&db[..20]) && scratch.contains("_drill_"),
        "{scratch}"
    );
    let phases: Vec<&str> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "choose snapshot",
            "download+verify+load",
            "row counts",
            "analyze",
            "validation",
            "smoke checks healthy"
        ]
    );
    let rto = report["rto_seconds"].as_f64().unwrap();
    let rpo = report["rpo_seconds"].as_f64().unwrap();
    assert!(rto > 0.0 && rto < 120.0, "{rto}");
    assert!((0.0..300.0).contains(&rpo), "{rpo}");
    assert_eq!(report["rto_goal_seconds"], 1800.0);
    assert!(report["throughput_mb_per_second"].as_f64().unwrap() > 0.0);
    // Validation ran on the scratch database: every table's count, and the smoke check was
    // called with its name.
    let checks = report["restore"]["checks"].as_array().unwrap();
    for (schema, table, rows) in &tables {
        let name = format!("rows in {schema}.{table}");
        let c = checks.iter().find(|c| c["name"] == name.as_str());
        assert!(
            c.is_some_and(
                |c| c["passed"] == true && c["actual"].as_str() == Some(&*rows.to_string())
            ),
            "{name}: {checks:?}"
        );
    }
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "app on the scratch database" && c["passed"] == true),
        "{checks:?}"
    );
    // Gone afterwards; the source untouched.
    let pg = harness::pg();
    assert!(!database_exists(&pg.socket_dir, pg.port, &scratch).await);
    assert!(
        report["cleanup"][0]
            .as_str()
            .unwrap()
            .contains("was dropped"),
        "{report:#}"
    );
    assert_eq!(harness::reference_dump(&db), before, "the source changed");
    let report_key = report["report_key"].as_str().unwrap().to_owned();
    assert!(
        report_key.starts_with(&format!(
            "backups/{}/drills/postgresql/llama-mapper/",
            id.test.replace('_', "-")
        )) && report_key.ends_with(".json"),
        "{report_key}"
    );
    assert_eq!(lock_mode(&store, &bucket, &report_key).await, "GOVERNANCE");

    // The same drill against a goal of 1 ms fails, says why, and is stored too.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("drill:\n", "drill:\n  rto_goal_seconds: 0.001\n"),
    )
    .unwrap();
    // Two drills in one second would share a key.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (code, failed, out) = drill(&config, &["--production-size-gib", "100"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(failed["verdict"], "FAIL");
    assert!(out.contains("drill FAIL: RTO"), "{out}");
    assert!(out.contains("over the goal of 1ms"), "{out}");
    assert_eq!(failed["projection"]["label"], "projection");
    assert_eq!(failed["projection"]["projected_verdict"], "FAIL");
    let failed_key = failed["report_key"].as_str().unwrap().to_owned();
    assert_eq!(lock_mode(&store, &bucket, &failed_key).await, "GOVERNANCE");
    assert_eq!(harness::reference_dump(&db), before, "the source changed");

    // Both in the history, and in the audit chain, which verifies.
    let out = strongroom(&config, &["drill", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let verdicts: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["drill"]["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["PASS", "FAIL"], "{listed:#}");
    let out = strongroom(&config, &["drill", "list"]);
    let table = text(&out);
    assert!(out.status.success(), "{table}");
    assert!(table.contains("PASS") && table.contains("FAIL"), "{table}");
    assert!(table.contains("projected"), "{table}");
    let out = strongroom(&config, &["audit", "verify", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(audit["events"].as_u64().unwrap() >= 3, "{audit:#}");
    harness::drop_database(&db).await;
}

/// What killed scratch drills left (their scratch database and its staging database) is
/// dropped by the next scratch drill; a database kept with `--keep`, one someone commented and
/// one a running drill holds are left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scratch_drill_drops_what_killed_drills_left_and_keeps_the_rest() {
    let id = TestId {
        test: "drill_leftovers",
        s3: S3Kind::Moto,
    };
    let (bucket, db) = sample_source(&id).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&id, &bucket, dir.path(), "", "");
    backup(&config);
    let (code, report, out) = drill(&config, &["--keep"]);
    assert_eq!(code, 0, "{out}");
    let kept = report["target"].as_str().unwrap().to_owned();
    let comment = harness::database_comment(&kept).await;
    assert_eq!(comment.as_deref(), Some("kept by strongroom drill --keep"));

    let prefix = strongroom::engine::postgres::derived_prefix(&db, "drill");
    let [abandoned, commented, held] = [
        "20260101t000000z_abcd",
        "20260101t000001z_beef",
        "20260101t000002z_cafe",
    ]
    .map(|suffix| format!("{prefix}{suffix}"));
    let abandoned_staging = format!(
        "{}20260101t000003z_dead",
        strongroom::engine::postgres::staging_prefix(&abandoned)
    );
    let admin =
        harness::plant_leftovers(&[&abandoned, &abandoned_staging, &commented], &held).await;
    admin
        .batch_execute(&format!(
            "COMMENT ON DATABASE \"{commented}\" IS 'looking into it'"
        ))
        .await
        .unwrap();

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (code, report, out) = drill(&config, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(report["verdict"], "PASS", "{report:#}");
    for (name, what) in [
        (&abandoned, "the scratch database of an earlier drill"),
        (
            &abandoned_staging,
            "the staging database of an earlier drill's restore",
        ),
    ] {
        assert!(
            cleanup_says(
                &report,
                &format!("dropped {name}, {what}, which was interrupted")
            ),
            "{report:#}"
        );
    }
    let mut left = drill_leftovers(&db).await;
    left.sort();
    let mut want = vec![kept.clone(), commented.clone(), held.clone()];
    want.sort();
    assert_eq!(left, want);
    assert_eq!(
        harness::staging_databases(&abandoned).await,
        Vec::<String>::new()
    );
    drop(admin);
    for name in &want {
        harness::drop_database(name).await;
    }
    harness::drop_database(&db).await;
}

/// A table owned by a role that does not exist on the target cluster.
async fn role_owned_source(db: &str, owner: &str, reader: &str) {
    let client = harness::fresh_database(db).await;
    client
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE \"{owner}\" NOLOGIN; EXCEPTION WHEN duplicate_object THEN \
             NULL; END $$; \
             DO $$ BEGIN CREATE ROLE \"{reader}\" LOGIN CONNECTION LIMIT 7; EXCEPTION WHEN \
             duplicate_object THEN NULL; END $$; \
             GRANT \"{owner}\" TO \"{reader}\"; \
             ALTER ROLE \"{reader}\" SET statement_timeout = '42s'; \
             CREATE SCHEMA owned AUTHORIZATION \"{owner}\"; \
             CREATE TABLE owned.items (id int PRIMARY KEY, name text); \
             ALTER TABLE owned.items OWNER TO \"{owner}\"; \
             INSERT INTO owned.items SELECT i, 'item ' || i FROM generate_series(1, 300) i; \
             GRANT SELECT ON owned.items TO \"{reader}\";"
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_drill_into_an_empty_cluster_creates_the_missing_roles() {
    let id = TestId {
        test: "drill_into_an_empty_cluster",
        s3: S3Kind::Rgw,
    };
    let (bucket, _) = harness::bucket(&id, true).await;
    let db = id.database();
    let (owner, reader) = (format!("{db}_owner"), format!("{db}_reader"));
    role_owned_source(&db, &owner, &reader).await;
    let dir = tempfile::tempdir().unwrap();
    let source = config_file(&id, &bucket, dir.path(), "", "");
    backup(&source);

    // The same backup, restored into the second cluster, where neither role exists.
    let (host, port) = (
        env("STRONGROOM_TEST_PG2_HOST"),
        env("STRONGROOM_TEST_PG2_PORT"),
    );
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let yaml = std::fs::read_to_string(&source)
        .unwrap()
        .replace(&harness::pg().socket_dir, &host)
        .replace(
            &format!("port: {}", harness::pg().port),
            &format!("port: {port}"),
        );
    let fresh = other.join("agent.yaml");
    std::fs::write(&fresh, yaml).unwrap();
    // A plain restore fails there on the missing owner, and commits nothing.
    let plain = format!("{db}_plain");
    let out = strongroom(
        &fresh,
        &[
            "restore",
            "--engine",
            "postgresql",
            "--latest",
            "--create",
            "--database",
            &plain,
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("role \"{owner}\" does not exist")),
        "{}",
        text(&out)
    );
    let port_number: u16 = port.parse().unwrap();
    assert!(
        !database_exists(&host, port_number, &plain).await,
        "the failed restore left its new target behind"
    );

    let (code, report, out) = drill(&fresh, &["--keep"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(report["verdict"], "PASS", "{report:#}");
    let created = &report["restore"]["globals"]["created_roles"];
    assert!(
        created
            .as_array()
            .unwrap()
            .contains(&Value::from(owner.as_str()))
            && created
                .as_array()
                .unwrap()
                .contains(&Value::from(reader.as_str())),
        "{report:#}"
    );
    let port = port_number;
    let scratch = report["target"].as_str().unwrap().to_owned();
    let client = connect(&host, port, &scratch).await;
    let row = client
        .query_one(
            "SELECT tableowner::text, (SELECT count(*) FROM owned.items), \
             has_table_privilege($1, 'owned.items', 'SELECT') \
             FROM pg_tables WHERE schemaname = 'owned' AND tablename = 'items'",
            &[&reader],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), owner);
    assert_eq!(row.get::<_, i64>(1), 300);
    assert!(row.get::<_, bool>(2));
    let role = client
        .query_one(
            "SELECT r.rolcanlogin, r.rolconnlimit, \
             pg_has_role(r.rolname, $2, 'MEMBER'), \
             (SELECT setconfig::text FROM pg_db_role_setting WHERE setrole = r.oid) \
             FROM pg_roles r WHERE r.rolname = $1",
            &[&reader, &owner],
        )
        .await
        .unwrap();
    assert!(
        !role.get::<_, bool>(0),
        "a drill's roles own the data and cannot log in"
    );
    assert_eq!(role.get::<_, i32>(1), 7);
    assert!(role.get::<_, bool>(2), "membership restored");
    assert_eq!(
        role.get::<_, Option<String>>(3).as_deref(),
        Some("{statement_timeout=42s}")
    );
    drop(client);

    // Without --keep, the drill's roles go with its database.
    let admin = connect(&host, port, "postgres").await;
    admin
        .batch_execute(&format!("DROP DATABASE \"{scratch}\" WITH (FORCE)"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("DROP ROLE \"{reader}\"; DROP ROLE \"{owner}\""))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (code, unkept, out) = drill(&fresh, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        unkept["cleanup"][0].as_str().unwrap().contains(&owner),
        "{unkept:#}"
    );
    let roles: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname IN ($1, $2)",
            &[&owner, &reader],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(roles, 0, "the drill's roles were left behind");

    // restore --with-globals recreates them as they were, login included.
    let faithful = format!("{db}_faithful");
    let out = strongroom(
        &fresh,
        &[
            "restore",
            "--engine",
            "postgresql",
            "--latest",
            "--create",
            "--with-globals",
            "--database",
            &faithful,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let row = admin
        .query_one(
            "SELECT rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = $1",
            &[&reader],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, i32>(1), 7);

    // A drill now finds the roles and creates nothing, changing nothing.
    admin
        .batch_execute(&format!("ALTER ROLE \"{reader}\" CONNECTION LIMIT 3"))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (code, again, out) = drill(&fresh, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        again["restore"]["globals"]["created_roles"],
        Value::Array(vec![]),
        "{again:#}"
    );
    let limit: i32 = admin
        .query_one(
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = $1",
            &[&reader],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(limit, 3, "an existing role was altered");
    assert!(!database_exists(&host, port, again["target"].as_str().unwrap()).await);
    harness::drop_database(&db).await;
}

/// A small application reading the database, as the demo's: `GET /health` answers 200 once
/// it can query `database`, `GET /map` returns `{"rows": N}` from `public.storage_records`.
/// Each request opens its own session, as an application's pool would after its sessions
/// were ended.
async fn start_app(database: String) -> String {
    use http_body_util::Full;
    use hyper::{Request, Response, body::Incoming};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let database = Arc::new(database);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let database = Arc::clone(&database);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let database = Arc::clone(&database);
                    async move {
                        let pg = harness::pg();
                        let rows = async {
                            let (client, connection) = tokio_postgres::Config::new()
                                .host(&pg.socket_dir)
                                .port(pg.port)
                                .user("postgres")
                                .dbname(&*database)
                                .connect(NoTls)
                                .await?;
                            tokio::spawn(connection);
                            let row = client
                                .query_one("SELECT count(*) FROM public.storage_records", &[])
                                .await?;
                            Ok::<i64, tokio_postgres::Error>(row.get(0))
                        }
                        .await;
                        let (status, body) = match (req.uri().path(), rows) {
                            ("/health", Ok(_)) => (200, r#"{"status":"ok"}"#.to_owned()),
                            ("/map", Ok(n)) => (200, format!(r#"{{"rows":{n}}}"#)),
                            (_, Err(e)) => (503, format!("database: {e}")),
                            (_, Ok(_)) => (404, "not found".to_owned()),
                        };
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(bytes::Bytes::from(body)))
                                .unwrap(),
                        )
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_drill_measures_api_healthy_and_puts_the_original_back_on_failure() {
    let id = TestId {
        test: "replace_drill",
        s3: S3Kind::Rgw,
    };
    let (bucket, db) = sample_source(&id).await;
    let app = start_app(db.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let validation = format!(
        "    http:\n      - name: health\n        url: {app}/health\n      - name: map\n        \
         url: {app}/map\n        expect_json: {{rows: 5000}}\n"
    );
    let yaml = |sql: &str, drill: &str| {
        format!(
            "{}restore:\n  user: postgres\n  allow_unsigned: true\n  validation:\n    \
             http_timeout_seconds: 10\n    http_interval_seconds: 1\n{validation}{sql}{drill}",
            harness::config_yaml(&id, &bucket, "", "")
        )
    };
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, yaml("", "")).unwrap();
    backup(&config);

    // Not allowed unless the config says so.
    let out = strongroom(&config, &["drill", "--mode", "replace"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(text(&out).contains("drill.allow_replace"), "{}", text(&out));

    // Rows written after the backup: the incident loses them, the renamed original keeps them.
    harness::admin(&db)
        .await
        .batch_execute("INSERT INTO public.storage_records (body) VALUES ('after the backup')")
        .await
        .unwrap();
    let allow = "drill:\n  allow_replace: true\n";
    std::fs::write(&config, yaml("", allow)).unwrap();
    let (code, report, out) = drill(&config, &["--mode", "replace"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(report["verdict"], "PASS", "{report:#}");
    assert_eq!(report["target"], db.as_str());
    let phases: Vec<&str> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases[..2],
        ["choose snapshot", "incident: live database renamed aside"]
    );
    let checks = report["restore"]["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "map" && c["passed"] == true),
        "{checks:?}"
    );
    let healthy = report["healthy_at"].as_str().unwrap();
    assert!(!healthy.is_empty());
    let admin = harness::admin(&db).await;
    let rows: i64 = admin
        .query_one("SELECT count(*) FROM public.storage_records", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 5000, "the live database is the restored backup");
    drop(admin);
    let aside = report["cleanup"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .find_map(|c| c.split("the original is kept as ").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
        .unwrap_or_else(|| panic!("{report:#}"));
    let original = harness::admin(&aside).await;
    let rows: i64 = original
        .query_one("SELECT count(*) FROM public.storage_records", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 5001, "the original was renamed aside, not dropped");
    drop(original);
    harness::drop_database(&aside).await;

    // A forced failure (a validation check that fails) puts the original back.
    let live = harness::admin(&db).await;
    live.batch_execute("INSERT INTO public.storage_records (body) VALUES ('live again')")
        .await
        .unwrap();
    drop(live);
    let before = harness::reference_dump(&db);
    let impossible = "    sql:\n      - name: impossible\n        query: SELECT count(*) FROM \
                      public.storage_records\n        expect: {equals: '-1'}\n";
    std::fs::write(&config, yaml(impossible, allow)).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (code, failed, out) = drill(&config, &["--mode", "replace"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(failed["verdict"], "FAIL", "{failed:#}");
    assert!(out.contains("impossible"), "{out}");
    assert!(cleanup_says(&failed, "renamed back"), "{failed:#}");
    assert_eq!(harness::reference_dump(&db), before, "the original is back");
    // Nothing was dropped: the failed copy is kept aside, and nothing else is left.
    let leftovers: Vec<String> = drill_leftovers(&db).await;
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    assert!(leftovers[0].contains("_drillfailed_"), "{leftovers:?}");
    harness::drop_database(&leftovers[0]).await;
    harness::drop_database(&db).await;
}

/// The sidecar drills on its schedule (every 3 s here), shows the last drill in `/status` and
/// the metrics, and skips a slot while a backup of the engine runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_drills_on_schedule_and_never_while_a_backup_runs() {
    use crate::daemon::{Agent, free_port, stalling_pg_dump};
    use std::time::Duration;
    let id = TestId {
        test: "daemon_drills",
        s3: S3Kind::Rgw,
    };
    let (bucket, _) = harness::bucket(&id, true).await;
    let db = id.database();
    let client = harness::fresh_database(&db).await;
    client
        .batch_execute(
            "CREATE TABLE big AS SELECT i, md5(i::text) || md5((i * 3)::text) AS v \
             FROM generate_series(1, 100000) i",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let token = dir.path().join("token");
    std::fs::write(&token, "let-me-in\n").unwrap();
    let daemon = format!(
        "daemon:\n  listen: 127.0.0.1:{port}\n  readiness_interval_seconds: 1\n  \
         shutdown_grace_seconds: 1\n  trigger_token_file: {}\n\
         drill:\n  enabled: true\n  schedule: '*/3 * * * * *'\n  rto_goal_seconds: 600\n",
        token.display()
    );
    let config = config_file(&id, &bucket, dir.path(), "", &daemon);
    backup(&config);
    // Backups from now on hang after 1 MB, like one blocked behind a lock.
    let pg_dump = stalling_pg_dump(dir.path(), 1_000_000);
    let yaml = std::fs::read_to_string(&config).unwrap().replace(
        "  compression_level: 1\n",
        &format!("  compression_level: 1\n  pg_dump: {}\n", pg_dump.display()),
    );
    std::fs::write(&config, yaml).unwrap();
    let agent = Agent::start(&config, port, dir.path().join("agent.log"));
    agent.wait_for("a scheduled drill", Duration::from_secs(90), |a| {
        a.status()
            .drills
            .get(&strongroom::layout::Engine::Postgresql)
            .and_then(|d| d.last.as_ref())
            .is_some()
    });
    let status = agent.status();
    let drill = &status.drills[&strongroom::layout::Engine::Postgresql];
    let last = drill.last.as_ref().unwrap();
    assert_eq!(
        last.verdict,
        strongroom::drill::Verdict::Pass,
        "{last:?}\n{}",
        agent.log()
    );
    assert_eq!(drill.schedule.as_deref(), Some("*/3 * * * * *"));
    assert!(drill.last_success_at.is_some() && drill.next_run.is_some());
    let (_, metrics) = agent.request("GET", "/metrics", None);
    for line in [
        "strongroom_drill_rto_goal_seconds{engine=\"postgresql\"} 600",
        "strongroom_drill_runs_total{engine=\"postgresql\",result=\"fail\"} 0",
        "strongroom_drill_last_success_timestamp_seconds{engine=\"postgresql\"} ",
        "strongroom_drill_last_rto_seconds{engine=\"postgresql\"} ",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    assert!(
        !metrics.contains("strongroom_drill_runs_total{engine=\"postgresql\",result=\"pass\"} 0"),
        "{metrics}"
    );

    // A backup that does not finish: every slot meanwhile is skipped, none runs.
    let (code, _) = agent.request("POST", "/backup?engine=postgresql", Some("let-me-in"));
    assert_eq!(code, 202);
    agent.wait_for("the backup running", Duration::from_secs(30), |a| {
        a.status()
            .engines
            .values()
            .next()
            .is_some_and(|e| e.running.is_some())
    });
    let runs_before = |a: &Agent| {
        a.status().drills[&strongroom::layout::Engine::Postgresql]
            .last
            .as_ref()
            .map(|l| l.incident_start)
    };
    let before = runs_before(&agent);
    agent.wait_for("a skipped drill", Duration::from_secs(30), |a| {
        a.status().drills[&strongroom::layout::Engine::Postgresql]
            .last_skip
            .as_ref()
            .is_some_and(|s| s.reason.contains("backup"))
    });
    for _ in 0..20 {
        let d = &agent.status().drills[&strongroom::layout::Engine::Postgresql];
        assert!(!d.running, "a drill runs during the backup");
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = agent.status();
    assert!(
        status.engines.values().next().unwrap().running.is_some(),
        "the backup still runs"
    );
    assert_eq!(runs_before(&agent), before, "a drill ran during the backup");
    let (_, metrics) = agent.request("GET", "/metrics", None);
    assert!(
        metrics.contains("strongroom_drill_skipped_total{engine=\"postgresql\"} "),
        "{metrics}"
    );
    drop(agent);
    harness::drop_database(&db).await;
}

/// A running scratch drill holds its scratch database and that database's staging database:
/// another drill's sweep leaves them. SIGTERM then stops it with both dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_scratch_drill_is_left_alone_and_sigterm_drops_its_databases() {
    let id = TestId {
        test: "running_drill",
        s3: S3Kind::Moto,
    };
    let (bucket, db) = sample_source(&id).await;
    let dir = tempfile::tempdir().unwrap();
    let slow = slow_psql(dir.path());
    let config = config_file(&id, &bucket, dir.path(), "", "");
    backup(&config);
    let yaml = std::fs::read_to_string(&config).unwrap().replace(
        "restore:\n  user: postgres\n",
        &format!("restore:\n  user: postgres\n  psql: {}\n", slow.display()),
    );
    std::fs::write(&config, &yaml).unwrap();
    let child = spawn_drill(&config, &[]);
    let prefix = strongroom::engine::postgres::derived_prefix(&db, "drill");
    let scratch = async || {
        harness::admin("postgres")
            .await
            .query(
                "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)",
                &[&prefix],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    harness::wait_for(
        "the drill's scratch database and its staging database",
        std::time::Duration::from_secs(10),
        async || match scratch().await.as_slice() {
            [one] => !harness::staging_databases(one).await.is_empty(),
            _ => false,
        },
    )
    .await;
    let [scratch_db] = <[String; 1]>::try_from(scratch().await).unwrap();
    let staging = harness::staging_databases(&scratch_db).await;

    let loaded = harness::config(&yaml);
    let maintenance = loaded
        .postgresql()
        .unwrap()
        .restore_params(&loaded.restore, "postgres")
        .unwrap();
    use strongroom::restore::abandoned::sweep;
    let own_staging = strongroom::engine::postgres::staging_prefix(&scratch_db);
    for prefix in [&prefix, &own_staging] {
        let swept = sweep(&maintenance, prefix, "a database of a running drill").await;
        assert!(swept.said.is_empty(), "{:?}", swept.said);
    }
    assert_eq!(scratch().await, std::slice::from_ref(&scratch_db));
    assert_eq!(harness::staging_databases(&scratch_db).await, staging);

    let out = sigterm(child);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("interrupted by SIGTERM"),
        "{}",
        text(&out)
    );
    assert_eq!(scratch().await, Vec::<String>::new());
    assert_eq!(
        harness::staging_databases(&scratch_db).await,
        Vec::<String>::new()
    );
    harness::drop_database(&db).await;
}

/// SIGTERM during a replace drill's restore (a Job's deadline, a deleted pod): the restore is
/// stopped, nothing commits, its staging database is dropped, and the original is renamed back
/// before the agent exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replace_drill_interrupted_by_sigterm_puts_the_original_back() {
    let id = TestId {
        test: "interrupted_drill",
        s3: S3Kind::Rgw,
    };
    let (bucket, db) = sample_source(&id).await;
    let dir = tempfile::tempdir().unwrap();
    let slow = slow_psql(dir.path());
    let config = config_file(&id, &bucket, dir.path(), "", "");
    backup(&config);
    let before = harness::reference_dump(&db);
    let yaml = format!(
        "{}restore:\n  user: postgres\n  allow_unsigned: true\n  psql: {}\n  validation:\n    \
         http:\n      - name: health\n        url: http://127.0.0.1:9/health\n\
         drill:\n  allow_replace: true\n",
        harness::config_yaml(&id, &bucket, "", ""),
        slow.display()
    );
    std::fs::write(&config, yaml).unwrap();
    let child = spawn_drill(&config, &["--mode", "replace"]);
    let aside_pattern = format!("{}%predrill%", &db[..20]);
    harness::wait_for(
        "the live database to be renamed aside",
        std::time::Duration::from_secs(10),
        async || {
            !harness::admin("postgres")
                .await
                .query(
                    "SELECT 1 FROM pg_database WHERE datname LIKE $1",
                    &[&aside_pattern],
                )
                .await
                .unwrap()
                .is_empty()
        },
    )
    .await;
    // The parallel restore's staging database exists: the signal lands while it loads.
    harness::wait_for(
        "the restore's staging database",
        std::time::Duration::from_secs(10),
        async || !harness::staging_databases(&db).await.is_empty(),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let out = sigterm(child);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        text(&out).contains("interrupted by SIGTERM"),
        "{}",
        text(&out)
    );
    assert!(cleanup_says(&report, "renamed back"), "{report:#}");
    assert_eq!(harness::reference_dump(&db), before, "the original is back");
    assert_eq!(
        harness::staging_databases(&db).await,
        Vec::<String>::new(),
        "the stopped restore's staging database was dropped"
    );
    let left: Vec<String> = drill_leftovers(&db).await;
    assert!(left.iter().all(|d| d.contains("_drillfailed_")), "{left:?}");
    for d in &left {
        harness::drop_database(d).await;
    }
    harness::drop_database(&db).await;
}
