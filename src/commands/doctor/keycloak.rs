//! The checks of the issuer itself, through keyfed's own Keycloak client: reachable, its TLS
//! certificate (the problem named as rustls found it), its discovery document and JWKS, and
//! this host's clock against the server's `Date` header.

use std::time::{Duration, SystemTime};

use keyfed_core::http::{TlsProblem, TransportHint, is_loopback};
use keyfed_keycloak::{KeycloakClient, KeycloakError};
use url::Url;

use super::report::{Check, split_hint};

/// Clocks further apart than this get a warning: Google allows about a minute of skew, Keycloak
/// 15 s for client assertions, and tokens carry Keycloak's time.
const MAX_SKEW: Duration = Duration::from_secs(30);

/// What to check when Keycloak could not be reached, in the words every upstream's errors use.
const KEYCLOAK: TransportHint = TransportHint {
    upstream: "Keycloak",
    server: "Keycloak's",
    private_cas: "a corporate or private CA, a TLS-inspecting proxy's CA",
};

/// What the issuer's checks leave for the later ones.
#[derive(Debug, Default)]
pub struct Reached {
    /// Why a token cannot be asked for, when it cannot.
    pub blocked: Option<&'static str>,
    /// The JWKS the discovery document names, for the reminder of what must be public.
    pub jwks_uri: Option<Url>,
    /// Where in the checks the clock check waits for a token's `iat`, when Keycloak sent no
    /// `Date` header.
    pub clock_from_token: Option<usize>,
}

/// Runs the issuer's checks in order; those after a failure are skipped.
pub async fn check(client: &KeycloakClient, checks: &mut Vec<Check>) -> Reached {
    let settings = client.settings();
    let address = address(&settings.url);
    let discovered = match client.discover().await {
        Ok(discovered) => discovered,
        Err(e) => return unreached(client, &address, &e, checks),
    };
    checks.push(Check::ok(
        "keycloak.reachable",
        format!("connected to {address}"),
    ));
    checks.push(tls_ok(client));
    checks.push(Check::ok(
        "keycloak.discovery",
        format!(
            "{}: token endpoint {}, JWKS {}",
            discovered.url,
            discovered.token_endpoint,
            discovered
                .jwks_uri
                .as_ref()
                .map_or("(none)".to_owned(), Url::to_string)
        ),
    ));
    // Without a `Date` header, the token's `iat` (Keycloak's clock too) is read instead.
    let clock_from_token = match discovered.server_date {
        Some(server) => {
            checks.push(skew(server, discovered.received_at, "its Date header"));
            None
        }
        None => {
            checks.push(Check::skip(
                "keycloak.clock",
                "Keycloak sent no Date header, and no token came to read its iat from",
            ));
            Some(checks.len() - 1)
        }
    };
    let jwks = client.published_keys().await;
    let jwks_ok = jwks.as_ref().is_ok_and(|k| !k.keys.is_empty());
    checks.push(match jwks {
        Ok(published) if published.keys.is_empty() => Check::fail(
            "keycloak.jwks",
            format!(
                "the JWKS at {} holds no signing key keyfed or a cloud can use",
                published.url
            ),
            "give the realm an active signing key (Realm settings → Keys → Add provider → rsa-generated, RS256)",
        ),
        Ok(published) => {
            let keys: Vec<String> = published
                .keys
                .iter()
                .map(|k| {
                    format!(
                        "{} ({})",
                        k.kid.as_deref().unwrap_or("no kid"),
                        k.alg.as_deref().unwrap_or("no alg")
                    )
                })
                .collect();
            Check::ok(
                "keycloak.jwks",
                format!(
                    "{} signing key{} at {}: {}",
                    keys.len(),
                    if keys.len() == 1 { "" } else { "s" },
                    published.url,
                    keys.join(", ")
                ),
            )
        }
        Err(e) => Check::fail_from(
            "keycloak.jwks",
            &e.to_string(),
            "the discovery document's jwks_uri must answer with the realm's keys (Realm settings → Keys)",
        ),
    });
    let blocked = (!jwks_ok && settings.verify_signature)
        .then_some("the issuer's JWKS, which keyfed checks every token with, is not usable");
    Reached {
        blocked,
        jwks_uri: discovered.jwks_uri,
        clock_from_token,
    }
}

/// `host:port` of the issuer URL.
fn address(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or("(no host)"),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// The TLS check once a request went through.
fn tls_ok(client: &KeycloakClient) -> Check {
    let settings = client.settings();
    if settings.url.scheme() == "https" {
        let roots = match &settings.http.ca_file {
            Some(ca) => format!("the system's roots and {}", ca.display()),
            None => "the system's roots".to_owned(),
        };
        Check::ok(
            "keycloak.tls",
            format!(
                "the certificate names {} and chains to {roots}",
                settings.url.host_str().unwrap_or("the host")
            ),
        )
    } else if is_loopback(&settings.url) {
        Check::ok(
            "keycloak.tls",
            "plain http:// to a loopback address: nothing leaves this host",
        )
    } else {
        Check::warn(
            "keycloak.tls",
            format!(
                "plain http:// to {}: the client's credentials and tokens cross the network in the clear",
                address(&settings.url)
            ),
            "serve Keycloak over https and use an https:// issuer url (then drop allow_insecure_http)",
        )
    }
}

/// The checks when the discovery document could not be had: where it went wrong, and the
/// rest skipped.
fn unreached(
    client: &KeycloakClient,
    address: &str,
    error: &KeycloakError,
    checks: &mut Vec<Check>,
) -> Reached {
    let text = error.to_string();
    let blocked: &'static str;
    match error {
        KeycloakError::Transport {
            detail, timed_out, ..
        } => match TlsProblem::of(detail).filter(|_| !timed_out) {
            Some(problem) => {
                checks.push(Check::ok(
                    "keycloak.reachable",
                    format!("connected to {address}"),
                ));
                checks.push(Check::fail(
                    "keycloak.tls",
                    format!("{} ({detail})", problem.cause()),
                    KEYCLOAK.tls_fix(problem),
                ));
                blocked = "Keycloak's TLS certificate is not accepted";
            }
            None => {
                checks.push(Check::fail(
                    "keycloak.reachable",
                    text.clone(),
                    unreachable_fix(address, detail, *timed_out),
                ));
                checks.push(Check::skip("keycloak.tls", "Keycloak is not reachable"));
                blocked = "Keycloak is not reachable";
            }
        },
        _ => {
            // Something answered: the connection and its TLS are fine.
            checks.push(Check::ok(
                "keycloak.reachable",
                format!("connected to {address}"),
            ));
            checks.push(tls_ok(client));
            checks.push(Check::fail_from(
                "keycloak.discovery",
                &text,
                "set the issuer url to the realm's issuer exactly as the realm names itself, e.g. https://sso.example.com/realms/<realm> (with /auth before /realms on Keycloak before 17)",
            ));
            blocked = "the discovery document was not usable";
        }
    }
    for id in ["keycloak.discovery", "keycloak.clock", "keycloak.jwks"] {
        if !checks.iter().any(|c| c.id == id) {
            checks.push(Check::skip(id, blocked));
        }
    }
    Reached {
        blocked: Some(blocked),
        jwks_uri: None,
        clock_from_token: None,
    }
}

fn unreachable_fix(address: &str, detail: &str, timed_out: bool) -> String {
    let hint = KEYCLOAK.hint(detail, timed_out);
    if !hint.is_empty() {
        return split_hint(&hint).1.unwrap_or(hint);
    }
    if detail.contains("dns error") || detail.contains("lookup") {
        format!(
            "the host of {address} does not resolve from this host: check the issuer url and DNS"
        )
    } else if detail.contains("refused") {
        format!(
            "nothing listens at {address}: check that Keycloak runs there and the issuer url's port"
        )
    } else {
        format!(
            "check that Keycloak runs at {address} and that this host may reach it (firewall; a proxy from HTTPS_PROXY / NO_PROXY)"
        )
    }
}

/// This host's clock (`local`) against Keycloak's (`server`), as `source` gave it: within
/// [`MAX_SKEW`], or a warning saying which is ahead.
pub fn skew(server: SystemTime, local: SystemTime, source: &str) -> Check {
    let (ahead, by) = match local.duration_since(server) {
        Ok(by) => (true, by),
        Err(e) => (false, e.duration()),
    };
    let secs = by.as_secs();
    if by <= MAX_SKEW {
        return Check::ok(
            "keycloak.clock",
            format!("this host's clock is within {secs} s of Keycloak's ({source})"),
        );
    }
    Check::warn(
        "keycloak.clock",
        format!(
            "this host's clock is {secs} s {} Keycloak's ({source}: {})",
            if ahead { "ahead of" } else { "behind" },
            keyfed_core::clock::rfc3339(server)
        ),
        "synchronise both clocks (timedatectl; chrony or systemd-timesyncd): tokens carry Keycloak's time, Keycloak allows 15 s for client assertions and the clouds a few minutes at most (Google about one)",
    )
}
