//! `restore --with-globals`: the backup's roles, memberships and settings, read by the version
//! the manifest pins, checked against its SHA-256 and size, and applied before the dump loads:
//! missing roles are created, existing ones are never altered
//! ([`crate::engine::postgres::globals`]).

use crate::catalog::FetchedManifest;
use crate::engine::postgres::globals::{self, Applied, Fidelity, GLOBALS_LIMIT, Globals};
use crate::engine::postgres::{self, ConnParams};
use crate::error::{Error, Result};
use crate::manifest::PostgresDetails;
use crate::store::{ObjectStore, read_small};

/// Creates what the target server lacks. `Ok(None)` when the backup has no globals (taken by
/// an agent from before they were backed up): the report warns.
pub async fn apply<S: ObjectStore>(
    store: &S,
    manifest: &FetchedManifest,
    details: &PostgresDetails,
    params: &ConnParams,
    database_created: bool,
    fidelity: Fidelity,
) -> Result<Option<Applied>> {
    let Some(key) = &details.globals_key else {
        return Ok(None);
    };
    let entry = manifest.object(key)?;
    let version = entry.version_id.as_deref();
    // Never more than the manifest says (a larger object fails its size check anyway).
    let limit = entry.size_bytes.min(GLOBALS_LIMIT);
    let bytes = read_small(store, key, version, limit).await?;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
    super::check_pinned(store, key, entry, &digest, bytes.len() as u64)?;
    let parsed: Globals = serde_json::from_slice(&bytes).map_err(|e| Error::ManifestMismatch {
        manifest: manifest.key.clone(),
        problem: format!("its globals object {key} is not valid ({e})"),
    })?;
    let client = postgres::connect(params).await?;
    let applied = globals::apply(
        &client,
        &parsed,
        &params.database,
        database_created,
        fidelity,
    )
    .await?;
    tracing::info!(created = ?applied.created_roles, existing = applied.existing_roles,
        memberships = applied.memberships_granted, settings = applied.settings_applied,
        "globals applied");
    Ok(Some(applied))
}
