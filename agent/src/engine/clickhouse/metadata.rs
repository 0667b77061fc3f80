//! ClickHouse's `.backup` file: every file of a backup with its size and checksum, and which
//! ones live in the base backup of an incremental one.
//!
//! From it the agent derives which objects must be in the backup's folder (and their sizes),
//! which tables the backup holds, and where each MergeTree part's `count.txt` is stored.

use std::collections::BTreeMap;

/// One `<file>` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// The file's path inside the backup, e.g. `data/app/t/all_1_1_0/count.txt`.
    pub name: String,
    pub size: u64,
    /// CityHash128 as hex, as ClickHouse computed it.
    pub checksum: Option<String>,
    /// The first `base_size` bytes are in the base backup.
    pub use_base: bool,
    pub base_size: u64,
    /// Where the bytes are stored when another entry has the same content.
    pub data_file: Option<String>,
}

impl FileEntry {
    /// The whole file is in the base backup.
    pub fn in_base(&self) -> bool {
        self.use_base && self.base_size == self.size
    }

    /// The object holding this file's bytes in this backup's folder.
    pub fn stored_as(&self) -> &str {
        self.data_file.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupMetadata {
    pub uuid: Option<String>,
    /// The base backup as ClickHouse recorded it, e.g. `S3(collection, 'path/')`.
    pub base_backup: Option<String>,
    pub files: Vec<FileEntry>,
}

fn text<'a>(node: roxmltree::Node<'a, 'a>, tag: &str) -> Option<&'a str> {
    node.children()
        .find(|c| c.has_tag_name(tag))
        .and_then(|c| c.text())
}

impl BackupMetadata {
    pub fn parse(bytes: &[u8]) -> Result<BackupMetadata, String> {
        let text_doc = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
        let doc = roxmltree::Document::parse(text_doc).map_err(|e| format!("not XML: {e}"))?;
        let root = doc.root_element();
        let contents = root
            .children()
            .find(|c| c.has_tag_name("contents"))
            .ok_or("no <contents> element")?;
        let mut files = Vec::new();
        for file in contents.children().filter(|c| c.has_tag_name("file")) {
            let name = text(file, "name").ok_or("a <file> without <name>")?;
            let number = |tag: &str| -> Result<u64, String> {
                text(file, tag).map_or(Ok(0), |t| {
                    t.trim()
                        .parse()
                        .map_err(|_| format!("{name}: <{tag}> {t:?} is not a number"))
                })
            };
            let size = number("size")?;
            let use_base = text(file, "use_base").is_some_and(|t| t.trim() == "true");
            // ClickHouse writes <base_size> only when it differs from <size>.
            let base_size = match text(file, "base_size") {
                Some(_) => number("base_size")?,
                None if use_base => size,
                None => 0,
            };
            files.push(FileEntry {
                name: name.to_owned(),
                size,
                checksum: text(file, "checksum").map(str::to_owned),
                use_base,
                base_size,
                data_file: text(file, "data_file").map(str::to_owned),
            });
        }
        Ok(BackupMetadata {
            uuid: text(root, "uuid").map(str::to_owned),
            base_backup: text(root, "base_backup").map(str::to_owned),
            files,
        })
    }

    /// Objects that must be in this backup's folder, by name relative to it, with their size.
    /// Files held entirely by the base backup and empty files have no object.
    pub fn stored_objects(&self) -> BTreeMap<String, u64> {
        let mut objects = BTreeMap::new();
        for f in &self.files {
            let size = if f.use_base {
                f.size - f.base_size.min(f.size)
            } else {
                f.size
            };
            if size > 0 {
                objects.insert(f.stored_as().to_owned(), size);
            }
        }
        objects
    }

    /// Tables in the backup, from `metadata/<db>/<table>.sql`, unescaped.
    pub fn tables(&self) -> Vec<(String, String)> {
        self.files
            .iter()
            .filter_map(|f| {
                let rest = f.name.strip_prefix("metadata/")?.strip_suffix(".sql")?;
                let (db, table) = rest.split_once('/')?;
                Some((unescape(db), unescape(table)))
            })
            .collect()
    }

    /// Each part's `count.txt` entry with its unescaped database and table.
    pub fn part_counts(&self) -> Vec<(String, String, &FileEntry)> {
        self.files
            .iter()
            .filter_map(|f| {
                let rest = f.name.strip_prefix("data/")?.strip_suffix("/count.txt")?;
                let mut parts = rest.split('/');
                let (db, table, _part) = (parts.next()?, parts.next()?, parts.next()?);
                parts
                    .next()
                    .is_none()
                    .then(|| (unescape(db), unescape(table), f))
            })
            .collect()
    }

    /// The entry named `name`.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// Reverses ClickHouse's `escapeForFileName` (`%XX` for bytes outside `[A-Za-z0-9_]`).
pub fn unescape(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INCREMENTAL: &str = "<config><version>1</version><uuid>u2</uuid>\
        <base_backup>S3(nc, 'b/1/')</base_backup><contents>\
        <file><name>data/app/t/all_1_1_0/count.txt</name><size>6</size><checksum>aa</checksum>\
        <use_base>true</use_base></file>\
        <file><name>data/app/t/all_2_2_0/count.txt</name><size>2</size><checksum>bb</checksum></file>\
        <file><name>data/app/t/all_3_3_0/count.txt</name><size>2</size><checksum>bb</checksum>\
        <data_file>data/app/t/all_2_2_0/count.txt</data_file></file>\
        <file><name>metadata/app/my%2Dtable.sql</name><size>10</size></file>\
        <file><name>metadata/app/t.sql</name><size>10</size></file>\
        <file><name>data/app/t/all_1_1_0/log.bin</name><size>9</size><use_base>true</use_base>\
        <base_size>4</base_size></file>\
        </contents></config>";

    #[test]
    fn objects_tables_and_counts_come_from_the_metadata() {
        let m = BackupMetadata::parse(INCREMENTAL.as_bytes()).unwrap();
        assert_eq!(m.base_backup.as_deref(), Some("S3(nc, 'b/1/')"));
        let objects = m.stored_objects();
        assert_eq!(
            objects.into_iter().collect::<Vec<_>>(),
            vec![
                ("data/app/t/all_1_1_0/log.bin".to_owned(), 5),
                ("data/app/t/all_2_2_0/count.txt".to_owned(), 2),
                ("metadata/app/my%2Dtable.sql".to_owned(), 10),
                ("metadata/app/t.sql".to_owned(), 10),
            ]
        );
        assert_eq!(
            m.tables(),
            vec![
                ("app".to_owned(), "my-table".to_owned()),
                ("app".to_owned(), "t".to_owned())
            ]
        );
        let counts = m.part_counts();
        assert_eq!(counts.len(), 3);
        assert!(counts[0].2.in_base());
        assert_eq!(counts[2].2.stored_as(), "data/app/t/all_2_2_0/count.txt");
    }

    #[test]
    fn bad_metadata_is_described() {
        let e = BackupMetadata::parse(b"<config/>").unwrap_err();
        assert!(e.contains("<contents>"), "{e}");
        let e = BackupMetadata::parse(
            b"<config><contents><file><name>x</name><size>z</size>\
            </file></contents></config>",
        )
        .unwrap_err();
        assert!(e.contains("<size>"), "{e}");
    }
}
