//! Databases that a killed restore or drill left behind, told apart from those in use.
//!
//! A restore holds a session-level advisory lock ([`Held`]) on the name of each database it
//! creates to rename or drop later (its staging database; a scratch drill's database) for as
//! long as it runs: taken in the `postgres` database before the database is created, on a
//! connection of its own. PostgreSQL releases it when that connection closes, however the
//! agent ended. [`sweep`] drops the databases named `<prefix><time>_<4 hex>` (the shape of
//! [`crate::engine::postgres::name_suffix`]) that the role may drop (it is a member of the
//! owner), that carry no comment (a drill's database kept with `--keep` gets one, and so
//! may any database a person wants left alone), whose lock it can take, and that no one is
//! connected to (a plain DROP DATABASE, without FORCE; one in use stays, with a warning).

use tokio_postgres::Client;

use crate::engine::EngineError;
use crate::engine::postgres::{self, ConnParams, query_error, quote_ident};

/// The advisory lock (in the `postgres` database) a restore holds on a database it made.
pub fn lock_key(database: &str) -> i64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("strongroom holds database {database}"));
    i64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 has 8 bytes"))
}

/// The lock on one database's name, held until this is dropped.
pub struct Held {
    _session: Client,
}

/// Takes the lock on `database`'s name (which no other restore uses: it waits otherwise).
pub async fn hold(maintenance: &ConnParams, database: &str) -> Result<Held, EngineError> {
    let session = postgres::connect(maintenance).await?;
    session
        .query_one("SELECT pg_advisory_lock($1)", &[&lock_key(database)])
        .await
        .map_err(query_error("lock the name of", database))?;
    Ok(Held { _session: session })
}

/// Databases named `$1` followed by a time and 4 hex digits, with no comment, that the role
/// may drop.
const CANDIDATES: &str = "SELECT datname::text FROM pg_database \
     WHERE starts_with(datname, $1) \
       AND substr(datname, length($1) + 1) ~ '^[0-9]{8}t[0-9]{6}z_[0-9a-f]{4}$' \
       AND shobj_description(oid, 'pg_database') IS NULL \
       AND pg_has_role(datdba, 'MEMBER') ORDER BY datname";

/// What a [`sweep`] found.
#[derive(Debug, Default)]
pub struct Swept {
    /// Databases no restore held (dropped, unless someone was connected).
    pub abandoned: Vec<String>,
    /// What was done and what could not be, one line each, for the report.
    pub said: Vec<String>,
}

/// Drops the abandoned databases named `prefix<time>_<hex>` (see the module documentation);
/// `what` says what they are ("the staging database of an earlier restore"). Never fails: a
/// problem is a line of [`Swept::said`].
pub async fn sweep(maintenance: &ConnParams, prefix: &str, what: &str) -> Swept {
    let mut swept = Swept::default();
    if let Err(e) = sweep_into(maintenance, prefix, what, &mut swept).await {
        let line = format!(
            "could not look for databases named {prefix}<time>_<hex> ({what}s) that were left \
             behind ({e}); one that no restore is using is such a leftover: drop it by hand"
        );
        tracing::warn!("{line}");
        swept.said.push(line);
    }
    swept
}

async fn sweep_into(
    maintenance: &ConnParams,
    prefix: &str,
    what: &str,
    swept: &mut Swept,
) -> Result<(), EngineError> {
    let client = postgres::connect(maintenance).await?;
    let names: Vec<String> = client
        .query(CANDIDATES, &[&prefix])
        .await
        .map_err(query_error("list databases like", prefix))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for name in names {
        let free: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&lock_key(&name)])
            .await
            .map_err(query_error("look for the restore holding", &name))?
            .get(0);
        if !free {
            continue; // its restore is running
        }
        let dropped = client
            .batch_execute(&format!("DROP DATABASE {}", quote_ident(&name)))
            .await
            .map_err(query_error("drop database", &name));
        let line = match dropped {
            Ok(()) => format!("dropped {name}, {what} that was interrupted (nothing held it)"),
            Err(e) => format!(
                "{name} is {what} that was interrupted, and could not be dropped ({e}); drop \
                 it by hand once no one uses it"
            ),
        };
        tracing::warn!(database = %name, "{line}");
        swept.said.push(line);
        swept.abandoned.push(name.clone());
        client
            .query_one("SELECT pg_advisory_unlock($1)", &[&lock_key(&name)])
            .await
            .map_err(query_error("release the lock on", &name))?;
    }
    Ok(())
}
