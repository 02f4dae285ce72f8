//! What keyfed's outbound HTTP promises (README, Security): a loopback issuer or STS endpoint is
//! never reached through a proxy, whatever `HTTP(S)_PROXY` says, while other hosts still are;
//! and no answer larger than 1 MiB is read, from Keycloak or from STS.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keyfed_core::emulator::Fault;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::util::{Fixture, issuer, target, wait_until};

/// A "proxy" that records the first line of every request it gets, in the order the
/// connections arrived, and answers 502.
struct Proxy {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

const SENTINEL: &str = "SENTINEL / HTTP/1.1";

impl Proxy {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            // One connection at a time, so the record follows the order of arrival.
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = vec![0u8; 16 << 10];
                let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(0);
                let line = String::from_utf8_lossy(&head[..read])
                    .lines()
                    .next()
                    .unwrap_or("(no request)")
                    .to_owned();
                record
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
                let _ = stream
                    .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            seen,
        }
    }

    /// Every request line the proxy got since the last call: a sentinel connection goes last,
    /// and once it is recorded every earlier connection is too.
    async fn requests(&self) -> Vec<String> {
        let address = self.url.trim_start_matches("http://").to_owned();
        let mut sentinel = tokio::net::TcpStream::connect(&address)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sentinel
            .write_all(format!("{SENTINEL}\r\n\r\n").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let seen = Arc::clone(&self.seen);
        wait_until("the proxy to record the sentinel", async || {
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|l| l == SENTINEL)
        })
        .await;
        let mut all = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        all.drain(..).filter(|l| l != SENTINEL).collect()
    }

    /// Every spelling of the proxy variables keyfed's HTTP clients read.
    fn env(&self) -> Vec<(&'static str, &str)> {
        [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ]
        .into_iter()
        .map(|k| (k, self.url.as_str()))
        .collect()
    }
}

/// issue 7: with HTTP(S)_PROXY set and no NO_PROXY, requests to a loopback issuer — its client
/// secret included — and to a loopback STS went to the proxy.
#[tokio::test]
async fn loopback_upstreams_are_never_reached_through_a_proxy() {
    let fx = Fixture::aws().await;
    let proxy = Proxy::start().await;
    fx.daemon_config(&format!(
        "{}\n{}",
        fx.aws_target(
            "aws",
            "{ kind = \"credential-process-json\", path = \"aws.json\" }"
        ),
        target("api", "corp", crate::util::API_AUD, "api-audience")
    ));
    fx.known
        .add_file(fx.path("aws.json"), crate::util::SecretFile::AwsJson);
    fx.keyfed_with(&["once"], &proxy.env()).await.ok();
    fx.keyfed_with(&["token", "api"], &proxy.env()).await.ok();
    assert!(fx.path("aws.json").exists());
    assert_eq!(proxy.requests().await, Vec::<String>::new());
}

/// The other half: a host that is not loopback still goes through the proxy (here it answers
/// 502), for Keycloak and for STS alike.
#[tokio::test]
async fn other_upstreams_still_go_through_the_proxy() {
    let fx = Fixture::aws().await;
    let proxy = Proxy::start().await;
    fx.daemon_config(&format!(
        "[targets.aws]\nissuer = \"corp\"\nscope = \"aws-audience\"\n\
         aws = {{ role_arn = \"{}\", region = \"us-east-1\", endpoint_url = \"http://sts.example.test/\", allow_insecure_http = true }}\n\
         outputs = [{{ kind = \"credential-process-json\", path = \"aws.json\" }}]\n",
        fx.sts().role_arn(crate::util::ROLE)
    ));
    fx.keyfed_with(&["once"], &proxy.env()).await.fails_with(1);
    // The Keycloak token was fetched directly; only STS's request reached the proxy.
    let requests = proxy.requests().await;
    assert!(
        !requests.is_empty()
            && requests
                .iter()
                .all(|l| l.starts_with("POST http://sts.example.test/")),
        "{requests:?}"
    );

    fx.write(
        "keyfed.toml",
        &format!(
            "{}allow_insecure_http = true\n{}",
            issuer("corp", "host-secret", "client_secret_basic")
                .replace("{issuer}", "http://sso.example.test/realms/infra"),
            target("api", "corp", crate::util::API_AUD, "api-audience")
        ),
    );
    fx.keyfed_with(&["token", "api"], &proxy.env())
        .await
        .fails_with(1)
        .says("502");
    assert_eq!(
        proxy.requests().await,
        ["GET http://sso.example.test/realms/infra/.well-known/openid-configuration HTTP/1.1"]
    );
}

/// issue 7: the README promises response bodies capped at 1 MiB; Keycloak's client capped them,
/// STS's did not. A 2 MiB answer from either is an error naming the limit, not a crash.
#[tokio::test]
async fn answers_over_1_mib_are_refused_from_keycloak_and_sts() {
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target(
        "aws",
        "{ kind = \"credential-process-json\", path = \"aws.json\" }",
    ));
    let big = || Fault::Status {
        status: 200,
        body: "x".repeat(2 << 20),
    };
    fx.keycloak()
        .control()
        .inject("/protocol/openid-connect/token", big(), Some(1));
    let run = fx.keyfed(&["once"]).await;
    run.fails_with(1)
        .says("the answer is larger than 1 MiB, the most keyfed reads");
    assert!(!run.stderr.contains("xxxxxxxx") && !run.stderr.contains("panicked"));

    fx.sts().control().inject("/", big(), Some(1));
    let run = fx.keyfed(&["once"]).await;
    run.fails_with(1).says("STS answered with more than 1 MiB");
    assert!(!run.stderr.contains("xxxxxxxx") && !run.stderr.contains("panicked"));
    assert!(!fx.path("aws.json").exists());

    // The faults are used up: the same configuration works.
    fx.keyfed(&["once"]).await.ok();
}
