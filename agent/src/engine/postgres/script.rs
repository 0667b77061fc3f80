//! Reads a plain-format dump the way psql reads it, and refuses anything that is not SQL.
//!
//! psql runs meta-commands (`\!` runs a shell command, `\o`, `\copy ... program`, `\i`,
//! `\connect` ...) as they arrive, before any end-of-stream hash check could help, and a
//! `COMMIT` in the stream would end the restore's own transaction. [`ScriptGuard`] sits between
//! the decompressed dump and psql's stdin, sees every byte, and lets through only:
//!
//! - SQL, lexed with psql's own rules (`src/fe_utils/psqlscan.l`: quotes, `E''`, `U&''`,
//!   dollar quotes, nested comments, the string-continuation lookahead, parentheses and the
//!   `CREATE FUNCTION ... BEGIN ATOMIC` heuristic that decides where psql ends a statement);
//! - COPY data after pg_dump's own `COPY <table> (<columns>) FROM stdin;`, up to the `\.`
//!   line that psql ends it at (`src/bin/psql/copy.c`), everything in between being data;
//! - pg_dump's own `\restrict <key>` / `\unrestrict <key>` lines (pg_dump >= 15.14), which are
//!   dropped: the agent sends its own key, so the dump cannot leave restricted mode;
//! - pg_dump's own `BEGIN;` / `COMMIT;` lines around large objects, which are neutralised (sent
//!   as empty lines) so that only the agent's own COMMIT commits.
//!
//! Everything else is refused before psql sees the line: any backslash outside quotes and COPY
//! data, psql variable references, other transaction control, COPY in another form, NUL bytes,
//! and the few constructs whose reading depends on settings the dump itself could change
//! (`standard_conforming_strings`, a multibyte client encoding): a quote after an odd run of
//! backslashes in a plain string, a non-ASCII byte directly followed by a backslash or by an
//! ASCII punctuation byte that a multibyte encoding would swallow. pg_dump writes none of these.
//! Where the agent's reading and psql's could disagree, the guard refuses (fails closed).
//!
//! This module does no I/O of its own: it hands the bytes to forward to a [`Forward`].

use std::fmt;

mod lexer;

use lexer::{Event, Lexer};

/// Bytes of a line held back until its end is seen, so that the special lines can be
/// recognised (and replaced) before psql sees any of them. Longer lines stream through.
const HOLD: usize = 1024;
/// Bytes of the current line kept for error messages.
const HEAD: usize = 60;
/// Longest plain literal held back in case it has to be rewritten.
const LITERAL_HOLD: usize = 1 << 20;

/// Where the bytes the guard lets through go.
pub trait Forward {
    fn forward(&mut self, bytes: &[u8]) -> std::io::Result<()>;
}

impl<W: std::io::Write> Forward for W {
    fn forward(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write_all(bytes)
    }
}

/// Why the dump was refused, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 1-based line of the decompressed dump.
    pub line: u64,
    /// The line's first bytes, escaped.
    pub head: String,
    pub problem: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {} of the dump ({}) {}",
            self.line, self.head, self.problem
        )
    }
}

impl std::error::Error for Refusal {}

/// What stopped [`ScriptGuard::push`].
#[derive(Debug)]
pub enum PushError {
    Refused(Refusal),
    /// Forwarding failed (psql stopped reading).
    Forward(std::io::Error),
}

impl From<std::io::Error> for PushError {
    fn from(e: std::io::Error) -> Self {
        PushError::Forward(e)
    }
}

/// What the guard is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sql,
    /// COPY data; `at_line_start` while the current line's first bytes are held back.
    Copy {
        at_line_start: bool,
    },
}

/// Whether the held start of a COPY data line is psql's end marker.
enum Marker {
    End,
    Undecided,
    Data,
}

fn copy_marker(held: &[u8]) -> Marker {
    match held {
        b"\\.\n" | b"\\.\r\n" => Marker::End,
        [] | [b'\\'] | [b'\\', b'.'] | [b'\\', b'.', b'\r'] => Marker::Undecided,
        _ => Marker::Data,
    }
}

/// A plain literal whose bytes are held in `pending` in case it must be rewritten.
#[derive(Debug, Clone, Copy)]
struct HeldLiteral {
    /// Offset of its opening quote, in bytes fed to the lexer.
    at: u64,
    rewritable: bool,
}

/// Stands between the decompressed dump and psql: see the module documentation.
#[derive(Debug)]
pub struct ScriptGuard {
    lexer: Lexer,
    mode: Mode,
    /// 1-based number of the line being read.
    line: u64,
    /// SQL: the unread head of a line that may be one of pg_dump's special lines (while
    /// `holding`); COPY: the first bytes of a data line.
    held: Vec<u8>,
    holding: bool,
    /// SQL that was checked but not yet forwarded; `pending[0]` is lexer offset
    /// `pending_base`.
    pending: Vec<u8>,
    pending_base: i64,
    literal: Option<HeldLiteral>,
    /// The current line's first bytes, for messages.
    head: Vec<u8>,
    /// The COPY statement whose data is being read, for messages.
    copy_statement: String,
    neutralised: u32,
    dropped: u32,
    /// Set once the guard refused: nothing more passes.
    refused: Option<Refusal>,
}

impl Default for ScriptGuard {
    fn default() -> Self {
        ScriptGuard {
            lexer: Lexer::default(),
            mode: Mode::Sql,
            line: 1,
            held: Vec::with_capacity(HOLD),
            holding: true,
            pending: Vec::with_capacity(HOLD),
            pending_base: 0,
            literal: None,
            head: Vec::with_capacity(HEAD),
            copy_statement: String::new(),
            neutralised: 0,
            dropped: 0,
            refused: None,
        }
    }
}

/// `\restrict KEY` or `\unrestrict KEY` exactly, as pg_dump writes them.
fn is_restrict_line(line: &[u8]) -> bool {
    let key = line
        .strip_prefix(b"\\restrict ")
        .or_else(|| line.strip_prefix(b"\\unrestrict "));
    key.is_some_and(|k| !k.is_empty() && k.iter().all(u8::is_ascii_alphanumeric))
}

/// A plain literal `'...'` (standard_conforming_strings on) as the same value in E'...' form:
/// every backslash doubled, doubled quotes kept.
fn as_escape_string(literal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(literal.len() + 8);
    out.push(b'E');
    for &b in literal {
        out.push(b);
        if b == b'\\' {
            out.push(b'\\');
        }
    }
    out
}

/// `bytes` escaped for a message, at most [`HEAD`] of them.
fn escaped(bytes: &[u8]) -> String {
    let mut text = String::from("\"");
    for chunk in bytes[..bytes.len().min(HEAD)].utf8_chunks() {
        for c in chunk.valid().chars() {
            text.extend(c.escape_debug());
        }
        for b in chunk.invalid() {
            text.push_str(&format!("\\x{b:02x}"));
        }
    }
    text.push('"');
    if bytes.len() > HEAD {
        text.push_str("...");
    }
    text
}

impl ScriptGuard {
    pub fn new() -> Self {
        ScriptGuard::default()
    }

    /// pg_dump's own `BEGIN;` / `COMMIT;` lines that were sent as empty lines.
    pub fn neutralised(&self) -> u32 {
        self.neutralised
    }

    /// pg_dump's own `\restrict` / `\unrestrict` lines that were dropped.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    /// At the start of a line outside any statement, string, comment and COPY data: a place
    /// where the dump can be cut so that psql reads each part on its own as it reads the whole.
    pub fn at_statement_boundary(&self) -> bool {
        self.refused.is_none()
            && self.mode == Mode::Sql
            && self.holding
            && self.held.is_empty()
            && self.lexer.pristine()
    }

    /// Inside the rows of a COPY: the next line is data, or the `\.` that ends it.
    pub fn in_copy_data(&self) -> bool {
        self.refused.is_none()
            && matches!(
                self.mode,
                Mode::Copy {
                    at_line_start: true
                }
            )
    }

    fn refuse(&mut self, problem: String) -> PushError {
        // A COPY data line is table rows: the message (which reaches locked audit events and
        // reports) names the COPY statement instead.
        let head = match self.mode {
            Mode::Copy { .. } => format!("a row of COPY data of {}", self.copy_statement),
            Mode::Sql => escaped(&self.head),
        };
        let refusal = Refusal {
            line: self.line,
            head,
            problem,
        };
        self.refused = Some(refusal.clone());
        PushError::Refused(refusal)
    }

    /// Keeps the current line's first bytes (up to its newline) for messages.
    fn note_head(&mut self, bytes: &[u8]) {
        let room = (HEAD + 1).saturating_sub(self.head.len());
        let take = bytes.len().min(room);
        let take = memchr::memchr(b'\n', &bytes[..take]).unwrap_or(take);
        self.head.extend_from_slice(&bytes[..take]);
    }

    fn new_line(&mut self) {
        self.line += 1;
        self.head.clear();
    }

    /// Passes `input` on to `out`, refusing at the first byte that is not allowed. A line is
    /// forwarded only once all of it was checked (lines longer than [`HOLD`] stream, but psql
    /// acts on none of a line before its newline), and nothing passes after a refusal.
    pub fn push<F: Forward>(&mut self, mut input: &[u8], out: &mut F) -> Result<(), PushError> {
        if let Some(r) = &self.refused {
            return Err(PushError::Refused(r.clone()));
        }
        while !input.is_empty() {
            input = match self.mode {
                Mode::Copy {
                    at_line_start: true,
                } => self.copy_line_start(input, out)?,
                Mode::Copy {
                    at_line_start: false,
                } => self.copy_line(input, out)?,
                Mode::Sql => self.sql(input, out)?,
            };
        }
        Ok(())
    }

    /// The first bytes of a COPY data line: psql ends the data at a line that is exactly `\.`.
    fn copy_line_start<'a, F: Forward>(
        &mut self,
        input: &'a [u8],
        out: &mut F,
    ) -> Result<&'a [u8], PushError> {
        for (used, &b) in input.iter().enumerate() {
            self.held.push(b);
            match copy_marker(&self.held) {
                Marker::Undecided => {}
                Marker::End => {
                    out.forward(&self.held)?;
                    self.held.clear();
                    self.new_line();
                    self.mode = Mode::Sql;
                    self.holding = self.lexer.pristine();
                    return Ok(&input[used + 1..]);
                }
                Marker::Data => {
                    let held = std::mem::take(&mut self.held);
                    self.mode = Mode::Copy {
                        at_line_start: false,
                    };
                    // At most the held bytes' own newline ends the line here.
                    self.copy_line(&held, out)?;
                    self.held = held;
                    self.held.clear();
                    return Ok(&input[used + 1..]);
                }
            }
        }
        Ok(&[])
    }

    /// COPY data up to and including the end of the current line (or of `input`).
    fn copy_line<'a, F: Forward>(
        &mut self,
        input: &'a [u8],
        out: &mut F,
    ) -> Result<&'a [u8], PushError> {
        let end = memchr::memchr(b'\n', input).map_or(input.len(), |i| i + 1);
        let (line, rest) = input.split_at(end);
        self.note_head(line);
        if memchr::memchr(0, line).is_some() {
            return Err(self.refuse(
                "holds a NUL byte in COPY data: no pg_dump output does, and psql would read \
                 the rest of that line differently than the agent"
                    .into(),
            ));
        }
        out.forward(line)?;
        if line.last() == Some(&b'\n') {
            self.new_line();
            self.mode = Mode::Copy {
                at_line_start: true,
            };
        }
        Ok(rest)
    }

    /// SQL text up to and including the end of the current line (or of `input`).
    fn sql<'a, F: Forward>(&mut self, input: &'a [u8], out: &mut F) -> Result<&'a [u8], PushError> {
        let newline = memchr::memchr(b'\n', input);
        let end = newline.map_or(input.len(), |i| i + 1);
        let (part, rest) = input.split_at(end);
        self.note_head(part);
        if self.holding {
            if self.held.len() + part.len() <= HOLD {
                self.held.extend_from_slice(part);
                if newline.is_some() {
                    let line = std::mem::take(&mut self.held);
                    let (text, ending) = line.split_at(line.len() - 1);
                    self.line_of_sql(text, ending, out)?;
                    self.held = line;
                    self.held.clear();
                }
                return Ok(rest);
            }
            // Too long to be a special line: check what was held and go on with the rest.
            self.holding = false;
            let held = std::mem::take(&mut self.held);
            self.check(&held)?;
            self.held = held;
            self.held.clear();
        }
        self.check(part)?;
        if newline.is_some() {
            self.end_of_line(out)?;
        } else if self.pending.len() >= HOLD {
            self.flush(out)?;
        }
        Ok(rest)
    }

    /// A whole SQL line that fitted in the hold buffer (`ending` is its newline, or empty for
    /// a last line without one): pg_dump's own special lines are replaced, the rest checked.
    fn line_of_sql<F: Forward>(
        &mut self,
        text: &[u8],
        ending: &[u8],
        out: &mut F,
    ) -> Result<(), PushError> {
        let special = if text == b"BEGIN;" || text == b"COMMIT;" {
            Some(&mut self.neutralised)
        } else if is_restrict_line(text) {
            Some(&mut self.dropped)
        } else {
            None
        };
        if let Some(count) = special {
            *count += 1;
            debug_assert!(self.pending.is_empty());
            out.forward(ending)?;
        } else {
            self.check(text)?;
            self.check(ending)?;
        }
        self.end_of_line(out)
    }

    /// Lexes `bytes` into `pending`, rewriting a plain literal whose end depends on
    /// `standard_conforming_strings` as the equivalent E'...' (psql then reads it the same way
    /// whatever the setting).
    fn check(&mut self, bytes: &[u8]) -> Result<(), PushError> {
        if let Err(problem) = self.lexer.feed(bytes) {
            return Err(self.refuse(problem));
        }
        self.pending.extend_from_slice(bytes);
        let events = std::mem::take(&mut self.lexer.events);
        for event in &events {
            match *event {
                Event::Open { at, rewritable } => {
                    self.literal = Some(HeldLiteral { at, rewritable });
                }
                Event::End { end, ambiguous } => {
                    let literal = self.literal.take();
                    if !ambiguous {
                        continue;
                    }
                    match literal {
                        Some(l) if l.rewritable && l.at as i64 >= self.pending_base => {
                            let start = (l.at as i64 - self.pending_base) as usize;
                            let end = (end as i64 - self.pending_base) as usize;
                            let rewritten = as_escape_string(&self.pending[start..end]);
                            self.pending.splice(start..end, rewritten);
                            // The rewritten literal is longer: re-anchor what follows it.
                            self.pending_base = self.lexer.fed as i64 - self.pending.len() as i64;
                        }
                        _ => {
                            return Err(self.refuse(
                                "holds a string literal whose end depends on \
                                 standard_conforming_strings (a quote after an odd number of \
                                 backslashes) and that is too long or prefixed to be rewritten"
                                    .into(),
                            ));
                        }
                    }
                }
            }
        }
        self.lexer.events = events;
        self.lexer.events.clear();
        Ok(())
    }

    /// Forwards the checked SQL, except an open plain literal (up to [`LITERAL_HOLD`] bytes)
    /// that may still have to be rewritten, and a statement's first word not yet read to its
    /// end (it may be `COMMIT`, which psql would run if its input ended right after it).
    fn flush<F: Forward>(&mut self, out: &mut F) -> Result<(), PushError> {
        let literal_from = match self.literal {
            Some(l) if l.rewritable => {
                let start = (l.at as i64 - self.pending_base) as usize;
                if self.pending.len() - start > LITERAL_HOLD {
                    self.literal = Some(HeldLiteral {
                        rewritable: false,
                        ..l
                    });
                    self.pending.len()
                } else {
                    start
                }
            }
            _ => self.pending.len(),
        };
        let word_from = self
            .lexer
            .undecided_first_word()
            .map_or(self.pending.len(), |at| {
                (at as i64 - self.pending_base).max(0) as usize
            });
        let keep_from = literal_from.min(word_from);
        out.forward(&self.pending[..keep_from])?;
        self.pending.drain(..keep_from);
        self.pending_base += keep_from as i64;
        Ok(())
    }

    fn end_of_line<F: Forward>(&mut self, out: &mut F) -> Result<(), PushError> {
        self.flush(out)?;
        if self.lexer.copy_pending {
            self.lexer.copy_pending = false;
            self.copy_statement = escaped(&self.head);
            self.mode = Mode::Copy {
                at_line_start: true,
            };
        }
        self.new_line();
        // Only a line that starts outside any statement can be one of pg_dump's own.
        self.holding = self.mode == Mode::Sql && self.lexer.pristine();
        Ok(())
    }

    /// Checks that the dump ended cleanly (outside COPY data, strings and statements),
    /// forwarding a last line that had no newline; only then may the agent's COMMIT follow.
    pub fn finish<F: Forward>(&mut self, out: &mut F) -> Result<(), PushError> {
        if let Some(r) = &self.refused {
            return Err(PushError::Refused(r.clone()));
        }
        // A last line without a newline: checked (or recognised as pg_dump's), not yet sent.
        if self.mode == Mode::Sql && self.holding && !self.held.is_empty() {
            let line = std::mem::take(&mut self.held);
            if line == b"BEGIN;" || line == b"COMMIT;" {
                self.neutralised += 1;
            } else if is_restrict_line(&line) {
                self.dropped += 1;
            } else {
                self.check(&line)?;
            }
        }
        if let Mode::Copy { .. } = self.mode {
            let problem = format!(
                "is where the dump ends, inside the COPY data of {} (no `\\.` line): the dump \
                 is truncated",
                self.copy_statement
            );
            return Err(self.refuse(problem));
        }
        if !self.lexer.at_clean_end() {
            return Err(self.refuse(
                "is where the dump ends, inside a statement, string or comment: the dump is \
                 truncated"
                    .into(),
            ));
        }
        self.literal = None;
        self.flush(out)
    }
}

#[cfg(test)]
mod tests;
