//! Database engines: how to dump one and what to record about it.
//!
//! [`postgres`] runs `pg_dump` in a snapshot shared with the row counts; [`process`] turns a
//! child process into a byte stream whose success is decided at exit. The backup orchestration
//! (what gets uploaded where, and when a backup counts as complete) is in `backup`, not here.

pub mod postgres;
pub mod process;

/// What can go wrong while talking to a database or running its dump tool.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(
        "cannot start {program}: {source}; check the configured path and that the image ships it"
    )]
    Spawn {
        program: String,
        source: std::io::Error,
    },
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
    #[error("PostgreSQL query ({what}) failed on database {database}: {detail}")]
    Query {
        what: &'static str,
        database: String,
        detail: String,
    },
}
