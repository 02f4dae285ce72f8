//! `keyfed run`: the daemon. Keeps every target fresh, answers the control socket, tells
//! systemd READY=1 once every target has had its first attempt, reloads the configuration on
//! SIGHUP (a bad new configuration is reported and the old one kept) and stops on SIGTERM or
//! SIGINT.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use keyfed_core::clock::{Clock, SystemClock};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::{EndpointSettings, SocketSpec};
use crate::control::server;
use crate::engine::{Engine, Phase};
use crate::served::Served;
use crate::systemd;

pub async fn run(path: &Path) -> anyhow::Result<()> {
    daemon(path, false, |_| {}).await
}

/// The daemon's body: `on_ready` sees the engine once every target has had its first attempt;
/// with `once` the daemon stops right after it (for `keyfed demo --once`).
pub async fn daemon(path: &Path, once: bool, on_ready: impl FnOnce(&Engine)) -> anyhow::Result<()> {
    // Watch signals first: SIGHUP's default action would kill a daemon still starting up.
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut config = super::load(path)?;
    if once {
        // `keyfed demo --once` reports its first round and exits: it never waits its turn.
        config.engine.start_jitter = Duration::ZERO;
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
    let mut loops = served.engine.spawn();
    tracing::info!(
        targets = served.engine.targets().count(),
        socket = %socket.path.display(),
        "keyfed running"
    );
    if !engine_settings.start_jitter.is_zero() {
        // READY=1 waits for the first round, which `start_jitter` delays: tell systemd, so the
        // unit's start timeout (90 s by default) does not kill a daemon still waiting its turn.
        let longest = engine_settings.start_jitter + engine_settings.attempt_timeout + FIRST_WRITES;
        systemd::notify(&format!("EXTEND_TIMEOUT_USEC={}", longest.as_micros()));
    }
    first_round(&served.engine).await;
    systemd::notify("READY=1");
    let watchdog = systemd::watchdog();
    on_ready(&served.engine);

    if !once {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    systemd::notify("RELOADING=1");
                    let running = Arc::clone(&publish.borrow());
                    if let Some(fresh) = reload(path, &socket, endpoint.as_ref(), &clock, &running) {
                        // The old engines stop writing the old configuration's outputs (a
                        // refresh of theirs still in flight finishes without them) and their
                        // loops stop; the new ones took over their state.
                        running.engine.retire();
                        let _ = publish.send(Arc::clone(&fresh));
                        loops = fresh.engine.spawn();
                    }
                    systemd::notify("READY=1");
                }
            }
        }
    }
    systemd::notify("STOPPING=1");
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

/// How long readiness waits for the first round's output files: writes run on threads of
/// their own and a stuck one (a merge lock held by someone else) must not hold READY=1 back.
const FIRST_WRITES: Duration = Duration::from_secs(10);

/// Waits until every target has finished its first attempt, successful or not, and (for a
/// while) until its outputs are written.
async fn first_round(engine: &Engine) {
    loop {
        let pending = engine.targets().any(|t| {
            let s = t.snapshot();
            matches!(s.phase, Phase::Pending | Phase::Refreshing) && s.last_error.is_none()
        });
        if !pending {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if tokio::time::timeout(FIRST_WRITES, engine.outputs_written())
        .await
        .is_err()
    {
        tracing::warn!("some outputs are still being written; ready without them");
    }
}
