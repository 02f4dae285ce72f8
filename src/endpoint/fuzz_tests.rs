//! Issue 11: the endpoint's request handling under fuzzing. The faces live in the keyfed binary,
//! out of reach of a `cargo fuzz` crate, so they are fuzzed here with proptest, through the
//! router every listener serves (the DNS-rebinding guard, then the faces: container, IMDSv2,
//! GCE, Azure IMDS, App Service, and health): sequences of requests built from the paths,
//! query parameters and headers SDKs send, mutated and mixed with arbitrary ones, from local
//! users with and without access, against one AWS, two GCP and two Azure targets.
//!
//! Judged from the request alone, whatever the face's code says: nothing panics; no answer is a
//! server error but 503; a credential leaves only in a 200, only through the guard (one `Host`
//! naming the endpoint, no absolute-form target, no `X-Forwarded-For`, `Origin` or
//! `Sec-Fetch-*`), only with its face's proof (the container token, an IMDSv2 session token the
//! face issued, `Metadata-Flavor: Google`, `Metadata: true`, the App Service secret), and a
//! restricted target's only to the users allowed it; every answer is counted in `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine as _;
use keyfed_aws::AwsCredentials;
use keyfed_azure::AzureToken;
use keyfed_core::clock::{Clock, SystemClock};
use keyfed_core::http::HttpSettings;
use keyfed_gcp::{GcpToken, GcpTokenKind};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use tower::ServiceExt as _;

use super::server::Peer;
use super::{FACES, app_service, assemble, azure_imds, guard, router};
use crate::config::{
    Access, AwsExchange, AzureExchange, EndpointSettings, Exchange, GcpExchange, Listen,
};
use crate::credential::Credential;
use crate::engine::{Backoff, Engine, Fetch, FetchError, SlotKey, Source, TargetEngine};
use crate::served::{FacePath, Served};

/// The address every request arrives on.
const LOCAL: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9941);
/// Every secret the fake upstreams issue holds this, then its kind and target.
const MARK: &str = "S3CR3T";
const SERVICE_ACCOUNT: &str = "app@keyfed-fuzz.iam.gserviceaccount.com";
const AZURE_ID: &str = "af3110ba-0ba9-4412-b1a0-59f50b7e9273";
const RESTRICTED_ID: &str = "5ec2e7ed-0000-4000-8000-000000000001";
/// The only users, besides root, who may have the restricted target's token.
const ALLOWED_UID: u32 = 4242;
/// Request sequences per run, and requests in each.
const CASES: u32 = 1500;
const MAX_CALLS: usize = 6;

/// A fake upstream for every cloud: a credential at once, its secrets marked with [`MARK`],
/// the kind and the target's name.
#[derive(Debug)]
struct Fake {
    target: &'static str,
    cloud: Cloud,
    clock: Arc<dyn Clock>,
    calls: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
enum Cloud {
    Aws,
    Gcp { service_account: bool },
    Azure { client_id: &'static str },
}

impl Source for Fake {
    fn fetch<'a>(&'a self, slot: Option<&'a SlotKey>) -> Fetch<'a> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::Relaxed);
            let expires = self.clock.now() + Duration::from_secs(3600);
            let secret = |kind: &str| format!("{MARK}-{kind}-{}-{n}", self.target);
            match (self.cloud, slot) {
                (Cloud::Aws, None) => Ok(Credential::Aws(AwsCredentials {
                    access_key_id: format!("ASIAFUZZ{n}"),
                    secret_access_key: secret("aws").into(),
                    session_token: secret("aws").into(),
                    expiration: expires,
                    assumed_role_arn: "arn:aws:sts::123456789012:assumed-role/r/s".to_owned(),
                })),
                (Cloud::Gcp { service_account }, None | Some(SlotKey::Scopes(_))) => {
                    let scopes = match slot {
                        Some(SlotKey::Scopes(scopes)) => scopes.iter().cloned().collect(),
                        _ => vec!["https://www.googleapis.com/auth/cloud-platform".to_owned()],
                    };
                    Ok(Credential::Gcp(GcpToken {
                        kind: GcpTokenKind::Access {
                            scopes,
                            service_account: service_account.then(|| SERVICE_ACCOUNT.to_owned()),
                        },
                        token: format!("ya29.{}", secret("gcp")).into(),
                        expires_at: expires,
                    }))
                }
                (
                    Cloud::Gcp {
                        service_account: true,
                    },
                    Some(SlotKey::IdToken { audience, full }),
                ) => Ok(Credential::Gcp(GcpToken {
                    kind: GcpTokenKind::Id {
                        audience: audience.clone(),
                        full: *full,
                        service_account: SERVICE_ACCOUNT.to_owned(),
                    },
                    token: format!("eyJhbGciOiJSUzI1NiJ9.e30.{}", secret("gcp")).into(),
                    expires_at: expires,
                })),
                (Cloud::Azure { client_id }, None | Some(SlotKey::Resource(_))) => {
                    let scope = match slot {
                        Some(SlotKey::Resource(scope)) => scope.clone(),
                        _ => "https://management.azure.com/.default".to_owned(),
                    };
                    let claims = serde_json::json!({
                        "oid": object_id(self.target),
                        "xms_mirid": format!("/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}", self.target),
                        "nbf": keyfed_core::clock::unix_seconds(self.clock.now()),
                    });
                    let payload =
                        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
                    Ok(Credential::Azure(AzureToken {
                        token: format!("eyJ0eXAiOiJKV1QifQ.{payload}.{}", secret("azure")).into(),
                        scope,
                        tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".to_owned(),
                        client_id: client_id.to_owned(),
                        expires_at: expires,
                    }))
                }
                (_, Some(other)) => Err(FetchError::no_slot(other)),
            }
        })
    }

    fn has_slot(&self, slot: &SlotKey) -> bool {
        match (self.cloud, slot) {
            (Cloud::Gcp { .. }, SlotKey::Scopes(scopes)) => !scopes.is_empty(),
            (Cloud::Gcp { service_account }, SlotKey::IdToken { .. }) => service_account,
            (Cloud::Azure { .. }, SlotKey::Resource(_)) => true,
            _ => false,
        }
    }

    fn consumer_window(&self) -> Duration {
        Duration::from_secs(300)
    }
}

/// The `oid` claim of an Azure target's tokens.
fn object_id(target: &str) -> String {
    format!("00000000-0000-4000-8000-{:0>12}", target.len())
}

fn gcp(service_account: bool) -> GcpExchange {
    let url = |u: &str| url::Url::parse(u).unwrap_or_else(|e| panic!("{e}"));
    GcpExchange {
        provider: "projects/123456789/locations/global/workloadIdentityPools/p/providers/k"
            .to_owned(),
        service_account: service_account.then(|| SERVICE_ACCOUNT.to_owned()),
        scopes: vec!["https://www.googleapis.com/auth/cloud-platform".to_owned()],
        lifetime: Duration::from_secs(3600),
        delegates: Vec::new(),
        project_id: Some("keyfed-fuzz".to_owned()),
        project_number: "123456789".to_owned(),
        sts_url: url("https://sts.googleapis.com/v1/token"),
        iam_url: url("https://iamcredentials.googleapis.com"),
        http: HttpSettings::default(),
    }
}

fn azure(client_id: &str) -> AzureExchange {
    AzureExchange {
        tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".to_owned(),
        client_id: client_id.to_owned(),
        scopes: vec!["https://management.azure.com/.default".to_owned()],
        authority_host: url::Url::parse("https://login.microsoftonline.com")
            .unwrap_or_else(|e| panic!("{e}")),
        http: HttpSettings::default(),
    }
}

fn aws() -> AwsExchange {
    AwsExchange {
        role_arn: "arn:aws:iam::123456789012:role/fuzz".to_owned(),
        region: "eu-west-1".to_owned(),
        session_name: "keyfed-fuzz".to_owned(),
        duration: Duration::from_secs(3600),
        endpoint_url: None,
        fips: false,
        policy: None,
        policy_arns: Vec::new(),
        http: HttpSettings::default(),
    }
}

/// The endpoint under test, its router, and the secrets its faces wrote.
struct Setup {
    router: axum::Router,
    container_token: String,
    identity_header: String,
    _dir: tempfile::TempDir,
}

/// Targets `aws` (IMDS, and the container face at `/aws/aws`), `gcp` (a service account; GCE's
/// default), `federated` (GCP, none), `azure` (both Azure faces' default) and `restricted`
/// (Azure, only root and [`ALLOWED_UID`]), all served on [`LOCAL`].
fn setup() -> Setup {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let specs: [(&'static str, Cloud, Exchange); 5] = [
        ("aws", Cloud::Aws, Exchange::Aws(Box::new(aws()))),
        (
            "gcp",
            Cloud::Gcp {
                service_account: true,
            },
            Exchange::Gcp(Box::new(gcp(true))),
        ),
        (
            "federated",
            Cloud::Gcp {
                service_account: false,
            },
            Exchange::Gcp(Box::new(gcp(false))),
        ),
        (
            "azure",
            Cloud::Azure {
                client_id: AZURE_ID,
            },
            Exchange::Azure(Box::new(azure(AZURE_ID))),
        ),
        (
            "restricted",
            Cloud::Azure {
                client_id: RESTRICTED_ID,
            },
            Exchange::Azure(Box::new(azure(RESTRICTED_ID))),
        ),
    ];
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));
    let targets = specs
        .iter()
        .map(|(target, cloud, _)| {
            let fake = Fake {
                target,
                cloud: *cloud,
                clock: Arc::clone(&clock),
                calls: AtomicU64::new(0),
            };
            TargetEngine::new(
                (*target).to_owned(),
                Box::new(fake),
                Vec::new(),
                Arc::clone(&clock),
                backoff,
                Duration::from_secs(10),
            )
        })
        .collect();
    let faces = [
        ("imds", "aws"),
        ("gce", "gcp"),
        (azure_imds::NAME, "azure"),
        (app_service::NAME, "azure"),
    ];
    let paths = BTreeMap::from([(
        "/aws/aws".to_owned(),
        FacePath {
            face: "container",
            target: "aws".to_owned(),
        },
    )]);
    let face_targets: BTreeSet<(&'static str, String)> =
        faces.iter().map(|(f, t)| (*f, (*t).to_owned())).collect();
    let mut served = Served::for_tests(Engine::new(targets), paths, face_targets);
    for (target, _, exchange) in specs {
        served.exchanges.insert(target.to_owned(), exchange);
    }
    served.access.insert(
        "restricted".to_owned(),
        Access {
            users: vec![ALLOWED_UID],
            groups: Vec::new(),
        },
    );
    let (_publish, current) = tokio::sync::watch::channel(Arc::new(served));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let settings = EndpointSettings {
        listen: vec![Listen {
            address: LOCAL,
            targets: faces.iter().map(|(f, t)| (*f, (*t).to_owned())).collect(),
        }],
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
    let hosts = guard::Hosts::new([LOCAL], &settings.allowed_hosts);
    let endpoint = assemble(settings, hosts, current, clock, &FACES)
        .unwrap_or_else(|e| panic!("the endpoint does not start: {e:#}"));
    let read = |name: &str| {
        std::fs::read_to_string(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    Setup {
        router: router(&endpoint, true, true),
        container_token: read("container-token"),
        identity_header: read("identity-header"),
        _dir: dir,
    }
}

/// The `Host` a request names.
#[derive(Debug, Clone)]
enum Host {
    /// Names this endpoint, as SDKs do.
    Good(&'static str),
    Missing,
    /// Twice, both good.
    Twice,
    /// Anything else (`evil-…`, never this endpoint).
    Foreign(String),
}

/// A header's value.
#[derive(Debug, Clone)]
enum Value {
    ContainerToken,
    IdentityHeader,
    /// The IMDSv2 session token issued last.
    SessionToken,
    Text(String),
}

/// One request.
#[derive(Debug, Clone)]
struct Call {
    method: &'static str,
    path: String,
    query: Option<String>,
    /// `GET http://127.0.0.1:9941/…`, as a proxy is asked.
    absolute: bool,
    host: Host,
    headers: Vec<(String, Value)>,
    uid: Option<u32>,
}

/// The paths that answer with credentials, as SDKs ask for them.
const CREDENTIAL_PATHS: [&str; 10] = [
    "/latest/meta-data/iam/security-credentials/aws",
    "/aws/aws",
    "/computeMetadata/v1/instance/service-accounts/default/token",
    "/computeMetadata/v1/instance/service-accounts/default/identity",
    "/computeMetadata/v1/instance/service-accounts/app@keyfed-fuzz.iam.gserviceaccount.com/token",
    "/computeMetadata/v1/instance/service-accounts/federated/token",
    "/computeMetadata/v1/instance/service-accounts/restricted/token",
    "/metadata/identity/oauth2/token",
    "/msi/token",
    "/msi/token",
];

/// The other paths SDKs ask for, and some near them.
const OTHER_PATHS: [&str; 20] = [
    "/",
    "/latest/api/token",
    "/latest/api/token",
    "/latest/meta-data/iam/security-credentials",
    "/latest/meta-data/iam/security-credentials/",
    "/latest/meta-data/iam/security-credentials/gcp",
    "/aws/gcp",
    "/computeMetadata",
    "/computeMetadata/v1/instance",
    "/computeMetadata/v1/instance/service-accounts/",
    "/computeMetadata/v1/instance/service-accounts/default/",
    "/computeMetadata/v1/instance/service-accounts/default/email",
    "/computeMetadata/v1/instance/service-accounts/default/scopes",
    "/computeMetadata/v1/project/project-id",
    "/computeMetadata/v1/project/numeric-project-id",
    "/computeMetadata/v1/universe/universe-domain",
    "/healthz",
    "/readyz",
    "/metrics",
    "/nothing",
];

fn path() -> impl Strategy<Value = String> {
    let edit = prop_oneof![
        "/[A-Za-z0-9._~%@-]{0,12}".prop_map(Edit::Append),
        prop_oneof![
            Just("/"),
            Just("//"),
            Just("/.."),
            Just("/."),
            Just("%2F"),
            Just("%2e%2e"),
            Just("%00"),
            Just("%"),
            Just("%zz"),
            Just("/%F0%9F%92%A9"),
        ]
        .prop_map(|s| Edit::Append(s.to_owned())),
        (0usize..80).prop_map(Edit::Truncate),
        Just(Edit::Upper),
    ];
    (
        prop_oneof![
            proptest::sample::select(&CREDENTIAL_PATHS[..]),
            proptest::sample::select(&OTHER_PATHS[..]),
        ],
        proptest::option::weighted(0.3, proptest::collection::vec(edit, 1..3)),
    )
        .prop_map(|(base, edits)| {
            let mut path = base.to_owned();
            for edit in edits.into_iter().flatten() {
                match edit {
                    Edit::Append(s) => path.push_str(&s),
                    Edit::Truncate(n) => {
                        let cut = path.char_indices().nth(n).map_or(path.len(), |(i, _)| i);
                        path.truncate(cut.max(1));
                    }
                    Edit::Upper => path = path.to_uppercase(),
                }
            }
            path
        })
}

#[derive(Debug, Clone)]
enum Edit {
    Append(String),
    Truncate(usize),
    Upper,
}

/// Query parameters the faces read, with values they expect and values they must refuse.
fn query() -> impl Strategy<Value = Option<String>> {
    let name = prop_oneof![
        Just("resource".to_owned()),
        Just("api-version".to_owned()),
        Just("client_id".to_owned()),
        Just("object_id".to_owned()),
        Just("principal_id".to_owned()),
        Just("msi_res_id".to_owned()),
        Just("mi_res_id".to_owned()),
        Just("scopes".to_owned()),
        Just("audience".to_owned()),
        Just("format".to_owned()),
        Just("recursive".to_owned()),
        Just("alt".to_owned()),
        "[a-z_-]{1,10}",
    ];
    let value = prop_oneof![
        Just("https://management.azure.com".to_owned()),
        Just("https://management.azure.com/".to_owned()),
        Just("https://vault.azure.net".to_owned()),
        Just("api://x/.default".to_owned()),
        Just("2018-02-01".to_owned()),
        Just("2019-08-01".to_owned()),
        Just(AZURE_ID.to_owned()),
        Just(RESTRICTED_ID.to_uppercase()),
        Just(object_id("restricted")),
        Just(object_id("azure")),
        Just("/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/restricted".to_owned()),
        Just("https://www.googleapis.com/auth/cloud-platform".to_owned()),
        Just("https://www.googleapis.com/auth/cloud-platform,https://www.googleapis.com/auth/userinfo.email".to_owned()),
        Just("https://api.example.com".to_owned()),
        Just("full".to_owned()),
        Just("true".to_owned()),
        Just("json".to_owned()),
        Just(String::new()),
        "\\PC{0,16}",
    ];
    let pair = (name, value, any::<bool>()).prop_map(|(name, value, encode)| {
        let value = if encode {
            url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
        } else {
            value
        };
        format!("{name}={value}")
    });
    // What SDKs send, then anything.
    let typical = proptest::option::weighted(
        0.6,
        proptest::sample::select(vec![
            "api-version=2018-02-01&resource=https://management.azure.com",
            "api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net&client_id=5EC2E7ED-0000-4000-8000-000000000001",
            "api-version=2018-02-01&resource=https://management.azure.com/&object_id=00000000-0000-4000-8000-000000000010",
            "api-version=2019-08-01&resource=https://management.azure.com",
            "api-version=2019-08-01&resource=https://storage.azure.com/&mi_res_id=/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/restricted",
            "scopes=https://www.googleapis.com/auth/cloud-platform",
            "scopes=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fuserinfo.email,https://www.googleapis.com/auth/cloud-platform",
            "audience=https://api.example.com&format=full",
            "audience=https://api.example.com",
            "recursive=true",
        ]),
    );
    (typical, proptest::collection::vec(pair, 0..3)).prop_map(|(typical, pairs)| {
        let parts: Vec<String> = typical
            .map(str::to_owned)
            .into_iter()
            .chain(pairs)
            .collect();
        (!parts.is_empty()).then(|| parts.join("&"))
    })
}

/// Headers SDKs send, headers the guard refuses, and any other.
fn headers() -> impl Strategy<Value = Vec<(String, Value)>> {
    let name = prop_oneof![
        16 => proptest::sample::select(vec![
            "authorization",
            "x-identity-header",
            "metadata",
            "metadata-flavor",
            "x-aws-ec2-metadata-token",
            "x-aws-ec2-metadata-token-ttl-seconds",
            "content-type",
        ])
        .prop_map(str::to_owned),
        // What the guard refuses.
        1 => proptest::sample::select(vec![
            "x-forwarded-for",
            "origin",
            "sec-fetch-site",
            "sec-fetch-mode",
            "forwarded",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z][a-z0-9-]{0,15}".prop_filter("Host is chosen apart", |n| n != "host"),
    ];
    let value = prop_oneof![
        1 => Just(Value::ContainerToken),
        1 => Just(Value::IdentityHeader),
        2 => Just(Value::SessionToken),
        3 => prop_oneof![
            Just("true"),
            Just("True"),
            Just("false"),
            Just("Google"),
            Just("google"),
            Just("60"),
            Just("21600"),
            Just("21601"),
            Just("0"),
            Just("-1"),
            Just("99999999999999999999"),
            Just("192.0.2.1"),
            Just("http://evil.example"),
            Just(""),
        ]
        .prop_map(|s| Value::Text(s.to_owned())),
        2 => "\\PC{0,24}".prop_map(Value::Text),
    ];
    // The proofs SDKs send, each present half the time, then anything.
    let proof =
        |name: &'static str, value: Value| proptest::option::of(Just((name.to_owned(), value)));
    (
        proof("metadata-flavor", Value::Text("Google".to_owned())),
        proof("metadata", Value::Text("true".to_owned())),
        proof("authorization", Value::ContainerToken),
        proof("x-identity-header", Value::IdentityHeader),
        proof("x-aws-ec2-metadata-token", Value::SessionToken),
        proof(
            "x-aws-ec2-metadata-token-ttl-seconds",
            Value::Text("60".to_owned()),
        ),
        proptest::collection::vec((name, value), 0..4),
    )
        .prop_map(|(a, b, c, d, e, f, mut more)| {
            more.extend([a, b, c, d, e, f].into_iter().flatten());
            more
        })
}

fn call() -> impl Strategy<Value = Call> {
    let host = prop_oneof![
        12 => proptest::sample::select(vec!["127.0.0.1:9941", "localhost", "LocalHost.:9941"])
            .prop_map(Host::Good),
        1 => Just(Host::Missing),
        1 => Just(Host::Twice),
        1 => "[a-z0-9.:\\[\\]]{0,20}".prop_map(|s| Host::Foreign(format!("evil-{s}"))),
    ];
    (
        proptest::sample::select(vec![
            "GET", "GET", "GET", "GET", "PUT", "POST", "HEAD", "DELETE",
        ]),
        path(),
        query(),
        proptest::bool::weighted(0.03),
        host,
        headers(),
        proptest::sample::select(vec![Some(0), Some(1000), Some(ALLOWED_UID), None]),
    )
        .prop_map(|(method, path, query, absolute, host, headers, uid)| Call {
            method,
            path,
            query,
            absolute,
            host,
            headers,
            uid,
        })
}

/// What a run saw.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    unbuildable: u64,
    credentials: u64,
    statuses: BTreeMap<u16, u64>,
}

/// Builds the request `call` describes, or `None` when its target is not a valid URI.
fn build(setup: &Setup, call: &Call, session: Option<&str>) -> Option<Request<Body>> {
    let target = match &call.query {
        Some(query) => format!("{}?{query}", call.path),
        None => call.path.clone(),
    };
    let uri = if call.absolute {
        format!("http://{LOCAL}{target}")
    } else {
        target
    };
    let mut request = Request::builder().method(call.method).uri(uri);
    match &call.host {
        Host::Good(host) => request = request.header(header::HOST, *host),
        Host::Missing => {}
        Host::Twice => {
            request = request
                .header(header::HOST, "127.0.0.1:9941")
                .header(header::HOST, "localhost");
        }
        Host::Foreign(host) => request = request.header(header::HOST, host.as_str()),
    }
    for (name, value) in &call.headers {
        let value = match value {
            Value::ContainerToken => setup.container_token.as_str(),
            Value::IdentityHeader => setup.identity_header.as_str(),
            Value::SessionToken => session.unwrap_or("no-session-token-yet"),
            Value::Text(text) => text.as_str(),
        };
        // A value no HTTP request can carry (a control character) is left out, not the call.
        if axum::http::HeaderValue::from_str(value).is_ok() {
            request = request.header(name.as_str(), value);
        }
    }
    let mut request = request.body(Body::empty()).ok()?;
    request.extensions_mut().insert(Peer {
        local: LOCAL,
        uid: call.uid,
    });
    Some(request)
}

/// Whether the request gets past the DNS-rebinding guard, judged from the request alone.
fn passes_guard(headers: &HeaderMap, absolute: bool) -> bool {
    let good_host = headers.get_all(header::HOST).iter().count() == 1
        && headers.get(header::HOST).is_some_and(|h| {
            ["127.0.0.1:9941", "localhost", "LocalHost.:9941"]
                .contains(&h.to_str().unwrap_or_default())
        });
    good_host
        && !absolute
        && !headers.contains_key("x-forwarded-for")
        && !headers.contains_key(header::ORIGIN)
        && !headers.keys().any(|n| n.as_str().starts_with("sec-fetch-"))
}

fn header_is(headers: &HeaderMap, name: &str, value: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| v.as_bytes() == value.as_bytes())
}

/// `method path` as root would send it, naming this endpoint: the status and the body.
async fn plain(setup: &Setup, method: &str, path: &str) -> (StatusCode, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "localhost")
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    request.extensions_mut().insert(Peer {
        local: LOCAL,
        uid: Some(0),
    });
    let response = setup
        .router
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|e| match e {});
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The `keyfed_endpoint_requests_total` series of `/metrics`: (face, status) → count.
async fn request_counts(setup: &Setup) -> BTreeMap<(String, u16), u64> {
    let (_, metrics) = plain(setup, "GET", "/metrics").await;
    metrics
        .lines()
        .filter_map(|line| {
            let labels = line.strip_prefix("keyfed_endpoint_requests_total{face=\"")?;
            let (face, rest) = labels.split_once("\",status=\"")?;
            let (status, count) = rest.split_once("\"} ")?;
            Some(((face.to_owned(), status.parse().ok()?), count.parse().ok()?))
        })
        .collect()
}

/// issue 11 (found by the fuzzing below): answers the router gives by itself — 405 to a method
/// a route does not take, 400 to a path it cannot decode — were missing from
/// `keyfed_endpoint_requests_total`, so a flood of them went unseen.
#[tokio::test]
async fn issue_11_answers_the_router_gives_itself_are_counted() {
    let setup = setup();
    let cases = [
        ("GET", "/latest/api/token", 405, "imds"),
        ("POST", "/healthz", 405, "health"),
        (
            "GET",
            "/latest/meta-data/iam/security-credentials/%FF",
            400,
            "imds",
        ),
    ];
    for (method, path, status, face) in cases {
        let before = request_counts(&setup).await;
        let (answered, body) = plain(&setup, method, path).await;
        assert_eq!(answered.as_u16(), status, "{method} {path}: {body}");
        let after = request_counts(&setup).await;
        let key = (face.to_owned(), status);
        assert_eq!(
            after.get(&key).copied().unwrap_or(0),
            before.get(&key).copied().unwrap_or(0) + 1,
            "{method} {path} is not counted as {key:?}: {after:?}"
        );
    }
}

/// issue 11: any request sequence through every face; the oracle of the module's doc.
#[test]
fn issue_11_fuzzed_requests_get_credentials_only_as_the_faces_promise() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let setup = setup();
    let started = std::time::Instant::now();
    let tally = std::cell::RefCell::new(Tally::default());
    // Every IMDSv2 session token the face issued, and the last one.
    let issued = std::cell::RefCell::new(Vec::<String>::new());
    let mut runner = TestRunner::new(RunnerConfig {
        cases: CASES,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let result = runner.run(&proptest::collection::vec(call(), 1..=MAX_CALLS), |calls| {
        for call in &calls {
            let session = issued.borrow().last().cloned();
            let Some(request) = build(&setup, call, session.as_deref()) else {
                tally.borrow_mut().unbuildable += 1;
                continue;
            };
            let headers = request.headers().clone();
            let path = request.uri().path().to_owned();
            let absolute = request.uri().authority().is_some();
            let (status, answer_headers, body) = runtime.block_on(async {
                let response = setup
                    .router
                    .clone()
                    .oneshot(request)
                    .await
                    .unwrap_or_else(|e| match e {});
                let status = response.status();
                let answer_headers = response.headers().clone();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                (
                    status,
                    answer_headers,
                    String::from_utf8_lossy(&body).into_owned(),
                )
            });
            let shown = format!("{call:?} → {status} {answer_headers:?} {body}");
            prop_assert!(
                !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
                "a server error: {shown}"
            );
            let everything = format!("{answer_headers:?}{body}");
            if everything.contains(MARK) {
                prop_assert_eq!(
                    status,
                    StatusCode::OK,
                    "a credential in a refusal: {}",
                    shown
                );
                prop_assert!(
                    passes_guard(&headers, absolute),
                    "a credential past the guard: {shown}"
                );
                let kind = |k: &str| everything.contains(&format!("{MARK}-{k}-"));
                if kind("aws") {
                    let container = path == "/aws/aws"
                        && header_is(&headers, "authorization", &setup.container_token);
                    let imds = path.starts_with("/latest/meta-data/")
                        && issued
                            .borrow()
                            .iter()
                            .any(|t| header_is(&headers, "x-aws-ec2-metadata-token", t));
                    prop_assert!(
                        container || imds,
                        "AWS credentials without their proof: {shown}"
                    );
                }
                if kind("gcp") {
                    prop_assert!(
                        header_is(&headers, "metadata-flavor", "Google"),
                        "a Google token without Metadata-Flavor: {shown}"
                    );
                }
                if kind("azure") {
                    let imds = headers
                        .get_all("metadata")
                        .iter()
                        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
                    let app_service =
                        header_is(&headers, "x-identity-header", &setup.identity_header);
                    prop_assert!(
                        imds || app_service,
                        "an Azure token without its proof: {shown}"
                    );
                    if everything.contains(&format!("{MARK}-azure-restricted-")) {
                        prop_assert!(
                            matches!(call.uid, Some(0 | ALLOWED_UID)),
                            "the restricted target's token to another user: {shown}"
                        );
                    }
                }
                tally.borrow_mut().credentials += 1;
            }
            if call.method == "PUT" && path == "/latest/api/token" && status == StatusCode::OK {
                issued.borrow_mut().push(body.clone());
            }
            let mut tally = tally.borrow_mut();
            tally.requests += 1;
            *tally.statuses.entry(status.as_u16()).or_default() += 1;
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let tally = tally.into_inner();
    // Every answer is counted, once, under its face's label (or health's, or other's); the
    // request for /metrics counts itself.
    let counted: u64 = runtime.block_on(request_counts(&setup)).values().sum();
    assert_eq!(
        counted,
        tally.requests + 1,
        "requests counted in /metrics and answered: {:?}",
        tally.statuses
    );
    assert!(
        tally.credentials > 0 && tally.statuses.len() > 3,
        "the requests explore nothing: {tally:?}"
    );
    keyfed_core::emulator::report::held(
        "Fuzzing: endpoint requests",
        "proptest request sequences on every face (container, IMDSv2, GCE, Azure IMDS, App Service, health): mutated paths, queries, headers, Host, users; no panic or 500, credentials only in a 200 past the guard with the face's proof and the target's access, every answer counted",
        &format!(
            "{} requests in {:.1} s: {} with credentials, statuses {:?}, 0 leaks",
            tally.requests,
            started.elapsed().as_secs_f64(),
            tally.credentials,
            tally.statuses
        ),
    );
}
