//! The signals `keyfed exec` passes on to its command: which ones, how they are read, who sent
//! them, and how keyfed ends by one.
//!
//! Every signal whose default action ends a process is blocked and read from a signalfd, except
//! the faults a bad instruction or memory access raises in keyfed itself (SIGSEGV, SIGBUS,
//! SIGFPE, SIGILL, SIGTRAP, SIGSYS), SIGKILL and SIGSTOP (nobody can block them) and SIGPIPE
//! (ignored, as in every Rust program, so a write to a closed pipe fails instead). Blocked
//! rather than caught: their dispositions stay the defaults, so keyfed can end by one of them
//! (restoring a default action after catching would need `unsafe`). Real-time signals are
//! handled by number: `nix` names only the standard ones.
//!
//! A thread of its own reads the signalfd (registering it with tokio's reactor needs `unsafe`)
//! and tags each signal with when it was read: before the command was started, or after.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rustix::event::{PollFd, PollFlags};
use rustix_libc_wrappers::process::SignalExt as _;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// The signals keyfed leaves alone (see the module's documentation); with those whose default
/// action does not end a process (job control, SIGCHLD, SIGURG, SIGWINCH), which act on keyfed
/// and the command together through their shared process group.
const NOT_FORWARDED: [Signal; 16] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGTRAP,
    Signal::SIGSYS,
    Signal::SIGKILL,
    Signal::SIGSTOP,
    Signal::SIGPIPE,
    Signal::SIGCHLD,
    Signal::SIGCONT,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGURG,
    Signal::SIGWINCH,
];

/// `si_code` of a signal the kernel sent itself, as a terminal does to its foreground process
/// group.
const SI_KERNEL: i32 = 0x80;
/// `si_code`s of a signal a process sent (`kill`, `sigqueue`, `tgkill`): `si_pid` is its
/// sender.
const SENT_BY_A_PROCESS: [i32; 3] = [0, -1, -6];

/// How far up the parent links [`descends_from`] looks.
const MAX_DEPTH: usize = 64;

/// A signal read from the signalfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Its number (real-time ones included).
    pub number: i32,
    /// Sent by the kernel itself (a terminal's signal to its foreground process group).
    pub by_kernel: bool,
    /// The process that sent it, where one did.
    pub sender: Option<i32>,
    /// Read once the command had been started ([`Signals::started`]): a signal sent to the
    /// process group then reached the command too.
    pub after_start: bool,
}

/// The forwarded signals, blocked and read from a signalfd by a thread of their own.
pub struct Signals {
    received: UnboundedReceiver<Received>,
    shared: Arc<Shared>,
    send: UnboundedSender<Received>,
    /// The signals keyfed was started with set to be ignored (`SigIgn`: bit N-1 for signal N).
    ignored: u64,
}

/// What the reading thread and [`Signals::started`] share.
struct Shared {
    fd: SignalFd,
    /// Whether the command has been started; held while a signal is read and tagged, so that
    /// no signal read before the command was started is tagged as after.
    started: Mutex<bool>,
}

impl Signals {
    /// Blocks the forwarded signals in this thread (and so in every thread it starts, the reader
    /// included) and starts reading them. Call it before any thread exists that would not block
    /// them.
    pub fn block() -> anyhow::Result<Self> {
        let set = forwarded();
        set.thread_block().context("cannot block signals")?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .context("cannot open a signalfd")?;
        let shared = Arc::new(Shared {
            fd,
            started: Mutex::new(false),
        });
        let (send, received) = tokio::sync::mpsc::unbounded_channel();
        let (reader, sender) = (Arc::clone(&shared), send.clone());
        std::thread::Builder::new()
            .name("keyfed-signals".to_owned())
            .spawn(move || {
                if let Err(e) = read_signals(&reader, &sender) {
                    tracing::warn!("cannot read signals any more, so none is forwarded: {e}");
                }
            })
            .context("cannot start the thread that reads signals")?;
        Ok(Self {
            received,
            shared,
            send,
            ignored: ignored(),
        })
    }

    /// The next signal received; never, if the reader stopped (it logged why).
    pub async fn next(&mut self) -> Received {
        match self.received.recv().await {
            Some(received) => received,
            None => std::future::pending().await,
        }
    }

    /// Marks the command as started (call it as soon as it is): the signals read until now,
    /// those still waiting in the signalfd included, are tagged as before.
    pub fn started(&self) {
        let mut started = self
            .shared
            .started
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = drain(&self.shared.fd, false, &self.send) {
            tracing::warn!("cannot read signals: {e}");
        }
        *started = true;
    }

    /// Whether keyfed's parent started it with `signal` ignored (`nohup`, a background job's
    /// SIGINT).
    pub fn ignored(&self, signal: i32) -> bool {
        (1..=64).contains(&signal) && self.ignored & (1 << (signal - 1)) != 0
    }
}

/// Reads `shared`'s signalfd until keyfed exits (or nobody listens), sending each signal on.
fn read_signals(shared: &Shared, send: &UnboundedSender<Received>) -> io::Result<()> {
    loop {
        let mut fds = [PollFd::new(&shared.fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let started = shared
            .started
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !drain(&shared.fd, *started, send)? {
            return Ok(());
        }
    }
}

/// Reads every signal waiting in `fd` without waiting, sending each on tagged `after_start`;
/// false once nobody listens.
fn drain(fd: &SignalFd, after_start: bool, send: &UnboundedSender<Received>) -> io::Result<bool> {
    loop {
        match fd.read_signal() {
            Ok(Some(info)) => {
                if send.send(received(&info, after_start)).is_err() {
                    return Ok(false);
                }
            }
            Ok(None) => return Ok(true),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn received(info: &nix::libc::signalfd_siginfo, after_start: bool) -> Received {
    let number = i32::try_from(info.ssi_signo).unwrap_or(0);
    let sender = i32::try_from(info.ssi_pid)
        .ok()
        .filter(|&pid| pid > 0 && SENT_BY_A_PROCESS.contains(&info.ssi_code));
    Received {
        number,
        by_kernel: info.ssi_code == SI_KERNEL,
        sender,
        after_start,
    }
}

/// Every signal but [`NOT_FORWARDED`]: the standard ones and the real-time ones libc leaves to
/// programs (`sigfillset` leaves out those glibc keeps for itself).
fn forwarded() -> SigSet {
    let mut set = SigSet::all();
    for signal in NOT_FORWARDED {
        set.remove(signal);
    }
    set
}

/// The signals this process ignores, as the kernel lists them (`SigIgn` in
/// `/proc/self/status`, a hexadecimal mask: bit N-1 for signal N); none where it cannot be read.
fn ignored() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
            u64::from_str_radix(line.trim(), 16).ok()
        })
        .unwrap_or(0)
}

/// Whether `pid` is `ancestor` or one of its descendants, by the parent links in `/proc`; false
/// where a link cannot be read (that process has ended) or the chain leaves `ancestor`'s
/// (an orphan adopted by init or a subreaper is no longer seen as its).
pub fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut pid = pid;
    for _ in 0..MAX_DEPTH {
        if pid == ancestor {
            return true;
        }
        match parent_of(pid) {
            Some(parent) if parent > 1 => pid = parent,
            _ => return false,
        }
    }
    false
}

fn parent_of(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// A signal's name (`SIGTERM`), or its number for a real-time one.
pub fn name(signal: i32) -> String {
    Signal::try_from(signal).map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_owned())
}

/// Sends `signal` (by number, real-time ones included) to `pid`.
pub fn send(pid: rustix::process::Pid, signal: i32) -> io::Result<()> {
    let signal = rustix::process::Signal::from_raw(signal)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(rustix::process::kill_process(pid, signal)?)
}

/// Ends keyfed by `signal` with its default action, or with status 128 + its number where the
/// signal is ignored (SIGPIPE, or one keyfed's parent set to be ignored) or cannot be sent.
pub fn die_by(signal: i32) -> ! {
    match Signal::try_from(signal) {
        Ok(named) => {
            let _ = SigSet::from(named).thread_unblock();
            let _ = nix::sys::signal::raise(named);
        }
        Err(_) => {
            // nix cannot name one real-time signal, so all of them are unblocked: another one
            // pending would end keyfed first, as it would any program it was sent to.
            let mut realtime = SigSet::all();
            for named in Signal::iterator() {
                realtime.remove(named);
            }
            let _ = realtime.thread_unblock();
            // Sent to the process: the one thread that does not block it, this one, takes it.
            let _ = send(rustix::process::getpid(), signal);
        }
    }
    std::process::exit(128 + signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// issue 12: the terminating signals are forwarded, real-time ones included; the faults,
    /// SIGKILL, SIGSTOP, SIGPIPE and the job-control signals are not.
    #[test]
    fn every_terminating_signal_but_the_faults_is_forwarded() {
        let set = forwarded();
        for signal in [
            Signal::SIGHUP,
            Signal::SIGINT,
            Signal::SIGQUIT,
            Signal::SIGABRT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGALRM,
            Signal::SIGTERM,
            Signal::SIGSTKFLT,
            Signal::SIGXCPU,
            Signal::SIGXFSZ,
            Signal::SIGVTALRM,
            Signal::SIGPROF,
            Signal::SIGIO,
            Signal::SIGPWR,
        ] {
            assert!(set.contains(signal), "{signal} is forwarded");
        }
        for signal in NOT_FORWARDED {
            assert!(!set.contains(signal), "{signal} is not");
        }
        // nix names no real-time signal: the kernel tells which ones this thread blocks.
        set.thread_block().unwrap_or_else(|e| panic!("{e}"));
        let status =
            std::fs::read_to_string("/proc/thread-self/status").unwrap_or_else(|e| panic!("{e}"));
        let blocked = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no SigBlk in {status}"));
        let min = rustix::process::Signal::rt_min().as_raw();
        let max = rustix::process::Signal::rt_max().as_raw();
        assert_eq!((min, max), (34, 64), "glibc keeps 32 and 33");
        for realtime in min..=max {
            assert!(blocked & (1 << (realtime - 1)) != 0, "signal {realtime}");
        }
        let _ = set.thread_unblock();
    }

    /// issue 12: a signal still waiting in the signalfd when the command is started is tagged
    /// as before the start (it may have come before the command existed), so it is forwarded
    /// even if a terminal sent it to the whole process group.
    #[test]
    fn a_signal_waiting_when_the_command_starts_came_before_it() {
        let mut signals = Signals::block().unwrap_or_else(|e| panic!("{e:#}"));
        // Sent to this thread alone (blocked here): only this thread's reads see it, so it
        // waits for `started`.
        nix::sys::signal::raise(Signal::SIGUSR1).unwrap_or_else(|e| panic!("{e}"));
        signals.started();
        let received = signals
            .received
            .try_recv()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((received.number, received.after_start), (10, false));
        assert!(signals.received.try_recv().is_err(), "read once");
        assert!(
            *signals
                .shared
                .started
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        );
    }

    /// issue 12: this process descends from itself and from its parent, not from a sibling or
    /// a pid nobody has.
    #[test]
    fn descent_follows_the_parent_links() {
        let me = rustix::process::getpid().as_raw_nonzero().get();
        let parent = rustix::process::getppid().map_or(1, |p| p.as_raw_nonzero().get());
        assert!(descends_from(me, me));
        assert!(descends_from(me, parent) || parent == 1);
        assert!(!descends_from(parent, me));
        assert!(!descends_from(i32::MAX, me), "no such process");
    }
}
