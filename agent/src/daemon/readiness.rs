//! The readiness checks, run in the background so a probe never waits on I/O: the local
//! database answers (and no restore is loading into it), the bucket is reachable and protected.
//! ClickHouse must answer with a version that can BACKUP to S3, and no RESTORE may be running
//! in its `system.backups`.
//!
//! The database is checked every `daemon.readiness_interval_seconds`; the bucket at most every
//! `daemon.s3_check_interval_seconds` (S3 requests cost money). A restore in progress is a
//! `strongroom-psql` session in this database (or in a staging database of a parallel restore
//! into it): the restore Job's psql, seen in
//! `pg_stat_activity`, which the least-privilege backup role may read. A database that does
//! not exist yet while such a session loads its staging database (a parallel restore with
//! `--create`) is being restored, as seen from the `postgres` database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{ClickHouseConfig, Config, PostgresConfig, S3Config};
use crate::engine::clickhouse::ClickHouse;
use crate::engine::postgres;
use crate::metrics::Metrics;
use crate::state::{AgentState, Check};
use crate::store::ObjectStore;
use crate::store::s3::S3Store;

const RESTORE_OPERATIONS: &str = "SELECT count() FROM system.backups WHERE status = 'RESTORING'";

/// The restore's psql in the database `$2`, or in a staging database of a parallel restore
/// into it (`$1`: [`postgres::staging_prefix`]).
const RESTORE_SESSIONS: &str = "SELECT count(*) FROM pg_stat_activity \
     WHERE application_name = 'strongroom-psql' \
       AND (datname = $2 OR starts_with(datname, $1)) \
       AND pid <> pg_backend_pid()";

/// [`RESTORE_SESSIONS`] if the database `$2` does not exist (a parallel restore with
/// `--create`, whose staging database takes the name at the end), else none.
const RESTORE_SESSIONS_OF_ABSENT: &str = "SELECT count(*) FROM pg_stat_activity \
     WHERE application_name = 'strongroom-psql' \
       AND (datname = $2 OR starts_with(datname, $1)) \
       AND pid <> pg_backend_pid() \
       AND NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = $2)";

/// Runs the checks until `stop` fires.
pub async fn run(
    state: Arc<AgentState>,
    metrics: Arc<Metrics>,
    mut config: watch::Receiver<Arc<Config>>,
    clock: Clock,
    stop: CancellationToken,
) {
    let mut store: Option<(String, S3Store)> = None;
    let mut s3_checked: Option<Instant> = None;
    loop {
        let current = config.borrow_and_update().clone();
        let interval = Duration::from_secs(current.daemon.readiness_interval_seconds);
        let (check, restoring) = match &current.postgresql {
            Some(pg) => check_database(pg, interval, clock).await,
            None => (ok("no database configured", clock), false),
        };
        metrics.dependency("postgresql", check.ok);
        state.set_database(check, restoring);
        let (check, restoring) = match &current.clickhouse {
            Some(ch) => check_clickhouse(ch, interval, clock).await,
            None => (ok("no ClickHouse configured", clock), false),
        };
        metrics.dependency("clickhouse", check.ok);
        state.set_clickhouse(check, restoring);

        let s3_due = s3_checked.is_none_or(|t| {
            t.elapsed() >= Duration::from_secs(current.daemon.s3_check_interval_seconds)
        });
        if s3_due {
            let digest = serde_json::to_string(&current.s3).expect("serialisable");
            if store.as_ref().is_none_or(|(d, _)| *d != digest) {
                store = Some((digest, S3Store::connect(&current.s3).await));
            }
            let (_, client) = store.as_ref().expect("set above");
            let check = check_s3(client, &current.s3, interval, clock).await;
            metrics.dependency("s3", check.ok);
            state.set_s3(check);
            s3_checked = Some(Instant::now());
        }

        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
            changed = config.changed() => if changed.is_err() { return },
        }
    }
}

fn ok(detail: impl Into<String>, clock: Clock) -> Check {
    Check {
        ok: true,
        detail: detail.into(),
        checked_at: Some(clock.now()),
    }
}

fn failed(detail: impl Into<String>, clock: Clock) -> Check {
    Check {
        ok: false,
        detail: detail.into(),
        checked_at: Some(clock.now()),
    }
}

/// Connects as the backup role and counts restore sessions in the database.
async fn check_database(pg: &PostgresConfig, limit: Duration, clock: Clock) -> (Check, bool) {
    let params = match pg.backup_params() {
        Ok(p) => p,
        Err(e) => return (failed(e.to_string(), clock), false),
    };
    let prefix = postgres::staging_prefix(&params.database);
    let sessions = async |client: tokio_postgres::Client, sql: &str| {
        let row = (client.query_one(sql, &[&prefix, &params.database]).await)
            .map_err(|e| e.to_string())?;
        Ok::<i64, String>(row.get(0))
    };
    let probe = async {
        match postgres::connect(&params).await {
            Ok(client) => sessions(client, RESTORE_SESSIONS).await,
            // The database may not exist yet because a restore is creating it.
            Err(e) => match postgres::connect(&params.with_database("postgres")).await {
                Ok(client) => match sessions(client, RESTORE_SESSIONS_OF_ABSENT).await {
                    Ok(restores) if restores > 0 => Ok(restores),
                    _ => Err(e.to_string()),
                },
                Err(_) => Err(e.to_string()),
            },
        }
    };
    match tokio::time::timeout(limit, probe).await {
        Ok(Ok(restores)) => (ok(format!("{} answers", pg.host), clock), restores > 0),
        Ok(Err(e)) => (failed(e, clock), false),
        Err(_) => (
            failed(
                format!("{} did not answer within {}s", pg.host, limit.as_secs()),
                clock,
            ),
            false,
        ),
    }
}

/// ClickHouse answers as the backup user, is new enough, and runs no RESTORE.
async fn check_clickhouse(ch: &ClickHouseConfig, limit: Duration, clock: Clock) -> (Check, bool) {
    let login = match ch.backup_login() {
        Ok(l) => l,
        Err(e) => return (failed(e.to_string(), clock), false),
    };
    let server = ClickHouse::new(&login);
    let probe = async {
        let version = server
            .require_backup_support()
            .await
            .map_err(|e| e.to_string())?;
        let restoring = server
            .scalar(RESTORE_OPERATIONS)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((version, restoring.is_some_and(|n| n != "0")))
    };
    match tokio::time::timeout(limit, probe).await {
        Ok(Ok((version, restoring))) => (
            ok(
                format!("{} answers (ClickHouse {})", ch.url, version.text),
                clock,
            ),
            restoring,
        ),
        Ok(Err(e)) => (failed(e, clock), false),
        Err(_) => (
            failed(
                format!("{} did not answer within {}s", ch.url, limit.as_secs()),
                clock,
            ),
            false,
        ),
    }
}

/// The bucket answers, and has Object Lock if the config requires it.
async fn check_s3(store: &S3Store, s3: &S3Config, limit: Duration, clock: Clock) -> Check {
    match tokio::time::timeout(limit, store.protection()).await {
        Ok(Ok(p)) if p.object_lock_enabled || !s3.object_lock.required => {
            ok(format!("bucket {} reachable", s3.bucket), clock)
        }
        Ok(Ok(_)) => failed(
            format!(
                "bucket {} has no Object Lock; backups would be refused",
                s3.bucket
            ),
            clock,
        ),
        Ok(Err(e)) => failed(e.to_string(), clock),
        Err(_) => failed(
            format!(
                "bucket {} did not answer within {}s",
                s3.bucket,
                limit.as_secs()
            ),
            clock,
        ),
    }
}
