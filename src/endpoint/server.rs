//! The endpoint's HTTP/1.1 server: an accept loop with a connection cap, a limit on header size
//! and on the time to send them, and the connection's addresses attached to every request (for
//! the peer-uid lookup).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// The two ends of the connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub remote: SocketAddr,
    pub local: SocketAddr,
}

/// Largest request head accepted (hyper answers 431 above it).
const MAX_HEAD: usize = 16 * 1024;

/// Serves `router` on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cap: Arc<Semaphore>,
    header_timeout: Duration,
) {
    loop {
        let Ok(permit) = Arc::clone(&cap).acquire_owned().await else {
            return;
        };
        let Ok((stream, remote)) = listener.accept().await else {
            continue;
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let peer = Peer { remote, local };
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(peer);
                router.clone().oneshot(request.map(Body::new))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}
