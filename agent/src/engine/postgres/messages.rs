//! Strips row data from what pg_dump and psql print on stderr, keeping the message.
//!
//! Their stderr ends up in logs, in error messages and so in audit events and restore reports,
//! which are locked for years. PostgreSQL quotes the data it failed on: the COPY line
//! (`CONTEXT:  COPY t, line 3: "..."`), key values (`DETAIL:  Key (id)=(42) already exists.`),
//! whole rows (`DETAIL:  Failing row contains (...)`), rejected input (`invalid input syntax for
//! type integer: "..."`) and statement text (`LINE 1: ...`, which for large objects is their
//! data). Those parts are replaced; what failed, where, and why stays. A quoted value can span
//! lines, so a line that does not start the way a message line does (`psql:`, `pg_dump:`,
//! `ERROR:`, `DETAIL:` ...) is dropped: it continues something quoted above it.

use std::borrow::Cow;

const REMOVED: &str = "(data removed)";

/// How the lines of pg_dump's, psql's and the server's messages start (after psql's
/// `psql:<stdin>:N: ` prefix, which starts with `psql:` too).
const MESSAGE_STARTS: &[&str] = &[
    "psql:",
    "pg_dump:",
    "ERROR:",
    "FATAL:",
    "PANIC:",
    "WARNING:",
    "NOTICE:",
    "INFO:",
    "LOG:",
    "DEBUG",
    "DETAIL:",
    "HINT:",
    "CONTEXT:",
    "LOCATION:",
    // libpq's hint under a failed connection.
    "\tIs the server running",
];

/// Where the server quotes statement text or a value, after which the line is data.
const QUOTES_DATA: &[&str] = &[
    "at or near \"",
    "SQL statement \"",
    "JSON data, line ",
    "literal: \"",
];

/// `line` without the row data PostgreSQL quoted in it.
pub fn scrub(line: &str) -> Cow<'_, str> {
    let trimmed = line.trim_start();
    if !trimmed.is_empty()
        && !trimmed.starts_with("LINE ")
        && !trimmed.starts_with("QUERY:")
        && !trimmed.bytes().all(|b| b == b'^')
        && !MESSAGE_STARTS.iter().any(|start| line.starts_with(start))
    {
        return Cow::Borrowed("");
    }
    if let Some(rest) = trimmed.strip_prefix("QUERY:") {
        let indent = line.len() - rest.len();
        return Cow::Owned(format!("{} (statement text removed)", &line[..indent]));
    }
    if let Some((at, marker)) = QUOTES_DATA
        .iter()
        .filter_map(|m| line.find(m).map(|at| (at, m)))
        .min()
    {
        let keep = at + marker.trim_end_matches('"').len();
        return Cow::Owned(format!("{}{REMOVED}", &line[..keep]));
    }
    if let Some(at) = line.find("value \"")
        && let Some(end) = line[at + 7..].find("\" is out of range")
    {
        let verdict = &line[at + 7 + end + 1..];
        return Cow::Owned(format!("{}value {REMOVED}{verdict}", &line[..at]));
    }
    // psql prefixes messages with `psql:<stdin>:N: `; the markers follow it.
    if let Some(at) = line.find("CONTEXT:  COPY ")
        && let Some(quote) = line[at..].find(": \"")
    {
        return Cow::Owned(format!("{} {REMOVED}", &line[..at + quote]));
    }
    if let Some(at) = line.find("Failing row contains (") {
        return Cow::Owned(format!("{}Failing row contains {REMOVED}.", &line[..at]));
    }
    if let Some(at) = line.find(")=(") {
        // `Key (cols)=(values) already exists.`: keep the columns and the verdict.
        let rest = &line[at + 3..];
        let verdict = rest.rfind(") ").map_or("", |end| &rest[end + 1..]);
        return Cow::Owned(format!("{}={REMOVED}{verdict}", &line[..at + 1]));
    }
    if (line.contains("invalid input") || line.contains("out of range"))
        && let Some(at) = line.find(": \"")
    {
        return Cow::Owned(format!("{}: {REMOVED}", &line[..at]));
    }
    if let Some(rest) = trimmed.strip_prefix("LINE ")
        && let Some(colon) = rest.find(": ")
        && rest[..colon].bytes().all(|b| b.is_ascii_digit())
    {
        let indent = line.len() - trimmed.len();
        return Cow::Owned(format!(
            "{}LINE {}: (statement text removed)",
            &line[..indent],
            &rest[..colon]
        ));
    }
    // The caret under a `LINE n:` excerpt.
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b == b'^') {
        return Cow::Borrowed("");
    }
    Cow::Borrowed(line)
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn row_data_goes_and_the_message_stays() {
        for (line, want) in [
            (
                r#"psql:<stdin>:52: CONTEXT:  COPY accounts, line 3: "3	alice@example.com	s3cr3t""#,
                "psql:<stdin>:52: CONTEXT:  COPY accounts, line 3 (data removed)",
            ),
            (
                r#"CONTEXT:  COPY accounts, line 3, column email: "alice@example.com""#,
                "CONTEXT:  COPY accounts, line 3, column email (data removed)",
            ),
            (
                "DETAIL:  Key (email)=(alice@example.com) already exists.",
                "DETAIL:  Key (email)=(data removed) already exists.",
            ),
            (
                r#"DETAIL:  Key (a, b)=(1, x) y) is not present in table "t"."#,
                r#"DETAIL:  Key (a, b)=(data removed) is not present in table "t"."#,
            ),
            (
                "DETAIL:  Failing row contains (3, alice, null).",
                "DETAIL:  Failing row contains (data removed).",
            ),
            (
                r#"ERROR:  invalid input syntax for type integer: "s3cr3t""#,
                "ERROR:  invalid input syntax for type integer: (data removed)",
            ),
            (
                r#"LINE 1: SELECT pg_catalog.lowrite(0, '\x7365637265');"#,
                "LINE 1: (statement text removed)",
            ),
            ("                ^", ""),
            (
                r#"psql:<stdin>:52: ERROR:  duplicate key value violates unique constraint "accounts_pkey""#,
                r#"psql:<stdin>:52: ERROR:  duplicate key value violates unique constraint "accounts_pkey""#,
            ),
            (
                "pg_dump: error: connection to server failed",
                "pg_dump: error: connection to server failed",
            ),
            (
                r#"ERROR:  value "99999999999" is out of range for type integer"#,
                "ERROR:  value (data removed) is out of range for type integer",
            ),
            (
                r#"ERROR:  malformed array literal: "{alice""#,
                "ERROR:  malformed array literal: (data removed)",
            ),
            (
                r#"ERROR:  syntax error at or near "s3cr3t""#,
                "ERROR:  syntax error at or near (data removed)",
            ),
            (
                r#"CONTEXT:  SQL statement "INSERT INTO t VALUES ('s3cr3t')""#,
                "CONTEXT:  SQL statement (data removed)",
            ),
            (
                "CONTEXT:  JSON data, line 1: {\"pw\": \"s3cr3t",
                "CONTEXT:  JSON data, line (data removed)",
            ),
            ("QUERY:  SELECT 's3cr3t'", "QUERY: (statement text removed)"),
            // The rest of a value quoted over several lines.
            ("s3cr3t line two) already exists.", ""),
            ("\ts3cr3t", ""),
            (
                "\tIs the server running locally and accepting connections on that socket?",
                "\tIs the server running locally and accepting connections on that socket?",
            ),
        ] {
            assert_eq!(scrub(line), want, "{line}");
        }
    }
}
