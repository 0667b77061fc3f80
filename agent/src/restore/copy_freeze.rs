//! psql's stdin in a parallel restore session, which can send a table's `COPY ... FROM stdin;`
//! as `COPY ... FROM stdin WITH (FREEZE);`.
//!
//! It sits after the stream guard, which lets through only pg_dump's own COPY form, so the
//! option is the agent's and never the dump's. Once armed (for a section of a table the session
//! truncated in the same transaction), the first line that starts with `COPY ` is rewritten if
//! it ends in ` FROM stdin;`, and passed on unchanged otherwise (a column name with a line
//! break in it, say: the COPY then simply runs without FREEZE); every other byte passes
//! through as it is. Rows are never looked at: the section's COPY statement comes before them.

use std::io::Write;

/// The longest COPY line held back to be rewritten; a longer one is passed on unchanged.
const LINE_LIMIT: usize = 1 << 20;

const COPY: &[u8] = b"COPY ";
const PLAIN_END: &[u8] = b" FROM stdin;";
const FREEZE_END: &[u8] = b" FROM stdin WITH (FREEZE);";

pub struct PsqlStdin<W> {
    inner: W,
    armed: bool,
    at_line_start: bool,
    /// The start of the current line, held back while it may be the COPY statement.
    held: Vec<u8>,
}

impl<W: Write> PsqlStdin<W> {
    pub fn new(inner: W) -> Self {
        PsqlStdin {
            inner,
            armed: false,
            at_line_start: true,
            held: Vec::new(),
        }
    }

    /// Rewrites the next COPY statement (call at a line start, between statements).
    pub fn freeze_next_copy(&mut self) {
        self.armed = true;
        self.at_line_start = true;
    }

    /// Stops looking; passes on what was held unchanged (call at the end of a section).
    pub fn disarm(&mut self) -> std::io::Result<()> {
        self.armed = false;
        let held = std::mem::take(&mut self.held);
        self.inner.write_all(&held)
    }

    /// The held line is complete and starts with `COPY `: sends it, rewritten if it ends in
    /// ` FROM stdin;`, and stops looking.
    fn finish_copy_line(&mut self) -> std::io::Result<()> {
        self.armed = false;
        let line = std::mem::take(&mut self.held);
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        match body.strip_suffix(PLAIN_END) {
            Some(head) => {
                self.inner.write_all(head)?;
                self.inner.write_all(FREEZE_END)?;
                self.inner.write_all(&line[body.len()..])
            }
            None => self.inner.write_all(&line),
        }
    }
}

impl<W: Write> Write for PsqlStdin<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while self.armed && !rest.is_empty() {
            let end = rest.iter().position(|&b| b == b'\n').map(|i| i + 1);
            let (piece, tail) = rest.split_at(end.unwrap_or(rest.len()));
            rest = tail;
            let mid_line = !self.at_line_start && self.held.is_empty();
            self.at_line_start = end.is_some();
            if mid_line {
                // Inside a line already known not to be the COPY.
                self.inner.write_all(piece)?;
                continue;
            }
            self.held.extend_from_slice(piece);
            let n = self.held.len().min(COPY.len());
            if self.held[..n] != COPY[..n] {
                let held = std::mem::take(&mut self.held);
                self.inner.write_all(&held)?;
            } else if self.held.len() > LINE_LIMIT {
                self.disarm()?;
            } else if end.is_some() {
                // A complete line that matched so far ends in `\n`, so it starts with `COPY `.
                self.finish_copy_line()?;
            }
        }
        self.inner.write_all(rest)?;
        Ok(buf.len())
    }

    /// Flushes what was passed on; a COPY line still held back waits for its end.
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `input` in pieces of `piece` bytes, armed at the start.
    fn through(input: &str, piece: usize) -> String {
        let mut stdin = PsqlStdin::new(Vec::new());
        stdin.freeze_next_copy();
        for chunk in input.as_bytes().chunks(piece) {
            stdin.write_all(chunk).unwrap();
        }
        stdin.disarm().unwrap();
        String::from_utf8(stdin.inner).unwrap()
    }

    #[test]
    fn the_first_copy_line_gets_freeze_and_nothing_else_changes() {
        let dump = "--\n-- Data for Name: t; Type: TABLE DATA\n--\n\nCOPY public.t (a, b) FROM stdin;\n\
                    COPY public.t (a) FROM stdin;\n1\t2\n\\.\n";
        let want = "--\n-- Data for Name: t; Type: TABLE DATA\n--\n\nCOPY public.t (a, b) FROM stdin WITH (FREEZE);\n\
                    COPY public.t (a) FROM stdin;\n1\t2\n\\.\n";
        for piece in [1, 2, 3, 5, 7, 64, 1000] {
            assert_eq!(through(dump, piece), want, "pieces of {piece}");
        }
        assert_eq!(
            through("COPY t (a) FROM stdin;\r\nx\n", 4),
            "COPY t (a) FROM stdin WITH (FREEZE);\r\nx\n"
        );
    }

    #[test]
    fn a_copy_line_that_does_not_end_on_its_line_passes_unchanged_and_ends_the_search() {
        let dump = "COPY t (\"a\nb\") FROM stdin;\nCOPY t (a) FROM stdin;\n";
        for piece in [1, 4, 100] {
            assert_eq!(through(dump, piece), dump);
        }
    }

    #[test]
    fn unarmed_or_after_the_copy_everything_passes_unchanged() {
        let mut stdin = PsqlStdin::new(Vec::new());
        stdin.write_all(b"COPY t (a) FROM stdin;\n").unwrap();
        assert_eq!(stdin.inner, b"COPY t (a) FROM stdin;\n");
        let long = format!("COPY t ({}) FROM stdin;\nx\n", "a".repeat(LINE_LIMIT));
        assert_eq!(through(&long, 4096), long);
        assert_eq!(through("COPYX\nCOPY\nCOP", 2), "COPYX\nCOPY\nCOP");
    }

    #[test]
    fn arming_again_after_an_overlong_line_looks_at_the_next_line_start() {
        let mut stdin = PsqlStdin::new(Vec::new());
        stdin.freeze_next_copy();
        let long = format!("COPY t ({}", "a".repeat(LINE_LIMIT + 1));
        stdin.write_all(long.as_bytes()).unwrap();
        stdin.disarm().unwrap();
        stdin.freeze_next_copy();
        stdin.write_all(b"COPY u (a) FROM stdin;\n").unwrap();
        let text = String::from_utf8(stdin.inner).unwrap();
        assert!(text.starts_with(&long));
        assert!(
            text.ends_with("COPY u (a) FROM stdin WITH (FREEZE);\n"),
            "{}",
            &text[long.len()..]
        );
    }
}
