//! What keyfed's fuzz targets share (issue 11): the input format of their seed corpora, and a
//! loopback HTTP server that answers the provider clients with what the fuzzer wrote.
//!
//! The providers' response parsers are private to their crates (as they should be), so the
//! targets reach them as keyfed does: through each crate's public client, pointed at a server
//! on 127.0.0.1 that answers every request with the next of the input's answers. A whole
//! exchange (discovery, token, JWKS; STS then IAM Credentials) is one input, so the fuzzer
//! explores the states between answers too.
//!
//! The input format, chosen so that seeds are real answers a human can read and edit:
//!
//! ```text
//! <options: words the target reads, e.g. "verify strict">
//! === 200
//! <the first answer's body>
//! === 400 application/json
//! <the second answer's body>
//! ```
//!
//! A status outside 200–599 is folded into it; a missing content type is the target's default.
//! `{request}` in a body is replaced by the request it answers (head and body), `{body}` by its
//! body, as a proxy's or a debugging server's error page may echo them: the secrets keyfed sent
//! must not come back out in keyfed's errors. A request after the last answer gets an empty 404.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// Where [`Server::at_fixed_address`] listens: a fixed address, so that seeds can name it (an
/// issuer's URL, which its tokens carry in `iss`, inside their signature); a loopback address
/// of its own, so nothing else is likely to hold it.
pub const ADDRESS: &str = "127.77.0.1:18080";

/// The moment every target's clock reads: 2026-01-01T00:00:00Z. Seeds' tokens live around it.
pub const NOW_SECS: u64 = 1_767_225_600;

/// [`NOW_SECS`] as a time.
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

/// One answer the server gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// An input split into its options line and its answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    pub options: String,
    pub answers: Vec<Answer>,
}

impl Script {
    /// Reads the format above; any bytes are some script.
    pub fn parse(data: &[u8]) -> Self {
        let mut lines = data.split_inclusive(|&b| b == b'\n');
        let options = lines
            .next()
            .map(|l| String::from_utf8_lossy(l).trim().to_owned())
            .unwrap_or_default();
        let mut answers: Vec<Answer> = Vec::new();
        for line in lines {
            if let Some(head) = line.strip_prefix(b"=== ") {
                let head = String::from_utf8_lossy(head);
                let mut words = head.split_whitespace();
                let status = words
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .map_or(200, fold_status);
                let content_type = words.next().map(str::to_owned);
                answers.push(Answer {
                    status,
                    content_type,
                    body: Vec::new(),
                });
            } else if let Some(answer) = answers.last_mut() {
                answer.body.extend_from_slice(line);
            }
        }
        Self { options, answers }
    }

    /// Whether the options line holds `word`.
    pub fn has(&self, word: &str) -> bool {
        self.options.split_whitespace().any(|w| w == word)
    }
}

/// Any number as a status HTTP clients take as a final answer.
fn fold_status(n: u64) -> u16 {
    let folded = if (200..=599).contains(&n) {
        n
    } else {
        200 + n % 400
    };
    u16::try_from(folded).unwrap_or(200)
}

#[derive(Default)]
struct Queue {
    answers: VecDeque<Answer>,
    default_type: &'static str,
}

/// The loopback server and the runtime every target's client runs on. One per process: the
/// server runs only while a target's future is being driven by [`Server::run`].
pub struct Server {
    runtime: Runtime,
    address: std::net::SocketAddr,
    queue: Arc<Mutex<Queue>>,
}

impl Server {
    /// The process's server on a free loopback port, started on first use.
    pub fn get() -> &'static Self {
        static SERVER: OnceLock<Server> = OnceLock::new();
        SERVER.get_or_init(|| Self::start(None))
    }

    /// The process's server at [`ADDRESS`] (for seeds that name it), started on first use; on
    /// a free port when another process holds that address, which it says.
    pub fn at_fixed_address() -> &'static Self {
        static SERVER: OnceLock<Server> = OnceLock::new();
        SERVER.get_or_init(|| Self::start(Some(ADDRESS)))
    }

    fn start(fixed: Option<&str>) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("the fuzz runtime: {e}"));
        let fixed = fixed.and_then(|address| {
            runtime
                .block_on(TcpListener::bind(address))
                .inspect_err(|e| {
                    eprintln!(
                        "cannot bind {address} ({e}): serving on another port, where seeds \
                         naming {address} no longer match"
                    );
                })
                .ok()
        });
        let listener = match fixed {
            Some(listener) => listener,
            None => runtime
                .block_on(TcpListener::bind("127.0.0.1:0"))
                .unwrap_or_else(|e| panic!("binding the fuzz server: {e}")),
        };
        let address = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the fuzz server's address: {e}"));
        let queue = Arc::new(Mutex::new(Queue::default()));
        let shared = Arc::clone(&queue);
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, Arc::clone(&shared)));
            }
        });
        Self {
            runtime,
            address,
            queue,
        }
    }

    /// `http://<address>:<port>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Runs `future` to completion with `answers` queued (`default_type` for those without a
    /// content type).
    pub fn run<T>(
        &self,
        answers: &[Answer],
        default_type: &'static str,
        future: impl Future<Output = T>,
    ) -> T {
        {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.answers = answers.iter().cloned().collect();
            queue.default_type = default_type;
        }
        self.runtime.block_on(future)
    }

    /// Runs a future on the runtime without a server exchange (building clients).
    pub fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }
}

/// Reads one request (head and `Content-Length` body) and writes the next answer.
async fn answer(mut stream: TcpStream, queue: Arc<Mutex<Queue>>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
        if let Some(at) = find(&request, b"\r\n\r\n") {
            break at + 4;
        }
        if request.len() > 1 << 20 {
            return;
        }
    };
    let head = String::from_utf8_lossy(request.get(..head_end).unwrap_or_default()).into_owned();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while request.len() < head_end + length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
    }
    let (answer, default_type) = {
        let mut queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
        (queue.answers.pop_front(), queue.default_type)
    };
    let answer = answer.unwrap_or(Answer {
        status: 404,
        content_type: None,
        body: Vec::new(),
    });
    let content_type = answer
        .content_type
        .as_deref()
        .filter(|t| t.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or(default_type);
    // `{request}` in a body is the request itself, `{body}` its body, as a proxy's or a
    // debugging server's error page may echo them.
    let sent = request.get(head_end..).unwrap_or_default();
    let body = replace(&replace(&answer.body, ECHO, &request), ECHO_BODY, sent);
    let mut response = format!(
        "HTTP/1.1 {} Fuzz\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        answer.status,
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

/// What an answer's body writes for the request it answers, and for that request's body.
const ECHO: &[u8] = b"{request}";
const ECHO_BODY: &[u8] = b"{body}";

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `text` with every `from` replaced by `to`.
fn replace(text: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = find(rest, from) {
        out.extend_from_slice(rest.get(..at).unwrap_or_default());
        out.extend_from_slice(to);
        rest = rest.get(at + from.len()..).unwrap_or_default();
    }
    out.extend_from_slice(rest);
    out
}

/// The JSON string value of `field` in `body` when `body` is a JSON object holding one.
pub fn json_field(body: &[u8], field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get(field)?.as_str().map(str::to_owned)
}

/// The text of each `<tag>…</tag>` in `body`.
pub fn xml_texts(body: &[u8], tag: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(&open) {
        rest = rest.get(start + open.len()..).unwrap_or_default();
        let Some(end) = rest.find(&close) else {
            break;
        };
        found.push(rest.get(..end).unwrap_or_default().to_owned());
        rest = rest.get(end + close.len()..).unwrap_or_default();
    }
    found
}

/// Panics, as a finding, when `shown` (an error's text, a Debug print) contains `secret`, a
/// secret value taken from `body` (the answer it came in). Skipped, as no finding, when the
/// value is shorter than 8 characters (it turns up in any text by chance), occurs in `body`
/// more than once (a fuzzer's copy elsewhere in the answer may be quoted rightly), or lies
/// within one of the `public` texts the error may name (a URL, a role ARN).
pub fn assert_hidden(shown: &str, secret: &str, body: &[u8], public: &[&str]) {
    let secret = secret.trim();
    if secret.chars().count() < 8
        || public.iter().any(|p| p.contains(secret))
        || count(body, secret.as_bytes()) > 1
    {
        return;
    }
    if shown.contains(secret) {
        panic!("a secret ({secret:?}) is shown: {shown}");
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() {
        return 0;
    }
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// Prints a target's outcome when `KEYFED_FUZZ_SHOW` is set (for writing and checking seeds:
/// `KEYFED_FUZZ_SHOW=1 <target binary> <seed file>`).
pub fn show(outcome: &dyn std::fmt::Display) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("KEYFED_FUZZ_SHOW").is_some()) {
        eprintln!("outcome: {outcome}");
    }
}
