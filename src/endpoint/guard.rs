//! The check every request passes before any face sees it: the defence against DNS rebinding.
//!
//! A web page the host's user opens can rebind its own name to 127.0.0.1; its requests to
//! keyfed are then same-origin, need no CORS preflight, and may carry any header an SDK sends —
//! so the faces' own headers and tokens do not stop it. What does: the browser always sends the
//! page's name in `Host`, and fetches carry `Origin` or `Sec-Fetch-*`. So a request is served
//! only when it has exactly one `Host`, naming this endpoint — an IP address it listens on,
//! `localhost`, or a name in `[endpoint] allowed_hosts` (for `169.254.169.254`-style setups) —
//! no absolute-form target (`GET http://name/…`, whose name would take precedence over `Host`),
//! and no `Origin` or `Sec-Fetch-*` header. SDKs send none of these. `X-Forwarded-For` marks a
//! request relayed by a proxy (an SSRF through some application), never an SDK's: refused too.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, header};

use super::refusal::Refusal;

/// The names and addresses a request's `Host` may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosts {
    /// Lower-case names without a trailing dot, `localhost` among them.
    names: Vec<String>,
    ips: Vec<IpAddr>,
}

impl Hosts {
    /// `localhost`, every listen address's IP, and `allowed` (names or IP literals).
    pub fn new(listen: impl IntoIterator<Item = SocketAddr>, allowed: &[String]) -> Self {
        let mut hosts = Self {
            names: vec!["localhost".to_owned()],
            ips: listen.into_iter().map(|a| unmap(a.ip())).collect(),
        };
        for entry in allowed {
            match parse_ip(entry) {
                Some(ip) => hosts.ips.push(ip),
                None => hosts.names.push(normalise(entry)),
            }
        }
        hosts
    }

    /// Whether `host` (a `Host` header's value, port or not) names this endpoint. `local` is
    /// the address the connection arrived on (a wildcard listener's real address).
    fn allows(&self, host: &str, local: SocketAddr) -> bool {
        let name = strip_port(host);
        match parse_ip(name) {
            Some(ip) => ip == unmap(local.ip()) || self.ips.contains(&ip),
            // Compared in place: this runs for every request.
            None => {
                let name = name.trim_end_matches('.');
                self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
            }
        }
    }
}

/// Refuses browser-made, proxied and absolute-form requests, and requests whose `Host` names
/// something else. `absolute` is the authority of an absolute-form request target.
pub fn check(
    hosts: &Hosts,
    absolute: Option<&str>,
    headers: &HeaderMap,
    local: SocketAddr,
) -> Result<(), Refusal> {
    if headers.contains_key("x-forwarded-for") {
        return Err(Refusal::Forwarded);
    }
    let from_browser = headers.contains_key(header::ORIGIN)
        || headers
            .keys()
            .any(|name| name.as_str().starts_with("sec-fetch-"));
    if from_browser {
        return Err(Refusal::FromBrowser);
    }
    if let Some(authority) = absolute {
        return Err(Refusal::ForeignHost(shown(authority)));
    }
    if headers.get_all(header::HOST).iter().count() > 1 {
        return Err(Refusal::ForeignHost("(more than one)".to_owned()));
    }
    let host = headers
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("(not text)"));
    match host {
        Some(host) if hosts.allows(host, local) => Ok(()),
        Some(host) => Err(Refusal::ForeignHost(shown(host))),
        None => Err(Refusal::ForeignHost("(none)".to_owned())),
    }
}

/// At most 100 characters of a foreign `Host`, for the refusal's text.
fn shown(host: &str) -> String {
    host.chars().take(100).collect()
}

/// `name` without a `:port` suffix; `[v6]:port` and `[v6]` as the bare `v6`.
fn strip_port(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        // `[ip]` or `[ip]:port`; anything else after the bracket keeps the whole text, which
        // then names nothing.
        return match rest.split_once(']') {
            Some((ip, "")) => ip,
            Some((ip, port))
                if port
                    .strip_prefix(':')
                    .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit())) =>
            {
                ip
            }
            _ => host,
        };
    }
    match host.rsplit_once(':') {
        // More than one colon: a bare IPv6 address, which has no port.
        Some((name, port)) if !name.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim_start_matches('[').trim_end_matches(']');
    text.parse().ok().map(unmap)
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn normalise(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn local() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9911))
    }

    fn hosts() -> Hosts {
        Hosts::new(
            [local(), "[::1]:9911".parse().unwrap_or(local())],
            &[
                "metadata.google.internal".to_owned(),
                "169.254.169.254".to_owned(),
            ],
        )
    }

    #[test]
    fn hosts_naming_the_endpoint_pass() {
        for host in [
            "127.0.0.1:9911",
            "127.0.0.1",
            "[::1]:9911",
            "[::1]",
            "localhost:9911",
            "LOCALHOST",
            "localhost.",
            "169.254.169.254",
            "169.254.169.254:80",
            "metadata.google.internal",
            "Metadata.Google.Internal.:80",
        ] {
            let h = headers(&[("host", host)]);
            assert_eq!(check(&hosts(), None, &h, local()), Ok(()), "{host}");
        }
    }

    /// Issue 7: a rebound name, a missing Host, and a name that merely contains an allowed one.
    #[test]
    fn foreign_hosts_are_refused() {
        for host in [
            "evil.example:9911",
            "evil.example",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "10.0.0.1",
            "metadata.google.internal.evil.example",
            "[127.0.0.1].evil",
            "[::1]x",
        ] {
            let h = headers(&[("host", host)]);
            assert_eq!(
                check(&hosts(), None, &h, local()),
                Err(Refusal::ForeignHost(host.to_owned())),
                "{host}"
            );
        }
        assert!(matches!(
            check(&hosts(), None, &HeaderMap::new(), local()),
            Err(Refusal::ForeignHost(_))
        ));
    }

    /// Issue 7 review: two Hosts, an absolute-form target, a proxied request.
    #[test]
    fn ambiguous_and_proxied_requests_are_refused() {
        let mut two = headers(&[("host", "127.0.0.1")]);
        two.append("host", HeaderValue::from_static("evil.example"));
        assert!(matches!(
            check(&hosts(), None, &two, local()),
            Err(Refusal::ForeignHost(_))
        ));
        let good = headers(&[("host", "127.0.0.1")]);
        assert_eq!(
            check(&hosts(), Some("evil.example"), &good, local()),
            Err(Refusal::ForeignHost("evil.example".to_owned()))
        );
        let proxied = headers(&[("host", "127.0.0.1"), ("x-forwarded-for", "192.0.2.1")]);
        assert_eq!(
            check(&hosts(), None, &proxied, local()),
            Err(Refusal::Forwarded)
        );
    }

    #[test]
    fn a_wildcard_listeners_real_address_passes() {
        let wildcard = Hosts::new([SocketAddr::from(([0, 0, 0, 0], 9911))], &[]);
        let arrived = SocketAddr::from(([192, 0, 2, 7], 9911));
        let h = headers(&[("host", "192.0.2.7:9911")]);
        assert_eq!(check(&wildcard, None, &h, arrived), Ok(()));
    }

    /// Issue 7: what browsers add to every fetch is refused even with a good Host.
    #[test]
    fn browser_requests_are_refused() {
        for extra in [
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-site", "same-origin"),
        ] {
            let h = headers(&[("host", "127.0.0.1:9911"), extra]);
            assert_eq!(
                check(&hosts(), None, &h, local()),
                Err(Refusal::FromBrowser),
                "{extra:?}"
            );
        }
    }
}
