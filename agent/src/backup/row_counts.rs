//! A PostgreSQL backup's row counts, taken from the dump itself: the section index counts
//! each table's COPY rows as the dump streams past, so the source is read once (a `count(*)`
//! of every table beside pg_dump read each table twice). What the dump's rows cannot answer
//! is left to a `count(*)` in the backup's snapshot: every table when the dump has no
//! index, and a table with a descendant that has no rows in the dump (a foreign table that
//! inherits from it, say), since a `count(*)` on a table counts its descendants' rows too.

use std::collections::HashMap;

use tokio_util::sync::CancellationToken;

use crate::engine::EngineError;
use crate::engine::postgres::sections::schema_and_table;
use crate::engine::postgres::{SnapshotSession, TableRows, UserTable};
use crate::manifest::{DumpSection, SectionKind};

/// Rows of each of `tables`, from the dump's `sections` (when it has an index) and, for the
/// tables those cannot answer for, `count(*)` in `session`'s snapshot (which pg_dump read).
/// Cancelled, it returns what it has: the caller discards the backup.
pub async fn count(
    session: &SnapshotSession,
    tables: &[UserTable],
    sections: Option<&[DumpSection]>,
    cancel: &CancellationToken,
) -> Result<Vec<TableRows>, EngineError> {
    let counted = from_sections(tables, sections.unwrap_or_default());
    let left: Vec<&UserTable> = tables
        .iter()
        .zip(&counted)
        .filter_map(|(t, rows)| rows.is_none().then_some(t))
        .collect();
    if !left.is_empty() {
        tracing::debug!(
            tables = left.len(),
            "counting rows with count(*): the dump's rows do not answer for these tables"
        );
    }
    let fallback = tokio::select! {
        // A count stuck behind a lock must not outlive a cancelled run.
        rows = session.count(&left) => rows?,
        () = cancel.cancelled() => Vec::new(),
    };
    Ok(merge(tables, counted, fallback))
}

/// Each of `tables`' rows as the dump's `sections` hold them (its own and its descendants'),
/// in `tables`' order; `None` for a table they cannot answer for.
fn from_sections(tables: &[UserTable], sections: &[DumpSection]) -> Vec<Option<i64>> {
    let by_name: HashMap<(&str, &str), u32> = tables
        .iter()
        .map(|t| ((t.schema.as_str(), t.table.as_str()), t.oid))
        .collect();
    let mut dumped: HashMap<u32, i64> = HashMap::new();
    for section in sections.iter().filter(|s| s.kind == SectionKind::Data) {
        let Some(name) = &section.table else {
            continue; // sequence values, large objects
        };
        // A table the dump has rows for but that is no user table (an extension's
        // configuration table) is not counted, as `count(*)` did not count it.
        if let Some((schema, table)) = schema_and_table(name)
            && let Some(oid) = by_name.get(&(schema.as_str(), table.as_str()))
        {
            *dumped.entry(*oid).or_default() += section.copy_rows as i64;
        }
    }
    tables
        .iter()
        .map(|t| {
            std::iter::once(&t.oid)
                .chain(&t.descendants)
                .map(|oid| dumped.get(oid))
                .sum::<Option<i64>>()
        })
        .collect()
}

/// `counted` (from [`from_sections`]) completed with `fallback`, the `count(*)` of each table
/// it left out, in order.
fn merge(
    tables: &[UserTable],
    counted: Vec<Option<i64>>,
    fallback: Vec<TableRows>,
) -> Vec<TableRows> {
    let mut fallback = fallback.into_iter();
    tables
        .iter()
        .zip(counted)
        .filter_map(|(t, rows)| match rows {
            Some(rows) => Some(TableRows {
                schema: t.schema.clone(),
                table: t.table.clone(),
                rows,
            }),
            None => fallback.next(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(schema: &str, name: &str, oid: u32, descendants: &[u32]) -> UserTable {
        UserTable {
            schema: schema.into(),
            table: name.into(),
            qualified: String::new(),
            oid,
            descendants: descendants.to_vec(),
        }
    }

    fn data(table: Option<&str>, rows: u64) -> DumpSection {
        DumpSection {
            kind: SectionKind::Data,
            offset: 0,
            size_bytes: 0,
            uncompressed_size_bytes: 0,
            sha256: String::new(),
            table: table.map(str::to_owned),
            copy: None,
            ends_in_copy: false,
            tablespace: None,
            copy_rows: rows,
        }
    }

    #[test]
    fn a_table_counts_its_chunks_and_its_descendants_rows() {
        let tables = [
            table("public", "parent", 1, &[2, 3]),
            table("public", "child", 2, &[3]),
            table("public", "grandchild", 3, &[]),
            table("My \"S\"", "T.x", 4, &[]),
            table("public", "empty", 5, &[]),
        ];
        let sections = [
            data(Some("public.parent"), 2),
            data(Some("public.child"), 10),
            data(Some("public.child"), 5), // a second chunk of the same table
            data(Some("public.grandchild"), 1),
            data(Some("\"My \"\"S\"\"\".\"T.x\""), 7),
            data(Some("public.empty"), 0),
            data(None, 0),                     // sequence values
            data(Some("ext.config_table"), 9), // not a user table
        ];
        assert_eq!(
            from_sections(&tables, &sections),
            [Some(18), Some(16), Some(1), Some(7), Some(0)]
        );
    }

    #[test]
    fn tables_the_dump_cannot_answer_for_are_left_to_count() {
        // 9 is a descendant with no rows in the dump (a foreign table); 5 has no section.
        let tables = [
            table("public", "parent", 1, &[9]),
            table("public", "plain", 2, &[]),
            table("public", "missing", 5, &[]),
        ];
        let sections = [
            data(Some("public.parent"), 2),
            data(Some("public.plain"), 3),
        ];
        let counted = from_sections(&tables, &sections);
        assert_eq!(counted, [None, Some(3), None]);
        assert!(from_sections(&tables, &[]).iter().all(Option::is_none));
        let rows = |t: &str, rows| TableRows {
            schema: "public".into(),
            table: t.into(),
            rows,
        };
        assert_eq!(
            merge(
                &tables,
                counted,
                vec![rows("parent", 40), rows("missing", 0)]
            ),
            [rows("parent", 40), rows("plain", 3), rows("missing", 0)]
        );
    }
}
