//! `keyfed exec <target> -- command…` (issue 12): runs a command with a target's fresh
//! credentials added to keyfed's own environment (the variables of `child_env.rs`), standard
//! input, output and error inherited, and ends as the command ends.
//!
//! - **Exit status.** The command's own. A command killed by a signal (real-time ones included)
//!   ends keyfed by the same signal: keyfed unblocks it and raises it with its default action
//!   (keyfed is non-dumpable, so a core-dumping signal writes no core of keyfed); where that
//!   cannot end keyfed — SIGPIPE, which Rust programs ignore, or a signal keyfed's parent set to
//!   be ignored — keyfed exits with 128 + the signal's number, as shells report it. A command
//!   that cannot be started gives 127 when it is not found and 126 otherwise (not executable, a
//!   folder, not a binary), as shells do. keyfed's own failures — an unknown or token target, a
//!   refused request, no credential, a configuration that does not load — give 125, as `env`
//!   and `timeout` do (`exit::ExecFailure`), so a script can tell them from the command's.
//! - **Signals.** Every signal whose default action ends a process and that can come from
//!   outside is forwarded to the command (`signals.rs` names the few that are not: the faults
//!   keyfed itself raises, SIGKILL, SIGSTOP, SIGPIPE), and keyfed waits for the command to end:
//!   only SIGKILL, which nobody can catch, ends keyfed before it and leaves the command behind.
//!   Not forwarded again: a signal the kernel sent to the whole foreground process group
//!   (Ctrl-C, Ctrl-\, a terminal hang-up) once the command runs in keyfed's group — it reached
//!   the command already; and a signal sent by the command itself or a process it started
//!   (`kill $PPID`, `kill 0`), which would otherwise come back to it — told by the sender's
//!   parent links in `/proc`, not by its process group as `sudo` does: a script that started
//!   keyfed in the background shares the command's group, and its `kill $!` must reach the
//!   command. A signal another process
//!   sends to the whole process group (`kill -- -PGID`, `timeout` without `--foreground`,
//!   systemd's `KillMode=control-group`) cannot be told from one sent to keyfed alone, so the
//!   command gets it twice: send such signals to keyfed's pid (systemd: `KillMode=mixed`).
//!   Before the command starts, a signal ends keyfed as it would any program (unless keyfed's
//!   parent set it to be ignored); one that arrives while the command is being started is
//!   forwarded, as the command may not have been there to get it. The signals are blocked and
//!   read from a signalfd rather than caught, so their dispositions stay the defaults and keyfed
//!   can end by one of them; the command is started with none blocked and SIGPIPE and SIGCHLD
//!   at their defaults. Job-control signals (SIGTSTP, SIGCONT, …) act on keyfed and the command
//!   together through their shared process group.
//! - **Azure.** keyfed holds the control connection its identity-header pair lives on until
//!   the command ends (then closes it, and the daemon drops the pair); a keyfed that is killed
//!   closes it too, so no pair outlives it.

mod signals;

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use anyhow::Context as _;
use nix::errno::Errno;
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawnp};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;
use rustix::process::{WaitId, WaitIdOptions, WaitOptions};
use tokio::signal::unix::SignalKind;

use self::signals::{Received, Signals, die_by};
use super::child_env::{self, Use, Var};
use crate::exit::{ExecFailure, UsageError};

pub async fn run(path: &Path, target: &str, command: Vec<OsString>) -> anyhow::Result<()> {
    let status = supervise(path, target, command)
        .await
        .map_err(ExecFailure)?;
    end_like(status)
}

/// Runs the command to its end, passing signals on, and tells how it ended; an error is
/// keyfed's own failure.
async fn supervise(
    path: &Path,
    target: &str,
    command: Vec<OsString>,
) -> anyhow::Result<ExitStatus> {
    // First of all, before any thread exists that would not block them: the forwarded signals
    // wait in the signalfd instead of ending keyfed (threads started later inherit the mask).
    let mut signals = Signals::block()?;
    let Some((program, args)) = command.split_first() else {
        return Err(UsageError("no command given after --".to_owned()).into());
    };
    // A parent that ignores SIGCHLD would have the kernel reap the command as it ends, and
    // keyfed's wait fail (ECHILD): a handler of tokio's replaces that disposition (resetting it
    // to the default would need `unsafe`); it stays installed until keyfed exits.
    let _child_ends = tokio::signal::unix::signal(SignalKind::child())
        .context("cannot watch for the command's end (SIGCHLD)")?;
    let waiter = Waiter::start()?;
    // Before the command exists, a signal ends keyfed as it would have without the mask —
    // unless keyfed's parent set it to be ignored (`nohup`, a background job's SIGINT).
    let fetch = child_env::fetch(path, target, Use::Exec);
    tokio::pin!(fetch);
    let env = loop {
        tokio::select! {
            env = &mut fetch => break env?,
            received = signals.next() => {
                if !signals.ignored(received.number) {
                    die_by(received.number);
                }
                let name = signals::name(received.number);
                tracing::debug!("{name} is ignored: keyfed's parent set it to be");
            }
        }
    };
    if let Some(at) = env.expires {
        tracing::debug!(
            "the credentials expire at {}; they are not refreshed inside the command",
            keyfed_core::clock::rfc3339(at)
        );
    }
    let child = match spawn(program, args, &env.vars, env.removes) {
        Ok(pid) => pid,
        Err(e) => not_started(program, e),
    };
    let child =
        rustix::process::Pid::from_raw(child.as_raw()).context("posix_spawnp gave no pid")?;
    // Signals read until now came before the command was started or while it was: a
    // terminal's among them may not have reached it, so each is forwarded.
    signals.started();
    let mut ended = waiter.wait_for(child);
    let status = loop {
        tokio::select! {
            status = &mut ended => break status.context("lost the command's waiting thread")?,
            received = signals.next() => forward(child, received),
        }
    };
    // Reaped only now, once no signal can be forwarded any more: until here its pid could not
    // have been reused.
    let _ = rustix::process::waitpid(Some(child), WaitOptions::empty());
    let status = status.context("cannot wait for the command")?;
    // The command has ended: its Azure pair may end too (the daemon drops it on close).
    drop(env.hold);
    Ok(status)
}

/// Starts `program` (looked up in `PATH`) with `args`, keyfed's environment less `removes` (the
/// variables that would override the credentials, `child_env.rs`) plus `vars`, keyfed's
/// standard streams and process group, no signal blocked and SIGPIPE and SIGCHLD at their default actions.
/// `posix_spawnp` rather than `std::process::Command`: the standard library leaves the child
/// the signal mask of the thread that starts it, here the forwarded signals blocked, and only
/// a `pre_exec` hook (`unsafe`) could clear it.
fn spawn(program: &OsStr, args: &[OsString], vars: &[Var], removes: &[&str]) -> Result<Pid, Errno> {
    let c_string = |bytes: Vec<u8>| CString::new(bytes).map_err(|_| Errno::EINVAL);
    let path = c_string(program.as_bytes().to_vec())?;
    let argv = std::iter::once(program)
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| c_string(a.as_bytes().to_vec()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut envp: Vec<CString> = Vec::new();
    for (name, value) in std::env::vars_os() {
        let replaced = vars.iter().any(|v| OsStr::new(v.name) == name);
        if replaced || removes.iter().any(|r| OsStr::new(r) == name) {
            continue;
        }
        envp.push(c_string(
            [name.as_bytes(), b"=", value.as_bytes()].concat(),
        )?);
    }
    for v in vars {
        envp.push(c_string(format!("{}={}", v.name, v.value).into_bytes())?);
    }
    let mut attr = PosixSpawnAttr::init()?;
    attr.set_sigmask(&SigSet::empty())?;
    let mut defaults = SigSet::empty();
    defaults.add(Signal::SIGPIPE);
    defaults.add(Signal::SIGCHLD);
    attr.set_sigdefault(&defaults)?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    posix_spawnp(&path, &PosixSpawnFileActions::init()?, &attr, &argv, &envp)
}

/// A thread that waits for the command to end (its mask, inherited, blocks the forwarded
/// signals too), started before the command so that no failure to start it can leave the
/// command without a waiter.
struct Waiter {
    child: std::sync::mpsc::Sender<rustix::process::Pid>,
    ended: tokio::sync::oneshot::Receiver<io::Result<ExitStatus>>,
}

impl Waiter {
    fn start() -> anyhow::Result<Self> {
        let (child, pid) = std::sync::mpsc::channel();
        let (send, ended) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("keyfed-wait".to_owned())
            .spawn(move || {
                // No pid: no command was started, and keyfed is ending.
                if let Ok(child) = pid.recv() {
                    let _ = send.send(wait(child));
                }
            })
            .context("cannot start the thread that waits for the command")?;
        Ok(Self { child, ended })
    }

    /// How `child` ended, once it has.
    fn wait_for(
        self,
        child: rustix::process::Pid,
    ) -> tokio::sync::oneshot::Receiver<io::Result<ExitStatus>> {
        let _ = self.child.send(child);
        self.ended
    }
}

/// Waits for `child` to end, without reaping it. `rustix`'s `waitid` gives the raw signal
/// number, real-time signals included (`nix`'s cannot name those).
fn wait(child: rustix::process::Pid) -> io::Result<ExitStatus> {
    let flags = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT;
    loop {
        match rustix::process::waitid(WaitId::Pid(child), flags) {
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
            Ok(Some(status)) => {
                if let Some(code) = status.exit_status() {
                    return Ok(ExitStatus::Code(code));
                }
                if let Some(signal) = status.terminating_signal() {
                    return Ok(ExitStatus::Signal(signal));
                }
                // Stopped or continued: not an end (WEXITED asks for none of these).
            }
            Ok(None) => {}
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExitStatus {
    Code(i32),
    /// Killed by this signal's number.
    Signal(i32),
}

/// Passes `received` on to the command, unless the command or a process it started sent it,
/// or the kernel sent it to the process group the running command shares with keyfed (it has
/// it already).
fn forward(child: rustix::process::Pid, received: Received) {
    let name = signals::name(received.number);
    if let Some(sender) = received.sender
        && signals::descends_from(sender, child.as_raw_nonzero().get())
    {
        tracing::debug!("{name} came from the command's side (pid {sender}): not sent back");
        return;
    }
    let shares_group = rustix::process::getpgid(Some(child))
        .is_ok_and(|group| group == rustix::process::getpgrp());
    if received.by_kernel && shares_group && received.after_start {
        tracing::debug!("{name} reached the command's process group already");
        return;
    }
    tracing::debug!("forwarding {name} to the command");
    if let Err(e) = signals::send(child, received.number) {
        tracing::debug!("cannot forward {name}: {e}");
    }
}

/// Ends keyfed as the command ended.
fn end_like(status: ExitStatus) -> ! {
    match status {
        ExitStatus::Code(code) => std::process::exit(code),
        ExitStatus::Signal(signal) => die_by(signal),
    }
}

/// Reports a command that could not be started and exits as a shell would: 127 when it is not
/// found, else 126.
fn not_started(program: &OsStr, e: Errno) -> ! {
    let shown = program.to_string_lossy();
    let (code, why) = match e {
        Errno::ENOENT => (127, "command not found".to_owned()),
        Errno::EACCES | Errno::EPERM => (126, "permission denied".to_owned()),
        other => (126, other.desc().to_owned()),
    };
    eprintln!("error: cannot run {shown}: {why}");
    std::process::exit(code)
}
