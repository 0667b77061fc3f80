//! Integration tests, one binary, a module per area, against real servers (see `harness`).

mod cli;
mod clickhouse;
mod daemon;
mod drills;
mod fault_proxy;
mod harness;
mod listing;
mod parallel_restore;
mod postgres_backup;
mod postgres_restore;
mod postgres_tls;
mod preflight;
mod restore_cli;
mod restore_trust;
mod retries_and_races;
mod store_conformance;
mod verify_trust;
