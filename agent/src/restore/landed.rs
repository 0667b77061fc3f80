//! Checks each table of a parallel restore as soon as the session that loaded it has sent its
//! COMMIT, on a connection of its own, while the other tables still load: its rows counted
//! against the manifest, then `ANALYZE`d. What this does not settle, the checks after the load
//! do, as before ([`crate::validate::row_counts`], the restore's `ANALYZE`): the staging copy
//! still takes the target's place only once every table's count matched.
//!
//! A table loads in one transaction, so a count sees none of its rows or all of them. A count
//! that matches the manifest is final: only the restore writes to its staging database (a new
//! one, under a name no one else uses), the dump's
//! triggers and rules are created after the tables, and only tables that no table inherits
//! from come here (a parent's count takes in rows loaded elsewhere). A count that does not
//! match (the COMMIT has not run yet, or the rows are wrong) leaves the table to the counts
//! after the load, which decide; so does any error here. Tables the manifest counts no rows in
//! are left to them too (an empty count proves nothing before the COMMIT ran). A table loaded
//! with COPY FREEZE was truncated in its transaction, so its count waits for that COMMIT.
//!
//! Partitions are counted but not analyzed (`ANALYZE` of their root analyzes them), and a table
//! with extended statistics is analyzed again after the post-data created them. The checks run
//! only while the load goes on, one statement at a time and without parallel workers; once
//! every session has ended (its last COMMIT ran), what they have not settled is left to the checks
//! after the load, which run over all the sessions with the server's parallel workers. Their
//! connection is opened when the first table lands; if the server refuses it (its connection
//! limit), every table is counted after the load.

use std::collections::HashSet;

use tokio::sync::mpsc;
use tokio_postgres::{Client, SimpleQueryMessage};
use tokio_util::sync::CancellationToken;

use crate::engine::EngineError;
use crate::engine::postgres::{self, ConnParams, LandingTable};

/// A table whose whole load a session has sent, with what the manifest counts in it.
#[derive(Debug, Clone)]
pub struct Landing {
    pub table: LandingTable,
    /// Its index in the manifest's tables.
    pub manifest_index: usize,
    /// Its rows in the manifest (more than none).
    pub rows: i64,
}

/// What was settled while the tables loaded.
#[derive(Debug, Default)]
pub struct Checked {
    /// The manifest's tables (by index) whose count matched.
    pub counted: HashSet<usize>,
    /// The tables `ANALYZE`d (by oid).
    pub analyzed: HashSet<u32>,
}

/// Checks each table sent on `landed` while the load goes on (see the module documentation);
/// with `analyze`, analyzes each one whose count matched. Once `loaded` is cancelled (every
/// session has ended) it takes no more tables, and the statement it is running
/// is cancelled and waited for: what is left, the checks after the load do over all the
/// sessions, with the server's parallel workers.
pub async fn check(
    params: &ConnParams,
    analyze: bool,
    mut landed: mpsc::UnboundedReceiver<Landing>,
    loaded: &CancellationToken,
) -> Checked {
    let mut checked = Checked::default();
    let mut client = None;
    loop {
        let landing = tokio::select! {
            biased;
            () = loaded.cancelled() => break,
            landing = landed.recv() => match landing {
                Some(landing) => landing,
                None => break,
            },
        };
        // Connected at the first table that lands, once the sessions have their connections:
        // a server at its connection limit refuses this one, not a session's.
        if client.is_none() {
            let connected = tokio::select! {
                biased;
                () = loaded.cancelled() => break,
                connected = connect(params) => connected,
            };
            match connected {
                Ok(connected) => client = Some(connected),
                Err(e) => {
                    tracing::info!(error = %e,
                        "tables are counted after the load, not as they land");
                    break;
                }
            }
        }
        let Some(client) = client.as_ref() else { break };
        let qualified = &landing.table.qualified;
        let count = run(
            client,
            params,
            loaded,
            &format!("SELECT count(*) FROM {qualified}"),
        )
        .await;
        let rows = count.and_then(|messages| {
            messages.into_iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0)?.parse::<i64>().ok(),
                _ => None,
            })
        });
        if rows != Some(landing.rows) {
            tracing::debug!(table = %qualified, ?rows, expected = landing.rows,
                "left to the counts after the load");
            continue;
        }
        checked.counted.insert(landing.manifest_index);
        if analyze && !landing.table.partition {
            let sql = format!("ANALYZE {qualified}");
            if run(client, params, loaded, &sql).await.is_some() {
                checked.analyzed.insert(landing.table.oid);
            }
        }
    }
    checked
}

/// A connection for the checks: no statement timeout (the role's would cut a big table's
/// count short), `row_security` off (a table whose policies would filter the count fails
/// instead), and no parallel workers: beside the load a count takes one core (on a 2-core
/// machine parallel workers took twice the CPU for no shorter count, from the sessions).
async fn connect(params: &ConnParams) -> Result<Client, EngineError> {
    let client = postgres::connect(params).await?;
    client
        .batch_execute(
            "SET statement_timeout = 0; SET row_security = off; \
             SET max_parallel_workers_per_gather = 0",
        )
        .await
        .map_err(postgres::query_error("set up a session", &params.database))?;
    Ok(client)
}

/// Runs `sql`, its messages (`None` if it failed); once `loaded` is cancelled, asks the server
/// to cancel it and waits until it ended, so no statement of the checks outlives the load.
async fn run(
    client: &Client,
    params: &ConnParams,
    loaded: &CancellationToken,
    sql: &str,
) -> Option<Vec<SimpleQueryMessage>> {
    let query = client.simple_query(sql);
    tokio::pin!(query);
    tokio::select! {
        biased;
        done = &mut query => done.ok(),
        () = loaded.cancelled() => {
            postgres::cancel_running(client, params).await;
            let _ = query.await;
            None
        }
    }
}
