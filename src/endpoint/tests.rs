//! The endpoint core with its faces registered by hand (issue 9): a toy face, known only to
//! these tests, registered beside the real ones as any new face is — a module and one line —
//! serves the same credential in its own format and says no in its own statuses and shape,
//! while the core's guard, access control, cache and counters serve it unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use keyfed_aws::AwsCredentials;
use keyfed_core::clock::{Clock, SystemClock};
use tower::ServiceExt as _;

use super::documents::Key;
use super::face::{Face, Start};
use super::refusal::Refusal;
use super::server::Peer;
use super::{Core, Endpoint, FACES, assemble, guard, router};
use crate::config::{EndpointSettings, FaceSpec, Listen};
use crate::credential::Credential;
use crate::engine::{Backoff, Engine, Fetch, SlotKey, Source, TargetEngine};
use crate::served::{FacePath, Served};

/// The toy face's declaration: what a cloud's glue declares for a real face.
static TOY: FaceSpec = FaceSpec {
    name: "toy",
    title: "toy",
    target_key: Some("toy_target"),
    path_key: None,
    serves: &["aws"],
    reserved: &["/toy"],
    advise: |_| None,
};

/// A face whose clients send `Toy: yes`, get the key id as text, and are told no with 400 and
/// a JSON body (as Azure IMDS does), every answer marked `Toy-Face: 1`.
struct Toy {
    core: Arc<Core>,
}

fn start_toy(core: &Arc<Core>) -> anyhow::Result<Arc<dyn Face>> {
    Ok(Arc::new(Toy {
        core: Arc::clone(core),
    }))
}

#[deny(
    clippy::wildcard_enum_match_arm,
    clippy::match_wildcard_for_single_variants
)]
fn toy_status(refusal: &Refusal) -> StatusCode {
    match refusal {
        Refusal::Forwarded => StatusCode::BAD_REQUEST,
        Refusal::ForeignHost(_) => StatusCode::BAD_REQUEST,
        Refusal::FromBrowser => StatusCode::BAD_REQUEST,
        Refusal::MissingHeader(_) => StatusCode::BAD_REQUEST,
        Refusal::BadToken => StatusCode::BAD_REQUEST,
        Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
        Refusal::Forbidden { .. } => StatusCode::FORBIDDEN,
        Refusal::NotFound => StatusCode::NOT_FOUND,
        Refusal::Unavailable(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The toy format of an AWS credential.
fn render_toy(credential: &Credential) -> Option<String> {
    let Credential::Aws(c) = credential else {
        return None;
    };
    Some(format!("toy {}", c.access_key_id))
}

impl Face for Toy {
    fn spec(&self) -> &'static FaceSpec {
        &TOY
    }

    fn routes(self: Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/toy/credential", get(toy_credential))
            .with_state(self)
    }

    fn status(&self, refusal: &Refusal) -> StatusCode {
        toy_status(refusal)
    }

    fn refuse(&self, refusal: &Refusal) -> Response {
        let body = serde_json::json!({"error": "refused", "error_description": refusal.reason()});
        (self.status(refusal), axum::Json(body)).into_response()
    }

    fn finish(&self, response: &mut Response) {
        response
            .headers_mut()
            .insert("toy-face", HeaderValue::from_static("1"));
    }
}

async fn toy_credential(
    State(toy): State<Arc<Toy>>,
    peer: axum::Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        if headers.get("toy").is_none() {
            return Err(Refusal::MissingHeader("Toy"));
        }
        let target = toy.core.target_at(TOY.name, &peer.0)?.to_owned();
        let served = toy.core.served();
        // `toy-scope: a` asks for the variant with scope `a`.
        let slot = headers
            .get("toy-scope")
            .and_then(|v| v.to_str().ok())
            .map(|scope| SlotKey::scopes([scope]));
        let issued = toy
            .core
            .credential_for(&served, &target, slot.as_ref(), peer.0)
            .await?;
        let key = Key {
            target: &target,
            slot: None,
            format: TOY.name,
        };
        let body = toy
            .core
            .document(key, &issued, render_toy)
            .ok_or(Refusal::NotFound)?;
        Ok(body.into_response())
    }
    .await;
    toy.core.answer(&*toy, result)
}

/// An upstream that always answers at once, counting its calls.
#[derive(Debug)]
struct Upstream {
    calls: Arc<AtomicUsize>,
    clock: Arc<dyn Clock>,
}

impl Source for Upstream {
    fn fetch<'a>(&'a self, _slot: Option<&'a SlotKey>) -> Fetch<'a> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Credential::Aws(AwsCredentials {
                access_key_id: format!("ASIATEST{n}"),
                secret_access_key: "secret-value".into(),
                session_token: "session-value".into(),
                expiration: self.clock.now() + Duration::from_secs(3600),
                assumed_role_arn: "arn:aws:sts::123456789012:assumed-role/r/s".to_owned(),
            }))
        })
    }

    fn consumer_window(&self) -> Duration {
        Duration::from_secs(15 * 60)
    }
}

const LOCAL: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9911);

/// An endpoint serving target `t` (an AWS credential) at `/aws/t` on the container face, and on
/// the IMDS and toy faces of [`LOCAL`], with the faces `starts` builds; the upstream's calls.
fn endpoint(dir: &Path, starts: &[Start]) -> (Arc<Endpoint>, Arc<AtomicUsize>) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = Upstream {
        calls: Arc::clone(&calls),
        clock: Arc::clone(&clock),
    };
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));
    let target = TargetEngine::new(
        "t".to_owned(),
        Box::new(upstream),
        Vec::new(),
        Arc::clone(&clock),
        backoff,
        Duration::from_secs(10),
    );
    let paths = BTreeMap::from([(
        "/aws/t".to_owned(),
        FacePath {
            face: "container",
            target: "t".to_owned(),
        },
    )]);
    let faces = BTreeSet::from([("imds", "t".to_owned()), ("toy", "t".to_owned())]);
    let served = Served::for_tests(Engine::new(vec![target]), paths, faces);
    let (_publish, current) = tokio::sync::watch::channel(Arc::new(served));
    let settings = EndpointSettings {
        listen: vec![Listen {
            address: LOCAL,
            targets: BTreeMap::from([("imds", "t".to_owned()), ("toy", "t".to_owned())]),
        }],
        imds_v1: false,
        health_listen: None,
        container_token_file: dir.join("container-token"),
        identity_header_file: dir.join("identity-header"),
        identity_header_group: None,
        container_token_group: None,
        max_connections: 16,
        max_connections_per_user: 4,
        allowed_hosts: Vec::new(),
        request_timeout: Duration::from_secs(10),
    };
    let hosts = guard::Hosts::new([LOCAL], &settings.allowed_hosts);
    let endpoint = assemble(settings, hosts, current, clock, starts)
        .unwrap_or_else(|e| panic!("the endpoint does not start: {e:#}"));
    (endpoint, calls)
}

fn with_toy() -> Vec<Start> {
    let mut starts = FACES.to_vec();
    starts.push(start_toy);
    starts
}

/// `method path` with `headers`, as a local root connection naming this endpoint would send
/// it: the status, the headers and the body.
async fn call(
    endpoint: &Arc<Endpoint>,
    method: &str,
    path: &str,
    headers: &[Header<'_>],
) -> (StatusCode, HeaderMap, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "127.0.0.1:9911");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    request.extensions_mut().insert(Peer {
        local: LOCAL,
        uid: Some(0),
    });
    let response = router(endpoint, true, true)
        .oneshot(request)
        .await
        .unwrap_or_else(|e| match e {});
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// A request header: name, value.
type Header<'a> = (&'a str, &'a str);

fn container_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("container-token")).unwrap_or_else(|e| panic!("{e}"))
}

/// issue 9: two faces rendering one credential each hand out their own body, warm cache or
/// cold, from one upstream call — keyed by target alone, the second face got the first's.
#[tokio::test]
async fn issue_9_a_toy_face_serves_the_same_credential_in_its_own_format() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (endpoint, calls) = endpoint(dir.path(), &with_toy());
    let token = container_token(dir.path());
    for _ in 0..3 {
        let (status, _, container) =
            call(&endpoint, "GET", "/aws/t", &[("authorization", &token)]).await;
        assert_eq!(status, 200, "{container}");
        let document: serde_json::Value =
            serde_json::from_str(&container).unwrap_or_else(|e| panic!("{e}: {container}"));
        assert_eq!(document["AccessKeyId"], "ASIATEST1");
        assert_eq!(document["SecretAccessKey"], "secret-value");
        let (status, headers, toy) =
            call(&endpoint, "GET", "/toy/credential", &[("toy", "yes")]).await;
        assert_eq!((status, toy.as_str()), (StatusCode::OK, "toy ASIATEST1"));
        assert_eq!(
            headers.get("toy-face"),
            Some(&HeaderValue::from_static("1"))
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one credential, fetched once"
    );
    let (_, _, metrics) = call(&endpoint, "GET", "/metrics", &[]).await;
    for line in [
        "keyfed_endpoint_requests_total{face=\"container\",status=\"200\"} 3",
        "keyfed_endpoint_requests_total{face=\"toy\",status=\"200\"} 3",
    ] {
        assert!(metrics.contains(line), "metrics lack {line:?}:\n{metrics}");
    }
}

/// issue 9: each face says no in its own statuses and shape — the guard's refusals included,
/// answered by the face whose path was asked for — and the core's requests keep theirs.
#[tokio::test]
async fn issue_9_each_face_refuses_in_its_own_statuses() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (endpoint, calls) = endpoint(dir.path(), &with_toy());
    let forwarded = [("x-forwarded-for", "192.0.2.1"), ("toy", "yes")];
    let cases: [(&str, &str, &[Header], u16); 7] = [
        // No Toy header: 400 to the toy face's clients.
        ("GET", "/toy/credential", &[], 400),
        // The guard's refusal, in the toy face's status.
        ("GET", "/toy/credential", &forwarded, 400),
        // IMDSv2: no session token is 401, a proxied request 403.
        (
            "GET",
            "/latest/meta-data/iam/security-credentials/",
            &[],
            401,
        ),
        ("PUT", "/latest/api/token", &forwarded, 403),
        ("PUT", "/latest/api/token", &[], 400),
        // The container face: no token is 401.
        ("GET", "/aws/t", &[], 401),
        // Health, the core's own: a proxied request is 403.
        ("GET", "/healthz", &forwarded, 403),
    ];
    for (method, path, headers, want) in cases {
        let (status, answer_headers, body) = call(&endpoint, method, path, headers).await;
        assert_eq!(status.as_u16(), want, "{method} {path} {headers:?}: {body}");
        let toy = path.starts_with("/toy");
        assert_eq!(
            answer_headers.contains_key("toy-face"),
            toy,
            "{method} {path}: only the toy face marks its answers"
        );
        if toy {
            let refusal: serde_json::Value =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
            assert_eq!(refusal["error"], "refused", "{body}");
        } else {
            assert!(
                body.ends_with('\n') && !body.starts_with('{'),
                "{path}: {body}"
            );
        }
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "no refused request reached upstream"
    );
    let (_, _, metrics) = call(&endpoint, "GET", "/metrics", &[]).await;
    for line in [
        "keyfed_endpoint_requests_total{face=\"toy\",status=\"400\"} 2",
        "keyfed_endpoint_requests_total{face=\"imds\",status=\"401\"} 1",
        "keyfed_endpoint_requests_total{face=\"imds\",status=\"403\"} 1",
        "keyfed_endpoint_requests_total{face=\"container\",status=\"401\"} 1",
        "keyfed_endpoint_requests_total{face=\"health\",status=\"403\"} 1",
    ] {
        assert!(metrics.contains(line), "metrics lack {line:?}:\n{metrics}");
    }
}

/// issue 9: the IMDS face still serves through the core: a session token, the role listing and
/// the credentials, its own document beside the container face's.
#[tokio::test]
async fn the_imds_face_serves_through_the_core() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (endpoint, _) = endpoint(dir.path(), &FACES);
    let (status, headers, session) = call(
        &endpoint,
        "PUT",
        "/latest/api/token",
        &[("x-aws-ec2-metadata-token-ttl-seconds", "60")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("x-aws-ec2-metadata-token-ttl-seconds"),
        Some(&HeaderValue::from_static("60"))
    );
    let with_token = [("x-aws-ec2-metadata-token", session.as_str())];
    let roles = "/latest/meta-data/iam/security-credentials/";
    assert_eq!(
        call(&endpoint, "GET", roles, &with_token).await.2,
        "t",
        "the role is the target"
    );
    let (status, _, body) = call(&endpoint, "GET", &format!("{roles}t"), &with_token).await;
    assert_eq!(status, 200, "{body}");
    let document: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(document["Code"], "Success");
    assert_eq!(document["Token"], "session-value");
    let (status, _, _) = call(&endpoint, "GET", &format!("{roles}other"), &with_token).await;
    assert_eq!(status, 404, "only the address's target");
}

/// Every face the configuration declares is registered, and every registered face declared:
/// a face missing from `FACES` would be accepted by `keyfed check` and then never served.
#[tokio::test]
async fn every_declared_face_is_registered() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (endpoint, _) = endpoint(dir.path(), &FACES);
    let registered: BTreeSet<&str> = endpoint.faces.iter().map(|f| f.spec().name).collect();
    let declared: BTreeSet<&str> = crate::config::faces().map(|f| f.name).collect();
    assert_eq!(registered, declared);
    assert!(
        !container_token(dir.path()).is_empty(),
        "the container face wrote its token"
    );
    // No face answers a path another reserves, nor health's.
    for face in &endpoint.faces {
        for other in &endpoint.faces {
            for path in other.spec().reserved {
                assert!(
                    Arc::ptr_eq(face, other) || !face.spec().reserves(path),
                    "{} and {} both reserve {path}",
                    face.spec().name,
                    other.spec().name
                );
            }
        }
        for path in crate::config::HEALTH_PATHS {
            assert!(
                !face.spec().reserves(path),
                "{} reserves {path}",
                face.spec().name
            );
        }
    }
}

/// The container token is a secret: whatever a face or the core prints hides it.
#[tokio::test]
async fn the_core_and_faces_print_no_secret() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (endpoint, _) = endpoint(dir.path(), &FACES);
    let token = container_token(dir.path());
    let (status, _, _) = call(&endpoint, "GET", "/aws/t", &[("authorization", &token)]).await;
    assert_eq!(status, 200);
    let printed = format!("{:?}", endpoint.core);
    for secret in [token.as_str(), "secret-value", "session-value"] {
        assert!(!printed.contains(secret), "{printed}");
    }
}

/// issue 9: a face asking for a variant the target's cloud does not issue (any variant of an
/// AWS target) gets a bad request in its own status, and nothing reaches the upstream; the main
/// credential is still served.
#[tokio::test]
async fn a_variant_the_cloud_does_not_issue_is_a_bad_request() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (endpoint, calls) = endpoint(dir.path(), &with_toy());
    let (status, _, body) = call(
        &endpoint,
        "GET",
        "/toy/credential",
        &[("toy", "yes"), ("toy-scope", "read")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no upstream call");
    let (status, _, body) = call(&endpoint, "GET", "/toy/credential", &[("toy", "yes")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "toy ASIATEST1"));
}
