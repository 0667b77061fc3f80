//! The lexer of SQL text that [`super::ScriptGuard`] runs, one byte at a time, with psql's
//! rules (`src/fe_utils/psqlscan.l`): quoted strings and their continuation, dollar quotes,
//! nested comments, parentheses and the `CREATE FUNCTION ... BEGIN ATOMIC` heuristic that
//! decides where psql ends a statement, beside the server's own reading of the same text. It
//! reports the checks that fail as the guard's refusal text, and the plain literals it may have
//! to rewrite as [`Event`]s; it forwards nothing.

/// Longest keyword the lexer compares (a longer word is none of them).
const KEYWORD_LIMIT: usize = 16;
/// Longest dollar-quote tag or psql variable name the guard follows.
const NAME_LIMIT: usize = 256;

/// psql's predefined variables (psql 15 "Variables"); the dump cannot define others, since
/// `\set` and `\gset` are refused. `:NAME` outside quotes would be replaced by their values.
const PSQL_VARIABLES: &[&str] = &[
    "AUTOCOMMIT",
    "COMP_KEYWORD_CASE",
    "DBNAME",
    "ECHO",
    "ECHO_HIDDEN",
    "ENCODING",
    "ERROR",
    "FETCH_COUNT",
    "HIDE_TABLEAM",
    "HIDE_TOAST_COMPRESSION",
    "HISTCONTROL",
    "HISTFILE",
    "HISTSIZE",
    "HOST",
    "IGNOREEOF",
    "LASTOID",
    "LAST_ERROR_MESSAGE",
    "LAST_ERROR_SQLSTATE",
    "ON_ERROR_ROLLBACK",
    "ON_ERROR_STOP",
    "PORT",
    "PROMPT1",
    "PROMPT2",
    "PROMPT3",
    "QUIET",
    "ROW_COUNT",
    "SERVER_VERSION_NAME",
    "SERVER_VERSION_NUM",
    "SHELL_ERROR",
    "SHELL_EXIT_CODE",
    "SHOW_ALL_RESULTS",
    "SHOW_CONTEXT",
    "SINGLELINE",
    "SINGLESTEP",
    "SQLSTATE",
    "USER",
    "VERBOSITY",
    "VERSION",
    "VERSION_NAME",
    "VERSION_NUM",
];

/// Statements that begin, end or split a transaction.
const TRANSACTION_CONTROL: &[&str] = &[
    "abort",
    "begin",
    "commit",
    "end",
    "prepare",
    "release",
    "rollback",
    "savepoint",
    "start",
];

/// Which kind of quoted string the lexer is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrKind {
    /// `'...'` (and `N'...'`): psql reads backslashes as escapes or not, depending on
    /// `standard_conforming_strings`.
    Plain,
    /// `E'...'`: backslash escapes.
    Escaped,
    /// `B'...'`, `X'...'`, `U&'...'`: backslashes carry no meaning for the lexer.
    Literal,
}

/// The lexer's state between bytes (psqlscan.l's start states, plus the few bytes of lookahead
/// its longest-match rules need).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lex {
    Initial,
    /// `-` seen: a comment if another `-` follows.
    Dash,
    /// `/` seen: a comment if `*` follows.
    Slash,
    LineComment,
    Block {
        depth: u32,
        star: bool,
        slash: bool,
    },
    /// An unquoted identifier (or keyword); its first bytes, lowercased, are in `word`.
    Ident,
    /// `U&` seen.
    UAmp,
    /// `"..."`; `quote` when a `"` was just seen (a doubled `""` stays inside).
    Dquote {
        quote: bool,
    },
    /// `'...'`; `quote` when a `'` was just seen; `backslashes` is the current run length.
    Squote {
        kind: StrKind,
        quote: bool,
        backslashes: u32,
    },
    /// After a string's closing quote: whitespace with a newline and another quote continue it.
    QuoteEnd {
        kind: StrKind,
        newline: bool,
        dash: bool,
        comment: bool,
    },
    /// `$` seen at a token start; `tag` collected so far.
    Dollar {
        tag: Vec<u8>,
    },
    /// Inside `$tag$ ... $tag$`; `matched` bytes of the delimiter seen.
    DollarQuoted {
        delimiter: Vec<u8>,
        matched: usize,
    },
    /// `:` seen.
    Colon,
    /// `:name`, `:'name` or `:"name` being read.
    ColonName {
        quote: Option<u8>,
        name: Vec<u8>,
    },
}

/// A plain `'...'` literal the lexer reported, for the guard's rewriting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    /// It opened at this offset (of its quote, counted in bytes fed to the lexer).
    Open { at: u64, rewritable: bool },
    /// It ended just before this offset; `ambiguous` if its end depends on
    /// `standard_conforming_strings`.
    End { end: u64, ambiguous: bool },
}

/// The plain literal being read.
#[derive(Debug, Clone, Copy, Default)]
struct Literal {
    ambiguous: bool,
    continued: bool,
    /// Offset just after its closing quote, once seen.
    end: u64,
}

/// A significant token, for the statement-level checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Word,
    QuotedIdent,
    /// `.`, `,`, `(` or `)`: what may sit between COPY and FROM stdin.
    Punct,
    Other,
}

/// The COPY statement being read: pg_dump's form is `COPY name [(cols)] FROM stdin;`.
#[derive(Debug, Clone, Default)]
struct CopyStatement {
    /// Only words, quoted identifiers and punctuation so far.
    plain: bool,
    /// The last two words, and whether the last token was a word.
    last_words: [Option<&'static str>; 2],
    ends_with_word: bool,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

fn is_dolq_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit()
}

fn is_variable_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

fn is_newline(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c)
}

/// The lexer of SQL text, one byte at a time.
#[derive(Debug, Clone)]
pub(super) struct Lexer {
    state: Lex,
    /// Lowercased first bytes of the identifier being read (enough for keywords).
    word: Vec<u8>,
    word_len: usize,
    /// Offset of the identifier's first byte.
    word_start: u64,
    /// The previous byte of SQL text (for the multibyte-encoding checks).
    prev: u8,
    /// Offset of the byte being read, and bytes fed so far.
    offset: u64,
    pub(super) fed: u64,
    literal: Option<Literal>,
    pub(super) events: Vec<Event>,
    // psql's statement splitting (psqlscan.l): `;` ends a statement at paren_depth 0 and
    // begin_depth 0; begin_depth follows BEGIN/CASE/END in CREATE [OR REPLACE]
    // FUNCTION|PROCEDURE statements.
    paren_depth: u32,
    begin_depth: u32,
    identifier_count: u32,
    identifiers: [u8; 4],
    // The server's reading: a new statement starts after `;` unless inside BEGIN ATOMIC.
    atomic_depth: u32,
    last_was_begin: bool,
    /// Whether psql's query buffer is empty (only whitespace and `--` comments since the end of
    /// the last statement).
    buffer_empty: bool,
    /// Significant tokens since the statement started.
    statement_tokens: u32,
    copy: Option<CopyStatement>,
    /// A COPY ... FROM stdin statement ended on this line; its data starts on the next.
    pub(super) copy_pending: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer {
            state: Lex::Initial,
            word: Vec::new(),
            word_len: 0,
            word_start: 0,
            prev: b'\n',
            offset: 0,
            fed: 0,
            literal: None,
            events: Vec::new(),
            paren_depth: 0,
            begin_depth: 0,
            identifier_count: 0,
            identifiers: [0; 4],
            atomic_depth: 0,
            last_was_begin: false,
            buffer_empty: true,
            statement_tokens: 0,
            copy: None,
            copy_pending: false,
        }
    }
}

pub(super) type Step = Result<(), String>;

const AMBIGUOUS_CONTINUED: &str = "holds a string literal continued over lines whose end depends \
     on standard_conforming_strings (a quote after an odd number of backslashes); pg_dump writes \
     no such literal";

impl Lexer {
    /// Nothing open: no string, comment, parenthesis or unfinished statement.
    pub(super) fn pristine(&self) -> bool {
        matches!(self.state, Lex::Initial)
            && self.buffer_empty
            && self.paren_depth == 0
            && self.begin_depth == 0
            && self.atomic_depth == 0
            && !self.copy_pending
    }

    /// Where the statement's first word starts, while it is still being read and could yet
    /// turn out to be transaction control (refused only once the word ends). psql runs what is
    /// left in its buffer when its input ends, so none of such a word may reach it early: a
    /// dump cut off after `COMMIT` must not commit.
    pub(super) fn undecided_first_word(&self) -> Option<u64> {
        let first = self.statement_tokens == 0 && self.atomic_depth == 0;
        (first && matches!(self.state, Lex::Ident) && self.word_len <= KEYWORD_LIMIT)
            .then_some(self.word_start)
    }

    /// Whether the text read so far ends cleanly, so that the agent's COMMIT can follow.
    pub(super) fn at_clean_end(&self) -> bool {
        matches!(self.state, Lex::Initial | Lex::LineComment)
            && self.buffer_empty
            && self.paren_depth == 0
            && self.begin_depth == 0
            && self.atomic_depth == 0
            && !self.copy_pending
    }

    pub(super) fn feed(&mut self, bytes: &[u8]) -> Step {
        let base = self.fed;
        self.fed += bytes.len() as u64;
        for (i, &b) in bytes.iter().enumerate() {
            self.offset = base + i as u64;
            if b == 0 {
                return Err(
                    "holds a NUL byte: no pg_dump output does, and psql would read the \
                            rest of that line differently than the agent"
                        .into(),
                );
            }
            if self.copy_pending && !matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
                return Err(
                    "has text after `COPY ... FROM stdin;` on the same line; pg_dump \
                            ends that line there"
                        .into(),
                );
            }
            self.byte(b)?;
            self.prev = b;
        }
        Ok(())
    }

    /// One byte; a state that needs lookahead re-dispatches the byte after deciding.
    fn byte(&mut self, b: u8) -> Step {
        match std::mem::replace(&mut self.state, Lex::Initial) {
            Lex::Initial => self.initial(b),
            Lex::Dash => {
                if b == b'-' {
                    self.state = Lex::LineComment;
                    Ok(())
                } else {
                    self.token(Tok::Other)?;
                    self.initial(b)
                }
            }
            Lex::Slash => {
                if b == b'*' {
                    self.buffer_empty = false;
                    self.state = Lex::Block {
                        depth: 0,
                        star: false,
                        slash: false,
                    };
                    Ok(())
                } else {
                    self.token(Tok::Other)?;
                    self.initial(b)
                }
            }
            Lex::LineComment => {
                if !is_newline(b) {
                    self.state = Lex::LineComment;
                }
                Ok(())
            }
            Lex::Block { depth, star, slash } => {
                self.state = match b {
                    b'/' if star => {
                        if depth == 0 {
                            Lex::Initial
                        } else {
                            Lex::Block {
                                depth: depth - 1,
                                star: false,
                                slash: false,
                            }
                        }
                    }
                    b'*' if slash => Lex::Block {
                        depth: depth + 1,
                        star: false,
                        slash: false,
                    },
                    _ => Lex::Block {
                        depth,
                        star: b == b'*',
                        slash: b == b'/',
                    },
                };
                Ok(())
            }
            Lex::Ident => self.ident(b),
            Lex::UAmp => match b {
                b'\'' => self.open_string(StrKind::Literal, false),
                b'"' => {
                    self.state = Lex::Dquote { quote: false };
                    Ok(())
                }
                // psql's {xufailed}: the `U` is echoed (not an identifier), `&` is rescanned.
                _ => {
                    self.token(Tok::Other)?;
                    self.initial(b)
                }
            },
            Lex::Dquote { quote } => {
                if quote {
                    if b == b'"' {
                        self.state = Lex::Dquote { quote: false };
                        return Ok(());
                    }
                    self.token(Tok::QuotedIdent)?;
                    return self.initial(b);
                }
                self.state = Lex::Dquote { quote: b == b'"' };
                Ok(())
            }
            Lex::Squote {
                kind,
                quote,
                backslashes,
            } => self.squote(kind, quote, backslashes, b),
            Lex::QuoteEnd {
                kind,
                newline,
                dash,
                comment,
            } => self.quote_end(kind, newline, dash, comment, b),
            Lex::Dollar { tag } => self.dollar(tag, b),
            Lex::DollarQuoted { delimiter, matched } => {
                let matched = if delimiter[matched] == b {
                    matched + 1
                } else if b == b'$' {
                    1
                } else {
                    0
                };
                if matched == delimiter.len() {
                    return self.token(Tok::Other);
                }
                self.state = Lex::DollarQuoted { delimiter, matched };
                Ok(())
            }
            Lex::Colon => match b {
                b':' | b'=' => self.token(Tok::Other),
                b'\'' | b'"' => {
                    self.state = Lex::ColonName {
                        quote: Some(b),
                        name: Vec::new(),
                    };
                    Ok(())
                }
                b'{' => {
                    Err("holds a psql variable test `:{?...}`; pg_dump never writes one".into())
                }
                _ if is_variable_char(b) => {
                    self.state = Lex::ColonName {
                        quote: None,
                        name: vec![b],
                    };
                    Ok(())
                }
                _ => {
                    self.token(Tok::Other)?;
                    self.initial(b)
                }
            },
            Lex::ColonName { quote, mut name } => {
                if is_variable_char(b) {
                    if name.len() >= NAME_LIMIT {
                        return Err(format!(
                            "holds a name after `:` longer than {NAME_LIMIT} bytes"
                        ));
                    }
                    name.push(b);
                    self.state = Lex::ColonName { quote, name };
                    return Ok(());
                }
                match quote {
                    None => {
                        check_variable(&name)?;
                        self.token(Tok::Other)?;
                        self.initial(b)
                    }
                    // `:'name'` / `:"name"`: one token, substituted if `name` is a variable.
                    Some(q) if b == q && !name.is_empty() => {
                        check_variable(&name)?;
                        self.token(Tok::Other)
                    }
                    // psql rescans everything after the colon.
                    Some(q) => {
                        self.token(Tok::Other)?;
                        let mut again = Vec::with_capacity(name.len() + 2);
                        again.push(q);
                        again.extend_from_slice(&name);
                        again.push(b);
                        self.replay(&again)
                    }
                }
            }
        }
    }

    fn initial(&mut self, b: u8) -> Step {
        if self.prev >= 0x80
            && (0x31..=0x7e).contains(&b)
            && !b.is_ascii_alphanumeric()
            && b != b'_'
        {
            return Err(format!(
                "holds a non-ASCII byte directly followed by {:?}, which psql reads as part of \
                 the character under a multibyte client encoding (SJIS, BIG5, GBK...)",
                b as char
            ));
        }
        self.state = Lex::Initial;
        match b {
            _ if is_space(b) => Ok(()),
            b'-' => {
                self.state = Lex::Dash;
                Ok(())
            }
            b'/' => {
                self.state = Lex::Slash;
                Ok(())
            }
            b'\\' => Err(
                "holds a psql meta-command (a backslash outside quotes and COPY data), \
                          which psql would run as the restore's user; only pg_dump's own \
                          \\restrict and \\unrestrict lines may hold one"
                    .into(),
            ),
            b'\'' => self.open_string(StrKind::Plain, true),
            b'"' => {
                self.state = Lex::Dquote { quote: false };
                Ok(())
            }
            b'$' => {
                self.state = Lex::Dollar { tag: Vec::new() };
                Ok(())
            }
            b':' => {
                self.state = Lex::Colon;
                Ok(())
            }
            b'(' => {
                self.token(Tok::Punct)?;
                self.paren_depth += 1;
                Ok(())
            }
            b')' => {
                self.token(Tok::Punct)?;
                self.paren_depth = self.paren_depth.saturating_sub(1);
                Ok(())
            }
            b',' | b'.' => self.token(Tok::Punct),
            b';' => self.semicolon(),
            _ if is_ident_start(b) => {
                self.word.clear();
                self.word.push(b.to_ascii_lowercase());
                self.word_len = 1;
                self.word_start = self.offset;
                self.state = Lex::Ident;
                Ok(())
            }
            _ => self.token(Tok::Other),
        }
    }

    fn ident(&mut self, b: u8) -> Step {
        if is_ident_cont(b) {
            if self.word.len() < KEYWORD_LIMIT {
                self.word.push(b.to_ascii_lowercase());
            }
            self.word_len += 1;
            self.state = Lex::Ident;
            return Ok(());
        }
        // A one-letter token that prefixes a quote (psql's xestart, xbstart, xhstart, xnstart,
        // xusstart): the letter is not an identifier.
        if self.word_len == 1 {
            match (self.word[0], b) {
                (b'e', b'\'') => return self.open_string(StrKind::Escaped, false),
                (b'b' | b'x', b'\'') => return self.open_string(StrKind::Literal, false),
                (b'n', b'\'') => return self.open_string(StrKind::Plain, false),
                (b'u', b'&') => {
                    self.state = Lex::UAmp;
                    return Ok(());
                }
                _ => {}
            }
        }
        self.identifier()?;
        self.initial(b)
    }

    /// A string opens at the current byte; a plain one is reported, `rewritable` unless it had
    /// a prefix (`N'...'`).
    fn open_string(&mut self, kind: StrKind, rewritable: bool) -> Step {
        if kind == StrKind::Plain {
            self.literal = Some(Literal::default());
            self.events.push(Event::Open {
                at: self.offset,
                rewritable,
            });
        }
        self.buffer_empty = false;
        self.state = Lex::Squote {
            kind,
            quote: false,
            backslashes: 0,
        };
        Ok(())
    }

    fn squote(&mut self, kind: StrKind, quote: bool, backslashes: u32, b: u8) -> Step {
        if quote {
            // `''` inside the string (not in B'' / X'': psql ends those and starts a new one).
            if b == b'\'' {
                let kind = if kind == StrKind::Literal {
                    StrKind::Plain
                } else {
                    kind
                };
                self.state = Lex::Squote {
                    kind,
                    quote: false,
                    backslashes: 0,
                };
                return Ok(());
            }
            if let Some(literal) = &mut self.literal {
                literal.end = self.offset;
            }
            self.state = Lex::QuoteEnd {
                kind,
                newline: false,
                dash: false,
                comment: false,
            };
            return self.byte(b);
        }
        if b == b'\\' && self.prev >= 0x80 {
            return Err(
                "holds a non-ASCII byte directly followed by a backslash in a string, \
                        which psql reads as part of the character under a multibyte client \
                        encoding (SJIS, BIG5, GBK...)"
                    .into(),
            );
        }
        match (kind, b) {
            // An escaped byte, whatever it is.
            (StrKind::Escaped, _) if backslashes % 2 == 1 => {
                self.state = Lex::Squote {
                    kind,
                    quote: false,
                    backslashes: if b == b'\\' { backslashes + 1 } else { 0 },
                };
                return Ok(());
            }
            // psql reads `\'` as the end (standard_conforming_strings on, as pg_dump sets it)
            // or as an escaped quote (off): the guard rewrites the literal as E'...'.
            (StrKind::Plain, b'\'') if backslashes % 2 == 1 => {
                let literal = self.literal.get_or_insert_default();
                if literal.continued {
                    return Err(AMBIGUOUS_CONTINUED.into());
                }
                literal.ambiguous = true;
            }
            _ => {}
        }
        self.state = Lex::Squote {
            kind,
            quote: b == b'\'',
            backslashes: if b == b'\\' { backslashes + 1 } else { 0 },
        };
        Ok(())
    }

    /// psql's xqs state: whitespace containing a newline, then a quote, continues the string;
    /// anything else ends it, and what followed is read again as ordinary text.
    fn quote_end(
        &mut self,
        kind: StrKind,
        newline: bool,
        dash: bool,
        comment: bool,
        b: u8,
    ) -> Step {
        let stay = |newline, dash, comment| Lex::QuoteEnd {
            kind,
            newline,
            dash,
            comment,
        };
        if comment {
            self.state = if is_newline(b) {
                stay(true, false, false)
            } else {
                stay(newline, false, true)
            };
            return Ok(());
        }
        match b {
            b'-' if dash => {
                self.state = stay(newline, false, true);
                Ok(())
            }
            b'-' => {
                self.state = stay(newline, true, false);
                Ok(())
            }
            _ if dash => {
                // A single `-` after the string: an operator.
                self.string_ended();
                self.token(Tok::Other)?;
                self.state = Lex::Dash;
                self.byte(b)
            }
            b' ' | b'\t' | 0x0c => {
                self.state = stay(newline, false, false);
                Ok(())
            }
            _ if is_newline(b) => {
                self.state = stay(true, false, false);
                Ok(())
            }
            b'\'' if newline => {
                if let Some(literal) = &mut self.literal {
                    if literal.ambiguous {
                        return Err(AMBIGUOUS_CONTINUED.into());
                    }
                    literal.continued = true;
                }
                self.state = Lex::Squote {
                    kind,
                    quote: false,
                    backslashes: 0,
                };
                Ok(())
            }
            _ => {
                self.string_ended();
                self.token(Tok::Other)?;
                self.initial(b)
            }
        }
    }

    /// A string's continuation lookahead failed: it ended at its last quote.
    fn string_ended(&mut self) {
        if let Some(literal) = self.literal.take() {
            self.events.push(Event::End {
                end: literal.end,
                ambiguous: literal.ambiguous,
            });
        }
    }

    fn dollar(&mut self, mut tag: Vec<u8>, b: u8) -> Step {
        let start = tag.is_empty();
        if b == b'$' {
            // `$tag$` or `$$`: a dollar-quoted string.
            let mut delimiter = Vec::with_capacity(tag.len() + 2);
            delimiter.push(b'$');
            delimiter.extend_from_slice(&tag);
            delimiter.push(b'$');
            self.buffer_empty = false;
            self.state = Lex::DollarQuoted {
                delimiter,
                matched: 0,
            };
            return Ok(());
        }
        if (start && is_ident_start(b)) || (!start && is_dolq_cont(b)) {
            if tag.len() >= NAME_LIMIT {
                return Err(format!(
                    "holds a dollar-quote tag longer than {NAME_LIMIT} bytes"
                ));
            }
            tag.push(b);
            self.state = Lex::Dollar { tag };
            return Ok(());
        }
        // A lone `$` (or `$1`): psql echoes the `$` and rescans what followed it.
        self.token(Tok::Other)?;
        tag.push(b);
        self.replay(&tag)
    }

    /// Reads again `bytes`, the last of which is the current byte, from the Initial state.
    fn replay(&mut self, bytes: &[u8]) -> Step {
        let current = self.offset;
        self.state = Lex::Initial;
        for (i, &b) in bytes.iter().enumerate() {
            self.offset = current + 1 + i as u64 - bytes.len() as u64;
            self.byte(b)?;
        }
        Ok(())
    }

    fn identifier(&mut self) -> Step {
        let word: &'static str = match self.word.as_slice() {
            _ if self.word_len > KEYWORD_LIMIT => "",
            w => intern(w),
        };
        // psql's heuristic (psqlscan.l, {identifier}).
        if self.identifier_count == 0 {
            self.identifiers = [0; 4];
        }
        if matches!(word, "create" | "function" | "procedure" | "or" | "replace")
            && (self.identifier_count as usize) < self.identifiers.len()
        {
            self.identifiers[self.identifier_count as usize] = word.as_bytes()[0];
        }
        self.identifier_count += 1;
        let ids = self.identifiers;
        let routine = ids[0] == b'c'
            && (ids[1] == b'f'
                || ids[1] == b'p'
                || (ids[1] == b'o' && ids[2] == b'r' && (ids[3] == b'f' || ids[3] == b'p')));
        let was_begin = self.last_was_begin;
        if routine && self.paren_depth == 0 {
            match word {
                "begin" => self.begin_depth += 1,
                "case" if self.begin_depth >= 1 => self.begin_depth += 1,
                "end" if self.begin_depth > 0 => self.begin_depth -= 1,
                _ => {}
            }
            // The server's reading: only BEGIN ATOMIC opens a body.
            match word {
                "atomic" if was_begin => self.atomic_depth += 1,
                "case" if self.atomic_depth >= 1 => self.atomic_depth += 1,
                "end" if self.atomic_depth > 0 => self.atomic_depth -= 1,
                _ => {}
            }
        }
        if self.statement_tokens == 0 && self.atomic_depth == 0 {
            if TRANSACTION_CONTROL.contains(&word) {
                return Err(format!(
                    "holds transaction control ({}) other than pg_dump's own `BEGIN;` and \
                     `COMMIT;` lines; it would end the restore's transaction before the dump \
                     was verified",
                    word.to_ascii_uppercase()
                ));
            }
            if word == "copy" {
                self.copy = Some(CopyStatement {
                    plain: true,
                    ..CopyStatement::default()
                });
            }
        }
        self.token(Tok::Word)?;
        self.last_was_begin = word == "begin";
        if let Some(copy) = &mut self.copy {
            copy.last_words = [copy.last_words[1], Some(word)];
            copy.ends_with_word = true;
        }
        Ok(())
    }

    /// Bookkeeping for every significant token (a word's own effects are in `identifier`).
    fn token(&mut self, tok: Tok) -> Step {
        self.buffer_empty = false;
        self.statement_tokens += 1;
        self.last_was_begin = false;
        if let Some(copy) = &mut self.copy
            && tok != Tok::Word
        {
            copy.ends_with_word = false;
            if tok == Tok::Other {
                copy.plain = false;
            }
        }
        Ok(())
    }

    fn semicolon(&mut self) -> Step {
        if self.paren_depth > 0 {
            // Neither psql nor the server ends a statement inside parentheses.
            return self.token(Tok::Other);
        }
        let psql_ends = self.begin_depth == 0;
        let server_ends = self.atomic_depth == 0;
        if psql_ends != server_ends {
            return Err(
                "holds a statement that psql and the server would end in different \
                        places (BEGIN in a CREATE FUNCTION without ATOMIC); pg_dump writes no \
                        such statement"
                    .into(),
            );
        }
        if !psql_ends {
            // A `;` inside a BEGIN ATOMIC body.
            return self.token(Tok::Other);
        }
        let copy = self.copy.take();
        self.buffer_empty = true;
        self.statement_tokens = 0;
        self.identifier_count = 0;
        self.last_was_begin = false;
        if let Some(copy) = copy {
            if !(copy.plain
                && copy.ends_with_word
                && copy.last_words == [Some("from"), Some("stdin")])
            {
                return Err(
                    "holds a COPY statement that is not pg_dump's `COPY <table> \
                            (<columns>) FROM stdin;`"
                        .into(),
                );
            }
            self.copy_pending = true;
        }
        Ok(())
    }
}

/// The keywords the lexer compares against, as `'static` strings (anything else is "").
fn intern(word: &[u8]) -> &'static str {
    const KNOWN: &[&str] = &[
        "abort",
        "atomic",
        "begin",
        "case",
        "commit",
        "copy",
        "create",
        "end",
        "from",
        "function",
        "or",
        "prepare",
        "procedure",
        "release",
        "replace",
        "rollback",
        "savepoint",
        "start",
        "stdin",
    ];
    KNOWN
        .iter()
        .find(|k| k.as_bytes() == word)
        .copied()
        .unwrap_or("")
}

fn check_variable(name: &[u8]) -> Step {
    match std::str::from_utf8(name) {
        Ok(name) if PSQL_VARIABLES.contains(&name) => Err(format!(
            "refers to the psql variable :{name}, which psql would replace by its value; \
             pg_dump never writes psql variable references"
        )),
        _ => Ok(()),
    }
}
