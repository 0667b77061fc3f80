//! A child process as a stream: stdout is the data, stderr is kept as a bounded tail for the
//! error message, and success is decided only when the process exits 0.
//!
//! Stdout is handed out as a plain blocking pipe (`File`) enlarged to 1 MiB, for a dedicated
//! reader thread: the child writes in small pieces, and a bigger pipe lets it run ahead.
//!
//! The child is killed if this handle is dropped (an aborted backup must not leave a pg_dump
//! running against the database). Nothing here knows which program it runs.

use std::collections::VecDeque;
use std::fs::File;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::DumpError;

/// Pipe buffer for stdout: 1 MiB, the default unprivileged maximum on Linux.
const PIPE_SIZE: i32 = 1 << 20;

/// Bytes of stderr kept for the error message.
const STDERR_TAIL: usize = 4096;

/// A running child whose stdout has been handed out.
pub struct ChildStream {
    program: String,
    child: Child,
    stderr: JoinHandle<String>,
}

impl ChildStream {
    /// Spawns `command` with stdin closed and stdout/stderr piped; returns stdout's read end.
    pub fn spawn(program: &str, mut command: Command) -> Result<(ChildStream, File), DumpError> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| DumpError::Spawn {
                program: program.to_owned(),
                source,
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdout = stdout.into_owned_fd().map_err(|source| DumpError::Spawn {
            program: program.to_owned(),
            source,
        })?;
        if let Err(e) = nix::fcntl::fcntl(&stdout, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
            tracing::debug!(program, error = %e, "could not enlarge the pipe; using the default");
        }
        let stdout = File::from(stdout);
        let stderr = child.stderr.take().expect("stderr is piped");
        let name = program.to_owned();
        let stderr = tokio::spawn(async move { tail_of(stderr, &name).await });
        Ok((
            ChildStream {
                program: program.to_owned(),
                child,
                stderr,
            },
            stdout,
        ))
    }

    /// Waits for exit; anything but status 0 is an error carrying the stderr tail.
    pub async fn finish(mut self) -> Result<(), DumpError> {
        let status = self.child.wait().await.map_err(|source| DumpError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        let tail = (&mut self.stderr).await.unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        Err(DumpError::Failed {
            program: self.program.clone(),
            status: status.to_string(),
            stderr_tail: if tail.is_empty() {
                "(nothing on stderr)".into()
            } else {
                tail
            },
        })
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
    use std::io::Read as _;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[tokio::test]
    async fn success_is_decided_at_exit() {
        let (child, mut out) = ChildStream::spawn("sh", sh("printf data")).unwrap();
        let mut buf = String::new();
        out.read_to_string(&mut buf).unwrap();
        assert_eq!(buf, "data");
        child.finish().await.unwrap();
    }

    #[tokio::test]
    async fn failure_after_output_carries_the_stderr_tail() {
        let script = "printf partial; for i in $(seq 1 2000); do echo noise $i >&2; done; \
                      echo 'fatal: connection lost' >&2; exit 3";
        let (child, mut out) = ChildStream::spawn("sh", sh(script)).unwrap();
        let mut buf = String::new();
        out.read_to_string(&mut buf).unwrap();
        assert_eq!(buf, "partial");
        let e = child.finish().await.unwrap_err().to_string();
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(e.ends_with("fatal: connection lost"), "{e}");
        assert!(e.len() < STDERR_TAIL + 200, "tail is bounded: {}", e.len());
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let e = ChildStream::spawn("nope", Command::new("/nonexistent/pg_dump"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot start nope"), "{e}");
    }
}
