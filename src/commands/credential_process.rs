//! `keyfed credential-process <target>`: the AWS CLI and SDKs' `credential_process`. Prints the
//! `{"Version":1,…,"Expiration":"…Z"}` document on stdout; errors go to stderr with a non-zero
//! exit.
//!
//! It asks the running daemon over the control socket. With no daemon it performs the exchange
//! itself and keeps the result in a 0600 cache (`$XDG_RUNTIME_DIR/keyfed/`, else
//! `~/.cache/keyfed/`), so repeated CLI calls do not reach Keycloak and STS each time; a lock on
//! the cache makes concurrent calls share one exchange. The wait for that lock is bounded: a
//! call whose exchange hangs holds it at most one attempt timeout, and a call that waited longer
//! exchanges without it.

use std::hash::{Hash as _, Hasher as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use keyfed_core::clock::{Clock, SystemClock, from_unix_seconds, unix_seconds};
use serde::{Deserialize, Serialize};

use crate::config::{self, Exchange};
use crate::control::client::{AskError, ask};
use crate::control::{Request, Response};
use crate::credential::{Credential, credential_process_json};
use crate::exit::UsageError;
use crate::outputs::{FileSpec, write_atomic};
use crate::sources;

/// How long to wait for the daemon (it may be mid-refresh).
const DAEMON_TIMEOUT: Duration = Duration::from_secs(90);

/// How much longer than one attempt a call waits for the cache lock (another call's exchange
/// and its cache write).
const LOCK_SLACK: Duration = Duration::from_secs(5);

/// How often a waiting call tries the cache lock again.
const LOCK_POLL: Duration = Duration::from_millis(10);

pub async fn run(path: &Path, target: &str) -> anyhow::Result<()> {
    let socket = config::control_socket(path, &super::env_var, &super::host())?;
    let request = Request::Credential {
        target: target.to_owned(),
    };
    match ask(&socket, &request, DAEMON_TIMEOUT).await {
        Ok(Response::Credential { kind, document, .. }) if kind == "aws" => {
            crate::stdout::write(format!("{document}\n"))?;
            Ok(())
        }
        Ok(Response::Credential { kind, .. }) => Err(UsageError(format!(
            "target \"{target}\" is of kind {kind}; credential-process serves AWS targets"
        ))
        .into()),
        Ok(Response::Error { message, .. }) => anyhow::bail!("{message}"),
        Ok(Response::Status { .. } | Response::IdentityPair { .. }) => {
            anyhow::bail!("the daemon answered something else")
        }
        Err(AskError::NoDaemon(at)) => {
            tracing::debug!("no daemon at {at}; exchanging directly");
            direct(path, target).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Serialize, Deserialize)]
struct Cached {
    issued_at: u64,
    expires_at: u64,
    document: String,
}

/// The exchange without a daemon, through the cache.
async fn direct(path: &Path, target_name: &str) -> anyhow::Result<()> {
    let mut config = super::load(path)?;
    let Some(target) = config.targets.remove(target_name) else {
        return Err(super::unknown_target(&config, target_name).into());
    };
    if !matches!(target.exchange, Exchange::Aws(_)) {
        return Err(UsageError(format!(
            "target \"{target_name}\" is of kind {}; credential-process serves AWS targets",
            target.exchange.kind()
        ))
        .into());
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let cache = cache_file(path, target_name)?;
    let dir = cache.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the cache folder {}", dir.display()))?;
    // Credentials are cached only in a folder of our own that nobody else can reach.
    let meta =
        std::fs::metadata(dir).with_context(|| format!("cannot inspect {}", dir.display()))?;
    if meta.uid() != rustix::process::geteuid().as_raw() || meta.mode() & 0o077 != 0 {
        anyhow::bail!(
            "the cache folder {} must belong to this user with mode 0700 (it has uid {} and mode {:04o})",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    let attempt_timeout = config.engine.attempt_timeout;
    let _lock = lock_cache(&cache.with_extension("lock"), attempt_timeout + LOCK_SLACK).await?;
    if let Some(document) = fresh_cached(&cache, clock.now()) {
        crate::stdout::write(format!("{document}\n"))?;
        return Ok(());
    }
    let credential = sources::fetch_once(&mut config, &target, &clock).await?;
    let Credential::Aws(aws) = &credential else {
        anyhow::bail!("target \"{target_name}\" did not produce AWS credentials");
    };
    let document = credential_process_json(aws);
    let cached = Cached {
        issued_at: unix_seconds(clock.now()),
        expires_at: unix_seconds(aws.expiration),
        document: document.clone(),
    };
    if let Err(e) = write_atomic(
        &cache,
        serde_json::to_string(&cached)?.as_bytes(),
        FileSpec::PRIVATE,
    ) {
        tracing::warn!("cannot cache the credentials in {}: {e}", cache.display());
    }
    crate::stdout::write(format!("{document}\n"))?;
    Ok(())
}

/// Takes the cache lock, waiting at most `wait` for another call's exchange; `None` when it
/// is still held then (this call exchanges without it rather than fail or hang). The lock file
/// sits in the private cache folder and is opened without following a symlink or blocking.
async fn lock_cache(path: &Path, wait: Duration) -> anyhow::Result<Option<std::fs::File>> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .with_context(|| format!("cannot open the cache lock {}", path.display()))?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut waiting = false;
    loop {
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Some(lock)),
            Err(rustix::io::Errno::WOULDBLOCK) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        if !waiting {
            tracing::debug!("waiting for the cache lock: another call is exchanging");
            waiting = true;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                "the cache lock {} is still held after {} s; exchanging without it",
                path.display(),
                wait.as_secs()
            );
            return Ok(None);
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}

/// The cached document while it is not yet due for refresh by keyfed's own schedule.
fn fresh_cached(cache: &Path, now: std::time::SystemTime) -> Option<String> {
    let cached: Cached = serde_json::from_slice(&std::fs::read(cache).ok()?).ok()?;
    let due = crate::engine::refresh_at(
        from_unix_seconds(cached.issued_at),
        from_unix_seconds(cached.expires_at),
        0.0,
        sources::AWS_CONSUMER_WINDOW,
    );
    (now < due).then_some(cached.document)
}

/// `<runtime or cache dir>/keyfed/<target>-<hash of the config path>.json`.
fn cache_file(config: &Path, target: &str) -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join("keyfed"))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/keyfed")))
        .context("neither XDG_RUNTIME_DIR nor HOME is set, so there is no private place to cache credentials")?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::path::absolute(config)
        .unwrap_or_else(|_| config.to_path_buf())
        .hash(&mut hasher);
    Ok(base.join(format!("{target}-{:016x}.json", hasher.finish())))
}
