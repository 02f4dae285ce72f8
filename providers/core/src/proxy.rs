//! What the proxy said, when an upstream could not be reached through it. hyper-util's CONNECT
//! tunnel (which reqwest and the AWS SDK both use) reports a proxy's refusal only as "tunnel
//! error: unsuccessful", losing the proxy's status and words, and never names the proxy. After
//! such a failure keyfed asks the proxy once more itself — the same `CONNECT host:port` — and
//! says which proxy it was (its URL without user or password, and the variable that named it)
//! and what it answered: "the proxy http://proxy:3128 (HTTPS_PROXY) refused CONNECT
//! sso.example.com:443: 403 Forbidden (squid/5.7; ERR_ACCESS_DENIED)". Nothing is asked when the
//! failure was not a tunnel's, and the answer is read within a bound of time and size.

use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use url::{Host, Url};

use crate::http::{ProxyEnv, trim_body};

/// The most of the proxy's answer read: its head and the start of its error page.
const MAX_ANSWER: usize = 16 << 10;

/// The longest the second ask waits for the proxy.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// What to add to the failure `detail` of a request to `target`, when `detail` says the proxy's
/// tunnel failed: which proxy, and what it says. Proxies are read from the environment as
/// [`crate::http::build_client`] reads them.
pub async fn explain(target: &Url, detail: &str, timeout: Duration) -> Option<String> {
    explain_with(
        target,
        detail,
        &ProxyEnv::read(&|name| std::env::var(name).ok()),
        timeout,
    )
    .await
}

/// [`explain`] with the proxy settings given.
pub async fn explain_with(
    target: &Url,
    detail: &str,
    env: &ProxyEnv,
    timeout: Duration,
) -> Option<String> {
    if !detail.contains("tunnel error") {
        return None;
    }
    let (variable, raw) = match target.scheme() {
        "https" => env.https.as_ref()?,
        _ => env.http.as_ref()?,
    };
    let proxy = Proxy::parse(raw)?;
    let name = format!("the proxy {} ({variable})", proxy.shown);
    let authority = authority(target)?;
    if detail.contains("failed to create underlying connection") {
        return Some(format!("{name} could not be reached"));
    }
    if detail.contains("proxy authorization required") {
        return Some(format!(
            "{name} asks for a user and password (407 Proxy Authentication Required): put them in {variable}"
        ));
    }
    if proxy.scheme != "http" {
        return Some(format!("{name} did not open a tunnel to {authority}"));
    }
    let wait = timeout.min(MAX_WAIT);
    Some(match proxy.connect(&authority, wait).await {
        Ok(answer) if answer.opened() => format!(
            "{name} did not open a tunnel to {authority}, but did when asked again: {}",
            answer.said
        ),
        Ok(answer) => format!("{name} refused CONNECT {authority}: {}", answer.said),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => format!(
            "{name} did not open a tunnel to {authority}, and asked again it did not answer within {} s",
            wait.as_secs()
        ),
        Err(e) => format!(
            "{name} did not open a tunnel to {authority}, and asked again it could not be reached: {e}"
        ),
    })
}

/// `host:port` of `url`, as a CONNECT request names it.
fn authority(url: &Url) -> Option<String> {
    let port = url.port_or_known_default()?;
    Some(match url.host()? {
        Host::Ipv6(ip) => format!("[{ip}]:{port}"),
        host => format!("{host}:{port}"),
    })
}

/// A proxy URL as keyfed shows and asks it.
struct Proxy {
    scheme: String,
    host: String,
    port: u16,
    /// The URL without user or password.
    shown: String,
    /// `user:password`, percent-decoded, when the URL has them.
    credentials: Option<String>,
    /// The password, percent-decoded and as the URL writes it: an echo may hold it alone.
    password: Vec<String>,
}

impl Proxy {
    /// A proxy URL from the environment; one without a scheme is `http://`, as reqwest reads
    /// it.
    fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let url = if raw.contains("://") {
            Url::parse(raw)
        } else {
            Url::parse(&format!("http://{raw}"))
        }
        .ok()?;
        let port = url.port_or_known_default()?;
        let host = match url.host()? {
            Host::Ipv6(ip) => format!("[{ip}]"),
            host => host.to_string(),
        };
        let credentials = (!url.username().is_empty()).then(|| {
            format!(
                "{}:{}",
                percent_decode(url.username()),
                percent_decode(url.password().unwrap_or_default())
            )
        });
        let password = url
            .password()
            .map(|p| vec![percent_decode(p), p.to_owned()])
            .unwrap_or_default();
        Some(Self {
            shown: format!("{}://{host}:{port}", url.scheme()),
            scheme: url.scheme().to_owned(),
            host,
            port,
            credentials,
            password,
        })
    }

    /// Asks the proxy for a tunnel to `authority` and reads its answer (then closes), within
    /// `wait`. The answer ends with its head (a tunnel), with its Content-Length or last chunk
    /// (a refusal on a kept-alive connection), at [`MAX_ANSWER`] or when the proxy closes; a
    /// proxy that says something and then falls silent is quoted as far as it got, and only one
    /// that says nothing within `wait` is an error (`TimedOut`).
    async fn connect(&self, authority: &str, wait: Duration) -> std::io::Result<Answer> {
        let deadline = tokio::time::Instant::now() + wait;
        let timed_out = || std::io::Error::from(std::io::ErrorKind::TimedOut);
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let mut stream =
            tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect((host, self.port)))
                .await
                .map_err(|_| timed_out())??;
        let auth = self.basic().map_or_else(String::new, |basic| {
            format!("Proxy-Authorization: Basic {basic}\r\n")
        });
        let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n");
        tokio::time::timeout_at(deadline, stream.write_all(request.as_bytes()))
            .await
            .map_err(|_| timed_out())??;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        while answer.len() < MAX_ANSWER && !complete(&answer) {
            match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) if answer.is_empty() => return Err(e),
                Err(_) if answer.is_empty() => return Err(timed_out()),
                // What arrived before the proxy fell silent or reset is its answer.
                Ok(Err(_)) | Err(_) => break,
            }
        }
        answer.truncate(MAX_ANSWER);
        let text = String::from_utf8_lossy(&answer);
        let mut sent: Vec<String> = self.password.clone();
        sent.extend(self.credentials.clone());
        sent.extend(self.basic());
        let sent: Vec<&str> = sent.iter().map(String::as_str).collect();
        Ok(Answer::read(&crate::secret::redact_sent(&text, &sent)))
    }

    fn basic(&self) -> Option<String> {
        self.credentials
            .as_ref()
            .map(|c| base64::engine::general_purpose::STANDARD.encode(c))
    }
}

/// Whether `answer` holds a whole answer to CONNECT: a tunnel's head (nothing follows it until
/// keyfed speaks), or a refusal's head and the body its Content-Length or chunked encoding
/// says. Without either the body ends when the proxy closes.
fn complete(answer: &[u8]) -> bool {
    let Some(head_end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    if answer.starts_with(b"HTTP/1.1 2") || answer.starts_with(b"HTTP/1.0 2") {
        return true;
    }
    let head = String::from_utf8_lossy(&answer[..head_end]);
    let body = &answer[head_end + 4..];
    let header = |name: &str| {
        head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_ascii_lowercase())
        })
    };
    if header("Transfer-Encoding").is_some_and(|te| te.ends_with("chunked")) {
        return body.starts_with(b"0\r\n") || body.windows(4).any(|w| w == b"\n0\r\n");
    }
    header("Content-Length")
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|n| body.len() >= n)
}

/// What a proxy answered to CONNECT, in words for an error message.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: Option<u16>,
    said: String,
}

impl Answer {
    /// `403 Filtered (tinyproxy/1.11.1): The request you made has been filtered` from the
    /// proxy's status line, its `Server` and `X-Squid-Error` headers, and the first paragraph
    /// (or title) of its error page.
    fn read(text: &str) -> Self {
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default().trim();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/") {
            return Self {
                status: None,
                said: if status_line.is_empty() {
                    "no answer".to_owned()
                } else {
                    format!("not HTTP: {}", trim_body(status_line))
                },
            };
        }
        let status = parts.next().and_then(|s| s.parse::<u16>().ok());
        let reason = parts.next().unwrap_or_default().trim();
        let header = |name: &str| {
            lines.clone().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| trim_body(value.trim()))
            })
        };
        let from: Vec<String> = [header("Server"), header("X-Squid-Error")]
            .into_iter()
            .flatten()
            .filter(|v| !v.is_empty())
            .collect();
        let mut said = format!(
            "{} {reason}",
            status.map_or_else(|| "?".to_owned(), |s| s.to_string())
        )
        .trim()
        .to_owned();
        if !from.is_empty() {
            said.push_str(&format!(" ({})", from.join("; ")));
        }
        let words = page_words(body);
        if !words.is_empty() && !said.contains(&words) {
            said.push_str(&format!(": {words}"));
        }
        Self { status, said }
    }

    fn opened(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The words of an error page worth quoting: the first paragraph of an HTML page (else its
/// title), or a plain text body; trimmed to one line.
fn page_words(body: &str) -> String {
    let lower = body.to_ascii_lowercase();
    if !lower.contains("<html") && !lower.contains("<!doctype") {
        return trim_body(body);
    }
    let inside = |tag: &str| {
        let open = lower.find(&format!("<{tag}"))?;
        let start = open + lower[open..].find('>')? + 1;
        let end = start + lower[start..].find(&format!("</{tag}"))?;
        Some(strip_tags(&body[start..end]))
    };
    inside("p")
        .filter(|p| !p.is_empty())
        .or_else(|| inside("title"))
        .map(|words| trim_body(&words))
        .unwrap_or_default()
}

/// `html` without its tags.
fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.trim().to_owned()
}

/// `%XX` sequences decoded (a proxy URL's user and password are percent-encoded).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINYPROXY_403: &str = "HTTP/1.1 403 Filtered\r\nServer: tinyproxy/1.11.1\r\n\
        Content-Type: text/html\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" ?>\n\
        <!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.1//EN\" \"x\">\n<html>\n\
        <head><title>403 Filtered</title></head>\n<body>\n<h1>Filtered</h1>\n\
        <p>The request you made has been filtered</p>\n<hr />\n\
        <p><em>Generated by tinyproxy version 1.11.1.</em></p>\n</body>\n</html>\n";

    #[test]
    fn a_proxys_refusal_is_read_in_its_own_words() {
        assert_eq!(
            Answer::read(TINYPROXY_403).said,
            "403 Filtered (tinyproxy/1.11.1): The request you made has been filtered"
        );
        let squid = "HTTP/1.1 403 Forbidden\r\nServer: squid/5.7\r\nX-Squid-Error: ERR_ACCESS_DENIED 0\r\n\
                     Content-Type: text/html\r\n\r\n<html><head><title>ERROR: The requested URL could \
                     not be retrieved</title></head><body><p></p></body></html>";
        assert_eq!(
            Answer::read(squid).said,
            "403 Forbidden (squid/5.7; ERR_ACCESS_DENIED 0): ERROR: The requested URL could not be retrieved"
        );
        assert_eq!(
            Answer::read("HTTP/1.0 502 Bad Gateway\r\n\r\nupstream down").said,
            "502 Bad Gateway: upstream down"
        );
        assert!(Answer::read("HTTP/1.1 200 Connection established\r\n\r\n").opened());
        assert_eq!(Answer::read("").said, "no answer");
        assert_eq!(
            Answer::read("SSH-2.0-OpenSSH").said,
            "not HTTP: SSH-2.0-OpenSSH"
        );
    }

    #[test]
    fn a_proxy_is_named_without_its_password() {
        let proxy = Proxy::parse("http://us%40er:p%3Ass@proxy.corp:3128/")
            .unwrap_or_else(|| panic!("parse"));
        assert_eq!(proxy.shown, "http://proxy.corp:3128");
        assert_eq!(proxy.credentials.as_deref(), Some("us@er:p:ss"));
        let bare = Proxy::parse("proxy.corp:8080").unwrap_or_else(|| panic!("parse"));
        assert_eq!(bare.shown, "http://proxy.corp:8080");
        assert_eq!(bare.credentials, None);
        let url = |s: &str| Url::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            authority(&url("https://sso.example.com/realms/x")).as_deref(),
            Some("sso.example.com:443")
        );
        assert_eq!(
            authority(&url("https://[::2]:8443/")).as_deref(),
            Some("[::2]:8443")
        );
    }

    /// A one-shot "proxy" answering `answer` to whatever it is asked; returns its URL.
    async fn answering(answer: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        tokio::spawn(async move {
            if let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        format!("http://user:hunter22@127.0.0.1:{port}")
    }

    /// A "proxy" answering `answer` and keeping the connection open (keep-alive) until keyfed
    /// closes it; returns its URL, with `password` as its password.
    async fn answering_kept_alive(answer: String, password: &str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        tokio::spawn(async move {
            if let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(answer.as_bytes()).await;
                // Held open until keyfed hangs up.
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            }
        });
        format!("http://user:{password}@127.0.0.1:{port}")
    }

    async fn explain_via(proxy: String, wait: Duration) -> String {
        let env = ProxyEnv {
            https: Some(("HTTPS_PROXY", proxy)),
            ..ProxyEnv::default()
        };
        let target = Url::parse("https://sso.corp.test/").unwrap_or_else(|e| panic!("{e}"));
        explain_with(&target, "tunnel error: unsuccessful", &env, wait)
            .await
            .unwrap_or_default()
    }

    /// issue 11: a proxy refusing with keep-alive (Content-Length, connection left open) is
    /// quoted as soon as its answer is whole, not reported as silent after the wait; one that
    /// falls silent mid-answer is quoted as far as it got.
    #[tokio::test]
    async fn issue_11_a_kept_alive_refusal_is_quoted() {
        let page = "<html><body><p>Access denied by policy</p></body></html>";
        let answer = format!(
            "HTTP/1.1 403 Forbidden\r\nServer: squid/6.1\r\nConnection: keep-alive\r\n\
             Content-Length: {}\r\n\r\n{page}",
            page.len()
        );
        let proxy = answering_kept_alive(answer, "pw-1234").await;
        // The answer must end the read, not the wait.
        let said = explain_via(proxy, Duration::from_secs(600)).await;
        assert!(
            said.contains("refused CONNECT sso.corp.test:443: 403 Forbidden (squid/6.1): Access denied by policy"),
            "{said}"
        );
        let chunked = "HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n\
                       7\r\nblocked\r\n0\r\n\r\n"
            .to_owned();
        let said = explain_via(
            answering_kept_alive(chunked, "pw-1234").await,
            Duration::from_secs(600),
        )
        .await;
        assert!(said.contains("403 Forbidden"), "{said}");
        let partial = "HTTP/1.1 403 Forbidden\r\nServer: squid/6.1\r\n\r\nno length".to_owned();
        let said = explain_via(
            answering_kept_alive(partial, "pw-1234").await,
            Duration::from_millis(500),
        )
        .await;
        assert!(
            said.contains(
                "refused CONNECT sso.corp.test:443: 403 Forbidden (squid/6.1): no length"
            ),
            "{said}"
        );
    }

    /// issue 11: the read stops once a refusal is whole, whatever the connection does next.
    #[test]
    fn issue_11_an_answer_is_whole_by_its_length_or_last_chunk() {
        let whole = [
            "HTTP/1.1 200 Connection established\r\n\r\n",
            "HTTP/1.1 403 Forbidden\r\ncontent-length: 5\r\n\r\nno!!!",
            "HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nno!\r\n0\r\n\r\n",
            "HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ];
        for answer in whole {
            assert!(complete(answer.as_bytes()), "{answer:?}");
        }
        let partial = [
            "",
            "HTTP/1.1 200 Connection established\r\n",
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\nno!!!",
            "HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nno!\r\n",
            "HTTP/1.1 403 Forbidden\r\nContent-Length: x\r\n\r\nno",
            "HTTP/1.1 403 Forbidden\r\n\r\nuntil closed",
        ];
        for answer in partial {
            assert!(!complete(answer.as_bytes()), "{answer:?}");
        }
    }

    /// issue 11: a proxy echoing the password alone (decoded, or as the URL encodes it) does
    /// not put it into keyfed's words.
    #[tokio::test]
    async fn issue_11_a_proxy_echoing_the_password_alone_is_redacted() {
        let words = "bad password p@ss:w0rd/x or p%40ss%3Aw0rd%2Fx";
        let echo = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\n\r\n{words}",
            words.len()
        );
        let proxy = answering_kept_alive(echo, "p%40ss%3Aw0rd%2Fx").await;
        let said = explain_via(proxy, Duration::from_secs(600)).await;
        assert!(
            said.contains("403 Forbidden: bad password ** redacted ** or ** redacted **"),
            "{said}"
        );
        assert!(!said.contains("w0rd"), "{said}");
    }

    /// issue 11: a proxy refusing CONNECT is named, with its status and words, and never with
    /// its password; failures that are not a tunnel's, or with no proxy, get nothing.
    #[tokio::test]
    async fn a_refused_tunnel_names_the_proxy_and_what_it_said() {
        let proxy = answering(TINYPROXY_403).await;
        let env = ProxyEnv {
            https: Some(("HTTPS_PROXY", proxy.clone())),
            ..ProxyEnv::default()
        };
        let target = Url::parse("https://login.corp.test:8443/t/oauth2/v2.0/token")
            .unwrap_or_else(|e| panic!("{e}"));
        let port = proxy.rsplit(':').next().unwrap_or_default();
        let said = explain_with(
            &target,
            "client error (Connect): tunnel error: unsuccessful",
            &env,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            said.as_deref(),
            Some(
                format!(
                    "the proxy http://127.0.0.1:{port} (HTTPS_PROXY) refused CONNECT \
                     login.corp.test:8443: 403 Filtered (tinyproxy/1.11.1): The request you made \
                     has been filtered"
                )
                .as_str()
            )
        );
        assert!(!said.unwrap_or_default().contains("hunter22"));
        assert_eq!(
            explain_with(&target, "connection refused", &env, Duration::from_secs(5)).await,
            None
        );
        assert_eq!(
            explain_with(
                &target,
                "tunnel error: unsuccessful",
                &ProxyEnv::default(),
                Duration::from_secs(5)
            )
            .await,
            None
        );
        let unreachable = explain_with(
            &target,
            "client error (Connect): tunnel error: failed to create underlying connection",
            &env,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            unreachable,
            Some(format!(
                "the proxy http://127.0.0.1:{port} (HTTPS_PROXY) could not be reached"
            ))
        );
    }
}
