//! The local metadata endpoint: one HTTP listener (loopback by default) serving the AWS IMDSv2
//! face (`imds.rs`), the AWS container face (`container.rs`), and health, readiness and
//! Prometheus metrics (`health.rs`). Every request first passes the DNS-rebinding guard
//! (`guard.rs`: `Host` must name this endpoint; no `Origin`, `Sec-Fetch-*` or
//! `X-Forwarded-For`); each face then checks its SDK's header or secret. Statuses come from one place
//! (`refusal.rs`); per-target access control from `crate::access`; connection caps from
//! `crate::caps`. Reads the `[endpoint]` configuration section.

mod container;
mod documents;
mod guard;
mod health;
mod imds;
mod refusal;
mod server;
mod timed_io;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use keyfed_core::SecretString;
use keyfed_core::clock::Clock;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::caps::{Caps, Limits};
use crate::config::EndpointSettings;
use crate::engine::Issued;
use crate::outputs::{FileSpec, write_atomic};
use crate::served::Served;
pub use refusal::Refusal;
use server::Peer;

/// Which face answered, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Face {
    Imds,
    Container,
    Health,
    Other,
}

impl Face {
    /// The face a path belongs to, for counting requests refused before any face saw them.
    fn of_path(path: &str) -> Self {
        match path {
            "/healthz" | "/readyz" | "/metrics" => Self::Health,
            p if p.starts_with("/latest/") => Self::Imds,
            _ => Self::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Imds => "imds",
            Self::Container => "container",
            Self::Health => "health",
            Self::Other => "other",
        }
    }
}

/// State every handler shares.
#[derive(Debug)]
pub struct Inner {
    served: watch::Receiver<Arc<Served>>,
    settings: EndpointSettings,
    hosts: guard::Hosts,
    tokens: Mutex<imds::Tokens>,
    container_token: SecretString,
    requests: Mutex<BTreeMap<(Face, u16), u64>>,
    documents: documents::Documents,
    clock: Arc<dyn Clock>,
}

pub type Shared = Arc<Inner>;

impl Inner {
    fn served(&self) -> Arc<Served> {
        Arc::clone(&self.served.borrow())
    }

    fn lock_tokens(&self) -> MutexGuard<'_, imds::Tokens> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, face: Face, status: StatusCode) {
        *self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((face, status.as_u16()))
            .or_default() += 1;
    }

    fn request_counts(&self) -> Vec<((&'static str, u16), u64)> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((face, status), n)| ((face.label(), *status), *n))
            .collect()
    }

    /// Turns a handler's outcome into a response, counting it and logging refusals of access.
    fn answer(&self, face: Face, result: Result<Response, Refusal>) -> Response {
        let response = match result {
            Ok(r) => r,
            Err(refusal) => {
                if let Refusal::Forbidden { target, uid } = &refusal {
                    crate::access::log_refusal(*uid, target, face.label());
                }
                refusal.into_response()
            }
        };
        self.count(face, response.status());
        response
    }

    /// The target's credential for the peer, after the access check.
    async fn credential(
        &self,
        served: &Served,
        target: &str,
        peer: Peer,
    ) -> Result<Arc<Issued>, Refusal> {
        let uid = peer.uid;
        let engine = served.target_for(target, uid).map_err(|exists| {
            if exists {
                Refusal::Forbidden {
                    target: target.to_owned(),
                    uid,
                }
            } else {
                Refusal::NotFound
            }
        })?;
        engine
            .credential()
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))
    }
}

/// 32 random bytes, hex.
fn random_token() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Container paths, and anything else.
async fn fallback(State(shared): State<Shared>, request: Request) -> Response {
    let served = shared.served();
    let peer = request.extensions().get::<Peer>().copied();
    match (
        request.method(),
        served.container_paths.get(request.uri().path()),
        peer,
    ) {
        (&Method::GET, Some(target), Some(peer)) => {
            container::answer(&shared, target, peer, request.headers()).await
        }
        _ => shared.answer(Face::Other, Err(Refusal::NotFound)),
    }
}

fn credential_routes(shared: &Shared) -> Router {
    Router::new()
        .route("/latest/api/token", put(imds::token))
        .route(
            "/latest/meta-data/iam/security-credentials",
            get(imds::roles),
        )
        .route(
            "/latest/meta-data/iam/security-credentials/",
            get(imds::roles),
        )
        .route(
            "/latest/meta-data/iam/security-credentials/{role}",
            get(imds::credentials),
        )
        .fallback(fallback)
        .with_state(Arc::clone(shared))
}

fn health_routes(shared: &Shared) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .with_state(Arc::clone(shared))
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
    /// Serves the credential faces (IMDS, container).
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

/// Refuses, before any face sees it, a request from a web page or naming a foreign `Host`.
async fn guard(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let local = request.extensions().get::<Peer>().map(|p| p.local);
    let absolute = request.uri().authority().map(|a| a.as_str());
    let checked = match local {
        Some(local) => guard::check(&shared.hosts, absolute, request.headers(), local),
        None => Err(Refusal::NotFound),
    };
    match checked {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let face = Face::of_path(request.uri().path());
            tracing::debug!(face = face.label(), "endpoint request refused: {refusal:?}");
            shared.answer(face, Err(refusal))
        }
    }
}

/// Writes the container token file and serves on `bound` until the set is dropped; at most
/// `limits` connections are open at once.
pub fn start(
    bound: Bound,
    limits: Limits,
    served: watch::Receiver<Arc<Served>>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<JoinSet<()>> {
    let Bound {
        settings,
        listeners,
    } = bound;
    let token = random_token();
    let spec = FileSpec {
        mode: 0o640,
        owner: None,
        group: settings.container_token_group,
    };
    write_atomic(&settings.container_token_file, token.as_bytes(), spec).with_context(|| {
        format!(
            "cannot write the container token file {}",
            settings.container_token_file.display()
        )
    })?;
    let hosts = guard::Hosts::new(
        listeners
            .iter()
            .filter_map(|b| b.listener.local_addr().ok()),
        &settings.allowed_hosts,
    );
    let shared = Arc::new(Inner {
        served,
        hosts,
        tokens: Mutex::new(imds::Tokens::default()),
        container_token: SecretString::from(token),
        requests: Mutex::new(BTreeMap::new()),
        documents: documents::Documents::default(),
        clock,
        settings,
    });
    let caps = Caps::new(limits);
    let timeout = shared.settings.request_timeout;
    let mut tasks = JoinSet::new();
    for bound in listeners {
        let mut router = Router::new();
        if bound.credentials {
            router = router.merge(credential_routes(&shared));
        }
        if bound.health {
            router = router.merge(health_routes(&shared));
        }
        let router = router.layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            guard,
        ));
        let listener = TcpListener::from_std(bound.listener)?;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(address = %addr, "endpoint listening");
        }
        tasks.spawn(server::serve(listener, router, Arc::clone(&caps), timeout));
    }
    Ok(tasks)
}
