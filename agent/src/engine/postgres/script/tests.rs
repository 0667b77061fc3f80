use super::*;

/// Runs `input` through a guard in one push; returns what was forwarded, or the refusal.
fn guard(input: &[u8]) -> Result<Vec<u8>, Refusal> {
    guard_in_chunks(input, input.len().max(1))
}

fn guard_in_chunks(input: &[u8], chunk: usize) -> Result<Vec<u8>, Refusal> {
    let mut g = ScriptGuard::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk) {
        match g.push(piece, &mut out) {
            Ok(()) => {}
            Err(PushError::Refused(r)) => return Err(r),
            Err(PushError::Forward(e)) => panic!("{e}"),
        }
    }
    match g.finish(&mut out) {
        Ok(()) => Ok(out),
        Err(PushError::Refused(r)) => Err(r),
        Err(PushError::Forward(e)) => panic!("{e}"),
    }
}

fn refused(input: &str) -> Refusal {
    match guard(input.as_bytes()) {
        Ok(out) => panic!(
            "accepted:\n{input}\nforwarded:\n{}",
            String::from_utf8_lossy(&out)
        ),
        Err(r) => r,
    }
}

fn accepted(input: &str) -> String {
    match guard(input.as_bytes()) {
        Ok(out) => String::from_utf8(out).unwrap(),
        Err(r) => panic!("refused {input:?}: {r}"),
    }
}

/// The shape of a pg_dump 15.18 plain dump: \restrict, SET lines, a BEGIN ATOMIC function, a
/// check constraint with a backslash, COPY data with escapes, large objects in BEGIN/COMMIT.
const DUMP: &str = r#"--
-- PostgreSQL database dump
--

\restrict vftm7JrV01HPfC9zVsT00Q63U0NmoACD7KLAvYCKLrTjwcom1NQPz0zNrPnuAEx

-- Dumped from database version 15.18

SET statement_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);

CREATE FUNCTION public.f2() RETURNS integer
    LANGUAGE sql
    BEGIN ATOMIC
 SELECT 1;
 SELECT
         CASE
             WHEN true THEN 2
             ELSE NULL::integer
         END AS "case";
END;

CREATE FUNCTION public.double_it(x integer) RETURNS integer
    LANGUAGE plpgsql
    AS $_$ BEGIN RETURN x * 2; COMMIT; END $_$;

CREATE TABLE "Ünïcode Schema"."Mixed Case ""Quoted"" Table" (
    k text CHECK (k <> '\'),
    v text DEFAULT 'it''s'
);
COMMENT ON TABLE public.t IS 'the application''s records \n';
CREATE VIEW public.v AS SELECT (ARRAY[1,2,3])[1:2] AS a, 'x'::text AS b;

COPY "Ünïcode Schema"."Mixed Case ""Quoted"" Table" (k, v) FROM stdin;
tab\there	back\\slash
\N	\.x
'	"
\.

SELECT pg_catalog.lo_create('16395');

BEGIN;

SELECT pg_catalog.lo_open('16395', 131072);
SELECT pg_catalog.lowrite(0, '\x68656c6c6f');
SELECT pg_catalog.lo_close(0);

COMMIT;

CREATE INDEX i ON public.t USING btree (k);

\unrestrict vftm7JrV01HPfC9zVsT00Q63U0NmoACD7KLAvYCKLrTjwcom1NQPz0zNrPnuAEx

"#;

#[test]
fn a_pg_dump_passes_with_its_own_transaction_and_restrict_lines_blanked() {
    let out = accepted(DUMP);
    let expected = DUMP
        .lines()
        .map(|l| {
            if l == "BEGIN;"
                || l == "COMMIT;"
                || l.starts_with("\\restrict ")
                || l.starts_with("\\unrestrict ")
            {
                String::new()
            } else {
                // The one literal whose end depends on standard_conforming_strings.
                l.replace(r"'\'", r"E'\\'")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    assert_eq!(out, expected);
    let mut g = ScriptGuard::new();
    let mut sink = Vec::new();
    g.push(DUMP.as_bytes(), &mut sink).unwrap();
    g.finish(&mut sink).unwrap();
    assert_eq!((g.neutralised(), g.dropped()), (2, 2));
}

#[test]
fn any_chunking_gives_the_same_result() {
    let whole = guard(DUMP.as_bytes()).unwrap();
    for chunk in [1, 2, 3, 5, 7, 64, 1000] {
        assert_eq!(
            guard_in_chunks(DUMP.as_bytes(), chunk).unwrap(),
            whole,
            "chunk {chunk}"
        );
    }
    let bad = format!("{DUMP}SELECT 1; \\! touch /tmp/x\n");
    let expected = guard(bad.as_bytes()).unwrap_err();
    for chunk in [1, 2, 3, 5, 7, 64, 1000] {
        assert_eq!(
            guard_in_chunks(bad.as_bytes(), chunk).unwrap_err(),
            expected
        );
    }
}

#[test]
fn meta_commands_are_refused_naming_the_line() {
    let r = refused("SELECT 1;\n\\! touch /tmp/pwned\n");
    assert_eq!(r.line, 2);
    assert_eq!(r.head, r#""\\! touch /tmp/pwned""#);
    assert!(r.problem.contains("psql meta-command"), "{r}");
    for input in [
        "SELECT 1; \\! id\n",
        "SELECT 1 \\gexec\n",
        "\\connect other\n",
        "\\copy t from program 'id'\n",
        "\\o /tmp/x\n",
        "\\i /etc/passwd\n",
        "\\setenv PAGER x\n",
        "SELECT 1\\; COMMIT;\n",
        "-- a comment\r\\! id\n",
        "SELECT 'a' \\! id\n",
        "SELECT \"x\" \\! id\n",
        "/* a */ \\! id\n",
        "SELECT $$ a $$ \\! id\n",
        "\\restrict abc\n\\! id\n",
        "\\unrestrict `id`\n",
        "\\restrict\n",
        " \\restrict abc\n",
        "\\restrict abc\r\n",
    ] {
        let r = refused(input);
        assert!(r.problem.contains("meta-command"), "{input:?}: {r}");
    }
}

#[test]
fn backslashes_inside_quotes_comments_and_copy_data_are_text() {
    for input in [
        "SELECT '\\! id';\n",
        "SELECT E'\\\\! id', E'it\\'s \\! id';\n",
        "SELECT \"\\! id\";\n",
        "SELECT $$\\! id$$, $a$ $$ \\! $a$;\n",
        "-- \\! id\n/* \\! id /* nested \\! */ still */ SELECT 1;\n",
        "SELECT U&'\\0041', B'01', X'1F';\n",
        "SELECT 'a'\n'\\! continued';\n",
        "COPY t (a) FROM stdin;\n\\! id\n\\\\.\n\\.\n",
    ] {
        accepted(input);
    }
}

#[test]
fn string_continuation_follows_psql() {
    // A newline between two strings continues the first; on one line, the second is new.
    accepted("SELECT 'a' -- note\n  'b\\c';\n");
    refused("SELECT 'a' 'b' \\! id\n");
    // After E'...' continues, backslash escapes still apply.
    accepted("SELECT E'a'\n'\\'';\n");
    // A single dash after a string is an operator; two start a comment.
    accepted("SELECT 'a' - 1;\n");
    accepted("SELECT 'a'--c\n;\n");
}

#[test]
fn escaped_quotes_do_not_end_e_strings() {
    // E'it\'s ; \! id' is one string: the guard must not see a meta-command in it.
    accepted("SELECT E'it\\'s ; \\! id';\n");
    // And the string really ended: what follows it is checked.
    refused("SELECT E'it\\'s'; \\! id\n");
}

#[test]
fn plain_strings_whose_end_depends_on_standard_conforming_strings_are_rewritten() {
    // psql ends '\' at its second quote only while standard_conforming_strings is on (as
    // pg_dump sets it), and the dump itself could turn that off: the guard sends the same
    // value as E'\\', which psql reads alike either way.
    assert_eq!(
        accepted(
            r"SELECT x LIKE 'a\_%' ESCAPE '\', 'it''s\''' FROM t;" /* */
        ),
        r"SELECT x LIKE 'a\_%' ESCAPE E'\\', E'it''s\\''' FROM t;"
    );
    // What follows a rewritten literal is checked as ever.
    refused("SELECT 'a\\'; \\! id\n");
    // Prefixed or continued literals are not rewritten, but refused.
    refused("SELECT N'a\\';\n");
    refused("SELECT 'a'\n'b\\';\n");
    // One longer than the guard holds back has already gone to psql when its end shows.
    let long = format!("SELECT '{}\\';\n", "x".repeat(LITERAL_HOLD + 100_000));
    assert!(guard_in_chunks(long.as_bytes(), 64 * 1024).is_err());
    // Even runs, and backslashes elsewhere, read alike either way and stay as they are.
    let same = r"SELECT 'a\\', 'C:\dir\file', '\x68656c';";
    assert_eq!(accepted(same), same);
}

#[test]
fn bytes_that_a_multibyte_encoding_would_swallow_are_refused() {
    // 0x81 0x5c is one SJIS character: psql would not see that backslash.
    let r = guard(b"SELECT E'\x81\\'; \\! id';\n").unwrap_err();
    assert!(r.problem.contains("multibyte"), "{r}");
    // In JOHAB, 0x3b (;) can be the second byte of a character.
    assert!(guard(b"SELECT x\x81;\n").is_err());
    // Ordinary UTF-8 text passes.
    accepted("SELECT 'ünïcødé ✓', \"Ünïcode\";\n");
}

#[test]
fn psql_variables_are_refused_but_slices_and_casts_pass() {
    for input in [
        "SELECT :VERSION;\n",
        "SELECT :'DBNAME';\n",
        "SELECT :\"USER\";\n",
        "SELECT :{?x};\n",
    ] {
        refused(input);
    }
    accepted("SELECT a[1:2], b[:n], 'x'::text, f(x := 1);\n");
    accepted("SELECT :'notavariable';\n");
    // `:'x` without a closing quote: the colon stands alone and a string starts.
    accepted("SELECT :'x\\! id';\n");
}

#[test]
fn transaction_control_other_than_pg_dumps_own_lines_is_refused() {
    for input in [
        "COMMIT;\nSELECT 1; COMMIT;\n",
        "commit;\n",
        "COMMIT ;\n",
        " BEGIN;\n",
        "END;\n",
        "ROLLBACK;\n",
        "ABORT;\n",
        "START TRANSACTION;\n",
        "SAVEPOINT s;\n",
        "RELEASE s;\n",
        "PREPARE TRANSACTION 'x';\n",
        "SELECT 1; /* c */ COMMIT;\n",
        "SELECT 1;\nCOMMIT\n;\n",
    ] {
        let r = refused(input);
        assert!(r.problem.contains("transaction control"), "{input:?}: {r}");
    }
    // psql would send these two as one query, and the server would run the COMMIT.
    let r = refused(
        "CREATE FUNCTION begin() RETURNS int LANGUAGE sql RETURN 1; COMMIT; SELECT 1 AS end;\n",
    );
    assert!(r.problem.contains("different places"), "{r}");
    // Inside a body, or as words, they are text.
    accepted("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;\n");
    accepted("SELECT begin, commit FROM t;\n");
}

#[test]
fn copy_must_be_pg_dumps_form() {
    for input in [
        "COPY t FROM stdin WITH (FORMAT binary);\n",
        "COPY t FROM '/etc/passwd';\n",
        "COPY t FROM PROGRAM 'id';\n",
        "COPY (SELECT 1) TO stdout;\n",
        "copy t to stdout;\n",
    ] {
        let r = refused(input);
        assert!(r.problem.contains("COPY"), "{input:?}: {r}");
    }
    let r = refused("COPY t (a) FROM stdin; SELECT 1;\n1\n\\.\n");
    assert!(r.problem.contains("same line"), "{r}");
    accepted("COPY public.\"T\" (a, \"B c\") FROM stdin;\n1\t2\n\\.\r\n");
}

#[test]
fn copy_data_ends_only_at_a_line_that_is_exactly_backslash_dot() {
    // `\.` followed by more text is data (the server refuses it), not the end.
    accepted("COPY t (a) FROM stdin;\n\\.x\n \\.\n\\.\n");
    // After the real end, SQL rules apply again.
    let r = refused("COPY t (a) FROM stdin;\n1\n\\.\n\\! id\n");
    assert_eq!(r.line, 4);
}

#[test]
fn nul_bytes_are_refused_everywhere() {
    assert!(guard(b"SELECT 1;\x00\n").is_err());
    assert!(guard(b"SELECT '\x00';\n").is_err());
    let r = guard(b"COPY t (a) FROM stdin;\nsecret-row\x00\n\\.\n").unwrap_err();
    assert_eq!(r.line, 2);
    // Row data never reaches the message: it names the COPY statement.
    let message = r.to_string();
    assert!(!message.contains("secret-row"), "{message}");
    assert!(message.contains("COPY t (a) FROM stdin;"), "{message}");
}

#[test]
fn a_dump_that_ends_early_is_refused() {
    let r = refused("COPY t (a) FROM stdin;\n1\n2\n");
    assert!(
        r.problem
            .contains("inside the COPY data of \"COPY t (a) FROM stdin;\""),
        "{r}"
    );
    for input in [
        "SELECT 1",
        "SELECT 'abc;\n",
        "SELECT (1;\n",
        "/* open\n",
        "COPY t (a) FROM stdin;",
    ] {
        refused(input);
    }
    // A last line without a newline is fine if it is complete.
    accepted("SELECT 1;\n-- done");
    accepted("SELECT 1;\n\\unrestrict abc");
}

#[test]
fn long_lines_stream_and_are_still_checked() {
    let long = "x".repeat(3 * HOLD);
    accepted(&format!(
        "SELECT '{long}';\nCOPY t (a) FROM stdin;\n{long}\n\\.\n"
    ));
    let r = refused(&format!("SELECT '{long}'; \\! id\n"));
    assert!(r.head.ends_with("..."), "{}", r.head);
    // A long line is never taken for one of pg_dump's special lines.
    refused(&format!("COMMIT;{}\n", " ".repeat(2 * HOLD)));
}

#[test]
fn nothing_passes_after_a_refusal() {
    let mut g = ScriptGuard::new();
    let mut out = Vec::new();
    assert!(g.push(b"SELECT 1;\n\\! id\nSELECT 2;\n", &mut out).is_err());
    assert_eq!(out, b"SELECT 1;\n");
    assert!(g.push(b"SELECT 3;\n", &mut out).is_err());
    assert!(g.finish(&mut out).is_err());
    assert_eq!(out, b"SELECT 1;\n");
}

#[test]
fn dollar_quotes_follow_psql() {
    accepted("SELECT $a$ $b$ $a$, $$x$$, a$b$c, $1;\n");
    // `$a` without a closing `$` is `$` then an identifier.
    refused("SELECT $a \\! id\n");
    // A tag is matched exactly: $ab$ does not end $a$.
    accepted("SELECT $a$ $ab$ \\! $a$;\n");
}

/// psql runs what is in its buffer when its input ends: a dump cut off (or an agent killed)
/// right after a long line's `COMMIT` or `END` must not have forwarded that word.
#[test]
fn a_first_word_that_may_be_transaction_control_is_held_until_it_ends() {
    for word in ["COMMIT", "END", "commit", "Abort"] {
        for filler in [
            " ".repeat(2 * HOLD),
            format!("/*{}*/", "x".repeat(2 * HOLD)),
        ] {
            let mut g = ScriptGuard::new();
            let mut out = Vec::new();
            let line = format!("SELECT 1;{filler}{word}");
            g.push(line.as_bytes(), &mut out).unwrap();
            assert!(!out.is_empty(), "the long line streams");
            let sent = String::from_utf8_lossy(&out);
            assert!(
                !sent
                    .to_ascii_lowercase()
                    .contains(&word.to_ascii_lowercase()),
                "forwarded {word} before knowing it: ...{}",
                &sent[sent.len().saturating_sub(20)..]
            );
            assert!(g.push(b";\n", &mut out).is_err(), "{word} is refused");
        }
    }
    // An ordinary first word is forwarded once it ends; a long one once it cannot be a keyword.
    let mut g = ScriptGuard::new();
    let mut out = Vec::new();
    let line = format!("SELECT 1;{}INSERT", " ".repeat(2 * HOLD));
    g.push(line.as_bytes(), &mut out).unwrap();
    g.push(b" ", &mut out).unwrap();
    let long = format!("SELECT 1;{}{}", " ".repeat(2 * HOLD), "w".repeat(HOLD));
    let mut g2 = ScriptGuard::new();
    let mut out2 = Vec::new();
    g2.push(long.as_bytes(), &mut out2).unwrap();
    assert!(String::from_utf8_lossy(&out2).ends_with("www"));
    g.push(b"INTO t VALUES (1);\n", &mut out).unwrap();
    assert!(String::from_utf8_lossy(&out).ends_with("INSERT INTO t VALUES (1);\n"));
}
