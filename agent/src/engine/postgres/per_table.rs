//! One statement per table, run over a few sessions at once: each session takes the next
//! table as soon as it is done with one, in the order given (biggest first, so the last to
//! finish is a small one). A restore counts the rows of its staging copy and analyzes it this
//! way before the copy takes the target's place.

use std::sync::Mutex;

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
/// order. `what` says what the statements do, for errors, which also name the table.
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
    let next = || queue.lock().unwrap_or_else(|p| p.into_inner()).next();
    let workers = (0..sessions.clamp(1, statements.len())).map(|_| async {
        let client = connect(params).await?;
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
    });
    let mut answers: Vec<Option<String>> = vec![None; statements.len()];
    for (i, answer) in futures::future::try_join_all(workers)
        .await?
        .into_iter()
        .flatten()
    {
        answers[i] = answer;
    }
    Ok(answers)
}

/// The relations a database-wide `ANALYZE` would analyze (tables, partitioned tables,
/// materialized views; not foreign tables, catalogs or extension members), quoted and
/// qualified, biggest first.
const ANALYZABLE: &str = "SELECT format('%I.%I', n.nspname, c.relname) \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'm', 'p') \
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
       AND n.nspname !~ '^pg_(toast|temp_)' \
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                       WHERE d.classid = 'pg_catalog.pg_class'::regclass \
                         AND d.objid = c.oid AND d.deptype = 'e') \
     ORDER BY pg_catalog.pg_total_relation_size(c.oid) DESC, 1";

/// `ANALYZE`s every relation of `params`' database that a database-wide `ANALYZE` would, over
/// up to `sessions` connections; returns how many. (A relation the role may not analyze is
/// skipped with a server warning, as by `ANALYZE` itself.)
pub async fn analyze(params: &ConnParams, sessions: usize) -> Result<usize, EngineError> {
    let client = connect(params).await?;
    let relations: Vec<String> = client
        .query(ANALYZABLE, &[])
        .await
        .map_err(query_error(
            "list the relations to analyze",
            &params.database,
        ))?
        .iter()
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
