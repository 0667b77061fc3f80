//! PostgreSQL: a REPEATABLE READ snapshot shared by `pg_dump --snapshot` and the per-table row
//! counts, so the manifest's counts describe exactly the rows in the dump.
//!
//! Connection parameters go to pg_dump through its environment (`PGHOST`, ... `PGPASSWORD`),
//! never its argv, so the password does not appear in `ps`. This module does not upload
//! anything; `backup` wires the dump stream into the pipeline.

use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tokio_postgres::{Client, NoTls};

use super::DumpError;
use super::process::ChildStream;
use crate::config::PostgresConfig;

/// Rows in one table, counted in the dump's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    pub schema: String,
    pub table: String,
    pub rows: i64,
}

/// An open transaction whose snapshot pg_dump imports. Keep it open until pg_dump has exited.
pub struct SnapshotSession {
    client: Client,
    database: String,
    pub snapshot_id: String,
    pub server_version: String,
}

fn detail(e: &tokio_postgres::Error) -> String {
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

/// Opens a connection to the configured database.
pub async fn connect(pg: &PostgresConfig, password: Option<&str>) -> Result<Client, DumpError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&pg.host)
        .port(pg.port)
        .user(&pg.user)
        .dbname(&pg.database)
        .application_name("strongroom")
        .connect_timeout(std::time::Duration::from_secs(pg.connect_timeout_seconds));
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| DumpError::Connect {
            target: format!("{}:{}/{}", pg.host, pg.port, pg.database),
            user: pg.user.clone(),
            detail: detail(&e),
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %detail(&e), "PostgreSQL connection closed with an error");
        }
    });
    Ok(client)
}

impl SnapshotSession {
    /// Starts a read-only REPEATABLE READ transaction and exports its snapshot.
    pub async fn open(pg: &PostgresConfig, password: Option<&str>) -> Result<Self, DumpError> {
        let client = connect(pg, password).await?;
        let query = |what| {
            let database = pg.database.clone();
            move |e: tokio_postgres::Error| DumpError::Query {
                what,
                database,
                detail: detail(&e),
            }
        };
        // Counting runs beside pg_dump's own COPY; parallel workers would only take cores from
        // it (and from the application) for a little speed on the counts.
        client
            .batch_execute(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
                 SET LOCAL max_parallel_workers_per_gather = 0",
            )
            .await
            .map_err(query("begin snapshot transaction"))?;
        let row = client
            .query_one(
                "SELECT pg_export_snapshot(), current_setting('server_version')",
                &[],
            )
            .await
            .map_err(query("export snapshot"))?;
        Ok(SnapshotSession {
            snapshot_id: row.get(0),
            server_version: row.get(1),
            database: pg.database.clone(),
            client,
        })
    }

    /// Exact row counts of every table pg_dump dumps (ordinary and partition tables, not
    /// catalogs, not extension members), in the exported snapshot.
    pub async fn row_counts(&self) -> Result<Vec<TableRows>, DumpError> {
        let err = |what| {
            let database = self.database.clone();
            move |e: tokio_postgres::Error| DumpError::Query {
                what,
                database,
                detail: detail(&e),
            }
        };
        let tables = self
            .client
            .query(
                "SELECT n.nspname::text, c.relname::text, \
                        format('%I.%I', n.nspname, c.relname) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'r' \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND n.nspname !~ '^pg_(toast|temp_)' \
                   AND NOT EXISTS (SELECT 1 FROM pg_depend d \
                                   WHERE d.classid = 'pg_class'::regclass \
                                     AND d.objid = c.oid AND d.deptype = 'e') \
                 ORDER BY 1, 2",
                &[],
            )
            .await
            .map_err(err("list tables"))?;
        let mut counts = Vec::with_capacity(tables.len());
        for table in tables {
            let qualified: String = table.get(2);
            let row = self
                .client
                .query_one(&format!("SELECT count(*) FROM {qualified}"), &[])
                .await
                .map_err(err("count rows"))?;
            counts.push(TableRows {
                schema: table.get(0),
                table: table.get(1),
                rows: row.get(0),
            });
        }
        Ok(counts)
    }

    /// Ends the transaction (it only read).
    pub async fn close(self) {
        if let Err(e) = self.client.batch_execute("COMMIT").await {
            tracing::warn!(error = %detail(&e), "closing the snapshot transaction failed");
        }
    }
}

/// `pg_dump --version`, e.g. `pg_dump (PostgreSQL) 15.18`.
pub async fn pg_dump_version(pg: &PostgresConfig) -> Result<String, DumpError> {
    let program = pg.pg_dump.display().to_string();
    let out = Command::new(&pg.pg_dump)
        .arg("--version")
        .output()
        .await
        .map_err(|source| DumpError::Spawn {
            program: program.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(DumpError::Failed {
            program,
            status: out.status.to_string(),
            stderr_tail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Starts `pg_dump` (plain SQL) in `snapshot`; its stdout is the dump.
pub fn spawn_pg_dump(
    pg: &PostgresConfig,
    password: Option<&str>,
    snapshot: &str,
) -> Result<(ChildStream, std::fs::File), DumpError> {
    let mut command = Command::new(&pg.pg_dump);
    command
        .arg("--format=plain")
        .arg("--no-password")
        .arg(format!("--snapshot={snapshot}"))
        .env("PGHOST", &pg.host)
        .env("PGPORT", pg.port.to_string())
        .env("PGUSER", &pg.user)
        .env("PGDATABASE", &pg.database)
        .env("PGAPPNAME", "strongroom-pg_dump")
        .env("PGCONNECT_TIMEOUT", pg.connect_timeout_seconds.to_string());
    match password {
        Some(password) => command.env("PGPASSWORD", password),
        None => command.env_remove("PGPASSWORD"),
    };
    ChildStream::spawn(&pg.pg_dump.display().to_string(), command)
}
