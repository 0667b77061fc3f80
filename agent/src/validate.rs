//! Validation of a restore: per-table row counts against the manifest (exact: the manifest's
//! are the rows in the dump), checked before the load commits ([`row_count_guard`] in a
//! one-session load's transaction, [`row_counts`] of a parallel load's staging copy); then
//! configured SQL checks, and HTTP smoke checks against the application ([`http`]). Every check
//! becomes a [`CheckResult`] in the restore report; this module decides pass or fail, the
//! caller decides what a failure means.

pub mod http;

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::config::{Expectation, SqlCheck};
use crate::engine::EngineError;
use crate::engine::postgres::per_table::{self, TableStatement};
use crate::engine::postgres::{self, ConnParams, TableRows, quote_literal};

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
/// The tables are counted over up to `sessions` connections at once, biggest first; those (by
/// index) in `counted` already were, and matched.
pub async fn row_counts(
    params: &ConnParams,
    expected: &[TableRows],
    counted: &HashSet<usize>,
    sessions: usize,
) -> Result<Vec<CheckResult>, EngineError> {
    let database = &params.database;
    let present = {
        let client = postgres::connect(params).await?;
        postgres::list_user_tables(&client, database).await?
    };
    let present: HashMap<(&str, &str), &str> = present
        .iter()
        .map(|t| ((t.schema.as_str(), t.table.as_str()), t.qualified.as_str()))
        .collect();
    // The manifest's tables that are there, by index, biggest first.
    let mut found: Vec<(usize, &str)> = (expected.iter().enumerate())
        .filter(|(i, _)| !counted.contains(i))
        .filter_map(|(i, want)| {
            let qualified = present.get(&(want.schema.as_str(), want.table.as_str()))?;
            Some((i, *qualified))
        })
        .collect();
    found.sort_by_key(|&(i, _)| std::cmp::Reverse(expected[i].rows));
    let statements: Vec<TableStatement> = (found.iter())
        .map(|(_, qualified)| TableStatement {
            table: (*qualified).to_owned(),
            sql: format!("SELECT count(*) FROM {qualified}"),
        })
        .collect();
    let answers = per_table::run(params, &statements, sessions, "count rows").await?;
    let mut actual: Vec<Option<Option<String>>> = (expected.iter().enumerate())
        .map(|(i, want)| counted.contains(&i).then(|| Some(want.rows.to_string())))
        .collect();
    for ((i, _), answer) in found.iter().zip(answers) {
        actual[*i] = Some(answer);
    }
    Ok(expected
        .iter()
        .zip(actual)
        .map(|(want, answer)| {
            let (actual, passed) = match answer {
                None => ("table missing".to_owned(), false),
                Some(Some(text)) => {
                    let passed = text.parse::<i64>().is_ok_and(|rows| rows == want.rows);
                    (text, passed)
                }
                Some(None) => ("no count returned".to_owned(), false),
            };
            CheckResult {
                kind: CheckKind::RowCount,
                name: format!("rows in {}.{}", want.schema, want.table),
                expected: want.rows.to_string(),
                actual,
                passed,
            }
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

/// How many differing tables an error names before it says how many more.
pub const DIFFERENCES_NAMED: usize = 5;

/// A `DO` block that raises an error, which aborts its transaction, unless every table of
/// `expected` holds exactly its rows (naming the first [`DIFFERENCES_NAMED`] that do not, as
/// [`differences`] does). psql runs it before the agent's `COMMIT`, so a copy that does not
/// hold the manifest's rows is never committed. It first sets the client encoding to UTF8 (the
/// block's own; the dump's may be another) and standard-conforming strings.
pub fn row_count_guard(expected: &[TableRows]) -> String {
    let mut body = String::from("DECLARE n bigint; wrong text[] := '{}';\nBEGIN\n");
    for t in expected {
        let name = quote_literal(&format!("rows in {}.{}", t.schema, t.table));
        let qualified = format!(
            "{}.{}",
            postgres::quote_ident(&t.schema),
            postgres::quote_ident(&t.table)
        );
        body.push_str(&format!(
            "IF to_regclass({regclass}) IS NULL THEN wrong := wrong || \
             format('%s: expected %s, found table missing', {name}, {rows}); ELSE \
             SELECT count(*) INTO n FROM {qualified}; IF n <> {rows} THEN wrong := wrong || \
             format('%s: expected %s, found %s', {name}, {rows}, n); END IF; END IF;\n",
            regclass = quote_literal(&qualified),
            rows = t.rows,
        ));
    }
    body.push_str(&format!(
        "IF cardinality(wrong) > 0 THEN RAISE EXCEPTION '{GUARD_MARK}%', \
         array_to_string(wrong[1:{DIFFERENCES_NAMED}], '; ') || CASE WHEN cardinality(wrong) > \
         {DIFFERENCES_NAMED} THEN format('; and %s more', cardinality(wrong) - \
         {DIFFERENCES_NAMED}) ELSE '' END; END IF;\nEND"
    ));
    let mut tag = String::from("$strongroom_counts$");
    while body.contains(&tag) {
        tag.insert(tag.len() - 1, 'x');
    }
    format!(
        "\nSET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\nDO {tag}\n{body}\n{tag};\n"
    )
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
        assert!(
            sql.starts_with(
                "\nSET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n\
                 DO $strongroom_countsx$\n"
            ),
            "{sql}"
        );
        assert!(sql.ends_with("\n$strongroom_countsx$;\n"), "{sql}");
        assert_eq!(sql.matches("$strongroom_countsx$").count(), 2);
        assert!(
            sql.contains(
                r#"IF to_regclass('"public"."it''s ""odd"" $strongroom_counts$"') IS NULL"#
            )
        );
        assert!(sql.contains(r#"FROM "public"."it's ""odd"" $strongroom_counts$";"#));
        assert!(sql.contains(r#"'rows in public.it''s "odd" $strongroom_counts$', 3, n)"#));
        assert!(sql.contains(r#"FROM "Ünï"."t";"#) && sql.contains("IF n <> 0 THEN"));
        assert!(sql.contains("array_to_string(wrong[1:5], '; ')"));
    }
}
