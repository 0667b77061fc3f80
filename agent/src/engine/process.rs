//! A child process as one end of a byte stream: a source (we read its stdout: pg_dump) or a
//! sink (we write its stdin: psql). Its stderr is read as bytes (a non-UTF-8 line must not stop
//! the reader, or the child dies of SIGPIPE with its real error lost), passed through the
//! caller's [`Scrub`] (so no row data reaches logs, errors and audit events), logged, and kept
//! as a bounded tail for the error message; success is decided only when it exits 0.
//!
//! The data pipe is handed out as a plain blocking `File` enlarged to 1 MiB, for a dedicated
//! thread: these programs read and write in small pieces, and a bigger pipe lets each side run
//! ahead. The child is killed if this handle is dropped (an aborted backup must not leave a
//! pg_dump running, an aborted restore must not leave a psql that could commit), and it is
//! killed when the agent itself dies (`PR_SET_PDEATHSIG`): an OOM-killed agent must not leave
//! a psql loading unverified bytes, nor a pg_dump holding a snapshot for hours. Nothing here
//! knows which program it runs.
//!
//! Linux delivers the death signal when the *thread* that started the child exits, so spawn
//! from a runtime worker (or the main thread), never from a blocking-pool thread, which exits
//! when idle.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt as _, BufReader};

use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::EngineError;

/// Rewrites one line of a child's stderr before it is logged or kept.
pub type Scrub = fn(&str) -> Cow<'_, str>;

/// Keeps stderr lines as they are.
pub fn keep(line: &str) -> Cow<'_, str> {
    Cow::Borrowed(line)
}

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
        scrub: Scrub,
    ) -> Result<(ChildProcess, File), EngineError> {
        Self::spawn(program, command, DataPipe::Stdout, scrub)
    }

    /// Spawns `command` as a data sink; returns its stdin's write end. Stdout is discarded.
    pub fn spawn_sink(
        program: &str,
        command: Command,
        scrub: Scrub,
    ) -> Result<(ChildProcess, File), EngineError> {
        Self::spawn(program, command, DataPipe::Stdin, scrub)
    }

    fn spawn(
        program: &str,
        mut command: Command,
        data: DataPipe,
        scrub: Scrub,
    ) -> Result<(ChildProcess, File), EngineError> {
        let spawn_error = |source| EngineError::Spawn {
            program: program.to_owned(),
            source,
        };
        let (stdin, stdout) = match data {
            DataPipe::Stdout => (Stdio::null(), Stdio::piped()),
            DataPipe::Stdin => (Stdio::piped(), Stdio::null()),
        };
        die_with_parent(&mut command);
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
        let stderr = tokio::spawn(async move { tail_of(stderr, &name, scrub).await });
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

/// Makes the child get SIGKILL when the thread that spawned it (and so the agent) dies.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    let parent = nix::unistd::getpid();
    let hook = move || -> std::io::Result<()> {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
        // The agent may have died between fork and prctl: then nobody would signal us.
        if nix::unistd::getppid() != parent {
            return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec. It makes only async-signal-safe
    // system calls (prctl, getppid) and allocates nothing: `parent` is copied in, and the error
    // values are plain OS codes.
    unsafe {
        command.pre_exec(hook);
    }
}

/// Reads one line into `raw`, keeping at most `limit` bytes of it and skipping the rest (a
/// hostile dump can make psql print a line of any length). False at the end of the stream.
async fn read_line_bounded<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    raw: &mut Vec<u8>,
    limit: usize,
) -> bool {
    let mut read_any = false;
    loop {
        let buf = match reader.fill_buf().await {
            Ok(buf) if !buf.is_empty() => buf,
            _ => return read_any,
        };
        read_any = true;
        let (used, ended) =
            memchr::memchr(b'\n', buf).map_or((buf.len(), false), |i| (i + 1, true));
        let room = limit.saturating_sub(raw.len());
        raw.extend_from_slice(&buf[..used.min(room)]);
        reader.consume(used);
        if ended {
            return true;
        }
    }
}

/// Logs each scrubbed stderr line and returns the last [`STDERR_TAIL`] bytes of them. Reads
/// to the end whatever the bytes are; at most [`STDERR_TAIL`] bytes of a line are kept.
async fn tail_of(stderr: tokio::process::ChildStderr, program: &str, scrub: Scrub) -> String {
    let mut reader = BufReader::new(stderr);
    let mut raw = Vec::new();
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut bytes = 0;
    loop {
        raw.clear();
        if !read_line_bounded(&mut reader, &mut raw, STDERR_TAIL).await {
            break;
        }
        let text = String::from_utf8_lossy(&raw);
        let text = text.trim_end_matches(['\n', '\r']);
        let line = scrub(text);
        if line.is_empty() {
            continue;
        }
        let mut line = line.into_owned();
        if line.len() > STDERR_TAIL {
            line.truncate(line.floor_char_boundary(STDERR_TAIL));
        }
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
        let (child, mut out) = ChildProcess::spawn_source("sh", sh("printf data"), keep).unwrap();
        let mut buf = String::new();
        out.read_to_string(&mut buf).unwrap();
        assert_eq!(buf, "data");
        child.finish().await.unwrap();
    }

    #[tokio::test]
    async fn failure_after_output_carries_the_stderr_tail() {
        let script = "printf partial; for i in $(seq 1 2000); do echo noise $i >&2; done; \
                      echo 'fatal: connection lost' >&2; exit 3";
        let (child, mut out) = ChildProcess::spawn_source("sh", sh(script), keep).unwrap();
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
        let (child, mut stdin) = ChildProcess::spawn_sink("sh", sh(&script), keep).unwrap();
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
        let (child, mut stdin) = ChildProcess::spawn_sink("sh", sh(&script), keep).unwrap();
        stdin.write_all(b"unverified").unwrap();
        child.kill().await;
        drop(stdin);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn stderr_is_read_to_the_end_whatever_its_bytes_and_scrubbed() {
        fn hide_secret(line: &str) -> Cow<'_, str> {
            Cow::Owned(line.replace("secret", "(removed)"))
        }
        // A non-UTF-8 line first: the reader must go on to the real error.
        let script = "printf 'bad \\377\\376 bytes\\n' >&2; \
                      for i in $(seq 1 3000); do echo noise $i >&2; done; \
                      echo 'fatal: secret row' >&2; exit 2";
        let (child, mut out) = ChildProcess::spawn_source("sh", sh(script), hide_secret).unwrap();
        let mut buf = Vec::new();
        out.read_to_end(&mut buf).unwrap();
        let e = child.finish().await.unwrap_err().to_string();
        assert!(e.ends_with("fatal: (removed) row"), "{e}");
    }

    // Two threads: the test blocks one reading stdout while stderr is drained on the other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stderr_line_of_any_length_is_cut_while_it_is_read() {
        let mut reader =
            tokio::io::BufReader::with_capacity(64, &b"0123456789abcdefghij\nshort\n"[..]);
        let mut raw = Vec::new();
        assert!(read_line_bounded(&mut reader, &mut raw, 8).await);
        assert_eq!(raw, b"01234567");
        raw.clear();
        assert!(read_line_bounded(&mut reader, &mut raw, 8).await);
        assert_eq!(raw, b"short\n");
        raw.clear();
        assert!(!read_line_bounded(&mut reader, &mut raw, 8).await);
        // 64 MiB on one line: read to the end, kept to the limit.
        let script =
            "head -c 67108864 /dev/zero | tr '\\0' x >&2; echo >&2; echo 'last' >&2; exit 1";
        let (child, mut out) = ChildProcess::spawn_source("sh", sh(script), keep).unwrap();
        let mut buf = Vec::new();
        out.read_to_end(&mut buf).unwrap();
        let e = child.finish().await.unwrap_err().to_string();
        assert!(e.ends_with("last"), "{}", &e[e.len().saturating_sub(80)..]);
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let e = ChildProcess::spawn_source("nope", Command::new("/nonexistent/pg_dump"), keep)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot start nope"), "{e}");
    }
}
