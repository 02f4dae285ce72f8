//! The shipped systemd unit is valid and tightly sandboxed: `systemd-analyze verify` accepts it
//! without a warning, and `systemd-analyze security` rates its exposure at most 1.5.

use std::process::Command;

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

#[test]
fn unit_verifies_and_is_sandboxed() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/keyfed.service");
    let unit = std::fs::read_to_string(&source)
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("/usr/bin/keyfed", env!("CARGO_BIN_EXE_keyfed"));
    let path = dir.path().join("keyfed.service");
    std::fs::write(&path, unit).unwrap_or_else(|e| panic!("{e}"));
    let path = path.to_str().unwrap_or_default();

    let (ok, _, stderr) = analyze(&["verify", path]);
    assert!(
        ok && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );

    let (_, stdout, stderr) = analyze(&["security", "--offline=true", path]);
    assert!(!stderr.contains("Unknown key"), "{stderr}");
    let exposure: f64 = stdout
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for keyfed.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}"));
    assert!(exposure <= 1.5, "exposure {exposure}:\n{stdout}");
}

/// What keyfed needs from the unit beyond its sandbox (issue 7): netlink sockets for the
/// endpoint's peer-uid lookup (NETLINK_SOCK_DIAG; /proc/net is hidden by ProcSubset=pid), and
/// a file limit well above the endpoint's connection caps.
#[test]
fn unit_allows_what_keyfed_needs() {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/keyfed.service");
    let unit = std::fs::read_to_string(&source).unwrap_or_else(|e| panic!("{e}"));
    let value = |key: &str| {
        unit.lines()
            .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .next_back()
            .unwrap_or_else(|| panic!("the unit sets no {key}="))
            .to_owned()
    };
    let families = value("RestrictAddressFamilies");
    for family in ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"] {
        assert!(
            families.split_whitespace().any(|f| f == family),
            "{families}"
        );
    }
    assert_eq!(value("ProcSubset"), "pid");
    let nofile: u64 = value("LimitNOFILE")
        .split(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(nofile >= 8192, "LimitNOFILE={nofile}");
}
