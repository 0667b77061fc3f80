//! The command line: argument definitions and dispatch into the library.
//!
//! `main.rs` parses, loads the config and sets up logging; everything a command does is here or
//! below, so it can be called from tests without a process.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::backup;
use crate::config::Config;
use crate::error::Result;
use crate::layout::Engine;
use crate::list;
use crate::pipeline::Progress;
use crate::store::s3::S3Store;

#[derive(Debug, Parser)]
#[command(
    name = "strongroom",
    version,
    about = "Backups of PostgreSQL into Object-Lock S3, provably complete"
)]
pub struct Cli {
    /// The YAML config file.
    #[arg(long, global = true, env = "STRONGROOM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one backup now and exit.
    Backup {
        #[arg(long, value_enum)]
        engine: EngineArg,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the backups of this release in the bucket.
    List {
        #[arg(long, value_enum)]
        engine: Option<EngineArg>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EngineArg {
    Postgresql,
}

impl From<EngineArg> for Engine {
    fn from(e: EngineArg) -> Engine {
        match e {
            EngineArg::Postgresql => Engine::Postgresql,
        }
    }
}

/// Runs a command with a loaded, valid config.
pub async fn run(command: Command, config: Config) -> Result<()> {
    let store = Arc::new(S3Store::connect(&config.s3).await);
    match command {
        Command::Backup { engine, json } => {
            let report = match Engine::from(engine) {
                Engine::Postgresql => {
                    backup::backup_postgres(&config, store, None, &Progress::default()).await?
                }
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serialisable")
                );
            } else {
                println!(
                    "backup complete: {} ({}, {} uncompressed, version {})\nmanifest: {}",
                    report.key,
                    list::human_size(report.size_bytes),
                    list::human_size(report.uncompressed_size_bytes),
                    report.version_id.as_deref().unwrap_or("-"),
                    report.manifest_key
                );
            }
        }
        Command::List { engine, json } => {
            let engines = match engine {
                Some(e) => vec![Engine::from(e)],
                None => vec![Engine::Postgresql],
            };
            let mut entries = Vec::new();
            for engine in engines {
                entries.extend(list::list_backups(&*store, &config, engine).await?);
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&entries).expect("serialisable")
                );
            } else {
                print!("{}", list::render_table(&entries));
            }
        }
    }
    Ok(())
}
