//! The endpoint's HTTP/1.1 server: an accept loop that admits a connection only within the
//! connection caps (`crate::caps`: in all, and per local user), limits on header size and on the
//! time to send headers or to take a response, and the connection's addresses and owner
//! attached to every request (for access control).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use super::timed_io::TimedIo;
use crate::caps::Caps;

/// The address a request arrived on, and the local user owning the client's socket when the
/// kernel could tell (looked up once per connection).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub local: SocketAddr,
    pub uid: Option<u32>,
}

/// Largest request head accepted (hyper answers 431 above it).
const MAX_HEAD: usize = 16 * 1024;

/// How long the accept loop pauses after an accept error (out of file descriptors, mostly), so
/// a starved process does not spin on a listener it cannot serve.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until the task is dropped. `timeout` bounds the time to send a
/// request head and to take each piece of a response.
pub async fn serve(listener: TcpListener, router: Router, caps: Arc<Caps>, timeout: Duration) {
    let mut accept_errors = 0u64;
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_errors += 1;
                // The first error and then every 100th: enough to see, not a flood.
                if accept_errors % 100 == 1 {
                    tracing::warn!(errors = accept_errors, "endpoint cannot accept: {e}");
                }
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let uid = crate::peer_uid::tcp_peer_uid(remote, local);
        // Over a cap the connection is closed at once: it holds no descriptor while it waits,
        // and other users' connections are not queued behind it.
        let Some(slot) = caps.admit(uid) else {
            continue;
        };
        let peer = Peer { local, uid };
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(peer);
                router.clone().oneshot(request.map(Body::new))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(TimedIo::new(stream, timeout)), service)
                .await;
            drop(slot);
        });
    }
}
