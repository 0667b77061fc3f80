//! Checks each table of a parallel restore as soon as the session that loaded it has sent its
//! COMMIT, on a connection of its own, while the other tables still load: its rows counted
//! against the manifest, then `ANALYZE`d. What this does not settle, the checks after the load
//! do, as before ([`crate::validate::row_counts`], the restore's `ANALYZE`): the staging copy
//! still takes the target's place only once every table's count matched.
//!
//! A table loads in one transaction, so a count sees none of its rows or all of them. A count
//! that matches the manifest is final: nothing else writes to the staging database, the dump's
//! triggers and rules are created after the tables, and only tables that no table inherits
//! from come here (a parent's count takes in rows loaded elsewhere). A count that does not
//! match (the COMMIT has not run yet, or the rows are wrong) leaves the table to the counts
//! after the load, which decide; so does any error here. Tables the manifest counts no rows in
//! are left to them too (an empty count proves nothing before the COMMIT ran). A table loaded
//! with COPY FREEZE was truncated in its transaction, so its count waits for that COMMIT.
//!
//! Partitions are counted but not analyzed (`ANALYZE` of their root analyzes them), and a table
//! with extended statistics is analyzed again after the post-data created them. A count beside
//! the load takes no parallel workers; the last table's, which lands when nothing else is
//! loading, takes the server's setting.

use std::collections::HashSet;

use tokio::sync::mpsc;
use tokio_postgres::SimpleQueryMessage;

use crate::engine::postgres::{self, ConnParams, LandingTable};

/// A table whose whole load a session has sent, with what the manifest counts in it.
#[derive(Debug, Clone)]
pub struct Landing {
    pub table: LandingTable,
    /// Its index in the manifest's tables.
    pub manifest_index: usize,
    /// Its rows in the manifest (more than none).
    pub rows: i64,
    /// Nothing else was loading when its load was sent: its count may take parallel workers.
    pub last: bool,
}

/// What was settled while the tables loaded.
#[derive(Debug, Default)]
pub struct Checked {
    /// The manifest's tables (by index) whose count matched.
    pub counted: HashSet<usize>,
    /// The tables `ANALYZE`d (by oid).
    pub analyzed: HashSet<u32>,
}

/// Checks each table sent on `landed` until the channel closes (see the module
/// documentation); with `analyze`, analyzes each one whose count matched.
pub async fn check(
    params: &ConnParams,
    analyze: bool,
    mut landed: mpsc::UnboundedReceiver<Landing>,
) -> Checked {
    let mut checked = Checked::default();
    let client = async {
        let client = postgres::connect(params).await?;
        client
            .batch_execute("SET statement_timeout = 0; SET row_security = off")
            .await
            .map_err(postgres::query_error("set up a session", &params.database))?;
        Ok::<_, crate::engine::EngineError>(client)
    };
    let client = match client.await {
        Ok(client) => client,
        Err(e) => {
            tracing::info!(error = %e, "tables are counted after the load, not as they land");
            return checked;
        }
    };
    while let Some(landing) = landed.recv().await {
        let qualified = &landing.table.qualified;
        // Beside the load, a count takes one core: parallel workers took twice the CPU for no
        // shorter count on a 2-core machine, from the sessions loading. The last table's count
        // has the machine to itself.
        let workers = if landing.last { "DEFAULT" } else { "0" };
        let count = client
            .simple_query(&format!(
                "SET max_parallel_workers_per_gather = {workers}; \
                 SELECT count(*) FROM {qualified}"
            ))
            .await;
        let rows = count.ok().and_then(|messages| {
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
            match client.batch_execute(&format!("ANALYZE {qualified}")).await {
                Ok(()) => {
                    checked.analyzed.insert(landing.table.oid);
                }
                Err(e) => tracing::debug!(table = %qualified, error = %e,
                    "left to the ANALYZE after the load"),
            }
        }
    }
    checked
}
