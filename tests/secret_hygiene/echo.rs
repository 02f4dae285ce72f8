//! An upstream that refuses every request and quotes it back (issue 11): what a gateway, WAF
//! or proxy that echoes requests in its error pages does. Whatever keyfed sent — a client secret
//! in a Basic header or a form, a client assertion, a subject token, a federated access token
//! as a Bearer header — comes back in the words keyfed quotes in its errors, so any secret of
//! keyfed's own that it does not take out of them reaches its logs, status and faces.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How the echo is dressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In the upstream's own error format, the request as its description: STS's XML
    /// `<Message>` for a form with `Action=`, OAuth's JSON `error_description` otherwise.
    Quoted,
    /// The request as the whole `text/plain` body.
    Raw,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Quoted => "quoted",
            Self::Raw => "raw",
        }
    }
}

/// A running echo server; stops when dropped.
pub struct Echo {
    pub base: String,
    pub mode: Mode,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Echo {
    pub async fn start(mode: Mode) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("echo: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("echo: {e}"));
        let requests = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    if answer(stream, mode).await {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        Self {
            base: format!("http://{addr}"),
            mode,
            requests,
            task,
        }
    }

    /// Requests echoed so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Reads one request and answers 400 with it; whether a whole request was echoed.
async fn answer(mut stream: TcpStream, mode: Mode) -> bool {
    let mut request = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = find(&request, b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(n @ 1..) if request.len() < 1 << 20 => request.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if head.contains("expect: 100-continue") {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    }
    while request.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(n @ 1..) => request.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
    }
    let echoed = String::from_utf8_lossy(&request).into_owned();
    let (content_type, body) = match mode {
        Mode::Raw => ("text/plain", echoed),
        Mode::Quoted if echoed.contains("Action=") => ("text/xml", sts_error(&echoed)),
        Mode::Quoted => (
            "application/json",
            serde_json::json!({
                "error": "invalid_request",
                "error_description": format!("refused: {echoed}"),
                "message": format!("refused: {echoed}"),
            })
            .to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await.is_ok()
}

/// STS's error document with `text` as its message.
fn sts_error(text: &str) -> String {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
         <Code>InvalidParameterValue</Code><Message>refused: {escaped}</Message></Error>\
         <RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
