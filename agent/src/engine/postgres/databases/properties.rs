//! What a database is apart from what it holds, and copying it to another database.
//!
//! Its **shape**, fixed when it is created: owner, encoding, collation, locale provider
//! (PostgreSQL 15 and later: ICU, and from 17 the builtin provider) and tablespace. And what it
//! **carries**: who may connect and how (its ACL: `GRANT CONNECT, CREATE, TEMPORARY ON
//! DATABASE`), its connection limit, and the settings made on it (`ALTER DATABASE ... SET`,
//! `ALTER ROLE ... IN DATABASE ... SET`). A plain pg_dump holds none of these. `gunzip | psql`
//! into a database keeps them, since the database itself stays; a restore that puts a staging
//! database in the target's place by rename must copy them, or a restore into the database a
//! chart or operator made would lose its grants and settings (a `REVOKE CONNECT ... FROM
//! PUBLIC` gone, an application's `search_path` gone).

use tokio_postgres::Client;

use super::super::globals::set_clause;
use super::super::{
    ConnParams, connect, detail, query_error, quote_ident, quote_literal as literal,
};
use crate::engine::EngineError;

/// What [`create_database_like`] shapes a new database like.
#[derive(Debug, Clone, Copy)]
pub enum Like<'a> {
    /// An existing database: its owner, encoding, collation, locale provider and tablespace.
    Database(&'a str),
    /// What `CREATE DATABASE` without options makes: owned by the current role, with
    /// `template1`'s encoding, collation, locale provider and tablespace.
    NewDatabase,
}

/// Creates `database` shaped like `like` (from `template0`, as pg_dump's `--create` does), for
/// a restore in its place. What the model carries is not copied: see [`Carried`].
pub async fn create_database_like(
    maintenance: &ConnParams,
    database: &str,
    like: Like<'_>,
) -> Result<(), EngineError> {
    let client = connect(maintenance).await?;
    let shape = Shape::read(&client, like).await?;
    client
        .batch_execute(&shape.create_statement(database))
        .await
        .map_err(query_error("create database", database))
}

/// Gives `onto` (new, owned by the same role) what `from` carries, in one transaction.
pub async fn carry_over(
    maintenance: &ConnParams,
    from: &str,
    onto: &str,
) -> Result<(), EngineError> {
    let client = connect(maintenance).await?;
    let failed = |detail: String| EngineError::Query {
        what: "copy the grants and settings of database",
        database: format!("{from} (to {onto})"),
        detail,
    };
    let carried = Carried::read(&client, from).await?;
    let statements = carried.statements(onto, None).map_err(failed)?;
    in_transaction(&client, &statements)
        .await
        .map_err(|refused| failed(refused.to_string()))
}

/// A statement the server refused, and its error.
#[derive(Debug)]
pub struct Refused {
    pub statement: String,
    pub error: tokio_postgres::Error,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.statement, detail(&self.error))
    }
}

/// Runs `statements` one at a time in a transaction that commits, so that a refusal names
/// its statement (the transaction then ends with the connection, rolled back).
pub async fn in_transaction(client: &Client, statements: &[String]) -> Result<(), Refused> {
    let all = std::iter::once("BEGIN")
        .chain(statements.iter().map(String::as_str))
        .chain(std::iter::once("COMMIT"));
    for statement in all {
        if let Err(error) = client.batch_execute(statement).await {
            return Err(Refused {
                statement: statement.to_owned(),
                error,
            });
        }
    }
    Ok(())
}

/// Why the current role may not create a database in `target`'s tablespace (it lacks
/// `CREATE` on it), if so.
pub async fn tablespace_refused(
    client: &Client,
    target: &str,
) -> Result<Option<String>, EngineError> {
    let row = client
        .query_opt(
            "SELECT t.spcname::text FROM pg_database d \
             JOIN pg_tablespace t ON t.oid = d.dattablespace \
             WHERE d.datname = $1 AND t.spcname <> 'pg_default' \
               AND NOT has_tablespace_privilege(t.oid, 'CREATE')",
            &[&target],
        )
        .await
        .map_err(query_error("read the tablespace of database", target))?;
    Ok(row.map(|r| {
        let tablespace: String = r.get(0);
        format!(
            "{target} is in tablespace {tablespace}, where the restore role may not create a \
             database (GRANT CREATE ON TABLESPACE {} TO it)",
            quote_ident(&tablespace)
        )
    }))
}

/// How a database was created: what `CREATE DATABASE` fixes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    owner: String,
    encoding: String,
    collate: String,
    ctype: String,
    /// `None` before PostgreSQL 15 (libc only).
    provider: Option<Provider>,
    /// `None` for the cluster's default, `pg_default`.
    tablespace: Option<String>,
}

/// A database's locale provider (`datlocprovider`) and its locale.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Provider {
    Libc,
    Icu {
        locale: String,
        /// PostgreSQL 16's `ICU_RULES`.
        rules: Option<String>,
    },
    /// PostgreSQL 17's builtin provider.
    Builtin {
        locale: String,
    },
}

impl Shape {
    async fn read(client: &Client, like: Like<'_>) -> Result<Shape, EngineError> {
        let (owner, model) = match like {
            Like::Database(name) => ("pg_get_userbyid(d.datdba)", name),
            Like::NewDatabase => ("current_user", "template1"),
        };
        let version = server_version(client, model).await?;
        // The columns appeared in 15 (datlocprovider, daticulocale) and 16 (daticurules);
        // 17 renamed daticulocale to datlocale.
        let locale = match version {
            v if v >= 170_000 => "d.datlocprovider::text, d.datlocale, d.daticurules",
            v if v >= 160_000 => "d.datlocprovider::text, d.daticulocale, d.daticurules",
            v if v >= 150_000 => "d.datlocprovider::text, d.daticulocale, NULL::text",
            _ => "NULL::text, NULL::text, NULL::text",
        };
        let row = client
            .query_one(
                &format!(
                    "SELECT {owner}::text, pg_encoding_to_char(d.encoding)::text, \
                     d.datcollate::text, d.datctype::text, \
                     NULLIF(t.spcname, 'pg_default')::text, {locale} \
                     FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace \
                     WHERE d.datname = $1"
                ),
                &[&model],
            )
            .await
            .map_err(query_error("read the settings of database", model))?;
        let locale: Option<String> = row.get(6);
        let provider = match row.get::<_, Option<String>>(5).as_deref() {
            None => None,
            Some("i") => Some(Provider::Icu {
                locale: locale.unwrap_or_default(),
                rules: row.get(7),
            }),
            Some("b") => Some(Provider::Builtin {
                locale: locale.unwrap_or_default(),
            }),
            Some(_) => Some(Provider::Libc),
        };
        Ok(Shape {
            owner: row.get(0),
            encoding: row.get(1),
            collate: row.get(2),
            ctype: row.get(3),
            provider,
            tablespace: row.get(4),
        })
    }

    /// `CREATE DATABASE name ...` with this shape, from `template0`.
    fn create_statement(&self, name: &str) -> String {
        let mut sql = format!(
            "CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            quote_ident(name),
            quote_ident(&self.owner),
            literal(&self.encoding),
            literal(&self.collate),
            literal(&self.ctype),
        );
        match &self.provider {
            None => {}
            Some(Provider::Libc) => sql.push_str(" LOCALE_PROVIDER libc"),
            Some(Provider::Icu { locale, rules }) => {
                sql.push_str(&format!(
                    " LOCALE_PROVIDER icu ICU_LOCALE {}",
                    literal(locale)
                ));
                if let Some(rules) = rules {
                    sql.push_str(&format!(" ICU_RULES {}", literal(rules)));
                }
            }
            Some(Provider::Builtin { locale }) => sql.push_str(&format!(
                " LOCALE_PROVIDER builtin BUILTIN_LOCALE {}",
                literal(locale)
            )),
        }
        if let Some(tablespace) = &self.tablespace {
            sql.push_str(&format!(" TABLESPACE {}", quote_ident(tablespace)));
        }
        sql
    }
}

/// What a database carries that a rename into its place must copy: its ACL, connection limit
/// and settings. Read over a connection to any database of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    owner: String,
    /// `None`: the default ACL (the owner may do everything, `PUBLIC` may connect and create
    /// temporary tables).
    grants: Option<Vec<Grant>>,
    /// -1: no limit.
    connection_limit: i32,
    settings: Vec<Settings>,
}

/// One privilege of one grantee, as `aclexplode` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    /// `CONNECT`, `CREATE` or `TEMPORARY`.
    privilege: String,
    /// `None`: `PUBLIC`.
    grantee: Option<String>,
    grantor: String,
    grantable: bool,
}

/// The settings made on the database (`role: None`) or for one role in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    role: Option<String>,
    /// `name=value`, as `pg_db_role_setting` stores them.
    config: Vec<String>,
}

impl Carried {
    /// What `database` carries.
    pub async fn read(client: &Client, database: &str) -> Result<Carried, EngineError> {
        let failed = query_error("read the grants and settings of database", database);
        let row = client
            .query_one(
                "SELECT pg_get_userbyid(datdba)::text, datacl IS NULL, datconnlimit \
                 FROM pg_database WHERE datname = $1",
                &[&database],
            )
            .await
            .map_err(&failed)?;
        let grants = if row.get(1) {
            None
        } else {
            let rows = client
                .query(
                    "SELECT a.privilege_type::text, \
                     CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee)::text END, \
                     pg_get_userbyid(a.grantor)::text, a.is_grantable \
                     FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = $1 \
                     ORDER BY 2 NULLS FIRST, 1, 3",
                    &[&database],
                )
                .await
                .map_err(&failed)?;
            Some(
                rows.iter()
                    .map(|r| Grant {
                        privilege: r.get(0),
                        grantee: r.get(1),
                        grantor: r.get(2),
                        grantable: r.get(3),
                    })
                    .collect(),
            )
        };
        let settings = client
            .query(
                "SELECT CASE WHEN s.setrole = 0 THEN NULL \
                 ELSE pg_get_userbyid(s.setrole)::text END, s.setconfig \
                 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase \
                 WHERE d.datname = $1 ORDER BY 1 NULLS FIRST",
                &[&database],
            )
            .await
            .map_err(&failed)?
            .iter()
            .map(|r| Settings {
                role: r.get(0),
                config: r.get::<_, Option<Vec<String>>>(1).unwrap_or_default(),
            })
            .collect();
        Ok(Carried {
            owner: row.get(0),
            grants,
            connection_limit: row.get(2),
            settings,
        })
    }

    /// The statements that give `onto` (owned by the same role), whose ACL is `current`'s,
    /// this ACL: every privilege revoked (with what was granted on from it) from `PUBLIC`, the
    /// owner and whoever `current` grants to, then each granted as it was, in an order where
    /// every grantor holds its grant option first; a grantor other than the owner grants
    /// through `SET ROLE` (a GRANT by the owner, a member of it or a superuser is recorded as
    /// the owner's). None when both ACLs are the default.
    pub fn grant_statements(&self, onto: &str, current: Option<&Carried>) -> Vec<String> {
        let current = current.and_then(|c| c.grants.as_deref());
        let grants = match (&self.grants, current) {
            (None, None) => return Vec::new(),
            (Some(grants), _) => grants.clone(),
            (None, Some(_)) => self.default_grants(),
        };
        let db = quote_ident(onto);
        let mut revoke_from: Vec<String> = vec!["PUBLIC".into(), quote_ident(&self.owner)];
        for g in current.unwrap_or_default() {
            let grantee = g.grantee.as_deref().map_or("PUBLIC".into(), quote_ident);
            if !revoke_from.contains(&grantee) {
                revoke_from.push(grantee);
            }
        }
        let mut sql: Vec<String> = revoke_from
            .iter()
            .map(|who| format!("REVOKE ALL ON DATABASE {db} FROM {who} CASCADE"))
            .collect();
        for g in self.in_grant_order(grants) {
            let grantee = g.grantee.as_deref().map_or("PUBLIC".into(), quote_ident);
            let option = if g.grantable {
                " WITH GRANT OPTION"
            } else {
                ""
            };
            let grant = format!(
                "GRANT {} ON DATABASE {db} TO {grantee}{option}",
                g.privilege
            );
            if g.grantor == self.owner {
                sql.push(grant);
            } else {
                sql.push(format!("SET ROLE {}", quote_ident(&g.grantor)));
                sql.push(grant);
                sql.push("RESET ROLE".into());
            }
        }
        sql
    }

    /// What a NULL ACL means for a database: the owner may do everything, `PUBLIC` may
    /// connect and create temporary tables.
    fn default_grants(&self) -> Vec<Grant> {
        let grant = |privilege: &str, grantee: Option<&str>| Grant {
            privilege: privilege.into(),
            grantee: grantee.map(Into::into),
            grantor: self.owner.clone(),
            grantable: false,
        };
        vec![
            grant("TEMPORARY", None),
            grant("CONNECT", None),
            grant("CREATE", Some(&self.owner)),
            grant("TEMPORARY", Some(&self.owner)),
            grant("CONNECT", Some(&self.owner)),
        ]
    }

    /// `grants` with each one after a grant that gives its grantor the grant option for its
    /// privilege (the owner holds them all); any left over (a chain that does not reach the
    /// owner) at the end, where the server will refuse them.
    fn in_grant_order(&self, mut grants: Vec<Grant>) -> Vec<Grant> {
        let mut ordered: Vec<Grant> = Vec::with_capacity(grants.len());
        loop {
            let ready = grants.iter().position(|g| {
                g.grantor == self.owner
                    || ordered.iter().any(|o| {
                        o.grantable
                            && o.privilege == g.privilege
                            && o.grantee.as_deref() == Some(g.grantor.as_str())
                    })
            });
            match ready {
                Some(i) => ordered.push(grants.remove(i)),
                None => break,
            }
        }
        ordered.extend(grants);
        ordered
    }

    /// The statements that give `onto` this connection limit and these settings, or which
    /// setting cannot be written back.
    pub fn setting_statements(&self, onto: &str) -> Result<Vec<String>, String> {
        let db = quote_ident(onto);
        let mut sql = Vec::new();
        if self.connection_limit != -1 {
            sql.push(format!(
                "ALTER DATABASE {db} CONNECTION LIMIT {}",
                self.connection_limit
            ));
        }
        for settings in &self.settings {
            let target = match &settings.role {
                None => format!("ALTER DATABASE {db}"),
                Some(role) => format!("ALTER ROLE {} IN DATABASE {db}", quote_ident(role)),
            };
            for setting in &settings.config {
                sql.push(format!("{target} SET {}", set_clause(setting)?));
            }
        }
        Ok(sql)
    }

    /// Every statement: the ACL (over `current`'s, see [`Carried::grant_statements`]), then
    /// the connection limit and settings.
    pub fn statements(&self, onto: &str, current: Option<&Carried>) -> Result<Vec<String>, String> {
        let mut sql = self.grant_statements(onto, current);
        sql.extend(self.setting_statements(onto)?);
        Ok(sql)
    }
}

/// `server_version_num` of the server `client` is connected to.
async fn server_version(client: &Client, database: &str) -> Result<i32, EngineError> {
    Ok(client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(query_error(
            "read the server version for database",
            database,
        ))?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(privilege: &str, grantee: Option<&str>, grantor: &str, grantable: bool) -> Grant {
        Grant {
            privilege: privilege.into(),
            grantee: grantee.map(Into::into),
            grantor: grantor.into(),
            grantable,
        }
    }

    #[test]
    fn a_default_acl_needs_no_statement_and_an_explicit_one_is_rebuilt_from_nothing() {
        let mut carried = Carried {
            owner: "app owner".into(),
            grants: None,
            connection_limit: -1,
            settings: Vec::new(),
        };
        assert_eq!(carried.statements("s", None).unwrap(), Vec::<String>::new());
        // A grant made by a holder of the grant option comes after the grant that gave it,
        // made as that role.
        carried.grants = Some(vec![
            grant("CONNECT", Some("reader"), "delegate", false),
            grant("CONNECT", None, "app owner", false),
            grant("CONNECT", Some("delegate"), "app owner", true),
        ]);
        let current = Carried {
            grants: Some(vec![grant("CONNECT", Some("gone"), "app owner", false)]),
            ..carried.clone()
        };
        assert_eq!(
            carried.grant_statements("s", Some(&current)),
            [
                r#"REVOKE ALL ON DATABASE "s" FROM PUBLIC CASCADE"#,
                r#"REVOKE ALL ON DATABASE "s" FROM "app owner" CASCADE"#,
                r#"REVOKE ALL ON DATABASE "s" FROM "gone" CASCADE"#,
                r#"GRANT CONNECT ON DATABASE "s" TO PUBLIC"#,
                r#"GRANT CONNECT ON DATABASE "s" TO "delegate" WITH GRANT OPTION"#,
                r#"SET ROLE "delegate""#,
                r#"GRANT CONNECT ON DATABASE "s" TO "reader""#,
                "RESET ROLE",
            ]
        );
        // Everything revoked (an empty ACL) is not the default: it is rebuilt as empty.
        carried.grants = Some(Vec::new());
        assert_eq!(carried.grant_statements("s", None).len(), 2);
        // Back to the default over an explicit ACL: the default's privileges, spelled out.
        carried.grants = None;
        let sql = carried.grant_statements("s", Some(&current));
        assert_eq!(sql.len(), 3 + 5);
        assert!(sql.contains(&r#"GRANT CREATE ON DATABASE "s" TO "app owner""#.to_owned()));
    }

    #[test]
    fn settings_are_written_back_with_their_lists_split_and_the_limit_first() {
        let carried = Carried {
            owner: "o".into(),
            grants: None,
            connection_limit: 40,
            settings: vec![
                Settings {
                    role: None,
                    config: vec![r#"search_path=app, "$user""#.into(), "work_mem=8MB".into()],
                },
                Settings {
                    role: Some("web".into()),
                    config: vec!["statement_timeout=7s".into()],
                },
            ],
        };
        assert_eq!(
            carried.statements("s", None).unwrap(),
            [
                r#"ALTER DATABASE "s" CONNECTION LIMIT 40"#,
                r#"ALTER DATABASE "s" SET search_path TO 'app', '$user'"#,
                r#"ALTER DATABASE "s" SET work_mem TO '8MB'"#,
                r#"ALTER ROLE "web" IN DATABASE "s" SET statement_timeout TO '7s'"#,
            ]
        );
        let broken = Carried {
            settings: vec![Settings {
                role: None,
                config: vec!["no equals sign".into()],
            }],
            ..carried
        };
        assert!(
            broken
                .statements("s", None)
                .unwrap_err()
                .contains("name=value")
        );
    }

    #[test]
    fn the_create_statement_names_the_provider_and_a_tablespace_other_than_the_default() {
        let mut shape = Shape {
            owner: "o".into(),
            encoding: "UTF8".into(),
            collate: "C.UTF-8".into(),
            ctype: "C.UTF-8".into(),
            provider: None,
            tablespace: None,
        };
        let base = r#"CREATE DATABASE "d" OWNER "o" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"#;
        assert_eq!(shape.create_statement("d"), base);
        shape.provider = Some(Provider::Icu {
            locale: "de-DE".into(),
            rules: Some("&a < b".into()),
        });
        shape.tablespace = Some("fast disk".into());
        assert_eq!(
            shape.create_statement("d"),
            format!(
                r#"{base} LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' ICU_RULES '&a < b' TABLESPACE "fast disk""#
            )
        );
        shape.provider = Some(Provider::Builtin {
            locale: "C.UTF-8".into(),
        });
        shape.tablespace = None;
        assert_eq!(
            shape.create_statement("d"),
            format!("{base} LOCALE_PROVIDER builtin BUILTIN_LOCALE 'C.UTF-8'")
        );
    }
}
