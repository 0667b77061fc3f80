//! Validation after a restore: per-table row counts against the manifest (exact: the
//! manifest's are the rows in the dump), configured SQL checks, and HTTP smoke checks against
//! the application ([`http`]). Every check becomes a [`CheckResult`] in the restore report; this
//! module decides pass or fail, the caller decides what a failure means.

pub mod http;

use serde::Serialize;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::config::{Expectation, SqlCheck};
use crate::engine::EngineError;
use crate::engine::postgres::{TableRows, count_rows};

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

/// Every table in the manifest must be in the restored database with exactly its row count.
pub async fn row_counts(
    client: &Client,
    database: &str,
    expected: &[TableRows],
) -> Result<Vec<CheckResult>, EngineError> {
    let actual = count_rows(client, database).await?;
    Ok(expected
        .iter()
        .map(|want| {
            let found = actual
                .iter()
                .find(|t| t.schema == want.schema && t.table == want.table);
            CheckResult {
                kind: CheckKind::RowCount,
                name: format!("rows in {}.{}", want.schema, want.table),
                expected: want.rows.to_string(),
                actual: found.map_or("table missing".into(), |t| t.rows.to_string()),
                passed: found.is_some_and(|t| t.rows == want.rows),
            }
        })
        .collect())
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
}
