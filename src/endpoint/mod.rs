//! The local metadata endpoint: HTTP listeners (loopback by default) serving the faces SDKs
//! fetch credentials from, and health, readiness and Prometheus metrics (`health.rs`). A face is
//! a module of its own (`face.rs` says what one is; `FACES` below lists them); this core knows
//! none by name. Every request first passes the DNS-rebinding guard (`guard.rs`: `Host` must
//! name this endpoint; no `Origin`, `Sec-Fetch-*` or `X-Forwarded-For`); the face then checks
//! its SDK's header or secret and answers through [`Core`]: the served targets, per-target
//! access control (`crate::access`), credentials, rendered bodies (`documents.rs`), its own
//! statuses for the refusals of `refusal.rs`, and request counts. Connection caps
//! (`crate::caps`), header limits and timed writes are the server's (`server.rs`). Reads the
//! `[endpoint]` configuration section.

mod app_service;
mod azure;
mod azure_imds;
mod container;
mod documents;
mod face;
mod gce;
mod guard;
mod health;
mod imds;
pub mod pairs;
mod refusal;
mod server;
mod timed_io;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keyfed_core::clock::Clock;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::caps::{Caps, Limits};
use crate::config::{EndpointSettings, FaceSpec, HEALTH_PATHS};
use crate::credential::Credential;
use crate::engine::{Issued, SlotKey, TargetEngine, Unavailable};
use crate::served::Served;
use face::{Face, Start};
pub use refusal::Refusal;
use server::Peer;

/// Every face, one line each (each module's `start` builds it). A face's configuration is its
/// `FaceSpec`, declared with its cloud's glue in `crate::config`.
const FACES: [Start; 5] = [
    imds::start,
    container::start,
    gce::start,
    azure_imds::start,
    app_service::start,
];

/// The metrics label of /healthz, /readyz and /metrics.
const HEALTH: &str = "health";
/// The metrics label of requests for paths nothing serves.
const OTHER: &str = "other";

/// Marks a response [`Core`] has counted, so the guard counts the others.
#[derive(Debug, Clone, Copy)]
struct Counted;

/// What every face is given: the served targets and the services around them.
#[derive(Debug)]
pub struct Core {
    served: watch::Receiver<Arc<Served>>,
    settings: EndpointSettings,
    /// Answers by face (or `health`, `other`) and status.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    documents: documents::Documents,
    clock: Arc<dyn Clock>,
    /// The identity-header pairs the App Service face takes besides its file's secret.
    pairs: Arc<pairs::Pairs>,
}

impl Core {
    /// What is served now (replaced as a whole on reload).
    pub fn served(&self) -> Arc<Served> {
        Arc::clone(&self.served.borrow())
    }

    pub fn settings(&self) -> &EndpointSettings {
        &self.settings
    }

    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The live identity-header pairs (issue 12).
    pub fn pairs(&self) -> &pairs::Pairs {
        &self.pairs
    }

    fn count(&self, label: &'static str, status: StatusCode) {
        *self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((label, status.as_u16()))
            .or_default() += 1;
    }

    fn request_counts(&self) -> Vec<((&'static str, u16), u64)> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(key, n)| (*key, *n))
            .collect()
    }

    /// Turns a face's outcome into its response: refusals in the face's statuses and shape,
    /// the face's headers added, the answer counted, refusals of access logged.
    pub fn answer(&self, face: &dyn Face, result: Result<Response, Refusal>) -> Response {
        let label = face.spec().name;
        let mut response = match result {
            Ok(r) => r,
            Err(refusal) => {
                if let Refusal::Forbidden { target, uid } = &refusal {
                    crate::access::log_refusal(*uid, target, label);
                }
                face.refuse(&refusal)
            }
        };
        face.finish(&mut response);
        self.count(label, response.status());
        response.extensions_mut().insert(Counted);
        response
    }

    /// The same for what no face answers (`health`, `other`), in the endpoint's own statuses.
    fn answer_plain(&self, label: &'static str, result: Result<Response, Refusal>) -> Response {
        let mut response = result.unwrap_or_else(IntoResponse::into_response);
        self.count(label, response.status());
        response.extensions_mut().insert(Counted);
        response
    }

    /// The target the face named `face` serves on the address `peer` arrived on (its
    /// `[endpoint]` target key, per address or for all).
    pub fn target_at(&self, face: &str, peer: &Peer) -> Result<&str, Refusal> {
        self.settings
            .listen
            .iter()
            .find(|l| l.address == peer.local)
            .and_then(|l| l.target(face))
            .ok_or(Refusal::NotFound)
    }

    /// The target `name` if `uid` may have its credentials.
    pub fn allowed<'s>(
        &self,
        served: &'s Served,
        name: &str,
        uid: Option<u32>,
    ) -> Result<&'s Arc<TargetEngine>, Refusal> {
        served.target_for(name, uid).map_err(|exists| {
            if exists {
                Refusal::Forbidden {
                    target: name.to_owned(),
                    uid,
                }
            } else {
                Refusal::NotFound
            }
        })
    }

    /// The target's main credential for the peer, after the access check.
    pub async fn credential(
        &self,
        served: &Served,
        target: &str,
        peer: Peer,
    ) -> Result<Arc<Issued>, Refusal> {
        self.credential_for(served, target, None, peer).await
    }

    /// The target's credential for the peer, after the access check: its main one, or the
    /// variant `slot` names (scopes, an ID-token audience, a resource). A variant the target's
    /// cloud does not issue is the consumer's mistake (a bad request, no upstream call); one
    /// refused to bound the upstream calls consumers can cause is, like an outage, unavailable.
    pub async fn credential_for(
        &self,
        served: &Served,
        target: &str,
        slot: Option<&SlotKey>,
        peer: Peer,
    ) -> Result<Arc<Issued>, Refusal> {
        self.allowed(served, target, peer.uid)?
            .credential_for(slot)
            .await
            .map_err(|e| match e {
                Unavailable::UnknownSlot(unknown) => Refusal::BadRequest(unknown.to_string()),
                other => Refusal::Unavailable(other.to_string()),
            })
    }

    /// `issued` (the credential of `key`'s target and slot) rendered by `render` in `key`'s
    /// format, once per credential; `None` when `render` has no document for it.
    pub fn document(
        &self,
        key: documents::Key<'_, str>,
        issued: &Arc<Issued>,
        render: fn(&Credential) -> Option<String>,
    ) -> Option<Bytes> {
        self.documents.get(key, issued, render, self.now())
    }
}

/// A listener's state: the core, the guard's names, and the faces.
struct Endpoint {
    core: Arc<Core>,
    hosts: guard::Hosts,
    faces: Vec<Arc<dyn Face>>,
}

impl Endpoint {
    /// The face answering `path` by its reserved prefixes.
    fn face_at(&self, path: &str) -> Option<&Arc<dyn Face>> {
        self.faces.iter().find(|f| f.spec().reserves(path))
    }

    fn face(&self, name: &str) -> Option<&Arc<dyn Face>> {
        self.faces.iter().find(|f| f.spec().name == name)
    }
}

/// 32 random bytes, hex.
fn random_token() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The face's declaration in the configuration, for its `start`.
fn declared(name: &str) -> anyhow::Result<&'static FaceSpec> {
    crate::config::face(name).with_context(|| format!("no face named {name} is declared"))
}

/// Paths targets chose on a face (`container_path`), and anything else.
async fn fallback(State(endpoint): State<Arc<Endpoint>>, request: Request) -> Response {
    let served = endpoint.core.served();
    let peer = request.extensions().get::<Peer>().copied();
    let at = served
        .face_paths
        .get(request.uri().path())
        .and_then(|at| Some((endpoint.face(at.face)?, at.target.clone())));
    match (at, peer) {
        (Some((face, target)), Some(peer)) => Arc::clone(face).at_path(target, peer, request).await,
        _ => endpoint.core.answer_plain(OTHER, Err(Refusal::NotFound)),
    }
}

fn health_routes(core: &Arc<Core>) -> Router {
    // The handlers count their answers themselves (marked so, unlike the router's own 405s).
    let counted = || axum::middleware::map_response(counted);
    Router::new()
        .route("/healthz", get(health::healthz).route_layer(counted()))
        .route("/readyz", get(health::readyz).route_layer(counted()))
        .route("/metrics", get(health::metrics).route_layer(counted()))
        .with_state(Arc::clone(core))
}

async fn counted(mut response: Response) -> Response {
    response.extensions_mut().insert(Counted);
    response
}

/// A listener's routes: the faces' (with `credentials`) and health's (with `health`), behind
/// the guard.
fn router(endpoint: &Arc<Endpoint>, credentials: bool, health: bool) -> Router {
    let mut router = Router::new();
    if credentials {
        for face in &endpoint.faces {
            router = router.merge(Arc::clone(face).routes());
        }
        router = router.merge(
            Router::new()
                .fallback(fallback)
                .with_state(Arc::clone(endpoint)),
        );
    }
    if health {
        router = router.merge(health_routes(&endpoint.core));
    }
    router.layer(axum::middleware::from_fn_with_state(
        Arc::clone(endpoint),
        guard,
    ))
}

/// The endpoint's listeners, bound but not yet serving.
#[derive(Debug)]
pub struct Bound {
    settings: EndpointSettings,
    listeners: Vec<BoundListener>,
}

#[derive(Debug)]
struct BoundListener {
    listener: std::net::TcpListener,
    /// Serves the credential faces.
    credentials: bool,
    /// Serves /healthz, /readyz and /metrics.
    health: bool,
}

/// Binds every listener. Nothing is written before every address is ours, so a second
/// `keyfed run` fails here without touching the running daemon's files.
pub fn bind(settings: EndpointSettings) -> anyhow::Result<Bound> {
    let mut listeners = Vec::new();
    let open = |addr, credentials, health| -> anyhow::Result<BoundListener> {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on {addr}"))?;
        listener.set_nonblocking(true)?;
        Ok(BoundListener {
            listener,
            credentials,
            health,
        })
    };
    for listen in &settings.listen {
        listeners.push(open(
            listen.address,
            true,
            settings.health_listen.is_none(),
        )?);
    }
    if let Some(addr) = settings.health_listen {
        listeners.push(open(addr, false, true)?);
    }
    Ok(Bound {
        settings,
        listeners,
    })
}

/// Refuses, before any face sees it, a request from a web page or naming a foreign `Host`;
/// the face whose path it is answers the refusal in its own statuses.
async fn guard(State(endpoint): State<Arc<Endpoint>>, request: Request, next: Next) -> Response {
    let local = request.extensions().get::<Peer>().map(|p| p.local);
    let absolute = request.uri().authority().map(|a| a.as_str());
    let checked = match local {
        Some(local) => guard::check(&endpoint.hosts, absolute, request.headers(), local),
        None => Err(Refusal::NotFound),
    };
    let path = request.uri().path();
    let face = endpoint.face_at(path);
    let label = match face {
        Some(face) => face.spec().name,
        None if HEALTH_PATHS.contains(&path) => HEALTH,
        None => OTHER,
    };
    let Err(refusal) = checked else {
        let mut response = next.run(request).await;
        // An answer the router gave by itself (405 to a method a route does not take, 400 to a
        // path it cannot decode) is counted, and marked, as its face's too (issue 11).
        if response.extensions().get::<Counted>().is_none() {
            if let Some(face) = face {
                face.finish(&mut response);
            }
            endpoint.core.count(label, response.status());
        }
        return response;
    };
    tracing::debug!(face = label, "endpoint request refused: {refusal:?}");
    match face {
        Some(face) => endpoint.core.answer(&**face, Err(refusal)),
        None => endpoint.core.answer_plain(label, Err(refusal)),
    }
}

/// The core and every face `starts` builds (each may write its files: the container face's
/// token), for the guard's `hosts`.
#[cfg(test)]
fn assemble(
    settings: EndpointSettings,
    hosts: guard::Hosts,
    served: watch::Receiver<Arc<Served>>,
    clock: Arc<dyn Clock>,
    starts: &[Start],
) -> anyhow::Result<Arc<Endpoint>> {
    let pairs = pairs::Pairs::new(Some(&settings), Arc::clone(&clock));
    assemble_with(settings, hosts, served, clock, starts, pairs)
}

/// [`assemble`] with the identity-header pairs the control socket issues.
fn assemble_with(
    settings: EndpointSettings,
    hosts: guard::Hosts,
    served: watch::Receiver<Arc<Served>>,
    clock: Arc<dyn Clock>,
    starts: &[Start],
    pairs: Arc<pairs::Pairs>,
) -> anyhow::Result<Arc<Endpoint>> {
    let core = Arc::new(Core {
        served,
        settings,
        requests: Mutex::new(BTreeMap::new()),
        documents: documents::Documents::default(),
        clock,
        pairs,
    });
    let faces = starts
        .iter()
        .map(|start| start(&core))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Arc::new(Endpoint { core, hosts, faces }))
}

/// Starts every face (writing their files: the container token, the identity header) and serves on `bound` until
/// the set is dropped; at most `limits` connections are open at once. The App Service face
/// also takes the identity-header pairs in `pairs` (issued through the control socket).
pub fn start(
    bound: Bound,
    limits: Limits,
    served: watch::Receiver<Arc<Served>>,
    clock: Arc<dyn Clock>,
    pairs: Arc<pairs::Pairs>,
) -> anyhow::Result<JoinSet<()>> {
    let Bound {
        settings,
        listeners,
    } = bound;
    let hosts = guard::Hosts::new(
        listeners
            .iter()
            .filter_map(|b| b.listener.local_addr().ok()),
        &settings.allowed_hosts,
    );
    let endpoint = assemble_with(settings, hosts, served, clock, &FACES, pairs)?;
    let caps = Caps::new(limits);
    let timeout = endpoint.core.settings.request_timeout;
    let mut tasks = JoinSet::new();
    for bound in listeners {
        let router = router(&endpoint, bound.credentials, bound.health);
        let listener = TcpListener::from_std(bound.listener)?;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(address = %addr, "endpoint listening");
        }
        tasks.spawn(server::serve(listener, router, Arc::clone(&caps), timeout));
    }
    Ok(tasks)
}
