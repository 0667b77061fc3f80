//! Databases that a killed restore or drill left behind, told apart from those in use.
//!
//! A restore holds a session-level advisory lock ([`Held`]) on the name of each database it
//! creates to rename or drop later (its staging database; a scratch drill's database) for as
//! long as it runs: taken in the `postgres` database before the database is created, on a
//! connection of its own with no idle timeout and short TCP keepalives both ways. PostgreSQL
//! releases it when that connection closes, however the agent ended (a lost node: once the
//! keepalives give up, about two minutes). Right after creating the database, the restore
//! comments it with [`IN_USE`]; the comment goes when the database takes the target's place
//! (and `drill --keep` replaces it). [`sweep`] drops only databases named
//! `<prefix><time>_<4 hex>` (the shape of [`crate::engine::postgres::name_suffix`]) that carry
//! that comment, that the role may drop, whose lock it can take and that no one is connected
//! to (a plain DROP DATABASE, without FORCE: one in use stays, with a warning). A database an
//! earlier version of the agent made, or one a person commented otherwise, is never dropped.
//! The lock needs a direct connection: behind a pooler in transaction mode a session lock
//! stays on whichever server session ran it, not with the restore.

use tokio_postgres::Client;

use crate::engine::EngineError;
use crate::engine::postgres::{self, ConnParams, query_error, quote_ident};

/// The comment on a database a running restore or drill made and holds.
pub const IN_USE: &str = "strongroom: made by a restore or drill still running, or killed; \
     a later one drops it once no restore holds it";

/// The advisory lock (in the `postgres` database) a restore holds on a database it made.
pub fn lock_key(database: &str) -> i64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("strongroom holds database {database}"));
    i64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 has 8 bytes"))
}

/// The lock on one database's name, held until this is dropped.
pub struct Held {
    session: Client,
    database: String,
}

/// Takes the lock on `database`'s name (a new name: no other restore holds it; should one,
/// this fails rather than wait).
pub async fn hold(maintenance: &ConnParams, database: &str) -> Result<Held, EngineError> {
    let session = postgres::connect(maintenance).await?;
    // The session must outlive any idle limit, and the server must notice a vanished agent
    // (a lost node) in minutes: idle_session_timeout (PostgreSQL >= 14; NULL where it does
    // not exist) off, and the server's own TCP keepalives short (ignored on a Unix socket).
    session
        .batch_execute(
            "SELECT CASE WHEN current_setting('idle_session_timeout', true) IS NOT NULL \
             THEN set_config('idle_session_timeout', '0', false) END; \
             SELECT set_config('tcp_keepalives_idle', '60', false), \
                    set_config('tcp_keepalives_interval', '15', false), \
                    set_config('tcp_keepalives_count', '3', false)",
        )
        .await
        .map_err(query_error("set up the session holding", database))?;
    let taken: bool = session
        .query_one("SELECT pg_try_advisory_lock($1)", &[&lock_key(database)])
        .await
        .map_err(query_error(
            "take the advisory lock (in postgres) on",
            database,
        ))?
        .get(0);
    if !taken {
        return Err(EngineError::Query {
            what: "take the advisory lock (in postgres) on",
            database: database.to_owned(),
            detail: "another session holds it (a restore through a connection pooler in \
                     transaction mode?); restore over a direct connection"
                .into(),
        });
    }
    Ok(Held {
        session,
        database: database.to_owned(),
    })
}

impl Held {
    /// Fails if this session no longer holds the lock (the server or an administrator ended
    /// it, or the network failed): another restore may then drop the database.
    pub async fn check(&self) -> Result<(), EngineError> {
        // A bigint advisory lock shows in pg_locks as its high and low 32 bits, objsubid 1.
        let held: bool = self
            .session
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
                 AND pid = pg_backend_pid() AND objsubid = 1 \
                 AND classid = (($1::bigint >> 32) & 4294967295)::oid \
                 AND objid = ($1::bigint & 4294967295)::oid)",
                &[&lock_key(&self.database)],
            )
            .await
            .map_err(query_error(
                "check its advisory lock (in postgres) on",
                &self.database,
            ))?
            .get(0);
        if !held {
            return Err(EngineError::Query {
                what: "check its advisory lock (in postgres) on",
                database: self.database.clone(),
                detail: "the lock is gone, so another restore may have dropped the database; \
                         run the restore again, over a direct connection (not a pooler)"
                    .into(),
            });
        }
        Ok(())
    }
}

/// Comments `database`, just created by a restore that holds it, with [`IN_USE`]. A failure
/// costs only the cleanup after a kill, so it is logged, not returned.
pub async fn mark_in_use(maintenance: &ConnParams, database: &str) {
    if let Err(e) = postgres::comment_database(maintenance, database, IN_USE).await {
        tracing::warn!(database, error = %e,
            "could not comment the database as in use (grant the restore role its owner's \
             rights); should this run be killed, the next one will not drop it");
    }
}

/// Databases named `$1` followed by a time and 4 hex digits, commented `$2` ([`IN_USE`]), that
/// the role may drop (it has its owner's privileges).
const CANDIDATES: &str = "SELECT datname::text FROM pg_database \
     WHERE starts_with(datname, $1) \
       AND substr(datname, length($1) + 1) ~ '^[0-9]{8}t[0-9]{6}z_[0-9a-f]{4}$' \
       AND shobj_description(oid, 'pg_database') = $2 \
       AND pg_has_role(datdba, 'USAGE') ORDER BY datname";

/// What a [`sweep`] found.
#[derive(Debug, Default)]
pub struct Swept {
    /// Databases no restore held (dropped, unless someone was connected).
    pub abandoned: Vec<String>,
    /// What was done and what could not be, one line each, for the report.
    pub said: Vec<String>,
}

/// Drops the abandoned databases named `prefix<time>_<hex>` (see the module documentation);
/// `what` says what one is ("the staging database of an earlier restore"). Never fails: a
/// problem is a line of [`Swept::said`].
pub async fn sweep(maintenance: &ConnParams, prefix: &str, what: &str) -> Swept {
    let mut swept = Swept::default();
    let listed = async {
        let client = postgres::connect(maintenance).await?;
        let names: Vec<String> = client
            .query(CANDIDATES, &[&prefix, &IN_USE])
            .await
            .map_err(query_error(
                "list the databases a killed restore left",
                &maintenance.database,
            ))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        Ok::<_, EngineError>((client, names))
    };
    let (client, names) = match listed.await {
        Ok(listed) => listed,
        Err(e) => {
            swept.said.push(format!(
                "could not look for databases named {prefix}<time>_<hex> left behind by killed \
                 runs ({e}); such a database, commented as made by a restore, that no restore \
                 is using is a leftover ({what}): drop it by hand"
            ));
            return swept;
        }
    };
    for name in names {
        match sweep_one(&client, &name).await {
            Ok(None) => {}
            Ok(Some(Ok(()))) => {
                swept.said.push(format!(
                    "dropped {name}, {what}, which was interrupted (no restore held it)"
                ));
                swept.abandoned.push(name);
            }
            Ok(Some(Err(e))) => {
                swept.said.push(format!(
                    "{name} is {what}, which was interrupted, and could not be dropped ({e}); \
                     drop it by hand once no one uses it"
                ));
                swept.abandoned.push(name);
            }
            Err(e) => swept.said.push(format!(
                "{name} may be {what}, left behind, but could not be checked ({e}); if no \
                 restore or drill is running, drop it by hand"
            )),
        }
    }
    for line in &swept.said {
        tracing::warn!("{line}");
    }
    swept
}

/// Drops `name` if no restore holds it and it still is a candidate: `None` if it was in use
/// (or gone), else whether the DROP worked; an error if it could not be checked.
async fn sweep_one(
    client: &Client,
    name: &str,
) -> Result<Option<Result<(), EngineError>>, EngineError> {
    let key = lock_key(name);
    let free: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
        .map_err(query_error("try the advisory lock (in postgres) on", name))?
        .get(0);
    if !free {
        return Ok(None); // its restore is running
    }
    // Listed before the lock was taken: its restore may have ended since (renamed it into
    // place, dropped it), or another sweep dropped it.
    let still = client
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1 \
             AND shobj_description(oid, 'pg_database') = $2",
            &[&name, &IN_USE],
        )
        .await
        .map_err(query_error("look up", name));
    let dropped = match still {
        Ok(Some(_)) => Ok(Some(
            client
                .batch_execute(&format!("DROP DATABASE {}", quote_ident(name)))
                .await
                .map_err(query_error("drop database", name)),
        )),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    // Should this fail, the lock goes with the sweep's session.
    let _ = client
        .query_one("SELECT pg_advisory_unlock($1)", &[&key])
        .await;
    dropped
}
