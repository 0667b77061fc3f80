//! Restores a section-indexed dump in parallel, into a staging database that takes the
//! target's place only once every section was verified and loaded.
//!
//! The order follows pg_restore's (`--jobs`) dependencies: the pre-data in one session; then
//! each table in one transaction of one of `restore.jobs` sessions, biggest tables first: its
//! data, then at once its indexes and the constraints that build one (no barrier between the
//! data and the indexes: the session that loaded a table builds its indexes while the others
//! still load; a table is not split across sessions: that measured no faster for a whole
//! restore, and a split table cannot be loaded with COPY FREEZE, see the README); then the
//! rest of the post-data (foreign keys, index attachments, triggers, grants...) in one session,
//! in the dump's order. Beside the sessions, each table is counted (and analyzed) as soon as
//! its session sent its COMMIT ([`super::landed`]), while the others still load. The staging
//! database ([`super::staging`]) takes the target's place when everything loaded and every
//! count matched; any failure drops it. Either way the target is as it was.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::landed::{self, Checked, Landing};
use super::psql_load::Loaded;
use super::session::{Session, SessionSetup, Source};
use crate::catalog::FetchedManifest;
use crate::config::Config;
use crate::engine::postgres::{self, ConnParams, TableRows};
use crate::error::{Error, Result};
use crate::layout::Codec;
use crate::manifest::{DumpSection, ManifestObject, PostgresDetails, SectionKind};
use crate::store::ObjectStore;

/// The largest preamble the agent reads (pg_dump's is a few hundred bytes).
const PREAMBLE_LIMIT: u64 = 1 << 20;

/// The dump's section index, when it has one; an error if it is not consistent with the object.
pub fn index<'m>(
    manifest: &FetchedManifest,
    entry: &ManifestObject,
    details: &'m PostgresDetails,
) -> Result<Option<&'m [DumpSection]>> {
    let Some(sections) = details.sections.as_deref() else {
        return Ok(None);
    };
    let bad = |problem: String| Error::ManifestMismatch {
        manifest: manifest.key.clone(),
        problem: format!("its section index {problem}"),
    };
    let one_line = |s: &Option<String>, start: &str, end: &str| {
        s.as_ref()
            .is_none_or(|s| s.starts_with(start) && s.ends_with(end) && !s.contains(['\n', '\r']))
    };
    let (mut offset, mut uncompressed) = (0u64, 0u64);
    let mut rank = 0;
    for (i, s) in sections.iter().enumerate() {
        let this_rank = match s.kind {
            SectionKind::Preamble => 0,
            SectionKind::PreData => 1,
            SectionKind::Data => 2,
            SectionKind::Index | SectionKind::PostData => 3,
        };
        if (i == 0) != (s.kind == SectionKind::Preamble) || this_rank < rank {
            return Err(bad(format!(
                "has a {:?} section out of order (#{i})",
                s.kind
            )));
        }
        rank = this_rank;
        if s.offset != offset || s.size_bytes == 0 {
            return Err(bad(format!("does not tile the object at section #{i}")));
        }
        if s.sha256.len() != 64 || !s.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!("has no SHA-256 for section #{i}")));
        }
        if !one_line(&s.copy, "COPY ", " FROM stdin;")
            || !one_line(&s.tablespace, "SET default_tablespace = ", ";")
            || !one_line(&s.table, "", "")
        {
            return Err(bad(format!(
                "has text that is no pg_dump line in section #{i}"
            )));
        }
        offset += s.size_bytes;
        uncompressed += s.uncompressed_size_bytes;
    }
    if offset != entry.size_bytes || uncompressed != details.uncompressed_size_bytes {
        return Err(bad(format!(
            "covers {offset} bytes ({uncompressed} uncompressed), the dump has {} ({})",
            entry.size_bytes, details.uncompressed_size_bytes
        )));
    }
    if sections[0].uncompressed_size_bytes > PREAMBLE_LIMIT
        || sections[0].size_bytes > PREAMBLE_LIMIT
    {
        return Err(bad("has a preamble over 1 MiB".into()));
    }
    Ok(Some(sections))
}

/// Tables with less COPY text than this load without FREEZE (nothing to gain).
const FREEZE_MIN_BYTES: u64 = 1 << 20;

/// The sections in the order and grouping they load in.
struct Plan<'a> {
    pre_data: Vec<&'a DumpSection>,
    /// One item per table, biggest tables first; sequence values and large objects are items
    /// of their own.
    tables: Vec<Item<'a>>,
    post_data: Vec<&'a DumpSection>,
}

/// Sections loaded in one transaction of one session, in order.
#[derive(Default)]
struct Item<'a> {
    /// A table's data (in the dump's order), then its indexes and the constraints that build
    /// one.
    sections: Vec<&'a DumpSection>,
    /// The table, if the item is one.
    table: Option<&'a str>,
    data_bytes: u64,
    /// Truncate the table first and load it with COPY FREEZE.
    freeze: bool,
    /// The table, to be checked once its load was sent.
    landing: Option<Landing>,
}

/// One item of `sections` that are no table's (none if there are none).
fn one(sections: Vec<&DumpSection>) -> Vec<Item<'_>> {
    if sections.is_empty() {
        return Vec::new();
    }
    vec![Item {
        sections,
        ..Item::default()
    }]
}

fn plan(sections: &[DumpSection]) -> Plan<'_> {
    let (mut pre_data, mut post_data) = (Vec::new(), Vec::new());
    let mut items: Vec<Item> = Vec::new();
    let mut item_of: BTreeMap<&str, usize> = BTreeMap::new();
    for s in sections {
        let i = match (s.kind, s.table.as_deref()) {
            (SectionKind::Preamble, _) => continue,
            (SectionKind::PreData, _) => {
                pre_data.push(s);
                continue;
            }
            (SectionKind::Index, None) | (SectionKind::PostData, _) => {
                post_data.push(s);
                continue;
            }
            (SectionKind::Data | SectionKind::Index, Some(table)) => {
                *item_of.entry(table).or_insert_with(|| {
                    items.push(Item {
                        table: Some(table),
                        ..Item::default()
                    });
                    items.len() - 1
                })
            }
            (SectionKind::Data, None) => {
                items.push(Item::default());
                items.len() - 1
            }
        };
        if s.kind == SectionKind::Data {
            items[i].data_bytes += s.uncompressed_size_bytes;
        }
        items[i].sections.push(s);
    }
    // Stable: equal weights keep the dump's order.
    items.sort_by_key(|item| std::cmp::Reverse(item.data_bytes));
    Plan {
        pre_data,
        tables: items,
        post_data,
    }
}

/// The items whose table names can be looked up over the agent's UTF-8 connection: all
/// qualified names in a UTF-8 dump, the ASCII ones in a dump in another client encoding.
fn named_tables(items: &[Item<'_>], dump_is_utf8: bool) -> Vec<usize> {
    (0..items.len())
        .filter(|&i| {
            items[i].table.is_some_and(|t| {
                (dump_is_utf8 || t.is_ascii()) && postgres::sections::is_qualified_name(t)
            })
        })
        .collect()
}

/// Looks up, over one connection to `staging` once the pre-data created the tables, which
/// items load with COPY FREEZE ([`choose_freeze`]) and which are checked as they land
/// ([`choose_landings`]). Names are looked up over the agent's UTF-8 connection, so a dump in
/// another client encoding gets either for ASCII names only. Both are optimisations: if a
/// lookup fails, the tables load without FREEZE, or are all counted after the load.
async fn choose_freeze_and_landings(
    staging: &ConnParams,
    items: &mut [Item<'_>],
    expected: &[TableRows],
    dump_is_utf8: bool,
) {
    let named = named_tables(items, dump_is_utf8);
    if named.is_empty() {
        return;
    }
    let client = match postgres::connect(staging).await {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(staging = %staging.database, error = %e,
                "could not look up which tables can be loaded with COPY FREEZE or counted as \
                 they land; loading all without FREEZE and counting all after the load");
            return;
        }
    };
    choose_freeze(&client, &staging.database, items, &named).await;
    choose_landings(&client, &staging.database, items, &named, expected).await;
}

/// Marks the `named` items with at least [`FREEZE_MIN_BYTES`] of data whose table can be
/// loaded with COPY FREEZE: frozen rows are written once, and neither the index builds nor the
/// row counts nor the first VACUUM after the restore rewrite every page to set hint bits or
/// freeze them (PostgreSQL >= 14 also sets their pages all-visible).
async fn choose_freeze(client: &Client, staging: &str, items: &mut [Item<'_>], named: &[usize]) {
    let candidates: Vec<usize> = (named.iter().copied())
        .filter(|&i| items[i].data_bytes >= FREEZE_MIN_BYTES)
        .collect();
    if candidates.is_empty() {
        return;
    }
    let names: Vec<&str> = candidates.iter().filter_map(|&i| items[i].table).collect();
    match postgres::freezable(client, staging, &names).await {
        Ok(freezable) => {
            for (i, freeze) in candidates.into_iter().zip(freezable) {
                items[i].freeze = freeze;
            }
        }
        Err(e) => tracing::warn!(staging, error = %e,
            "could not look up which tables can be loaded with COPY FREEZE; loading all without"),
    }
}

/// Gives each of the `named` items whose table the manifest counts rows in, and that holds
/// only rows its own load puts there, what [`landed::check`] needs to check it once its load
/// was sent.
async fn choose_landings(
    client: &Client,
    staging: &str,
    items: &mut [Item<'_>],
    named: &[usize],
    expected: &[TableRows],
) {
    let names: Vec<&str> = named.iter().filter_map(|&i| items[i].table).collect();
    let tables = match postgres::landing_tables(client, staging, &names).await {
        Ok(tables) => tables,
        Err(e) => {
            tracing::info!(staging, error = %e,
                "could not look up which tables to check as they load; counting all after");
            return;
        }
    };
    for (&i, table) in named.iter().zip(tables) {
        let Some(table) = table else { continue };
        let counted = expected
            .iter()
            .position(|t| t.schema == table.schema && t.table == table.table);
        if let Some(at) = counted.filter(|&at| expected[at].rows > 0) {
            items[i].landing = Some(Landing {
                table,
                manifest_index: at,
                rows: expected[at].rows,
            });
        }
    }
}

/// Reads the preamble whole, checks it, then decompresses it (at most its stated size).
async fn preamble<S: ObjectStore>(source: Source<'_, S>, section: &DumpSection) -> Result<Vec<u8>> {
    let body = source
        .store
        .get_range(
            source.key,
            source.version,
            section.offset,
            section.size_bytes,
        )
        .await?;
    let mut compressed = Vec::new();
    let mut chunks = body.chunks;
    while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
        compressed.extend_from_slice(&chunk?);
        if compressed.len() as u64 > section.size_bytes {
            break; // the size check below refuses it
        }
    }
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&compressed));
    let mut text = Vec::new();
    let read = crate::unpack::decoder(source.codec, &compressed[..]).and_then(|decoder| {
        std::io::Read::read_to_end(
            &mut std::io::Read::take(decoder, section.uncompressed_size_bytes + 1),
            &mut text,
        )
    });
    if digest != section.sha256
        || compressed.len() as u64 != section.size_bytes
        || read.is_err()
        || text.len() as u64 != section.uncompressed_size_bytes
    {
        return Err(Error::HashMismatch {
            key: format!("{} (its preamble section)", source.store.target(source.key)),
            version: source.version.unwrap_or("(none)").to_owned(),
            expected: section.sha256.clone(),
            actual: digest,
            expected_size: section.size_bytes,
            actual_size: compressed.len() as u64,
        });
    }
    Ok(text)
}

/// Runs `work` in up to `jobs` sessions, each item in one transaction of one session, its
/// sections in order, items in the order given; sends each item's landing on `landed` once its
/// COMMIT was sent. The first error stops them all (their psql is killed).
async fn run<S: ObjectStore>(
    source: Source<'_, S>,
    setup: &SessionSetup<'_>,
    work: Vec<Item<'_>>,
    jobs: usize,
    landed: Option<&mpsc::UnboundedSender<Landing>>,
) -> Result<u64> {
    if work.is_empty() {
        return Ok(0);
    }
    let sessions = jobs.clamp(1, work.len());
    let queue = Mutex::new(work.into_iter());
    let next = || queue.lock().unwrap_or_else(|p| p.into_inner()).next();
    let workers = (0..sessions).map(|_| async {
        let mut session = Session::open(setup).await?;
        let mut loaded = 0;
        while let Some(item) = next() {
            let freeze = item.table.filter(|_| item.freeze);
            loaded += session
                .load_in_transaction(source, &item.sections, freeze)
                .await?;
            if let (Some(landed), Some(landing)) = (landed, item.landing) {
                // Closed only if the checks stopped early: the counts after the load decide.
                let _ = landed.send(landing);
            }
        }
        session.close().await?;
        Ok::<_, Error>(loaded)
    });
    Ok(futures::future::try_join_all(workers).await?.iter().sum())
}

/// What the parallel load did, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParallelLoad {
    pub jobs: usize,
    pub sections: usize,
    /// Tables loaded with COPY FREEZE.
    pub frozen_tables: usize,
    /// Tables whose rows were counted (and matched) as they landed, while others loaded.
    pub counted_while_loading: usize,
    /// Tables analyzed as they landed.
    pub analyzed_while_loading: usize,
    pub pre_data_seconds: f64,
    /// The tables' data and indexes.
    pub tables_seconds: f64,
    pub post_data_seconds: f64,
}

/// Loads every section into `staging` (see the module documentation), counting the rows of
/// the manifest's `expected` tables (and analyzing them, if the config says so) as they land;
/// returns what the load settled.
pub async fn load<S: ObjectStore>(
    store: &S,
    config: &Config,
    staging: &ConnParams,
    manifest: &FetchedManifest,
    key: &str,
    sections: &[DumpSection],
    expected: &[TableRows],
) -> Result<(Loaded, ParallelLoad, Checked)> {
    let started = Instant::now();
    let entry = manifest.object(key)?;
    let source = Source {
        store,
        key,
        version: entry.version_id.as_deref(),
        codec: Codec::of_dump(key).unwrap_or_default(),
    };
    let restrict = postgres::restrict_for(&config.restore.psql).await?;
    let preamble = preamble(source, &sections[0]).await?;
    let setup = SessionSetup {
        psql: &config.restore.psql,
        params: staging,
        restrict: restrict.as_deref(),
        preamble: &preamble,
    };
    let jobs = config.restore.sessions();
    let mut plan = plan(sections);
    let mut loaded = preamble.len() as u64;
    let phase = Instant::now();
    loaded += run(source, &setup, one(plan.pre_data), 1, None).await?;
    let pre_data_seconds = phase.elapsed().as_secs_f64();
    let phase = Instant::now();
    let dump_is_utf8 = preamble
        .split(|&b| b == b'\n')
        .any(|line| line == b"SET client_encoding = 'UTF8';");
    choose_freeze_and_landings(staging, &mut plan.tables, expected, dump_is_utf8).await;
    let frozen = plan.tables.iter().filter(|item| item.freeze).count();
    let (landed, landings) = mpsc::unbounded_channel();
    let loaded_all = CancellationToken::new();
    let loading = async {
        let tables = run(source, &setup, plan.tables, jobs, Some(&landed)).await;
        loaded_all.cancel();
        tables
    };
    // The checks end with the load; an error drops them, mid-statement (the staging database
    // is then dropped WITH (FORCE)).
    let checking = async {
        let analyze = config.restore.analyze;
        Ok(landed::check(staging, analyze, landings, &loaded_all).await)
    };
    let (tables, checked) = futures::future::try_join(loading, checking).await?;
    loaded += tables;
    let tables_seconds = phase.elapsed().as_secs_f64();
    let phase = Instant::now();
    loaded += run(source, &setup, one(plan.post_data), 1, None).await?;
    let post_data_seconds = phase.elapsed().as_secs_f64();
    tracing::info!(
        key,
        sections = sections.len(),
        jobs,
        "every section matched the index \
        and loaded; the dump matches its manifest"
    );
    let details = ParallelLoad {
        jobs,
        sections: sections.len(),
        frozen_tables: frozen,
        counted_while_loading: checked.counted.len(),
        analyzed_while_loading: checked.analyzed.len(),
        pre_data_seconds,
        tables_seconds,
        post_data_seconds,
    };
    let mut sha256 = [0u8; 32];
    hex::decode_to_slice(entry.sha256.as_deref().unwrap_or_default(), &mut sha256).map_err(
        |_| Error::ManifestMismatch {
            manifest: manifest.key.clone(),
            problem: format!("it has no SHA-256 for {key}"),
        },
    )?;
    Ok((
        Loaded {
            // Every byte was read and matched its section's hash in the signed index, and the
            // sections tile the object: the object read is the one the manifest names.
            sha256,
            size: entry.size_bytes,
            uncompressed: loaded,
            download_seconds: started.elapsed().as_secs_f64(),
        },
        details,
        checked,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(kind: SectionKind, size: u64, table: Option<&str>) -> DumpSection {
        DumpSection {
            kind,
            offset: 0,
            size_bytes: size,
            uncompressed_size_bytes: size,
            sha256: "0".repeat(64),
            table: table.map(str::to_owned),
            copy: None,
            ends_in_copy: false,
            tablespace: None,
            copy_rows: Vec::new(),
        }
    }

    #[test]
    fn each_table_loads_its_data_then_its_indexes_biggest_first_and_the_rest_in_order() {
        use SectionKind::*;
        let sections = vec![
            section(Preamble, 1, None),
            section(PreData, 1, None),
            section(Data, 10, Some("a")),
            section(Data, 50, Some("b")),
            section(Data, 30, Some("b")),
            section(Data, 5, None),
            section(Data, 0, Some("empty")),
            section(Index, 1, Some("a")),
            section(Index, 2, Some("b")),
            section(PostData, 3, None),
            section(Index, 4, Some("a")),
            section(Index, 5, None),
            section(Index, 7, Some("parent")),
            section(PostData, 6, None),
        ];
        let plan = plan(&sections);
        let sizes = |w: &[&DumpSection]| w.iter().map(|s| s.size_bytes).collect::<Vec<_>>();
        assert_eq!(sizes(&plan.pre_data), [1]);
        let tables: Vec<Vec<u64>> = plan.tables.iter().map(|w| sizes(&w.sections)).collect();
        let names: Vec<Option<&str>> = plan.tables.iter().map(|w| w.table).collect();
        assert_eq!(
            names,
            [Some("b"), Some("a"), None, Some("empty"), Some("parent")]
        );
        // b has 80 bytes of data, a 10, the sequence values 5; the empty table and the index
        // of a table without data (a partitioned parent) last, in the dump's order.
        assert_eq!(
            tables,
            [vec![50, 30, 2], vec![10, 1, 4], vec![5], vec![0], vec![7]]
        );
        assert_eq!(sizes(&plan.post_data), [3, 5, 6]);
    }
}
