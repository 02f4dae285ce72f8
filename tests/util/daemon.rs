//! Long-running keyfed under test: the standard daemon configuration (issuer and control
//! socket), `keyfed run` started and waited for until its control socket answers, its status,
//! and `credential-process` run as a program runs it when no daemon answers.

use std::path::{Path, PathBuf};

use super::process::{self, Process};
use super::{Fixture, Serves, issuer, wait_until, with_config};

impl Fixture {
    /// The standard issuer and `[control] socket` in the fixture's folder, plus `targets`.
    pub fn daemon_config(&self, targets: &str) -> PathBuf {
        self.write_credentials();
        self.config(&format!(
            "{}\n[control]\nsocket = \"keyfed.sock\"\n\n{targets}",
            issuer("corp", "host-secret", "client_secret_basic")
        ))
    }

    /// Starts a long-running `keyfed ARGS` in the fixture's folder (output captured and checked
    /// when it ends), killed when the handle is dropped.
    pub fn spawn(&self, args: &[&str]) -> Process {
        self.spawn_with(args, &[])
    }

    /// [`Fixture::spawn`] with `env` added to the clean environment.
    pub fn spawn_with(&self, args: &[&str], env: &[(&str, &str)]) -> Process {
        self.spawn_as(&[], args, env)
    }

    /// [`Fixture::spawn_with`] behind `prefix` (e.g. `prlimit --nofile=…`, `unshare …`).
    pub fn spawn_as(&self, prefix: &[&str], args: &[&str], env: &[(&str, &str)]) -> Process {
        process::spawn(
            &[prefix, &["keyfed"], args].concat().join(" "),
            self.keyfed_command(prefix, args, env),
            &self.known,
            Serves::for_keyfed(args),
        )
    }

    /// Starts `keyfed --config <dir>/keyfed.toml run` behind `prefix` (see
    /// [`Fixture::spawn_as`]) with `env`, without waiting for it (see [`Fixture::daemon`]).
    pub fn spawn_run(&self, prefix: &[&str], env: &[(&str, &str)]) -> Process {
        let config = self.path("keyfed.toml");
        self.spawn_as(prefix, &with_config(&config, &["run"]), env)
    }

    /// Starts `keyfed run` and waits for its control socket.
    pub async fn daemon(&self) -> Daemon {
        self.daemon_as(&[], &[]).await
    }

    /// [`Fixture::daemon`] behind `prefix` (see [`Fixture::spawn_as`]), with `env` added to the
    /// clean environment.
    pub async fn daemon_as(&self, prefix: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut daemon = self.spawn_run(prefix, env);
        let socket = self.path("keyfed.sock");
        let waiting = format!("{} to open {}", daemon.what(), socket.display());
        wait_until(&waiting, async || {
            if let Some(status) = daemon.exited() {
                panic!(
                    "{} exited ({status}):\n{}",
                    daemon.what(),
                    daemon.log_so_far()
                );
            }
            answers(&socket).await
        })
        .await;
        daemon
    }

    /// The running daemon's view of every target (`keyfed status --json`).
    pub async fn status_json(&self) -> serde_json::Value {
        let run = self.keyfed(&["status", "--json"]).await;
        run.ok();
        serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
    }

    /// `keyfed credential-process <target>` without a daemon (see [`Daemonless`]); creates its
    /// runtime folder.
    pub fn daemonless(&self, target: &str) -> Daemonless {
        let runtime = self.path("runtime");
        std::fs::create_dir_all(&runtime)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", runtime.display()));
        Daemonless {
            runtime,
            config: self.path("keyfed.toml"),
            target: target.to_owned(),
        }
    }
}

/// `keyfed --config <dir>/keyfed.toml credential-process <target>` as a program runs it when no
/// daemon answers: its cache lives under `XDG_RUNTIME_DIR`, here `runtime/` in the fixture's
/// folder. The arguments and environment for [`Fixture::keyfed_raw`] or [`Fixture::spawn_with`].
pub struct Daemonless {
    /// The runtime folder; keyfed keeps its cache in `keyfed/` below it.
    pub runtime: PathBuf,
    config: PathBuf,
    target: String,
}

impl Daemonless {
    pub fn args(&self) -> [&str; 4] {
        [
            "--config",
            self.config.to_str().unwrap_or_default(),
            "credential-process",
            &self.target,
        ]
    }

    pub fn env(&self) -> [(&str, &str); 1] {
        [("XDG_RUNTIME_DIR", self.runtime.to_str().unwrap_or_default())]
    }
}

/// Whether a daemon answers a status request on `socket`: the control socket is bound before
/// the endpoint starts (so a second daemon fails before writing anything) but answers only once
/// everything is up.
pub async fn answers(socket: &Path) -> bool {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = tokio::net::UnixStream::connect(socket).await else {
        return false;
    };
    if stream.write_all(b"\"status\"\n").await.is_err() {
        return false;
    }
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(stream);
    reader.read_line(&mut line).await.is_ok() && line.contains("\"status\"")
}

/// A running `keyfed run`; killed when dropped.
pub type Daemon = Process;
