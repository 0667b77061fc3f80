//! The crate's error type and the process exit codes derived from it.
//!
//! Policy:
//! - Library modules return typed errors (`thiserror`), one enum per module where callers can
//!   branch on the cause (`ConfigError`, `StoreError`, `EngineError`, ...). This module wraps them
//!   into [`Error`], which is what commands return. `main.rs` prints it and exits with its code.
//! - Every message a user can see names what failed, on what (S3 key, table, file, config key),
//!   and what to do about it. There is no `Error(String)` catch-all: a new failure gets a variant.
//! - The exit code tells scripts and Kubernetes what kind of failure it was: 64 (EX_USAGE) for a
//!   bad command line or config, detected before anything else happens; 1 for a failed operation.

use crate::config::ConfigError;
use crate::engine::EngineError;
use crate::layout::SnapshotKeyError;
use crate::manifest::ManifestError;
use crate::signing::SigningError;
use crate::store::StoreError;

/// Exit code for a bad command line or configuration (sysexits `EX_USAGE`).
pub const EXIT_USAGE: i32 = 64;
/// Exit code for an operation that was attempted and failed.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code for a restore that committed and passed validation, but whose report could not
/// be stored in the bucket (it was printed).
pub const EXIT_REPORT_NOT_STORED: i32 = 3;
/// Exit code for a backup that was skipped on purpose (the server is a standby); nothing was
/// written.
pub const EXIT_SKIPPED: i32 = 4;
/// `restore --run-id`: this run already restored (its marker is in the bucket); nothing done.
pub const EXIT_ALREADY_RESTORED: i32 = 5;

/// What a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    SnapshotKey(#[from] SnapshotKeyError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Signing(#[from] SigningError),
    /// The backup has no manifest: it never completed.
    #[error(
        "{key} does not exist: that backup is incomplete (or the key is wrong); never restore \
         from it. `strongroom list` shows complete backups"
    )]
    NoManifest { key: String },
    /// No complete backup to pick for `--latest`.
    #[error("no complete backup (with a manifest) under {folder}")]
    NoBackup { folder: String },
    /// A delete marker hides the key; Object Lock kept its versions.
    #[error(
        "{key} is hidden by a delete marker (versions: {versions}): someone with write access \
         deleted it without a version id. Object Lock kept the data; find out who did it, and \
         restore another backup or have an operator remove the delete marker"
    )]
    Hidden { key: String, versions: String },
    /// A manifest key holds different versions; the agent writes each manifest once.
    #[error(
        "{key} has {versions} versions that are not the same bytes, but the agent writes each \
         manifest exactly once: it may have been tampered with. Investigate with `aws s3api \
         list-object-versions` before trusting this backup"
    )]
    ManifestRewritten { key: String, versions: usize },
    /// The restore target's name cannot be a PostgreSQL database name.
    #[error("{database:?} is not a usable database name: use 1-63 bytes (--database)")]
    BadTarget { database: String },
    /// The restore target does not exist and `--create` was not given.
    #[error("database {database} does not exist; create it or pass --create")]
    TargetMissing { database: String },
    /// The restore target has tables and `--force` was not given; nothing was touched.
    #[error(
        "database {database} is not empty ({count} tables, e.g. {sample}); nothing was touched. \
         Restore into an empty database, or pass --force to load into this one (conflicts roll \
         the whole restore back)"
    )]
    TargetNotEmpty {
        database: String,
        count: usize,
        sample: String,
    },
    /// The bytes read do not match the manifest; the load was rolled back.
    #[error(
        "{key} version {version} does not match its manifest: SHA-256 {actual} ({actual_size} \
         bytes) was read, the manifest says {expected} ({expected_size} bytes). psql was \
         stopped before the agent's COMMIT; the target database is unchanged"
    )]
    HashMismatch {
        key: String,
        version: String,
        expected: String,
        actual: String,
        expected_size: u64,
        actual_size: u64,
    },
    /// The dump holds something other than pg_dump's SQL; psql was stopped before that line.
    #[error(
        "restore of {key} version {version} refused: {refusal}. psql never saw that line and \
         nothing was committed: the target database is unchanged. pg_dump writes no such \
         line, so the backup may have been tampered with: restore another backup (strongroom \
         list) and find out who wrote to the bucket"
    )]
    DumpRefused {
        key: String,
        version: String,
        refusal: String,
    },
    /// Streaming the object failed; for a restore, psql was stopped before committing.
    #[error(transparent)]
    Unpack(#[from] crate::unpack::UnpackError),
    /// `verify` found problems.
    #[error("{failed} of {total} backups failed verification (see the lines above)")]
    VerifyFailed { failed: usize, total: usize },
    /// The restore loaded and committed, but validation checks failed.
    #[error(
        "the restore committed but these checks failed: {failed}. The full report is on stdout \
         and in {report_key}"
    )]
    ValidationFailed { failed: String, report_key: String },
    /// The restore committed and passed validation; storing its report failed.
    #[error(
        "restored and validated into {database}; report not stored: {problem}. The report is \
         on stdout: keep it, and give the restore's role s3:PutObject on <prefix>/reports/"
    )]
    ReportNotStored { database: String, problem: String },
    /// `audit verify` found problems.
    #[error("the audit chain {folder} has {problems} problem(s) (listed above)")]
    AuditBroken { folder: String, problems: usize },
    /// The verified, loaded staging copy could not be renamed into the target's place.
    #[error(
        "the restored copy {staging} could not take the place of database {target}: \
         {detail}. It was dropped and {target} is unchanged. End the sessions connected to \
         {target} (pg_stat_activity), or, if the server refused one of the grants or settings \
         of {target} that the restore copies (the statement is named), run the restore as a role \
         that may make it; then run the restore again"
    )]
    SwapFailed {
        target: String,
        staging: String,
        detail: String,
    },
    /// The restored copy does not hold the rows the manifest counts: it was not committed.
    #[error(
        "the restored copy of {snapshot} does not hold the rows its manifest counts \
         ({differences}); nothing was committed{staging}: {database} is as it was. The dump \
         matched its signed manifest's SHA-256, so the backup's counts and its dump disagree: \
         keep this backup, load it by hand into a scratch database with the runbook's \
         `gunzip | psql` to compare, and restore an older backup if this one is short of rows"
    )]
    RowCountsDiffer {
        snapshot: String,
        database: String,
        differences: String,
        staging: String,
    },
    /// The restored copy could not be counted, so it was not committed.
    #[error(
        "the restored copy for {database} could not be counted against its manifest \
         ({source}); nothing was committed{staging}: {database} is as it was. Fix what the \
         error names (the restore role must be able to read every table: own it, or be a \
         superuser; a table with FORCE ROW LEVEL SECURITY needs a role with BYPASSRLS) and run \
         the restore again"
    )]
    CountFailed {
        database: String,
        source: Box<EngineError>,
        staging: String,
    },
    /// SIGTERM or SIGINT stopped a PostgreSQL restore before it committed any data.
    #[error(
        "the restore into {database} was stopped by a signal (SIGTERM or SIGINT) before it \
         committed any data{staging}: nothing was loaded into {database}; run the restore again"
    )]
    RestoreStopped { database: String, staging: String },
    /// The manifest does not describe what it should.
    #[error("manifest {manifest} does not fit: {problem}")]
    ManifestMismatch { manifest: String, problem: String },
    /// The upload was read back and does not match what was sent, or is not locked as the
    /// policy requires. The backup is not marked complete.
    #[error("verification of s3 object {key} failed: {problem}")]
    Verification { key: String, problem: String },
    /// A backup object already exists under the key this run would write; a second writer in the
    /// same second (or a clock that went backwards) would otherwise add a version to it.
    #[error(
        "s3 object {key} already holds other content or a delete marker (versions: \
         {versions}); this run stops there and did not complete (on a server that ignores \
         If-None-Match its own version may sit beside the others; readers keep the first). \
         Another backup of this release ran in the same second (run one writer per database, \
         and wait before running again), or someone else writes to the bucket"
    )]
    KeyTaken { key: String, versions: String },
    /// The server is a standby and `postgresql.backup_from` is `primary`.
    #[error(
        "backup skipped: {target} is a standby (pg_is_in_recovery() is true) and \
         postgresql.backup_from is primary, so the primary's agent backs up; nothing was \
         written. Set postgresql.backup_from: any to back up from standbys"
    )]
    Standby { target: String },
    /// Another backup of the same release wrote its dump under the same key first.
    #[error(
        "another backup of this release wrote {key} first (versions: {first}, then this run's \
         {ours}): this run stops without a checksum file, signature or manifest, so only the \
         other backup is complete. Run one writer per database (postgresql.backup_from: \
         primary, one agent per shard) and do not start backups by hand at scheduled times"
    )]
    LostRace {
        key: String,
        ours: String,
        first: String,
    },
    /// The bucket cannot keep backups immutable and `s3.object_lock.required` is true.
    #[error(
        "bucket {bucket} {detail}: backups there could be deleted or overwritten. Use a bucket \
         created with Object Lock (infra/terraform/s3_worm_bucket; it can only be enabled when \
         the bucket is created), or set s3.object_lock.required: false for development only"
    )]
    BucketNotProtected {
        bucket: String,
        detail: &'static str,
    },
    /// Reading the dump tool's output failed mid-stream.
    #[error("reading the dump for {key} failed: {source}")]
    SourceRead { key: String, source: std::io::Error },
    /// The dump needs more than S3's maximum number of parts.
    #[error(
        "the dump for {key} needs more than {parts} parts: it is larger than \
         s3.max_dump_size_gib allows. Raise s3.max_dump_size_gib (parts then grow larger, and so \
         does memory: see README, Memory) or s3.part_size_mib"
    )]
    TooLarge { key: String, parts: i32 },
    /// A worker task panicked or was cancelled; a bug, reported with what it was doing.
    #[error("internal error: {task} task failed: {detail}; please report this")]
    TaskFailed { task: &'static str, detail: String },
    /// The run was cancelled (shutdown grace period exceeded); its upload was aborted.
    #[error(
        "the backup into {key} was cancelled (the shutdown grace period ran out); its upload \
         was aborted and no manifest was written"
    )]
    Cancelled { key: String },
    /// pg_dump or a row count waited for a table lock longer than allowed.
    #[error(
        "the backup waited longer than postgresql.lock_wait_timeout_seconds ({seconds} s) for a \
         lock on {table}: another session holds a conflicting lock (a migration's ACCESS \
         EXCLUSIVE? see pg_locks). Nothing was written; the run is retried. ({detail})"
    )]
    LockWait {
        table: String,
        seconds: u64,
        detail: String,
    },
    /// The agent stopped waiting for a ClickHouse BACKUP, and asked the server to stop it.
    #[error("{cause}. Asked to stop the BACKUP: {stopped}; it gets no manifest either way")]
    ClickHouseGivenUp { cause: String, stopped: String },
    /// The run took longer than its configured deadline and was cancelled.
    #[error(
        "the backup into {key} ran longer than {setting} ({seconds} s) and was cancelled: its \
         upload was aborted and no manifest was written. Something held it up (a lock: see \
         pg_locks; a stalled dump or server); raise {setting} if it really needs longer"
    )]
    TimedOut {
        key: String,
        setting: &'static str,
        seconds: u64,
    },
    /// `strongroom run` cannot bind its address.
    #[error("cannot listen on {addr}: {source}; set daemon.listen to a free host:port")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    /// `strongroom status` could not read the agent.
    #[error(
        "cannot read {url}: {detail}. Is the agent running, and the port forwarded (kubectl \
         port-forward pod/<pod> 9550)?"
    )]
    StatusUnreachable { url: String, detail: String },
    /// `strongroom status`: an enabled engine has no recent success.
    #[error("no successful backup within {max_age} for: {engines}")]
    Stale { engines: String, max_age: String },
    /// `strongroom preflight`: a check failed.
    #[error(
        "{target} is not ready for backups: failed checks {failed} (each line above says what \
         to change)"
    )]
    PreflightFailed { target: String, failed: String },
    /// `restore --run-id`: a restore of this snapshot into this target with this run id has
    /// already passed (or a marker claims so).
    #[error(
        "not restoring {snapshot} into {target} again: run id {run_id} already has a marker \
         ({marker}): {earlier}. Nothing was changed. To restore it again, use a new run id \
         (restore.runId) or pass --rerun"
    )]
    AlreadyRestored {
        snapshot: String,
        target: String,
        run_id: String,
        marker: String,
        earlier: String,
    },
    /// The run marker could not be read or written.
    #[error("run marker {key}: {problem}")]
    RunMarker { key: String, problem: String },
    /// `strongroom check-args`: the arguments do not parse.
    #[error("the arguments do not parse as a strongroom command line: {problem}")]
    BadArguments { problem: String },
    /// No public key is configured, and unsigned restores were not allowed.
    #[error(
        "restore refused: no signing.public_key_file is configured, so nothing tells a backup \
         the agent wrote from one planted by whoever holds the backup writer's S3 role. Set \
         signing.public_key_file to the public key from `strongroom keygen` (the backups must \
         be signed with its private key), or, to restore an unsigned backup knowingly, pass \
         --allow-unsigned or set restore.allow_unsigned: true"
    )]
    UnsignedRefused,
    /// The engine named on the command line has no section in the config file.
    #[error(
        "engine {engine} is not configured: add a `{engine}:` section to the config file \
         (see agent/examples/)"
    )]
    EngineNotConfigured { engine: &'static str },
    /// ClickHouse target tables hold data and `--force` was not given; nothing was touched.
    #[error(
        "ClickHouse tables already hold data: {tables}; nothing was restored. Drop or empty \
         them, or pass --force to let ClickHouse add the backup's parts to them \
         (allow_non_empty_tables: rows are added, not replaced)"
    )]
    TablesNotEmpty { tables: String },
    /// The backup's objects do not match its manifest; ClickHouse was not asked to restore.
    #[error(
        "restore of {snapshot} refused before ClickHouse was asked to read it: {problems}. \
         ClickHouse reads the newest version of each object and does not verify checksums, so \
         it would restore other bytes than were backed up. Restore another backup (strongroom \
         list), and find out who wrote to the bucket"
    )]
    RestoreRefused { snapshot: String, problems: String },
    /// An option that does not apply to the engine.
    #[error(
        "{option} does not apply to {engine} restores: leave it out ({engine} restores the \
         databases and tables the backup recorded, under their own names)"
    )]
    OptionNotForEngine {
        option: &'static str,
        engine: &'static str,
    },
    /// A drill that may not run as asked.
    #[error("drill refused: {problem}")]
    DrillRefused { problem: String },
    /// The drill passed; storing its report failed.
    #[error(
        "the drill passed, but its report was not stored: {problem}. The report is on stdout: \
         keep it, and give this role s3:PutObject on <prefix>/drills/"
    )]
    DrillNotStored { problem: String },
    /// The drill ran and failed: its goal, a check, or the restore itself.
    #[error("{engine} drill FAIL: {failures}. The report is above and in {report}")]
    DrillFailed {
        engine: crate::layout::Engine,
        failures: String,
        report: String,
    },
}

impl Error {
    /// This error with what became of a restore's staging database (`note`, e.g. ` (its
    /// staging database x was dropped)`), where its message has room for it.
    pub(crate) fn with_staging(mut self, note: String) -> Error {
        if let Error::RestoreStopped { staging, .. }
        | Error::RowCountsDiffer { staging, .. }
        | Error::CountFailed { staging, .. } = &mut self
        {
            *staging = note;
        }
        self
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_)
            | Error::EngineNotConfigured { .. }
            | Error::SnapshotKey(_)
            | Error::BadTarget { .. }
            | Error::OptionNotForEngine { .. }
            | Error::UnsignedRefused
            | Error::DrillRefused { .. }
            | Error::BadArguments { .. }
            | Error::Signing(SigningError::KeyFile { .. }) => EXIT_USAGE,
            Error::ReportNotStored { .. } | Error::DrillNotStored { .. } => EXIT_REPORT_NOT_STORED,
            Error::Standby { .. } => EXIT_SKIPPED,
            Error::AlreadyRestored { .. } => EXIT_ALREADY_RESTORED,
            _ => EXIT_FAILURE,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
