//! Every process a test starts, under the leak check: one-shot runs ([`run`]) and long-running
//! ones ([`Process`]), their stdout and stderr checked against every secret the run knows when
//! they end — stopped, killed, exited or dropped. A long-running one may also be given a standard
//! input the test writes to ([`spawn_with_stdin`]), for a program that waits for its cue.

use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::leaks::{Known, Serves};
use super::{Run, wait_until};

/// How long a stopped process may take to exit.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// Runs `command` to its end and checks its output.
pub async fn run(
    what: &str,
    mut command: tokio::process::Command,
    known: &Known,
    serves: Serves,
) -> Run {
    let output = command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let run = Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    known.check(what, serves, &run.stdout, &run.stderr);
    run
}

type Buffer = Arc<Mutex<Vec<u8>>>;

fn text(buffer: &Buffer) -> String {
    String::from_utf8_lossy(&buffer.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
}

/// Copies a pipe into `buffer` on a thread of its own, so what a process wrote can be read
/// while it runs and collected synchronously when it is dropped.
fn collect(pipe: OwnedFd, buffer: Buffer) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut file = std::fs::File::from(pipe);
        let mut chunk = [0u8; 8192];
        while let Ok(n @ 1..) = file.read(&mut chunk) {
            buffer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(&chunk[..n]);
        }
    })
}

/// A long-running process whose output is checked when it ends; killed when dropped.
pub struct Process {
    what: String,
    child: Option<tokio::process::Child>,
    stdout: Buffer,
    stderr: Buffer,
    readers: Vec<JoinHandle<()>>,
    stdin: Option<tokio::process::ChildStdin>,
    known: Known,
    serves: Serves,
}

/// Starts `command` with its output captured.
pub fn spawn(
    what: &str,
    command: tokio::process::Command,
    known: &Known,
    serves: Serves,
) -> Process {
    start(what, command, Stdio::null(), known, serves)
}

/// [`spawn`] with standard input a pipe the test holds: the program may read it until the test
/// writes ([`Process::write_stdin`]), and sees its end when the process is dropped.
pub fn spawn_with_stdin(
    what: &str,
    command: tokio::process::Command,
    known: &Known,
    serves: Serves,
) -> Process {
    start(what, command, Stdio::piped(), known, serves)
}

fn start(
    what: &str,
    mut command: tokio::process::Command,
    stdin: Stdio,
    known: &Known,
    serves: Serves,
) -> Process {
    let mut child = command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let (stdout, stderr) = (Buffer::default(), Buffer::default());
    let pipe = |p: Option<std::io::Result<OwnedFd>>| {
        p.unwrap_or_else(|| panic!("{what}: no pipe"))
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    };
    let readers = vec![
        collect(
            pipe(child.stdout.take().map(|p| p.into_owned_fd())),
            Arc::clone(&stdout),
        ),
        collect(
            pipe(child.stderr.take().map(|p| p.into_owned_fd())),
            Arc::clone(&stderr),
        ),
    ];
    let stdin = child.stdin.take();
    Process {
        what: what.to_owned(),
        child: Some(child),
        stdout,
        stderr,
        readers,
        stdin,
        known: known.clone(),
        serves,
    }
}

impl Process {
    fn child(&mut self) -> &mut tokio::process::Child {
        self.child
            .as_mut()
            .unwrap_or_else(|| panic!("already stopped"))
    }

    /// The command line it was started with, as failure messages name it.
    pub fn what(&self) -> &str {
        &self.what
    }

    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = self
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32));
        if let Some(pid) = pid {
            rustix::process::kill_process(pid, signal).unwrap_or_else(|e| panic!("kill: {e}"));
        }
    }

    /// What it wrote to standard output so far.
    pub fn stdout_so_far(&self) -> String {
        text(&self.stdout)
    }

    /// What it wrote to standard error (its log) so far.
    pub fn log_so_far(&self) -> String {
        text(&self.stderr)
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child().try_wait().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits until its log holds `needle` (for an event the process logs, e.g. a reload).
    pub async fn wait_for_log(&mut self, needle: &str) {
        wait_until(&format!("{} to log {needle:?}", self.what), async || {
            if self.log_so_far().contains(needle) {
                return true;
            }
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited ({status}) before logging {needle:?}:\n{}",
                    self.what,
                    self.log_so_far()
                );
            }
            false
        })
        .await;
    }

    /// Waits until its standard output holds `n` whole lines; returns them.
    pub async fn wait_for_stdout_lines(&mut self, n: usize) -> Vec<String> {
        let lines = |out: String| -> Vec<String> {
            out.split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .map(|l| l.trim_end_matches('\n').to_owned())
                .collect()
        };
        wait_until(&format!("{} to print {n} line(s)", self.what), async || {
            if lines(self.stdout_so_far()).len() >= n {
                return true;
            }
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited ({status}) before printing {n} line(s):\n{}\n{}",
                    self.what,
                    self.stdout_so_far(),
                    self.log_so_far()
                );
            }
            false
        })
        .await;
        lines(self.stdout_so_far())
    }

    /// Writes `bytes` to its standard input (see [`spawn_with_stdin`]).
    pub async fn write_stdin(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt as _;
        let what = &self.what;
        self.stdin
            .as_mut()
            .unwrap_or_else(|| panic!("{what} has no standard input to write to"))
            .write_all(bytes)
            .await
            .unwrap_or_else(|e| panic!("writing to {what}: {e}"));
    }

    /// Stops it with SIGTERM and returns its exit status and output.
    pub async fn stop(self) -> Run {
        self.signal(rustix::process::Signal::TERM);
        self.finish("the process to stop on SIGTERM").await
    }

    /// Kills it with SIGKILL and returns its output.
    pub async fn kill(mut self) -> Run {
        let _ = self.child().start_kill();
        self.finish("the process to die of SIGKILL").await
    }

    /// Waits for it to exit by itself.
    pub async fn wait(self) -> Run {
        self.finish("the process to exit").await
    }

    async fn finish(mut self, waiting_for: &str) -> Run {
        // Its input ends, as for a program that waits for it to (closed before waiting, as
        // tokio's own `wait` does).
        drop(self.stdin.take());
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("already stopped"));
        let status = tokio::time::timeout(STOP_LIMIT, child.wait())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {waiting_for}: {}", self.what))
            .unwrap_or_else(|e| panic!("{e}"));
        let readers = std::mem::take(&mut self.readers);
        tokio::task::spawn_blocking(move || {
            for reader in readers {
                let _ = reader.join();
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let run = Run {
            code: status.code(),
            stdout: text(&self.stdout),
            stderr: text(&self.stderr),
        };
        self.known
            .check(&self.what, self.serves, &run.stdout, &run.stderr);
        run
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.start_kill();
        // The pipes close when the process dies; what it wrote until then is checked too.
        for reader in std::mem::take(&mut self.readers) {
            let _ = reader.join();
        }
        if std::thread::panicking() {
            // The test failed elsewhere: its log helps to see why (shown with the failure).
            eprintln!(
                "--- {} (killed) wrote:\n{}\n{}",
                self.what,
                text(&self.stdout),
                text(&self.stderr)
            );
        } else {
            self.known.check(
                &self.what,
                self.serves,
                &text(&self.stdout),
                &text(&self.stderr),
            );
        }
    }
}
