//! PostgreSQL: connections, the snapshot shared by `pg_dump --snapshot` and the row counts, the
//! target checks of a restore, and the pg_dump / psql child processes; whole databases
//! (create, rename, drop, their derived names) in [`databases`].
//!
//! Connection parameters reach pg_dump and psql through their environment (`PGHOST`, ...
//! `PGPASSWORD`, `PGSSLMODE`), never their argv, so the password does not appear in `ps`. The
//! agent's own sessions use TLS as [`tls`] says, with the same `sslmode` meanings as libpq. This
//! module does not touch S3; `backup` and `restore` wire these pieces to the store.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tokio_postgres::Client;

use super::EngineError;
use super::process::ChildProcess;
pub use databases::{
    Carried, Like, Refused, can_create_database, can_replace_database, carry_over,
    comment_database, create_database, create_database_like, database_exists, derived_name,
    derived_prefix, drop_database, drop_roles, in_transaction, name_suffix, rename_database,
    staging_prefix, tablespace_refused, user_objects,
};

pub mod databases;
pub mod globals;
pub mod messages;
pub mod per_table;
pub mod script;
pub mod sections;
pub mod tls;

pub use tls::{RootCert, SslMode, TlsParams};

/// Where and as whom to connect.
#[derive(Clone)]
pub struct ConnParams {
    /// A socket directory (starting with `/`) or a host name.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    pub password: Option<String>,
    pub connect_timeout_seconds: u64,
    /// TCP only: a socket host never uses TLS.
    pub tls: TlsParams,
}

impl std::fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        write!(
            f,
            "{}:{}/{} as {} ({:?})",
            self.host, self.port, self.database, self.user, self.tls
        )
    }
}

impl ConnParams {
    /// The same server and role, another database.
    pub fn with_database(&self, database: &str) -> ConnParams {
        ConnParams {
            database: database.to_owned(),
            ..self.clone()
        }
    }

    fn target(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.database)
    }

    /// Sets the libpq environment of a pg_dump or psql child.
    fn apply_env(&self, command: &mut Command, application: &str) {
        command
            .env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", &self.database)
            .env("PGAPPNAME", application)
            .env(
                "PGCONNECT_TIMEOUT",
                self.connect_timeout_seconds.to_string(),
            );
        match &self.password {
            Some(password) => command.env("PGPASSWORD", password),
            None => command.env_remove("PGPASSWORD"),
        };
        // Always explicit: an inherited PGSSLMODE or PGSSLROOTCERT must not make pg_dump or
        // psql check something else than the agent's own session did.
        command.env("PGSSLMODE", self.tls.effective_mode(&self.host).as_str());
        match self.tls.root_cert_path(&self.host) {
            Some(path) => command.env("PGSSLROOTCERT", path),
            None => command.env_remove("PGSSLROOTCERT"),
        };
    }
}

/// Rows in one table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableRows {
    pub schema: String,
    pub table: String,
    pub rows: i64,
}

pub(crate) fn detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                text.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                text.push_str(&format!("; hint: {h}"));
            }
            text
        }
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

pub(crate) fn query_error(
    what: &'static str,
    database: &str,
) -> impl Fn(tokio_postgres::Error) -> EngineError {
    let database = database.to_owned();
    move |e| EngineError::Query {
        what,
        database: database.clone(),
        detail: detail(&e),
    }
}

/// Asks the server to cancel what `client` (connected with `params`) is running; best
/// effort: the caller still waits for the statement to end.
pub async fn cancel_running(client: &Client, params: &ConnParams) {
    if let Ok(tls) = params.tls.connector()
        && let Err(e) = client.cancel_token().cancel_query(tls).await
    {
        tracing::debug!(error = %detail(&e), "cancelling a statement failed");
    }
}

/// Opens a connection, over TLS as `params.tls` says.
pub async fn connect(params: &ConnParams) -> Result<Client, EngineError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&params.host)
        .port(params.port)
        .user(&params.user)
        .dbname(&params.database)
        .application_name("strongroom")
        .connect_timeout(std::time::Duration::from_secs(
            params.connect_timeout_seconds,
        ))
        .ssl_mode(params.tls.session_mode(&params.host))
        // A connection held idle (a restore's advisory lock) notices a vanished peer within
        // two minutes (60 s idle, then 3 probes 15 s apart), not after two hours.
        .keepalives_idle(std::time::Duration::from_secs(60))
        .keepalives_interval(std::time::Duration::from_secs(15))
        .keepalives_retries(3);
    if let Some(password) = &params.password {
        config.password(password);
    }
    let connector = params.tls.connector().map_err(|e| EngineError::Tls {
        target: params.target(),
        user: params.user.clone(),
        problem: format!("no TLS client could be set up: {e}"),
        advice: "report this as a bug, with the sslmode in use".into(),
    })?;
    let (client, connection) = config.connect(connector).await.map_err(|e| {
        match params.tls.explain(&params.host, &e) {
            Some(failure) => EngineError::Tls {
                target: params.target(),
                user: params.user.clone(),
                problem: failure.problem,
                advice: failure.advice,
            },
            None => EngineError::Connect {
                target: params.target(),
                user: params.user.clone(),
                detail: detail(&e),
            },
        }
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %detail(&e), "PostgreSQL connection closed with an error");
        }
    });
    Ok(client)
}

/// The tables pg_dump dumps with data: ordinary and partition tables, not catalogs, not
/// extension members. Columns: schema, table, quoted qualified name, oid, the oids of the
/// tables that inherit from it, directly or not (a `count(*)` on it counts their rows too),
/// and whether it is unlogged.
const USER_TABLES: &str = "SELECT n.nspname::text, c.relname::text, \
        format('%I.%I', n.nspname, c.relname), c.oid, \
        ARRAY(WITH RECURSIVE below(oid) AS ( \
                SELECT inhrelid FROM pg_inherits WHERE inhparent = c.oid \
                UNION SELECT i.inhrelid FROM pg_inherits i JOIN below b ON i.inhparent = b.oid) \
              SELECT oid FROM below), \
        c.relpersistence = 'u' \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind = 'r' \
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
       AND n.nspname !~ '^pg_(toast|temp_)' \
       AND NOT EXISTS (SELECT 1 FROM pg_depend d \
                       WHERE d.classid = 'pg_class'::regclass \
                         AND d.objid = c.oid AND d.deptype = 'e') \
     ORDER BY 1, 2";

/// A table pg_dump dumps with data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserTable {
    pub schema: String,
    pub table: String,
    /// Quoted and schema-qualified, for SQL text.
    pub qualified: String,
    pub oid: u32,
    /// The tables that inherit from it, directly or not: a `count(*)` on it counts their
    /// rows too.
    pub descendants: Vec<u32>,
    /// `UNLOGGED`: a standby cannot read it, and pg_dump there dumps none of its rows.
    pub unlogged: bool,
}

/// Every user table, by schema and name.
pub async fn list_user_tables(
    client: &Client,
    database: &str,
) -> Result<Vec<UserTable>, EngineError> {
    let rows = client
        .query(USER_TABLES, &[])
        .await
        .map_err(query_error("list tables", database))?;
    Ok(rows
        .iter()
        .map(|r| UserTable {
            schema: r.get(0),
            table: r.get(1),
            qualified: r.get(2),
            oid: r.get(3),
            descendants: r.get(4),
            unlogged: r.get(5),
        })
        .collect())
}

/// `schema.table` of every user table.
pub async fn user_tables(client: &Client, database: &str) -> Result<Vec<String>, EngineError> {
    let tables = list_user_tables(client, database).await?;
    Ok(tables
        .into_iter()
        .map(|t| format!("{}.{}", t.schema, t.table))
        .collect())
}

/// Which of `tables` (names as pg_dump writes them) a restore can load with `TRUNCATE ONLY` +
/// `COPY ... FREEZE`, in the order given: plain tables (partitioned and foreign tables refuse
/// FREEZE) that this role may truncate and insert into, that are still empty, and that belong
/// to no extension (`CREATE EXTENSION` may have filled a configuration table that the dump
/// holds only some rows of: truncating it would lose the others).
pub async fn freezable(
    client: &Client,
    database: &str,
    tables: &[&str],
) -> Result<Vec<bool>, EngineError> {
    let rows = client
        .query(
            // has_table_privilege with a list is true if any one is held: two calls.
            "SELECT coalesce(c.relkind = 'r' AND has_table_privilege(c.oid, 'TRUNCATE') \
                 AND has_table_privilege(c.oid, 'INSERT') \
                 AND pg_catalog.pg_relation_size(c.oid) = 0 \
                 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                     WHERE d.classid = 'pg_catalog.pg_class'::regclass \
                       AND d.objid = c.oid AND d.deptype = 'e'), false) \
             FROM unnest($1::text[]) WITH ORDINALITY AS t(name, i) \
             LEFT JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(t.name) \
             ORDER BY t.i",
            &[&tables],
        )
        .await
        .map_err(query_error(
            "look up the tables to load with COPY FREEZE",
            database,
        ))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A table a parallel restore checks as soon as its own load committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandingTable {
    pub oid: u32,
    pub schema: String,
    pub table: String,
    /// Quoted and schema-qualified, for SQL text.
    pub qualified: String,
    /// A partition: `ANALYZE` of its root analyzes it.
    pub partition: bool,
}

/// Which of `tables` (names as pg_dump writes them) hold only rows that their own load puts
/// there, in the order given: plain tables that no table inherits from (a `count(*)` on a
/// parent counts rows loaded elsewhere). `None` for any other.
pub async fn landing_tables(
    client: &Client,
    database: &str,
    tables: &[&str],
) -> Result<Vec<Option<LandingTable>>, EngineError> {
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, \
                 pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname), \
                 c.relispartition \
             FROM unnest($1::text[]) WITH ORDINALITY AS t(name, i) \
             LEFT JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(t.name) \
                 AND c.relkind = 'r' \
                 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h \
                                 WHERE h.inhparent = c.oid) \
             LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             ORDER BY t.i",
            &[&tables],
        )
        .await
        .map_err(query_error(
            "look up the tables to check as they load",
            database,
        ))?;
    Ok(rows
        .iter()
        .map(|r| {
            let oid: Option<u32> = r.get(0);
            oid.map(|oid| LandingTable {
                oid,
                schema: r.get(1),
                table: r.get(2),
                qualified: r.get(3),
                partition: r.get(4),
            })
        })
        .collect())
}

/// Exact row counts of `tables` (`count(*)`, their descendants' rows included), in the
/// client's current snapshot.
pub async fn count_tables(
    client: &Client,
    database: &str,
    tables: impl Iterator<Item = &UserTable>,
) -> Result<Vec<TableRows>, EngineError> {
    let mut counts = Vec::new();
    for table in tables {
        let qualified = &table.qualified;
        let row = client
            .query_one(&format!("SELECT count(*) FROM {qualified}"), &[])
            .await
            .map_err(|e| EngineError::Query {
                what: "count rows",
                database: format!("{database} (table {qualified})"),
                detail: detail(&e),
            })?;
        counts.push(TableRows {
            schema: table.schema.clone(),
            table: table.table.clone(),
            rows: row.get(0),
        });
    }
    Ok(counts)
}

/// An open transaction whose snapshot pg_dump imports. Keep it open until pg_dump has exited.
pub struct SnapshotSession {
    client: Client,
    database: String,
    pub snapshot_id: String,
    pub server_version: String,
    /// `pg_is_in_recovery()`: the server is a standby.
    pub in_recovery: bool,
}

impl SnapshotSession {
    /// Starts a read-only REPEATABLE READ transaction and exports its snapshot; its row counts
    /// wait at most `lock_timeout_seconds` for a table lock.
    pub async fn open(params: &ConnParams, lock_timeout_seconds: u64) -> Result<Self, EngineError> {
        let client = connect(params).await?;
        // What little counting is left to count(*) (tables the dump's rows do not answer for)
        // needs no parallel workers taking cores from the application.
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
                 SET LOCAL max_parallel_workers_per_gather = 0; \
                 SET LOCAL lock_timeout = '{lock_timeout_seconds}s'"
            ))
            .await
            .map_err(query_error("begin snapshot transaction", &params.database))?;
        let row = client
            .query_one(
                "SELECT pg_export_snapshot(), current_setting('server_version'), \
                 pg_is_in_recovery()",
                &[],
            )
            .await
            .map_err(query_error("export snapshot", &params.database))?;
        Ok(SnapshotSession {
            snapshot_id: row.get(0),
            server_version: row.get(1),
            in_recovery: row.get(2),
            database: params.database.clone(),
            client,
        })
    }

    /// The user tables in the exported snapshot, each locked `ACCESS SHARE` (as pg_dump locks
    /// them) until the transaction ends, so that a table counted after pg_dump has finished
    /// cannot be truncated, rewritten or dropped under the count.
    pub async fn user_tables(&self) -> Result<Vec<UserTable>, EngineError> {
        let tables = list_user_tables(&self.client, &self.database).await?;
        for table in &tables {
            let qualified = &table.qualified;
            self.client
                .batch_execute(&format!("LOCK TABLE ONLY {qualified} IN ACCESS SHARE MODE"))
                .await
                .map_err(query_error(
                    "lock table",
                    &format!("{} (table {qualified})", self.database),
                ))?;
        }
        Ok(tables)
    }

    /// Exact row counts of `tables` in the exported snapshot.
    pub async fn count(&self, tables: &[&UserTable]) -> Result<Vec<TableRows>, EngineError> {
        count_tables(&self.client, &self.database, tables.iter().copied()).await
    }

    /// Roles, memberships and settings, in the exported snapshot.
    pub async fn globals(&self) -> Result<globals::Globals, EngineError> {
        globals::read(&self.client, &self.database).await
    }

    /// Ends the transaction (it only read).
    pub async fn close(self) {
        if let Err(e) = self.client.batch_execute("COMMIT").await {
            tracing::warn!(error = %detail(&e), "closing the snapshot transaction failed");
        }
    }
}

/// `"name"`, doubling quotes inside.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` as an SQL string literal, doubling quotes inside; with a backslash in it,
/// `E'text'` with backslashes doubled too (as the server's own `quote_literal` does), which
/// reads the same whatever `standard_conforming_strings` says: a value from the catalogs
/// cannot end its literal early on a server or role that turned it off.
pub fn quote_literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// `<program> --version`, e.g. `pg_dump (PostgreSQL) 15.18`.
pub async fn tool_version(program: &Path) -> Result<String, EngineError> {
    let name = program.display().to_string();
    let out = Command::new(program)
        .arg("--version")
        .output()
        .await
        .map_err(|source| EngineError::Spawn {
            program: name.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(EngineError::Failed {
            program: name,
            status: out.status.to_string(),
            stderr_tail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `pg_dump --version`, e.g. `pg_dump (PostgreSQL) 15.18`.
pub async fn pg_dump_version(pg_dump: &Path) -> Result<String, EngineError> {
    tool_version(pg_dump).await
}

/// Whether a psql of this `--version` line has `\restrict` (the August 2025 minor releases:
/// 13.22, 14.19, 15.14, 16.10, 17.6, and 18 on).
pub fn has_restrict(version_line: &str) -> bool {
    let Some(version) = version_line
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
    else {
        return false;
    };
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    match major {
        18.. => true,
        17 => minor >= 6,
        16 => minor >= 10,
        15 => minor >= 14,
        14 => minor >= 19,
        13 => minor >= 22,
        _ => false,
    }
}

/// What the restore sends psql before the dump: its own `\restrict` key when psql has the
/// command (so no line of the dump can leave restricted mode), then `BEGIN`. psql commits
/// nothing at the end of its input: only the agent's [`RESTORE_COMMIT`] does.
pub fn restore_prologue(restrict_key: Option<&str>) -> Vec<u8> {
    let mut prologue = restrict_line(restrict_key);
    prologue.extend_from_slice(b"BEGIN;\n");
    prologue
}

/// psql's `\restrict <key>` line, when it has the command (else nothing).
pub fn restrict_line(restrict_key: Option<&str>) -> Vec<u8> {
    restrict_key.map_or_else(Vec::new, |key| format!("\\restrict {key}\n").into_bytes())
}

/// Sent after the dump once its SHA-256 and size matched the manifest. The newline ends a
/// `--` comment the dump may have ended with.
pub const RESTORE_COMMIT: &[u8] = b"\nCOMMIT;\n";

/// The `\restrict` key for a restore through `psql`: a fresh one when that psql has the
/// command, else `None` (and a warning: the agent's stream guard alone then keeps psql
/// meta-commands out of the restore).
pub async fn restrict_for(psql: &Path) -> Result<Option<String>, EngineError> {
    let version = tool_version(psql).await?;
    if has_restrict(&version) {
        return restrict_key().map(Some);
    }
    tracing::warn!(psql = %version, "this psql has no \\restrict; the agent's stream guard \
        alone keeps psql meta-commands out of the restore. Use psql >= 15.14 (or 13.22, 14.19, \
        16.10, 17.6, 18)");
    Ok(None)
}

/// A random key for `\restrict`: letters and digits only, as psql requires.
pub fn restrict_key() -> Result<String, EngineError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| EngineError::Random(e.to_string()))?;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}

/// Starts `pg_dump` (plain SQL) in `snapshot`, failing if a table lock takes longer than
/// `lock_wait_timeout_seconds`; its stdout is the dump.
pub fn spawn_pg_dump(
    pg_dump: &Path,
    params: &ConnParams,
    snapshot: &str,
    lock_wait_timeout_seconds: u64,
) -> Result<(ChildProcess, std::fs::File), EngineError> {
    let mut command = Command::new(pg_dump);
    command
        .arg("--format=plain")
        .arg("--no-password")
        .arg(format!("--snapshot={snapshot}"))
        .arg(format!("--lock-wait-timeout={lock_wait_timeout_seconds}s"));
    params.apply_env(&mut command, "strongroom-pg_dump");
    ChildProcess::spawn_source(&pg_dump.display().to_string(), command, messages::scrub)
}

/// Starts `psql` loading a plain dump, stopping at the first error; its stdin is the dump,
/// which must start with [`restore_prologue`]. No `--single-transaction`: psql would commit
/// when its input ends, however it ends (an agent killed mid-COPY included). With the
/// agent's own BEGIN, an input that just ends leaves the transaction open, and psql's exit
/// rolls it back. What is written reaches psql when the buffer fills or is flushed.
pub fn spawn_psql(
    psql: &Path,
    params: &ConnParams,
) -> Result<(ChildProcess, PsqlInput), EngineError> {
    let mut command = Command::new(psql);
    command
        .args(["--no-psqlrc", "--quiet", "--no-password"])
        .args(["--set", "ON_ERROR_STOP=1"]);
    params.apply_env(&mut command, "strongroom-psql");
    let (psql, stdin) =
        ChildProcess::spawn_sink(&psql.display().to_string(), command, messages::scrub)?;
    Ok((psql, PsqlInput::with_capacity(PSQL_INPUT_BUFFER, stdin)))
}

/// psql's stdin. The stream guard forwards a dump line by line; unbuffered, that was one
/// write(2) per COPY row, and those system calls took more CPU than psql itself.
pub type PsqlInput = std::io::BufWriter<std::fs::File>;

/// Bytes gathered before a write to psql's stdin: two pipe buffers' worth.
const PSQL_INPUT_BUFFER: usize = 128 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_hold_quotes_and_backslashes_whatever_standard_conforming_strings_says() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        // Off, `'x\'` would end at the second quote; E'' reads the same either way.
        assert_eq!(quote_literal(r"x\'; DROP"), r"E'x\\''; DROP'");
    }

    fn params(host: &str, tls: TlsParams) -> ConnParams {
        ConnParams {
            host: host.into(),
            port: 5432,
            user: "u".into(),
            database: "d".into(),
            password: None,
            connect_timeout_seconds: 5,
            tls,
        }
    }

    fn tls(mode: SslMode, root: Option<RootCert>) -> TlsParams {
        TlsParams::new(mode, root, "postgresql.sslmode", "postgresql.sslrootcert").unwrap()
    }

    fn env_of(command: &Command, name: &str) -> Option<Option<String>> {
        command
            .as_std()
            .get_envs()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
    }

    #[test]
    fn pg_dump_and_psql_get_the_same_tls_settings_as_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, tls::tests::TEST_CA_PEM).unwrap();
        let root = RootCert::load(&ca).unwrap();

        let mut command = Command::new("pg_dump");
        params("db.example", tls(SslMode::VerifyFull, Some(root.clone())))
            .apply_env(&mut command, "t");
        assert_eq!(
            env_of(&command, "PGSSLMODE"),
            Some(Some("verify-full".into()))
        );
        assert_eq!(
            env_of(&command, "PGSSLROOTCERT"),
            Some(Some(ca.display().to_string()))
        );

        // An inherited PGSSLROOTCERT is removed when the agent uses none.
        let mut command = Command::new("pg_dump");
        params("db.example", tls(SslMode::Require, None)).apply_env(&mut command, "t");
        assert_eq!(env_of(&command, "PGSSLMODE"), Some(Some("require".into())));
        assert_eq!(env_of(&command, "PGSSLROOTCERT"), Some(None));

        // A socket never uses TLS, whatever the mode.
        let mut command = Command::new("pg_dump");
        params("/var/run/postgresql", tls(SslMode::VerifyFull, Some(root)))
            .apply_env(&mut command, "t");
        assert_eq!(env_of(&command, "PGSSLMODE"), Some(Some("disable".into())));
        assert_eq!(env_of(&command, "PGSSLROOTCERT"), Some(None));
    }

    /// A server that answers PostgreSQL's SSLRequest with `N` (no TLS) and then hangs up.
    async fn server_without_tls() -> u16 {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 8];
                if socket.read_exact(&mut request).await.is_ok()
                    && request == [0, 0, 0, 8, 4, 210, 22, 47]
                {
                    let _ = socket.write_all(b"N").await;
                }
            }
        });
        port
    }

    #[tokio::test]
    async fn require_against_a_server_without_tls_says_so() {
        let port = server_without_tls().await;
        let mut p = params("127.0.0.1", tls(SslMode::Require, None));
        p.port = port;
        let e = connect(&p).await.unwrap_err().to_string();
        assert!(e.contains("does not accept TLS"), "{e}");
        assert!(e.contains("`postgresql.sslmode` is require"), "{e}");
        assert!(e.contains("ssl = on"), "{e}");

        // `prefer` goes on unencrypted; what fails then is no TLS matter.
        p.tls = tls(SslMode::Prefer, None);
        let e = connect(&p).await.unwrap_err();
        assert!(matches!(e, EngineError::Connect { .. }), "{e}");
    }

    #[test]
    fn restrict_is_known_from_the_version_line() {
        for (line, has) in [
            ("psql (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", true),
            ("psql (PostgreSQL) 15.13", false),
            ("psql (PostgreSQL) 15.14", true),
            ("psql (PostgreSQL) 16.9", false),
            ("psql (PostgreSQL) 17.6", true),
            ("psql (PostgreSQL) 18beta1", true),
            ("psql (PostgreSQL) 12.22", false),
            ("no version here", false),
        ] {
            assert_eq!(has_restrict(line), has, "{line}");
        }
    }

    #[test]
    fn the_prologue_restricts_then_begins() {
        let key = restrict_key().unwrap();
        assert_eq!(key.len(), 32);
        assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(key, restrict_key().unwrap());
        assert_eq!(
            restore_prologue(Some("abc")),
            b"\\restrict abc\nBEGIN;\n".to_vec()
        );
        assert_eq!(restore_prologue(None), b"BEGIN;\n".to_vec());
    }
}
