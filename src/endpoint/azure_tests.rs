//! The Azure IMDS and App Service faces through the endpoint core (issue 10), with a fake Entra
//! ID that counts its calls per slot: the routes and documents as Azure's SDKs read them, the
//! header rules, the statuses and shape of every refusal, which slot each resource reaches,
//! which target each identity parameter selects, and per-user access control.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine as _;
use keyfed_azure::AzureToken;
use keyfed_core::clock::{Clock, ManualClock};
use keyfed_core::http::HttpSettings;
use tower::ServiceExt as _;

use super::super::face::Start;
use super::super::{Endpoint, FACES, app_service, assemble, azure_imds, guard, pairs, router};
use super::*;
use crate::config::{Access, EndpointSettings, Listen};
use crate::engine::{Backoff, Engine, Fetch, FetchError, Source, TargetEngine};

const MGMT: &str = "https://management.azure.com";
const VAULT: &str = "https://vault.azure.net";
const STORAGE: &str = "https://storage.azure.com";
const APP_ID: &str = "af3110ba-0ba9-4412-b1a0-59f50b7e9273";
const OTHER_ID: &str = "0b5e9c1d-7f5a-4c3e-9d43-2e1f00c0ffee";
const SECRET_ID: &str = "5ec2e7ed-0000-4000-8000-000000000001";
const DOWN_ID: &str = "d0d0d0d0-0000-4000-8000-000000000002";

/// The address serving target `app` on both faces.
const MAIN: SocketAddr = addr(9931);
/// An address with no `azure_target`: the faces are off there.
const BARE: SocketAddr = addr(9932);
/// The address serving the restricted target.
const RESTRICTED: SocketAddr = addr(9933);

const fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), port)
}

/// The `oid` of a target's tokens: its object ID.
fn oid(target: &str) -> String {
    format!("00000000-0000-4000-8000-{:0>12}", target.len())
}

/// The `xms_mirid` of a target's tokens.
fn mirid(target: &str) -> String {
    format!(
        "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{target}"
    )
}

/// Every upstream call the fake Entra got: target and slot.
type Calls = Arc<Mutex<Vec<(String, Option<SlotKey>)>>>;

/// A fake Entra ID for one target: a JWT-shaped token for any resource (its claims carry the
/// target's `oid` and `xms_mirid`, and `nbf`), expiring an hour after the clock's now; or,
/// `down`, failing every call.
#[derive(Debug)]
struct Entra {
    target: String,
    client_id: String,
    scopes: Vec<String>,
    down: bool,
    calls: Calls,
    clock: Arc<dyn Clock>,
}

impl Source for Entra {
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
            let scope = match slot {
                None => self.scopes.first().cloned().unwrap_or_default(),
                Some(SlotKey::Resource(scope)) => scope.clone(),
                Some(other) => return Err(FetchError::no_slot(other)),
            };
            let now = keyfed_core::clock::unix_seconds(self.clock.now());
            let claims = serde_json::json!({
                "oid": oid(&self.target),
                "xms_mirid": mirid(&self.target),
                "nbf": now - 300,
                "n": n,
                "scope": scope,
            });
            let payload =
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
            Ok(Credential::Azure(AzureToken {
                token: format!("eyJ0eXAiOiJKV1QifQ.{payload}.sig-{}-{n}", self.target).into(),
                scope,
                tenant_id: "tenant".to_owned(),
                client_id: self.client_id.clone(),
                expires_at: self.clock.now() + Duration::from_secs(3600),
            }))
        })
    }

    fn has_slot(&self, slot: &SlotKey) -> bool {
        matches!(slot, SlotKey::Resource(_))
    }

    fn consumer_window(&self) -> Duration {
        Duration::from_secs(300)
    }
}

/// A target's `azure` table.
fn azure(client_id: &str, resources: &[&str]) -> AzureExchange {
    AzureExchange {
        tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".to_owned(),
        client_id: client_id.to_owned(),
        scopes: resources
            .iter()
            .map(|r| keyfed_azure::scope_for_resource(r))
            .collect(),
        authority_host: url::Url::parse("https://login.microsoftonline.com")
            .unwrap_or_else(|e| panic!("{e}")),
        http: HttpSettings::default(),
    }
}

/// The test's endpoint: its clock, Entra's calls, the folder of the identity header file, and
/// where a reload is published.
struct Setup {
    endpoint: Arc<Endpoint>,
    publish: tokio::sync::watch::Sender<Arc<Served>>,
    clock: ManualClock,
    calls: Calls,
    dir: tempfile::TempDir,
}

impl Setup {
    fn calls(&self) -> Vec<(String, Option<SlotKey>)> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The secret the App Service face wrote.
    fn secret(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("identity-header"))
            .unwrap_or_else(|e| panic!("the identity header file: {e}"))
    }
}

/// Targets `app` (management and vault; the default on [`MAIN`]), `other`, `restricted` (only
/// uid 4242; the default on [`RESTRICTED`]) and `down` (Entra failing), all Azure; `listen`
/// says which addresses name an `azure_target`.
fn setup_with(starts: &[Start], on: bool) -> Setup {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let calls = Calls::default();
    let specs = [
        ("app", azure(APP_ID, &[MGMT, VAULT]), false),
        ("other", azure(OTHER_ID, &[MGMT]), false),
        ("restricted", azure(SECRET_ID, &[MGMT]), false),
        ("down", azure(DOWN_ID, &[MGMT]), true),
    ];
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));
    let targets = specs
        .iter()
        .map(|(name, azure, down)| {
            let entra = Entra {
                target: (*name).to_owned(),
                client_id: azure.client_id.clone(),
                scopes: azure.scopes.clone(),
                down: *down,
                calls: Arc::clone(&calls),
                clock: Arc::clone(&shared),
            };
            TargetEngine::new(
                (*name).to_owned(),
                Box::new(entra),
                Vec::new(),
                Arc::clone(&shared),
                backoff,
                Duration::from_secs(10),
            )
        })
        .collect();
    let faces = BTreeSet::from([
        (azure_imds::NAME, "app".to_owned()),
        (app_service::NAME, "app".to_owned()),
    ]);
    let mut served = Served::for_tests(Engine::new(targets), BTreeMap::new(), faces);
    for (name, azure, _) in specs {
        served
            .exchanges
            .insert(name.to_owned(), Exchange::Azure(Box::new(azure)));
    }
    served.access.insert(
        "restricted".to_owned(),
        Access {
            users: vec![4242],
            groups: Vec::new(),
        },
    );
    let (publish, current) = tokio::sync::watch::channel(Arc::new(served));
    let listen = |address, target: Option<&str>| Listen {
        address,
        targets: target
            .filter(|_| on)
            .map(|t| {
                BTreeMap::from([
                    (azure_imds::NAME, t.to_owned()),
                    (app_service::NAME, t.to_owned()),
                ])
            })
            .unwrap_or_default(),
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let settings = EndpointSettings {
        listen: vec![
            listen(MAIN, Some("app")),
            listen(BARE, None),
            listen(RESTRICTED, Some("restricted")),
        ],
        imds_v1: false,
        health_listen: None,
        container_token_file: dir.path().join("container-token"),
        container_token_group: None,
        identity_header_file: dir.path().join("identity-header"),
        identity_header_group: None,
        max_connections: 16,
        max_connections_per_user: 4,
        allowed_hosts: Vec::new(),
        request_timeout: Duration::from_secs(10),
    };
    let hosts = guard::Hosts::new([MAIN, BARE, RESTRICTED], &settings.allowed_hosts);
    let endpoint = assemble(settings, hosts, current, shared, starts)
        .unwrap_or_else(|e| panic!("the endpoint does not start: {e:#}"));
    Setup {
        endpoint,
        publish,
        clock,
        calls,
        dir,
    }
}

/// Only the two Azure faces.
fn setup() -> Setup {
    setup_with(&[azure_imds::start, app_service::start], true)
}

/// An answer: status, headers, body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// Asserts a 200 and returns the document.
    fn ok(&self) -> serde_json::Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        assert_eq!(
            self.headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json; charset=utf-8")
        );
        self.json()
    }

    /// Asserts a refusal with `status`, in JSON, and returns its text (for IMDS its
    /// `error_description`, for App Service its `message`).
    fn refused(&self, status: u16) -> String {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        let document = self.json();
        if let Some(code) = document.get("statusCode") {
            assert_eq!(code, status, "{document}");
            return document["message"].as_str().unwrap_or_default().to_owned();
        }
        assert!(document["error"].is_string(), "{document}");
        document["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// A request from `uid` arriving on `local`, with exactly `headers` (and `Host`).
async fn request_as(
    setup: &Setup,
    local: SocketAddr,
    uid: u32,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(n, _)| *n == "host") {
        request = request.header(header::HOST, local.to_string());
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
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn imds_path(query: &str) -> String {
    format!("/metadata/identity/oauth2/token?api-version=2018-02-01&{query}")
}

fn msi_path(query: &str) -> String {
    format!("/msi/token?api-version=2019-08-01&{query}")
}

/// The IMDS face's token for `query`, as root on [`MAIN`], with `Metadata: true`.
async fn imds(setup: &Setup, query: &str) -> Answer {
    imds_as(setup, MAIN, 0, query).await
}

async fn imds_as(setup: &Setup, local: SocketAddr, uid: u32, query: &str) -> Answer {
    request_as(
        setup,
        local,
        uid,
        "GET",
        &imds_path(query),
        &[("metadata", "true")],
    )
    .await
}

/// The App Service face's token for `query`, as root on [`MAIN`], with the secret.
async fn msi(setup: &Setup, query: &str) -> Answer {
    msi_as(setup, MAIN, 0, query).await
}

async fn msi_as(setup: &Setup, local: SocketAddr, uid: u32, query: &str) -> Answer {
    let secret = setup.secret();
    request_as(
        setup,
        local,
        uid,
        "GET",
        &msi_path(query),
        &[("x-identity-header", &secret)],
    )
    .await
}

/// issue 10: both faces are registered and declared, share the `azure_target` key, and reserve
/// only their own paths.
#[tokio::test]
async fn issue_10_the_azure_faces_are_registered_with_their_paths() {
    let setup = setup_with(&FACES, true);
    for (name, path) in [
        (azure_imds::NAME, "/metadata/identity/oauth2/token"),
        (app_service::NAME, "/msi/token"),
    ] {
        let spec = setup
            .endpoint
            .face(name)
            .unwrap_or_else(|| panic!("{name} is not registered"))
            .spec();
        assert_eq!(spec.target_key, Some("azure_target"));
        assert_eq!(spec.serves, ["azure"]);
        assert!(spec.reserves(path), "{name} {path}");
        assert!(!spec.reserves("/latest/api/token") && !spec.reserves("/"));
    }
}

/// issue 10: IMDS's document — every value a string, the token of the default target for the
/// resource, `expires_in` whole seconds left now, `expires_on` its end, `not_before` the
/// token's `nbf`, `resource` echoed as asked — served from the main credential for the
/// target's first scope, with or without a trailing slash, with one upstream call.
#[tokio::test]
async fn issue_10_imds_token_document() {
    let setup = setup();
    let expires_on = 1_700_000_000 + 3600;
    for resource in [MGMT, "https://management.azure.com/", MGMT] {
        let document = imds(&setup, &format!("resource={resource}")).await.ok();
        let object = document.as_object().unwrap_or_else(|| panic!("{document}"));
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "access_token",
                "client_id",
                "expires_in",
                "expires_on",
                "ext_expires_in",
                "not_before",
                "resource",
                "token_type"
            ]
        );
        assert!(
            object.values().all(serde_json::Value::is_string),
            "{document}"
        );
        assert!(
            document["access_token"]
                .as_str()
                .is_some_and(|t| t.ends_with(".sig-app-1")),
            "{document}"
        );
        assert_eq!(document["client_id"], APP_ID);
        assert_eq!(document["expires_in"], "3600");
        assert_eq!(document["ext_expires_in"], "3600");
        assert_eq!(document["expires_on"], expires_on.to_string());
        assert_eq!(
            document["not_before"],
            (1_700_000_000_u64 - 300).to_string()
        );
        assert_eq!(document["resource"], resource);
        assert_eq!(document["token_type"], "Bearer");
    }
    setup.clock.advance(Duration::from_millis(100_500));
    let later = imds(&setup, &format!("resource={MGMT}")).await.ok();
    assert_eq!(later["expires_in"], "3499", "rounded down, fresh: {later}");
    assert_eq!(later["expires_on"], expires_on.to_string());
    assert_eq!(setup.calls(), [("app".to_owned(), None)]);
}

/// issue 10: App Service's document — `expires_on` an epoch string, `resource` always there —
/// from the same credential as the IMDS face's.
#[tokio::test]
async fn issue_10_app_service_token_document() {
    let setup = setup();
    let document = msi(&setup, &format!("resource={MGMT}/")).await.ok();
    let object = document.as_object().unwrap_or_else(|| panic!("{document}"));
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "access_token",
            "client_id",
            "expires_on",
            "resource",
            "token_type"
        ]
    );
    assert_eq!(
        document["expires_on"],
        (1_700_000_000_u64 + 3600).to_string()
    );
    assert_eq!(document["resource"], format!("{MGMT}/"));
    assert_eq!(document["client_id"], APP_ID);
    assert_eq!(document["token_type"], "Bearer");
    let from_imds = imds(&setup, &format!("resource={MGMT}")).await.ok();
    assert_eq!(document["access_token"], from_imds["access_token"]);
    assert_eq!(setup.calls(), [("app".to_owned(), None)]);
}

/// issue 10: a resource is the scope `<resource>/.default`: the target's first scope is its
/// main credential, another of its scopes or any other resource its `Resource` slot — one per
/// scope, whichever face asks and however the resource is written.
#[tokio::test]
async fn issue_10_resources_pick_the_slot() {
    let setup = setup();
    let token = |answer: Answer| {
        answer.ok()["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let main = token(imds(&setup, &format!("resource={MGMT}/.default")).await);
    let vault = token(imds(&setup, &format!("resource={VAULT}")).await);
    let vault_again = token(msi(&setup, &format!("resource={VAULT}/")).await);
    let storage = token(msi(&setup, &format!("resource={STORAGE}")).await);
    assert!(main.ends_with("-1") && vault.ends_with("-2") && storage.ends_with("-3"));
    assert_eq!(vault, vault_again);
    let resource = |r: &str| Some(SlotKey::Resource(format!("{r}/.default")));
    assert_eq!(
        setup.calls(),
        [
            ("app".to_owned(), None),
            ("app".to_owned(), resource(VAULT)),
            ("app".to_owned(), resource(STORAGE)),
        ]
    );
}

/// issue 10: IMDS's header rules — `Metadata: true` on every path (400 without it, in IMDS's
/// JSON with its `bad_request_102`: azure-identity's probe, sent without the header, takes any
/// answer as "IMDS is here"), `X-Forwarded-For` 400, a web page's request 403 — and the
/// request's own: GET, the token path, `api-version` and `resource`. Nothing reaches Entra.
#[tokio::test]
async fn issue_10_imds_header_rules() {
    let setup = setup();
    let token = imds_path(&format!("resource={MGMT}"));
    let probe = request_as(&setup, MAIN, 0, "GET", &token, &[]).await;
    assert!(
        probe.refused(400).contains("Metadata: true"),
        "{}",
        probe.body
    );
    assert_eq!(probe.json()["error"], "bad_request_102");
    let cases: &[(&[(&str, &str)], u16)] = &[
        (&[("metadata", "false")], 400),
        (&[("metadata", "")], 400),
        (
            &[("metadata", "true"), ("x-forwarded-for", "192.0.2.1")],
            400,
        ),
        (
            &[("metadata", "true"), ("origin", "http://evil.example")],
            403,
        ),
        (&[("metadata", "true"), ("sec-fetch-mode", "no-cors")], 403),
        (&[("metadata", "true"), ("host", "rebound.example")], 403),
    ];
    for (headers, want) in cases {
        let answer = request_as(&setup, MAIN, 0, "GET", &token, headers).await;
        answer.refused(*want);
    }
    let flagged = [("metadata", "True")];
    for (method, path, want) in [
        ("POST", token.as_str(), 404),
        ("GET", "/metadata/instance?api-version=2021-02-01", 404),
        ("GET", "/metadata", 404),
        (
            "GET",
            "/metadata/identity/oauth2/token?resource=https://management.azure.com",
            400,
        ),
        (
            "GET",
            "/metadata/identity/oauth2/token?api-version=2018-02-01",
            400,
        ),
        (
            "GET",
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=",
            400,
        ),
    ] {
        let answer = request_as(&setup, MAIN, 0, method, path, &flagged).await;
        let why = answer.refused(want);
        assert!(!why.is_empty(), "{method} {path}");
    }
    assert!(setup.calls().is_empty(), "no refused request reached Entra");
    let with_header = request_as(&setup, MAIN, 0, "GET", &token, &flagged).await;
    with_header.ok();
}

/// issue 10: the App Service face's secret — written at start, 0640, no trailing newline —
/// is required (401 without it or wrong, in App Service's JSON), `X-Forwarded-For` is 403 and
/// only `api-version=2019-08-01` is served.
#[tokio::test]
async fn issue_10_app_service_secret_and_rules() {
    let setup = setup();
    let secret = setup.secret();
    assert_eq!(secret.len(), 64, "32 random bytes in hex, no newline");
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    let mode = std::fs::metadata(setup.dir.path().join("identity-header"))
        .unwrap_or_else(|e| panic!("{e}"))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    let token = msi_path(&format!("resource={MGMT}"));
    // The last digit changed (never equal to the real secret, whatever it ends in).
    let last = if secret.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &secret[..63]);
    assert_ne!(wrong, secret);
    let cases: Vec<(Vec<(&str, &str)>, u16)> = vec![
        (vec![], 401),
        (vec![("x-identity-header", "")], 401),
        (vec![("x-identity-header", &wrong)], 401),
        (vec![("x-identity-header", &secret[..63])], 401),
        (vec![("metadata", "true")], 401),
        (
            vec![
                ("x-identity-header", &secret),
                ("x-forwarded-for", "192.0.2.1"),
            ],
            403,
        ),
        (
            vec![
                ("x-identity-header", &secret),
                ("origin", "http://evil.example"),
            ],
            403,
        ),
    ];
    for (headers, want) in &cases {
        let answer = request_as(&setup, MAIN, 0, "GET", &token, headers).await;
        let why = answer.refused(*want);
        assert!(!why.contains(&secret), "{why}");
    }
    let with = [("x-identity-header", secret.as_str())];
    for (method, path, want) in [
        ("POST", token.clone(), 404),
        ("GET", "/msi/other".to_owned(), 404),
        (
            "GET",
            format!("/msi/token?api-version=2017-09-01&resource={MGMT}"),
            400,
        ),
        ("GET", format!("/msi/token?resource={MGMT}"), 400),
        ("GET", "/msi/token?api-version=2019-08-01".to_owned(), 400),
    ] {
        let answer = request_as(&setup, MAIN, 0, method, &path, &with).await;
        answer.refused(want);
    }
    assert!(setup.calls().is_empty(), "no refused request reached Entra");
    let served = request_as(&setup, MAIN, 0, "GET", &token, &with).await;
    served.ok();
}

/// issue 10: each face's status for each refusal (each `status` names every one).
#[test]
fn issue_10_statuses() {
    let statuses = |status: fn(&Refusal) -> StatusCode| -> Vec<u16> {
        super::super::refusal::every()
            .iter()
            .map(|r| status(r).as_u16())
            .collect()
    };
    assert_eq!(
        statuses(azure_imds::status),
        [400, 403, 403, 400, 400, 400, 403, 404, 503]
    );
    assert_eq!(
        statuses(app_service::status),
        [403, 403, 403, 401, 401, 400, 403, 404, 503]
    );
}

/// issue 10: `client_id` selects the Azure target with that client ID (in any case), on both
/// faces; the default's own client ID is the default; an unknown one is 400 naming it.
#[tokio::test]
async fn issue_10_client_id_selects_the_target() {
    let setup = setup();
    let other = imds(&setup, &format!("resource={MGMT}&client_id={OTHER_ID}"))
        .await
        .ok();
    assert_eq!(other["client_id"], OTHER_ID);
    let upper = msi(
        &setup,
        &format!("resource={MGMT}&client_id={}", OTHER_ID.to_uppercase()),
    )
    .await
    .ok();
    assert_eq!(upper["access_token"], other["access_token"]);
    let own = imds(&setup, &format!("resource={MGMT}&client_id={APP_ID}"))
        .await
        .ok();
    assert_eq!(own["client_id"], APP_ID);
    let unknown = "11111111-2222-3333-4444-555555555555";
    for answer in [
        imds(&setup, &format!("resource={MGMT}&client_id={unknown}")).await,
        msi(&setup, &format!("resource={MGMT}&client_id={unknown}")).await,
    ] {
        let why = answer.refused(400);
        assert!(why.contains(unknown), "{why}");
    }
    assert_eq!(
        setup.calls(),
        [("other".to_owned(), None), ("app".to_owned(), None)]
    );
}

/// issue 10: `object_id`/`principal_id` and `msi_res_id`/`mi_res_id` select the target whose
/// token carries that `oid` or `xms_mirid` (keyfed's configuration knows only client IDs);
/// one matching no target is 400; two identity parameters are 400.
#[tokio::test]
async fn issue_10_principal_and_resource_ids_select_by_the_token() {
    let setup = setup();
    for query in [
        format!("object_id={}", oid("other")),
        format!("principal_id={}", oid("other")),
        format!("msi_res_id={}", mirid("other")),
        format!("mi_res_id={}", mirid("other").to_lowercase()),
    ] {
        let imds_answer = imds(&setup, &format!("resource={MGMT}&{query}")).await.ok();
        assert_eq!(imds_answer["client_id"], OTHER_ID, "{query}");
        let msi_answer = msi(&setup, &format!("resource={MGMT}&{query}")).await.ok();
        assert_eq!(msi_answer["client_id"], OTHER_ID, "{query}");
    }
    for query in [
        "object_id=99999999-0000-4000-8000-000000000000".to_owned(),
        "mi_res_id=/subscriptions/s/nothing".to_owned(),
        format!("client_id={OTHER_ID}&object_id={}", oid("other")),
    ] {
        imds(&setup, &format!("resource={MGMT}&{query}"))
            .await
            .refused(400);
    }
}

/// issue 10: per-user access control — a target hidden from the caller answers exactly as an
/// identity no target has (by client ID or principal ID, and its token is never asked for),
/// a restricted default is 403, and the allowed user gets its token.
#[tokio::test]
async fn issue_10_a_hidden_identity_answers_as_an_unknown_one() {
    const UID: u32 = 31_338;
    let setup = setup();
    let unknown = "11111111-2222-3333-4444-555555555555";
    for (hidden, missing) in [
        (
            format!("client_id={SECRET_ID}"),
            format!("client_id={unknown}"),
        ),
        (
            format!("object_id={}", oid("restricted")),
            format!("object_id={unknown}"),
        ),
    ] {
        for local in [MAIN, RESTRICTED] {
            let q = |id: &str| format!("resource={MGMT}&{id}");
            let h = imds_as(&setup, local, UID, &q(&hidden)).await;
            let m = imds_as(&setup, local, UID, &q(&missing)).await;
            assert_eq!(h.status, 400, "{}", h.body);
            assert_eq!(
                h.body
                    .replace(SECRET_ID, unknown)
                    .replace(&oid("restricted"), unknown),
                m.body
            );
            assert!(!h.body.contains("restricted"), "{}", h.body);
            let h = msi_as(&setup, local, UID, &q(&hidden)).await;
            assert_eq!(h.status, 400, "{}", h.body);
        }
    }
    assert!(
        !setup.calls().iter().any(|(t, _)| t == "restricted"),
        "the hidden target's token was never asked for: {:?}",
        setup.calls()
    );
    let default = imds_as(&setup, RESTRICTED, UID, &format!("resource={MGMT}")).await;
    default.refused(403);
    msi_as(&setup, RESTRICTED, UID, &format!("resource={MGMT}"))
        .await
        .refused(403);
    let own = imds_as(
        &setup,
        MAIN,
        4242,
        &format!("resource={MGMT}&client_id={SECRET_ID}"),
    )
    .await
    .ok();
    assert_eq!(own["client_id"], SECRET_ID);
}

/// issue 10: no token (Entra down) is 503 with the reason, and so is a new resource refused to
/// bound the upstream calls consumers can cause; resources already held are still served.
#[tokio::test]
async fn issue_10_unavailable_is_503() {
    let setup = setup();
    let down = imds(&setup, &format!("resource={MGMT}&client_id={DOWN_ID}")).await;
    assert!(
        down.refused(503).contains("connection refused"),
        "{}",
        down.body
    );
    msi(&setup, &format!("resource={MGMT}&client_id={DOWN_ID}"))
        .await
        .refused(503);
    let mut statuses = Vec::new();
    for i in 0..12 {
        let answer = msi(&setup, &format!("resource=api://resource-{i}")).await;
        statuses.push(answer.status.as_u16());
    }
    assert!(statuses.starts_with(&[200; 10]), "{statuses:?}");
    assert!(statuses.ends_with(&[503, 503]), "{statuses:?}");
    msi(&setup, "resource=api://resource-0").await.ok();
}

/// issue 10: where no `azure_target` is named the faces are off (404) — and with none named
/// anywhere, the App Service face writes no secret at all.
#[tokio::test]
async fn issue_10_the_faces_are_off_without_an_azure_target() {
    let setup = setup();
    imds_as(&setup, BARE, 0, &format!("resource={MGMT}"))
        .await
        .refused(404);
    msi_as(&setup, BARE, 0, &format!("resource={MGMT}"))
        .await
        .refused(404);
    let off = setup_with(&[azure_imds::start, app_service::start], false);
    assert!(!off.dir.path().join("identity-header").exists());
    let answer = request_as(
        &off,
        MAIN,
        0,
        "GET",
        &msi_path(&format!("resource={MGMT}")),
        &[("x-identity-header", "")],
    )
    .await;
    answer.refused(404);
    assert!(setup.calls().is_empty() && off.calls().is_empty());
}

/// issue 10: the faces beside every other face of the real `FACES`, no route shadowing
/// another's, and counted under their own names.
#[tokio::test]
async fn issue_10_beside_the_other_faces() {
    let setup = setup_with(&FACES, true);
    imds(&setup, &format!("resource={MGMT}")).await.ok();
    msi(&setup, &format!("resource={MGMT}")).await.ok();
    let imds_v2 = request_as(&setup, MAIN, 0, "PUT", "/latest/api/token", &[]).await;
    assert_eq!(imds_v2.status, 400, "IMDSv2 still answers its own path");
    let metrics = request_as(&setup, MAIN, 0, "GET", "/metrics", &[]).await;
    for face in [azure_imds::NAME, app_service::NAME] {
        assert!(
            metrics.body.contains(&format!(
                "keyfed_endpoint_requests_total{{face=\"{face}\",status=\"200\"}} 1"
            )),
            "{}",
            metrics.body
        );
    }
}

#[test]
fn query_parameters() {
    let q = Query::parse(Some(
        "api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net&mi_res_id=%2Fsubscriptions%2Fx&x=1",
    ));
    assert_eq!(q.api_version.as_deref(), Some("2018-02-01"));
    assert_eq!(q.resource().ok(), Some(VAULT));
    assert_eq!(
        q.identity,
        Some(Identity::Resource("/subscriptions/x".to_owned()))
    );
    assert_eq!(q.identities, 1);
    let none = Query::parse(None);
    assert!(none.resource().is_err() && none.identity.is_none());
}

/// issue 10 (review): a malformed resource is the consumer's mistake: 400 with no upstream call,
/// not a failing variant that would hold one of the target's places for the longest backoff.
#[test]
fn issue_10_a_malformed_resource_is_refused_before_any_upstream_call() {
    for resource in [
        "https://x y",
        "not a uri",
        "https://a\u{1b}b",
        "relative/path",
    ] {
        let query = super::Query {
            resource: Some(resource.to_owned()),
            ..super::Query::default()
        };
        let refusal = query.resource().err();
        assert!(
            matches!(&refusal, Some(Refusal::BadRequest(m)) if m.contains("absolute URI")),
            "{resource:?}: {refusal:?}"
        );
    }
    let ok = super::Query {
        resource: Some("https://management.azure.com".to_owned()),
        ..super::Query::default()
    };
    assert_eq!(ok.resource().ok(), Some("https://management.azure.com"));
}

/// An identity-header pair for `target` (as `setup_with` configures it) issued to `uid`.
fn pair(setup: &Setup, target: &str, client_id: &str, uid: u32) -> String {
    let binding = pairs::Binding {
        target: target.to_owned(),
        tenant_id: "72F988BF-86F1-41AF-91AB-2D7CD011DB47".to_owned(),
        client_id: client_id.to_owned(),
        uid,
    };
    let issued = setup
        .endpoint
        .core
        .pairs
        .issue(
            binding,
            pairs::Until::Deadline(setup.clock.now() + Duration::from_secs(600)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    issued.header.expose_secret().to_owned()
}

/// The App Service face's answer to `header` from `uid` on [`MAIN`].
async fn msi_with(setup: &Setup, uid: u32, header: &str, query: &str) -> Answer {
    request_as(
        setup,
        MAIN,
        uid,
        "GET",
        &msi_path(query),
        &[("x-identity-header", header)],
    )
    .await
}

/// issue 12 (review): a pair's header is answered only for the uid it was issued to (another
/// user who reads it gets 401, as with a wrong header), with its own target's tokens whatever
/// the address's default.
#[tokio::test]
async fn issue_12_a_pair_serves_only_its_uid() {
    let setup = setup();
    let header = pair(&setup, "other", OTHER_ID, 1000);
    let query = format!("resource={MGMT}");
    let mine = msi_with(&setup, 1000, &header, &query).await.ok();
    assert_eq!(mine["client_id"], OTHER_ID, "its target, not the default");
    let wrong = msi_with(&setup, 1000, &"0".repeat(64), &query)
        .await
        .refused(401);
    for uid in [0, 1001] {
        let why = msi_with(&setup, uid, &header, &query).await.refused(401);
        assert_eq!(why, wrong, "as a wrong header");
    }
    assert_eq!(setup.calls(), [("other".to_owned(), None)]);
}

/// issue 12 (review): an identity parameter may name the pair's own target — by client ID,
/// or by the `oid` or `xms_mirid` of its token — and nothing else: another target named by
/// any of them is 400, as are two identity parameters.
#[tokio::test]
async fn issue_12_a_pair_names_no_other_target() {
    let setup = setup();
    let header = pair(&setup, "app", APP_ID, 1000);
    for own in [
        format!("client_id={}", APP_ID.to_uppercase()),
        format!("object_id={}", oid("app")),
        format!("principal_id={}", oid("app")),
        format!("msi_res_id={}", mirid("app")),
        format!("mi_res_id={}", mirid("app")),
    ] {
        let answer = msi_with(&setup, 1000, &header, &format!("resource={MGMT}&{own}")).await;
        assert_eq!(answer.ok()["client_id"], APP_ID, "{own}");
    }
    for other in [
        format!("client_id={OTHER_ID}"),
        format!("object_id={}", oid("other")),
        format!("msi_res_id={}", mirid("other")),
    ] {
        let answer = msi_with(&setup, 1000, &header, &format!("resource={MGMT}&{other}")).await;
        let why = answer.refused(400);
        assert!(
            why.contains("serves only the managed identity of target \"app\""),
            "{other}: {why}"
        );
    }
    let two = format!(
        "resource={MGMT}&client_id={APP_ID}&object_id={}",
        oid("app")
    );
    let why = msi_with(&setup, 1000, &header, &two).await.refused(400);
    assert!(why.contains("at most one"), "{why}");
    assert!(
        setup.calls().iter().all(|(target, _)| target == "app"),
        "{:?}",
        setup.calls()
    );
}

/// issue 12 (review): a pair is bound to its target as configured when it was issued: after a
/// reload that points the target at another app (client or tenant ID) or removes it, its
/// header is 400 saying so, not a way to the new app's tokens.
#[tokio::test]
async fn issue_12_a_pair_ends_with_its_target_s_app() {
    let setup = setup();
    let header = pair(&setup, "app", APP_ID, 1000);
    let query = format!("resource={MGMT}");
    msi_with(&setup, 1000, &header, &query).await.ok();
    let faces = BTreeSet::from([(app_service::NAME, "app".to_owned())]);
    let reload = |exchanges: Vec<(&str, AzureExchange)>| {
        let mut served = Served::for_tests(Engine::new(Vec::new()), BTreeMap::new(), faces.clone());
        for (name, azure) in exchanges {
            served
                .exchanges
                .insert(name.to_owned(), Exchange::Azure(Box::new(azure)));
        }
        setup.publish.send_replace(Arc::new(served));
    };
    let mut other_tenant = azure(APP_ID, &[MGMT]);
    other_tenant.tenant_id = "0d0d0d0d-0000-4000-8000-000000000000".to_owned();
    for (what, changed) in [
        ("client", azure(OTHER_ID, &[MGMT])),
        ("tenant", other_tenant),
    ] {
        reload(vec![("app", changed)]);
        let why = msi_with(&setup, 1000, &header, &query).await.refused(400);
        assert!(
            why.contains("names another app")
                && why.contains("run keyfed exec or keyfed env again"),
            "{what}: {why}"
        );
    }
    reload(vec![("other", azure(APP_ID, &[MGMT]))]);
    let why = msi_with(&setup, 1000, &header, &query).await.refused(400);
    assert!(why.contains("is no longer served"), "{why}");
    assert_eq!(setup.calls(), [("app".to_owned(), None)]);
}
