//! ClickHouse over its HTTP interface: version check, BACKUP/RESTORE statements run `ASYNC`
//! and followed in `system.backups`, and reads of backup files through the server.
//!
//! Data flows from ClickHouse to S3 directly; the agent only sends statements. Every S3
//! location is written as `S3(<named collection>, '<path>')` or, with environment credentials,
//! `S3('<bucket url><path>')`: no credentials in SQL, so none in the query log or in an
//! incremental backup's metadata. Files of a backup that the agent must read (`.backup`,
//! `count.txt`, a previous manifest) are read by the server with the `s3` table function, so the
//! agent's own S3 role never needs to read backup data. [`metadata`] parses `.backup`.

pub mod metadata;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::clickhouse::Login;

use super::EngineError;

/// The first release whose `BACKUP ... TO S3` is usable (22.8, an LTS).
pub const MINIMUM_VERSION: (u32, u32) = (22, 8);

/// A long query (reading many `count.txt` files) gets this long.
const QUERY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long [`ClickHouse::stop`] waits for the server to report an operation cancelled.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// `SELECT version()`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    pub text: String,
    pub major: u32,
    pub minor: u32,
}

impl ServerVersion {
    pub fn parse(text: &str) -> Option<ServerVersion> {
        let mut parts = text.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(ServerVersion {
            text: text.trim().to_owned(),
            major,
            minor,
        })
    }

    pub fn supports_backup(&self) -> bool {
        (self.major, self.minor) >= MINIMUM_VERSION
    }
}

/// Where the server writes and reads backups, named without credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A named collection in the server's config whose `url` is the bucket root.
    Named(String),
    /// The bucket root URL; the server signs with its environment credentials.
    Url(String),
}

/// A single-quoted SQL string literal.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl Destination {
    /// The `S3(...)` backup engine expression for `folder` (a key ending in `/`).
    pub fn backup_engine(&self, folder: &str) -> String {
        match self {
            Destination::Named(name) => format!("S3({name}, {})", quote(folder)),
            Destination::Url(url) => format!("S3({})", quote(&format!("{url}{folder}"))),
        }
    }

    /// The `s3(...)` table function reading `key` (globs allowed) as `format` with one
    /// column structure.
    fn table_function(&self, key: &str, format: &str, structure: &str) -> String {
        match self {
            Destination::Named(name) => format!(
                "s3({name}, filename = {}, format = {}, structure = {})",
                quote(key),
                quote(format),
                quote(structure)
            ),
            Destination::Url(url) => format!(
                "s3({}, {}, {})",
                quote(&format!("{url}{key}")),
                quote(format),
                quote(structure)
            ),
        }
    }
}

/// What a BACKUP or RESTORE covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything but the system databases.
    All,
    Databases(Vec<String>),
    /// `database.table` names.
    Tables(Vec<String>),
}

impl Scope {
    /// The part of a BACKUP/RESTORE statement between the verb and TO/FROM. Names were checked
    /// to be plain identifiers by the config.
    pub fn sql(&self) -> String {
        match self {
            Scope::All => {
                "ALL EXCEPT DATABASES system, information_schema, INFORMATION_SCHEMA".into()
            }
            Scope::Databases(dbs) => dbs
                .iter()
                .map(|d| format!("DATABASE {d}"))
                .collect::<Vec<_>>()
                .join(", "),
            Scope::Tables(tables) => tables
                .iter()
                .map(|t| format!("TABLE {t}"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// `DATABASE d AS d<suffix>` / `TABLE d.t AS d<suffix>.t`; `None` for `All` (RESTORE ALL
    /// takes no AS).
    pub fn sql_renamed(&self, suffix: &str) -> Option<String> {
        let items: Vec<String> = match self {
            Scope::All => return None,
            Scope::Databases(dbs) => dbs
                .iter()
                .map(|d| format!("DATABASE {d} AS {d}{suffix}"))
                .collect(),
            Scope::Tables(tables) => tables
                .iter()
                .map(|t| match t.split_once('.') {
                    Some((d, name)) => format!("TABLE {t} AS {d}{suffix}.{name}"),
                    None => format!("TABLE {t}"),
                })
                .collect(),
        };
        Some(items.join(", "))
    }

    /// The scope with every database renamed with `suffix`.
    pub fn renamed(&self, suffix: &str) -> Scope {
        match self {
            Scope::All => Scope::All,
            Scope::Databases(d) => {
                Scope::Databases(d.iter().map(|d| format!("{d}{suffix}")).collect())
            }
            Scope::Tables(t) => Scope::Tables(
                t.iter()
                    .map(|t| match t.split_once('.') {
                        Some((d, name)) => format!("{d}{suffix}.{name}"),
                        None => t.clone(),
                    })
                    .collect(),
            ),
        }
    }

    /// For the manifest and messages.
    pub fn describe(&self) -> Vec<String> {
        match self {
            Scope::All => vec!["ALL EXCEPT system databases".into()],
            Scope::Databases(d) => d.iter().map(|d| format!("database {d}")).collect(),
            Scope::Tables(t) => t.iter().map(|t| format!("table {t}")).collect(),
        }
    }
}

/// `BACKUP ... TO S3(...) SETTINGS id = ..., [base_backup = ...] ASYNC`.
pub fn backup_statement(
    scope: &Scope,
    destination: &Destination,
    folder: &str,
    id: &str,
    base_folder: Option<&str>,
) -> String {
    let mut settings = format!("id = {}", quote(id));
    if let Some(base) = base_folder {
        settings.push_str(&format!(
            ", base_backup = {}",
            destination.backup_engine(base)
        ));
    }
    format!(
        "BACKUP {} TO {} SETTINGS {settings} ASYNC",
        scope.sql(),
        destination.backup_engine(folder)
    )
}

/// `RESTORE ... FROM S3(...) SETTINGS id = ... ASYNC`; `allow_non_empty` lets ClickHouse add
/// the backup's parts to tables that already hold data.
pub fn restore_statement(
    scope: &Scope,
    destination: &Destination,
    folder: &str,
    id: &str,
    allow_non_empty: bool,
    rename_suffix: Option<&str>,
) -> String {
    let mut settings = format!("id = {}", quote(id));
    if allow_non_empty {
        settings.push_str(", allow_non_empty_tables = true");
    }
    let what = rename_suffix
        .and_then(|s| scope.sql_renamed(s))
        .unwrap_or_else(|| scope.sql());
    format!(
        "RESTORE {what} FROM {} SETTINGS {settings} ASYNC",
        destination.backup_engine(folder)
    )
}

/// A row of `system.backups`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub status: String,
    pub error: String,
    pub num_files: u64,
    pub total_size: u64,
    pub bytes_read: u64,
}

impl Operation {
    /// Still running.
    pub fn in_progress(&self) -> bool {
        matches!(self.status.as_str(), "CREATING_BACKUP" | "RESTORING")
    }

    pub fn succeeded(&self) -> bool {
        matches!(self.status.as_str(), "BACKUP_CREATED" | "RESTORED")
    }
}

/// A connection to one ClickHouse server (HTTP; connections are pooled by the client).
#[derive(Clone)]
pub struct ClickHouse {
    client: clickhouse::Client,
    url: String,
    user: String,
    connect_timeout: Duration,
}

impl std::fmt::Debug for ClickHouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClickHouse at {} as {}", self.url, self.user)
    }
}

impl ClickHouse {
    /// No request is made until the first query.
    pub fn new(login: &Login) -> ClickHouse {
        let mut client = clickhouse::Client::default()
            .with_url(&login.url)
            .with_user(&login.user)
            .with_compression(clickhouse::Compression::None)
            .with_validation(false);
        if let Some(password) = &login.password {
            client = client.with_password(password);
        }
        ClickHouse {
            client,
            url: login.url.clone(),
            user: login.user.clone(),
            connect_timeout: Duration::from_secs(login.connect_timeout_seconds),
        }
    }

    fn error(&self, what: &'static str, detail: impl std::fmt::Display) -> EngineError {
        EngineError::ClickHouse {
            url: self.url.clone(),
            user: self.user.clone(),
            what,
            detail: detail.to_string().trim().to_owned(),
        }
    }

    async fn within<T>(
        &self,
        what: &'static str,
        limit: Duration,
        query: impl Future<Output = clickhouse::error::Result<T>>,
    ) -> Result<T, EngineError> {
        match tokio::time::timeout(limit, query).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.error(what, e)),
            Err(_) => Err(self.error(what, format!("no answer within {limit:?}"))),
        }
    }

    /// The server's version (works on every version, 18.16 included).
    pub async fn version(&self) -> Result<ServerVersion, EngineError> {
        let text: String = self
            .within(
                "SELECT version()",
                self.connect_timeout,
                self.client.query("SELECT version()").fetch_one(),
            )
            .await?;
        ServerVersion::parse(&text)
            .ok_or_else(|| self.error("SELECT version()", format!("unexpected answer {text:?}")))
    }

    /// The version, or the refusal when it is older than [`MINIMUM_VERSION`].
    pub async fn require_backup_support(&self) -> Result<ServerVersion, EngineError> {
        let version = self.version().await?;
        if version.supports_backup() {
            Ok(version)
        } else {
            Err(EngineError::ClickHouseTooOld {
                url: self.url.clone(),
                version: version.text,
                minimum: format!("{}.{}", MINIMUM_VERSION.0, MINIMUM_VERSION.1),
            })
        }
    }

    /// Runs a statement that returns nothing we need (BACKUP/RESTORE ... ASYNC, DDL).
    pub async fn execute(&self, what: &'static str, sql: &str) -> Result<(), EngineError> {
        self.within(what, QUERY_TIMEOUT, self.client.query(sql).execute())
            .await
    }

    /// The `system.backups` row of operation `id`, if the server knows it.
    pub async fn operation(&self, id: &str) -> Result<Option<Operation>, EngineError> {
        let sql = "SELECT toString(status), error, toUInt64(num_files), toUInt64(total_size), \
                   toUInt64(bytes_read) FROM system.backups WHERE id = ?";
        let row: Option<(String, String, u64, u64, u64)> = self
            .within(
                "reading system.backups",
                QUERY_TIMEOUT,
                self.client.query(sql).bind(id).fetch_optional(),
            )
            .await?;
        Ok(row.map(
            |(status, error, num_files, total_size, bytes_read)| Operation {
                status,
                error,
                num_files,
                total_size,
                bytes_read,
            },
        ))
    }

    /// Polls operation `id` until it ends or `timeout` passes, first after 25 ms, then doubling
    /// up to every `poll` (short operations end promptly, long ones cost few queries); `seen`
    /// gets each state (for progress). An operation missing from `system.backups` for `lost`
    /// (a restarted server forgets it) has failed: waiting longer cannot help.
    pub async fn wait(
        &self,
        id: &str,
        timeout: Duration,
        poll: Duration,
        lost: Duration,
        mut seen: impl FnMut(&Operation),
    ) -> Result<Operation, EngineError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut delay = Duration::from_millis(25).min(poll);
        let mut last_seen = tokio::time::Instant::now();
        loop {
            // A server that does not answer for a moment (restarting?) is asked again; one that
            // answers without the operation, or not at all, for `lost` has lost it.
            match self.operation(id).await {
                Ok(Some(op)) => {
                    last_seen = tokio::time::Instant::now();
                    seen(&op);
                    if !op.in_progress() {
                        return Ok(op);
                    }
                }
                Ok(None) if last_seen.elapsed() >= lost => {
                    return Err(EngineError::ClickHouseLost {
                        id: id.to_owned(),
                        seconds: lost.as_secs(),
                    });
                }
                Err(e) if last_seen.elapsed() >= lost => return Err(e),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(id, error = %e, "system.backups not readable; asking again")
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::ClickHouseTimeout {
                    id: id.to_owned(),
                    seconds: timeout.as_secs(),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(poll);
        }
    }

    /// Asks the server to stop operation `id` (`KILL QUERY` on the query that started it:
    /// ClickHouse 24.1 and later cancel a BACKUP or RESTORE that way) and waits briefly for it to
    /// say so. Returns what happened, in words, for the log and the error.
    pub async fn stop(&self, id: &str) -> String {
        // Bounded: a shutdown waits for this, and the pod's grace period is not endless.
        let limit = STOP_WAIT + Duration::from_secs(5);
        tokio::time::timeout(limit, self.try_stop(id))
            .await
            .unwrap_or_else(|_| {
                format!(
                    "it could not be stopped: the server did not answer within {} s",
                    limit.as_secs()
                )
            })
    }

    async fn try_stop(&self, id: &str) -> String {
        let query_id = match self
            .scalar(&format!(
                "SELECT query_id FROM system.backups WHERE id = {}",
                quote(id)
            ))
            .await
        {
            Ok(Some(q)) if !q.is_empty() => q,
            Ok(_) => return "it could not be stopped: the server does not list it".into(),
            Err(e) => return format!("it could not be stopped: {e}"),
        };
        if let Err(e) = self
            .execute(
                "KILL QUERY",
                &format!("KILL QUERY WHERE query_id = {} ASYNC", quote(&query_id)),
            )
            .await
        {
            return format!(
                "it could not be stopped (KILL QUERY failed: {e}); it may still finish"
            );
        }
        let until = tokio::time::Instant::now() + STOP_WAIT;
        loop {
            match self.operation(id).await {
                Ok(Some(op)) if op.status.ends_with("_CANCELLED") => {
                    return format!("ClickHouse stopped it ({})", op.status);
                }
                Ok(Some(op)) if !op.in_progress() => {
                    return format!("it ended {} before it could be stopped", op.status);
                }
                _ if tokio::time::Instant::now() >= until => {
                    return format!(
                        "KILL QUERY was sent but it still runs after {} s (servers before 24.1 \
                         cannot cancel a BACKUP); it may still finish",
                        STOP_WAIT.as_secs()
                    );
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Reads one object of the bucket through the server.
    pub async fn read_object(
        &self,
        destination: &Destination,
        key: &str,
    ) -> Result<Vec<u8>, EngineError> {
        let sql = format!(
            "SELECT x FROM {}",
            destination.table_function(key, "RawBLOB", "x String")
        );
        let text: String = self
            .within("reading a backup file", QUERY_TIMEOUT, async {
                self.client.query(&sql).fetch_one().await
            })
            .await?;
        Ok(text.into_bytes())
    }

    /// Every `data/<db>/<table>/<part>/count.txt` under `folder`, by its name relative to the
    /// folder, with the row count it holds.
    pub async fn part_row_counts(
        &self,
        destination: &Destination,
        folder: &str,
    ) -> Result<BTreeMap<String, u64>, EngineError> {
        let glob = format!("{folder}data/*/*/*/count.txt");
        let sql = format!(
            "SELECT _path, c FROM {} SETTINGS s3_throw_on_zero_files_match = 0",
            destination.table_function(&glob, "TSV", "c UInt64")
        );
        let rows: Vec<(String, u64)> = self
            .within("reading count.txt files", QUERY_TIMEOUT, async {
                self.client.query(&sql).fetch_all().await
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(path, count)| {
                let at = path.find(folder)?;
                Some((path[at + folder.len()..].to_owned(), count))
            })
            .collect())
    }

    /// Rows in `database.table`, or None when the table does not exist.
    pub async fn table_rows(
        &self,
        database: &str,
        table: &str,
    ) -> Result<Option<u64>, EngineError> {
        let exists: u8 = self
            .within(
                "checking a table",
                QUERY_TIMEOUT,
                self.client
                    .query("SELECT toUInt8(count()) FROM system.tables WHERE database = ? AND name = ?")
                    .bind(database)
                    .bind(table)
                    .fetch_one(),
            )
            .await?;
        if exists == 0 {
            return Ok(None);
        }
        let sql = format!(
            "SELECT count() FROM {}.{}",
            identifier(database),
            identifier(table)
        );
        let rows: u64 = self
            .within(
                "counting rows",
                QUERY_TIMEOUT,
                self.client.query(&sql).fetch_one(),
            )
            .await?;
        Ok(Some(rows))
    }

    /// The first column of the first row of `sql` as text (validation checks); None for no
    /// rows.
    pub async fn scalar(&self, sql: &str) -> Result<Option<String>, EngineError> {
        let bytes = self
            .within("a validation query", QUERY_TIMEOUT, async {
                self.client
                    .query(sql)
                    .fetch_bytes("TabSeparated")?
                    .collect()
                    .await
            })
            .await?;
        let text = String::from_utf8_lossy(&bytes);
        Ok(text
            .lines()
            .next()
            .map(|line| line.split('\t').next().unwrap_or_default().to_owned()))
    }
}

/// A back-quoted identifier.
pub fn identifier(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_below_22_8_cannot_back_up() {
        assert!(!ServerVersion::parse("18.16.1").unwrap().supports_backup());
        assert!(!ServerVersion::parse("22.7.5.1").unwrap().supports_backup());
        assert!(ServerVersion::parse("22.8.1.1").unwrap().supports_backup());
        assert!(ServerVersion::parse("26.9.2.1").unwrap().supports_backup());
        assert_eq!(ServerVersion::parse("x"), None);
    }

    #[test]
    fn statements_name_the_collection_not_credentials() {
        let dest = Destination::Named("backups_s3".into());
        let sql = backup_statement(
            &Scope::Databases(vec!["app".into()]),
            &dest,
            "b/clickhouse/prod/20261123T023000Z/",
            "strongroom-1",
            Some("b/clickhouse/prod/20261122T023000Z/"),
        );
        assert_eq!(
            sql,
            "BACKUP DATABASE app TO S3(backups_s3, 'b/clickhouse/prod/20261123T023000Z/') \
             SETTINGS id = 'strongroom-1', base_backup = S3(backups_s3, \
             'b/clickhouse/prod/20261122T023000Z/') ASYNC"
        );
        let url = Destination::Url("https://bucket.s3.amazonaws.com/".into());
        let sql = restore_statement(&Scope::All, &url, "b/x/", "r'1", true, None);
        assert_eq!(
            sql,
            "RESTORE ALL EXCEPT DATABASES system, information_schema, INFORMATION_SCHEMA FROM \
             S3('https://bucket.s3.amazonaws.com/b/x/') SETTINGS id = 'r\\'1', \
             allow_non_empty_tables = true ASYNC"
        );
        // A drill restores under other names.
        let scope = Scope::Tables(vec!["app.events".into(), "app.users".into()]);
        let sql = restore_statement(&scope, &url, "b/x/", "r", false, Some("_drill_1"));
        assert_eq!(
            sql,
            "RESTORE TABLE app.events AS app_drill_1.events, TABLE app.users AS \
             app_drill_1.users FROM S3('https://bucket.s3.amazonaws.com/b/x/') SETTINGS id = 'r' \
             ASYNC"
        );
        let scope = Scope::Databases(vec!["app".into()]);
        assert_eq!(scope.sql_renamed("_d").unwrap(), "DATABASE app AS app_d");
        assert_eq!(scope.renamed("_d"), Scope::Databases(vec!["app_d".into()]));
        assert_eq!(Scope::All.sql_renamed("_d"), None);
    }
}
