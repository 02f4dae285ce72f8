//! The GCE metadata face through the endpoint core (issue 9), with a fake Google that counts
//! its calls per slot: every route as Google's libraries call it, the header rules, the
//! statuses of every refusal, which slot each request reaches, and per-user access control.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use keyfed_core::clock::{Clock, ManualClock};
use keyfed_core::http::HttpSettings;
use keyfed_gcp::{GcpToken, GcpTokenKind};
use tower::ServiceExt as _;

use super::super::face::Start;
use super::super::server::Peer;
use super::super::{Endpoint, FACES, assemble, guard, router};
use super::*;
use crate::config::{Access, EndpointSettings, Listen};
use crate::engine::{Backoff, Engine, Fetch, FetchError, Source, TargetEngine};

const CLOUD: &str = "https://www.googleapis.com/auth/cloud-platform";
const EMAIL: &str = "https://www.googleapis.com/auth/userinfo.email";
const APP: &str = "app@my-project.iam.gserviceaccount.com";
const OTHER: &str = "other@my-project.iam.gserviceaccount.com";
const SECRET_SA: &str = "secret@my-project.iam.gserviceaccount.com";

/// The address serving target `app` as `default`.
const MAIN: SocketAddr = addr(9921);
/// The address serving the federated target (no service account) as `default`.
const FEDERATED: SocketAddr = addr(9922);
/// An address with no `gce_target`: the face is off there.
const BARE: SocketAddr = addr(9923);
/// The address serving the restricted target as `default`.
const RESTRICTED: SocketAddr = addr(9924);

const fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), port)
}

/// Every upstream call the fake Google got: target and slot.
type Calls = Arc<Mutex<Vec<(String, Option<SlotKey>)>>>;

/// A fake Google for one target: access tokens for any scopes, ID tokens when the target
/// impersonates a service account, each expiring an hour after the clock's now; or, `down`,
/// failing every call.
#[derive(Debug)]
struct Google {
    target: String,
    service_account: Option<String>,
    scopes: Vec<String>,
    down: bool,
    calls: Calls,
    clock: Arc<dyn Clock>,
}

impl Source for Google {
    fn fetch<'a>(&'a self, slot: Option<&'a SlotKey>) -> Fetch<'a> {
        Box::pin(async move {
            let n = {
                let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
                calls.push((self.target.clone(), slot.cloned()));
                calls.len()
            };
            if self.down {
                return Err(FetchError::passing("connection refused"));
            }
            let (kind, token) = match slot {
                None => (
                    GcpTokenKind::Access {
                        scopes: self.scopes.clone(),
                        service_account: self.service_account.clone(),
                    },
                    format!("ya29.{}-main-{n}", self.target),
                ),
                Some(SlotKey::Scopes(scopes)) => (
                    GcpTokenKind::Access {
                        scopes: scopes.iter().cloned().collect(),
                        service_account: self.service_account.clone(),
                    },
                    format!("ya29.{}-scoped-{n}", self.target),
                ),
                Some(SlotKey::IdToken { audience, full }) => (
                    GcpTokenKind::Id {
                        audience: audience.clone(),
                        full: *full,
                        service_account: self.service_account.clone().unwrap_or_default(),
                    },
                    format!("eyJ.{}-id-{n}-{full}.sig", self.target),
                ),
                Some(other) => return Err(FetchError::no_slot(other)),
            };
            Ok(Credential::Gcp(GcpToken {
                kind,
                token: token.into(),
                expires_at: self.clock.now() + Duration::from_secs(3600),
            }))
        })
    }

    fn has_slot(&self, slot: &SlotKey) -> bool {
        match slot {
            SlotKey::Scopes(scopes) => !scopes.is_empty(),
            SlotKey::IdToken { .. } => self.service_account.is_some(),
            SlotKey::Resource(_) | SlotKey::SubjectToken => false,
        }
    }

    fn consumer_window(&self) -> Duration {
        Duration::from_secs(225)
    }
}

/// A target's `gcp` table.
fn gcp(service_account: Option<&str>, scopes: &[&str], project_id: Option<&str>) -> GcpExchange {
    let url = |u: &str| url::Url::parse(u).unwrap_or_else(|e| panic!("{e}"));
    GcpExchange {
        provider: "projects/123456789/locations/global/workloadIdentityPools/p/providers/k"
            .to_owned(),
        service_account: service_account.map(str::to_owned),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        lifetime: Duration::from_secs(3600),
        delegates: Vec::new(),
        project_id: project_id.map(str::to_owned),
        project_number: "123456789".to_owned(),
        sts_url: url("https://sts.googleapis.com/v1/token"),
        iam_url: url("https://iamcredentials.googleapis.com"),
        http: HttpSettings::default(),
    }
}

/// The test's endpoint: its clock, Google's calls, and the folder of the container token.
struct Setup {
    endpoint: Arc<Endpoint>,
    clock: ManualClock,
    calls: Calls,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn calls(&self) -> Vec<(String, Option<SlotKey>)> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Targets `app` (the default on [`MAIN`], with a project ID), `other` (a second service
/// account, two scopes), `federated` (no service account; the default on [`FEDERATED`]),
/// `restricted` (only uid 4242; the default on [`RESTRICTED`]) and `down` (Google failing),
/// all GCP.
fn setup(starts: &[Start]) -> Setup {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let calls = Calls::default();
    let specs = [
        ("app", gcp(Some(APP), &[CLOUD], Some("my-project")), false),
        ("other", gcp(Some(OTHER), &[EMAIL, CLOUD], None), false),
        ("federated", gcp(None, &[CLOUD], None), false),
        ("restricted", gcp(Some(SECRET_SA), &[CLOUD], None), false),
        (
            "down",
            gcp(
                Some("down@my-project.iam.gserviceaccount.com"),
                &[CLOUD],
                None,
            ),
            true,
        ),
    ];
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));
    let targets = specs
        .iter()
        .map(|(name, gcp, down)| {
            let google = Google {
                target: (*name).to_owned(),
                service_account: gcp.service_account.clone(),
                scopes: gcp.scopes.clone(),
                down: *down,
                calls: Arc::clone(&calls),
                clock: Arc::clone(&shared),
            };
            TargetEngine::new(
                (*name).to_owned(),
                Box::new(google),
                Vec::new(),
                Arc::clone(&shared),
                backoff,
                Duration::from_secs(10),
            )
        })
        .collect();
    let faces = BTreeSet::from([
        ("gce", "app".to_owned()),
        ("gce", "federated".to_owned()),
        ("gce", "restricted".to_owned()),
    ]);
    let mut served = Served::for_tests(Engine::new(targets), BTreeMap::new(), faces);
    for (name, gcp, _) in specs {
        served
            .exchanges
            .insert(name.to_owned(), Exchange::Gcp(Box::new(gcp)));
    }
    served.access.insert(
        "restricted".to_owned(),
        Access {
            users: vec![4242],
            groups: Vec::new(),
        },
    );
    let (_publish, current) = tokio::sync::watch::channel(Arc::new(served));
    let listen = |address, target: Option<&str>| Listen {
        address,
        targets: target
            .map(|t| BTreeMap::from([("gce", t.to_owned())]))
            .unwrap_or_default(),
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let settings = EndpointSettings {
        listen: vec![
            listen(MAIN, Some("app")),
            listen(FEDERATED, Some("federated")),
            listen(BARE, None),
            listen(RESTRICTED, Some("restricted")),
        ],
        imds_v1: false,
        health_listen: None,
        container_token_file: dir.path().join("container-token"),
        identity_header_file: dir.path().join("identity-header"),
        identity_header_group: None,
        container_token_group: None,
        max_connections: 16,
        max_connections_per_user: 4,
        allowed_hosts: Vec::new(),
        request_timeout: Duration::from_secs(10),
    };
    let hosts = guard::Hosts::new([MAIN, FEDERATED, BARE, RESTRICTED], &settings.allowed_hosts);
    let endpoint = assemble(settings, hosts, current, shared, starts)
        .unwrap_or_else(|e| panic!("the endpoint does not start: {e:#}"));
    Setup {
        endpoint,
        clock,
        calls,
        _dir: dir,
    }
}

/// Only the GCE face: the container face would write a token file.
fn gce_only() -> Setup {
    setup(&[start])
}

/// An answer: status, headers, body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// Asserts a 200 and returns the body.
    fn ok(&self) -> &str {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        &self.body
    }
}

/// A request from `uid` arriving on `local`, with `Metadata-Flavor: Google` unless `headers`
/// names the flavor itself.
async fn request_as(
    setup: &Setup,
    local: SocketAddr,
    uid: u32,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, local.to_string());
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("metadata-flavor"))
    {
        request = request.header("metadata-flavor", "Google");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    request.extensions_mut().insert(Peer {
        local,
        uid: Some(uid),
    });
    let response = router(&setup.endpoint, true, true)
        .oneshot(request)
        .await
        .unwrap_or_else(|e| match e {});
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let answer = Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    if path.starts_with("/computeMetadata") || path == "/" {
        assert_eq!(
            answer.headers.get("metadata-flavor").map(|v| v.as_bytes()),
            Some(&b"Google"[..]),
            "{method} {path}: every answer of the face is marked ({})",
            answer.status
        );
    }
    answer
}

/// `GET path` on [`MAIN`] as root, flavored.
async fn get(setup: &Setup, path: &str) -> Answer {
    request_as(setup, MAIN, 0, "GET", path, &[]).await
}

const ACCOUNTS: &str = "/computeMetadata/v1/instance/service-accounts";

fn account(name: &str, leaf: &str) -> String {
    format!("{ACCOUNTS}/{name}/{leaf}")
}

/// issue 9: the face is registered, declared, and reserves only its own paths (`/` itself, not
/// everything below it).
#[tokio::test]
async fn issue_9_the_gce_face_is_registered_with_its_paths() {
    let setup = setup(&FACES);
    let spec = setup
        .endpoint
        .face(NAME)
        .unwrap_or_else(|| panic!("the gce face is not registered"))
        .spec();
    assert_eq!(spec.target_key, Some("gce_target"));
    assert!(spec.reserves("/") && spec.reserves("/computeMetadata/v1/instance"));
    assert!(!spec.reserves("/latest/api/token") && !spec.reserves("/healthz"));
}

/// issue 9: the detection pings and directories answer 200 as google-auth (`/`), the Node
/// library (`…/instance`) and gcloud expect.
#[tokio::test]
async fn issue_9_gce_detection_pings_and_directories() {
    let setup = gce_only();
    for (path, body) in [
        ("/", "computeMetadata/\n"),
        ("/computeMetadata/", "v1/\n"),
        ("/computeMetadata/v1/", "instance/\nproject/\nuniverse/\n"),
        ("/computeMetadata/v1/instance", "service-accounts/\n"),
        ("/computeMetadata/v1/instance/", "service-accounts/\n"),
        (
            "/computeMetadata/v1/project/",
            "numeric-project-id\nproject-id\n",
        ),
        (
            "/computeMetadata/v1/universe/universe-domain",
            "googleapis.com",
        ),
    ] {
        assert_eq!(get(&setup, path).await.ok(), body, "{path}");
    }
    for unknown in [
        "/computeMetadata/v1/instance/zone",
        "/computeMetadata/v1beta1/",
        "/computeMetadata/v1x",
        "/computeMetadata/v2/instance/",
        "/computeMetadata/v1//instance",
    ] {
        assert_eq!(get(&setup, unknown).await.status, 404, "{unknown}");
    }
    assert!(setup.calls().is_empty(), "no upstream call");
}

/// issue 9: the account listing, and each account's values: `default` is `gce_target`'s target,
/// the others answer under their email, a federated target under its name.
#[tokio::test]
async fn issue_9_gce_accounts_and_their_values() {
    let setup = gce_only();
    let listing = get(&setup, &format!("{ACCOUNTS}/")).await;
    assert_eq!(
        listing.ok(),
        format!(
            "default/\n{APP}/\ndown@my-project.iam.gserviceaccount.com/\nfederated/\n{OTHER}/\n{SECRET_SA}/\n"
        )
    );
    assert_eq!(get(&setup, ACCOUNTS).await.ok(), listing.body);

    // What google-auth (Python) asks first.
    let info = get(&setup, &account("default", "?recursive=true")).await;
    assert_eq!(info.content_type(), "application/json");
    assert_eq!(
        info.json(),
        serde_json::json!({"aliases": ["default"], "email": APP, "scopes": [CLOUD]})
    );
    // The default account under its email is the same account.
    let by_email = get(&setup, &account(APP, "?recursive=true")).await;
    assert_eq!(by_email.json(), info.json());
    let other = get(&setup, &account(OTHER, "?recursive=True")).await;
    assert_eq!(
        other.json(),
        serde_json::json!({"aliases": [], "email": OTHER, "scopes": [EMAIL, CLOUD]})
    );
    let federated = get(&setup, &account("federated", "?recursive=true")).await;
    assert_eq!(federated.json()["email"], "federated");

    for (name, leaf, want) in [
        ("default", "", "aliases\nemail\nidentity\nscopes\ntoken\n"),
        ("default", "email", APP),
        ("default", "scopes", &format!("{CLOUD}\n")),
        ("default", "aliases", "default"),
        (OTHER, "email", OTHER),
        (OTHER, "scopes", &format!("{EMAIL}\n{CLOUD}\n")),
        (OTHER, "aliases", ""),
        // `@` percent-encoded by the client.
        ("other%40my-project.iam.gserviceaccount.com", "email", OTHER),
    ] {
        let answer = get(&setup, &account(name, leaf)).await;
        assert_eq!(answer.ok(), want, "{name}/{leaf}");
        assert_eq!(answer.content_type(), "application/text");
    }
    assert_eq!(
        get(&setup, &format!("{ACCOUNTS}/default")).await.ok(),
        "aliases\nemail\nidentity\nscopes\ntoken\n"
    );
    for missing in [
        account("nobody@my-project.iam.gserviceaccount.com", "email"),
        account("default", "no-such-leaf"),
        account("%ff", "email"),
    ] {
        assert_eq!(get(&setup, &missing).await.status, 404, "{missing}");
    }
    assert!(setup.calls().is_empty(), "values need no upstream call");
}

/// issue 9: the project from the default target's settings; without `project_id`, 404.
#[tokio::test]
async fn issue_9_gce_project_values() {
    let setup = gce_only();
    let id = get(&setup, "/computeMetadata/v1/project/project-id").await;
    assert_eq!(id.ok(), "my-project");
    let number = get(&setup, "/computeMetadata/v1/project/numeric-project-id").await;
    assert_eq!(number.ok(), "123456789");
    let unset = request_as(
        &setup,
        FEDERATED,
        0,
        "GET",
        "/computeMetadata/v1/project/project-id",
        &[],
    )
    .await;
    assert_eq!(unset.status, 404);
}

/// issue 9: the token document as GCE writes it, served from the main credential — also under
/// the default's email — with one upstream call however often it is asked for.
#[tokio::test]
async fn issue_9_gce_token_document() {
    let setup = gce_only();
    for path in [
        account("default", "token"),
        account(APP, "token"),
        account("default", "token"),
    ] {
        let answer = get(&setup, &path).await;
        answer.ok();
        assert_eq!(answer.content_type(), "application/json", "{path}");
        let document = answer.json();
        assert_eq!(
            document,
            serde_json::json!({"access_token": "ya29.app-main-1", "expires_in": 3600, "token_type": "Bearer"}),
            "{path}"
        );
    }
    assert_eq!(setup.calls(), [("app".to_owned(), None)]);
}

/// issue 9: `expires_in` is the time left now, not when the document was first rendered — the
/// head of the document is cached, the number is not — rounded down.
#[tokio::test]
async fn issue_9_gce_expires_in_is_fresh_on_every_answer() {
    let setup = gce_only();
    let path = account("default", "token");
    assert_eq!(get(&setup, &path).await.json()["expires_in"], 3600);
    setup.clock.advance(Duration::from_millis(100_500));
    let later = get(&setup, &path).await.json();
    assert_eq!(later["expires_in"], 3499, "rounded down: {later}");
    assert_eq!(
        later["access_token"], "ya29.app-main-1",
        "the same credential"
    );
    assert_eq!(setup.calls().len(), 1);
}

/// issue 9: `?scopes=` naming the target's own scopes (as google-auth does, in any order) is
/// the main credential; other scopes are the target's `Scopes` slot, one per set.
#[tokio::test]
async fn issue_9_gce_scopes_pick_the_slot() {
    let setup = gce_only();
    let token = |query: &str| account("default", &format!("token?scopes={query}"));
    let main = get(&setup, &token(CLOUD)).await.json();
    assert_eq!(main["access_token"], "ya29.app-main-1");
    let main_again = get(&setup, &token(&format!("{CLOUD},{CLOUD}")))
        .await
        .json();
    assert_eq!(main_again["access_token"], "ya29.app-main-1");
    let empty = get(&setup, &token("")).await.json();
    assert_eq!(empty["access_token"], "ya29.app-main-1");
    assert_eq!(setup.calls(), [("app".to_owned(), None)]);

    let scoped = get(&setup, &token(&format!("{EMAIL},{CLOUD}")))
        .await
        .json();
    assert_eq!(scoped["access_token"], "ya29.app-scoped-2");
    // The same set, reordered and percent-encoded: the same slot, no second call.
    let encoded = format!("{CLOUD}%2C{EMAIL}")
        .replace(':', "%3A")
        .replace('/', "%2F");
    let same = get(&setup, &token(&encoded)).await.json();
    assert_eq!(same["access_token"], "ya29.app-scoped-2");
    // Another account's main credential is its own, whatever the default's scopes.
    let other = get(
        &setup,
        &account(OTHER, &format!("token?scopes={CLOUD},{EMAIL}")),
    )
    .await
    .json();
    assert_eq!(other["access_token"], "ya29.other-main-3");
    assert_eq!(
        setup.calls(),
        [
            ("app".to_owned(), None),
            ("app".to_owned(), Some(SlotKey::scopes([EMAIL, CLOUD]))),
            ("other".to_owned(), None),
        ]
    );
}

/// issue 9: `identity?audience=` is the `IdToken` slot (`format=full` another), served as the
/// raw token; an ID token of a target impersonating no service account is refused with 400
/// naming the key, before anything is asked upstream.
#[tokio::test]
async fn issue_9_gce_identity_tokens() {
    let setup = gce_only();
    let identity = |query: &str| account("default", &format!("identity?{query}"));
    let standard = get(&setup, &identity("audience=https://svc.example")).await;
    assert_eq!(standard.ok(), "eyJ.app-id-1-false.sig");
    assert_eq!(standard.content_type(), "application/text");
    let full = get(
        &setup,
        &identity("audience=https://svc.example&format=full"),
    )
    .await;
    assert_eq!(full.ok(), "eyJ.app-id-2-true.sig");
    let again = get(
        &setup,
        &identity("format=standard&audience=https://svc.example"),
    )
    .await;
    assert_eq!(again.ok(), "eyJ.app-id-1-false.sig");
    let slot = |full| SlotKey::IdToken {
        audience: "https://svc.example".to_owned(),
        full,
    };
    assert_eq!(
        setup.calls(),
        [
            ("app".to_owned(), Some(slot(false))),
            ("app".to_owned(), Some(slot(true))),
        ]
    );

    for (query, why) in [
        ("", "audience parameter is required"),
        ("audience=", "audience parameter is required"),
        ("audience=x&format=compact", "format must be"),
    ] {
        let refused = get(&setup, &identity(query)).await;
        assert_eq!(refused.status, 400, "{query}: {}", refused.body);
        assert!(refused.body.contains(why), "{query}: {}", refused.body);
    }
    for (local, name) in [(MAIN, "federated"), (FEDERATED, "default")] {
        let path = account(name, "identity?audience=https://svc.example");
        let refused = request_as(&setup, local, 0, "GET", &path, &[]).await;
        assert_eq!(refused.status, 400, "{path}: {}", refused.body);
        assert!(
            refused
                .body
                .contains("targets.federated.gcp.service_account"),
            "{}",
            refused.body
        );
    }
    assert_eq!(setup.calls().len(), 2, "no upstream call for the refusals");
}

/// issue 9: `Metadata-Flavor: Google` is required (403), a proxied or web page's request is
/// 403, and every answer — refusals included — carries the header back (checked for each
/// request by `request_as` and `unflavored`); nothing refused reaches Google.
#[tokio::test]
async fn issue_9_gce_header_rules() {
    let setup = gce_only();
    let token = account("default", "token");
    for path in ["/", "/computeMetadata/v1/instance", token.as_str()] {
        let missing = unflavored(&setup, path, &[]).await;
        assert_eq!(missing.status, 403, "{path}: {}", missing.body);
        assert!(
            missing
                .body
                .contains("Metadata-Flavor: Google header is required"),
            "{}",
            missing.body
        );
        let proxied = unflavored(&setup, path, &[("x-forwarded-for", "192.0.2.1")]).await;
        assert_eq!(proxied.status, 403, "{path}");
    }
    let cases: [(&[(&str, &str)], u16); 5] = [
        (&[("metadata-flavor", "google")], 403),
        (&[("metadata-flavor", "Google, Google")], 403),
        (&[("x-forwarded-for", "192.0.2.1")], 403),
        (&[("origin", "http://evil.example")], 403),
        (&[("sec-fetch-mode", "no-cors")], 403),
    ];
    for (headers, want) in cases {
        let answer = request_as(&setup, MAIN, 0, "GET", &token, headers).await;
        assert_eq!(answer.status, want, "{headers:?}: {}", answer.body);
    }
    let foreign = unflavored(
        &setup,
        &token,
        &[("metadata-flavor", "Google"), ("host", "rebound.example")],
    )
    .await;
    assert_eq!(foreign.status, 403, "{}", foreign.body);
    let unknown = get(&setup, "/computeMetadata/v1/nothing/here").await;
    assert_eq!(unknown.status, 404);
    let posted = request_as(&setup, MAIN, 0, "POST", &token, &[]).await;
    assert_eq!(posted.status, 404);
    assert!(
        setup.calls().is_empty(),
        "no refused request reached Google"
    );
    let (_, metrics) = metrics(&setup).await;
    assert!(
        metrics.contains("keyfed_endpoint_requests_total{face=\"gce\",status=\"403\"} 12"),
        "{metrics}"
    );
}

/// A request without `Metadata-Flavor` (the header left out, not empty).
async fn unflavored(setup: &Setup, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::builder().method("GET").uri(path);
    if !headers.iter().any(|(n, _)| *n == "host") {
        request = request.header(header::HOST, MAIN.to_string());
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    request.extensions_mut().insert(Peer {
        local: MAIN,
        uid: Some(0),
    });
    let response = router(&setup.endpoint, true, true)
        .oneshot(request)
        .await
        .unwrap_or_else(|e| match e {});
    let status = response.status();
    let headers = response.headers().clone();
    assert_eq!(
        headers.get("metadata-flavor").map(|v| v.as_bytes()),
        Some(&b"Google"[..]),
        "{path}: a refusal is marked too"
    );
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn metrics(setup: &Setup) -> (StatusCode, String) {
    let answer = request_as(setup, MAIN, 0, "GET", "/metrics", &[]).await;
    (answer.status, answer.body)
}

/// issue 9: the metadata server's statuses, one per refusal (the match in `status` names every
/// one): a missing header is 403 here, where IMDS says 401.
#[test]
fn issue_9_gce_statuses() {
    let statuses: Vec<u16> = super::super::refusal::every()
        .iter()
        .map(|r| status(r).as_u16())
        .collect();
    assert_eq!(statuses, [403, 403, 403, 403, 403, 400, 403, 404, 503]);
}

/// issue 9: per-user access control: a restricted target is neither listed nor served to
/// other users (not found, marked), and is to its own.
#[tokio::test]
async fn issue_9_gce_access_control() {
    let setup = gce_only();
    let as_user = |uid, path: String| {
        let setup = &setup;
        async move { request_as(setup, MAIN, uid, "GET", &path, &[]).await }
    };
    let listing = as_user(1000, format!("{ACCOUNTS}/")).await;
    assert!(!listing.ok().contains(SECRET_SA), "{}", listing.body);
    assert!(listing.body.starts_with(&format!("default/\n{APP}/\n")));
    for leaf in ["token", "email", "?recursive=true", "identity?audience=x"] {
        let refused = as_user(1000, account(SECRET_SA, leaf)).await;
        assert_eq!(refused.status, 404, "{leaf}: {}", refused.body);
    }
    let allowed = as_user(4242, account(SECRET_SA, "token")).await;
    assert_eq!(allowed.json()["access_token"], "ya29.restricted-main-1");
    assert!(
        as_user(4242, format!("{ACCOUNTS}/"))
            .await
            .ok()
            .contains(SECRET_SA)
    );
    assert_eq!(setup.calls().len(), 1, "refusals reach no upstream");
}

/// Everything logged on this thread while the guard [`capture_logs`] returns is held.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures this thread's log (a `#[tokio::test]` runs its requests on its own thread).
fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// issue 9 (review): an account the caller may not use, asked for by email, answers exactly as
/// an email no target has — status, headers, body — for every path below it, so neither the
/// email's existence nor the target's name leaks; the refusal is still logged for operators.
/// Also at the address where that account is the default: only `default` itself says 403.
#[tokio::test]
async fn issue_9_gce_a_hidden_account_answers_as_an_unknown_one() {
    // A uid no other test uses: refusals are logged once per uid, target and face.
    const UID: u32 = 31_337;
    let setup = gce_only();
    let (log, _guard) = capture_logs();
    let unknown = "nobody@my-project.iam.gserviceaccount.com";
    for local in [MAIN, RESTRICTED] {
        for leaf in [
            "token",
            "token?scopes=https://scope.example/x",
            "email",
            "scopes",
            "aliases",
            "identity?audience=x",
            "identity?audience=x&format=full",
            "",
            "?recursive=true",
        ] {
            let hidden =
                request_as(&setup, local, UID, "GET", &account(SECRET_SA, leaf), &[]).await;
            let missing = request_as(&setup, local, UID, "GET", &account(unknown, leaf), &[]).await;
            assert_eq!(hidden.status, 404, "{local} {leaf}: {}", hidden.body);
            assert_eq!(hidden.status, missing.status, "{local} {leaf}");
            assert_eq!(hidden.headers, missing.headers, "{local} {leaf}");
            assert_eq!(hidden.body, missing.body, "{local} {leaf}");
            assert!(!hidden.body.contains("restricted"), "{}", hidden.body);
        }
        // The directory without its slash, and percent-encoded.
        let encoded = SECRET_SA.replace('@', "%40");
        for path in [
            format!("{ACCOUNTS}/{SECRET_SA}"),
            account(&encoded, "token"),
        ] {
            let hidden = request_as(&setup, local, UID, "GET", &path, &[]).await;
            assert_eq!(hidden.status, 404, "{path}: {}", hidden.body);
        }
    }
    let default = request_as(
        &setup,
        RESTRICTED,
        UID,
        "GET",
        &account("default", "token"),
        &[],
    )
    .await;
    assert_eq!(default.status, 403, "{}", default.body);
    let logged = log.text();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("credentials refused to this uid")
                && l.contains("31337")
                && l.contains("restricted")
                && l.contains("gce")),
        "the refusal is logged:\n{logged}"
    );
    assert!(setup.calls().is_empty(), "refusals reach no upstream");
}

/// issue 9 (review): whatever `?scopes=` says — another slot's name or display, other
/// parameters beside it — the face asks the engine for a `Scopes` slot of exactly those
/// scopes, never another kind (the fake Google hands out `scoped` tokens for `Scopes` only, and
/// refuses `SubjectToken` and `Resource`); `identity` asks only for `IdToken`.
#[tokio::test]
async fn issue_9_gce_scopes_never_name_another_slot() {
    let setup = gce_only();
    let tricky = [
        "the subject token",
        "SubjectToken",
        "subject_token",
        "ID token for \"x\"",
        "resource https://management.azure.com/",
    ];
    for (i, scope) in tricky.iter().enumerate() {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("scopes", scope)
            .append_pair("audience", "x")
            .append_pair("format", "full")
            .append_pair("resource", "https://management.azure.com/")
            .finish();
        let answer = get(&setup, &account("default", &format!("token?{query}"))).await;
        assert_eq!(
            answer.json()["access_token"],
            format!("ya29.app-scoped-{}", i + 1),
            "{scope}"
        );
    }
    let identity = get(
        &setup,
        &account(
            "default",
            "identity?audience=x&scopes=the%20subject%20token",
        ),
    )
    .await;
    assert_eq!(
        identity.ok(),
        format!("eyJ.app-id-{}-false.sig", tricky.len() + 1)
    );
    let mut want: Vec<(String, Option<SlotKey>)> = tricky
        .iter()
        .map(|scope| ("app".to_owned(), Some(SlotKey::scopes([*scope]))))
        .collect();
    want.push((
        "app".to_owned(),
        Some(SlotKey::IdToken {
            audience: "x".to_owned(),
            full: false,
        }),
    ));
    assert_eq!(setup.calls(), want);
}

/// issue 9: a default account the caller may not use is refused (403) — its token, its values
/// and the project from its settings — and left out of the listing, which still lists what the
/// caller may use.
#[tokio::test]
async fn issue_9_gce_a_restricted_default() {
    let setup = gce_only();
    let at_restricted = |uid, path: String| {
        let setup = &setup;
        async move { request_as(setup, RESTRICTED, uid, "GET", &path, &[]).await }
    };
    for path in [
        account("default", "token"),
        account("default", "email"),
        "/computeMetadata/v1/project/numeric-project-id".to_owned(),
    ] {
        let refused = at_restricted(1000, path.clone()).await;
        assert_eq!(refused.status, 403, "{path}: {}", refused.body);
    }
    let listing = at_restricted(1000, format!("{ACCOUNTS}/")).await;
    assert!(!listing.ok().contains("default/"), "{}", listing.body);
    assert!(!listing.body.contains(SECRET_SA), "{}", listing.body);
    assert!(listing.body.contains(APP), "{}", listing.body);
    let own = at_restricted(4242, account("default", "?recursive=true")).await;
    assert_eq!(own.json()["email"], SECRET_SA);
    assert!(setup.calls().is_empty());
}

/// issue 9: no credential (Google down) is 503, and so is a new variant refused to bound the
/// upstream calls consumers can cause; variants already held are still served.
#[tokio::test]
async fn issue_9_gce_unavailable_is_503() {
    let setup = gce_only();
    let down = get(
        &setup,
        &account("down@my-project.iam.gserviceaccount.com", "token"),
    )
    .await;
    assert_eq!(down.status, 503, "{}", down.body);
    let scoped = |i: usize| {
        account(
            "default",
            &format!("token?scopes=https://scope.example/{i}"),
        )
    };
    let mut statuses = Vec::new();
    for i in 0..12 {
        statuses.push(get(&setup, &scoped(i)).await.status.as_u16());
    }
    assert!(statuses.starts_with(&[200; 10]), "{statuses:?}");
    assert!(statuses.ends_with(&[503, 503]), "{statuses:?}");
    assert_eq!(get(&setup, &scoped(0)).await.status, 200, "still held");
}

/// issue 9: where no `gce_target` is named, the face is off: even its pings are 404.
#[tokio::test]
async fn issue_9_gce_is_off_without_a_gce_target() {
    let setup = gce_only();
    for path in [
        "/",
        "/computeMetadata/v1/instance",
        &account("default", "token"),
    ] {
        let answer = request_as(&setup, BARE, 0, "GET", path, &[]).await;
        assert_eq!(answer.status, 404, "{path}");
    }
    assert!(setup.calls().is_empty());
}

/// issue 9: the face beside the AWS faces of the real `FACES`, no route of one shadowing
/// another's.
#[tokio::test]
async fn issue_9_gce_beside_the_other_faces() {
    let setup = setup(&FACES);
    assert_eq!(get(&setup, "/").await.ok(), "computeMetadata/\n");
    let imds = request_as(&setup, MAIN, 0, "PUT", "/latest/api/token", &[]).await;
    assert_eq!(imds.status, 400, "IMDS still answers its own path");
    assert!(!imds.headers.contains_key("metadata-flavor"));
    let health = request_as(&setup, MAIN, 0, "GET", "/healthz", &[]).await;
    assert!(!health.headers.contains_key("metadata-flavor"));
}

#[test]
fn query_parameters() {
    let q = Query::parse(Some(
        "scopes=a,%20b,,c&scopes=d&audience=x%26y&format=full&recursive=TRUE&x=1",
    ));
    assert_eq!(q.scopes, ["a", "b", "c", "d"]);
    assert_eq!(q.audience.as_deref(), Some("x&y"));
    assert_eq!(q.format.as_deref(), Some("full"));
    assert!(q.recursive);
    let none = Query::parse(None);
    assert!(none.scopes.is_empty() && none.audience.is_none() && !none.recursive);
}

#[test]
fn path_segments_decode() {
    assert_eq!(decode("a%40b.com").ok().as_deref(), Some("a@b.com"));
    assert_eq!(decode("plain").ok().as_deref(), Some("plain"));
    // Not an escape: kept as written.
    assert_eq!(decode("50%").ok().as_deref(), Some("50%"));
    assert_eq!(decode("%+1").ok().as_deref(), Some("%+1"));
    assert_eq!(decode("%ff"), Err(Refusal::NotFound), "not UTF-8");
}

/// The token document's head is rendered from access tokens only, escaped as JSON.
#[test]
fn token_documents() {
    let access = Credential::Gcp(GcpToken {
        kind: GcpTokenKind::Access {
            scopes: vec![CLOUD.to_owned()],
            service_account: None,
        },
        token: "ya29.\"quoted\"".into(),
        expires_at: SystemTime::UNIX_EPOCH,
    });
    let head = token_head(&access).unwrap_or_else(|| panic!("no head"));
    let document = token_document(&Bytes::from(head), 42);
    let parsed: serde_json::Value =
        serde_json::from_slice(&document).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        parsed,
        serde_json::json!({"access_token": "ya29.\"quoted\"", "expires_in": 42, "token_type": "Bearer"})
    );
    let id = Credential::Gcp(GcpToken {
        kind: GcpTokenKind::Id {
            audience: "a".to_owned(),
            full: false,
            service_account: APP.to_owned(),
        },
        token: "eyJ.x.y".into(),
        expires_at: SystemTime::UNIX_EPOCH,
    });
    assert!(token_head(&id).is_none());
    assert_eq!(id_token(&id).as_deref(), Some("eyJ.x.y"));
    assert!(id_token(&access).is_none());
}
