//! `keyfed exec <target> -- command…` (issue 12): runs a command with a target's fresh
//! credentials added to keyfed's own environment (the variables of `child_env.rs`), standard
//! input, output and error inherited, and ends as the command ends.
//!
//! - **Exit status.** The command's own. A command killed by a signal ends keyfed by the same
//!   signal: keyfed unblocks it and raises it with its default action (keyfed is non-dumpable,
//!   so a core-dumping signal writes no core of keyfed); where that cannot end keyfed — SIGPIPE,
//!   which Rust programs ignore, or a signal keyfed's parent set to be ignored — keyfed exits
//!   with 128 + the signal's number, as shells report it. A command that cannot be started
//!   gives 127 when it is not found and 126 otherwise (not executable, a folder, not a binary),
//!   as shells do. keyfed's own failures before the command starts are its usual 1, 2 and 3.
//! - **Signals.** SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to keyfed are
//!   forwarded to the command, and keyfed waits for it to end: it never leaves the command
//!   behind (only SIGKILL, which nobody can catch, ends keyfed before it). A signal the kernel
//!   sent to the whole foreground process group (Ctrl-C, Ctrl-\, a terminal hang-up) already
//!   reached the command, which shares keyfed's group, so it is not sent twice. Before the
//!   command starts, such a signal ends keyfed as it would any program. The signals are blocked
//!   and read from a signalfd rather than caught, so their dispositions stay the defaults and
//!   keyfed can end by one of them (restoring a default action after catching would need
//!   `unsafe`); the command is started with none blocked. Other signals (SIGTSTP, SIGCONT, …)
//!   act on keyfed and the command together through their shared process group.
//! - **Azure.** keyfed holds the control connection its identity-header pair lives on until
//!   the command ends (then closes it, and the daemon drops the pair); a keyfed that is killed
//!   closes it too, so no pair outlives it.

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use anyhow::Context as _;
use nix::errno::Errno;
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawnp};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

use super::child_env::{self, Use, Var};
use crate::exit::UsageError;

/// The signals keyfed passes on to the command.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// `si_code` of a signal the kernel sent itself, as a terminal does to its foreground process
/// group.
const SI_KERNEL: i32 = 0x80;

pub async fn run(path: &Path, target: &str, command: Vec<OsString>) -> anyhow::Result<()> {
    // First of all, before any thread exists that would not block them: the forwarded signals
    // wait in the signalfd instead of ending keyfed (threads started later inherit the mask).
    let mut signals = Signals::block()?;
    let Some((program, args)) = command.split_first() else {
        return Err(UsageError("no command given after --".to_owned()).into());
    };
    // Before the command exists, a signal ends keyfed as it would have without the mask —
    // unless keyfed's parent set it to be ignored (`nohup`, a background job's SIGINT).
    let fetch = child_env::fetch(path, target, Use::Exec);
    tokio::pin!(fetch);
    let env = loop {
        tokio::select! {
            env = &mut fetch => break env?,
            received = signals.next() => {
                if !signals.ignored.contains(received.signal) {
                    die_by(received.signal);
                }
            }
        }
    };
    if let Some(at) = env.expires {
        tracing::debug!(
            "the credentials expire at {}; they are not refreshed inside the command",
            keyfed_core::clock::rfc3339(at)
        );
    }
    let child = match spawn(program, args, &env.vars) {
        Ok(pid) => pid,
        Err(e) => not_started(program, e),
    };
    let mut ended = wait_in_thread(child)?;
    let status = loop {
        tokio::select! {
            status = &mut ended => break status.context("lost the command's waiting thread")?,
            received = signals.next() => forward(child, received),
        }
    };
    // Reaped only now, once no signal can be forwarded any more: until here its pid could not
    // have been reused.
    let _ = waitpid(child, None);
    let status = status.context("cannot wait for the command")?;
    // The command has ended: its Azure pair may end too (the daemon drops it on close).
    drop(env.hold);
    end_like(status)
}

/// Starts `program` (looked up in `PATH`) with `args`, keyfed's environment plus `vars`, keyfed's
/// standard streams and process group, no signal blocked and SIGPIPE at its default action.
/// `posix_spawnp` rather than `std::process::Command`: the standard library leaves the child
/// the signal mask of the thread that starts it, here the forwarded signals blocked, and only
/// a `pre_exec` hook (`unsafe`) could clear it.
fn spawn(program: &OsStr, args: &[OsString], vars: &[Var]) -> Result<Pid, Errno> {
    let c_string = |bytes: Vec<u8>| CString::new(bytes).map_err(|_| Errno::EINVAL);
    let path = c_string(program.as_bytes().to_vec())?;
    let argv = std::iter::once(program)
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| c_string(a.as_bytes().to_vec()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut envp: Vec<CString> = Vec::new();
    for (name, value) in std::env::vars_os() {
        if vars.iter().any(|v| OsStr::new(v.name) == name) {
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
    let mut pipe = SigSet::empty();
    pipe.add(Signal::SIGPIPE);
    attr.set_sigdefault(&pipe)?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    posix_spawnp(&path, &PosixSpawnFileActions::init()?, &attr, &argv, &envp)
}

/// Waits for `child` to end on a thread of its own (its mask, inherited, blocks the forwarded
/// signals too), without reaping it: the answer is how it ended.
fn wait_in_thread(
    child: Pid,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<Result<ExitStatus, Errno>>> {
    let (send, ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("keyfed-wait".to_owned())
        .spawn(move || {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
            let status = loop {
                match waitid(Id::Pid(child), flags) {
                    Err(Errno::EINTR) => continue,
                    Err(e) => break Err(e),
                    Ok(WaitStatus::Exited(_, code)) => break Ok(ExitStatus::Code(code)),
                    Ok(WaitStatus::Signaled(_, signal, _)) => break Ok(ExitStatus::Signal(signal)),
                    // Stopped or continued: not an end (WEXITED asks for none of these).
                    Ok(_) => continue,
                }
            };
            let _ = send.send(status);
        })
        .context("cannot start the thread that waits for the command")?;
    Ok(ended)
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExitStatus {
    Code(i32),
    Signal(Signal),
}

/// A signal read from the signalfd.
#[derive(Debug, Clone, Copy)]
struct Received {
    signal: Signal,
    /// Sent by the kernel itself (a terminal's signal to its foreground process group).
    by_kernel: bool,
}

/// The forwarded signals, blocked and read from a signalfd by a thread of their own (a signalfd
/// cannot be registered with tokio's reactor without `unsafe`).
struct Signals {
    received: tokio::sync::mpsc::UnboundedReceiver<Received>,
    /// Those keyfed was started with set to be ignored.
    ignored: SigSet,
}

impl Signals {
    /// Blocks [`FORWARDED`] in this thread (and so in every thread it starts, the reader
    /// included) and starts reading them from a signalfd.
    fn block() -> anyhow::Result<Self> {
        let mut set = SigSet::empty();
        for signal in FORWARDED {
            set.add(signal);
        }
        set.thread_block().context("cannot block signals")?;
        let fd =
            SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC).context("cannot open a signalfd")?;
        let (send, received) = tokio::sync::mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("keyfed-signals".to_owned())
            .spawn(move || read_signals(&fd, &send))
            .context("cannot start the thread that reads signals")?;
        Ok(Self {
            received,
            ignored: ignored(),
        })
    }

    /// The next signal received; never, if the reader stopped (it logged why).
    async fn next(&mut self) -> Received {
        match self.received.recv().await {
            Some(received) => received,
            None => std::future::pending().await,
        }
    }
}

/// The signals this process ignores, as the kernel lists them (`SigIgn` in
/// `/proc/self/status`, a hexadecimal mask: bit N-1 for signal N); none where it cannot be read.
fn ignored() -> SigSet {
    let mut set = SigSet::empty();
    let mask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
            u64::from_str_radix(line.trim(), 16).ok()
        })
        .unwrap_or(0);
    for signal in FORWARDED {
        if mask & (1 << (signal as i32 - 1)) != 0 {
            set.add(signal);
        }
    }
    set
}

/// Reads `fd` until keyfed exits (or nobody listens), sending each signal on.
fn read_signals(fd: &SignalFd, send: &tokio::sync::mpsc::UnboundedSender<Received>) {
    loop {
        let info = match fd.read_signal() {
            Ok(Some(info)) => info,
            Ok(None) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!("cannot read signals any more, so none is forwarded: {e}");
                return;
            }
        };
        let Some(signal) = i32::try_from(info.ssi_signo)
            .ok()
            .and_then(|n| Signal::try_from(n).ok())
        else {
            continue;
        };
        let received = Received {
            signal,
            by_kernel: info.ssi_code == SI_KERNEL,
        };
        if send.send(received).is_err() {
            return;
        }
    }
}

/// Passes `received` on to the command, unless the kernel sent it to the process group the
/// command shares with keyfed (it has it already).
fn forward(child: Pid, received: Received) {
    let shares_group = nix::unistd::getpgid(Some(child)).is_ok_and(|g| g == nix::unistd::getpgrp());
    if received.by_kernel && shares_group {
        tracing::debug!(
            "{} reached the command's process group already",
            received.signal
        );
        return;
    }
    tracing::debug!("forwarding {} to the command", received.signal);
    if let Err(e) = nix::sys::signal::kill(child, received.signal) {
        tracing::debug!("cannot forward {}: {e}", received.signal);
    }
}

/// Ends keyfed as the command ended.
fn end_like(status: ExitStatus) -> ! {
    match status {
        ExitStatus::Code(code) => std::process::exit(code),
        ExitStatus::Signal(signal) => die_by(signal),
    }
}

/// Ends keyfed by `signal` with its default action, or with status 128 + its number where the
/// signal is ignored (SIGPIPE, or one keyfed's parent set to be ignored).
fn die_by(signal: Signal) -> ! {
    let mut only = SigSet::empty();
    only.add(signal);
    let _ = only.thread_unblock();
    let _ = nix::sys::signal::raise(signal);
    std::process::exit(128 + signal as i32)
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
