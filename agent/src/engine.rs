//! Database engines: how to dump one, load one, and count what is in it.
//!
//! [`clickhouse`] drives ClickHouse's own BACKUP/RESTORE over HTTP; [`postgres`] runs `pg_dump`
//! in a snapshot shared with the row counts and `psql` for restores; [`process`] turns a child process into one end of a byte stream whose success is decided at
//! exit. What gets uploaded where, and when a backup or restore counts as done, is decided in
//! `backup` and `restore`, not here.

pub mod clickhouse;
pub mod postgres;
pub mod process;

/// What can go wrong while talking to a database or running its tools (pg_dump, psql).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "cannot start {program}: {source}; check the configured path and that the image ships it"
    )]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("the system random generator failed: {0}")]
    Random(String),
    #[error("{program} failed ({status}); its last output: {stderr_tail}")]
    Failed {
        program: String,
        status: String,
        stderr_tail: String,
    },
    #[error(
        "cannot connect to PostgreSQL at {target} as {user}: {detail}; check postgresql.host, \
         port, user, database and the password source"
    )]
    Connect {
        target: String,
        user: String,
        detail: String,
    },
    /// TLS, or its absence, is why the connection failed (`postgres::tls` says which).
    #[error("cannot connect to PostgreSQL at {target} as {user}: {problem}; {advice}")]
    Tls {
        target: String,
        user: String,
        problem: String,
        advice: String,
    },
    #[error("PostgreSQL query ({what}) failed on database {database}: {detail}")]
    Query {
        what: &'static str,
        database: String,
        detail: String,
    },
    #[error(
        "ClickHouse at {url} as {user}: {what} failed: {detail}. Check clickhouse.url, \
         clickhouse.user and its password file, and for BACKUP/RESTORE the named collection or \
         bucket_url and the server's grants (README, ClickHouse setup)"
    )]
    ClickHouse {
        url: String,
        user: String,
        what: &'static str,
        detail: String,
    },
    #[error(
        "ClickHouse at {url} is version {version}; BACKUP/RESTORE to S3 needs {minimum} or \
         newer. Upgrade the server (or disable clickhouse in the agent's config)"
    )]
    ClickHouseTooOld {
        url: String,
        version: String,
        minimum: String,
    },
    #[error(
        "ClickHouse operation {id} did not finish within {seconds} s; it may still be running \
         on the server (see system.backups). Raise clickhouse.backup_timeout_seconds or \
         restore_timeout_seconds if the data needs longer"
    )]
    ClickHouseTimeout { id: String, seconds: u64 },
    #[error(
        "ClickHouse no longer lists operation {id} in system.backups (for {seconds} s): the \
         server restarted or dropped it, so it will never finish. Nothing counts as done; check \
         the server's log, and the next run starts over"
    )]
    ClickHouseLost { id: String, seconds: u64 },
    #[error(
        "ClickHouse {what} {id} ended {status}: {error}. Nothing counts as done: a failed BACKUP \
         gets no manifest, a failed RESTORE may leave tables partly filled (empty them before \
         retrying). Fix what ClickHouse names and run again; system.backups keeps the row for {id}"
    )]
    ClickHouseFailed {
        what: &'static str,
        id: String,
        status: String,
        error: String,
    },
}
