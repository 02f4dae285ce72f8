//! issue 9: the GCE metadata face through the real daemon, against the Keycloak emulator and
//! the GCP emulator (STS and IAM Credentials): the calls google-auth (Python) makes, in order;
//! 200 concurrent token requests reach Google zero times while the token is fresh and once
//! during a refresh; and the ID token it serves is a real JWT, signed by Google (the emulator)
//! for the audience asked for.

use std::sync::Arc;
use std::time::Duration;

use keyfed_core::clock::{Clock as _, SystemClock, rfc3339};
use keyfed_core::emulator::Fault;
use keyfed_gcp::emulator::{GcpEmulator, ID_TOKEN_ISSUER, IssuedKind};

use crate::util::gcp::{PROJECT_ID, SERVICE_ACCOUNT as SA};
use crate::util::http::client;
use crate::util::{Daemon, Fixture, free_port, held, status_of, wait_ready, wait_until};

const CLOUD: &str = "https://www.googleapis.com/auth/cloud-platform";
const ACCOUNTS: &str = "computeMetadata/v1/instance/service-accounts";
/// What the daemon logs (at debug level) for each caller that waits for a refresh.
const WAITING: &str = "no usable credential: waiting for a refresh";

/// Keycloak, Google (`util/gcp.rs`: the pool provider trusting Keycloak, the service account
/// bound to the whole pool), and the daemon's endpoint serving target `gcp`, impersonating the
/// service account, as the `default` account.
struct Setup {
    fx: Fixture,
    google: Arc<GcpEmulator>,
    /// `http://127.0.0.1:PORT`: the value of `GCE_METADATA_HOST`, with a scheme.
    base: String,
}

impl Setup {
    async fn new() -> Self {
        let (fx, google) = Fixture::gcp().await;
        let port = free_port();
        let target = fx.gcp_target(&google, "gcp", &format!("service_account = \"{SA}\""), "");
        fx.daemon_config(&format!(
            "{target}\n[endpoint]\nlisten = [\"127.0.0.1:{port}\"]\ngce_target = \"gcp\"\n\
             container_token_file = \"container-token\"\n"
        ));
        Self {
            fx,
            google,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Starts the daemon and waits until the target has its first token.
    async fn daemon(&self) -> Daemon {
        let daemon = self.fx.daemon().await;
        wait_ready(&self.base).await;
        daemon
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// Every request that reached Google: STS's token exchanges and IAM Credentials' calls.
    fn google_calls(&self) -> u64 {
        self.google.control().hits("/v1/")
    }

    /// `GET path` with `Metadata-Flavor: Google`: the status, the body, and whether the answer
    /// carried `Metadata-Flavor: Google` and which content type.
    async fn get(&self, http: &reqwest::Client, path: &str) -> Got {
        let response = http
            .get(self.url(path))
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (flavor, content_type) = (header("metadata-flavor"), header("content-type"));
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(flavor, "Google", "{path}: every answer is marked");
        Got {
            status,
            body,
            content_type,
        }
    }

    /// The access token `…/default/token` serves, known to the leak check from now on.
    async fn token(&self, http: &reqwest::Client) -> String {
        let got = self.get(http, &format!("{ACCOUNTS}/default/token")).await;
        let document = got.json();
        let token = document["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {document}"))
            .to_owned();
        self.fx.know("an access token from the GCE face", &token);
        token
    }
}

struct Got {
    status: u16,
    body: String,
    content_type: String,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        assert_eq!(self.status, 200, "{}", self.body);
        assert_eq!(self.content_type, "application/json");
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// issue 9: the calls google-auth (Python) makes, in its order — the ping, the account's
/// information, the token for the scopes it read there, the project — answered from the token
/// Google issued to the service account; without `Metadata-Flavor` the face says 403.
#[tokio::test]
async fn issue_9_gce_face_answers_google_auth_s_calls() {
    let setup = Setup::new().await;
    let daemon = setup.daemon().await;
    let http = client();
    let ping = setup.get(&http, "").await;
    assert_eq!(ping.status, 200);
    assert_eq!(
        setup.get(&http, "computeMetadata/v1/instance").await.status,
        200,
        "the Node library's ping"
    );
    let info = setup
        .get(&http, &format!("{ACCOUNTS}/default/?recursive=true"))
        .await
        .json();
    assert_eq!(
        info,
        serde_json::json!({"aliases": ["default"], "email": SA, "scopes": [CLOUD]})
    );
    let document = setup
        .get(&http, &format!("{ACCOUNTS}/default/token?scopes={CLOUD}"))
        .await
        .json();
    let token = document["access_token"].as_str().unwrap_or_default();
    setup.fx.know("an access token from the GCE face", token);
    let issued = setup
        .google
        .token_info(token)
        .unwrap_or_else(|| panic!("Google did not issue {document}"));
    assert_eq!(
        issued.kind,
        IssuedKind::ServiceAccount {
            email: SA.to_owned()
        }
    );
    assert_eq!(issued.scopes, [CLOUD]);
    assert_eq!(document["token_type"], "Bearer");
    let left = document["expires_in"].as_u64().unwrap_or_default();
    assert!((3000..=3600).contains(&left), "{document}");
    for (path, want) in [
        (format!("{ACCOUNTS}/"), format!("default/\n{SA}/\n")),
        (format!("{ACCOUNTS}/default/email"), SA.to_owned()),
        (format!("{ACCOUNTS}/{SA}/email"), SA.to_owned()),
        (
            "computeMetadata/v1/project/project-id".to_owned(),
            PROJECT_ID.to_owned(),
        ),
        (
            "computeMetadata/v1/project/numeric-project-id".to_owned(),
            "123456789".to_owned(),
        ),
    ] {
        let got = setup.get(&http, &path).await;
        assert_eq!(
            (got.status, got.body.as_str()),
            (200, want.as_str()),
            "{path}"
        );
    }
    let unflavored = http.get(setup.url(&format!("{ACCOUNTS}/default/token")));
    assert_eq!(status_of(unflavored).await, 403);
    assert_eq!(
        setup.google.generate_access_token_calls(),
        1,
        "one token, served to every request"
    );
    daemon.stop().await.ok();
}

/// `n` concurrent `…/default/token` requests, all started at once; `beside` runs with them.
/// Every access token they got.
async fn concurrent_tokens(
    setup: &Setup,
    n: usize,
    beside: impl Future<Output = ()>,
) -> Vec<String> {
    let http = client();
    let requests = futures::future::join_all((0..n).map(|_| setup.token(&http)));
    let (tokens, ()) = tokio::join!(requests, beside);
    tokens
}

/// issue 9: 200 concurrent metadata token requests while the token is fresh reach Google zero
/// times, and Keycloak too: all are answered from the token the daemon holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_gce_token_requests_while_fresh_reach_google_zero_times() {
    let setup = Setup::new().await;
    let daemon = setup.daemon().await;
    let first = setup.token(&client()).await;
    let (google_before, keycloak_before) =
        (setup.google_calls(), setup.fx.keycloak().token_requests());
    assert_eq!(
        (
            setup.google.sts_calls(),
            setup.google.generate_access_token_calls()
        ),
        (1, 1),
        "the first token: one exchange, one impersonation"
    );
    let tokens = concurrent_tokens(&setup, 200, async {}).await;
    assert_eq!(tokens.len(), 200);
    assert!(tokens.iter().all(|t| *t == first), "one token for all");
    assert_eq!(
        setup.google_calls(),
        google_before,
        "no request reached Google"
    );
    assert_eq!(setup.fx.keycloak().token_requests(), keycloak_before);
    daemon.stop().await.ok();
}

/// issue 9: 200 concurrent metadata token requests during a refresh reach Google once. The
/// first token lives 45 s (Google's first answer is a short-lived token); once it is too close
/// to its end to hand out, the requests arrive — the daemon logs each one waiting — while the
/// refresh they share is held at Google; released, one exchange and one impersonation serve
/// them all the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_gce_token_requests_during_a_refresh_reach_google_once() {
    let setup = Setup::new().await;
    let expires = SystemClock.now() + Duration::from_secs(45);
    let short_lived = "ya29.short-lived-first-token-of-the-gce-face-test";
    setup.fx.know("the short-lived first token", short_lived);
    setup.google.control().inject(
        ":generateAccessToken",
        Fault::Status {
            status: 200,
            body: serde_json::json!({"accessToken": short_lived, "expireTime": rfc3339(expires)})
                .to_string(),
        },
        Some(1),
    );
    let daemon = setup.daemon().await;
    assert_eq!(setup.token(&client()).await, short_lived);
    // From now on Google holds every exchange until released.
    let latch = setup.google.control().hold("/v1/");
    // The daemon hands out no token within 30 s of its end.
    wait_until("the first token to be too old to hand out", async || {
        SystemClock.now() + Duration::from_secs(30) >= expires
    })
    .await;
    let (google_before, keycloak_before) =
        (setup.google_calls(), setup.fx.keycloak().token_requests());
    let waiting_before = daemon.log_so_far().matches(WAITING).count();
    let n = 200;
    let release = async {
        wait_until("every request to wait inside the daemon", async || {
            daemon.log_so_far().matches(WAITING).count() >= waiting_before + n
        })
        .await;
        held(&latch, 1, "the refresh").await;
        assert_eq!(latch.waiting(), 1, "one refresh, held at Google");
        latch.release();
    };
    let tokens = concurrent_tokens(&setup, n, release).await;
    assert!(tokens.iter().all(|t| *t == tokens[0]), "one token for all");
    assert_ne!(tokens[0], short_lived, "a renewed token");
    assert!(setup.google.token_info(&tokens[0]).is_some());
    assert_eq!(
        setup.google_calls(),
        google_before + 2,
        "one token exchange and one impersonation for all 200"
    );
    assert_eq!(
        setup.fx.keycloak().token_requests(),
        keycloak_before + 1,
        "one subject token"
    );
    daemon.stop().await.ok();
}

/// issue 9: `identity?audience=…&format=full` through the face is a real ID token: an RS256 JWT
/// that verifies against Google's published keys (the emulator's), for the audience asked
/// for, of the service account, with its email; asked again, it is not fetched again.
#[tokio::test]
async fn issue_9_gce_identity_is_a_real_id_token_for_the_audience() {
    let setup = Setup::new().await;
    let daemon = setup.daemon().await;
    let http = client();
    let audience = "https://service.example.internal";
    let path = format!("{ACCOUNTS}/default/identity?audience={audience}&format=full");
    let got = setup.get(&http, &path).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let jwt = got.body.clone();
    setup.fx.know("an ID token from the GCE face", &jwt);
    assert_eq!(
        setup.get(&http, &path).await.body,
        jwt,
        "held, not fetched again"
    );
    assert_eq!(setup.google.generate_id_token_calls(), 1);

    let jwks: jsonwebtoken::jwk::JwkSet = http
        .get(setup.google.jwks_url())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let header = jsonwebtoken::decode_header(&jwt).unwrap_or_else(|e| panic!("{e}: {jwt}"));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let kid = header.kid.unwrap_or_default();
    let jwk = jwks
        .find(&kid)
        .unwrap_or_else(|| panic!("no key {kid} in Google's JWKS"));
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap_or_else(|e| panic!("{e}"));
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[ID_TOKEN_ISSUER]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&jwt, &key, &validation)
        .unwrap_or_else(|e| panic!("the ID token does not verify: {e}"))
        .claims;
    assert_eq!(claims["email"], SA, "{claims}");
    assert_eq!(
        claims["sub"].as_str(),
        setup.google.unique_id(SA),
        "{claims}"
    );

    // Another audience is another ID token; without `format=full`, no email.
    let other = setup
        .get(
            &http,
            &format!("{ACCOUNTS}/default/identity?audience=https://other.example"),
        )
        .await;
    assert_eq!(other.status, 200, "{}", other.body);
    setup.fx.know("an ID token from the GCE face", &other.body);
    let claims = crate::util::claims(&other.body);
    assert_eq!(claims["aud"], "https://other.example");
    assert!(claims.get("email").is_none(), "{claims}");
    assert_eq!(setup.google.generate_id_token_calls(), 2);
    daemon.stop().await.ok();
}
