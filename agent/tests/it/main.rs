//! Integration tests, one binary, a module per area, against real servers (see `harness`).

mod cli;
mod clickhouse;
mod daemon;
mod harness;
mod postgres_backup;
mod postgres_restore;
mod restore_cli;
mod restore_trust;
mod store_conformance;
mod verify_trust;
