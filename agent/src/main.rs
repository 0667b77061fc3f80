//! The `strongroom` binary: parse the command line, load and validate the config (exit 64 on a
//! bad one, before anything else happens), start logging, run the command in the library.

use std::process::ExitCode;

use clap::Parser as _;
use strongroom::cli::Cli;
use strongroom::config::Config;
use strongroom::error::{EXIT_FAILURE, EXIT_USAGE};

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Large allocations (the 8 MiB upload parts) always from mmap, returned on free.
///
/// glibc raises its mmap threshold to the size of each mmapped block freed (its manual,
/// "Malloc Tunable Parameters"), so after the first upload part was freed, later parts came
/// from the arenas of whichever threads ran, and the backup's peak RSS moved by up to 8 MiB from
/// run to run of the same dump (49 to 57 MiB, so the 4x/1x ratio read 0.86 in one bench run
/// and 1.14 in the next). A fixed threshold turns the adjustment off. 2 MiB keeps the 1 MiB
/// compression blocks in the arenas, reused: at 256 KiB every block was mapped, faulted in and
/// unmapped again, and the zstd backup spent 0.4 s more in the kernel.
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it runs before any other thread exists.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 2 << 20);
    }
}

fn main() -> ExitCode {
    fix_mmap_threshold();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return exit(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    if !cli.command.needs_config() {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("strongroom: cannot start the async runtime: {e}");
                return exit(EXIT_FAILURE);
            }
        };
        return match runtime.block_on(strongroom::cli::run_without_config(cli.command)) {
            Ok(()) => exit(0),
            Err(e) => {
                eprintln!("strongroom: error: {e}");
                exit(e.exit_code())
            }
        };
    }
    let Some(path) = cli.config.clone() else {
        eprintln!("strongroom: --config FILE (or STRONGROOM_CONFIG) is required for this command");
        return exit(EXIT_USAGE);
    };
    let path = path.as_path();
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("strongroom: {e}");
            return exit(EXIT_USAGE);
        }
    };
    let json_logs = strongroom::telemetry::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("strongroom: cannot start the async runtime: {e}");
            return exit(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(strongroom::cli::run(cli.command, config, path));
    // A blocking reader stuck on a wedged child must not keep the process from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => exit(0),
        Err(e) => {
            if json_logs {
                tracing::error!(error = %e, "command failed");
            }
            eprintln!("strongroom: error: {e}");
            exit(e.exit_code())
        }
    }
}
