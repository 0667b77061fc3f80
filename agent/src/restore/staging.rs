//! The staging database of a parallel restore: created like the target, held for as long as
//! its restore runs ([`abandoned::Held`]), put in the target's place at the end or dropped
//! after a failure.
//!
//! `<target>_restoring_<t>_<hex>` is created like the target (owner, encoding, collation,
//! locale provider, tablespace) and with its grants, so it is no more open than the target
//! while it loads; the target's settings and connection limit are tried on it then, in a
//! transaction rolled back, and a restore role that may not write them back loads into the
//! target in one session instead ([`Created::CannotCarry`]). When everything loaded, one
//! transaction gives the staging database the target's grants, settings, connection limit and
//! comment as they are then ([`postgres::Carried`]), renames the target aside and the staging
//! database into its name, and the old (empty) target is dropped. A target that does not exist
//! yet (`--create`) is not created first: the staging database is created as `CREATE
//! DATABASE` would have created the target, and takes its name at the end (should someone
//! have created it meanwhile, it is replaced like a target that existed), so a failed restore
//! leaves no empty target behind. A restore stopped in the process (a
//! drill's SIGTERM drops its future) drops it in the background ([`drop_stopped`] waits for
//! that). A SIGKILL of the agent leaves it behind: every parallel restore first drops those
//! of its target that no restore holds ([`sweep_abandoned`]), and its report says so.

use std::sync::Mutex;

use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;

use super::abandoned;
use crate::engine::postgres::{self, ConnParams, derived_name, name_suffix, quote_ident};
use crate::error::{Error, Result};

/// Drops the staging databases that interrupted restores into `target` left behind
/// ([`abandoned::sweep`]); returns what it did and could not do, for the report.
pub async fn sweep_abandoned(target: &ConnParams) -> Vec<String> {
    abandoned::sweep(
        &target.with_database("postgres"),
        &postgres::staging_prefix(&target.database),
        "the staging database of an earlier restore",
    )
    .await
    .said
}

/// A staging database for one restore.
pub struct Staging {
    pub name: String,
    maintenance: ConnParams,
    /// The lock on the name, until the staging database is dropped or took the target's
    /// place; taken out then, so that [`Drop`] finds nothing to do.
    held: Option<abandoned::Held>,
    /// The target did not exist when the restore started: nothing is renamed aside.
    target_absent: bool,
}

/// The drops of staging databases whose restore was stopped ([`Drop`]), until awaited: each
/// says what went wrong, if anything.
static STOPPED: Mutex<Vec<JoinHandle<Option<String>>>> = Mutex::new(Vec::new());

/// Waits until the staging databases of restores stopped in this process are dropped (a
/// drill stopped by SIGTERM calls it before it cleans up and exits); returns what failed.
pub async fn drop_stopped() -> Vec<String> {
    let tasks = std::mem::take(&mut *STOPPED.lock().unwrap_or_else(|p| p.into_inner()));
    let mut failed = Vec::new();
    for task in tasks {
        match task.await {
            Ok(None) => {}
            Ok(Some(problem)) => failed.push(problem),
            Err(e) => failed.push(format!("dropping a staging database failed: {e}")),
        }
    }
    failed
}

/// Drops the staging database `name`; says why it could not.
async fn drop_database(maintenance: &ConnParams, name: &str) -> Option<String> {
    match postgres::drop_database(maintenance, name).await {
        Ok(()) => {
            tracing::info!(staging = %name, "staging database dropped");
            None
        }
        Err(e) => {
            let problem =
                format!("the staging database {name} could not be dropped ({e}); drop it by hand");
            tracing::error!("{problem}");
            Some(problem)
        }
    }
}

impl Drop for Staging {
    /// The restore was stopped (its future dropped) before it discarded or placed its staging
    /// database: the database is dropped in the background, the lock held until it is gone.
    fn drop(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(staging = %self.name, "the restore was stopped with no runtime left \
                to drop its staging database; the next parallel restore into its target drops it");
            return;
        };
        let (maintenance, name) = (self.maintenance.clone(), self.name.clone());
        tracing::warn!(staging = %name, "the restore was stopped; dropping its staging database");
        let task = runtime.spawn(async move {
            let problem = drop_database(&maintenance, &name).await;
            drop(held);
            problem
        });
        STOPPED.lock().unwrap_or_else(|p| p.into_inner()).push(task);
    }
}

/// What [`Staging::create`] made.
pub enum Created {
    Ready(Box<Staging>),
    /// The restore role may not give the staging database what the target carries (the
    /// reason): it was dropped, and the restore loads into the target in one session, which
    /// keeps the target's grants and settings as they are.
    CannotCarry(String),
}

impl Staging {
    /// Creates `<target>_restoring_<t>_<hex>` like `target`, with its grants, or, if
    /// `target_absent`, as `CREATE DATABASE` would create it.
    pub async fn create(target: &ConnParams, target_absent: bool) -> Result<Created> {
        let maintenance = target.with_database("postgres");
        let name = derived_name(
            &target.database,
            &name_suffix(OffsetDateTime::now_utc(), "restoring"),
        );
        if !target_absent {
            let client = postgres::connect(&maintenance).await?;
            if let Some(why) = postgres::tablespace_refused(&client, &target.database).await? {
                return Ok(Created::CannotCarry(why));
            }
        }
        // Held before the database exists, so no sweep sees it unheld.
        let held = abandoned::hold(&maintenance, &name).await?;
        let like = if target_absent {
            postgres::Like::NewDatabase
        } else {
            postgres::Like::Database(&target.database)
        };
        postgres::create_database_like(&maintenance, &name, like).await?;
        tracing::info!(staging = %name, target = %target.database, "staging database created");
        // From here a stopped restore drops it ([`Drop`]).
        let staging = Staging {
            name,
            maintenance,
            held: Some(held),
            target_absent,
        };
        abandoned::mark_in_use(&staging.maintenance, &staging.name).await;
        if !target_absent {
            match staging.carry_from(&target.database).await {
                Ok(None) => {}
                Ok(Some(why)) => {
                    let why = match staging.discard().await {
                        None => why,
                        Some(problem) => format!("{why}; {problem}"),
                    };
                    return Ok(Created::CannotCarry(why));
                }
                Err(e) => {
                    let _ = staging.discard().await; // logged
                    return Err(e);
                }
            }
        }
        Ok(Created::Ready(Box::new(staging)))
    }

    /// Gives the staging database `target`'s grants, and tries its settings and connection
    /// limit in a transaction rolled back (they are set at the swap, so the load does not run
    /// under them): what the restore role may not write back is found before anything loads.
    /// `Some(why)` when the server refused a statement for want of a privilege or as invalid
    /// (what `why` names, with the target's name in it); any other failure is an error.
    async fn carry_from(&self, target: &str) -> Result<Option<String>> {
        let client = postgres::connect(&self.maintenance).await?;
        let carried = postgres::Carried::read(&client, target).await?;
        let settings = match carried.setting_statements(&self.name) {
            Ok(settings) => settings,
            Err(why) => return Ok(Some(why)),
        };
        let mut steps = carried.grant_statements(&self.name, None);
        if !settings.is_empty() {
            steps.push("SAVEPOINT strongroom_settings".into());
            steps.extend(settings);
            steps.push("ROLLBACK TO strongroom_settings".into());
        }
        match postgres::in_transaction(&client, &steps).await {
            Ok(()) => Ok(None),
            Err(refused) => {
                // Shown against the target: the staging database is dropped.
                let why =
                    (refused.to_string()).replace(&quote_ident(&self.name), &quote_ident(target));
                // 42: insufficient privilege and the like; 0A: not supported; 22: a value
                // the server does not take.
                let class = refused.error.code().map(|c| &c.code()[..2]);
                match class {
                    Some("42" | "0A" | "22") => Ok(Some(why)),
                    _ => Err(crate::engine::EngineError::Query {
                        what: "give the staging database the grants of",
                        database: target.to_owned(),
                        detail: why,
                    }
                    .into()),
                }
            }
        }
    }

    /// Renames the staging database into the absent `target`'s name, without its comment;
    /// `false` if a database of that name was created meanwhile.
    async fn take_name(&self, target: &str) -> Result<bool> {
        let client = postgres::connect(&self.maintenance).await?;
        let rename = format!(
            "BEGIN; ALTER DATABASE {s} RENAME TO {t}; COMMENT ON DATABASE {t} IS NULL; COMMIT",
            t = quote_ident(target),
            s = quote_ident(&self.name),
        );
        match client.batch_execute(&rename).await {
            Ok(()) => Ok(true),
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(false),
            Err(e) => Err(swap_failed(&e, None, target, &self.name)),
        }
    }

    pub fn params(&self) -> ConnParams {
        self.maintenance.with_database(&self.name)
    }

    /// Drops the staging database (after a failure); says why it could not (also logged).
    pub async fn discard(mut self) -> Option<String> {
        let problem = drop_database(&self.maintenance, &self.name).await;
        self.held = None;
        problem
    }

    /// Puts the staging database in `target`'s place in one transaction, with the target's
    /// grants, settings, connection limit and comment (so its own comment, marking it in use,
    /// goes; a scratch drill's database keeps its mark), then drops the old target if it is
    /// still as `CREATE DATABASE` left it (else keeps it, renamed, and says so); an absent
    /// target's name it takes, without comment.
    /// Fails, and drops the staging database, if its lock was lost or a rename failed.
    pub async fn replace(mut self, target: &str) -> Result<Vec<String>> {
        let lost = match &self.held {
            Some(held) => held.check().await.err(),
            None => None,
        };
        if let Some(e) = lost {
            let _ = self.discard().await; // logged
            return Err(e.into());
        }
        if self.target_absent {
            match self.take_name(target).await {
                Ok(true) => {
                    self.held = None;
                    tracing::info!(target, "restored copy renamed into place");
                    return Ok(Vec::new());
                }
                // Someone created it while the restore ran: it is replaced like a target that
                // existed (renamed aside, and kept if it holds anything).
                Ok(false) => tracing::warn!(
                    target,
                    "the target was created while the restore ran; replacing it"
                ),
                Err(e) => {
                    let _ = self.discard().await; // logged
                    return Err(e);
                }
            }
        }
        let aside = derived_name(target, &name_suffix(OffsetDateTime::now_utc(), "replaced"));
        let swapped = async {
            let client = postgres::connect(&self.maintenance).await?;
            // The server quotes the comment (quote_nullable: NULL when there is none).
            let comment: String = client
                .query_one(
                    "SELECT quote_nullable(shobj_description(oid, 'pg_database')) \
                     FROM pg_database WHERE datname = $1",
                    &[&target],
                )
                .await
                .map_err(postgres::query_error("read the comment of", target))?
                .get(0);
            let carried = postgres::Carried::read(&client, target).await?;
            let current = postgres::Carried::read(&client, &self.name).await?;
            let mut statements =
                carried
                    .statements(&self.name, Some(&current))
                    .map_err(|detail| Error::SwapFailed {
                        target: target.to_owned(),
                        staging: self.name.clone(),
                        detail,
                    })?;
            let (t, a, s) = (
                quote_ident(target),
                quote_ident(&aside),
                quote_ident(&self.name),
            );
            statements.extend([
                format!("ALTER DATABASE {t} RENAME TO {a}"),
                format!("ALTER DATABASE {s} RENAME TO {t}"),
                format!("COMMENT ON DATABASE {t} IS {comment}"),
            ]);
            // One transaction, a statement at a time, so that a refusal names its statement.
            (postgres::in_transaction(&client, &statements).await).map_err(|refused| {
                swap_failed(&refused.error, Some(&refused.statement), target, &self.name)
            })
        };
        if let Err(e) = swapped.await {
            let _ = self.discard().await; // logged
            return Err(e);
        }
        self.held = None;
        tracing::info!(target, aside = %aside, "restored copy renamed into place");
        let old = self.maintenance.with_database(&aside);
        let held = match postgres::connect(&old).await {
            Ok(client) => postgres::user_objects(&client, &aside)
                .await
                .map_err(Error::from),
            Err(e) => Err(e.into()),
        };
        let mut warnings = Vec::new();
        match held {
            Ok(objects) if objects.is_empty() => {
                if let Err(e) = postgres::drop_database(&self.maintenance, &aside).await {
                    warnings.push(format!(
                        "the empty database the restore replaced, {aside}, could not be \
                         dropped ({e}); drop it by hand"
                    ));
                }
            }
            Ok(objects) => warnings.push(format!(
                "the database the restore replaced holds {} (made before the restore, or \
                 while it ran); it was kept as {aside}. Look at it, then drop it",
                objects.join(", ")
            )),
            Err(e) => warnings.push(format!(
                "the database the restore replaced was kept as {aside} ({e}); drop it by hand \
                 once it is known to be empty"
            )),
        }
        Ok(warnings)
    }
}

/// [`Error::SwapFailed`] for a renaming transaction that failed (at `statement`, if named).
fn swap_failed(
    e: &tokio_postgres::Error,
    statement: Option<&str>,
    target: &str,
    staging: &str,
) -> Error {
    let message = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_owned());
    Error::SwapFailed {
        target: target.to_owned(),
        staging: staging.to_owned(),
        detail: match statement {
            Some(statement) => format!("{statement}: {message}"),
            None => message,
        },
    }
}
