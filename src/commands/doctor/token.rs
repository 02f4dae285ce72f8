//! The token check: keyfed's own Keycloak client asks for the target's token and checks it as
//! the daemon does. When Keycloak gives a token that fails a check, what that token says of
//! itself is kept for the claim checks — read without trusting it, shown and never used.

use keyfed_core::Clock as _;
use keyfed_core::clock::{SystemClock, unix_seconds};
use keyfed_core::token_facts::printable;
use keyfed_keycloak::{AccessToken, DecodedJwt, KeycloakClient, RefusedToken};

use crate::config::Target;

use super::report::Check;

/// What the token check got.
pub enum Obtained {
    /// A token that passed every check keyfed makes.
    Accepted(AccessToken),
    /// A token Keycloak gave that keyfed refuses: what it says of itself.
    Refused(RefusedToken),
    /// No token at all.
    Nothing,
}

impl Obtained {
    /// The header and claims to check against the cloud's rules, and the token's length.
    pub fn claims(&self) -> Option<(&DecodedJwt, usize)> {
        match self {
            Self::Accepted(token) => Some((token.decoded(), token.expose().len())),
            Self::Refused(refused) => Some((&refused.decoded, refused.length)),
            Self::Nothing => None,
        }
    }
}

pub async fn check(client: &KeycloakClient, target: &Target, checks: &mut Vec<Check>) -> Obtained {
    match client.fetch_token_inspected(&target.request).await {
        Ok(token) => {
            checks.push(Check::ok("token", describe(&token)));
            Obtained::Accepted(token)
        }
        Err((e, refused)) => {
            let fallback = if refused.is_some() {
                "the claims.* checks below say which claim is wrong and what to change"
            } else {
                "as the issuer's words say"
            };
            checks.push(Check::fail_from("token", &e.to_string(), fallback));
            refused.map_or(Obtained::Nothing, Obtained::Refused)
        }
    }
}

fn describe(token: &AccessToken) -> String {
    let header = &token.decoded().header;
    let text = |v: Option<&serde_json::Value>| {
        v.and_then(serde_json::Value::as_str)
            .map_or("(none)".to_owned(), printable)
    };
    let left = unix_seconds(token.expires_at()).saturating_sub(unix_seconds(SystemClock.now()));
    format!(
        "aud {}, sub \"{}\", expires in {left} s; signed {} with kid {}",
        token.audience(),
        token.subject().map_or("(none)".to_owned(), printable),
        text(header.get("alg")),
        text(header.get("kid")),
    )
}
