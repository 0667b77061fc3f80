//! Strongroom: a backup agent for PostgreSQL into S3 buckets with Object Lock, whose backups
//! are provably complete (a manifest is written only after every object was read back and
//! locked) and pinned by S3 version.
//!
//! # Layout
//!
//! - [`cli`]: command-line definitions and dispatch (the binary in `main.rs` is thin).
//! - [`config`]: the YAML config, its defaults and validation.
//! - [`error`]: the crate error type, its policy and exit codes.
//! - [`telemetry`]: logging setup.
//! - [`layout`]: the runbook's S3 key layout and backup timestamps.
//! - [`engine`]: database engines ([`engine::postgres`]) and child-process streaming
//!   ([`engine::process`]).
//! - [`compress`]: parallel gzip as concatenated members.
//! - [`pipeline`]: dump stream -> gzip -> SHA-256 -> multipart upload, bounded memory.
//! - [`store`]: the object-store trait, its S3 implementation, checksums and the integrity probe.
//! - [`lock`]: the Object Lock policy and its checks.
//! - [`readback`]: proving an uploaded object version complete and locked.
//! - [`locked_write`]: integrity header + retention + read-back for every small object.
//! - [`manifest`]: the manifest that marks a backup complete.
//! - [`signing`]: Ed25519 manifest signatures, key files and `keygen`.
//! - [`catalog`]: finding backups and fetching authenticated manifests.
//! - [`unpack`]: object -> SHA-256 -> gunzip -> sink in one pass (restore, deep verify).
//! - [`backup`]: one backup, end to end.
//! - [`restore`]: verify-before-commit restore, validation and its report.
//! - [`list`]: listing backups in the bucket.
//! - [`verify`]: presence, size, retention (and with --deep, content) of backups.
//! - [`validate`]: row counts, SQL and HTTP checks after a restore.
//! - [`audit`]: the hash-chained audit trail and its verification.
//! - [`daemon`]: `strongroom run`: schedulers, readiness checks, config reload, shutdown.
//! - [`signals`]: SIGTERM and SIGINT for the commands that stop cleanly on them.
//! - [`schedule`], [`clock`]: cron in UTC, retry backoff; wall time tests can pause.
//! - [`state`], [`metrics`], [`http`]: what the agent knows, its Prometheus registry, and the
//!   endpoints that show them; [`status_client`] reads them back (`strongroom status`).

#![deny(unsafe_code)]

pub mod audit;
pub mod backup;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod compress;
pub mod config;
pub mod daemon;
pub mod drill;
pub mod engine;
pub mod error;
pub mod http;
pub mod inspect;
pub mod layout;
pub mod list;
pub mod lock;
pub mod locked_write;
pub mod manifest;
pub mod metrics;
pub mod pipeline;
pub mod readback;
pub mod restore;
pub mod schedule;
pub mod signals;
pub mod signing;
pub mod state;
pub mod status_client;
pub mod store;
pub mod telemetry;
pub mod unpack;
pub mod validate;
pub mod verify;
