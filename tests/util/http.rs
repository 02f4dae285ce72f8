//! The test's own HTTP client for keyfed's local endpoint: requests that fail the test on a
//! transport error, requests written by hand, and the wait for the endpoint to be ready.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::wait_until;

/// A client that never goes through a proxy: the endpoint is on loopback, and a proxy set in
/// the test's environment must not answer in its place.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Sends `request`; its status.
pub async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Sends `request`; the body it got, whatever the status.
pub async fn text_of(request: reqwest::RequestBuilder) -> String {
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default()
}

/// Sends `head` (a request written by hand) to `base` on a connection of its own; returns all the
/// server answered before it closed the connection (within 10 s).
pub async fn raw_exchange(base: &str, head: &[u8]) -> String {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    // A server that closes at once may make the write fail; what it answered still counts.
    let _ = stream.write_all(head).await;
    let mut answer = Vec::new();
    // A server that refuses a request closes the connection; an error after the answer (a
    // reset for unread input) ends the read too.
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Waits until `base`'s `/readyz` answers 200: every target has its first credential. A
/// request that fails or hangs (a busy endpoint) is tried again, within the wait's bound.
pub async fn wait_ready(base: &str) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let readyz = format!("{base}/readyz");
    wait_until(&format!("{readyz} to answer 200"), async || {
        http.get(&readyz)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}
