//! Strips row data from what pg_dump and psql print on stderr, keeping the message.
//!
//! Their stderr ends up in logs, in error messages and so in audit events and restore reports,
//! which are locked for years. PostgreSQL quotes the data it failed on: the COPY line
//! (`CONTEXT:  COPY t, line 3: "..."`), key values (`DETAIL:  Key (id)=(42) already exists.`),
//! whole rows (`DETAIL:  Failing row contains (...)`), rejected input (`invalid input syntax for
//! type integer: "..."`) and statement text (`LINE 1: ...`, which for large objects is their
//! data). Those parts are replaced; what failed, where, and why stays.

use std::borrow::Cow;

const REMOVED: &str = "(data removed)";

/// `line` without the row data PostgreSQL quoted in it.
pub fn scrub(line: &str) -> Cow<'_, str> {
    let trimmed = line.trim_start();
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
        ] {
            assert_eq!(scrub(line), want, "{line}");
        }
    }
}
