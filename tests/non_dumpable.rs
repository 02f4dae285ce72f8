//! keyfed marks itself non-dumpable before it reads a secret (issue 11): the kernel writes no
//! core dump of it, and no other process of its own user can read its memory. What proves it is
//! the kernel's own effect: the `/proc/<pid>` files of a non-dumpable process (`environ`, `mem`,
//! `maps`, …) belong to root, whoever runs it, and the process's user cannot read them. Shown
//! for the daemon and for a one-shot command caught mid-request, each run as an unprivileged
//! user; beside them a plain program of that user, whose files stay its own and readable, shows
//! the check can tell the two apart.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::Instant;

use keyfed_core::emulator::report;

use crate::util::users::{as_user, setpriv};
use crate::util::{API_AUD, Fixture, Serves, as_root_or_skip, held, process, target};

/// The unprivileged user keyfed runs as here.
const UID: u32 = 64_123;

/// Who owns `/proc/<pid>/<file>`, and whether `UID` can read it.
async fn proc_file(pid: u32, file: &str) -> (u32, bool) {
    let path = format!("/proc/{pid}/{file}");
    let owner = std::fs::metadata(&path)
        .map(|m| m.uid())
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let read = as_user(UID, UID, "cat")
        .arg(&path)
        .env_clear()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .unwrap_or_else(|e| panic!("cat {path} as uid {UID}: {e}"));
    (owner, read.success())
}

/// The real uid `pid` runs as (from `/proc/<pid>/status`, readable by all).
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
        .unwrap_or_else(|| panic!("no Uid in /proc/{pid}/status"))
}

/// The name of the program `pid` runs (`/proc/<pid>/comm`), empty when it is gone.
fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_owned()
}

/// Asserts `pid` runs as [`UID`] and is not dumpable; returns how many `/proc` files were
/// checked.
async fn assert_not_dumpable(pid: u32, what: &str) -> usize {
    assert_eq!(uid_of(pid), UID, "{what} runs as the unprivileged user");
    let files = ["environ", "mem", "maps", "auxv"];
    for file in files {
        let (owner, readable) = proc_file(pid, file).await;
        assert_eq!(
            owner, 0,
            "/proc/<pid>/{file} of {what}: owned by root (non-dumpable)"
        );
        assert!(
            !readable,
            "/proc/<pid>/{file} of {what}: unreadable by its own user"
        );
    }
    files.len()
}

/// Makes everything in the fixture's folder belong to [`UID`], so keyfed run as that user can
/// read its configuration and secret and create its socket there.
fn hand_over(fx: &Fixture) {
    fn chown_all(path: &Path) {
        std::os::unix::fs::chown(path, Some(UID), Some(UID))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        if path.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                chown_all(&entry.path());
            }
        }
    }
    chown_all(fx.dir.path());
}

#[tokio::test]
async fn issue_11_keyfed_is_not_dumpable_and_its_memory_is_closed_to_its_own_user() {
    if !as_root_or_skip("issue_11_keyfed_is_not_dumpable_and_its_memory_is_closed_to_its_own_user")
    {
        return;
    }
    let started = Instant::now();
    let mut fx = Fixture::new();
    fx.start_default().await;
    fx.daemon_config(&target("api", "corp", API_AUD, "api-audience"));
    hand_over(&fx);
    let prefix = setpriv(UID, UID);
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();

    // A plain program of the same user: its files are its own, and it may read them — the
    // check below sees the difference.
    let mut plain = tokio::process::Command::new(prefix[0]);
    plain.args(&prefix[1..]).args(["sleep", "30"]).env_clear();
    let plain = process::spawn(
        "sleep as the unprivileged user",
        plain,
        &fx.known,
        Serves::Nothing,
    );
    let pid = plain.id().unwrap_or_else(|| panic!("sleep has no pid"));
    // Running as the user is not enough: between setpriv's setuid and its exec of sleep the
    // kernel keeps the process non-dumpable (its /proc files root's), so wait for the exec.
    crate::util::wait_until("sleep to run as the unprivileged user", async || {
        uid_of(pid) == UID && comm_of(pid) == "sleep"
    })
    .await;
    assert_eq!(
        proc_file(pid, "environ").await,
        (UID, true),
        "a dumpable process's /proc/<pid>/environ is its user's, and readable by it"
    );
    drop(plain);

    // The daemon, once its control socket answers (it has read its secret by then).
    let daemon = fx.daemon_as(&prefix, &[]).await;
    let pid = daemon
        .id()
        .unwrap_or_else(|| panic!("the daemon has no pid"));
    let mut checked = assert_not_dumpable(pid, "keyfed run").await;
    daemon.stop().await.ok();

    // A one-shot command, held while it waits for Keycloak's answer.
    let latch = fx.keycloak().control().hold("/token");
    let config = fx.path("keyfed.toml");
    let config = config.to_str().unwrap_or_default();
    let once = fx.spawn_as(&prefix, &["--config", config, "once"], &[]);
    held(&latch, 1, "keyfed once's token request").await;
    let pid = once
        .id()
        .unwrap_or_else(|| panic!("keyfed once has no pid"));
    checked += assert_not_dumpable(pid, "keyfed once").await;
    latch.release();
    once.wait().await.ok();

    report::held(
        "Secret hygiene: non-dumpable process",
        "keyfed run and keyfed once (caught mid-request), each as an unprivileged user: their \
         /proc/<pid>/environ, mem, maps and auxv belong to root and their own user cannot read \
         them (the kernel's effect of PR_SET_DUMPABLE=0: no core dump, no ptrace, no memory \
         reads by same-user processes), while a plain process of that user keeps its files",
        &format!(
            "2 keyfed processes, {checked} /proc files checked, 1 control process, {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );
}
