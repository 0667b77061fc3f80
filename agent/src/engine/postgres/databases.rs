//! Whole databases: whether one exists, creating one (also shaped like another), commenting,
//! renaming and dropping one, what one holds, and the names derived for the databases a
//! restore or drill makes beside its target (`<db>_restoring_<time>_<hex>`, ...).

use tokio_postgres::Client;

use super::{ConnParams, connect, detail, query_error, quote_ident, quote_literal};
use crate::engine::EngineError;

pub mod properties;

pub use properties::{
    Carried, Like, Refused, carry_over, create_database_like, in_transaction, tablespace_refused,
};

/// Whether `database` exists (asked over `maintenance`, a connection to another database).
pub async fn database_exists(
    maintenance: &ConnParams,
    database: &str,
) -> Result<bool, EngineError> {
    let client = connect(maintenance).await?;
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            &[&database],
        )
        .await
        .map_err(query_error(
            "look up database",
            &format!("{} (looking for {database})", maintenance.database),
        ))?;
    Ok(row.get(0))
}

/// `CREATE DATABASE`, over a connection to another (maintenance) database.
pub async fn create_database(maintenance: &ConnParams, database: &str) -> Result<(), EngineError> {
    let client = connect(maintenance).await?;
    client
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(database)))
        .await
        .map_err(query_error("create database", database))
}

/// `COMMENT ON DATABASE database IS comment`, over a connection to another (maintenance)
/// database.
pub async fn comment_database(
    maintenance: &ConnParams,
    database: &str,
    comment: &str,
) -> Result<(), EngineError> {
    connect(maintenance)
        .await?
        .batch_execute(&format!(
            "COMMENT ON DATABASE {} IS {}",
            quote_ident(database),
            quote_literal(comment)
        ))
        .await
        .map_err(query_error("comment on database", database))
}

/// Ends every other session connected to `database` (a drill's incident, or clearing the way
/// for a rename or drop). Needs membership in the sessions' roles or `pg_signal_backend`.
async fn terminate_sessions(client: &Client, database: &str) -> Result<(), EngineError> {
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&database],
        )
        .await
        .map(drop)
        .map_err(query_error("end the sessions of", database))
}

/// `_drill_20261201t040000z_1a2b`: lowercase, so psql users need no quotes, and with a random
/// part, so two drills in one second (the CLI and the sidecar) never share a name.
pub fn name_suffix(t0: time::OffsetDateTime, what: &str) -> String {
    let nonce = &uuid::Uuid::new_v4().simple().to_string()[..4];
    format!("_{what}_{}_{nonce}", crate::layout::Timestamp::new(t0)).to_ascii_lowercase()
}

/// `<db><suffix>`; a `db` too long for PostgreSQL's 63 bytes is shortened and keeps a hash of
/// its full name, so two long names that share a beginning stay apart.
pub fn derived_name(database: &str, suffix: &str) -> String {
    if database.len() + suffix.len() <= 63 {
        return format!("{database}{suffix}");
    }
    use sha2::Digest as _;
    let hash = hex::encode(&sha2::Sha256::digest(database.as_bytes())[..3]);
    let mut keep = 63 - suffix.len() - hash.len() - 1;
    while !database.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}_{hash}{suffix}", &database[..keep])
}

/// How the names [`derived_name`] gives `database` with a [`name_suffix`] of `what` begin:
/// the suffix is `_<what>_<time>_<4 hex>`, `what` and 23 bytes.
pub fn derived_prefix(database: &str, what: &str) -> String {
    let placeholder = "#".repeat(what.len() + 23);
    let name = derived_name(database, &placeholder);
    let kept = name
        .strip_suffix(&placeholder)
        .expect("derived_name ends in its suffix");
    format!("{kept}_{what}_")
}

/// How the names of the staging databases of restores into `database` begin.
pub fn staging_prefix(database: &str) -> String {
    derived_prefix(database, "restoring")
}

/// `ALTER DATABASE from RENAME TO to`: new sessions refused first (`ALLOW_CONNECTIONS
/// false`), then the open ones ended (one that comes back in between is ended again, a few
/// times); `to` accepts sessions again afterwards. Needs the database's ownership and the
/// right to end its sessions (membership in their roles, or `pg_signal_backend`).
pub async fn rename_database(
    maintenance: &ConnParams,
    from: &str,
    to: &str,
) -> Result<(), EngineError> {
    let client = connect(maintenance).await?;
    let failed = |e: tokio_postgres::Error| EngineError::Query {
        what: "rename database",
        database: format!("{from} (to {to})"),
        detail: detail(&e),
    };
    let allow = |name: &str, on: bool| {
        format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS {on}",
            quote_ident(name)
        )
    };
    client
        .batch_execute(&allow(from, false))
        .await
        .map_err(failed)?;
    let sql = format!(
        "ALTER DATABASE {} RENAME TO {}",
        quote_ident(from),
        quote_ident(to)
    );
    let mut attempt = 0;
    let renamed = loop {
        terminate_sessions(&client, from).await?;
        match client.batch_execute(&sql).await {
            Ok(()) => break Ok(()),
            // 55006 object_in_use: a session is still there (ending one takes a moment).
            Err(e) if attempt < 50 && e.code().is_some_and(|c| c.code() == "55006") => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => break Err(failed(e)),
        }
    };
    let now = if renamed.is_ok() { to } else { from };
    client
        .batch_execute(&allow(now, true))
        .await
        .map_err(failed)?;
    renamed
}

/// Whether the connected role may create a database owned like `database` and rename
/// `database` (superuser, or `CREATEDB` and a member of its owner's role).
pub async fn can_replace_database(
    params: &ConnParams,
    database: &str,
) -> Result<bool, EngineError> {
    let client = connect(params).await?;
    let row = client
        .query_opt(
            "SELECT r.rolsuper OR (r.rolcreatedb AND pg_has_role(current_user, d.datdba, 'USAGE')) \
             FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = $1",
            &[&database],
        )
        .await
        .map_err(query_error("read the restore role's rights on", database))?;
    Ok(row.is_some_and(|r| r.get(0)))
}

/// Whether the current role may create databases (`CREATEDB`, or a superuser).
pub async fn can_create_database(maintenance: &ConnParams) -> Result<bool, EngineError> {
    let client = connect(maintenance).await?;
    let row = client
        .query_one(
            "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(query_error(
            "read the restore role's rights in",
            &maintenance.database,
        ))?;
    Ok(row.get(0))
}

/// `DROP ROLE` of each (roles a scratch drill created, which own nothing once its database
/// is dropped).
pub async fn drop_roles(maintenance: &ConnParams, roles: &[String]) -> Result<(), EngineError> {
    if roles.is_empty() {
        return Ok(());
    }
    let client = connect(maintenance).await?;
    for role in roles {
        client
            .batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(role)))
            .await
            .map_err(query_error(
                "drop a role the drill created",
                &format!("postgres (role {role}; drop it by hand)"),
            ))?;
    }
    Ok(())
}

/// `DROP DATABASE`, ending its sessions first (`WITH (FORCE)`).
pub async fn drop_database(maintenance: &ConnParams, database: &str) -> Result<(), EngineError> {
    let client = connect(maintenance).await?;
    client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(database)
        ))
        .await
        .map_err(query_error("drop database", database))
}

/// What a database holds besides what PostgreSQL and extensions put there: relations of any
/// kind (views, sequences, materialized views, foreign tables too), functions, large objects,
/// schemas. Columns: a description of each kind present, with its count.
const USER_OBJECTS: &str = "SELECT what, n FROM ( \
       SELECT 'relations' AS what, count(*) AS n FROM pg_class c \
         JOIN pg_namespace s ON s.oid = c.relnamespace \
        WHERE s.nspname NOT IN ('pg_catalog', 'information_schema') \
          AND s.nspname !~ '^pg_(toast|temp_|toast_temp_)' \
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                          AND d.objid = c.oid AND d.deptype = 'e') \
       UNION ALL SELECT 'functions', count(*) FROM pg_proc p \
         JOIN pg_namespace s ON s.oid = p.pronamespace \
        WHERE s.nspname NOT IN ('pg_catalog', 'information_schema') \
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass \
                          AND d.objid = p.oid AND d.deptype = 'e') \
       UNION ALL SELECT 'large objects', count(*) FROM pg_largeobject_metadata \
       UNION ALL SELECT 'schemas', count(*) FROM pg_namespace s \
        WHERE s.nspname NOT IN ('pg_catalog', 'information_schema', 'public') \
          AND s.nspname !~ '^pg_(toast|temp_|toast_temp_)' \
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass \
                          AND d.objid = s.oid AND d.deptype = 'e') \
     ) kinds WHERE n > 0";

/// What `database` holds that someone made (see [`USER_OBJECTS`]), e.g. `["relations: 3"]`;
/// empty for a database as `CREATE DATABASE` left it.
pub async fn user_objects(client: &Client, database: &str) -> Result<Vec<String>, EngineError> {
    let rows = client
        .query(USER_OBJECTS, &[])
        .await
        .map_err(query_error("list what the database holds", database))?;
    Ok(rows
        .iter()
        .map(|r| format!("{}: {}", r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_begin_with_their_prefix_and_end_in_a_time_and_4_hex_digits() {
        for database in ["app", "app#", &"long_name_".repeat(6)] {
            for what in ["restoring", "drill"] {
                let suffix = name_suffix(time::OffsetDateTime::now_utc(), what);
                let name = derived_name(database, &suffix);
                let prefix = derived_prefix(database, what);
                let rest = name
                    .strip_prefix(&prefix)
                    .unwrap_or_else(|| panic!("{name}"));
                // The shape the sweep of abandoned databases looks for.
                let shape = rest.len() == 21
                    && rest[..8].bytes().all(|b| b.is_ascii_digit())
                    && &rest[8..9] == "t"
                    && rest[9..15].bytes().all(|b| b.is_ascii_digit())
                    && &rest[15..17] == "z_"
                    && rest[17..]
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                assert!(shape, "{name}");
                assert!(name.len() <= 63);
            }
            assert_eq!(
                staging_prefix(database),
                derived_prefix(database, "restoring")
            );
        }
    }
}
