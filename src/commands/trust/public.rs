//! Whether a cloud can fetch the issuer's discovery document and keys from the internet. Every
//! cloud takes an https issuer only (AWS, Entra ID and Google alike: Google's `issuerUri` must
//! start with `https://`, even when the provider is given the keys); AWS and Entra ID must also
//! reach it, while Google can take the keys uploaded instead (`--jwk-json-path`, `jwks_json`).
//! Judged from the issuer URL alone, without a DNS lookup: plain http is not https
//! ([`not_https`]); an address no one can route to from outside (loopback, private, link-local,
//! unique-local, shared, unspecified), or a host name that only a local network resolves (one
//! label, or a special-use or internal top-level name) is not reachable ([`not_reachable`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Why a cloud cannot reach `issuer` or would not take it, or `None` when it looks public:
/// [`not_https`] and [`not_reachable`] together.
pub(crate) fn not_public(issuer: &str) -> Option<String> {
    let why: Vec<String> = [not_https(issuer), not_reachable(issuer)]
        .into_iter()
        .flatten()
        .collect();
    (!why.is_empty()).then(|| why.join(", and "))
}

/// Why `issuer` is not an https URL, which every cloud requires, or `None` when it is.
pub(crate) fn not_https(issuer: &str) -> Option<String> {
    match Url::parse(issuer) {
        Err(_) => Some("it is not a URL".to_owned()),
        Ok(url) if url.scheme() != "https" => {
            Some(format!("it is served over {}, not https", url.scheme()))
        }
        Ok(_) => None,
    }
}

/// Why the internet cannot reach `issuer`'s host, or `None` when it looks reachable (or is not
/// a URL at all, which [`not_https`] says).
pub(crate) fn not_reachable(issuer: &str) -> Option<String> {
    let url = Url::parse(issuer).ok()?;
    match url.host() {
        None => Some("it names no host".to_owned()),
        Some(Host::Ipv4(ip)) => private_ip(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => private_ip(IpAddr::V6(ip)),
        Some(Host::Domain(name)) => local_name(name),
    }
}

fn private_ip(ip: IpAddr) -> Option<String> {
    let kind = match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_kind(v4),
            None => v6_kind(v6),
        },
    }?;
    Some(format!("{ip} is a {kind} address"))
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else {
        None
    }
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if first & 0xfe00 == 0xfc00 {
        Some("unique-local")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else {
        None
    }
}

/// Top-level names that resolve only on a local network (RFC 6761, 6762, 8375, and ICANN's
/// `.internal`).
const LOCAL_SUFFIXES: [&str; 5] = ["local", "internal", "localhost", "home.arpa", "test"];

fn local_name(name: &str) -> Option<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if !name.contains('.') {
        return Some(format!(
            "{name} is a single-label host name, which only a local network resolves"
        ));
    }
    LOCAL_SUFFIXES
        .iter()
        .find(|suffix| name.ends_with(&format!(".{suffix}")))
        .map(|suffix| format!("{name} is under .{suffix}, which only a local network resolves"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_issuers_are_recognised() {
        for issuer in [
            "https://sso.example.com/realms/infra",
            "https://sso.example.com:8443/realms/infra",
            "https://8.8.8.8/realms/x",
            "https://[2001:db8::1]/realms/x",
        ] {
            assert_eq!(not_public(issuer), None, "{issuer}");
        }
    }

    #[test]
    fn private_issuers_say_why() {
        let cases = [
            ("http://sso.example.com/realms/infra", "served over http"),
            (
                "http://127.0.0.1:8080/realms/infra",
                "127.0.0.1 is a loopback address",
            ),
            ("https://10.1.2.3/realms/infra", "private"),
            ("https://172.16.0.1/realms/infra", "private"),
            ("https://192.168.1.1/realms/infra", "private"),
            ("https://169.254.169.254/realms/infra", "link-local"),
            ("https://100.64.0.1/realms/infra", "shared"),
            ("https://[::1]/realms/infra", "loopback"),
            ("https://[fd00::1]/realms/infra", "unique-local"),
            ("https://[fe80::1]/realms/infra", "link-local"),
            ("https://[::ffff:10.0.0.1]/realms/infra", "private"),
            ("https://keycloak/realms/infra", "single-label"),
            ("https://localhost:8443/realms/infra", "single-label"),
            ("https://sso.corp.local/realms/infra", "under .local"),
            ("https://sso.corp.internal/realms/infra", "under .internal"),
            ("https://sso.home.arpa/realms/infra", "under .home.arpa"),
            ("not a url", "not a URL"),
        ];
        for (issuer, why) in cases {
            let said = not_public(issuer).unwrap_or_default();
            assert!(said.contains(why), "{issuer}: {said:?} lacks {why:?}");
        }
        let both = not_public("http://127.0.0.1/r").unwrap_or_default();
        assert!(both.contains("http") && both.contains("loopback"), "{both}");
    }

    /// Issue 12: plain http (refused by every cloud) and an unreachable host (which Google can
    /// live with, given the keys) are told apart.
    #[test]
    fn not_https_and_not_reachable_are_separate() {
        let http_public = "http://sso.example.com/realms/infra";
        assert!(not_https(http_public).is_some_and(|w| w.contains("not https")));
        assert_eq!(not_reachable(http_public), None);
        let https_private = "https://sso.corp.internal/realms/infra";
        assert_eq!(not_https(https_private), None);
        assert!(not_reachable(https_private).is_some_and(|w| w.contains(".internal")));
        let neither = "http://127.0.0.1:8080/realms/infra";
        assert!(not_https(neither).is_some() && not_reachable(neither).is_some());
        assert_eq!(not_https("https://sso.example.com/realms/infra"), None);
        assert!(not_https("not a url").is_some_and(|w| w.contains("not a URL")));
        assert_eq!(not_reachable("not a url"), None);
    }
}
