//! The shipped package under a real service manager (issue 13): systemd 252 booted with
//! `systemd-nspawn -b` in a debootstrapped Debian tree (`tests/systemd/rootfs`, its path in
//! `KEYFED_TEST_SYSTEMD_ROOT`), keyfed's `.deb` (`tests/package/build`, its path in
//! `KEYFED_TEST_DEB`) installed into it and driven with the commands the README's "Run as a
//! service" section gives an operator, run inside the container through `nsenter`.
//!
//! The container shares the host's network namespace, so keyfed in it reaches the emulators the
//! test starts on 127.0.0.1, and the test reaches keyfed's endpoint. It boots on an overlay of
//! the cached tree (or a copy where overlayfs is not available), removed when the test ends, so
//! the cache stays clean. The unit runs as shipped: no drop-in loosens its sandbox.
//!
//! Proven: the package installs (its user created, nothing started), `systemctl enable --now`
//! starts keyfed under the full sandbox and it reports READY, its outputs have the promised
//! owners, groups and modes, a consumer unit with the shipped drop-in reads its credentials,
//! `systemctl reload` keeps them, `systemctl stop` is clean, the journal carries keyfed's
//! priorities, and nothing keyfed does is refused by the sandbox.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Fixture, Serves, curl_as, status_of, text_of, wait_until_within};

/// The artifacts the proof needs; `None` (with a `SKIPPED:` line) only when
/// `KEYFED_TEST_ALLOW_SKIP=1` says to skip knowingly.
fn artifacts(test: &str) -> Option<(PathBuf, PathBuf)> {
    let deb = std::env::var_os("KEYFED_TEST_DEB");
    let root = std::env::var_os("KEYFED_TEST_SYSTEMD_ROOT");
    if let (Some(deb), Some(root)) = (deb, root) {
        return Some((PathBuf::from(deb), PathBuf::from(root)));
    }
    let reason = "KEYFED_TEST_DEB (tests/package/build prints it) and KEYFED_TEST_SYSTEMD_ROOT \
                  (tests/systemd/rootfs prints it) must both be set";
    if std::env::var("KEYFED_TEST_ALLOW_SKIP").as_deref() == Ok("1") {
        let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
        return None;
    }
    panic!("{test}: {reason}; run tests/run, or set KEYFED_TEST_ALLOW_SKIP=1 to skip it");
}

/// A booted container on a scratch root; everything is killed and removed when dropped, also
/// when the test fails half-way.
struct Container {
    /// Holds `upper`, `work` and `root` (the overlay, or the copy).
    scratch: tempfile::TempDir,
    root: PathBuf,
    overlay: bool,
    nspawn: std::process::Child,
    /// The container's PID 1 (systemd), as the host sees it: `nsenter -t` enters through it.
    init: u32,
}

impl Container {
    /// Boots `tree` (never written to) and waits for systemd to reach `running`.
    fn boot(tree: &Path) -> Self {
        let scratch = tempfile::Builder::new()
            .prefix("systemd-boot-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap_or_else(|e| panic!("scratch folder: {e}"));
        let root = scratch.path().join("root");
        let upper = scratch.path().join("upper");
        let work = scratch.path().join("work");
        for dir in [&root, &upper, &work] {
            std::fs::create_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            tree.display(),
            upper.display(),
            work.display()
        );
        let overlay = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&root)
            .status()
            .is_ok_and(|s| s.success());
        if !overlay {
            // Slower (a few seconds for ~250 MB), but works on any filesystem.
            let copied = Command::new("cp")
                .args(["-a", "--reflink=auto", "-T"])
                .arg(tree)
                .arg(&root)
                .status()
                .unwrap_or_else(|e| panic!("cp: {e}"));
            assert!(copied.success(), "cannot copy {}", tree.display());
        }
        let log = std::fs::File::create(scratch.path().join("console.log"))
            .unwrap_or_else(|e| panic!("{e}"));
        let log2 = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
        // No machined on the host (--register=no) and no host systemd to make a scope
        // (--keep-unit); the console goes to the log for a failing test's message.
        let nspawn = Command::new("systemd-nspawn")
            .arg("--directory")
            .arg(&root)
            .args(["--register=no", "--keep-unit", "--boot", "--console=pipe"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("systemd-nspawn (package systemd-container; tests/run installs it): {e}")
            });
        let mut container = Self {
            scratch,
            root,
            overlay,
            init: 0,
            nspawn,
        };
        container.init = container.wait_for_init();
        let started = Instant::now();
        loop {
            let state = container.run("systemctl is-system-running");
            if matches!(state.stdout.trim(), "running" | "degraded") {
                assert_eq!(
                    state.stdout.trim(),
                    "running",
                    "failed units after boot:\n{}",
                    container.sh("systemctl --failed --no-pager")
                );
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "systemd did not reach running (last state {:?}):\n{}",
                state.stdout.trim(),
                container.console()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        container
    }

    /// The pid of systemd-nspawn's child that is the container's PID 1.
    fn wait_for_init(&mut self) -> u32 {
        let pid = self.nspawn.id();
        let started = Instant::now();
        loop {
            // systemd-nspawn forks once: its only child is the container's init.
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            if let Some(child) = children.split_whitespace().next()
                && let Ok(child) = child.parse::<u32>()
                && std::fs::read_link(format!("/proc/{child}/exe"))
                    .is_ok_and(|exe| exe.ends_with("systemd"))
            {
                return child;
            }
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                panic!("systemd-nspawn ended ({status}):\n{}", self.console());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no container init under systemd-nspawn:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.scratch.path().join("console.log")).unwrap_or_default()
    }

    /// Runs `script` with the container's sh, in all its namespaces, as its root.
    fn run(&self, script: &str) -> Out {
        let output = Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-a", "/bin/sh", "-c", script])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("SYSTEMD_PAGER", "")
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nsenter: {e}"));
        Out {
            script: script.to_owned(),
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs `script`, which must succeed; its standard output.
    fn sh(&self, script: &str) -> String {
        let out = self.run(script);
        assert!(
            out.ok,
            "in the container: {}\nstdout:\n{}\nstderr:\n{}\njournal:\n{}",
            out.script,
            out.stdout,
            out.stderr,
            self.run("journalctl --no-pager -u keyfed -u my-app -n 80")
                .stdout
        );
        out.stdout
    }

    /// `systemctl show keyfed -p KEY`'s value.
    fn property(&self, unit: &str, key: &str) -> String {
        self.sh(&format!("systemctl show {unit} --value -p {key}"))
            .trim()
            .to_owned()
    }

    /// A file of the container's own, written from the host (before it is read inside).
    fn put(&self, path: &str, content: &[u8]) {
        let at = self.root.join(path.trim_start_matches('/'));
        std::fs::write(&at, content).unwrap_or_else(|e| panic!("{}: {e}", at.display()));
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill, killpg};
        use nix::unistd::Pid;
        // Killing a PID namespace's init kills every process in it; then systemd-nspawn and
        // whatever it left in its process group.
        if self.init != 0 {
            let _ = kill(Pid::from_raw(self.init as i32), Signal::SIGKILL);
        }
        let _ = killpg(Pid::from_raw(self.nspawn.id() as i32), Signal::SIGKILL);
        let _ = self.nspawn.wait();
        if self.overlay {
            // Lazily: a mount systemd-nspawn left behind must not keep the scratch folder.
            let _ = Command::new("umount").arg("-l").arg(&self.root).status();
        }
        // The TempDir removes the scratch folder (the upper layer or the copy) after this.
    }
}

/// One command's outcome in the container.
struct Out {
    script: String,
    ok: bool,
    stdout: String,
    stderr: String,
}

/// The consumer the drop-in example serves: a oneshot running as a user of its own, which
/// copies what it read (through `AWS_SHARED_CREDENTIALS_FILE`, as the drop-in sets it) into its
/// state folder for the test to compare.
const CONSUMER: &str = "[Unit]
Description=a program that uses keyfed's AWS credentials

[Service]
Type=oneshot
User=my-app
Group=my-app
StateDirectory=my-app
ExecStart=/bin/sh -c 'cat \"$AWS_SHARED_CREDENTIALS_FILE\" > /var/lib/my-app/seen'
";

/// The shipped consumer drop-in, adapted as its comments say (nothing to adapt for an AWS
/// target named `aws-prod` whose output is that path).
fn consumer_drop_in() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/consumer-aws.conf");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// Worker threads to spare: the container is driven with blocking commands while the emulators
// answer keyfed on the same runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_package_runs_under_a_real_systemd_issue_13() {
    let test = "systemd_boot::the_package_runs_under_a_real_systemd_issue_13";
    let Some((deb, tree)) = artifacts(test) else {
        return;
    };
    let whole = Instant::now();
    assert!(deb.is_file(), "no package at {}", deb.display());
    assert!(
        tree.join(".complete").is_file(),
        "{} is not a finished tree of tests/systemd/rootfs",
        tree.display()
    );

    // The emulators on host loopback; the container shares the host's network.
    let (mut fx, entra) = Fixture::azure().await;
    fx.start_sts().await;
    let gcp = fx.start_gcp().await;
    let endpoint_port = crate::util::free_port();
    let aws = fx
        .aws_target(
            "aws-prod",
            "{ kind = \"aws-credentials\", path = \"/run/keyfed/aws-prod/credentials\", mode = \"0640\", group = \"my-app\" }, \
             { kind = \"credential-process-json\", path = \"/run/keyfed/aws-prod/credential-process.json\" }",
        )
        + "allow_users = [\"my-app\"]\n";
    let gcp_target = fx.gcp_target(
        &gcp,
        "gcp",
        "",
        "{ kind = \"gcp-access-token\", path = \"/run/keyfed/gcp/access-token.json\" }",
    );
    let azure = fx
        .azure_target(
            &entra,
            "azure",
            crate::util::azure::APP,
            &["https://management.azure.com"],
            "{ kind = \"azure-access-token\", path = \"/run/keyfed/azure/management.json\" }",
        )
        .replace(
            "ca_file = \"entra-ca.pem\"",
            "ca_file = \"/etc/keyfed/entra-ca.pem\"",
        );
    let issuer = fx.keycloak().issuer_url();
    let config = format!(
        "[issuers.corp]\nurl = \"{issuer}\"\nclient_id = \"host-secret\"\n\
         client_secret_file = \"${{CREDENTIALS_DIRECTORY}}/keycloak-secret\"\n\n\
         {aws}\n{gcp_target}\n{azure}\n\
         [endpoint]\nlisten = [\"127.0.0.1:{endpoint_port}\"]\nimds_target = \"aws-prod\"\n"
    );

    let boot = Instant::now();
    let c = Container::boot(&tree);
    let boot_time = boot.elapsed();

    // The package installs as the README says; its maintainer scripts make the user and start
    // nothing.
    let deb_name = deb
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_else(|| panic!("{}", deb.display()))
        .to_owned();
    std::fs::copy(&deb, c.root.join("root").join(&deb_name))
        .unwrap_or_else(|e| panic!("copy {}: {e}", deb.display()));
    c.sh(&format!("cd /root && apt install -y -q ./{deb_name}"));
    c.sh("id keyfed");
    assert_eq!(
        c.property("keyfed", "ActiveState"),
        "inactive",
        "the package started keyfed"
    );
    let enabled_at_install = c.run("systemctl is-enabled keyfed").stdout;

    // The operator's configuration and secret, and the consumer's user.
    c.put("/root/keyfed.toml", config.as_bytes());
    c.put(
        "/etc/keyfed/entra-ca.pem",
        &std::fs::read(fx.entra_ca()).unwrap_or_else(|e| panic!("{e}")),
    );
    c.put("/root/keycloak-secret", crate::util::SECRET.as_bytes());
    c.sh(
        "install -m 0640 -g keyfed /root/keyfed.toml /etc/keyfed/keyfed.toml \
          && install -m 0600 /root/keycloak-secret /etc/keyfed/keycloak-secret \
          && rm /root/keyfed.toml /root/keycloak-secret \
          && useradd --system --no-create-home --shell /usr/sbin/nologin my-app",
    );

    // As the consumer drop-in's comments say: keyfed (no CAP_CHOWN) may give its output the
    // group my-app only as a member of it.
    c.sh("mkdir -p /etc/systemd/system/keyfed.service.d");
    c.put(
        "/etc/systemd/system/keyfed.service.d/my-app.conf",
        b"[Service]\nSupplementaryGroups=my-app\n",
    );
    c.sh("systemctl daemon-reload");

    // Type=notify: `enable --now` returns once keyfed said READY=1 (or failed).
    let start = Instant::now();
    let started = c.run("systemctl enable --now keyfed");
    let start_to_ready = start.elapsed();
    assert!(
        started.ok,
        "systemctl enable --now keyfed:\n{}{}\n{}",
        started.stdout,
        started.stderr,
        c.run("journalctl -u keyfed --no-pager").stdout
    );
    assert_eq!(c.property("keyfed", "ActiveState"), "active");
    assert_eq!(c.property("keyfed", "SubState"), "running");
    let status_text = c.property("keyfed", "StatusText");
    assert!(
        status_text.contains("3 targets"),
        "STATUS= does not sum up the targets: {status_text:?}"
    );
    let main_pid = c.property("keyfed", "MainPID");

    // The outputs, with the promised owners, groups and modes.
    let stat = |path: &str| {
        c.sh(&format!("stat -c '%U:%G %a %F' {path}"))
            .trim()
            .to_owned()
    };
    for (path, expected) in [
        ("/run/keyfed", "keyfed:keyfed 751 directory"),
        ("/run/keyfed/keyfed.sock", "keyfed:keyfed 660 socket"),
        ("/run/keyfed/aws-prod", "keyfed:my-app 750 directory"),
        (
            "/run/keyfed/aws-prod/credentials",
            "keyfed:my-app 640 regular file",
        ),
        (
            "/run/keyfed/aws-prod/credential-process.json",
            "keyfed:keyfed 600 regular file",
        ),
        ("/run/keyfed/gcp", "keyfed:keyfed 700 directory"),
        (
            "/run/keyfed/gcp/access-token.json",
            "keyfed:keyfed 600 regular file",
        ),
        (
            "/run/keyfed/azure/management.json",
            "keyfed:keyfed 600 regular file",
        ),
    ] {
        assert_eq!(
            stat(path),
            expected,
            "{path}; keyfed's journal:\n{}",
            c.sh("journalctl -u keyfed --no-pager -o cat")
        );
    }
    let credentials = c.sh("cat /run/keyfed/aws-prod/credentials");
    assert!(
        credentials.contains("aws_access_key_id"),
        "not AWS credentials:\n{credentials}"
    );
    know_credentials(&fx, &credentials);

    // The endpoint answers from the container: root (the test) gets the credentials, a user
    // allow_users does not name is refused — which needs the peer's uid from NETLINK_SOCK_DIAG,
    // an address family the unit must allow — and that refusal is keyfed's warning below.
    let base = format!("http://127.0.0.1:{endpoint_port}");
    let http = crate::util::http::client();
    let token = text_of(
        http.put(format!("{base}/latest/api/token"))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "60"),
    )
    .await;
    fx.know("an IMDS session token", &token);
    assert_eq!(
        status_of(
            http.get(format!(
                "{base}/latest/meta-data/iam/security-credentials/aws-prod"
            ))
            .header("X-aws-ec2-metadata-token", &token)
        )
        .await,
        200
    );
    let (refused, _) = curl_as(
        65_534,
        65_534,
        &[
            "-H",
            &format!("X-aws-ec2-metadata-token: {token}"),
            &format!("{base}/latest/meta-data/iam/security-credentials/aws-prod"),
        ],
    )
    .await;
    assert_ne!(refused, "200", "nobody got credentials allow_users denies");

    // A consumer unit with the shipped drop-in reads the credentials as its own user.
    c.put("/etc/systemd/system/my-app.service", CONSUMER.as_bytes());
    c.sh("mkdir -p /etc/systemd/system/my-app.service.d");
    c.put(
        "/etc/systemd/system/my-app.service.d/keyfed.conf",
        consumer_drop_in().as_bytes(),
    );
    c.sh("systemctl daemon-reload && systemctl start my-app");
    assert_eq!(c.property("my-app", "Result"), "success");
    assert_eq!(c.sh("cat /var/lib/my-app/seen"), credentials);

    // Reload: the same process, the same credentials (an unchanged target keeps them), and the
    // journal shows it.
    c.sh("systemctl reload keyfed");
    let journal = |c: &Container| c.sh("journalctl -u keyfed --no-pager -o cat");
    wait_until_within(
        Duration::from_secs(15),
        "keyfed to log the reload",
        async || journal(&c).contains("configuration reloaded"),
    )
    .await;
    assert_eq!(c.property("keyfed", "MainPID"), main_pid);
    assert_eq!(c.property("keyfed", "ActiveState"), "active");
    assert_eq!(
        c.sh("cat /run/keyfed/aws-prod/credentials"),
        credentials,
        "the reload lost or replaced the credentials"
    );
    assert_eq!(
        stat("/run/keyfed/aws-prod/credentials"),
        "keyfed:my-app 640 regular file"
    );

    // Stop: clean, with STOPPING=1 and the runtime folder gone.
    c.sh("systemctl stop keyfed");
    assert_eq!(c.property("keyfed", "ActiveState"), "inactive");
    assert_eq!(c.property("keyfed", "Result"), "success");
    assert!(
        !c.run("test -e /run/keyfed").ok,
        "/run/keyfed outlived keyfed"
    );
    let lines = journal(&c);
    assert!(lines.contains("stopping"), "no 'stopping' line:\n{lines}");

    // The journal: keyfed's own lines carry their priorities (info 6, the refusal's warning 4).
    let entries = c.sh("journalctl -u keyfed -o json --no-pager _COMM=keyfed");
    let priorities = priorities(&entries);
    assert!(
        priorities
            .iter()
            .any(|(p, m)| p == "6" && m.contains("configuration reloaded")),
        "no info line at priority 6: {priorities:?}"
    );
    assert!(
        priorities.iter().any(|(p, m)| p == "4"
            && m.contains("credentials refused to this uid")
            && m.contains("65534")),
        "no warning at priority 4 naming the refused uid: {priorities:?}"
    );

    // Nothing keyfed did was refused by the sandbox: no EPERM/EACCES, no seccomp kill, no
    // namespace or credential set-up failure, in anything systemd or keyfed logged for keyfed's
    // unit or the consumer's. (The rest of the boot is the container's own: dbus-daemon, for
    // one, may not raise its file limit in it.)
    let whole_journal = c.sh("journalctl -b --no-pager -o cat -u keyfed -u my-app");
    for refusal in [
        "Operation not permitted",
        "Permission denied",
        "EPERM",
        "EACCES",
        "SIGSYS",
        "status=31",
        "status=226",
        "status=243",
    ] {
        assert!(
            !whole_journal.contains(refusal),
            "the journal shows {refusal:?}:\n{whole_journal}"
        );
    }
    // keyfed's own output, journal included, holds no secret.
    fx.check_output(
        "keyfed run (the journal)",
        Serves::Nothing,
        "",
        &whole_journal,
    );

    let _ = writeln!(
        std::io::stderr(),
        "systemd_boot (issue 13): boot to running {boot_time:.2?}, enable --now to READY \
         {start_to_ready:.2?}, whole test {:.2?}; overlay: {}; enabled after install: {}; \
         StatusText={status_text:?}",
        whole.elapsed(),
        c.overlay,
        enabled_at_install.trim(),
    );
}

/// Makes the keys in an AWS credentials file known secrets.
fn know_credentials(fx: &Fixture, ini: &str) {
    for line in ini.lines() {
        if let Some((key, value)) = line.split_once('=')
            && matches!(key.trim(), "aws_secret_access_key" | "aws_session_token")
        {
            fx.know("an AWS credential from the container", value.trim());
        }
    }
}

/// `(PRIORITY, MESSAGE)` of each journal entry in `json` (one object a line).
fn priorities(json: &str) -> Vec<(String, String)> {
    json.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|entry| {
            let field = |name: &str| entry[name].as_str().unwrap_or_default().to_owned();
            (field("PRIORITY"), field("MESSAGE"))
        })
        .collect()
}

/// A host without CA certificates (a minimal Debian, before `ca-certificates`) used to stop
/// keyfed with only "cannot build the HTTP client: builder error" (issue 13): the cause and the
/// fix are named now. rustls-native-certs reads only `SSL_CERT_FILE`/`SSL_CERT_DIR` when set,
/// which stands in for an empty trust store.
#[tokio::test]
async fn an_empty_trust_store_is_explained_issue_13() {
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target("aws", ""));
    fx.keyfed_with(
        &["once"],
        &[
            ("SSL_CERT_FILE", "/nonexistent/ca.pem"),
            ("SSL_CERT_DIR", "/nonexistent"),
        ],
    )
    .await
    .fails_with(1)
    .says("No CA certificates were loaded from the system")
    .says("ca-certificates");
}
