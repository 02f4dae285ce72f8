//! `keyfed run`: the daemon. Keeps every target fresh, answers the control socket, reloads the
//! configuration on SIGHUP (a bad new configuration is reported and the old one kept) and stops
//! on SIGTERM or SIGINT — also while its first round is still under way.
//!
//! It speaks systemd's notification protocol (`crate::systemd`): READY=1 when `[engine] ready`
//! says (by default once every target has had its first attempt), `EXTEND_TIMEOUT_USEC` every
//! few seconds while a slow first round is within its budget (start jitter, one attempt, the
//! first writes; see `systemd::ready`), a `STATUS=` line summing up the targets whenever it
//! changes, `RELOADING=1` (with `MONOTONIC_USEC=`) then READY=1 around a reload, and
//! `STOPPING=1` before anything slow at shutdown.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use keyfed_core::clock::{Clock, SystemClock};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::{EndpointSettings, Ready, SocketSpec};
use crate::control::server;
use crate::engine::Engine;
use crate::served::Served;
use crate::systemd;
use crate::systemd::status::Reporter;

pub async fn run(path: &Path) -> anyhow::Result<()> {
    daemon(path, false, |_| {}).await
}

/// The daemon's body: `on_ready` sees the engine once it is ready (`[engine] ready`); with
/// `once` the daemon waits for every target's first attempt and stops right after it (for
/// `keyfed demo --once`).
pub async fn daemon(path: &Path, once: bool, on_ready: impl FnOnce(&Engine)) -> anyhow::Result<()> {
    // Watch signals first: SIGHUP's default action would kill a daemon still starting up.
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut config = super::load(path)?;
    if once {
        // `keyfed demo --once` reports its first round and exits: it never waits its turn.
        config.engine.start_jitter = Duration::ZERO;
        config.engine.ready = Ready::All;
    }
    let engine_settings = config.engine;
    let socket = config.control.clone();
    let endpoint = config.endpoint.clone();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let served = Arc::new(Served::build(config, Arc::clone(&clock), None)?);
    // The identity-header pairs of `keyfed exec`/`env` (issue 12): issued on the control
    // socket, taken by the App Service face; kept across reloads.
    let pairs = crate::endpoint::pairs::Pairs::new(endpoint.as_ref(), Arc::clone(&clock));
    let (publish, current) = watch::channel(Arc::clone(&served));
    let status = Reporter::start(current.clone(), Arc::clone(&clock));
    // Every address first, and nothing written before all of them are ours: a second
    // `keyfed run` must fail without touching the running daemon's token file or socket.
    let _running = server::lock(&socket)
        .with_context(|| format!("cannot lock the control socket {}", socket.path.display()))?;
    let fd_limit = crate::caps::raise_fd_limit();
    let bound = endpoint.clone().map(crate::endpoint::bind).transpose()?;
    let listener = server::bind(&socket).await.with_context(|| {
        format!(
            "cannot listen on the control socket {}",
            socket.path.display()
        )
    })?;
    // The endpoint serves before the control socket answers: once that answers, all is up.
    let listeners = match (bound, &endpoint) {
        (Some(bound), Some(settings)) => {
            let wanted = crate::caps::Limits {
                total: settings.max_connections,
                per_user: settings.max_connections_per_user,
            };
            let limits = crate::caps::fit(wanted, fd_limit, 2);
            if limits != wanted {
                tracing::warn!(
                    fd_limit,
                    "endpoint connection caps lowered to {} in all, {} per user, to stay below the file descriptor limit",
                    limits.total,
                    limits.per_user
                );
            }
            Some(crate::endpoint::start(
                bound,
                limits,
                current.clone(),
                Arc::clone(&clock),
                Arc::clone(&pairs),
            )?)
        }
        _ => None,
    };
    let control = tokio::spawn(server::serve(listener, current, fd_limit, pairs));
    let policy = engine_settings.ready;
    if policy == Ready::Immediately {
        // Every address is bound and answers: ready before any upstream call.
        status.running("READY=1");
    }
    let mut loops = served.engine.spawn();
    tracing::info!(
        targets = served.engine.targets().count(),
        socket = %socket.path.display(),
        ready = policy.name(),
        "keyfed running"
    );
    let budget = systemd::ready::budget(&engine_settings);
    // SIGTERM must not wait for a slow first round (a long start_jitter): systemd would wait
    // TimeoutStopSec, then SIGKILL.
    let stop_early = tokio::select! {
        () = systemd::ready::wait(&served.engine, policy, budget, clock.as_ref()) => false,
        _ = term.recv() => true,
        _ = int.recv() => true,
    };
    let mut watchdog = None;
    if !stop_early {
        if policy != Ready::Immediately {
            status.running("READY=1");
        }
        watchdog = systemd::watchdog();
        on_ready(&served.engine);
    }

    if !once && !stop_early {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    status.hold(&systemd::reloading(), "reloading");
                    let running = Arc::clone(&publish.borrow());
                    if let Some(fresh) = reload(path, &socket, endpoint.as_ref(), &clock, &running) {
                        // The old engines stop writing the old configuration's outputs (a
                        // refresh of theirs still in flight finishes without them) and their
                        // loops stop; the new ones took over their state.
                        running.engine.retire();
                        let _ = publish.send(Arc::clone(&fresh));
                        loops = fresh.engine.spawn();
                    }
                    status.running("READY=1");
                }
            }
        }
    }
    // Before anything slow: systemd shows the unit deactivating at once.
    status.hold("STOPPING=1", "stopping");
    tracing::info!("stopping");
    loops.shutdown().await;
    control.abort();
    drop(listeners);
    if let Some(w) = watchdog {
        w.abort();
    }
    server::remove(&socket.path);
    Ok(())
}

/// What to serve under the configuration file, or `None` (logged) when it is invalid.
fn reload(
    path: &Path,
    socket: &SocketSpec,
    endpoint: Option<&EndpointSettings>,
    clock: &Arc<dyn Clock>,
    running: &Served,
) -> Option<Arc<Served>> {
    let config = match super::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload refused, keeping the running configuration: {e:#}");
            return None;
        }
    };
    if config.control != *socket || config.endpoint.as_ref() != endpoint {
        tracing::warn!(
            "the [control] or [endpoint] settings changed; they take effect at the next restart"
        );
    }
    match Served::build(config, Arc::clone(clock), Some(running)) {
        Ok(served) => {
            tracing::info!("configuration reloaded");
            Some(Arc::new(served))
        }
        Err(e) => {
            tracing::error!("reload refused, keeping the running configuration: {e:#}");
            None
        }
    }
}
