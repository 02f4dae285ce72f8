//! The shipped systemd units are valid and tightly sandboxed (issue 13: every variant, not only
//! `keyfed.service`): `systemd-analyze verify` accepts each without a warning (the timer with
//! its service), `systemd-analyze security` rates the exposure of each service at most 1.5,
//! each allows what the keyfed command it runs needs, and the folders each writes agree with
//! where keyfed and its clients look — without one unit's runtime folder inside another's.

use std::path::Path;
use std::process::Command;

/// What a unit runs, and so what it must allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runs {
    /// `keyfed run`: the daemon with its endpoint and control socket.
    Daemon,
    /// `keyfed once`: one round of refreshes, then exit.
    Once,
}

/// A shipped service: its file in `systemd/`, the name it is checked under (a template needs an
/// instance), and the units verified with it.
struct Shipped {
    file: &'static str,
    name: &'static str,
    runs: Runs,
    with: &'static [&'static str],
}

const SERVICES: [Shipped; 3] = [
    Shipped {
        file: "keyfed.service",
        name: "keyfed.service",
        runs: Runs::Daemon,
        with: &[],
    },
    Shipped {
        file: "keyfed@.service",
        name: "keyfed@test.service",
        runs: Runs::Daemon,
        with: &[],
    },
    Shipped {
        file: "keyfed-once.service",
        name: "keyfed-once.service",
        runs: Runs::Once,
        with: &["keyfed-once.timer"],
    },
];

fn analyze(args: &[&str]) -> (bool, String, String) {
    let output = Command::new("systemd-analyze")
        .args(args)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze is needed (tests/run installs it): {e}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The text of `systemd/<file>`.
fn source(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `file` copied into `dir` as `name`, running the keyfed under test; its path.
fn install(dir: &Path, file: &str, name: &str) -> String {
    let unit = source(file).replace("/usr/bin/keyfed", env!("CARGO_BIN_EXE_keyfed"));
    let path = dir.join(name);
    std::fs::write(&path, unit).unwrap_or_else(|e| panic!("{e}"));
    path.to_str().unwrap_or_default().to_owned()
}

/// Every value of `key=` in `unit`, in order (a key may be set more than once).
fn values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
        .collect()
}

/// The last value of `key=` in `unit` (the one that counts for a single-valued key).
fn value(unit: &str, key: &str, file: &str) -> String {
    values(unit, key)
        .pop()
        .unwrap_or_else(|| panic!("{file} sets no {key}="))
}

#[test]
fn units_verify_and_are_sandboxed() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut exposures = Vec::new();
    for service in &SERVICES {
        let mut paths = vec![install(dir.path(), service.file, service.name)];
        for other in service.with {
            paths.push(install(dir.path(), other, other));
        }
        // --man=no: the Documentation= man page is the package's; no host has it installed.
        let mut args = vec!["verify", "--man=no"];
        args.extend(paths.iter().map(String::as_str));
        let (ok, _, stderr) = analyze(&args);
        assert!(
            ok && stderr.trim().is_empty(),
            "systemd-analyze verify {}:\n{stderr}",
            paths.join(" ")
        );

        let (_, stdout, stderr) = analyze(&["security", "--offline=true", &paths[0]]);
        assert!(!stderr.contains("Unknown key"), "{stderr}");
        let exposure: f64 = stdout
            .lines()
            .find_map(|l| {
                l.split(&format!("Overall exposure level for {}: ", service.name))
                    .nth(1)
            })
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}"));
        assert!(
            exposure <= 1.5,
            "{}: exposure {exposure}:\n{stdout}",
            service.name
        );
        exposures.push(format!("{} {exposure}", service.name));
    }
    eprintln!(
        "systemd-analyze security exposure: {}",
        exposures.join(", ")
    );
}

/// What keyfed needs from each unit beyond its sandbox (issue 7, every unit since issue 13):
/// the address families of its upstreams and local clients — netlink sockets for the
/// endpoint's peer-uid lookup (NETLINK_SOCK_DIAG; /proc/net is hidden by ProcSubset=pid) where
/// the daemon runs, none where `keyfed once` does — and a file limit well above the endpoint's
/// connection caps.
#[test]
fn unit_allows_what_keyfed_needs() {
    for service in &SERVICES {
        let unit = source(service.file);
        let value = |key: &str| value(&unit, key, service.file);
        let families = value("RestrictAddressFamilies");
        let families: Vec<&str> = families.split_whitespace().collect();
        let mut needed = vec!["AF_UNIX", "AF_INET", "AF_INET6"];
        if service.runs == Runs::Daemon {
            needed.push("AF_NETLINK");
        }
        let mut allowed = families.clone();
        allowed.sort_unstable();
        needed.sort_unstable();
        assert_eq!(allowed, needed, "{}: {families:?}", service.file);
        assert_eq!(value("ProcSubset"), "pid", "{}", service.file);
        let nofile: u64 = value("LimitNOFILE")
            .split(':')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(nofile >= 8192, "{}: LimitNOFILE={nofile}", service.file);
        assert_eq!(value("LimitCORE"), "0", "{}", service.file);
        let exec = value("ExecStart");
        let command = match service.runs {
            Runs::Daemon => " run",
            Runs::Once => " once",
        };
        assert!(exec.ends_with(command), "{}: {exec}", service.file);
    }
}

/// issue 13: each unit may write exactly its runtime folder; a configuration's control socket
/// lies in it by keyfed's own rule (the binary asked, as a client asks); no unit's runtime
/// folder lies inside another's — systemd removes a unit's folder with everything in it when
/// the unit stops, so a folder inside /run/keyfed would vanish when keyfed.service stops; and
/// keyfed-once keeps its folder after its run, or the credentials would go with it.
#[test]
fn the_units_agree_on_their_folders_issue_13() {
    // The instance's runtime folder as systemd makes it before ExecStart (a name of this run's
    // own, removed at the end): keyfed looks for an instance's socket in it when it is there.
    let instance_folder = tempfile::Builder::new()
        .prefix("keyfed-issue13-")
        .tempdir_in("/run")
        .unwrap_or_else(|e| panic!("a folder in /run (tests run as root): {e}"));
    let instance = instance_folder
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("keyfed-"))
        .unwrap_or_else(|| panic!("{}", instance_folder.path().display()));
    let mut folders = Vec::new();
    for service in &SERVICES {
        let unit = source(service.file).replace("%i", instance);
        let value = |key: &str| value(&unit, key, service.file);
        let runtime = format!("/run/{}", value("RuntimeDirectory"));
        assert_eq!(value("ReadWritePaths"), runtime, "{}", service.file);
        assert_eq!(value("RuntimeDirectoryMode"), "0751", "{}", service.file);
        let exec = value("ExecStart");
        let config = exec
            .split_whitespace()
            .skip_while(|w| *w != "--config")
            .nth(1)
            .unwrap_or("/etc/keyfed/keyfed.toml");
        match service.runs {
            Runs::Daemon => {
                // `keyfed status` names the socket it looked for: where clients look.
                let output = Command::new(env!("CARGO_BIN_EXE_keyfed"))
                    .args(["--config", config, "status"])
                    .env_clear()
                    .output()
                    .unwrap_or_else(|e| panic!("{e}"));
                let stderr = String::from_utf8_lossy(&output.stderr);
                let socket = format!("{runtime}/keyfed.sock");
                assert!(
                    stderr.contains(&format!("no keyfed daemon at {socket}")),
                    "{}: clients of {config} must look for {socket}: {stderr}",
                    service.file
                );
            }
            Runs::Once => assert_eq!(
                value("RuntimeDirectoryPreserve"),
                "yes",
                "{}: the files must outlive the run",
                service.file
            ),
        }
        // issue 13 (review): a daemon's restart (an upgrade's try-restart, a crash's
        // Restart=on-failure) must not delete the valid files consumers read; a stop still does.
        if service.runs == Runs::Daemon {
            assert_eq!(
                value("RuntimeDirectoryPreserve"),
                "restart",
                "{}: a restart must keep the credential files",
                service.file
            );
        }
        assert!(
            value("LoadCredential").starts_with("keycloak-secret:/etc/keyfed/"),
            "{}",
            service.file
        );
        folders.push((service.file, runtime));
    }
    for (a, folder) in &folders {
        for (b, other) in &folders {
            assert!(
                !folder.starts_with(&format!("{other}/")),
                "{a}'s {folder} lies inside {b}'s {other}"
            );
        }
    }
}

/// issue 13 (review): every unit names its manual, and keyfed-once's boot run comes from its
/// timer, not from multi-user.target — a oneshot wanted there holds the boot up to
/// TimeoutStartSec= while Keycloak is unreachable.
#[test]
fn the_once_service_is_started_by_its_timer_only_issue_13() {
    for file in [
        "keyfed.service",
        "keyfed@.service",
        "keyfed-once.service",
        "keyfed-once.timer",
    ] {
        assert_eq!(
            values(&source(file), "Documentation"),
            ["man:keyfed(1)"],
            "{file}"
        );
    }
    let service = source("keyfed-once.service");
    assert!(
        !service.lines().any(|l| l.trim() == "[Install]"),
        "keyfed-once.service must not be enabled on its own: its timer starts it"
    );
    let timer = source("keyfed-once.timer");
    assert!(
        !values(&timer, "OnBootSec").is_empty(),
        "keyfed-once.timer must run the service after boot"
    );
    assert_eq!(
        value(&timer, "WantedBy", "keyfed-once.timer"),
        "timers.target"
    );
}
