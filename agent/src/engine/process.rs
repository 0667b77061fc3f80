//! A child process as one end of a byte stream: a source (we read its stdout: pg_dump) or a
//! sink (we write its stdin: psql). Its stderr is kept as a bounded tail for the error message,
//! and success is decided only when it exits 0.
//!
//! The data pipe is handed out as a plain blocking `File` enlarged to 1 MiB, for a dedicated
//! thread: these programs read and write in small pieces, and a bigger pipe lets each side run
//! ahead. The child is killed if this handle is dropped (an aborted backup must not leave a
//! pg_dump running, an aborted restore must not leave a psql that could commit). Nothing here
//! knows which program it runs.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::EngineError;

/// Pipe buffer for the data pipe: 1 MiB, the default unprivileged maximum on Linux.
const PIPE_SIZE: i32 = 1 << 20;

/// Bytes of stderr kept for the error message.
const STDERR_TAIL: usize = 4096;

/// A running child whose data pipe has been handed out.
pub struct ChildProcess {
    program: String,
    child: Child,
    stderr: JoinHandle<String>,
}

/// Which end of the child carries the data.
enum DataPipe {
    Stdout,
    Stdin,
}

impl ChildProcess {
    /// Spawns `command` as a data source; returns its stdout's read end. Stdin is closed.
    pub fn spawn_source(
        program: &str,
        command: Command,
    ) -> Result<(ChildProcess, File), EngineError> {
        Self::spawn(program, command, DataPipe::Stdout)
    }

    /// Spawns `command` as a data sink; returns its stdin's write end. Stdout is discarded.
    pub fn spawn_sink(
        program: &str,
        command: Command,
    ) -> Result<(ChildProcess, File), EngineError> {
        Self::spawn(program, command, DataPipe::Stdin)
    }

    fn spawn(
        program: &str,
        mut command: Command,
        data: DataPipe,
    ) -> Result<(ChildProcess, File), EngineError> {
        let spawn_error = |source| EngineError::Spawn {
            program: program.to_owned(),
            source,
        };
        let (stdin, stdout) = match data {
            DataPipe::Stdout => (Stdio::null(), Stdio::piped()),
            DataPipe::Stdin => (Stdio::piped(), Stdio::null()),
        };
        let mut child = command
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_error)?;
        let pipe: OwnedFd = match data {
            DataPipe::Stdout => child.stdout.take().expect("piped").into_owned_fd(),
            DataPipe::Stdin => child.stdin.take().expect("piped").into_owned_fd(),
        }
        .map_err(spawn_error)?;
        if let Err(e) = nix::fcntl::fcntl(&pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
            tracing::debug!(program, error = %e, "could not enlarge the pipe; using the default");
        }
        let stderr = child.stderr.take().expect("stderr is piped");
        let name = program.to_owned();
        let stderr = tokio::spawn(async move { tail_of(stderr, &name).await });
        Ok((
            ChildProcess {
                program: program.to_owned(),
                child,
                stderr,
            },
            File::from(pipe),
        ))
    }

    /// Waits for exit; anything but status 0 is an error carrying the stderr tail.
    pub async fn finish(mut self) -> Result<(), EngineError> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|source| EngineError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let tail = (&mut self.stderr).await.unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        Err(EngineError::Failed {
            program: self.program.clone(),
            status: status.to_string(),
            stderr_tail: if tail.is_empty() {
                "(nothing on stderr)".into()
            } else {
                tail
            },
        })
    }

    /// Kills the child (SIGKILL) and waits for it: it gets no chance to finish anything.
    pub async fn kill(mut self) {
        if let Err(e) = self.child.kill().await {
            tracing::warn!(program = %self.program, error = %e, "could not kill the child");
        }
    }
}

/// Logs each stderr line and returns the last [`STDERR_TAIL`] bytes of lines.
async fn tail_of(stderr: tokio::process::ChildStderr, program: &str) -> String {
    let mut lines = BufReader::new(stderr).lines();
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut bytes = 0;
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(program, line = %line, "child stderr");
        bytes += line.len() + 1;
        tail.push_back(line);
        while bytes > STDERR_TAIL && tail.len() > 1 {
            bytes -= tail.pop_front().map_or(0, |l| l.len() + 1);
        }
    }
    Vec::from(tail).join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[tokio::test]
    async fn success_is_decided_at_exit() {
        let (child, mut out) = ChildProcess::spawn_source("sh", sh("printf data")).unwrap();
        let mut buf = String::new();
        out.read_to_string(&mut buf).unwrap();
        assert_eq!(buf, "data");
        child.finish().await.unwrap();
    }

    #[tokio::test]
    async fn failure_after_output_carries_the_stderr_tail() {
        let script = "printf partial; for i in $(seq 1 2000); do echo noise $i >&2; done; \
                      echo 'fatal: connection lost' >&2; exit 3";
        let (child, mut out) = ChildProcess::spawn_source("sh", sh(script)).unwrap();
        let mut buf = String::new();
        out.read_to_string(&mut buf).unwrap();
        assert_eq!(buf, "partial");
        let e = child.finish().await.unwrap_err().to_string();
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(e.ends_with("fatal: connection lost"), "{e}");
        assert!(e.len() < STDERR_TAIL + 200, "tail is bounded: {}", e.len());
    }

    #[tokio::test]
    async fn a_sink_sees_what_we_write_only_when_we_close_it() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!("cat > {}", out.display());
        let (child, mut stdin) = ChildProcess::spawn_sink("sh", sh(&script)).unwrap();
        stdin.write_all(b"committed").unwrap();
        drop(stdin);
        child.finish().await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"committed");
    }

    #[tokio::test]
    async fn a_killed_sink_never_reaches_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("finished");
        let script = format!("cat > /dev/null; touch {}", marker.display());
        let (child, mut stdin) = ChildProcess::spawn_sink("sh", sh(&script)).unwrap();
        stdin.write_all(b"unverified").unwrap();
        child.kill().await;
        drop(stdin);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let e = ChildProcess::spawn_source("nope", Command::new("/nonexistent/pg_dump"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot start nope"), "{e}");
    }
}
