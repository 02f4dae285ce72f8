//! Issue 7's endpoint-core defects, each through the real daemon: DNS rebinding (a foreign
//! `Host`, `Origin` or `Sec-Fetch-*` is refused on every face), a second `keyfed run` that must
//! not break the first, per-user access with `/proc/net` hidden as the shipped unit hides it, a
//! local user holding connections up to the file limit, and status and readiness bodies that name
//! only the caller's targets.

use std::process::Stdio;
use std::time::Duration;

use keyfed_core::emulator::Fault;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::util::{Fixture, wait_until};

async fn fixture() -> Fixture {
    let mut fx = Fixture::new();
    fx.start_default().await;
    fx.start_sts().await;
    fx
}

/// One HTTP/1.1 request written by hand, so `Host` and every other header are exactly as given.
/// Returns the status and body.
async fn raw(base: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if method == "PUT" {
        request.push_str("Content-Length: 0\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Request headers as name and value.
type Headers<'a> = Vec<(&'a str, &'a str)>;

fn join<'a>(a: &[(&'a str, &'a str)], b: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    a.iter().chain(b).copied().collect()
}

/// Issue 7, defect 1 (DNS rebinding): with the same headers and tokens an SDK sends, a request
/// whose `Host` names a foreign site, or that carries `Origin` or `Sec-Fetch-*`, gets 403 on
/// every face — and without those, the same request is served.
#[tokio::test]
async fn rebound_and_browser_requests_are_refused_on_every_face() {
    let fx = fixture().await;
    let base = fx.endpoint_config("", "allowed_hosts = [\"metadata.test\"]\n");
    let daemon = fx.daemon().await;
    let own = base.trim_start_matches("http://").to_owned();
    wait_until("the first credential", async || {
        raw(&base, "GET", "/readyz", &[("Host", &own)]).await.0 == 200
    })
    .await;
    let ttl = ("X-aws-ec2-metadata-token-ttl-seconds", "60");
    let (status, session) = raw(&base, "PUT", "/latest/api/token", &[("Host", &own), ttl]).await;
    assert_eq!(status, 200);
    let container = fx.container_token();
    let faces: Vec<(&str, &str, Headers)> = vec![
        ("PUT", "/latest/api/token", vec![ttl]),
        (
            "GET",
            "/latest/meta-data/iam/security-credentials/",
            vec![("X-aws-ec2-metadata-token", session.as_str())],
        ),
        (
            "GET",
            "/latest/meta-data/iam/security-credentials/aws",
            vec![("X-aws-ec2-metadata-token", session.as_str())],
        ),
        (
            "GET",
            "/aws/app",
            vec![("Authorization", container.as_str())],
        ),
        ("GET", "/healthz", vec![]),
        ("GET", "/readyz", vec![]),
        ("GET", "/metrics", vec![]),
    ];
    let foreign = format!(
        "evil.example:{}",
        own.rsplit(':').next().unwrap_or_default()
    );
    for (method, path, headers) in &faces {
        let served = raw(&base, method, path, &join(headers, &[("Host", &own)])).await;
        assert_eq!(
            served.0, 200,
            "{method} {path} with its own Host: {}",
            served.1
        );
        let named = raw(
            &base,
            method,
            path,
            &join(headers, &[("Host", "metadata.test")]),
        )
        .await;
        assert_eq!(named.0, 200, "{method} {path} with an allowed name");
        let rebound = raw(&base, method, path, &join(headers, &[("Host", &foreign)])).await;
        assert_eq!(rebound.0, 403, "{method} {path} with Host {foreign}");
        assert!(
            rebound.1.contains("names no address of this endpoint"),
            "{}",
            rebound.1
        );
        assert!(!rebound.1.contains("SecretAccessKey"));
        let proxied = join(headers, &[("Host", &own), ("X-Forwarded-For", "192.0.2.1")]);
        let (status, body) = raw(&base, method, path, &proxied).await;
        assert_eq!(status, 403, "{method} {path} with X-Forwarded-For: {body}");
        let absolute = format!("http://evil.example{path}");
        let (status, _) = raw(&base, method, &absolute, &join(headers, &[("Host", &own)])).await;
        assert_eq!(status, 403, "{method} {absolute}");
        for browser in [
            ("Origin", "http://evil.example"),
            ("Sec-Fetch-Mode", "cors"),
            ("Sec-Fetch-Site", "same-origin"),
        ] {
            let (status, body) = raw(
                &base,
                method,
                path,
                &join(headers, &[("Host", &own), browser]),
            )
            .await;
            assert_eq!(status, 403, "{method} {path} with {browser:?}");
            assert!(body.contains("web page"), "{body}");
        }
    }
    let log = daemon.stop().await;
    assert!(!log.stderr.contains("panicked"), "{}", log.stderr);
}

/// Issue 7, defect 8: a second `keyfed run` fails on the busy address or socket before it writes
/// anything; the first keeps serving with the token in its file.
#[tokio::test]
async fn a_second_daemon_leaves_the_first_one_serving() {
    let fx = fixture().await;
    let base = fx.endpoint_config("", "");
    let daemon = fx.daemon().await;
    let token = fx.container_token();
    let config = std::fs::read_to_string(fx.path("keyfed.toml")).unwrap_or_default();
    let port = base.rsplit(':').next().unwrap_or_default().to_owned();
    let other_port = crate::util::free_port().to_string();
    // The same configuration (the address is busy), then another port (the socket is busy).
    let same = fx.path("keyfed.toml");
    let moved = fx.write("second.toml", &config.replace(&port, &other_port));
    for (config, says) in [(same, "cannot listen on"), (moved, "is in use")] {
        let second = fx
            .keyfed_raw(
                &["--config", config.to_str().unwrap_or_default(), "run"],
                &[],
            )
            .await;
        second.fails_with(1).says(says);
        assert_eq!(fx.container_token(), token, "the token file is untouched");
        let own = base.trim_start_matches("http://");
        let (status, body) = raw(
            &base,
            "GET",
            "/aws/app",
            &[("Host", own), ("Authorization", &token)],
        )
        .await;
        assert_eq!(status, 200, "the first daemon still serves: {body}");
    }
    assert!(
        fx.keyfed(&["status"]).await.ok().stdout.contains("aws"),
        "the first daemon's control socket still answers"
    );
    daemon.stop().await;
}

/// Starts `keyfed --config <dir>/keyfed.toml run` behind `wrapper` (a command line the keyfed
/// binary and its arguments are appended to), under the fixture's leak check.
fn spawn_wrapped(fx: &Fixture, wrapper: &[&str]) -> crate::util::Process {
    let config = fx.path("keyfed.toml");
    fx.spawn_as(
        wrapper,
        &["--config", config.to_str().unwrap_or_default(), "run"],
        &[("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")],
    )
}

/// `curl -s -o /dev/null -w %{http_code}` as `uid`.
async fn curl_status_as(uid: u32, args: &[&str]) -> String {
    let output = tokio::process::Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .args([
            "curl",
            "-s",
            "--noproxy",
            "*",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("setpriv curl: {e}"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Issue 7, defect 4: the shipped unit's `ProcSubset=pid` hides `/proc/net`, where the peer-uid
/// lookup used to look, so every restricted target answered 403 to everyone. keyfed runs here
/// under a /proc mounted exactly so (`subset=pid`, in a mount namespace of its own).
#[tokio::test]
async fn per_user_access_works_with_proc_net_hidden_as_under_the_unit() {
    if !crate::util::as_root_or_skip("per_user_access_works_with_proc_net_hidden_as_under_the_unit")
    {
        return;
    }
    let fx = fixture().await;
    let base = fx.endpoint_config("allow_users = [\"12345\"]\n", "");
    let mount = "mount -t proc -o subset=pid,hidepid=invisible proc /proc && test ! -e /proc/net && exec \"$0\" \"$@\"";
    let mut child = spawn_wrapped(
        &fx,
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            mount,
        ],
    );
    let token_file = fx.path("container-token");
    wait_until("the daemon under a hidden /proc/net", async || {
        if let Some(status) = child.exited() {
            panic!(
                "keyfed under subset=pid exited ({status}):\n{}",
                child.log_so_far()
            );
        }
        token_file.exists()
            && tokio::net::UnixStream::connect(fx.path("keyfed.sock"))
                .await
                .is_ok()
    })
    .await;
    let token = fx.container_token();
    let header = format!("Authorization: {token}");
    let url = format!("{base}/aws/app");
    crate::util::set_mode(fx.dir.path(), 0o755);
    assert_eq!(curl_status_as(12345, &["-H", &header, &url]).await, "200");
    assert_eq!(curl_status_as(65534, &["-H", &header, &url]).await, "403");
    let log = child.stop().await.stderr;
    assert!(log.contains("uid=Some(65534)"), "{log}");
}

/// Issue 7, defect 7: a local user holding connections up to ten short of keyfed's file limit
/// starves nothing — the refresh that was due still succeeds (its sockets and temporary files
/// still have descriptors) and another user's request is still served.
#[tokio::test]
async fn a_user_holding_connections_starves_neither_refreshes_nor_other_users() {
    if !crate::util::as_root_or_skip(
        "a_user_holding_connections_starves_neither_refreshes_nor_other_users",
    ) {
        return;
    }
    let fx = fixture().await;
    let base = fx.endpoint_config("", "");
    let config = std::fs::read_to_string(fx.path("keyfed.toml")).unwrap_or_default();
    fx.write(
        "keyfed.toml",
        &config.replace(
            "outputs = []",
            "outputs = [{ kind = \"credential-process-json\", path = \"out/aws.json\" }]",
        ),
    );
    // Keycloak holds the first token request until the connections are held: the first refresh
    // completes under siege.
    let latch = fx.keycloak().control().hold("/token");
    let limit = 1024;
    let daemon = spawn_wrapped(&fx, &["prlimit", &format!("--nofile={limit}:{limit}")]);
    let socket = fx.path("keyfed.sock");
    wait_until("the daemon", async || {
        tokio::net::UnixStream::connect(&socket).await.is_ok()
    })
    .await;
    let addr = base.trim_start_matches("http://");
    let (host, port) = addr.rsplit_once(':').unwrap_or_default();
    let hold = format!(
        "import socket,sys\nheld=[]\nfor _ in range({}):\n    s=socket.socket()\n    s.connect(('{host}',{port}))\n    held.append(s)\nprint(len(held),flush=True)\nsys.stdin.read()\n",
        limit - 10
    );
    let mut holder = tokio::process::Command::new("prlimit")
        .args([
            "--nofile=4096:4096",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .args(["/usr/bin/python3", "-c", &hold])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut held = String::new();
    if let Some(out) = holder.stdout.as_mut() {
        let mut buf = [0u8; 32];
        let n = out.read(&mut buf).await.unwrap_or(0);
        held.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(
        held.trim(),
        (limit - 10).to_string(),
        "the holder opened its connections"
    );
    latch.release();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut ready = false;
    for _ in 0..750 {
        let answer = http.get(format!("{base}/readyz")).send().await;
        if answer.is_ok_and(|r| r.status() == 200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        ready,
        "no refresh or no served request while connections were held:\n{}",
        daemon.log_so_far()
    );
    // Files are written after the credential is served: wait for it.
    let out = fx.path("out/aws.json");
    wait_until("the output written under siege", async || {
        std::fs::read_to_string(&out).is_ok_and(|w| w.contains("SecretAccessKey"))
    })
    .await;
    drop(holder);
    let log = daemon.stop().await.stderr;
    assert!(!log.contains("Too many open files"), "{log}");
}

/// Issue 7, defect 9: `/readyz`, `/metrics` and the control socket's status name only the
/// targets the caller may have (they carry upstream errors and paths); the others are counted,
/// not named.
#[tokio::test]
async fn status_and_readiness_name_only_the_callers_targets() {
    if !crate::util::as_root_or_skip("status_and_readiness_name_only_the_callers_targets") {
        return;
    }
    let fx = fixture().await;
    let base = fx.endpoint_config("allow_users = [\"12345\"]\n", "");
    let config = std::fs::read_to_string(fx.path("keyfed.toml")).unwrap_or_default();
    let config = config.replace(
        "socket = \"keyfed.sock\"",
        "socket = \"keyfed.sock\"\ngroup = \"65534\"",
    ) + &crate::util::target("open", "corp", crate::util::API_AUD, "api-audience");
    fx.write("keyfed.toml", &config);
    crate::util::set_mode(fx.dir.path(), 0o755);
    crate::util::set_mode(&fx.path("keyfed.toml"), 0o644);
    fx.keycloak().control().inject(
        "/token",
        Fault::Status {
            status: 503,
            body: "{}".into(),
        },
        None,
    );
    let daemon = fx.daemon().await;
    let readyz = format!("{base}/readyz");
    let body_as = |uid: u32| {
        let readyz = readyz.clone();
        async move {
            let output = tokio::process::Command::new("setpriv")
                .args([&format!("--reuid={uid}"), "--regid=65534", "--clear-groups"])
                .args(["curl", "-s", "--noproxy", "*", &readyz])
                .output()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
    };
    let stranger = body_as(65534).await;
    assert!(stranger.contains("open: "), "{stranger}");
    assert!(!stranger.contains("aws: "), "{stranger}");
    assert!(
        stranger.contains("1 target(s) restricted to other users"),
        "{stranger}"
    );
    let metrics_as = async |uid: u32| {
        let output = tokio::process::Command::new("setpriv")
            .args([&format!("--reuid={uid}"), "--regid=65534", "--clear-groups"])
            .args(["curl", "-s", "--noproxy", "*", &format!("{base}/metrics")])
            .output()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let metrics = metrics_as(65534).await;
    assert!(metrics.contains("target=\"open\""), "{metrics}");
    assert!(!metrics.contains("target=\"aws\""), "{metrics}");
    assert!(metrics_as(12345).await.contains("target=\"aws\""));
    let allowed = body_as(12345).await;
    assert!(
        allowed.contains("aws: ") && allowed.contains("open: "),
        "{allowed}"
    );
    let config = fx.path("keyfed.toml");
    let status_as = async |uid: u32| {
        let setpriv = [
            "setpriv",
            &format!("--reuid={uid}"),
            "--regid=65534",
            "--clear-groups",
        ];
        fx.keyfed_as(
            &setpriv,
            &["--config", config.to_str().unwrap_or_default(), "status"],
            &[],
        )
        .await
    };
    let stranger = status_as(65534).await;
    let text = stranger.ok().stdout.clone();
    assert!(text.contains("open") && !text.contains("aws "), "{text}");
    assert!(
        text.contains("1 more target(s) restricted to other users"),
        "{text}"
    );
    let allowed = status_as(12345).await;
    let text = allowed.ok().stdout.clone();
    assert!(text.contains("aws ") && text.contains("open"), "{text}");
    daemon.stop().await;
}
