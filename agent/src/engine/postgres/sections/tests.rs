use super::*;

/// A small xorshift generator: the property tests are reproducible from their seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn header(data: bool, name: &str, kind: &str) -> String {
    let pfx = if data { "Data for " } else { "" };
    format!("\n--\n-- {pfx}Name: {name}; Type: {kind}; Schema: public; Owner: app\n--\n\n")
}

/// COPY text of one random row: tabs, escaped backslashes (`\\.` is data, not the end), long
/// values, `\N`, and text that looks like a header.
fn row(rng: &mut Rng, i: u64) -> String {
    let value = match rng.below(6) {
        0 => "\\\\.".to_owned(),
        1 => "-- Data for Name: fake; Type: TABLE DATA; Schema: public; Owner: x".to_owned(),
        2 => "x".repeat(rng.below(5000) as usize),
        3 => "\\N".to_owned(),
        4 => "\\\\.\\n\\\\.".to_owned(),
        _ => format!("plain {i}"),
    };
    format!("{i}\t{value}\n")
}

fn tablespace_of(table: u64) -> &'static str {
    if (table / 2).is_multiple_of(2) {
        "fast"
    } else {
        "''"
    }
}

/// A dump shaped like pg_dump's, and each table's rows.
fn dump(rng: &mut Rng) -> (String, Vec<(String, Vec<String>)>) {
    let mut text = String::from(
        "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc123\n\nSET statement_timeout = 0;\n\
         SET client_encoding = 'UTF8';\nSELECT pg_catalog.set_config('search_path', '', false);\n",
    );
    let tables = 1 + rng.below(5);
    text += &header(false, "f()", "FUNCTION");
    // A header-like line inside a function body is no cut.
    text += "CREATE FUNCTION public.f() RETURNS text\n    LANGUAGE sql\n    AS $$SELECT '\n--\n\
             -- Data for Name: t0; Type: TABLE DATA; Schema: public; Owner: app\n--\n'$$;\n";
    for t in 0..tables {
        text += "\nSET default_tablespace = '';\n";
        text += &header(false, &format!("t{t}"), "TABLE");
        text += &format!("CREATE TABLE public.t{t} (\n    id integer,\n    v text\n);\n");
    }
    text += &header(false, "s", "SEQUENCE");
    text += "CREATE SEQUENCE public.s;\n";
    let mut rows_of = Vec::new();
    for t in 0..tables {
        text += &header(true, &format!("t{t}"), "TABLE DATA");
        let copy = format!("COPY public.t{t} (id, v) FROM stdin;");
        text += &copy;
        text += "\n";
        let n = match rng.below(3) {
            0 => 0,
            1 => rng.below(10),
            _ => 200 + rng.below(2000),
        };
        let rows: Vec<String> = (0..n).map(|i| row(rng, i)).collect();
        for r in &rows {
            text += r;
        }
        text += "\\.\n\n";
        rows_of.push((format!("public.t{t}"), rows));
    }
    text += &header(false, "s", "SEQUENCE SET");
    text += "SELECT pg_catalog.setval('public.s', 3, true);\n";
    text += &header(true, "BLOBS", "BLOBS");
    text += "BEGIN;\n\nSELECT pg_catalog.lo_open('16400', 131072);\nCOMMIT;\n";
    // pg_dump sets the tablespace only where it changes.
    let mut current = "''";
    for t in 0..tables {
        let wanted = tablespace_of(t);
        if wanted != current {
            text += &format!("\nSET default_tablespace = {wanted};\n");
            current = wanted;
        }
        text += &header(false, &format!("t{t} t{t}_pkey"), "CONSTRAINT");
        text += &format!(
            "ALTER TABLE ONLY public.t{t}\n    ADD CONSTRAINT t{t}_pkey PRIMARY KEY (id);\n"
        );
        text += &header(false, &format!("t{t}_v"), "INDEX");
        text += &format!("CREATE INDEX t{t}_v ON public.t{t} USING btree (v);\n");
        text += &header(false, &format!("INDEX t{t}_v"), "COMMENT");
        text += &format!(
            "COMMENT ON INDEX public.t{t}_v IS '\n-- Name: x; Type: INDEX; Schema: public; Owner: y\n';\n"
        );
    }
    text += &header(false, "t0 fk", "FK CONSTRAINT");
    text += "ALTER TABLE ONLY public.t0\n    ADD CONSTRAINT fk FOREIGN KEY (id) REFERENCES public.t0(id);\n";
    text += &header(false, "TABLE t0", "ACL");
    text += "GRANT SELECT ON TABLE public.t0 TO reader;\n\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc123\n";
    (text, rows_of)
}

/// Scans `text` in blocks of random sizes, as the compressor's reader does.
fn sections_of(text: &[u8], rng: &mut Rng, chunk: u64) -> (Vec<DumpSection>, Vec<Vec<u8>>) {
    let mut sectioner = Sectioner::with_data_chunk(chunk);
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let mut carry = Vec::new();
    let mut at = 0;
    loop {
        let take = (1 + rng.below(3000) as usize).min(text.len() - at);
        let mut block = std::mem::take(&mut carry);
        block.extend_from_slice(&text[at..at + take]);
        at += take;
        let last = at == text.len();
        let scan = sectioner.scan(&block, last);
        carry = block.split_off(scan.decided);
        let mut from = 0;
        for cut in scan.cuts {
            if let Some(piece) = pieces.last_mut() {
                piece.extend_from_slice(&block[from..cut]);
            }
            pieces.push(Vec::new());
            from = cut;
        }
        pieces
            .last_mut()
            .expect("the first block starts the preamble")
            .extend_from_slice(&block[from..]);
        if last {
            assert!(carry.is_empty());
            break;
        }
    }
    (sectioner.finish().expect("the dump is SQL only"), pieces)
}

/// The rows of every COPY in `stream`, by table.
fn copied_rows(stream: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut lines = stream.split_inclusive('\n');
    while let Some(line) = lines.next() {
        if let Some(table) = copy_table(line.as_bytes()) {
            let mut rows = Vec::new();
            for row in lines.by_ref() {
                if row == "\\.\n" {
                    break;
                }
                rows.push(row.to_owned());
            }
            out.push((table, rows));
        }
    }
    out
}

#[test]
fn sections_tile_the_dump_and_each_loads_on_its_own() {
    for seed in 1..=60u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let (text, tables) = dump(&mut rng);
        let chunk = [64 << 20, 1 + rng.below(20_000)][seed as usize % 2];
        let (sections, pieces) = sections_of(text.as_bytes(), &mut rng, chunk);
        assert_eq!(pieces.concat(), text.as_bytes(), "seed {seed}");
        assert_eq!(sections.len(), pieces.len());
        for (s, p) in sections.iter().zip(&pieces) {
            assert_eq!(s.uncompressed_size_bytes, p.len() as u64, "seed {seed}");
        }
        let kinds: Vec<SectionKind> = sections.iter().map(|s| s.kind).collect();
        assert_eq!(kinds[0], SectionKind::Preamble);
        assert_eq!(kinds[1], SectionKind::PreData, "seed {seed}");
        assert!(
            kinds[2..].is_sorted_by_key(|k| *k != SectionKind::Data),
            "data before post-data: {kinds:?}"
        );
        // The preamble is the settings; the fake header in the function is no cut.
        let preamble = String::from_utf8_lossy(&pieces[0]);
        assert!(preamble.contains("set_config") && !preamble.contains("CREATE"));
        assert!(String::from_utf8_lossy(&pieces[1]).contains("CREATE FUNCTION"));
        // Each table's rows, loaded section by section, are its rows, in order.
        let mut loaded: Vec<(String, Vec<String>)> = Vec::new();
        for (s, p) in sections.iter().zip(&pieces) {
            let stream = [before(s), p.clone(), after(s).to_vec()].concat();
            let mut guard = ScriptGuard::new();
            guard.push(&pieces[0], &mut std::io::sink()).unwrap();
            guard.push(&stream, &mut std::io::sink()).unwrap();
            assert!(
                guard.at_statement_boundary() || guard.finish(&mut std::io::sink()).is_ok(),
                "seed {seed}: a {:?} section does not end between statements",
                s.kind
            );
            if s.kind == SectionKind::Data {
                for (table, rows) in copied_rows(&String::from_utf8_lossy(&stream)) {
                    assert_eq!(s.table.as_deref(), Some(table.as_str()));
                    match loaded.last_mut() {
                        Some((t, r)) if *t == table => r.extend(rows),
                        _ => loaded.push((table, rows)),
                    }
                }
            } else {
                assert!(copied_rows(&String::from_utf8_lossy(&stream)).is_empty());
            }
        }
        assert_eq!(loaded, tables, "seed {seed}");
        // Each table's rows are counted (the `\\.`-like values and empty tables too), in its
        // own sections.
        for (table, rows) in &tables {
            let counted: u64 = (sections.iter().flat_map(|s| &s.copy_rows))
                .filter(|(t, _)| t == table)
                .map(|(_, n)| n)
                .sum();
            assert_eq!(counted, rows.len() as u64, "seed {seed}: {table}");
        }
        for s in &sections {
            for (t, _) in &s.copy_rows {
                assert_eq!((s.kind, s.table.as_ref()), (SectionKind::Data, Some(t)));
            }
        }
        // Indexes and constraints know their table and the tablespace they are built in.
        let index: Vec<&DumpSection> = sections
            .iter()
            .filter(|s| s.kind == SectionKind::Index)
            .collect();
        assert_eq!(index.len(), 2 * tables.len());
        for (i, s) in index.iter().enumerate() {
            let t = i / 2;
            assert_eq!(s.table.as_deref(), Some(format!("public.t{t}").as_str()));
            let want = tablespace_of(t as u64);
            assert_eq!(
                s.tablespace.as_deref(),
                Some(format!("SET default_tablespace = {want};").as_str())
            );
        }
        let last = sections.last().unwrap();
        assert_eq!(last.kind, SectionKind::PostData);
        assert!(String::from_utf8_lossy(pieces.last().unwrap()).contains("GRANT SELECT"));
    }
}

#[test]
fn long_tables_are_cut_at_row_boundaries() {
    let mut cut = 0;
    for seed in 1..=10 {
        let mut rng = Rng(seed);
        let (text, _) = dump(&mut rng);
        let (sections, pieces) = sections_of(text.as_bytes(), &mut rng, 2_000);
        for (i, s) in sections.iter().enumerate() {
            if s.copy.is_some() {
                cut += 1;
                assert!(sections[i - 1].ends_in_copy);
                assert!(pieces[i - 1].ends_with(b"\n"));
                assert!(!pieces[i].starts_with(b"COPY "));
            }
        }
    }
    assert!(cut > 0, "some table is longer than 2000 bytes");
}

#[test]
fn an_empty_dump_is_one_empty_preamble() {
    let mut sectioner = Sectioner::new();
    let scan = sectioner.scan(b"", true);
    assert_eq!(
        scan,
        Scan {
            cuts: vec![0],
            decided: 0
        }
    );
    let sections = sectioner.finish().unwrap();
    assert_eq!(sections.len(), 1);
    assert_eq!(sections[0].kind, SectionKind::Preamble);
}

#[test]
fn a_dump_the_guard_refuses_gets_no_index() {
    let mut sectioner = Sectioner::new();
    sectioner.scan(b"SELECT 1;\n\\! echo hi\n", true);
    let why = sectioner.finish().unwrap_err();
    assert!(why.contains("line 2"), "{why}");
}

/// Why a dump of one table with a column named `column` (as pg_dump quotes it) and three rows,
/// cut at every row, gets no index.
fn no_index_for_column(column: &str) -> String {
    let text = format!(
        "SET client_encoding = 'UTF8';\n{}CREATE TABLE public.t ({column} text, b text);\n{}\
         COPY public.t ({column}, b) FROM stdin;\nx\ty\nz\tw\nv\tu\n\\.\n",
        header(false, "t", "TABLE"),
        header(true, "t", "TABLE DATA"),
    );
    let mut sectioner = Sectioner::with_data_chunk(1);
    sectioner.scan(text.as_bytes(), true);
    sectioner.finish().unwrap_err()
}

/// pg_dump writes a column name with a line break in it as it is, inside its quotes, so that
/// table's COPY statement spans two lines. It was read from its last line: the chunks after the
/// first carried `b", b) FROM stdin;` as their COPY line, which the restore refuses (so a table
/// of over 64 MiB under such a name could not be restored by the agent at all), and no chunk
/// knew its table. Now the dump gets no index and loads in one session.
#[test]
fn a_copy_statement_over_several_lines_gets_no_index() {
    let why = no_index_for_column("\"a\nb\"");
    assert!(why.contains("COPY statement is not one"), "{why}");
}

/// A column name can make the last line of a COPY statement look like a whole one that names
/// another table (`COPY public.other", b) FROM stdin;`): the statement began on an earlier line,
/// so it is no COPY line to send again, nor its table one to truncate.
#[test]
fn a_copy_statement_whose_last_line_names_another_table_gets_no_index() {
    let why = no_index_for_column("\"a\nCOPY public.other\"");
    assert!(why.contains("COPY statement is not one"), "{why}");
}

#[test]
fn tables_are_read_from_pg_dump_statements() {
    assert_eq!(
        built_on(b"CREATE UNIQUE INDEX \"a ON b\" ON ONLY \"My\"\"S\".t USING btree (x);\n"),
        Some("\"My\"\"S\".t".into())
    );
    assert_eq!(
        built_on(b"ALTER TABLE ONLY public.t\n"),
        Some("public.t".into())
    );
    assert_eq!(built_on(b"CREATE TRIGGER x"), None);
    assert_eq!(
        copy_table(b"COPY public.\"T x\" (a) FROM stdin;"),
        Some("public.\"T x\"".into())
    );
    assert_eq!(
        header_type(b"-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: o\n"),
        Some("TABLE DATA")
    );
}

#[test]
fn qualified_names_split_into_schema_and_table_as_postgresql_reads_them() {
    let split = |name: &str| schema_and_table(name);
    let pair = |s: &str, t: &str| Some((s.to_owned(), t.to_owned()));
    assert_eq!(split("public.t"), pair("public", "t"));
    assert_eq!(split("\"My \"\"S\"\"\".\"T.x\""), pair("My \"S\"", "T.x"));
    assert_eq!(split("s.\"a b\""), pair("s", "a b"));
    assert_eq!(split("t"), None);
    assert_eq!(split("a.b.c"), None);
    assert_eq!(split("a.b (x)"), None);
}
