//! The one way keyfed's providers build their outbound HTTP client, and check the URLs they are
//! given. TLS is rustls with the host's trust store (rustls-platform-verifier) plus an optional
//! extra CA bundle; `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` are honoured as reqwest reads them;
//! redirects are not followed (a token endpoint that redirects is misconfigured, and following it
//! would send credentials elsewhere); plain `http://` is accepted only for loopback hosts unless
//! the caller explicitly allows it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::{Host, Url};

/// How an outbound client is built; one per configured upstream.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Extra PEM CA bundle trusted in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// Limit on a whole request, response body included.
    pub timeout: Duration,
    /// Allow plain `http://` to hosts that are not loopback.
    pub allow_insecure_http: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            allow_insecure_http: false,
        }
    }
}

/// Why an HTTP client could not be built or a URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("cannot read CA file {}: {source}", path.display())]
    CaFileRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA file {} holds no usable PEM certificate{}", path.display(), detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    CaFileInvalid {
        path: PathBuf,
        detail: Option<String>,
    },
    #[error("cannot build the HTTP client: {0}")]
    Build(reqwest::Error),
    #[error(
        "{url} uses plain http:// to a host that is not loopback; use https:// or set allow_insecure_http = true"
    )]
    InsecureUrl { url: String },
    #[error("{url}: only https:// (or http:// to loopback) URLs are supported")]
    UnsupportedScheme { url: String },
}

/// Builds the client every request to one upstream goes through.
pub fn build_client(settings: &HttpSettings) -> Result<reqwest::Client, HttpSetupError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("keyfed/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        // Refreshes are minutes apart: a pooled idle connection would only keep a reaper timer
        // waking the idle daemon.
        .pool_max_idle_per_host(0)
        .https_only(false);
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).map_err(|source| HttpSetupError::CaFileRead {
            path: path.clone(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            HttpSetupError::CaFileInvalid {
                path: path.clone(),
                detail: Some(e.to_string()),
            }
        })?;
        if certs.is_empty() {
            return Err(HttpSetupError::CaFileInvalid {
                path: path.clone(),
                detail: None,
            });
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(HttpSetupError::Build)
}

/// Refuses URLs that would send credentials in the clear to another host.
pub fn check_url(url: &Url, allow_insecure_http: bool) -> Result<(), HttpSetupError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(url) => Ok(()),
        "http" => Err(HttpSetupError::InsecureUrl {
            url: url.to_string(),
        }),
        _ => Err(HttpSetupError::UnsupportedScheme {
            url: url.to_string(),
        }),
    }
}

/// True when the URL's host is `localhost`, 127.0.0.0/8 or `::1`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// A response body cut down to something fit for one line of an error message.
pub fn trim_body(body: &str) -> String {
    const MAX: usize = 300;
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= MAX {
        flat
    } else {
        let cut: String = flat.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_url(&url("https://sso.example.com/realms/x"), false).is_ok());
        assert!(check_url(&url("http://127.0.0.1:8080/realms/x"), false).is_ok());
        assert!(check_url(&url("http://127.9.9.9/"), false).is_ok());
        assert!(check_url(&url("http://[::1]:80/"), false).is_ok());
        assert!(check_url(&url("http://LocalHost/"), false).is_ok());
        let err = check_url(&url("http://sso.example.com/"), false);
        assert!(
            matches!(err, Err(HttpSetupError::InsecureUrl { .. })),
            "{err:?}"
        );
        assert!(check_url(&url("http://sso.example.com/"), true).is_ok());
        assert!(check_url(&url("ftp://127.0.0.1/"), true).is_err());
    }

    #[test]
    fn trim_body_flattens_and_cuts() {
        assert_eq!(trim_body("a\n  b\tc"), "a b c");
        let long = "x".repeat(1000);
        let t = trim_body(&long);
        assert!(t.ends_with('…') && t.chars().count() == 301);
    }

    #[test]
    fn missing_ca_file_is_named() {
        let settings = HttpSettings {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..HttpSettings::default()
        };
        let err = build_client(&settings).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("/nonexistent/ca.pem")),
            "{err:?}"
        );
    }
}

/// Upper bound on any upstream response body keyfed reads.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Why a response body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}", error_chain(.0))]
    Transport(reqwest::Error),
    #[error("the response body exceeds {0} bytes")]
    TooLarge(usize),
}

impl ReadError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Transport(e) if e.is_timeout())
    }
}

/// Reads a whole response body, refusing to buffer more than `limit` bytes.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error and all its sources on one line, `outer: inner: innermost`, without repeats.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}
