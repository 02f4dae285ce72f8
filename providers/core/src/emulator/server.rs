//! The emulators' HTTP/1.1 server: an accept loop over TCP (optionally TLS) that counts every
//! request and applies injected faults before handing the request to the emulator's routes.
//! Faults on the listener as a whole come from [`Control`] too: while the emulator is down its
//! port is closed and its open connections are cut; a TLS emulator can be told to present
//! another certificate.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use http::{Request, Response, StatusCode, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use super::control::{Control, Fault};

/// A server running on a background task; dropping it stops the server.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    tls: bool,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` or `https://localhost:PORT` (TLS certificates name `localhost`).
    pub fn base_url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

/// Error returned to hyper to make it close a connection without answering.
#[derive(Debug)]
struct DroppedByFault;

impl std::fmt::Display for DroppedByFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by injected fault")
    }
}

impl std::error::Error for DroppedByFault {}

/// Serves `router` on `listener` until the returned handle is dropped.
pub fn serve(
    router: Router,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    control: Control,
) -> std::io::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let is_tls = tls.is_some();
    let task = tokio::spawn(accept_loop(listener, router, tls, control, stopped));
    Ok(RunningServer {
        addr,
        tls: is_tls,
        stop,
        task,
    })
}

/// How long to wait before trying again to listen on the emulator's address when it comes up
/// and the address is still taken.
const REBIND_PAUSE: Duration = Duration::from_millis(50);

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    control: Control,
    mut stopped: watch::Receiver<bool>,
) {
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let mut listener = Some(listener);
    let mut down = control.down();
    loop {
        if *down.borrow_and_update() {
            // Down: the port is closed, so connections are refused (not left hanging).
            listener = None;
            tokio::select! {
                changed = down.changed() => if changed.is_err() { return },
                _ = stopped.changed() => return,
            }
            continue;
        }
        let Some(open) = listener.as_ref() else {
            match TcpListener::bind(addr).await {
                Ok(again) => listener = Some(again),
                Err(_) => tokio::time::sleep(REBIND_PAUSE).await,
            }
            continue;
        };
        let accepted = tokio::select! {
            accepted = open.accept() => accepted,
            _ = down.changed() => continue,
            _ = stopped.changed() => return,
        };
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        let router = router.clone();
        let control = control.clone();
        // A certificate the test asked for wins over the emulator's own.
        let tls = tls
            .as_ref()
            .map(|own| control.certificate().unwrap_or_else(|| Arc::clone(own)));
        let cut = until_cut(control.down(), control.certificates());
        tokio::spawn(async move {
            tokio::select! {
                () = accept_connection(stream, tls, router, control) => {}
                // Open connections go too, as when a server dies or restarts with a new
                // certificate: a client's kept-alive connection must not outlive the change.
                () = cut => {}
            }
        });
    }
}

/// Completes once the emulator goes down or changes the certificate it presents (never, if its
/// control is gone).
async fn until_cut(
    mut down: watch::Receiver<bool>,
    mut certificates: watch::Receiver<Option<Arc<rustls::ServerConfig>>>,
) {
    certificates.mark_unchanged();
    while !*down.borrow_and_update() {
        tokio::select! {
            changed = down.changed() => if changed.is_err() { std::future::pending::<()>().await },
            changed = certificates.changed() => match changed {
                Ok(()) => return,
                Err(_) => std::future::pending::<()>().await,
            },
        }
    }
}

async fn accept_connection(
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    control: Control,
) {
    let reset = Arc::new(AtomicBool::new(false));
    let stream = Resettable {
        inner: stream,
        reset: Arc::clone(&reset),
    };
    match tls {
        Some(config) => {
            if let Ok(tls) = tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
                serve_connection(tls, router, control, reset).await;
            }
        }
        None => serve_connection(stream, router, control, reset).await,
    }
}

/// A TCP stream that resets the connection (SO_LINGER 0, so closing sends RST) when dropped
/// after a [`Fault::Reset`] asked for it.
struct Resettable {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for Resettable {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for Resettable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Resettable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn serve_connection<S>(stream: S, router: Router, control: Control, reset: Arc<AtomicBool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let date_header = control.date_header();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let router = router.clone();
        let control = control.clone();
        let reset = Arc::clone(&reset);
        async move { handle(req, router, control, &reset).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .auto_date_header(date_header)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(
    req: Request<Incoming>,
    router: Router,
    control: Control,
    reset: &AtomicBool,
) -> Result<Response<Body>, DroppedByFault> {
    let fault = control.on_request(req.uri().path());
    let answer = |status: StatusCode, body: String| {
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        Ok(response)
    };
    match fault {
        Some(Fault::Drop) => return Err(DroppedByFault),
        Some(Fault::Reset) => {
            reset.store(true, Ordering::SeqCst);
            return Err(DroppedByFault);
        }
        Some(Fault::Status { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return answer(status, body);
        }
        Some(Fault::Malformed) => {
            return answer(StatusCode::OK, r#"{"access_token":"eyJ"#.to_owned());
        }
        Some(Fault::Garbled) => return Ok(cut_short(route(req, router).await, false).await),
        Some(Fault::Truncated) => return Ok(cut_short(route(req, router).await, true).await),
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Hold(latch)) => latch.pass().await,
        None => {}
    }
    Ok(route(req, router).await)
}

/// The emulator's own answer to `req`.
async fn route(req: Request<Incoming>, router: Router) -> Response<Body> {
    let response: Result<_, Infallible> = router.oneshot(req.map(Body::new)).await;
    match response {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// `response` with only the first half of its body: framed as complete (`in_transit` false),
/// or announced whole and cut off by closing the connection (`in_transit` true).
async fn cut_short(response: Response<Body>, in_transit: bool) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    let whole = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = whole.slice(..whole.len() / 2);
    parts.headers.remove(header::CONTENT_LENGTH);
    if !in_transit {
        return Response::from_parts(parts, Body::from(half));
    }
    parts.headers.insert(
        header::CONTENT_LENGTH,
        header::HeaderValue::from(whole.len()),
    );
    let body = CutOff {
        first: Some(half),
        pause: Box::pin(tokio::time::sleep(CUT_OFF_PAUSE)),
    };
    Response::from_parts(parts, Body::new(body))
}

/// How long a truncated answer's first half has to reach the client before the connection
/// closes (hyper writes what it has while the body waits).
const CUT_OFF_PAUSE: Duration = Duration::from_millis(50);

/// A body that yields its first part, waits a moment, then fails: hyper has sent fewer bytes
/// than the Content-Length promised and closes the connection.
struct CutOff {
    first: Option<Bytes>,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for CutOff {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        match self.pause.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::other(
                "answer cut off by injected fault",
            )))),
        }
    }

    fn size_hint(&self) -> SizeHint {
        // Unknown: hyper frames the answer with the Content-Length header it was given.
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    const ANSWER: &str = r#"{"access_token":"0123456789abcdef","expires_in":300}"#;

    async fn start(control: &Control) -> RunningServer {
        let router = Router::new().route("/token", get(|| async { ANSWER }));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        serve(router, listener, None, control.clone()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends one request on a connection of its own; what came back before the connection
    /// ended, and how it ended.
    async fn exchange(server: &RunningServer) -> (String, std::io::Result<usize>) {
        let mut stream = TcpStream::connect(server.addr())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .write_all(b"GET /token HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut got = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
            .await
            .unwrap_or_else(|_| panic!("the server kept the connection open"));
        (String::from_utf8_lossy(&got).into_owned(), end)
    }

    fn body(answer: &str) -> &str {
        answer.split_once("\r\n\r\n").map_or("", |(_, body)| body)
    }

    #[tokio::test]
    async fn answers_are_garbled_truncated_or_reset_on_demand() {
        let control = Control::default();
        let server = start(&control).await;
        let half = &ANSWER[..ANSWER.len() / 2];

        control.inject("/token", Fault::Garbled, Some(1));
        let (answer, end) = exchange(&server).await;
        assert!(end.is_ok(), "{end:?}");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(&format!("content-length: {}\r\n", half.len())));
        assert_eq!(body(&answer), half);

        control.inject("/token", Fault::Truncated, Some(1));
        let (answer, _) = exchange(&server).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains(&format!("content-length: {}\r\n", ANSWER.len())),
            "the whole length is announced: {answer}"
        );
        assert_eq!(body(&answer), half, "only half of it arrives");

        control.inject("/token", Fault::Reset, Some(1));
        let (answer, end) = exchange(&server).await;
        assert_eq!(answer, "");
        assert_eq!(
            end.map_err(|e| e.kind()).err(),
            Some(std::io::ErrorKind::ConnectionReset)
        );

        let (answer, _) = exchange(&server).await;
        assert_eq!(body(&answer), ANSWER, "the faults are used up");
    }

    #[tokio::test]
    async fn a_server_down_refuses_connections_cuts_open_ones_and_comes_back_on_its_port() {
        let control = Control::default();
        let server = start(&control).await;
        let mut open = TcpStream::connect(server.addr())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // The connection is being served before the server goes down.
        open.write_all(b"GET /token HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut first = [0u8; 12];
        open.read_exact(&mut first)
            .await
            .unwrap_or_else(|e| panic!("{e}"));

        control.set_down(true);
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), open.read_to_end(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("the open connection was not cut"))
            .ok();
        let refused = async || {
            TcpStream::connect(server.addr())
                .await
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        };
        let started = std::time::Instant::now();
        while !refused().await {
            assert!(started.elapsed() < Duration::from_secs(10), "never refused");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(control.hits("/token"), 1);

        control.set_down(false);
        let started = std::time::Instant::now();
        loop {
            if let Ok(stream) = TcpStream::connect(server.addr()).await {
                drop(stream);
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never back up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (answer, _) = exchange(&server).await;
        assert_eq!(body(&answer), ANSWER);
    }

    /// A TLS handshake with a client trusting only `ca`: whether it succeeded.
    async fn handshake(server: &RunningServer, ca: &super::super::TestCa) -> bool {
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.ca_pem().as_bytes()) {
            roots
                .add(cert.unwrap_or_else(|e| panic!("{e}")))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("{e}"))
            .with_root_certificates(roots)
            .with_no_client_auth();
        let stream = TcpStream::connect(server.addr())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let name =
            rustls::pki_types::ServerName::try_from("localhost").unwrap_or_else(|e| panic!("{e}"));
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_tls_server_presents_another_certificate_on_demand() {
        let ca = super::super::TestCa::new().unwrap_or_else(|e| panic!("{e}"));
        let other = super::super::TestCa::new().unwrap_or_else(|e| panic!("{e}"));
        let control = Control::default();
        let router = Router::new().route("/token", get(|| async { ANSWER }));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let server = serve(router, listener, Some(ca.server_config()), control.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(handshake(&server, &ca).await);
        control.present_certificate(Some(other.server_config()));
        assert!(
            !handshake(&server, &ca).await,
            "the other CA's certificate was trusted"
        );
        let wrong_name = ca
            .server_config_for(&["wrong-name.invalid"])
            .unwrap_or_else(|e| panic!("{e}"));
        control.present_certificate(Some(wrong_name));
        assert!(
            !handshake(&server, &ca).await,
            "a certificate for another name was taken"
        );
        control.present_certificate(None);
        assert!(handshake(&server, &ca).await);
    }
}
