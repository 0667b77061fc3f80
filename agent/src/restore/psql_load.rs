//! Loads one pinned dump version into psql so that only verified bytes can ever be committed.
//!
//! psql gets the agent's prologue (its own `\restrict` key, then `BEGIN`), then the dump as the
//! [`ScriptGuard`] lets it through (SQL only; pg_dump's own `BEGIN;`/`COMMIT;` lines blanked),
//! and, only once the dump's SHA-256 and size matched the manifest and the guard saw it end
//! cleanly, a `DO` block that fails unless every table holds the manifest's rows
//! ([`validate::row_count_guard`]), `ANALYZE` (unless `restore.analyze` is off; a failure of
//! it only warns), then `COMMIT`. Every other way out kills psql while its input is still open
//! (psql runs what is left in its buffer when its input ends; the guard never lets a
//! statement's first word through before it knows that word is no `COMMIT`), and an input
//! that just ends (the agent died: psql also gets SIGKILL through `PR_SET_PDEATHSIG`) leaves
//! the transaction open, which the server rolls back when psql's session ends. psql ends a
//! COPY at the end of its input as if it were complete and, without `--single-transaction`,
//! commits nothing at that point.

use std::io::Write;

use tokio_util::sync::CancellationToken;

use crate::catalog::FetchedManifest;
use crate::config::Config;
use crate::engine::EngineError;
use crate::engine::postgres::script::{PushError, Refusal, ScriptGuard};
use crate::engine::postgres::{self, ConnParams, PsqlInput, TableRows};
use crate::error::{Error, Result};
use crate::layout::Codec;
use crate::store::ObjectStore;
use crate::unpack::{self, UnpackError};
use crate::validate;

/// What the load read and wrote.
#[derive(Debug, Clone, Copy)]
pub struct Loaded {
    pub sha256: [u8; 32],
    pub size: u64,
    pub uncompressed: u64,
    pub download_seconds: f64,
}

/// psql's stdin behind the guard.
pub(super) struct GuardedStdin<W = PsqlInput> {
    pub(super) guard: ScriptGuard,
    pub(super) stdin: W,
}

impl<W: Write> Write for GuardedStdin<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.guard.push(buf, &mut self.stdin) {
            Ok(()) => Ok(buf.len()),
            Err(PushError::Forward(e)) => Err(e),
            Err(PushError::Refused(r)) => Err(std::io::Error::other(r)),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stdin.flush()
    }
}

/// The guard's refusal inside a write error, if that is what it is.
pub(super) fn refusal_of(e: &std::io::Error) -> Option<Refusal> {
    e.get_ref()?.downcast_ref::<Refusal>().cloned()
}

pub(super) fn refused(
    store: &impl ObjectStore,
    key: &str,
    version: Option<&str>,
    r: Refusal,
) -> Error {
    Error::DumpRefused {
        key: store.target(key),
        version: version.unwrap_or("(none)").to_owned(),
        refusal: r.to_string(),
    }
}

/// `ANALYZE` of the whole database, in the load's transaction: a failure is a warning on
/// psql's stderr, not a rollback of the load it follows.
const ANALYZE: &[u8] = b"DO $strongroom_analyze$ BEGIN ANALYZE; EXCEPTION WHEN OTHERS THEN \
    RAISE WARNING 'strongroom: ANALYZE of the restored database failed (%); the planner has \
    no statistics until autovacuum analyzes its tables: run ANALYZE', SQLERRM; END \
    $strongroom_analyze$;\n";

/// psql's failure, or [`Error::RowCountsDiffer`] if what failed was the row-count guard.
fn guard_failure(e: EngineError, key: &str, database: &str) -> Error {
    if let EngineError::Failed { stderr_tail, .. } = &e
        && let Some(at) = stderr_tail.find(validate::GUARD_MARK)
    {
        let rest = &stderr_tail[at + validate::GUARD_MARK.len()..];
        return Error::RowCountsDiffer {
            snapshot: key.to_owned(),
            database: database.to_owned(),
            differences: rest.lines().next().unwrap_or_default().to_owned(),
            staging: String::new(),
        };
    }
    e.into()
}

/// Streams the manifest's pinned version of `key` into psql for `params`' database and lets
/// psql commit only if it matches the manifest and its tables then hold `tables`' rows.
pub async fn load<S: ObjectStore>(
    store: &S,
    config: &Config,
    params: &ConnParams,
    manifest: &FetchedManifest,
    key: &str,
    tables: &[TableRows],
    stop: Option<&CancellationToken>,
) -> Result<Loaded> {
    let entry = manifest.object(key)?;
    let version = entry.version_id.as_deref();
    let restrict = postgres::restrict_for(&config.restore.psql).await?;
    let (psql, mut stdin) = postgres::spawn_psql(&config.restore.psql, params)?;
    let database = params.database.clone();
    let sink_error = |source: std::io::Error| {
        let source = std::io::Error::new(
            source.kind(),
            format!(
                "psql loading {key} into database {database} stopped reading its input \
                 ({source}); nothing was committed, see psql's messages above"
            ),
        );
        Error::Unpack(UnpackError::Sink { source })
    };
    // psql runs what is left in its buffer when its input ends, so on a way out that does not
    // commit it is killed while this second handle still keeps its input open.
    let open_input = stdin.get_ref().try_clone().map_err(sink_error)?;
    // A few bytes into the buffer: this write cannot block.
    if let Err(e) = stdin.write_all(&postgres::restore_prologue(restrict.as_deref())) {
        drop((stdin, open_input));
        psql.finish().await?;
        return Err(sink_error(e));
    }
    let sink = GuardedStdin {
        guard: ScriptGuard::new(),
        stdin,
    };
    let source = unpack::Compressed {
        key,
        version_id: version,
        codec: Codec::of_dump(key).unwrap_or_default(),
        range: None,
    };
    // Stoppable while the dump streams into psql, not once the COMMIT is written: psql may
    // send it at once.
    let unpacked = super::unless_stopped(stop, &database, async {
        Ok(unpack::unpack_into(store, source, sink).await)
    })
    .await;
    let unpacked = match unpacked {
        Ok(unpacked) => unpacked,
        Err(stopped) => {
            psql.kill().await;
            return Err(stopped);
        }
    };
    match unpacked {
        Ok(unpacked) => {
            if let Err(e) = super::check_pinned(store, key, entry, &unpacked.sha256, unpacked.size)
            {
                psql.kill().await;
                return Err(e);
            }
            let actual = hex::encode(unpacked.sha256);
            let GuardedStdin {
                mut guard,
                mut stdin,
            } = unpacked.sink;
            match guard.finish(&mut stdin) {
                Ok(()) => {}
                Err(PushError::Refused(r)) => {
                    psql.kill().await;
                    return Err(refused(store, key, version, r));
                }
                Err(PushError::Forward(_)) => {
                    drop((stdin, open_input));
                    psql.finish().await?;
                    return Err(sink_error(std::io::ErrorKind::BrokenPipe.into()));
                }
            }
            tracing::info!(key, sha256 = %actual, neutralised = guard.neutralised(),
                "dump matches its manifest and is SQL only; counting its rows, then committing");
            let analyze: &[u8] = if config.restore.analyze { ANALYZE } else { b"" };
            let committed = stdin
                .write_all(validate::row_count_guard(tables).as_bytes())
                .and_then(|()| stdin.write_all(analyze))
                .and_then(|()| stdin.write_all(postgres::RESTORE_COMMIT))
                .and_then(|()| stdin.flush());
            drop((stdin, open_input));
            psql.finish()
                .await
                .map_err(|e| guard_failure(e, key, &database))?;
            committed.map_err(sink_error)?;
            Ok(Loaded {
                sha256: unpacked.sha256,
                size: unpacked.size,
                uncompressed: unpacked.uncompressed,
                download_seconds: unpacked.download_seconds,
            })
        }
        Err(UnpackError::Sink { source }) => match refusal_of(&source) {
            Some(r) => {
                psql.kill().await;
                Err(refused(store, key, version, r))
            }
            // psql stopped reading: it failed on its own (and rolled back); its error says why.
            None => {
                drop(open_input);
                psql.finish().await?;
                Err(sink_error(source))
            }
        },
        Err(e) => {
            psql.kill().await;
            drop(open_input);
            Err(e.into())
        }
    }
}
