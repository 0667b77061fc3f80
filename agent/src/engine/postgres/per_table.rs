//! One statement per table, run over a few sessions at once: each session takes the next
//! table as soon as it is done with one, in the order given (biggest first, so the last to
//! finish is a small one). A restore counts the rows of its staging copy and analyzes it this
//! way before the copy takes the target's place.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_postgres::SimpleQueryMessage;

use super::{ConnParams, connect, query_error};
use crate::engine::EngineError;

/// A statement about one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStatement {
    /// The table, as errors name it.
    pub table: String,
    pub sql: String,
}

/// Runs every statement over up to `sessions` connections to `params`' database; returns the
/// first column of each one's first row (as text, `None` without one), in the statements'
/// order. `what` says what the statements do, for errors, which also name the table. After an
/// error no session starts another statement, and each finishes the one it runs before this
/// returns: no statement of it is still running on the server then (a staging database with
/// sessions in it could not be renamed).
///
/// The sessions run without a statement timeout (the role's would cut a big table's count
/// short) and with `row_security` off: a table whose row-level security would filter what
/// the role sees fails with the server's error instead of giving a short count.
pub async fn run(
    params: &ConnParams,
    statements: &[TableStatement],
    sessions: usize,
    what: &'static str,
) -> Result<Vec<Option<String>>, EngineError> {
    if statements.is_empty() {
        return Ok(Vec::new());
    }
    let queue = Mutex::new(statements.iter().enumerate());
    let failed = AtomicBool::new(false);
    let next = || {
        if failed.load(Ordering::Relaxed) {
            return None;
        }
        queue.lock().unwrap_or_else(|p| p.into_inner()).next()
    };
    let worker = || async {
        let client = connect(params).await?;
        client
            .batch_execute("SET statement_timeout = 0; SET row_security = off")
            .await
            .map_err(query_error("set up a session", &params.database))?;
        let mut answers = Vec::new();
        while let Some((i, statement)) = next() {
            let database = format!("{} (table {})", params.database, statement.table);
            let messages = client
                .simple_query(&statement.sql)
                .await
                .map_err(query_error(what, &database))?;
            let first = messages.into_iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
                _ => None,
            });
            answers.push((i, first.flatten()));
        }
        Ok::<_, EngineError>(answers)
    };
    let workers = (0..sessions.clamp(1, statements.len())).map(|_| async {
        let done = worker().await;
        if done.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        done
    });
    let mut answers: Vec<Option<String>> = vec![None; statements.len()];
    for done in futures::future::join_all(workers).await {
        for (i, answer) in done? {
            answers[i] = answer;
        }
    }
    Ok(answers)
}

/// What a database-wide `ANALYZE` would analyze, but each partitioned tree once, by its root
/// (which analyzes its partitions too): plain tables and materialized views that are no
/// partition, and partitioned roots; not foreign tables or catalogs. Quoted and qualified,
/// biggest first (a root by the size of its tree); with its oid, and whether it has extended
/// statistics.
const ANALYZABLE: &str = "SELECT format('%I.%I', n.nspname, c.relname), c.oid, \
       EXISTS (SELECT 1 FROM pg_catalog.pg_statistic_ext e WHERE e.stxrelid = c.oid) \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'm', 'p') AND NOT c.relispartition \
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
       AND n.nspname !~ '^pg_(toast|temp_)' \
     ORDER BY CASE c.relkind WHEN 'p' THEN \
         (SELECT sum(pg_catalog.pg_total_relation_size(t.relid)) \
          FROM pg_catalog.pg_partition_tree(c.oid) t) \
       ELSE pg_catalog.pg_total_relation_size(c.oid) END DESC NULLS LAST, 1";

/// `ANALYZE`s what a database-wide `ANALYZE` of `params`' database would, over up to
/// `sessions` connections, but the relations (by oid) in `analyzed` without extended
/// statistics (those were analyzed before theirs existed); returns how many relations it
/// named. (A relation the role may not analyze is skipped with a server warning, as by
/// `ANALYZE` itself.)
pub async fn analyze(
    params: &ConnParams,
    analyzed: &HashSet<u32>,
    sessions: usize,
) -> Result<usize, EngineError> {
    let client = connect(params).await?;
    let relations: Vec<String> = client
        .query(ANALYZABLE, &[])
        .await
        .map_err(query_error(
            "list the relations to analyze",
            &params.database,
        ))?
        .iter()
        .filter(|r| !analyzed.contains(&r.get::<_, u32>(1)) || r.get::<_, bool>(2))
        .map(|r| r.get(0))
        .collect();
    drop(client);
    let statements: Vec<TableStatement> = relations
        .into_iter()
        .map(|table| TableStatement {
            sql: format!("ANALYZE {table}"),
            table,
        })
        .collect();
    run(params, &statements, sessions, "analyze").await?;
    Ok(statements.len())
}
