//! What a restore may commit, proven with the agent as users run it (a separate process) against
//! real PostgreSQL and each S3 server: nothing when the agent is killed mid-load (and the next
//! restore drops the staging database the killed one left), nothing when SIGTERM stops it (and
//! it drops its staging database itself before it exits), nothing a planted dump's psql
//! meta-commands could do, and no unsigned backup unless allowed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{self, Claim, TestId, drop_database, strongroom, text};
use crate::on_each_s3;

on_each_s3!(
    killing_the_agent_during_a_copy_commits_nothing,
    killing_the_agent_after_the_dumps_own_commit_commits_nothing,
    sigterm_during_a_copy_stops_the_restore_and_drops_its_staging_database,
    sigterm_during_a_one_session_copy_leaves_the_target_as_it_was,
    a_planted_dump_never_runs_its_meta_commands,
    row_data_in_psqls_errors_stays_out_of_messages_and_the_audit_trail,
);

/// A config file in `dir` restoring as `postgres`, `signing` lines and `restore` lines added.
fn config_file(id: &TestId, bucket: &str, dir: &Path, name: &str, extra: &str) -> PathBuf {
    let yaml = format!(
        "{}restore:\n  user: postgres\n{extra}",
        harness::config_yaml(id, bucket, "", "")
    );
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

fn signing(private: &Path, public: &Path) -> String {
    format!(
        "signing:\n  private_key_file: {}\n  public_key_file: {}\n",
        private.display(),
        public.display()
    )
}

/// Sleeps a little per row, but only in the restore's databases (the target `<db>_killed`, or
/// the staging database a parallel restore loads first), so the fixture itself loads fast and
/// the restore is slow enough to be caught.
const SLOW: &str = "pg_sleep(CASE WHEN current_database() LIKE '%\\_killed' \
     OR current_database() LIKE '%\\_restoring\\_%' THEN 0.0005 ELSE 0 END)";

/// Sessions of the restore's psql in `database` running a statement like `query`.
async fn psql_sessions(database: &str, query: &str) -> i64 {
    harness::admin("postgres")
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE (datname = $1 OR starts_with(datname, $3)) \
             AND application_name = 'strongroom-psql' AND query LIKE $2",
            &[
                &database,
                &query,
                &strongroom::engine::postgres::staging_prefix(database),
            ],
        )
        .await
        .unwrap()
        .get(0)
}

/// A restore the agent was killed (or signalled) in.
struct Killed {
    target: String,
    /// The backup it restored.
    key: String,
    config: PathBuf,
    /// The staging database it was loading (none in one session).
    staging: Vec<String>,
    /// What the agent printed, and how it ended.
    out: std::process::Output,
    _dir: tempfile::TempDir,
}

impl Killed {
    /// `strongroom restore` of the same backup into the same target, as users run it again.
    fn restore_again(&self) -> std::process::Output {
        strongroom(
            &self.config,
            &[
                "restore",
                "--engine",
                "postgresql",
                "--create",
                "--snapshot",
                &self.key,
                "--database",
                &self.target,
            ],
        )
    }
}

/// Where a restore goes: a new database (`--create`, loaded in parallel through a staging
/// database that takes its name), an empty one (the same, the empty one renamed aside and
/// dropped), or with `--force` into one that has a table ([`KEPT`]; loaded in one session).
#[derive(PartialEq)]
enum RestoreInto {
    New,
    Empty,
    HasATable,
}

/// The table the target holds before a `--force` restore (three rows).
const KEPT: &str =
    "CREATE TABLE public.kept (x int); INSERT INTO public.kept VALUES (1), (2), (3);";

/// Backs the fixture up, starts `strongroom restore` into `<db>_killed`, sends the agent (not
/// psql) `signal` once psql runs a statement like `statement`, and waits for the agent to exit
/// and psql's session to end.
async fn signal_the_agent_while(
    id: &TestId,
    fixture: &str,
    statement: &str,
    signal: nix::sys::signal::Signal,
    into: RestoreInto,
) -> Killed {
    let db = harness::fresh_database(&id.database()).await;
    db.batch_execute(fixture).await.expect("fixture loads");
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = harness::keypair(keys.path());
    let (bucket, _store) = harness::bucket(id, true).await;
    let config = config_file(
        id,
        &bucket,
        keys.path(),
        "agent.yaml",
        &signing(&private, &public),
    );
    let out = strongroom(&config, &["backup", "--engine", "postgresql", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = report["key"].as_str().unwrap().to_owned();

    let target = format!("{}_killed", id.database());
    drop_database(&target).await;
    let how = match into {
        RestoreInto::New => "--create",
        RestoreInto::Empty => {
            harness::fresh_database(&target).await;
            "--create"
        }
        RestoreInto::HasATable => {
            harness::fresh_database(&target)
                .await
                .batch_execute(KEPT)
                .await
                .unwrap();
            "--force"
        }
    };
    let agent: Child = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["restore", "--engine", "postgresql", how, "--snapshot", &key])
        .args(["--database", &target, "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    harness::wait_for(
        &format!("psql to run {statement}"),
        Duration::from_secs(120),
        async || psql_sessions(&target, statement).await > 0,
    )
    .await;
    // The running restore holds its staging database: a sweep (another restore's) leaves it.
    let staging = harness::staging_databases(&target).await;
    assert_eq!(
        staging.len(),
        usize::from(into != RestoreInto::HasATable),
        "{staging:?}"
    );
    let loaded = harness::config(&std::fs::read_to_string(&config).unwrap());
    let params = loaded
        .postgresql()
        .unwrap()
        .restore_params(&loaded.restore, &target)
        .unwrap();
    let said = strongroom::restore::staging::sweep_abandoned(&params).await;
    assert_eq!(said, Vec::<String>::new());
    assert_eq!(harness::staging_databases(&target).await, staging);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), signal).unwrap();
    let out = agent.wait_with_output().unwrap();
    harness::wait_for(
        "the restore's psql session to end",
        Duration::from_secs(60),
        async || psql_sessions(&target, "%").await == 0,
    )
    .await;
    Killed {
        target,
        key,
        config,
        staging,
        out,
        _dir: keys,
    }
}

/// A table that loads fast and a slow one of `rows` rows after it: a restore is caught copying
/// the second.
fn slow_copy_fixture(rows: u32) -> String {
    format!(
        "CREATE FUNCTION public.slow_ok(i int) RETURNS boolean LANGUAGE sql IMMUTABLE \
             AS $$ SELECT {SLOW} IS NOT NULL $$;
         CREATE TABLE public.a_early (x int);
         INSERT INTO public.a_early SELECT generate_series(1, 100);
         CREATE TABLE public.b_big (id int CHECK (public.slow_ok(id)), body text);
         INSERT INTO public.b_big SELECT i, repeat('x', 100) FROM generate_series(1, {rows}) i;"
    )
}

async fn killing_the_agent_during_a_copy_commits_nothing(id: TestId) {
    let killed = signal_the_agent_while(
        &id,
        &slow_copy_fixture(10_000),
        "COPY public.b_big%",
        nix::sys::signal::Signal::SIGKILL,
        RestoreInto::New,
    )
    .await;
    assert!(
        !harness::database_exists(&killed.target).await,
        "the new target exists after the kill: a table loaded before it, or part of the one \
         being loaded, may have been committed"
    );
    // The killed restore's staging database is left; the next restore into the target drops
    // it, and says so.
    let left = harness::staging_databases(&killed.target).await;
    assert_eq!(left.len(), 1, "{left:?}");
    let out = killed.restore_again();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("dropped {}, the staging database", left[0])),
        "{}",
        text(&out)
    );
    assert_eq!(
        harness::staging_databases(&killed.target).await,
        Vec::<String>::new()
    );
    assert_eq!(
        harness::tables_of(&killed.target).await.len(),
        2,
        "the restore run again loaded both tables"
    );
}

async fn killing_the_agent_after_the_dumps_own_commit_commits_nothing(id: TestId) {
    // pg_dump wraps large objects in its own BEGIN; ... COMMIT;, before the post-data indexes.
    let fixture = format!(
        "CREATE FUNCTION public.slow_key(i int) RETURNS int LANGUAGE sql IMMUTABLE \
             AS $$ SELECT i + ({SLOW} IS NULL)::int $$;
         CREATE TABLE public.indexed (id int, body text);
         INSERT INTO public.indexed SELECT i, md5(i::text) FROM generate_series(1, 10000) i;
         CREATE INDEX indexed_slow ON public.indexed ((public.slow_key(id)));
         DO $$ BEGIN EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO strongroom_backup',
             lo_from_bytea(0, 'a large object')); END $$;"
    );
    let target = signal_the_agent_while(
        &id,
        &fixture,
        "CREATE INDEX%",
        nix::sys::signal::Signal::SIGKILL,
        RestoreInto::Empty,
    )
    .await
    .target;
    assert_eq!(harness::tables_of(&target).await, Vec::<String>::new());
    let objects: i64 = harness::admin(&target)
        .await
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(objects, 0, "the large object was committed");
}

/// SIGTERM (a Job's deadline, a deleted pod; Ctrl-C sends SIGINT, the same) during the parallel
/// load: the restore stops, commits nothing, drops its staging database itself and says so.
async fn sigterm_during_a_copy_stops_the_restore_and_drops_its_staging_database(id: TestId) {
    let stopped = signal_the_agent_while(
        &id,
        &slow_copy_fixture(10_000),
        "COPY public.b_big%",
        nix::sys::signal::Signal::SIGTERM,
        RestoreInto::New,
    )
    .await;
    let [staging] = stopped.staging.as_slice() else {
        panic!("{:?}", stopped.staging)
    };
    assert_stopped(
        &stopped,
        &format!(" (its staging database {staging} was dropped)"),
    );
    assert_eq!(
        harness::staging_databases(&stopped.target).await,
        Vec::<String>::new(),
        "the stopped restore left its staging database"
    );
    assert!(!harness::database_exists(&stopped.target).await);
}

/// The same in one psql session (`--force` into a database that has a table): psql is killed
/// before the agent wrote its COMMIT, and the target keeps exactly what it had. (Once the
/// COMMIT is written the restore is no longer stopped, as psql may have sent it: the table is
/// made 5 MB of COPY text, more than psql's input pipe holds, so that the signal comes first.)
async fn sigterm_during_a_one_session_copy_leaves_the_target_as_it_was(id: TestId) {
    let stopped = signal_the_agent_while(
        &id,
        &slow_copy_fixture(50_000),
        "COPY public.b_big%",
        nix::sys::signal::Signal::SIGTERM,
        RestoreInto::HasATable,
    )
    .await;
    assert_stopped(&stopped, "");
    let target = &stopped.target;
    assert_eq!(harness::tables_of(target).await, ["public.kept"]);
    let rows: i64 = harness::admin(target)
        .await
        .query_one("SELECT count(*) FROM public.kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 3);
}

/// The agent exited 1 saying that the restore stopped before it committed any data, `staging`
/// (what became of its staging database) and that nothing was loaded into the target.
fn assert_stopped(stopped: &Killed, staging: &str) {
    let (out, target) = (&stopped.out, &stopped.target);
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    let message = format!(
        "the restore into {target} was stopped by a signal (SIGTERM or SIGINT) before it \
         committed any data{staging}: nothing was loaded into {target}; run the restore again"
    );
    assert!(text(out).contains(&message), "{message}\n{}", text(out));
}

async fn a_planted_dump_never_runs_its_meta_commands(id: TestId) {
    let dir = tempfile::tempdir().unwrap();
    let db = harness::fresh_database(&id.database()).await;
    db.batch_execute("CREATE TABLE genuine (x int); INSERT INTO genuine VALUES (1), (2);")
        .await
        .unwrap();
    let (private, public) = harness::keypair(dir.path());
    let (bucket, store) = harness::bucket(&id, true).await;
    let signed = config_file(
        &id,
        &bucket,
        dir.path(),
        "signed.yaml",
        &signing(&private, &public),
    );
    let out = strongroom(&signed, &["backup", "--engine", "postgresql", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let genuine = report["key"].as_str().unwrap().to_owned();

    // Whoever holds the writer role plants a later backup whose manifest matches its dump.
    let marker = dir.path().join("pwned");
    let config = harness::config(&std::fs::read_to_string(&signed).unwrap());
    let at_start = format!(
        "\\! touch {}\nCREATE TABLE planted (x int);\n",
        marker.display()
    );
    let midway = format!(
        "CREATE TABLE planted (x int);\nSELECT 1; \\! touch {}\n",
        marker.display()
    );
    let planted_first = harness::plant_backup(
        &store,
        &config,
        &genuine,
        harness::gzip(at_start.as_bytes()),
        Claim::Planted,
        None,
        1,
    )
    .await;
    let target = format!("{}_planted", id.database());
    let restore = |config: &Path, snapshot: &[&str], extra: &[&str]| {
        let mut args = vec!["restore", "--engine", "postgresql", "--create"];
        args.extend_from_slice(snapshot);
        args.extend_from_slice(&["--database", &target]);
        args.extend_from_slice(extra);
        strongroom(config, &args)
    };

    // With a public key: --latest picks the planted backup and refuses it as unsigned.
    drop_database(&target).await;
    let out = restore(&signed, &["--latest"], &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(".sig does not exist"), "{}", text(&out));

    // Without a public key: unsigned backups are refused by default, before any request.
    let unsigned = config_file(&id, &bucket, dir.path(), "unsigned.yaml", "");
    let out = restore(&unsigned, &["--latest"], &[]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(
        text(&out).contains("signing.public_key_file"),
        "{}",
        text(&out)
    );

    // Allowed explicitly: the guard stops the dump before psql sees the meta-command.
    let out = restore(&unsigned, &["--latest"], &["--allow-unsigned"]);
    assert!(!out.status.success(), "{}", text(&out));
    let message = text(&out);
    assert!(
        message.contains("line 1 of the dump") && message.contains("\\\\! touch"),
        "{message}"
    );
    assert!(
        !marker.exists(),
        "psql ran the planted dump's shell command"
    );
    assert_eq!(harness::tables_of(&target).await, Vec::<String>::new());

    // The same further down the dump, after SQL psql has already run: rolled back.
    let planted_later = harness::plant_backup(
        &store,
        &config,
        &genuine,
        harness::gzip(midway.as_bytes()),
        Claim::Planted,
        None,
        2,
    )
    .await;
    drop_database(&target).await;
    let allow = config_file(
        &id,
        &bucket,
        dir.path(),
        "allow.yaml",
        "  allow_unsigned: true\n",
    );
    let out = restore(&allow, &["--snapshot", &planted_later], &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("line 2 of the dump"), "{}", text(&out));
    assert!(
        !marker.exists(),
        "psql ran the planted dump's shell command"
    );
    assert_eq!(harness::tables_of(&target).await, Vec::<String>::new());

    // verify still reads unsigned backups, and says they are.
    let out = strongroom(&unsigned, &["verify", "--snapshot", &planted_first]);
    assert!(text(&out).contains("UNSIGNED"), "{}", text(&out));

    // The genuine, signed backup restores.
    drop_database(&target).await;
    let out = restore(&signed, &["--snapshot", &genuine], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(harness::tables_of(&target).await, vec!["public.genuine"]);
}

async fn row_data_in_psqls_errors_stays_out_of_messages_and_the_audit_trail(id: TestId) {
    let dir = tempfile::tempdir().unwrap();
    let db = harness::fresh_database(&id.database()).await;
    db.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1);")
        .await
        .unwrap();
    let (private, public) = harness::keypair(dir.path());
    let (bucket, store) = harness::bucket(&id, true).await;
    let config_path = config_file(
        &id,
        &bucket,
        dir.path(),
        "a.yaml",
        &signing(&private, &public),
    );
    let out = strongroom(
        &config_path,
        &["backup", "--engine", "postgresql", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let genuine = report["key"].as_str().unwrap().to_owned();
    // A signed dump whose COPY fails on a row: psql quotes the row in its error.
    let sql = "CREATE TABLE public.accounts (id int, email text);\n\
               COPY public.accounts (id, email) FROM stdin;\n\
               1\talice@example.com\n\
               SECRET-ROW-VALUE\tbob@example.com\n\\.\n";
    let config = harness::config(&std::fs::read_to_string(&config_path).unwrap());
    let signer = strongroom::signing::ManifestSigner::load(&private).unwrap();
    let planted = harness::plant_backup(
        &store,
        &config,
        &genuine,
        harness::gzip(sql.as_bytes()),
        Claim::Planted,
        Some(&signer),
        1,
    )
    .await;
    let target = format!("{}_rows", id.database());
    drop_database(&target).await;
    let out = strongroom(
        &config_path,
        &[
            "restore",
            "--engine",
            "postgresql",
            "--create",
            "--snapshot",
            &planted,
            "--database",
            &target,
        ],
    );
    let message = text(&out);
    assert_eq!(out.status.code(), Some(1), "{message}");
    assert!(
        message.contains("invalid input syntax for type integer"),
        "{message}"
    );
    assert!(message.contains("COPY accounts, line 2"), "{message}");
    assert!(
        !message.contains("SECRET-ROW-VALUE"),
        "row data in the message: {message}"
    );
    assert!(
        !message.contains("bob@example.com"),
        "row data in the message: {message}"
    );
    assert_eq!(harness::tables_of(&target).await, Vec::<String>::new());
    // The audit event of the failed restore is locked for years: no row data there either.
    let events = store
        .list(&format!("{}/audit/", config.s3.prefix))
        .await
        .unwrap();
    let mut restore_events = 0;
    for event in events.iter().filter(|e| e.key.contains("-restore-")) {
        let body = harness::download(store.client(), store.bucket(), &event.key, None).await;
        let body = String::from_utf8_lossy(&body);
        restore_events += 1;
        assert!(
            !body.contains("SECRET-ROW-VALUE"),
            "row data in {}: {body}",
            event.key
        );
    }
    assert!(restore_events > 0, "no restore event among {events:?}");
}
