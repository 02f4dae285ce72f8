//! The systemd notification protocol (`sd_notify`): one datagram to `$NOTIFY_SOCKET`. Does
//! nothing when keyfed does not run under systemd with `Type=notify`. `ready` decides when
//! `keyfed run` is ready (`[engine] ready`) and keeps systemd's start timeout extended while a
//! slow first round is within its budget; `status` keeps the one-line `STATUS=` summary of the
//! targets that `systemctl status` shows.

pub mod ready;
pub mod status;
#[cfg(test)]
mod testing;

use std::os::unix::net::UnixDatagram;

/// Whether systemd listens for notifications (`$NOTIFY_SOCKET` is set).
pub fn listening() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Sends `state` (e.g. `READY=1`) to systemd, if it listens.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // An abstract socket address.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)
            }
            None => socket.send_to(state.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd ({state}): {e}");
    }
}

/// `RELOADING=1` with the `MONOTONIC_USEC=` systemd 253 and later want beside it (`Type=
/// notify-reload`): when the reload began, in microseconds of `CLOCK_MONOTONIC`.
pub fn reloading() -> String {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = u64::try_from(now.tv_sec).unwrap_or_default() * 1_000_000
        + u64::try_from(now.tv_nsec).unwrap_or_default() / 1_000;
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

/// Pings the systemd watchdog at half of `WatchdogSec` for as long as the returned task runs;
/// `None` when no watchdog is configured.
pub fn watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let period = std::time::Duration::from_micros(usec / 2).max(std::time::Duration::from_secs(1));
    Some(tokio::spawn(async move {
        loop {
            notify("WATCHDOG=1");
            tokio::time::sleep(period).await;
        }
    }))
}
