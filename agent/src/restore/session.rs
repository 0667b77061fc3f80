//! One psql session of a parallel restore: the agent's `\restrict` key and the dump's
//! preamble, then items of sections, each in a transaction of its own; each section read by a
//! ranged GET of the pinned version, hashed, decompressed and passed through one
//! [`ScriptGuard`] for the whole session, and checked against its SHA-256 and size from the
//! signed index before the next one starts.
//!
//! Sessions load into the staging database, which becomes the target only after every section
//! of every session was verified and loaded ([`super::parallel`]): what a session commits
//! before a later check fails is dropped with the staging database. Dropping a session kills
//! its psql.

use std::io::Write as _;
use std::path::Path;

use super::copy_freeze::PsqlStdin;
use super::psql_load::{GuardedStdin, refusal_of};
use crate::engine::postgres::script::{PushError, ScriptGuard};
use crate::engine::postgres::{self, ConnParams, PsqlInput, sections};
use crate::engine::process::ChildProcess;
use crate::error::{Error, Result};
use crate::layout::Codec;
use crate::manifest::{DumpSection, SectionKind};
use crate::store::ObjectStore;
use crate::unpack::{self, UnpackError};

/// What every session of one restore shares.
pub struct SessionSetup<'a> {
    pub psql: &'a Path,
    pub params: &'a ConnParams,
    /// The agent's `\restrict` key, when psql has the command.
    pub restrict: Option<&'a str>,
    /// The dump's preamble (its session settings), verified.
    pub preamble: &'a [u8],
}

/// The dump object sections are read from.
pub struct Source<'a, S> {
    pub store: &'a S,
    pub key: &'a str,
    pub version: Option<&'a str>,
    pub codec: Codec,
}

impl<S> Clone for Source<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Source<'_, S> {}

type Sink = GuardedStdin<PsqlStdin<PsqlInput>>;

pub struct Session {
    psql: ChildProcess,
    sink: Option<Sink>,
    database: String,
}

fn stopped(database: &str, source: std::io::Error) -> Error {
    Error::Unpack(UnpackError::Sink {
        source: std::io::Error::new(
            source.kind(),
            format!(
                "psql loading into the staging database {database} stopped reading its input \
                 ({source}); see psql's messages above. The target is unchanged"
            ),
        ),
    })
}

/// Writes `bytes` through the guard on a blocking thread (psql may be slow to read).
async fn send(mut sink: Sink, bytes: Vec<u8>) -> (Sink, std::io::Result<()>) {
    tokio::task::spawn_blocking(move || {
        let written = sink.write_all(&bytes);
        (sink, written)
    })
    .await
    .expect("a blocking write does not panic")
}

impl Session {
    /// Starts psql and sends the key and the preamble.
    pub async fn open(setup: &SessionSetup<'_>) -> Result<Session> {
        let (psql, mut stdin) = postgres::spawn_psql(setup.psql, setup.params)?;
        let database = setup.params.database.clone();
        // A few bytes into the buffer: this write cannot block.
        stdin
            .write_all(&postgres::restrict_line(setup.restrict))
            .map_err(|e| stopped(&database, e))?;
        let sink = GuardedStdin {
            guard: ScriptGuard::new(),
            stdin: PsqlStdin::new(stdin),
        };
        let mut session = Session {
            psql,
            sink: Some(sink),
            database,
        };
        session.send(setup.preamble.to_vec()).await?;
        Ok(session)
    }

    /// Loads `sections` in one transaction (pg_dump's large-object writes need one; its own
    /// BEGIN/COMMIT are blanked); returns their uncompressed size. With `freeze`, the table
    /// (the one all the data sections load) is truncated first and loaded with COPY FREEZE.
    pub async fn load_in_transaction<S: ObjectStore>(
        &mut self,
        source: Source<'_, S>,
        sections: &[&DumpSection],
        freeze: Option<&str>,
    ) -> Result<u64> {
        self.send_own(b"BEGIN;\n").await?;
        if let Some(table) = freeze {
            self.send(format!("TRUNCATE ONLY {table};\n").into_bytes())
                .await?;
        }
        let mut loaded = 0;
        for section in sections {
            let freeze = freeze.is_some() && section.kind == SectionKind::Data;
            loaded += self.load(source, section, freeze).await?;
        }
        // After each section the guard stood between statements: nothing is held back.
        self.send_own(postgres::RESTORE_COMMIT).await?;
        Ok(loaded)
    }

    /// Sends the agent's own transaction control past the guard (which refuses it in a dump),
    /// and all that is buffered with it.
    async fn send_own(&mut self, bytes: &'static [u8]) -> Result<()> {
        let mut sink = self.sink.take().expect("the session is open");
        let (sink, written) = tokio::task::spawn_blocking(move || {
            let written = sink
                .stdin
                .write_all(bytes)
                .and_then(|()| sink.stdin.flush());
            (sink, written)
        })
        .await
        .expect("a blocking write does not panic");
        self.sink = Some(sink);
        written.map_err(|e| stopped(&self.database, e))
    }

    async fn send(&mut self, bytes: Vec<u8>) -> Result<()> {
        let sink = self.sink.take().expect("the session is open");
        let (sink, written) = send(sink, bytes).await;
        self.sink = Some(sink);
        written.map_err(|e| match refusal_of(&e) {
            Some(r) => Error::DumpRefused {
                key: format!(
                    "the agent's own text around a section for {}",
                    self.database
                ),
                version: "-".into(),
                refusal: r.to_string(),
            },
            None => stopped(&self.database, e),
        })
    }

    /// Loads one section, its COPY with FREEZE if `freeze`; returns its uncompressed size.
    async fn load<S: ObjectStore>(
        &mut self,
        source: Source<'_, S>,
        section: &DumpSection,
        freeze: bool,
    ) -> Result<u64> {
        if freeze {
            let sink = self.sink.as_mut().expect("the session is open");
            sink.stdin.freeze_next_copy();
        }
        self.send(sections::before(section)).await?;
        let sink = self.sink.take().expect("the session is open");
        let compressed = unpack::Compressed {
            key: source.key,
            version_id: source.version,
            codec: source.codec,
            range: Some((section.offset, section.size_bytes)),
        };
        let where_ = || {
            format!(
                "{} (section at bytes {}-{})",
                source.store.target(source.key),
                section.offset,
                section.offset + section.size_bytes
            )
        };
        let unpacked = match unpack::unpack_into(source.store, compressed, sink).await {
            Ok(unpacked) => unpacked,
            Err(UnpackError::Sink { source: e }) => {
                return Err(match refusal_of(&e) {
                    Some(r) => Error::DumpRefused {
                        key: where_(),
                        version: source.version.unwrap_or("(none)").to_owned(),
                        refusal: r.to_string(),
                    },
                    None => stopped(&self.database, e),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let actual = hex::encode(unpacked.sha256);
        if actual != section.sha256
            || unpacked.size != section.size_bytes
            || unpacked.uncompressed != section.uncompressed_size_bytes
        {
            return Err(Error::HashMismatch {
                key: where_(),
                version: source.version.unwrap_or("(none)").to_owned(),
                expected: section.sha256.clone(),
                actual,
                expected_size: section.size_bytes,
                actual_size: unpacked.size,
            });
        }
        self.sink = Some(unpacked.sink);
        self.send(sections::after(section).to_vec()).await?;
        let sink = self.sink.as_mut().expect("the session is open");
        sink.stdin
            .disarm()
            .map_err(|e| stopped(&self.database, e))?;
        let sink = self.sink.as_ref().expect("the session is open");
        if !sink.guard.at_statement_boundary() {
            return Err(Error::DumpRefused {
                key: where_(),
                version: source.version.unwrap_or("(none)").to_owned(),
                refusal: "the section does not end between statements, so it cannot be loaded \
                          on its own"
                    .into(),
            });
        }
        Ok(unpacked.uncompressed)
    }

    /// Ends the session: its input must end cleanly, and psql must exit 0.
    pub async fn close(mut self) -> Result<()> {
        let GuardedStdin { mut guard, stdin } = self.sink.take().expect("the session is open");
        let mut stdin = stdin;
        // The end of the input, and all that is buffered, must reach psql.
        let ended = guard
            .finish(&mut stdin)
            .and_then(|()| stdin.flush().map_err(PushError::from));
        match ended {
            Ok(()) => {}
            Err(PushError::Refused(r)) => {
                self.psql.kill().await;
                return Err(Error::DumpRefused {
                    key: format!("a session loading {}", self.database),
                    version: "-".into(),
                    refusal: r.to_string(),
                });
            }
            Err(PushError::Forward(e)) => {
                drop(stdin);
                self.psql.finish().await?;
                return Err(stopped(&self.database, e));
            }
        }
        drop(stdin);
        self.psql.finish().await?;
        Ok(())
    }
}
