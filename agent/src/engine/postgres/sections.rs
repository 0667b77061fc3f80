//! Finds where a plain-format pg_dump can be cut into sections that load on their own, as the
//! dump streams past on its way to the compressor.
//!
//! pg_dump writes every object after a header comment, `-- Name: <name>; Type: <type>; ...`
//! (`-- Data for Name:` for table data), one line, names sanitised (`pg_backup_archiver.c`,
//! `_printTocEntry`), and in three sections: pre-data, data, post-data (ACLs and
//! materialized-view refreshes last). A cut is made only at such a header, and only where
//! [`ScriptGuard`] (psql's own reading) is outside any statement, string, comment and COPY
//! data, so a header-like line inside a function body or a string is never a cut; inside a
//! table's COPY rows, where psql ends the data only at a line that is exactly `\.`, a long
//! table is cut into chunks of about [`DATA_CHUNK`] bytes at row boundaries. The sections:
//! the preamble (the session settings), the pre-data, one per table data (chunk), one per
//! index or constraint that builds one (with its table), and the rest of the post-data.
//!
//! The guard reads the SQL here exactly as the restore will (COPY rows are skipped: they
//! cannot change where the SQL is). If it would refuse the dump, no index is made.

use super::script::{PushError, ScriptGuard};
use crate::manifest::{DumpSection, SectionKind};

/// A table's rows are cut into sections of about this many bytes.
pub const DATA_CHUNK: u64 = 64 << 20;
/// Bytes of a line looked at before deciding whether to cut before it.
pub const HEAD_LIMIT: usize = 1024;
/// The longest SQL line kept whole (a COPY statement is sent again before each of its chunks).
const LINE_LIMIT: usize = 1 << 20;

/// The header types whose objects are in pg_dump's data section.
const DATA_TYPES: &[&str] = &["TABLE DATA", "SEQUENCE SET", "BLOBS", "LARGE OBJECTS"];
/// The post-data types built in parallel, one table per session.
const INDEX_TYPES: &[&str] = &["INDEX", "CONSTRAINT"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Preamble,
    PreData,
    Data,
    PostData,
}

/// Where a scanned block's sections start, and how much of it was decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Offsets in the block where a new section starts (0 for the first block's preamble).
    pub cuts: Vec<usize>,
    /// Bytes of the block that were scanned; the rest is the head of a line not yet decided
    /// and must come again at the start of the next block.
    pub decided: usize,
}

/// Scans the dump: see the module documentation.
#[derive(Debug)]
pub struct Sectioner {
    guard: ScriptGuard,
    phase: Phase,
    sections: Vec<DumpSection>,
    /// Uncompressed bytes scanned.
    position: u64,
    /// Where the current section started.
    section_start: u64,
    /// Inside a COPY's rows: that COPY statement.
    copy: Option<String>,
    /// Inside a COPY's rows: the table it names, as written (`copy`'s, parsed once).
    copy_target: String,
    /// The last `SET default_tablespace` line.
    tablespace: Option<String>,
    /// The current line's first bytes, once decided: whether it is SQL that the guard reads.
    line_is_sql: bool,
    /// Whether the current SQL line began between statements (so a COPY found at its end is
    /// all on it).
    line_starts_statement: bool,
    at_line_start: bool,
    /// The current SQL line so far (up to [`LINE_LIMIT`]).
    line: Vec<u8>,
    line_overflowed: bool,
    /// Set when the guard refused: no index is made.
    failed: Option<String>,
    data_chunk: u64,
}

impl Default for Sectioner {
    fn default() -> Self {
        Sectioner {
            guard: ScriptGuard::new(),
            phase: Phase::Preamble,
            sections: Vec::new(),
            position: 0,
            section_start: 0,
            copy: None,
            copy_target: String::new(),
            tablespace: None,
            line_is_sql: true,
            line_starts_statement: true,
            at_line_start: true,
            line: Vec::new(),
            line_overflowed: false,
            failed: None,
            data_chunk: DATA_CHUNK,
        }
    }
}

fn section(kind: SectionKind) -> DumpSection {
    DumpSection {
        kind,
        offset: 0,
        size_bytes: 0,
        uncompressed_size_bytes: 0,
        sha256: String::new(),
        table: None,
        copy: None,
        ends_in_copy: false,
        tablespace: None,
        copy_rows: Vec::new(),
    }
}

/// `<type>` of a header line `-- [Data for ]Name: <name>; Type: <type>; Schema: ...`.
fn header_type(line: &[u8]) -> Option<&str> {
    let rest = line
        .strip_prefix(b"-- Name: ")
        .or_else(|| line.strip_prefix(b"-- Data for Name: "))?;
    let text = std::str::from_utf8(rest).ok().or_else(|| {
        // The head may end inside a multibyte character.
        let valid = std::str::from_utf8(rest).err()?.valid_up_to();
        std::str::from_utf8(&rest[..valid]).ok()
    })?;
    let (_, after) = text.split_once("; Type: ")?;
    let (kind, _) = after.split_once("; Schema: ")?;
    Some(kind)
}

/// An identifier as pg_dump writes it: `"quoted"` (`""` inside) or plain. Returns its length.
fn identifier(text: &[u8]) -> Option<usize> {
    if text.first() == Some(&b'"') {
        let mut i = 1;
        loop {
            match text.get(i)? {
                b'"' if text.get(i + 1) == Some(&b'"') => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
    }
    let n = text
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'$' || **b >= 0x80)
        .count();
    (n > 0).then_some(n)
}

/// A possibly schema-qualified name at the start of `text`, as written.
fn qualified(text: &[u8]) -> Option<(String, &[u8])> {
    let mut end = identifier(text)?;
    while text.get(end) == Some(&b'.') {
        end += 1 + identifier(&text[end + 1..])?;
    }
    let name = std::str::from_utf8(&text[..end]).ok()?.to_owned();
    Some((name, &text[end..]))
}

/// The schema and the table of a schema-qualified name as pg_dump writes it
/// (`public.t`, `"My ""Schema"""."T"`), unquoted.
pub fn schema_and_table(name: &str) -> Option<(String, String)> {
    let first = identifier(name.as_bytes())?;
    let rest = name[first..].strip_prefix('.')?;
    (identifier(rest.as_bytes())? == rest.len()).then(|| (unquote(&name[..first]), unquote(rest)))
}

/// An identifier as PostgreSQL reads it: a quoted one without its quotes (`""` is `"`), a
/// plain one as it is (pg_dump writes a name plain only when it is exactly that name).
fn unquote(identifier: &str) -> String {
    match identifier
        .strip_prefix('"')
        .and_then(|i| i.strip_suffix('"'))
    {
        Some(inner) => inner.replace("\"\"", "\""),
        None => identifier.to_owned(),
    }
}

/// Whether `name` is exactly one possibly schema-qualified identifier as pg_dump writes it.
pub fn is_qualified_name(name: &str) -> bool {
    qualified(name.as_bytes()).is_some_and(|(_, rest)| rest.is_empty())
}

/// The table of `COPY <table> (...) FROM stdin;`.
fn copy_table(line: &[u8]) -> Option<String> {
    qualified(line.strip_prefix(b"COPY ")?).map(|(t, _)| t)
}

/// The table an index or constraint is built on, from the first line of its statement:
/// `CREATE [UNIQUE] INDEX <name> ON [ONLY] <table> USING ...` or `ALTER TABLE [ONLY] <table>`.
fn built_on(line: &[u8]) -> Option<String> {
    if let Some(rest) = line.strip_prefix(b"ALTER TABLE ") {
        let rest = rest.strip_prefix(b"ONLY ").unwrap_or(rest);
        return qualified(rest).map(|(t, _)| t);
    }
    let rest = line
        .strip_prefix(b"CREATE UNIQUE INDEX ")
        .or_else(|| line.strip_prefix(b"CREATE INDEX "))?;
    let rest = &rest[identifier(rest)?..];
    let rest = rest.strip_prefix(b" ON ")?;
    let rest = rest.strip_prefix(b"ONLY ").unwrap_or(rest);
    qualified(rest).map(|(t, _)| t)
}

fn refusal(e: PushError) -> String {
    match e {
        PushError::Refused(r) => r.to_string(),
        PushError::Forward(e) => e.to_string(),
    }
}

fn is_copy_end(head: &[u8]) -> bool {
    matches!(head, b"\\.\n" | b"\\.\r\n" | b"\\.")
}

impl Sectioner {
    pub fn new() -> Self {
        Sectioner::default()
    }

    /// Cuts table rows into chunks of about `bytes` instead of [`DATA_CHUNK`] (tests).
    pub fn with_data_chunk(bytes: u64) -> Self {
        Sectioner {
            data_chunk: bytes,
            ..Sectioner::default()
        }
    }

    fn cut(&mut self, kind: SectionKind) {
        if let Some(last) = self.sections.last_mut() {
            last.uncompressed_size_bytes = self.position - self.section_start;
            last.ends_in_copy = self.copy.is_some();
        }
        let mut next = section(kind);
        if let Some(copy) = &self.copy {
            next.copy = Some(copy.clone());
            next.table = Some(self.copy_target.clone());
            next.copy_rows.push((self.copy_target.clone(), 0));
        }
        if matches!(kind, SectionKind::Index | SectionKind::PostData) {
            next.tablespace = self.tablespace.clone();
        }
        self.sections.push(next);
        self.section_start = self.position;
    }

    fn current(&self) -> Option<&DumpSection> {
        self.sections.last()
    }

    /// Decides, from a line's first bytes, whether a section starts before it.
    fn decide(&mut self, head: &[u8]) -> bool {
        if self.sections.is_empty() {
            self.cut(SectionKind::Preamble);
            return true;
        }
        if self.failed.is_some() {
            return false;
        }
        if self.copy.is_some() {
            self.line_is_sql = false;
            if is_copy_end(head) {
                return false;
            }
            // COPY text escapes a line break in a value: each line here is one row.
            let cut = self.position - self.section_start >= self.data_chunk;
            if cut {
                self.cut(SectionKind::Data);
            }
            // Counted for the COPY being read, whatever the section was taken for.
            if let Some((_, rows)) = self
                .sections
                .last_mut()
                .and_then(|s| s.copy_rows.last_mut())
            {
                *rows += 1;
            }
            return cut;
        }
        self.line_is_sql = true;
        self.line_starts_statement = self.guard.at_statement_boundary();
        if !self.line_starts_statement {
            return false;
        }
        if let Some(line) = head.strip_suffix(b"\n").or(Some(head))
            && let Some(text) = line.strip_prefix(b"SET default_tablespace = ")
            && text.ends_with(b";")
        {
            self.tablespace = Some(String::from_utf8_lossy(line).into_owned());
        }
        if let Some(current) = self.sections.last_mut()
            && current.kind == SectionKind::Index
            && current.table.is_none()
            && let Some(table) = built_on(head)
        {
            current.table = Some(table);
        }
        let Some(kind) = header_type(head) else {
            return false;
        };
        let data = DATA_TYPES.contains(&kind);
        let index = INDEX_TYPES.contains(&kind);
        let next = match self.phase {
            Phase::Preamble if data => Some(SectionKind::Data),
            Phase::Preamble if index => Some(SectionKind::Index),
            Phase::Preamble => Some(SectionKind::PreData),
            Phase::PreData if data => Some(SectionKind::Data),
            Phase::PreData if index => Some(SectionKind::Index),
            Phase::PreData => None,
            Phase::Data if data => {
                // Sequence values and large objects share a section; each table has its own.
                let own = kind == "TABLE DATA" || self.current().is_some_and(|c| c.table.is_some());
                own.then_some(SectionKind::Data)
            }
            Phase::Data | Phase::PostData if index => Some(SectionKind::Index),
            Phase::Data => Some(SectionKind::PostData),
            Phase::PostData => (self.current().map(|c| c.kind) == Some(SectionKind::Index))
                .then_some(SectionKind::PostData),
        };
        let Some(next) = next else {
            return false;
        };
        self.phase = match next {
            SectionKind::Preamble => Phase::Preamble,
            SectionKind::PreData => Phase::PreData,
            SectionKind::Data => Phase::Data,
            SectionKind::Index | SectionKind::PostData => Phase::PostData,
        };
        self.cut(next);
        true
    }

    /// Feeds SQL bytes to the guard; after a line's end, notes a COPY that began.
    fn read_sql(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self.guard.push(bytes, &mut std::io::sink()) {
            self.failed = Some(refusal(e));
            return;
        }
        if self.line.len() + bytes.len() <= LINE_LIMIT {
            self.line.extend_from_slice(bytes);
        } else {
            self.line_overflowed = true;
        }
        if !bytes.ends_with(b"\n") {
            return;
        }
        let line = std::mem::take(&mut self.line);
        let overflowed = std::mem::replace(&mut self.line_overflowed, false);
        if self.guard.in_copy_data() {
            if overflowed {
                self.failed = Some(format!(
                    "a COPY statement is longer than {LINE_LIMIT} bytes; no section index"
                ));
                return;
            }
            let statement = line.strip_suffix(b"\n").unwrap_or(&line);
            // pg_dump writes a column name with a line break as it is, inside its quotes: the
            // statement then spans lines, and its last line is no COPY statement (or reads as
            // one of another table). Such a dump gets no index (it loads in one session) rather
            // than a wrong table or COPY line.
            let target = copy_table(statement)
                .filter(|_| self.line_starts_statement && statement.ends_with(b" FROM stdin;"));
            let Some(target) = target else {
                self.failed = Some(
                    "a COPY statement is not one `COPY <table> ... FROM stdin;` line (a column \
                     name with a line break in it?); no section index"
                        .into(),
                );
                return;
            };
            self.copy = Some(String::from_utf8_lossy(statement).into_owned());
            if let Some(current) = self.sections.last_mut() {
                current.copy_rows.push((target.clone(), 0));
                if current.kind == SectionKind::Data && current.table.is_none() {
                    current.table = Some(target.clone());
                }
            }
            self.copy_target = target;
        }
        self.line = line;
        self.line.clear();
    }

    /// Scans `block`, the dump's next bytes (after the undecided rest of the previous block);
    /// `last` when no more follow.
    pub fn scan(&mut self, block: &[u8], last: bool) -> Scan {
        let mut scan = Scan::default();
        let mut at = 0;
        while at < block.len() || (last && self.sections.is_empty()) {
            let rest = &block[at..];
            let newline = memchr::memchr(b'\n', rest);
            if self.at_line_start {
                let head_len = newline.map_or(rest.len(), |i| i + 1).min(HEAD_LIMIT);
                if newline.is_none() && rest.len() < HEAD_LIMIT && !last {
                    break; // the head is not all here yet
                }
                if self.decide(&rest[..head_len]) {
                    scan.cuts.push(at);
                }
                self.at_line_start = false;
                if rest.is_empty() {
                    break;
                }
            }
            let end = newline.map_or(rest.len(), |i| i + 1);
            let line_part = &rest[..end];
            if self.line_is_sql {
                self.read_sql(line_part);
            } else if self.copy.is_some() && is_copy_end(line_part) {
                self.read_sql(line_part);
                self.copy = None;
            }
            self.position += end as u64;
            at += end;
            if newline.is_some() {
                self.at_line_start = true;
            }
        }
        scan.decided = at;
        scan
    }

    /// The sections found, their uncompressed sizes set (ranges and hashes are the
    /// compressor's to fill), or why there are none.
    pub fn finish(mut self) -> Result<Vec<DumpSection>, String> {
        if let Some(why) = self.failed {
            return Err(why);
        }
        self.guard.finish(&mut std::io::sink()).map_err(refusal)?;
        if let Some(last) = self.sections.last_mut() {
            last.uncompressed_size_bytes = self.position - self.section_start;
        }
        Ok(self.sections)
    }
}

/// What a session sends before a section's own bytes: the tablespace in effect where it
/// starts, and the COPY statement whose rows it continues.
pub fn before(section: &DumpSection) -> Vec<u8> {
    let mut text = Vec::new();
    for line in [&section.tablespace, &section.copy].into_iter().flatten() {
        text.extend_from_slice(line.as_bytes());
        text.push(b'\n');
    }
    text
}

/// What a session sends after a section's own bytes: the end of the COPY it stops inside.
pub fn after(section: &DumpSection) -> &'static [u8] {
    if section.ends_in_copy { b"\\.\n" } else { b"" }
}

#[cfg(test)]
mod tests;
