//! `strongroom run` as a process, against real servers: scheduled backups and their reports,
//! readiness following PostgreSQL and S3 (each of which it may start without), config reload
//! through a ConfigMap-style symlink swap, the manual trigger, and SIGTERM during a backup.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use strongroom::state::StatusDoc;
use strongroom::store::ObjectStore;

use crate::harness::{self, S3Kind, TestId};
use crate::on_each_s3;

on_each_s3!(
    scheduled_backups_are_reported_everywhere,
    sigterm_during_a_backup_aborts_its_upload,
    a_standby_backs_up_nothing_and_says_why,
    a_held_lock_fails_the_run_in_time_and_the_next_one_works,
    a_stalled_backup_is_cancelled_at_its_deadline,
);

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `strongroom run`, killed if the test ends early.
pub struct Agent {
    child: Child,
    pub addr: String,
    log: PathBuf,
}

impl Agent {
    pub fn start(config: &Path, port: u16, log: PathBuf) -> Agent {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_strongroom"))
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        let agent = Agent {
            child,
            addr: format!("127.0.0.1:{port}"),
            log,
        };
        agent.wait_for("the HTTP endpoints", Duration::from_secs(20), |a| {
            a.request("GET", "/healthz", None).0 == 200
        });
        agent
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A plain HTTP/1.1 request; (status, body). 0 when nothing answers.
    pub fn request(&self, method: &str, path: &str, auth: Option<&str>) -> (u16, String) {
        let Ok(mut stream) = TcpStream::connect(&self.addr) else {
            return (0, String::new());
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let auth = auth.map_or(String::new(), |a| format!("authorization: Bearer {a}\r\n"));
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n"
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return (0, String::new());
        }
        let mut answer = String::new();
        if stream.read_to_string(&mut answer).is_err() {
            return (0, String::new());
        }
        let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        (status, body)
    }

    pub fn status(&self) -> StatusDoc {
        let (code, body) = self.request("GET", "/status", None);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    pub fn wait_for(&self, what: &str, limit: Duration, mut done: impl FnMut(&Agent) -> bool) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if done(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("waited {limit:?} for {what}; agent log:\n{}", self.log());
    }

    /// SIGTERM, then the exit status (within `limit`).
    pub fn terminate(mut self, limit: Duration) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > limit {
                panic!(
                    "the agent did not exit within {limit:?} of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn last_success(&self) -> Option<String> {
        self.status()
            .engines
            .values()
            .next()?
            .last_success
            .clone()?
            .key
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config file for `id` whose daemon listens on `port`; `pg` and `daemon` lines are added
/// to those sections.
fn daemon_config(
    id: &TestId,
    bucket: &str,
    dir: &Path,
    port: u16,
    pg: &str,
    daemon: &str,
) -> PathBuf {
    let yaml = format!(
        "{}daemon:\n  listen: 127.0.0.1:{port}\n  readiness_interval_seconds: 1\n  \
         s3_check_interval_seconds: 1\n  retry_initial_seconds: 1\n  retry_max_seconds: 2\n  \
         shutdown_grace_seconds: 1\n{daemon}",
        harness::config_yaml(id, bucket, "", pg)
    );
    let path = dir.join("agent.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

async fn scheduled_backups_are_reported_everywhere(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    harness::load_sample(&db).await;
    let (bucket, store) = harness::bucket(&id, true).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = daemon_config(
        &id,
        &bucket,
        dir.path(),
        port,
        "  schedule: \"*/2 * * * * *\"\n",
        "",
    );
    let agent = Agent::start(&config, port, dir.path().join("agent.log"));

    agent.wait_for("a scheduled backup", Duration::from_secs(60), |a| {
        a.last_success().is_some()
    });
    let key = agent.last_success().unwrap();
    assert_eq!(agent.request("GET", "/healthz", None).0, 200);
    agent.wait_for("readiness", Duration::from_secs(10), |a| {
        a.request("GET", "/readyz", None).0 == 200
    });
    let status = agent.status();
    let pg = status.engines.values().next().unwrap();
    assert_eq!(pg.schedule.as_deref(), Some("*/2 * * * * *"));
    assert!(pg.next_run.is_some());
    assert_eq!(
        pg.last_success.as_ref().unwrap().trigger,
        Some(strongroom::state::Trigger::Schedule)
    );

    let (code, metrics) = agent.request("GET", "/metrics", None);
    assert_eq!(code, 200);
    for needle in [
        "strongroom_backup_last_success_timestamp_seconds{engine=\"postgresql\"} 1",
        "strongroom_backup_runs_total{engine=\"postgresql\",result=\"success\"}",
        "strongroom_backup_size_bytes{engine=\"postgresql\"}",
        "strongroom_ready 1",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }
    assert_eq!(agent.request("GET", "/backup/last?max_age=1h", None).0, 200);
    // No token configured: the trigger is off.
    assert_eq!(
        agent
            .request("POST", "/backup?engine=postgresql", Some("x"))
            .0,
        403
    );

    let url = format!("http://{}", agent.addr);
    let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["status", "--url", &url])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("postgresql") && table.contains("ready"),
        "{table}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["status", "--url", &url, "--max-age", "1ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no successful backup within"));

    assert!(agent.terminate(Duration::from_secs(30)).success());
    // What /status reported is a complete backup in the bucket.
    let manifest = key.replace(".sql.gz", ".manifest.json");
    assert!(
        !store.list_versions(&manifest).await.unwrap().is_empty(),
        "{manifest}"
    );
}

/// Every replica of a StatefulSet gets the sidecar; only the primary's may back up.
async fn a_standby_backs_up_nothing_and_says_why(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    db.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1);")
        .await
        .unwrap();
    let standby = harness::standby();
    standby.wait_for_table(&id.database(), "t").await;
    let (bucket, store) = harness::bucket(&id, true).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = daemon_config(
        &id,
        &bucket,
        dir.path(),
        port,
        "  schedule: \"*/2 * * * * *\"\n",
        "",
    );
    let primary = harness::pg();
    let yaml = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&primary.socket_dir, &standby.socket_dir)
        .replace(
            &format!("port: {}", primary.port),
            &format!("port: {}", standby.port),
        );
    std::fs::write(&config, &yaml).unwrap();
    let agent = Agent::start(&config, port, dir.path().join("agent.log"));
    agent.wait_for("a skipped run", Duration::from_secs(60), |a| {
        a.status()
            .engines
            .values()
            .next()
            .unwrap()
            .last_skip
            .is_some()
    });
    let status = agent.status();
    let pg = status.engines.values().next().unwrap();
    let skip = pg.last_skip.as_ref().unwrap();
    assert!(skip.reason.contains("is a standby"), "{skip:?}");
    assert!(skip.reason.contains("backup_from"), "{skip:?}");
    assert_eq!(
        pg.consecutive_failures, 0,
        "a skip is not a failure: {pg:?}"
    );
    assert!(pg.last_attempt.is_none(), "{pg:?}");
    let (_, metrics) = agent.request("GET", "/metrics", None);
    assert!(
        metrics
            .contains("strongroom_backup_skipped_total{engine=\"postgresql\",reason=\"standby\"} "),
        "{metrics}"
    );
    assert!(agent.terminate(Duration::from_secs(30)).success());
    let written = store.list_versions("").await.unwrap();
    assert!(
        written.iter().all(|v| !v.key.contains("/postgresql/")),
        "a standby wrote backup objects: {written:?}"
    );

    // Run by hand, it says why and exits 4; with backup_from: any it backs up the standby.
    let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["backup", "--engine", "postgresql", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let any = yaml.replace("postgresql:\n", "postgresql:\n  backup_from: any\n");
    std::fs::write(&config, any).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["backup", "--engine", "postgresql", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A pg_dump that hangs after `limit` bytes, like one blocked behind a lock (shorter output,
/// such as `--version`, passes through).
pub fn stalling_pg_dump(dir: &Path, limit: usize) -> PathBuf {
    let path = dir.join("stalling-pg_dump");
    std::fs::write(
        &path,
        format!(
            "#!/usr/bin/env python3\nimport subprocess, sys, time\n\
             p = subprocess.Popen(['pg_dump'] + sys.argv[1:], stdout=subprocess.PIPE)\n\
             out, sent = sys.stdout.buffer, 0\n\
             while sent < {limit}:\n    b = p.stdout.read(65536)\n    if not b:\n\
             \x20       sys.exit(p.wait())\n    out.write(b)\n    sent += len(b)\n\
             out.flush()\ntime.sleep(600)\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

async fn sigterm_during_a_backup_aborts_its_upload(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    db.batch_execute(
        "CREATE TABLE big AS SELECT i, md5(i::text) || md5((i * 3)::text) AS v \
         FROM generate_series(1, 400000) i",
    )
    .await
    .unwrap();
    let (bucket, store) = harness::bucket(&id, true).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "let-me-in\n").unwrap();
    let pg_dump = stalling_pg_dump(dir.path(), 20_000_000);
    let port = free_port();
    let config = daemon_config(
        &id,
        &bucket,
        dir.path(),
        port,
        &format!("  pg_dump: {}\n", pg_dump.display()),
        &format!("  trigger_token_file: {}\n", token.display()),
    );
    let agent = Agent::start(&config, port, dir.path().join("agent.log"));
    assert_eq!(
        agent.request("POST", "/backup?engine=postgresql", None).0,
        401
    );
    assert_eq!(
        agent
            .request("POST", "/backup?engine=postgresql", Some("wrong"))
            .0,
        401
    );
    assert_eq!(
        agent
            .request("POST", "/backup?engine=postgresql", Some("let-me-in"))
            .0,
        202
    );
    agent.wait_for("parts uploaded", Duration::from_secs(60), |a| {
        a.status()
            .engines
            .values()
            .next()
            .and_then(|e| e.running.as_ref())
            .is_some_and(|r| r.bytes_uploaded > 0)
    });
    assert_eq!(
        agent
            .request("POST", "/backup?engine=postgresql", Some("let-me-in"))
            .0,
        409
    );

    let log = agent.log.clone();
    let started = Instant::now();
    let exit = agent.terminate(Duration::from_secs(30));
    let log = std::fs::read_to_string(log).unwrap();
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(started.elapsed() < Duration::from_secs(10), "{log}");
    assert!(log.contains("grace period ran out"), "{log}");
    assert!(log.contains("multipart upload aborted"), "{log}");

    let folder = format!("backups/{}/postgresql/", id.test.replace('_', "-"));
    assert!(
        store.list_versions(&folder).await.unwrap().is_empty(),
        "no object, no manifest"
    );
    let uploads = store
        .client()
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(
        uploads
            .uploads()
            .iter()
            .all(|u| !u.key().unwrap_or_default().starts_with(&folder)),
        "{:?}",
        uploads.uploads()
    );
}

/// The multipart uploads still open under `folder`.
async fn open_uploads(store: &strongroom::store::s3::S3Store, folder: &str) -> Vec<String> {
    let uploads = store
        .client()
        .list_multipart_uploads()
        .bucket(store.bucket())
        .send()
        .await
        .unwrap();
    uploads
        .uploads()
        .iter()
        .filter_map(|u| u.key())
        .filter(|k| k.starts_with(folder))
        .map(str::to_owned)
        .collect()
}

/// A migration's ACCESS EXCLUSIVE lock must not wedge the schedule.
async fn a_held_lock_fails_the_run_in_time_and_the_next_one_works(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    db.batch_execute("CREATE TABLE free (x int); CREATE TABLE locked (x int);")
        .await
        .unwrap();
    let (bucket, store) = harness::bucket(&id, true).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = daemon_config(
        &id,
        &bucket,
        dir.path(),
        port,
        "  schedule: \"*/3 * * * * *\"\n  lock_wait_timeout_seconds: 2\n",
        "",
    );
    // The lock is held in an open transaction for as long as `migration` lives.
    let migration = harness::admin(&id.database()).await;
    migration
        .batch_execute("BEGIN; LOCK TABLE public.locked IN ACCESS EXCLUSIVE MODE;")
        .await
        .unwrap();
    let agent = Agent::start(&config, port, dir.path().join("agent.log"));
    agent.wait_for(
        "a run that failed on the lock",
        Duration::from_secs(60),
        |a| {
            a.status()
                .engines
                .values()
                .next()
                .is_some_and(|e| e.consecutive_failures > 0)
        },
    );
    let status = agent.status();
    let pg = status.engines.values().next().unwrap();
    let attempt = pg.last_attempt.as_ref().unwrap();
    let error = attempt.error.clone().unwrap();
    assert!(error.contains("lock_wait_timeout_seconds (2 s)"), "{error}");
    assert!(
        error.contains("lock on public.locked"),
        "names the table it waited for: {error}"
    );
    assert!(
        attempt.duration_seconds < 20.0,
        "failed within the lock timeout, not much later: {attempt:?}"
    );
    let folder = format!("backups/{}/postgresql/", id.test.replace('_', "-"));
    assert!(open_uploads(&store, &folder).await.is_empty());
    // The migration commits: the next scheduled run (or retry) backs up.
    migration.batch_execute("COMMIT").await.unwrap();
    agent.wait_for(
        "a backup after the lock was released",
        Duration::from_secs(60),
        |a| a.last_success().is_some(),
    );
    assert!(agent.terminate(Duration::from_secs(30)).success());
}

async fn a_stalled_backup_is_cancelled_at_its_deadline(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    db.batch_execute(
        "CREATE TABLE big AS SELECT i, md5(i::text) || md5((i * 3)::text) AS v \
         FROM generate_series(1, 200000) i",
    )
    .await
    .unwrap();
    let (bucket, store) = harness::bucket(&id, true).await;
    let dir = tempfile::tempdir().unwrap();
    let pg_dump = stalling_pg_dump(dir.path(), 1_000_000);
    let config = daemon_config(
        &id,
        &bucket,
        dir.path(),
        free_port(),
        &format!(
            "  pg_dump: {}\n  backup_timeout_seconds: 3\n",
            pg_dump.display()
        ),
        "",
    );
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["backup", "--engine", "postgresql", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("ran longer than postgresql.backup_timeout_seconds (3 s)"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "{text}");
    let folder = format!("backups/{}/postgresql/", id.test.replace('_', "-"));
    assert!(
        store.list_versions(&folder).await.unwrap().is_empty(),
        "no object, no manifest"
    );
    assert!(open_uploads(&store, &folder).await.is_empty());
}

/// A PostgreSQL of this test's own, which it may stop and start.
struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnPostgres {
    pub fn start() -> OwnPostgres {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/harness/postgres.sh");
        let out = Command::new(script)
            .arg(dir.path().join("pg"))
            .arg(port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "postgres.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        OwnPostgres { dir, port }
    }

    fn pg_ctl(&self, action: &str) {
        let bindir = String::from_utf8(
            Command::new("pg_config")
                .arg("--bindir")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let data = self.dir.path().join("pg/data");
        let command = format!(
            "'{}/pg_ctl' -D '{}' -w -m fast -l '{}' {action}",
            bindir.trim(),
            data.display(),
            self.dir.path().join("pg/server.log").display()
        );
        let out = if nix::unistd::geteuid().is_root() {
            Command::new("su")
                .args(["postgres", "-s", "/bin/bash", "-c", &command])
                .output()
        } else {
            Command::new("bash").args(["-c", &command]).output()
        }
        .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("pg/socket")
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("pg/data");
        if data.join("postmaster.pid").exists() {
            let _ = std::panic::catch_unwind(|| self.pg_ctl("stop"));
        }
    }
}

/// A moto server of this test's own, started when the test wants S3 to appear.
struct OwnMoto {
    _dir: tempfile::TempDir,
    pid: u32,
}

impl OwnMoto {
    pub fn start(port: u16) -> OwnMoto {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/harness/moto.sh");
        let out = Command::new(script)
            .arg(dir.path())
            .arg(port.to_string())
            .arg(harness::env("STRONGROOM_TEST_VENV"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "moto.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid = std::fs::read_to_string(dir.path().join("moto.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        OwnMoto { _dir: dir, pid }
    }
}

impl Drop for OwnMoto {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

/// A parallel restore with `--create` into the sidecar's database: until its staging
/// database takes the name, the database does not exist, and `/readyz` says that a restore is
/// in progress (seen from the `postgres` database); once the restore's session is gone, that
/// the database is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_sees_a_restore_creating_its_database() {
    tokio::time::timeout(harness::TEST_TIMEOUT, async {
        let id = TestId {
            test: "readiness_sees_a_restore_creating_its_database",
            s3: harness::S3Kind::Rgw,
        };
        let target = id.database();
        harness::drop_database(&target).await;
        let staging = format!(
            "{}20261206t000000z_abcd",
            strongroom::engine::postgres::staging_prefix(&target)
        );
        let restore = harness::fresh_database(&staging).await;
        restore
            .batch_execute("SET application_name = 'strongroom-psql'")
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = daemon_config(&id, "unused", dir.path(), port, "", "");
        let agent = Agent::start(&config, port, dir.path().join("agent.log"));
        agent.wait_for(
            "readiness held by the restore",
            Duration::from_secs(30),
            |a| {
                let (code, body) = a.request("GET", "/readyz", None);
                code == 503 && body.contains("a restore into this database is in progress")
            },
        );
        drop(restore);
        agent.wait_for("the missing database", Duration::from_secs(30), |a| {
            let (code, body) = a.request("GET", "/readyz", None);
            code == 503 && body.contains("does not exist") && !body.contains("in progress")
        });
        harness::drop_database(&staging).await;
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_waits_for_its_dependencies_and_recovers() {
    tokio::time::timeout(harness::TEST_TIMEOUT, waits_and_recovers())
        .await
        .expect("timed out");
}

async fn waits_and_recovers() {
    let pg = OwnPostgres::start();
    let admin = |sql: &str| {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .env("PGHOST", pg.socket())
            .env("PGPORT", pg.port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    admin("CREATE TABLE storage_records AS SELECT i FROM generate_series(1, 100) i");
    let s3_port = free_port();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "release: recovery\ns3:\n  bucket: recovery-bucket\n  prefix: backups/recovery\n  \
             endpoint: http://127.0.0.1:{s3_port}\n  part_size_mib: 5\n  max_attempts: 2\npostgresql:\n  host: {}\n  \
             port: {}\n  user: strongroom_backup\n  database: postgres\n  password_file: {}\n  \
             schedule: \"*/2 * * * * *\"\ndaemon:\n  listen: 127.0.0.1:{port}\n  \
             readiness_interval_seconds: 1\n  s3_check_interval_seconds: 1\n  \
             retry_initial_seconds: 1\n  retry_max_seconds: 2\nlog:\n  format: text\n",
            pg.socket().display(),
            pg.port,
            pg.dir.path().join("pg/backup-password").display()
        ),
    )
    .unwrap();

    // No S3 at all: the agent stays up, and its runs fail. By default the database stays
    // Ready (the bucket's outage is reported, not inflicted on the database's Service).
    let agent = Agent::start(&config, port, dir.path().join("agent.log"));
    agent.wait_for("a failed attempt", Duration::from_secs(30), |a| {
        a.status()
            .engines
            .values()
            .next()
            .is_some_and(|e| e.consecutive_failures > 0)
    });
    assert_eq!(agent.request("GET", "/healthz", None).0, 200);
    agent.wait_for("readiness without S3", Duration::from_secs(15), |a| {
        a.request("GET", "/readyz", None).0 == 200
    });
    let status = agent.status();
    assert!(!status.s3.ok, "{:?}", status.s3);
    let (_, metrics) = agent.request("GET", "/metrics", None);
    assert!(
        metrics.contains("strongroom_dependency_up{dependency=\"s3\"} 0"),
        "{metrics}"
    );
    drop(agent);
    // With daemon.ready_requires_s3, the bucket gates readiness and /readyz says why.
    let gated = std::fs::read_to_string(&config)
        .unwrap()
        .replace("daemon:\n", "daemon:\n  ready_requires_s3: true\n");
    std::fs::write(&config, gated).unwrap();
    let agent = Agent::start(&config, port, dir.path().join("agent-gated.log"));
    agent.wait_for("the S3 check", Duration::from_secs(15), |a| {
        let (code, body) = a.request("GET", "/readyz", None);
        code == 503 && body.contains("s3:")
    });

    // S3 appears: ready, and a backup succeeds.
    let _moto = OwnMoto::start(s3_port);
    let yaml = format!(
        "release: r\ns3:\n  bucket: recovery-bucket\n  endpoint: http://127.0.0.1:{s3_port}\n"
    );
    let store = strongroom::store::s3::S3Store::connect(&harness::config(&yaml).s3).await;
    store
        .client()
        .create_bucket()
        .bucket("recovery-bucket")
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    agent.wait_for("readiness with S3", Duration::from_secs(30), |a| {
        a.request("GET", "/readyz", None).0 == 200
    });
    agent.wait_for("a backup after S3 appeared", Duration::from_secs(30), |a| {
        a.last_success().is_some()
    });

    // PostgreSQL stops: not ready, still alive.
    pg.pg_ctl("stop");
    agent.wait_for(
        "not ready without PostgreSQL",
        Duration::from_secs(15),
        |a| {
            let (code, body) = a.request("GET", "/readyz", None);
            code == 503 && body.contains("database:")
        },
    );
    assert_eq!(agent.request("GET", "/healthz", None).0, 200);
    let before = agent.last_success();

    // PostgreSQL is back: ready again, and the next backup succeeds.
    pg.pg_ctl("start");
    agent.wait_for("ready again", Duration::from_secs(15), |a| {
        a.request("GET", "/readyz", None).0 == 200
    });
    agent.wait_for(
        "a backup after PostgreSQL returned",
        Duration::from_secs(30),
        |a| {
            let status = a.status();
            let e = status.engines.values().next().unwrap();
            let latest = e.last_success.as_ref().and_then(|s| s.key.clone());
            latest.is_some()
                && latest != before
                && e.last_attempt.as_ref().is_some_and(|l| l.success)
        },
    );
    assert!(agent.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reload_follows_a_configmap_symlink_swap() {
    tokio::time::timeout(harness::TEST_TIMEOUT, reload_through_symlink_swap())
        .await
        .expect("timed out");
}

async fn reload_through_symlink_swap() {
    let id = TestId {
        test: "config_reload_follows_a_configmap_symlink_swap",
        s3: S3Kind::Moto,
    };
    let db = harness::fresh_database(&id.database()).await;
    harness::load_sample(&db).await;
    let (bucket, _store) = harness::bucket(&id, true).await;
    let port = free_port();
    // The layout kubelet gives a ConfigMap volume: config.yaml -> ..data/config.yaml, with
    // ..data a symlink to a timestamped directory that an update replaces atomically.
    let mount = tempfile::tempdir().unwrap();
    let version = |name: &str, schedule: &str| {
        let scratch = tempfile::tempdir().unwrap();
        let file = daemon_config(
            &id,
            &bucket,
            scratch.path(),
            port,
            &format!("  schedule: \"{schedule}\"\n"),
            "",
        );
        let dir = mount.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(file, dir.join("config.yaml")).unwrap();
    };
    let swap_to = |name: &str| {
        let tmp = mount.path().join("..data_tmp");
        std::os::unix::fs::symlink(name, &tmp).unwrap();
        std::fs::rename(&tmp, mount.path().join("..data")).unwrap();
    };
    version("..2026_11_23_02_00_00.1", "0 2 * * *");
    std::os::unix::fs::symlink("..2026_11_23_02_00_00.1", mount.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.yaml", mount.path().join("config.yaml")).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        &mount.path().join("config.yaml"),
        port,
        logs.path().join("agent.log"),
    );
    let first = agent.status();
    assert_eq!(
        first.engines.values().next().unwrap().schedule.as_deref(),
        Some("0 2 * * *")
    );

    version("..2026_11_23_02_00_00.2", "*/2 * * * * *");
    swap_to("..2026_11_23_02_00_00.2");
    agent.wait_for("the new schedule", Duration::from_secs(10), |a| {
        a.status()
            .engines
            .values()
            .next()
            .unwrap()
            .schedule
            .as_deref()
            == Some("*/2 * * * * *")
    });
    agent.wait_for(
        "a backup on the new schedule",
        Duration::from_secs(30),
        |a| a.last_success().is_some(),
    );
    let applied = agent.status().config_digest;
    assert_ne!(applied, first.config_digest);

    // An invalid update is refused; the running config stays.
    let broken = mount.path().join("..2026_11_23_02_00_00.3");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(
        broken.join("config.yaml"),
        "release: r\ns3:\n  bucket: b-1\n  bukket: typo\n",
    )
    .unwrap();
    swap_to("..2026_11_23_02_00_00.3");
    agent.wait_for(
        "the refused reload to be counted",
        Duration::from_secs(10),
        |a| {
            a.request("GET", "/metrics", None)
                .1
                .contains("strongroom_config_reloads_total{result=\"failure\"} 1")
        },
    );
    let status = agent.status();
    assert_eq!(status.config_digest, applied);
    assert_eq!(
        status.engines.values().next().unwrap().schedule.as_deref(),
        Some("*/2 * * * * *")
    );
    assert!(
        agent.log().contains("unknown field `bukket`"),
        "{}",
        agent.log()
    );
    assert!(agent.terminate(Duration::from_secs(30)).success());
}
