//! Whether a cloud can fetch the issuer's discovery document and keys from the internet. AWS and
//! Entra ID must; Google can take the keys uploaded instead (`--jwk-json-path`, `jwks_json`).
//! Judged from the issuer URL alone, without a DNS lookup: plain http, an address no one can
//! route to from outside (loopback, private, link-local, unique-local, shared, unspecified), or a
//! host name that only a local network resolves (one label, or a special-use or internal
//! top-level name) is not public.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Why a cloud cannot reach `issuer`, or `None` when it looks public.
pub(crate) fn not_public(issuer: &str) -> Option<String> {
    let Ok(url) = Url::parse(issuer) else {
        return Some("it is not a URL".to_owned());
    };
    let mut why = Vec::new();
    if url.scheme() != "https" {
        why.push(format!("it is served over {}, not https", url.scheme()));
    }
    match url.host() {
        None => why.push("it names no host".to_owned()),
        Some(Host::Ipv4(ip)) => why.extend(private_ip(IpAddr::V4(ip))),
        Some(Host::Ipv6(ip)) => why.extend(private_ip(IpAddr::V6(ip))),
        Some(Host::Domain(name)) => why.extend(local_name(name)),
    }
    (!why.is_empty()).then(|| why.join(", and "))
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
}
