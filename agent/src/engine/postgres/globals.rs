//! The cluster-wide objects a restore into a fresh cluster needs: roles (without passwords),
//! role memberships, role settings and the database's own settings. A plain pg_dump names
//! roles (`ALTER TABLE ... OWNER TO app`, `GRANT ... TO reader`) but does not create them.
//!
//! What `pg_dumpall --globals-only --no-role-passwords` captures, read from the catalogs in
//! the backup's snapshot and kept as data rather than SQL: a restore creates only the roles
//! that are missing, with statements the agent builds itself (every name quoted), and never
//! alters a role that exists. Passwords are never read (`pg_roles` shows none), so a role
//! created here cannot log in with a password until someone sets one.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::{EngineError, detail};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Globals {
    pub format_version: u32,
    pub roles: Vec<Role>,
    pub memberships: Vec<Membership>,
    /// `ALTER ROLE ... SET` settings: for every database (`database: None`) or for the backed
    /// up database only.
    pub role_settings: Vec<RoleSetting>,
    /// `ALTER DATABASE ... SET` settings of the backed-up database, as `name=value`.
    pub database_settings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub name: String,
    pub superuser: bool,
    pub inherit: bool,
    pub create_role: bool,
    pub create_db: bool,
    pub login: bool,
    pub replication: bool,
    pub bypass_rls: bool,
    pub connection_limit: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    /// The role granted.
    pub role: String,
    pub member: String,
    pub admin_option: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSetting {
    pub role: String,
    /// Set only in the backed-up database (`ALTER ROLE ... IN DATABASE`).
    pub in_database: bool,
    /// `name=value`, as `pg_db_role_setting` stores them.
    pub settings: Vec<String>,
}

/// Larger than the globals of any cluster this agent will meet (10k roles are ~2 MB).
pub const GLOBALS_LIMIT: u64 = 64 * 1024 * 1024;

const ROLES: &str = "SELECT rolname::text, rolsuper, rolinherit, rolcreaterole, rolcreatedb, \
        rolcanlogin, rolreplication, rolbypassrls, rolconnlimit \
     FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1";
const MEMBERSHIPS: &str = "SELECT r.rolname::text, m.rolname::text, a.admin_option \
     FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid \
       JOIN pg_roles m ON m.oid = a.member \
     WHERE r.rolname !~ '^pg_' OR m.rolname !~ '^pg_' ORDER BY 1, 2";
const SETTINGS: &str = "SELECT r.rolname::text, s.setdatabase <> 0, s.setconfig \
     FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole \
     WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database())) \
     ORDER BY 1 NULLS FIRST, 2";

/// Reads the globals over `client` (inside the backup's snapshot transaction).
pub async fn read(client: &Client, database: &str) -> Result<Globals, EngineError> {
    let failed = |e: tokio_postgres::Error| EngineError::Query {
        what: "read roles and settings",
        database: database.to_owned(),
        detail: detail(&e),
    };
    let roles = client.query(ROLES, &[]).await.map_err(failed)?;
    let memberships = client.query(MEMBERSHIPS, &[]).await.map_err(failed)?;
    let settings = client.query(SETTINGS, &[]).await.map_err(failed)?;
    let mut globals = Globals {
        format_version: 1,
        roles: roles
            .iter()
            .map(|r| Role {
                name: r.get(0),
                superuser: r.get(1),
                inherit: r.get(2),
                create_role: r.get(3),
                create_db: r.get(4),
                login: r.get(5),
                replication: r.get(6),
                bypass_rls: r.get(7),
                connection_limit: r.get(8),
            })
            .collect(),
        memberships: memberships
            .iter()
            .map(|r| Membership {
                role: r.get(0),
                member: r.get(1),
                admin_option: r.get(2),
            })
            .collect(),
        ..Globals::default()
    };
    for row in settings {
        let role: Option<String> = row.get(0);
        let in_database: bool = row.get(1);
        let config: Vec<String> = row.get::<_, Option<Vec<String>>>(2).unwrap_or_default();
        match role {
            Some(role) => globals.role_settings.push(RoleSetting {
                role,
                in_database,
                settings: config,
            }),
            None if in_database => globals.database_settings.extend(config),
            // Settings for every role in every database do not exist.
            None => {}
        }
    }
    Ok(globals)
}

/// How faithfully missing roles are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fidelity {
    /// With the backup's attributes (`restore --with-globals`, into a fresh cluster).
    Faithful,
    /// NOLOGIN and without SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS: enough to
    /// own and be granted the restored objects (a scratch drill), never a way in. A role
    /// dropped on purpose since the backup does not come back as a login.
    Owner,
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// Roles created (missing on the target).
    pub created_roles: Vec<String>,
    /// Roles left as they are (they exist).
    pub existing_roles: usize,
    pub memberships_granted: usize,
    pub settings_applied: usize,
    /// Created roles with a privileged attribute (SUPERUSER, REPLICATION, BYPASSRLS,
    /// CREATEROLE): check them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub privileged: Vec<String>,
    /// What was left out (memberships involving an existing role, statements the server
    /// refused), with why.
    pub skipped: Vec<String>,
}

use super::{quote_ident as ident, quote_literal as literal};

/// Settings whose value is a list of (possibly double-quoted) names: each element becomes its
/// own literal, as pg_dump writes them (`SET search_path = 'a', 'b c'`).
const LIST_SETTINGS: [&str; 5] = [
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "shared_preload_libraries",
    "local_preload_libraries",
];

/// `name TO value` for a stored `name=value`, or why it is left out.
pub fn set_clause(setting: &str) -> Result<String, String> {
    let (name, value) = setting
        .split_once('=')
        .ok_or_else(|| format!("{setting:?} is not name=value"))?;
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !valid_name {
        return Err(format!("{name:?} is not a setting name"));
    }
    let value = if LIST_SETTINGS.contains(&name.to_ascii_lowercase().as_str()) {
        split_list(value)
            .iter()
            .map(|v| literal(v))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        literal(value)
    };
    Ok(format!("{name} TO {value}"))
}

/// Splits `a, "b c", "d""e"` into `a`, `b c`, `d"e`; `""` (e.g. `search_path=""`, a common
/// hardening) is one empty element.
fn split_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let (mut quoted, mut had_quotes) = (false, false);
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                current.push('"');
            }
            '"' => {
                quoted = !quoted;
                had_quotes = true;
            }
            ',' if !quoted => {
                if had_quotes || !current.is_empty() {
                    items.push(std::mem::take(&mut current));
                }
                had_quotes = false;
            }
            c if c.is_whitespace() && !quoted => {}
            c => current.push(c),
        }
    }
    if had_quotes || !current.is_empty() {
        items.push(current);
    }
    if items.is_empty() {
        items.push(String::new());
    }
    items
}

/// The statements that create what `existing` lacks: missing roles (as `fidelity` says),
/// memberships between created roles, and the created roles' settings; the database's
/// settings on `database` only when `database_created`. A membership involving an existing
/// role is left out (granting it would change that role, or hand a created role its rights).
pub fn plan(
    globals: &Globals,
    existing: &BTreeSet<String>,
    database: &str,
    database_created: bool,
    fidelity: Fidelity,
) -> (Vec<String>, Applied) {
    let mut sql = Vec::new();
    let mut applied = Applied::default();
    for role in &globals.roles {
        if existing.contains(&role.name) {
            applied.existing_roles += 1;
            continue;
        }
        let faithful = fidelity == Fidelity::Faithful;
        let flag =
            |on: bool, name: &str| format!("{}{name}", if on && faithful { "" } else { "NO" });
        if faithful && (role.superuser || role.replication || role.bypass_rls || role.create_role) {
            applied.privileged.push(role.name.clone());
        }
        sql.push(format!(
            "CREATE ROLE {} WITH {} {} {} {} {} {} {} CONNECTION LIMIT {}",
            ident(&role.name),
            flag(role.superuser, "SUPERUSER"),
            if role.inherit { "INHERIT" } else { "NOINHERIT" },
            flag(role.create_role, "CREATEROLE"),
            flag(role.create_db, "CREATEDB"),
            flag(role.login, "LOGIN"),
            flag(role.replication, "REPLICATION"),
            flag(role.bypass_rls, "BYPASSRLS"),
            role.connection_limit
        ));
        applied.created_roles.push(role.name.clone());
    }
    let created_names = applied.created_roles.clone();
    let created: BTreeSet<&str> = created_names.iter().map(String::as_str).collect();
    for m in &globals.memberships {
        let (role, member) = (
            created.contains(m.role.as_str()),
            created.contains(m.member.as_str()),
        );
        if !(role || member) {
            continue;
        }
        if !(role && member) {
            applied.skipped.push(format!(
                "membership of {} in {}: {} exists on this server and is not changed",
                m.member,
                m.role,
                if role { &m.member } else { &m.role }
            ));
            continue;
        }
        sql.push(format!(
            "GRANT {} TO {}{}",
            ident(&m.role),
            ident(&m.member),
            if m.admin_option {
                " WITH ADMIN OPTION"
            } else {
                ""
            }
        ));
        applied.memberships_granted += 1;
    }
    let mut set = |target: String, setting: &str, applied: &mut Applied| match set_clause(setting) {
        Ok(clause) => {
            sql.push(format!("{target} SET {clause}"));
            applied.settings_applied += 1;
        }
        Err(why) => applied.skipped.push(format!("{target}: {why}")),
    };
    for rs in &globals.role_settings {
        if !created.contains(rs.role.as_str()) {
            continue;
        }
        let target = match rs.in_database {
            true => format!(
                "ALTER ROLE {} IN DATABASE {}",
                ident(&rs.role),
                ident(database)
            ),
            false => format!("ALTER ROLE {}", ident(&rs.role)),
        };
        for setting in &rs.settings {
            set(target.clone(), setting, &mut applied);
        }
    }
    if database_created {
        for setting in &globals.database_settings {
            set(
                format!("ALTER DATABASE {}", ident(database)),
                setting,
                &mut applied,
            );
        }
    }
    (sql, applied)
}

/// Creates what the target server lacks (see [`plan`]) in one transaction, over `client` (a
/// connection to the target database).
pub async fn apply(
    client: &Client,
    globals: &Globals,
    database: &str,
    database_created: bool,
    fidelity: Fidelity,
) -> Result<Applied, EngineError> {
    let failed = |what: &'static str| {
        let database = database.to_owned();
        move |e: tokio_postgres::Error| EngineError::Query {
            what,
            database: database.clone(),
            detail: detail(&e),
        }
    };
    let existing: BTreeSet<String> = client
        .query("SELECT rolname::text FROM pg_roles", &[])
        .await
        .map_err(failed("list roles"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (statements, mut applied) = plan(globals, &existing, database, database_created, fidelity);
    if statements.is_empty() {
        return Ok(applied);
    }
    // One transaction; a statement the server refuses (a setting only a superuser may make,
    // a role this login may not create) is rolled back to its savepoint and reported, so
    // it does not take the others with it. Values are quoted for standard strings.
    client
        .batch_execute("BEGIN; SET LOCAL standard_conforming_strings = on")
        .await
        .map_err(failed("create the backup's missing roles"))?;
    let mut refused_roles = BTreeSet::new();
    for statement in &statements {
        let step = format!("SAVEPOINT strongroom_globals; {statement}; RELEASE strongroom_globals");
        if let Err(e) = client.batch_execute(&step).await {
            client
                .batch_execute("ROLLBACK TO strongroom_globals")
                .await
                .map_err(failed("create the backup's missing roles"))?;
            let what = statement.split(" WITH ").next().unwrap_or(statement);
            applied
                .skipped
                .push(format!("{what}: refused ({})", detail(&e)));
            if let Some(name) = statement.strip_prefix("CREATE ROLE ") {
                refused_roles.insert(name.split(" WITH ").next().unwrap_or(name).to_owned());
            }
        }
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(failed("create the backup's missing roles"))?;
    applied
        .created_roles
        .retain(|r| !refused_roles.contains(&ident(r)));
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, login: bool) -> Role {
        Role {
            name: name.into(),
            superuser: false,
            inherit: true,
            create_role: false,
            create_db: false,
            login,
            replication: false,
            bypass_rls: false,
            connection_limit: -1,
        }
    }

    fn sample() -> Globals {
        Globals {
            format_version: 1,
            roles: vec![
                role("postgres", true),
                role("app", false),
                role("we\"b", true),
            ],
            memberships: vec![
                Membership {
                    role: "app".into(),
                    member: "we\"b".into(),
                    admin_option: false,
                },
                Membership {
                    role: "app".into(),
                    member: "postgres".into(),
                    admin_option: true,
                },
            ],
            role_settings: vec![
                RoleSetting {
                    role: "app".into(),
                    in_database: true,
                    settings: vec!["search_path=app, \"my schema\"".into()],
                },
                RoleSetting {
                    role: "postgres".into(),
                    in_database: false,
                    settings: vec!["work_mem=64MB".into()],
                },
            ],
            database_settings: vec!["statement_timeout=5s".into(), "bad name=1".into()],
        }
    }

    #[test]
    fn only_missing_roles_are_created_and_existing_ones_never_altered() {
        let existing: BTreeSet<String> = ["postgres".to_string()].into();
        let (sql, applied) = plan(&sample(), &existing, "app_drill", true, Fidelity::Faithful);
        assert_eq!(applied.created_roles, ["app", "we\"b"]);
        assert_eq!(applied.existing_roles, 1);
        assert_eq!(
            sql,
            [
                "CREATE ROLE \"app\" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN \
                 NOREPLICATION NOBYPASSRLS CONNECTION LIMIT -1",
                "CREATE ROLE \"we\"\"b\" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN \
                 NOREPLICATION NOBYPASSRLS CONNECTION LIMIT -1",
                "GRANT \"app\" TO \"we\"\"b\"",
                "ALTER ROLE \"app\" IN DATABASE \"app_drill\" SET search_path TO 'app', 'my schema'",
                "ALTER DATABASE \"app_drill\" SET statement_timeout TO '5s'",
            ]
        );
        // postgres exists: neither its work_mem nor its memberships are touched.
        assert!(
            !sql.iter()
                .any(|s| s.contains("work_mem") || s.contains("TO \"postgres\""))
        );
        assert_eq!(applied.skipped.len(), 2, "{:?}", applied.skipped);
        assert!(
            applied.skipped[0].contains("postgres exists"),
            "{:?}",
            applied.skipped
        );
        // An existing database keeps its settings.
        let (sql, _) = plan(&sample(), &existing, "app", false, Fidelity::Faithful);
        assert!(!sql.iter().any(|s| s.starts_with("ALTER DATABASE")));
        // A drill's roles can own objects, and nothing else.
        let mut privileged = sample();
        privileged.roles[2].superuser = true;
        let (sql, applied) = plan(&privileged, &existing, "d", true, Fidelity::Owner);
        assert!(
            sql[1].contains("NOSUPERUSER") && sql[1].contains("NOLOGIN"),
            "{}",
            sql[1]
        );
        assert!(applied.privileged.is_empty());
        let (_, applied) = plan(&privileged, &existing, "d", true, Fidelity::Faithful);
        assert_eq!(applied.privileged, ["we\"b"]);
    }

    #[test]
    fn everything_exists_means_nothing_to_do() {
        let existing = ["postgres", "app", "we\"b"].map(String::from).into();
        let (sql, applied) = plan(&sample(), &existing, "app", false, Fidelity::Faithful);
        assert!(sql.is_empty(), "{sql:?}");
        assert_eq!(applied.existing_roles, 3);
    }

    #[test]
    fn set_clauses_quote_values_and_refuse_odd_names() {
        assert_eq!(set_clause("work_mem=64MB").unwrap(), "work_mem TO '64MB'");
        assert_eq!(
            set_clause("application_name=it's").unwrap(),
            "application_name TO 'it''s'"
        );
        assert_eq!(
            set_clause("search_path=\"$user\", public, \"a\"\"b\"").unwrap(),
            "search_path TO '$user', 'public', 'a\"b'"
        );
        assert_eq!(set_clause("search_path=\"\"").unwrap(), "search_path TO ''");
        assert!(set_clause("x; DROP TABLE t=1").is_err());
        assert!(set_clause("novalue").is_err());
    }
}
