//! The one way keyfed's providers build their outbound HTTP client, and check the URLs they are
//! given. TLS is rustls with the host's trust store (rustls-platform-verifier) plus an optional
//! extra CA bundle; `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (upper or lower
//! case) are honoured as reqwest reads them, except that loopback hosts (`localhost`,
//! 127.0.0.0/8, `::1`) are never reached through a proxy: a loopback issuer's requests, client
//! secret included, stay on the host; redirects are not followed (a token endpoint that
//! redirects is misconfigured, and following it would send credentials elsewhere); plain
//! `http://` is accepted only for loopback hosts unless the caller explicitly allows it; response
//! bodies are read through [`read_limited`].

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
    /// With reqwest's cause, which its own message ("builder error") leaves out: a host
    /// without CA certificates is otherwise unexplained (issue 13).
    #[error("cannot build the HTTP client: {}{}", error_chain(.0), no_roots_hint(.0))]
    Build(reqwest::Error),
    #[error(
        "{url} uses plain http:// to a host that is not loopback; use https:// or set allow_insecure_http = true"
    )]
    InsecureUrl { url: String },
    #[error("{url}: only https:// (or http:// to loopback) URLs are supported")]
    UnsupportedScheme { url: String },
    /// The variable's value is not quoted: a proxy URL may hold a password.
    #[error("the proxy in {variable} is not a URL keyfed can use")]
    Proxy { variable: &'static str },
}

/// What to do when the system trust store is empty (rustls-platform-verifier's refusal): a
/// minimal Debian install lacks the `ca-certificates` package.
fn no_roots_hint(error: &reqwest::Error) -> &'static str {
    if error_chain(error).contains("No CA certificates were loaded from the system") {
        " (install the system's CA certificates, e.g. Debian's ca-certificates package, or name a bundle with ca_file)"
    } else {
        ""
    }
}

/// What [`no_proxy`] always adds to `NO_PROXY`: the loopback hosts.
pub const LOOPBACK_NO_PROXY: &str = "localhost,127.0.0.0/8,::1";

/// The proxies the environment asks for, read the way reqwest and the AWS SDK read them
/// (hyper-util's rules): the upper-case name first, `ALL_PROXY` for a scheme without its own,
/// nothing at all under CGI (`REQUEST_METHOD` set, where `HTTP_PROXY` may come from a request
/// header). Each entry is `(variable, proxy URL)`. `Debug` shows the URLs without their
/// passwords.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct ProxyEnv {
    pub http: Option<(&'static str, String)>,
    pub https: Option<(&'static str, String)>,
    /// `NO_PROXY` as set (without the loopback hosts).
    pub no_proxy: String,
}

impl ProxyEnv {
    pub fn read(env: &dyn Fn(&str) -> Option<String>) -> Self {
        if env("REQUEST_METHOD").is_some() {
            return Self::default();
        }
        let first = |names: [&'static str; 2]| {
            names
                .into_iter()
                .find_map(|name| env(name).map(|value| (name, value)))
                .filter(|(_, value)| !value.trim().is_empty())
        };
        let all = first(["ALL_PROXY", "all_proxy"]);
        Self {
            http: first(["HTTP_PROXY", "http_proxy"]).or_else(|| all.clone()),
            https: first(["HTTPS_PROXY", "https_proxy"]).or(all),
            no_proxy: first(["NO_PROXY", "no_proxy"])
                .map(|(_, v)| v)
                .unwrap_or_default(),
        }
    }
}

impl std::fmt::Debug for ProxyEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |entry: &Option<(&'static str, String)>| {
            entry
                .as_ref()
                .map(|(variable, url)| (*variable, without_password(url)))
        };
        f.debug_struct("ProxyEnv")
            .field("http", &shown(&self.http))
            .field("https", &shown(&self.https))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// A proxy URL with its password (whatever follows the first `:` of what precedes the last
/// `@`) replaced by `***`; read by hand, not parsed, so a value no parser accepts is hidden too.
fn without_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    let scheme = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}{user}:***@{host}"),
        None => format!("{scheme}{userinfo}@{host}"),
    }
}

/// `NO_PROXY` from the environment with the loopback hosts added.
pub fn no_proxy(env_no_proxy: &str) -> String {
    let env_no_proxy = env_no_proxy.trim().trim_end_matches(',');
    if env_no_proxy.is_empty() {
        LOOPBACK_NO_PROXY.to_owned()
    } else {
        format!("{env_no_proxy},{LOOPBACK_NO_PROXY}")
    }
}

/// The environment's proxies as reqwest proxies that skip [`no_proxy`]'s hosts.
fn proxies(env: &ProxyEnv) -> Result<Vec<reqwest::Proxy>, HttpSetupError> {
    let bypass = reqwest::NoProxy::from_string(&no_proxy(&env.no_proxy));
    let mut proxies = Vec::new();
    if let Some((variable, url)) = &env.http {
        let proxy =
            reqwest::Proxy::http(url.as_str()).map_err(|_| HttpSetupError::Proxy { variable })?;
        proxies.push(proxy.no_proxy(bypass.clone()));
    }
    if let Some((variable, url)) = &env.https {
        let proxy =
            reqwest::Proxy::https(url.as_str()).map_err(|_| HttpSetupError::Proxy { variable })?;
        proxies.push(proxy.no_proxy(bypass));
    }
    Ok(proxies)
}

/// Builds the client every request to one upstream goes through.
pub fn build_client(settings: &HttpSettings) -> Result<reqwest::Client, HttpSetupError> {
    build_client_with(settings, &ProxyEnv::read(&|name| std::env::var(name).ok()))
}

/// [`build_client`] with the proxy settings given rather than read from the environment.
pub fn build_client_with(
    settings: &HttpSettings,
    proxy_env: &ProxyEnv,
) -> Result<reqwest::Client, HttpSetupError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("keyfed/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        // Refreshes are minutes apart: a pooled idle connection would only keep a reaper timer
        // waking the idle daemon.
        .pool_max_idle_per_host(0)
        .https_only(false)
        // reqwest's own reading of the environment cannot exempt loopback; these proxies do.
        .no_proxy();
    for proxy in proxies(proxy_env)? {
        builder = builder.proxy(proxy);
    }
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

    /// issue 13 (review): a host without CA certificates gets the hint to install them. The
    /// hint matches rustls-platform-verifier's own English, so this runs the real library on
    /// an empty trust store — in a child process of this test binary, whose environment alone
    /// says SSL_CERT_FILE=/dev/null — and fails when a dependency bump changes the wording.
    #[test]
    fn an_empty_trust_store_gets_the_ca_certificates_hint() {
        const CHILD: &str = "KEYFED_TEST_EMPTY_TRUST_STORE";
        if std::env::var_os(CHILD).is_some() {
            let error = build_client(&HttpSettings::default())
                .err()
                .unwrap_or_else(|| panic!("a client without any root certificate was built"))
                .to_string();
            assert!(
                error.contains("No CA certificates were loaded from the system")
                    && error.ends_with(
                        " (install the system's CA certificates, e.g. Debian's \
                         ca-certificates package, or name a bundle with ca_file)"
                    ),
                "{error}"
            );
            return;
        }
        let empty = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
        let child = std::process::Command::new(exe)
            .args([
                "--exact",
                "http::tests::an_empty_trust_store_gets_the_ca_certificates_hint",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env("SSL_CERT_FILE", "/dev/null")
            .env("SSL_CERT_DIR", empty.path())
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let stdout = String::from_utf8_lossy(&child.stdout);
        assert!(
            child.status.success() && stdout.contains("1 passed"),
            "the child test failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&child.stderr)
        );
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

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> ProxyEnv {
        ProxyEnv::read(&|name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn proxies_are_read_like_reqwest_reads_them() {
        let env = env_of(&[
            ("http_proxy", "http://lower:1"),
            ("HTTP_PROXY", "http://upper:1"),
            ("all_proxy", "http://all:1"),
            ("no_proxy", "corp.example"),
        ]);
        assert_eq!(env.http, Some(("HTTP_PROXY", "http://upper:1".to_owned())));
        assert_eq!(env.https, Some(("all_proxy", "http://all:1".to_owned())));
        assert_eq!(
            no_proxy(&env.no_proxy),
            format!("corp.example,{LOOPBACK_NO_PROXY}")
        );
        assert_eq!(no_proxy(""), LOOPBACK_NO_PROXY);
        // Under CGI, HTTP_PROXY may come from a request's "Proxy:" header (httpoxy).
        let cgi = env_of(&[("REQUEST_METHOD", "GET"), ("HTTPS_PROXY", "http://p:1")]);
        assert_eq!(cgi, ProxyEnv::default());
        let empty = env_of(&[("HTTPS_PROXY", " ")]);
        assert_eq!(empty.https, None);
    }

    /// issue 11: a proxy URL's password never reaches Debug output.
    #[test]
    fn issue_11_proxy_env_debug_hides_passwords() {
        let env = ProxyEnv {
            http: Some(("HTTP_PROXY", "http://bob:s3cr3t%21@proxy:3128/".to_owned())),
            https: Some(("https_proxy", "al:pa/ss@word@[bad".to_owned())),
            no_proxy: "corp.example".to_owned(),
        };
        for shown in [format!("{env:?}"), format!("{env:#?}")] {
            assert!(
                !shown.contains("s3cr3t") && !shown.contains("pa/ss"),
                "{shown}"
            );
            assert!(shown.contains("http://bob:***@proxy:3128/"), "{shown}");
            assert!(
                shown.contains("al:***@[bad") && shown.contains("corp.example"),
                "{shown}"
            );
        }
        assert_eq!(without_password("http://proxy:3128"), "http://proxy:3128");
        assert_eq!(without_password("http://tok@proxy:1"), "http://tok@proxy:1");
    }

    #[test]
    fn an_unusable_proxy_is_named_not_quoted() {
        let env = ProxyEnv {
            https: Some(("HTTPS_PROXY", "http://user:pa ss@[bad".to_owned())),
            ..ProxyEnv::default()
        };
        let err = build_client_with(&HttpSettings::default(), &env)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("HTTPS_PROXY") && !err.contains("pa ss"),
            "{err}"
        );
    }

    /// A TCP listener that counts the connections it gets and answers each with `status`.
    async fn counting_server(status: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU32>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = std::sync::Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (port, count)
    }

    /// issue 7: with HTTP(S)_PROXY set and no NO_PROXY, a loopback issuer was reached through
    /// the proxy; other hosts still are, and NO_PROXY still applies to them.
    #[tokio::test]
    async fn loopback_hosts_bypass_the_proxy_others_do_not() {
        let (proxy_port, proxied) = counting_server(502).await;
        let (server_port, direct) = counting_server(204).await;
        let proxy = format!("http://127.0.0.1:{proxy_port}");
        let env = ProxyEnv {
            http: Some(("HTTP_PROXY", proxy.clone())),
            https: Some(("HTTPS_PROXY", proxy)),
            no_proxy: "direct.invalid".to_owned(),
        };
        let settings = HttpSettings {
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            ..HttpSettings::default()
        };
        let client = build_client_with(&settings, &env).unwrap_or_else(|e| panic!("{e}"));
        use std::sync::atomic::Ordering::SeqCst;
        for host in ["127.0.0.1", "localhost", "127.1.2.3"] {
            let response = client
                .get(format!("http://{host}:{server_port}/"))
                .send()
                .await;
            // 127.1.2.3 may not be routed to the listener on 127.0.0.1; it must not reach the
            // proxy either way.
            if host != "127.1.2.3" {
                let status = response.map(|r| r.status().as_u16()).ok();
                assert_eq!(status, Some(204), "{host}");
            }
        }
        assert_eq!(
            proxied.load(SeqCst),
            0,
            "a loopback request went to the proxy"
        );
        assert!(direct.load(SeqCst) >= 2);

        let via_proxy = client
            .get("http://sso.example.com/realms/x")
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok();
        assert_eq!(via_proxy, Some(502));
        assert_eq!(proxied.load(SeqCst), 1);
        // NO_PROXY still applies to other hosts: no proxy, and the name does not resolve.
        assert!(client.get("http://direct.invalid/").send().await.is_err());
        assert_eq!(proxied.load(SeqCst), 1);
    }

    #[test]
    fn tls_problems_are_read_from_rustls_words() {
        let cases = [
            (
                "invalid peer certificate: UnknownIssuer",
                TlsProblem::UnknownCa,
            ),
            (
                "invalid peer certificate: certificate expired: verification time 5 (UNIX), but certificate is not valid after 4 (1 seconds ago)",
                TlsProblem::Expired,
            ),
            (
                "invalid peer certificate: certificate not valid for name \"localhost\"; certificate is only valid for elsewhere.example",
                TlsProblem::WrongName,
            ),
            ("invalid peer certificate: Revoked", TlsProblem::Revoked),
            (
                "invalid peer certificate: BadSignature",
                TlsProblem::OtherCa,
            ),
            (
                "received corrupt message of type InvalidContentType",
                TlsProblem::NotTls,
            ),
        ];
        for (detail, problem) in cases {
            assert_eq!(TlsProblem::of(detail), Some(problem), "{detail}");
        }
        assert_eq!(TlsProblem::of("connection refused"), None);
        let hint = TransportHint {
            upstream: "STS",
            server: "the endpoint's",
            private_cas: "a private CA",
        };
        assert!(hint.hint(cases[0].0, false).contains("set ca_file"));
        assert!(hint.hint(cases[1].0, false).contains("expired"));
        assert_eq!(hint.hint("connection refused", false), "");
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
    #[error("the answer is larger than {}, the most keyfed reads", size(*.0))]
    TooLarge(usize),
}

impl ReadError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Transport(e) if e.is_timeout())
    }
}

/// What an error says to check when an upstream could not be reached at all: the network path
/// after a timeout, the trust of the server's certificate after a TLS failure. Each provider
/// names its upstream; the words are the same for all.
#[derive(Debug, Clone, Copy)]
pub struct TransportHint {
    /// Where the network path leads: "STS", "Google", "the authority host".
    pub upstream: &'static str,
    /// Whose certificate: "the endpoint's", "the authority host's".
    pub server: &'static str,
    /// Where an untrusted certificate usually comes from: "a VPC endpoint's private CA, …".
    pub private_cas: &'static str,
}

impl TransportHint {
    /// The hint line (with its leading line break) for a failure described by `detail`, or
    /// nothing when neither case applies.
    pub fn hint(&self, detail: &str, timed_out: bool) -> String {
        if timed_out {
            format!(
                "\n  hint: the call timed out; check the network path to {} (proxy: HTTPS_PROXY / NO_PROXY) or raise the timeout",
                self.upstream
            )
        } else if let Some(problem) = TlsProblem::of(detail) {
            format!("\n  hint: {}", self.tls_fix(problem))
        } else {
            String::new()
        }
    }

    /// What to do about a TLS failure of this upstream.
    pub fn tls_fix(&self, problem: TlsProblem) -> String {
        let server = self.server;
        match problem {
            TlsProblem::UnknownCa | TlsProblem::OtherCa | TlsProblem::OtherCertificate => format!(
                "{server} TLS certificate is not trusted; set ca_file to the CA bundle that signs it ({})",
                self.private_cas
            ),
            TlsProblem::Expired => format!(
                "{server} TLS certificate (or one in its chain) has expired: renew it; if it has not, this host's clock is wrong (timedatectl)"
            ),
            TlsProblem::NotYetValid => format!(
                "{server} TLS certificate is not valid yet: check this host's clock (timedatectl)"
            ),
            TlsProblem::WrongName => format!(
                "{server} TLS certificate does not name the host in the URL: use a URL whose host the certificate names, or reissue the certificate with this host in its subjectAltName"
            ),
            TlsProblem::Revoked => {
                format!("{server} TLS certificate has been revoked: reissue it")
            }
            TlsProblem::NotForServers => format!(
                "{server} TLS certificate is not issued for TLS servers (its extended key usage lacks serverAuth): reissue it for server authentication"
            ),
            TlsProblem::NotTls => format!(
                "{} does not speak TLS on this port: check the URL's scheme (https) and port",
                self.upstream
            ),
        }
    }
}

/// What went wrong in a TLS handshake, read from rustls's words in a transport failure's
/// detail (`invalid peer certificate: UnknownIssuer`, `certificate expired: …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProblem {
    /// The chain does not lead to a CA this host trusts (or the server sent no intermediates).
    UnknownCa,
    /// The certificate names a trusted CA as its issuer, but that CA's key did not sign it: a
    /// different CA of the same name (one re-created, or a test CA).
    OtherCa,
    /// The certificate, or one in its chain, has expired.
    Expired,
    /// Not valid yet: usually this host's clock.
    NotYetValid,
    /// Issued for other names than the URL's host.
    WrongName,
    Revoked,
    /// A certificate not meant for TLS servers (extended key usage).
    NotForServers,
    /// Anything else wrong with the certificate, in rustls's words.
    OtherCertificate,
    /// Something other than TLS answered (plain HTTP on the port).
    NotTls,
}

impl TlsProblem {
    /// The problem a transport failure's detail describes, if it is a TLS one.
    pub fn of(detail: &str) -> Option<Self> {
        let has = |words: &[&str]| words.iter().any(|w| detail.contains(w));
        Some(if has(&["UnknownIssuer", "UnknownCA"]) {
            Self::UnknownCa
        } else if has(&["not valid for name", "NotValidForName"]) {
            Self::WrongName
        } else if has(&["not valid yet", "NotValidYet"]) {
            Self::NotYetValid
        } else if has(&["BadSignature"]) {
            Self::OtherCa
        } else if has(&["RevocationList", "revocation list"]) {
            Self::OtherCertificate
        } else if has(&["certificate expired", "Expired"]) {
            Self::Expired
        } else if has(&["Revoked"]) {
            Self::Revoked
        } else if has(&["InvalidPurpose", "extended key usage"]) {
            Self::NotForServers
        } else if has(&["certificate"]) {
            Self::OtherCertificate
        } else if has(&["InvalidContentType", "corrupt message"]) {
            Self::NotTls
        } else {
            return None;
        })
    }

    /// The problem in a few words.
    pub fn cause(self) -> &'static str {
        match self {
            Self::UnknownCa => "the certificate chain does not lead to a CA this host trusts",
            Self::OtherCa => {
                "the certificate names a CA this host trusts, but another CA of that name signed it"
            }
            Self::Expired => "the certificate (or one in its chain) has expired",
            Self::NotYetValid => "the certificate is not valid yet",
            Self::WrongName => "the certificate is for other host names",
            Self::Revoked => "the certificate has been revoked",
            Self::NotForServers => "the certificate is not for TLS servers",
            Self::OtherCertificate => "the certificate was refused",
            Self::NotTls => "the server does not speak TLS on this port",
        }
    }
}

/// Why a request to an upstream got no answer keyfed could read, in words that do not repeat
/// the URL (the caller's error names it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    pub timed_out: bool,
    pub detail: String,
}

/// Sends `builder` and reads the whole answer, at most `limit` bytes: its status and body. A
/// timeout reads as "timed out after `timeout`" (the request's own limit).
pub async fn send_and_read(
    builder: reqwest::RequestBuilder,
    limit: usize,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), SendFailure> {
    send_and_read_answer(builder, limit, timeout)
        .await
        .map(|answer| (answer.status, answer.body))
}

/// A whole answer as [`send_and_read_answer`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The server's `Date` header as sent (its clock, for `keyfed doctor`'s skew check).
    pub date: Option<String>,
    pub body: Vec<u8>,
}

/// [`send_and_read`], keeping the server's `Date` header too.
pub async fn send_and_read_answer(
    builder: reqwest::RequestBuilder,
    limit: usize,
    timeout: Duration,
) -> Result<Answer, SendFailure> {
    let failure = |e: ReadError| SendFailure {
        timed_out: e.is_timeout(),
        detail: if e.is_timeout() {
            format!("timed out after {} s", timeout.as_secs_f32())
        } else {
            match e {
                // reqwest's message names the URL, which the caller's error says already.
                ReadError::Transport(e) => error_chain(&e.without_url()),
                other => other.to_string(),
            }
        },
    };
    let (client, request) = builder.build_split();
    let request = request.map_err(|e| failure(ReadError::Transport(e)))?;
    let url = request.url().clone();
    let response = match client.execute(request).await {
        Ok(response) => response,
        Err(e) => {
            let mut failed = failure(ReadError::Transport(e));
            // A proxy's refusal reaches here as "tunnel error: unsuccessful": name the proxy
            // and what it said.
            if let Some(proxy) = crate::proxy::explain(&url, &failed.detail, timeout).await {
                failed.detail = format!("{}: {proxy}", failed.detail);
            }
            return Err(failed);
        }
    };
    let status = response.status().as_u16();
    let date = response
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_limited(response, limit).await.map_err(failure)?;
    Ok(Answer { status, date, body })
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

/// `n` bytes as people say it: "1 MiB", "64 KiB", "1000 bytes".
fn size(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
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
