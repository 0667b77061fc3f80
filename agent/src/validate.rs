//! Validation after a restore: per-table row counts against the manifest (exact: the
//! manifest's are the rows in the dump), configured SQL checks, and HTTP smoke checks against
//! the application ([`http`]). Every check becomes a [`CheckResult`] in the restore report; this
//! module decides pass or fail, the caller decides what a failure means.

pub mod http;

use serde::Serialize;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::config::{Expectation, SqlCheck};
use crate::engine::EngineError;
use crate::engine::postgres::per_table::{self, TableStatement};
use crate::engine::postgres::{self, ConnParams, TableRows};

/// What kind of check produced a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    RowCount,
    Sql,
    Http,
    /// The backup's objects in the bucket, checked again after the engine read them.
    Objects,
}

/// One check, what it expected, what it found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    pub kind: CheckKind,
    pub name: String,
    pub expected: String,
    pub actual: String,
    pub passed: bool,
}

/// Every table in the manifest must be in `params`' database with exactly its row count.
/// The tables are counted over up to `sessions` connections at once, biggest first.
pub async fn row_counts(
    params: &ConnParams,
    expected: &[TableRows],
    sessions: usize,
) -> Result<Vec<CheckResult>, EngineError> {
    let database = &params.database;
    let present = {
        let client = postgres::connect(params).await?;
        postgres::list_user_tables(&client, database).await?
    };
    let mut counted: Vec<usize> = Vec::new();
    let mut statements = Vec::new();
    let mut order: Vec<usize> = (0..expected.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(expected[i].rows));
    for i in order {
        let want = &expected[i];
        if let Some(table) = present
            .iter()
            .find(|t| t.schema == want.schema && t.table == want.table)
        {
            counted.push(i);
            statements.push(TableStatement {
                table: table.qualified.clone(),
                sql: format!("SELECT count(*) FROM {}", table.qualified),
            });
        }
    }
    let answers = per_table::run(params, &statements, sessions, "count rows").await?;
    let mut actual: Vec<Option<i64>> = vec![None; expected.len()];
    for (i, answer) in counted.into_iter().zip(answers) {
        actual[i] = answer.and_then(|text| text.parse().ok());
    }
    Ok(expected
        .iter()
        .zip(actual)
        .map(|(want, rows)| CheckResult {
            kind: CheckKind::RowCount,
            name: format!("rows in {}.{}", want.schema, want.table),
            expected: want.rows.to_string(),
            actual: rows.map_or("table missing".into(), |r| r.to_string()),
            passed: rows == Some(want.rows),
        })
        .collect())
}

/// The row counts that did not match, as one line for an error: `schema.table: expected N,
/// found M` (or `table missing`), the first `limit` of them and how many more.
pub fn differences(checks: &[CheckResult], limit: usize) -> String {
    let failed: Vec<&CheckResult> = checks.iter().filter(|c| !c.passed).collect();
    let mut line = failed
        .iter()
        .take(limit)
        .map(|c| format!("{}: expected {}, found {}", c.name, c.expected, c.actual))
        .collect::<Vec<_>>()
        .join("; ");
    if failed.len() > limit {
        line.push_str(&format!("; and {} more", failed.len() - limit));
    }
    line
}

/// Starts the error a [`row_count_guard`] raises; the rest of its line is what differed.
pub const GUARD_MARK: &str = "strongroom row counts differ: ";

/// A `DO` block that raises an error, which aborts its transaction, unless every table of
/// `expected` holds exactly its rows. psql runs it before the agent's `COMMIT`, so a copy that
/// does not hold the manifest's rows is never committed.
pub fn row_count_guard(expected: &[TableRows]) -> String {
    let mut body = String::from("DECLARE found bigint; wrong text[] := '{}';\nBEGIN\n");
    for t in expected {
        let name = format!("rows in {}.{}", t.schema, t.table);
        body.push_str(&format!(
            "SELECT count(*) INTO found FROM {}.{};\nIF found <> {rows} THEN wrong := wrong || \
             format('%s: expected %s, found %s', {name}, {rows}, found); END IF;\n",
            postgres::quote_ident(&t.schema),
            postgres::quote_ident(&t.table),
            rows = t.rows,
            name = quote_literal(&name),
        ));
    }
    body.push_str(&format!(
        "IF cardinality(wrong) > 0 THEN RAISE EXCEPTION '{GUARD_MARK}%', \
         array_to_string(wrong, '; '); END IF;\nEND"
    ));
    let mut tag = String::from("$strongroom_counts$");
    while body.contains(&tag) {
        tag.insert(tag.len() - 1, 'x');
    }
    format!("\nDO {tag}\n{body}\n{tag};\n")
}

/// The row-count checks of a load whose [`row_count_guard`] passed before its `COMMIT`: every
/// table held exactly the manifest's rows in the transaction that committed them.
pub fn guarded_row_counts(expected: &[TableRows]) -> Vec<CheckResult> {
    expected
        .iter()
        .map(|want| CheckResult {
            kind: CheckKind::RowCount,
            name: format!("rows in {}.{}", want.schema, want.table),
            expected: want.rows.to_string(),
            actual: format!("{} (counted before commit)", want.rows),
            passed: true,
        })
        .collect()
}

/// `text` as an SQL string literal (standard_conforming_strings, which pg_dump sets).
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Runs each query and checks the first column of its first row.
pub async fn sql_checks(client: &Client, checks: &[SqlCheck]) -> Vec<CheckResult> {
    let mut results = Vec::with_capacity(checks.len());
    for check in checks {
        let value = match client.simple_query(&check.query).await {
            Ok(messages) => Ok(messages.into_iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
                _ => None,
            })),
            Err(e) => Err(e
                .as_db_error()
                .map_or(e.to_string(), |db| db.message().to_owned())),
        };
        let (passed, actual) = match value {
            Ok(Some(Some(text))) => (meets(&check.expect, &text), text),
            Ok(Some(None)) => (false, "NULL".into()),
            Ok(None) => (false, "no rows".into()),
            Err(e) => (false, format!("query failed: {e}")),
        };
        results.push(CheckResult {
            kind: CheckKind::Sql,
            name: check.name.clone(),
            expected: describe(&check.expect),
            actual,
            passed,
        });
    }
    results
}

/// Whether `value` meets every condition of `expect`.
pub fn meets(expect: &Expectation, value: &str) -> bool {
    let number = value.trim().parse::<f64>().ok();
    expect.equals.as_ref().is_none_or(|want| want == value)
        && expect
            .min
            .is_none_or(|min| number.is_some_and(|n| n >= min))
        && expect
            .max
            .is_none_or(|max| number.is_some_and(|n| n <= max))
}

/// `expect` in words, for the report.
pub fn describe(expect: &Expectation) -> String {
    let mut parts = Vec::new();
    if let Some(v) = &expect.equals {
        parts.push(format!("= {v:?}"));
    }
    if let Some(v) = expect.min {
        parts.push(format!(">= {v}"));
    }
    if let Some(v) = expect.max {
        parts.push(format!("<= {v}"));
    }
    parts.join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(equals: Option<&str>, min: Option<f64>, max: Option<f64>) -> Expectation {
        Expectation {
            equals: equals.map(str::to_owned),
            min,
            max,
        }
    }

    #[test]
    fn expectations_are_all_required() {
        assert!(meets(&expect(None, Some(10.0), None), "20000"));
        assert!(!meets(&expect(None, Some(10.0), None), "9"));
        assert!(!meets(&expect(None, Some(10.0), None), "many"));
        assert!(meets(&expect(None, Some(1.0), Some(5.0)), "5"));
        assert!(!meets(&expect(None, Some(1.0), Some(5.0)), "6"));
        assert!(meets(&expect(Some("ok"), None, None), "ok"));
        assert!(!meets(&expect(Some("ok"), None, None), "ok "));
        assert_eq!(
            describe(&expect(Some("a"), Some(1.0), None)),
            "= \"a\" and >= 1"
        );
    }

    #[test]
    fn differences_name_each_table_up_to_the_limit() {
        let check = |name: &str, passed| CheckResult {
            kind: CheckKind::RowCount,
            name: name.into(),
            expected: "1".into(),
            actual: "2".into(),
            passed,
        };
        let checks = [
            check("a", false),
            check("b", true),
            check("c", false),
            check("d", false),
        ];
        assert_eq!(
            differences(&checks, 2),
            "a: expected 1, found 2; c: expected 1, found 2; and 1 more"
        );
    }

    #[test]
    fn the_row_count_guard_quotes_every_name_and_keeps_its_dollar_tag_unique() {
        let tables = [
            TableRows {
                schema: "public".into(),
                table: "it's \"odd\" $strongroom_counts$".into(),
                rows: 3,
            },
            TableRows {
                schema: "Ünï".into(),
                table: "t".into(),
                rows: 0,
            },
        ];
        let sql = row_count_guard(&tables);
        assert!(sql.starts_with("\nDO $strongroom_countsx$\n"), "{sql}");
        assert!(sql.ends_with("\n$strongroom_countsx$;\n"), "{sql}");
        assert_eq!(sql.matches("$strongroom_countsx$").count(), 2);
        assert!(sql.contains(r#"FROM "public"."it's ""odd"" $strongroom_counts$";"#));
        assert!(sql.contains(r#"'rows in public.it''s "odd" $strongroom_counts$', 3, found)"#));
        assert!(sql.contains(r#"FROM "Ünï"."t";"#) && sql.contains("IF found <> 0 THEN"));
    }
}
