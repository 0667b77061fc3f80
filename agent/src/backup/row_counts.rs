//! A PostgreSQL backup's row counts, taken from the dump itself: the section index counts
//! each table's COPY rows as the dump streams past, so the source is read once (a `count(*)`
//! of every table beside pg_dump read each table twice). What the dump's rows cannot answer
//! is left to a `count(*)` in the backup's snapshot: every table when the dump has no
//! index, and a table with a descendant that has no rows in the dump (a foreign table that
//! inherits from it, say), since a `count(*)` on a table counts its descendants' rows too.
//! On a standby, pg_dump dumps no rows of unlogged tables (the standby cannot read them, nor
//! count them): the backup holds 0 of their rows, and says so.

use std::collections::HashMap;

use tokio_util::sync::CancellationToken;

use crate::engine::EngineError;
use crate::engine::postgres::sections::schema_and_table;
use crate::engine::postgres::{SnapshotSession, TableRows, UserTable};
use crate::manifest::DumpSection;

/// Rows of each of `tables`, from the dump's `sections` (when it has an index) and, for the
/// tables those cannot answer for, `count(*)` in `session`'s snapshot (which pg_dump read;
/// the session holds a lock on each table). Cancelled, it returns no counts: the caller
/// discards the backup.
pub async fn count(
    session: &SnapshotSession,
    tables: &[UserTable],
    sections: Option<&[DumpSection]>,
    cancel: &CancellationToken,
) -> Result<Vec<TableRows>, EngineError> {
    let standby = session.in_recovery;
    let skipped: Vec<&str> = (tables.iter())
        .filter(|t| standby && t.unlogged)
        .map(|t| t.qualified.as_str())
        .collect();
    if !skipped.is_empty() {
        tracing::warn!(
            tables = %skipped.join(", "),
            "unlogged tables: a backup from a standby holds none of their rows (pg_dump \
             dumps no unlogged data there); they restore empty"
        );
    }
    let counted = from_sections(tables, sections.unwrap_or_default(), standby);
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
    tokio::select! {
        // A count must not outlive a cancelled run.
        rows = session.count(&left) => Ok(merge(tables, counted, rows?)),
        () = cancel.cancelled() => Ok(Vec::new()),
    }
}

/// Each of `tables`' rows as the dump's `sections` hold them (its own and its descendants'),
/// in `tables`' order; `None` for a table they cannot answer for. On a `standby`, unlogged
/// tables hold none.
fn from_sections(
    tables: &[UserTable],
    sections: &[DumpSection],
    standby: bool,
) -> Vec<Option<i64>> {
    let by_name: HashMap<(&str, &str), u32> = tables
        .iter()
        .map(|t| ((t.schema.as_str(), t.table.as_str()), t.oid))
        .collect();
    let mut dumped: HashMap<u32, i64> = (tables.iter())
        .filter(|t| standby && t.unlogged)
        .map(|t| (t.oid, 0))
        .collect();
    for (name, rows) in sections.iter().flat_map(|s| &s.copy_rows) {
        // A COPY into what is no user table (an extension's configuration table, a
        // partitioned table's root) is not counted, as `count(*)` did not count it; its
        // partitions are then counted with `count(*)`.
        if let Some((schema, table)) = schema_and_table(name)
            && let Some(oid) = by_name.get(&(schema.as_str(), table.as_str()))
        {
            *dumped.entry(*oid).or_default() += *rows as i64;
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
    use crate::manifest::SectionKind;

    fn table(schema: &str, name: &str, oid: u32, descendants: &[u32]) -> UserTable {
        UserTable {
            schema: schema.into(),
            table: name.into(),
            qualified: String::new(),
            oid,
            descendants: descendants.to_vec(),
            unlogged: false,
        }
    }

    /// A section holding `rows` rows of a COPY into `table` (none: sequence values).
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
            copy_rows: table.map(|t| (t.to_owned(), rows)).into_iter().collect(),
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
            from_sections(&tables, &sections, false),
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
        let counted = from_sections(&tables, &sections, false);
        assert_eq!(counted, [None, Some(3), None]);
        assert!(
            from_sections(&tables, &[], false)
                .iter()
                .all(Option::is_none)
        );
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

    #[test]
    fn rows_count_for_the_table_their_copy_names_whatever_the_section() {
        // A section taken for an index (a table named like a header) that holds a COPY.
        let mut odd = data(Some("public.t"), 0);
        odd.kind = SectionKind::Index;
        odd.table = Some("public.other".into());
        odd.copy_rows = vec![("public.t".into(), 5), ("public.u".into(), 1)];
        let tables = [table("public", "t", 1, &[]), table("public", "u", 2, &[])];
        let sections = [odd, data(Some("public.t"), 2)];
        assert_eq!(from_sections(&tables, &sections, false), [Some(7), Some(1)]);
    }

    #[test]
    fn on_a_standby_unlogged_tables_hold_no_rows() {
        let unlogged = |oid| UserTable {
            unlogged: true,
            ..table("public", "cache", oid, &[])
        };
        // pg_dump on a standby writes no COPY for an unlogged table, even under a parent.
        let tables = [table("public", "parent", 1, &[2]), unlogged(2), unlogged(3)];
        let sections = [data(Some("public.parent"), 4)];
        assert_eq!(
            from_sections(&tables, &sections, true),
            [Some(4), Some(0), Some(0)]
        );
        // On a primary they are dumped like any table: no section, no count.
        assert_eq!(from_sections(&tables, &sections, false), [None, None, None]);
    }
}
