//! Issue 7's endpoint-core defects, each through the real daemon: DNS rebinding (a foreign
//! `Host`, `Origin` or `Sec-Fetch-*` is refused on every face: since issue 11 the table of
//! `util/faces.rs`, every face of every cloud), a second `keyfed run` that must
//! not break the first, per-user access with `/proc/net` hidden as the shipped unit hides it, a
//! local user holding connections up to the file limit, and status and readiness bodies that name
//! only the caller's targets.

use keyfed_core::emulator::Fault;

use crate::util::faces::{EveryFace, FaceCase, faces};
use crate::util::{Fixture, Serves, curl_as, process, raw_exchange, users, wait_ready, wait_until};

/// One HTTP/1.1 request written by hand, so `Host` and every other header are exactly as given.
/// Returns the status and body.
async fn raw_request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if method == "PUT" {
        request.push_str("Content-Length: 0\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    raw(base, &request).await
}

/// `head` sent to `base` on a connection of its own: the status and body of the answer.
async fn raw(base: &str, head: &str) -> (u16, String) {
    let answer = raw_exchange(base, head.as_bytes()).await;
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

/// The endpoint's own paths, behind the same guard as the faces: no SDK header, answered 200.
fn health_cases() -> Vec<FaceCase> {
    ["/healthz", "/readyz", "/metrics"]
        .into_iter()
        .map(|path| FaceCase {
            name: "health",
            method: "GET",
            path: path.to_owned(),
            sdk: ("Accept", "*/*".to_owned()),
            marker: "",
            missing: 200,
            forwarded: 403,
        })
        .collect()
}

/// Issue 7, defect 1 (DNS rebinding), on every face since issue 11 (IMDSv2's token and
/// credentials, the container face, GCE metadata, Azure IMDS, App Service, and health): with
/// the same headers and secrets an SDK sends, a request whose `Host` names a foreign site, that
/// carries `Origin` or `Sec-Fetch-*`, or has an absolute-form target gets 403, and one carrying
/// `X-Forwarded-For` gets the face's status for it (Azure IMDS 400, the others 403) — and
/// without those, the same request is served, by the listen address or an allowed name.
#[tokio::test]
async fn rebound_and_browser_requests_are_refused_on_every_face() {
    let every = EveryFace::new(None, "allowed_hosts = [\"metadata.test\"]\n").await;
    let daemon = every.fx.daemon().await;
    wait_ready(&every.base).await;
    let (base, own) = (every.base.as_str(), every.host());
    let mut cases = faces(&every.secrets().await);
    cases.extend(health_cases());
    let foreign = format!(
        "evil.example:{}",
        own.rsplit(':').next().unwrap_or_default()
    );
    // Each face's answer to its request with `host` and `extra` headers.
    let ask = async |case: &FaceCase, host: &str, extra: &[(&str, &str)]| {
        raw(base, &case.head(host, true, extra)).await
    };
    for case in &cases {
        let what = format!("{} {} ({})", case.method, case.path, case.name);
        for host in [own, "metadata.test"] {
            let (status, body) = ask(case, host, &[]).await;
            assert_eq!(status, 200, "{what} with Host {host}: {body}");
            assert!(body.contains(case.marker), "{what}: {body:.200}");
        }
        let rebound = ask(case, &foreign, &[]).await;
        assert_eq!(rebound.0, 403, "{what} with Host {foreign}");
        assert!(
            rebound.1.contains("names no address of this endpoint"),
            "{what}: {}",
            rebound.1
        );
        assert!(case.marker.is_empty() || !rebound.1.contains(case.marker));
        let (status, body) = ask(case, own, &[("X-Forwarded-For", "192.0.2.1")]).await;
        assert_eq!(
            status, case.forwarded,
            "{what} with X-Forwarded-For: {body}"
        );
        assert!(body.contains("X-Forwarded-For"), "{what}: {body}");
        let absolute = FaceCase {
            path: format!("http://evil.example{}", case.path),
            ..case.clone()
        };
        let (status, _) = ask(&absolute, own, &[]).await;
        assert_eq!(status, 403, "{what} in absolute form");
        for browser in [
            ("Origin", "http://evil.example"),
            ("Sec-Fetch-Mode", "cors"),
            ("Sec-Fetch-Site", "same-origin"),
        ] {
            let (status, body) = ask(case, own, &[browser]).await;
            assert_eq!(status, 403, "{what} with {browser:?}");
            assert!(body.contains("web page"), "{what}: {body}");
        }
    }
    let log = daemon.stop().await;
    assert!(!log.stderr.contains("panicked"), "{}", log.stderr);
}

/// Issue 7, defect 8: a second `keyfed run` fails on the busy address or socket before it writes
/// anything; the first keeps serving with the token in its file.
#[tokio::test]
async fn a_second_daemon_leaves_the_first_one_serving() {
    let fx = Fixture::aws().await;
    let base = fx.endpoint_config("", "");
    let daemon = fx.daemon().await;
    let token = fx.container_token();
    let config = std::fs::read_to_string(fx.path("keyfed.toml")).unwrap_or_default();
    let port = base.rsplit(':').next().unwrap_or_default().to_owned();
    let other_port = crate::util::free_port().to_string();
    // The same configuration and another port (the daemon's lock beside the socket is held),
    // then another socket and the same port (the address is busy).
    let same = fx.path("keyfed.toml");
    let moved = fx.write("second.toml", &config.replace(&port, &other_port));
    let resocketed = fx.write(
        "third.toml",
        &config.replace("socket = \"keyfed.sock\"", "socket = \"third.sock\""),
    );
    for (config, says) in [
        (same, "is in use"),
        (moved, "is in use"),
        (resocketed, "cannot listen on"),
    ] {
        let second = fx
            .keyfed_raw(
                &["--config", config.to_str().unwrap_or_default(), "run"],
                &[],
            )
            .await;
        second.fails_with(1).says(says);
        assert_eq!(fx.container_token(), token, "the token file is untouched");
        let own = base.trim_start_matches("http://");
        let (status, body) = raw_request(
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

/// The daemon behind `wrapper` (a command line the keyfed binary and its arguments are appended
/// to), up and answering its control socket.
async fn daemon_wrapped(fx: &Fixture, wrapper: &[&str]) -> crate::util::Daemon {
    fx.daemon_as(wrapper, &[("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")])
        .await
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
    let fx = Fixture::aws().await;
    let base = fx.endpoint_config("allow_users = [\"12345\"]\n", "");
    let mount = "mount -t proc -o subset=pid,hidepid=invisible proc /proc && test ! -e /proc/net && exec \"$0\" \"$@\"";
    // Up means its container token file is written too (before the control socket answers).
    let child = daemon_wrapped(
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
    )
    .await;
    let token = fx.container_token();
    let header = format!("Authorization: {token}");
    let url = format!("{base}/aws/app");
    crate::util::set_mode(fx.dir.path(), 0o755);
    let status_as = async |uid: u32| {
        curl_as(uid, uid, &["-o", "/dev/null", "-H", &header, &url])
            .await
            .0
    };
    assert_eq!(status_as(12345).await, "200");
    assert_eq!(status_as(65534).await, "403");
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
    let fx = Fixture::aws().await;
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
    let daemon = daemon_wrapped(&fx, &["prlimit", &format!("--nofile={limit}:{limit}")]).await;
    let holder = hold_connections(&fx, &base, 65534, limit - 10).await;
    latch.release();
    // A refresh, and a request of another user served, while the connections are held (the
    // daemon's log is shown if not).
    wait_ready(&base).await;
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

/// Opens `count` connections to the endpoint at `base` as `uid` and holds them until the
/// returned process is dropped (its standard input then ends).
async fn hold_connections(fx: &Fixture, base: &str, uid: u32, count: u64) -> process::Process {
    let addr = base.trim_start_matches("http://");
    let (host, port) = addr.rsplit_once(':').unwrap_or_default();
    let hold = format!(
        "import socket,sys\nheld=[]\nfor _ in range({count}):\n    s=socket.socket()\n    s.connect(('{host}',{port}))\n    held.append(s)\nprint(len(held),flush=True)\nsys.stdin.read()\n"
    );
    let mut command = tokio::process::Command::new("prlimit");
    command
        .arg("--nofile=4096:4096")
        .args(users::setpriv(uid, uid))
        .args(["/usr/bin/python3", "-c", &hold]);
    let mut holder = process::spawn_with_stdin(
        &format!("python3 holding connections as uid {uid}"),
        command,
        &fx.known,
        Serves::Nothing,
    );
    let held = holder.wait_for_stdout_lines(1).await;
    assert_eq!(
        held[0].trim(),
        count.to_string(),
        "uid {uid} opened its connections"
    );
    holder
}

/// Issue 7 review: several users together asking for far more connections than keyfed has
/// descriptors: the total cap (fitted below the file limit) holds, so the refresh due meanwhile
/// still gets its sockets and temporary file. Once the total cap is reached, further
/// connections are closed, whoever makes them; the control socket still answers.
#[tokio::test]
async fn many_users_holding_connections_never_exhaust_the_descriptors() {
    if !crate::util::as_root_or_skip("many_users_holding_connections_never_exhaust_the_descriptors")
    {
        return;
    }
    let fx = Fixture::aws().await;
    let base = fx.endpoint_config("", "");
    let config = std::fs::read_to_string(fx.path("keyfed.toml")).unwrap_or_default();
    fx.write(
        "keyfed.toml",
        &config.replace(
            "outputs = []",
            "outputs = [{ kind = \"credential-process-json\", path = \"out/aws.json\" }]",
        ),
    );
    let latch = fx.keycloak().control().hold("/token");
    let limit = 1024;
    let daemon = daemon_wrapped(&fx, &["prlimit", &format!("--nofile={limit}:{limit}")]).await;
    let mut holders = Vec::new();
    for uid in [65534, 12345, 12346, 12347] {
        holders.push(hold_connections(&fx, &base, uid, limit - 10).await);
    }
    latch.release();
    let out = fx.path("out/aws.json");
    wait_until(
        "the output written with 4 users holding connections",
        async || std::fs::read_to_string(&out).is_ok_and(|w| w.contains("SecretAccessKey")),
    )
    .await;
    let status = fx.status_json().await;
    assert!(status.to_string().contains("\"fresh\""), "{status}");
    drop(holders);
    let log = daemon.stop().await.stderr;
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(log.contains("over the cap of 384 in all"), "{log}");
}

/// Issue 7, defect 9: `/readyz`, `/metrics` and the control socket's status name only the
/// targets the caller may have (they carry upstream errors and paths); the others are counted,
/// not named.
#[tokio::test]
async fn status_and_readiness_name_only_the_callers_targets() {
    if !crate::util::as_root_or_skip("status_and_readiness_name_only_the_callers_targets") {
        return;
    }
    let fx = Fixture::aws().await;
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
    // As `uid` (group nogroup), the body at `path`.
    let body_as =
        async |uid: u32, path: &str| curl_as(uid, 65534, &[&format!("{base}{path}")]).await.1;
    let stranger = body_as(65534, "/readyz").await;
    assert!(stranger.contains("open: "), "{stranger}");
    assert!(!stranger.contains("aws: "), "{stranger}");
    assert!(
        stranger.contains("1 target(s) restricted to other users"),
        "{stranger}"
    );
    let metrics = body_as(65534, "/metrics").await;
    assert!(metrics.contains("target=\"open\""), "{metrics}");
    assert!(!metrics.contains("target=\"aws\""), "{metrics}");
    assert!(body_as(12345, "/metrics").await.contains("target=\"aws\""));
    let allowed = body_as(12345, "/readyz").await;
    assert!(
        allowed.contains("aws: ") && allowed.contains("open: "),
        "{allowed}"
    );
    let status_as = async |uid: u32| fx.keyfed_as_user(uid, 65534, &["status"], &[]).await;
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
