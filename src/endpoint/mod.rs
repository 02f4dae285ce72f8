//! The local metadata endpoint: one HTTP listener (loopback by default) serving the AWS IMDSv2
//! face (`imds.rs`), the AWS container face (`container.rs`), and health, readiness and
//! Prometheus metrics (`health.rs`), each face checking its SDK's header or secret and refusing
//! `X-Forwarded-For`. Statuses come from one place (`refusal.rs`); per-target access control
//! from `crate::access`. Reads the `[endpoint]` configuration section.

mod container;
mod documents;
mod health;
mod imds;
mod refusal;
mod server;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use keyfed_core::SecretString;
use keyfed_core::clock::Clock;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

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
                    tracing::warn!(uid = ?uid, target = %target, face = face.label(), "credentials refused to this uid");
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
        let restricted = served.access.get(target).is_some_and(|a| !a.is_open());
        let uid = if restricted {
            crate::access::tcp_peer_uid(peer.remote, peer.local)
        } else {
            None
        };
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

/// A request relayed by a proxy (an SSRF) is refused on every credential face.
fn refuse_forwarded(headers: &HeaderMap) -> Result<(), Refusal> {
    if headers.contains_key("x-forwarded-for") {
        Err(Refusal::Forwarded)
    } else {
        Ok(())
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

/// Writes the container token file, binds every listener and serves until the set is dropped.
pub async fn start(
    settings: EndpointSettings,
    served: watch::Receiver<Arc<Served>>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<JoinSet<()>> {
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
    let shared = Arc::new(Inner {
        served,
        tokens: Mutex::new(imds::Tokens::default()),
        container_token: SecretString::from(token),
        requests: Mutex::new(BTreeMap::new()),
        documents: documents::Documents::default(),
        clock,
        settings,
    });
    let cap = Arc::new(Semaphore::new(shared.settings.max_connections));
    let timeout = shared.settings.request_timeout;
    let credentials = credential_routes(&shared);
    let mut tasks = JoinSet::new();
    let mut bind = |addr, router: Router| -> anyhow::Result<()> {
        let std_listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on {addr}"))?;
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        tracing::info!(address = %addr, "endpoint listening");
        tasks.spawn(server::serve(listener, router, Arc::clone(&cap), timeout));
        Ok(())
    };
    match shared.settings.health_listen {
        Some(addr) => {
            for listen in shared.settings.listen.clone() {
                bind(listen.address, credentials.clone())?;
            }
            bind(addr, health_routes(&shared))?;
        }
        None => {
            let both = credentials.merge(health_routes(&shared));
            for listen in shared.settings.listen.clone() {
                bind(listen.address, both.clone())?;
            }
        }
    }
    Ok(tasks)
}
