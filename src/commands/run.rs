//! `keyfed run`: the daemon. Keeps every target fresh, answers the control socket, tells
//! systemd READY=1 once every target has had its first attempt, reloads the configuration on
//! SIGHUP (a bad new configuration is reported and the old one kept) and stops on SIGTERM or
//! SIGINT.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use keyfed_core::clock::SystemClock;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::control::server::{self, SocketSpec};
use crate::engine::{Engine, Phase};
use crate::{sources, systemd};

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
    let config = super::load(path)?;
    let socket = config.control.clone();
    let engine = Arc::new(sources::engine(config, Arc::new(SystemClock))?);
    let listener = server::bind(&socket).await.with_context(|| {
        format!(
            "cannot listen on the control socket {}",
            socket.path.display()
        )
    })?;
    let (engines, current) = watch::channel(Arc::clone(&engine));
    let control = tokio::spawn(server::serve(listener, current));
    let mut loops = engine.spawn();
    tracing::info!(
        targets = engine.targets().count(),
        socket = %socket.path.display(),
        "keyfed running"
    );
    first_round(&engine).await;
    systemd::notify("READY=1");
    let watchdog = systemd::watchdog();
    on_ready(&engine);

    if !once {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    systemd::notify("RELOADING=1");
                    if let Some(fresh) = reload(path, &socket) {
                        loops = fresh.spawn();
                        let _ = engines.send(fresh);
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
    if let Some(w) = watchdog {
        w.abort();
    }
    server::remove(&socket.path);
    Ok(())
}

/// The new engine from the configuration file, or `None` (logged) when it is invalid.
fn reload(path: &Path, socket: &SocketSpec) -> Option<Arc<Engine>> {
    let config = match super::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload refused, keeping the running configuration: {e:#}");
            return None;
        }
    };
    if config.control != *socket {
        tracing::warn!("the control socket settings changed; they take effect at the next restart");
    }
    match sources::engine(config, Arc::new(SystemClock)) {
        Ok(engine) => {
            tracing::info!("configuration reloaded");
            Some(Arc::new(engine))
        }
        Err(e) => {
            tracing::error!("reload refused, keeping the running configuration: {e:#}");
            None
        }
    }
}

/// Waits until every target has finished its first attempt, successful or not.
async fn first_round(engine: &Engine) {
    loop {
        let pending = engine.targets().any(|t| {
            let s = t.snapshot();
            matches!(s.phase, Phase::Pending | Phase::Refreshing) && s.last_error.is_none()
        });
        if !pending {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
