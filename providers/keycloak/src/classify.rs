//! What to do after a [`KeycloakError`]: every error maps to keyfed's retry advice
//! ([`keyfed_core::exchange::Advice`]), so a refusal is not retried like a network blip.
//!
//! - Back off: the network, a timeout, a 5xx or 429 answer, an answer keyfed could not read.
//! - Stop, the Keycloak side: an OAuth refusal (`invalid_client`, `unauthorized_client`,
//!   `invalid_scope`, …), and a token that fails keyfed's checks (`aud`, `iss`, lifetime,
//!   signature). The token is what the realm's client and scope settings make it; the hint each
//!   error carries names the setting, and where keyfed's side can be changed instead (a
//!   `min_token_lifetime`, `strict_audience`) it says so.
//! - Stop, keyfed's configuration: the client cannot be built (a CA file, a URL), the client
//!   assertion cannot be signed (keyfed's key), the issuer publishes no JWKS to verify with
//!   (the URL names something else, or `verify_signature` must be turned off), or something that does not speak OAuth refused
//!   the request with a 4xx (the configured URL names the wrong thing, or a proxy refuses it).
//!
//! Nothing Keycloak says asks for a fresh subject token: the token is what Keycloak issues.

use keyfed_core::exchange::{Advice, Advise, Side};

use crate::KeycloakError;

impl Advise for KeycloakError {
    fn advice(&self) -> Advice {
        let passing = |status: u16| status >= 500 || status == 429;
        match self {
            Self::Transport { .. } | Self::InvalidResponse { .. } => Advice::Backoff,
            Self::Http { status, .. } | Self::OAuth { status, .. } if passing(*status) => {
                Advice::Backoff
            }
            Self::OAuth { .. } | Self::TokenRejected { .. } => Advice::Stop { side: Side::Issuer },
            Self::Http { .. }
            | Self::Setup { .. }
            | Self::Assertion { .. }
            | Self::NoJwksUri { .. } => Advice::Stop { side: Side::Config },
        }
    }
}

#[cfg(test)]
mod tests {
    use keyfed_core::http::HttpSetupError;

    use super::*;
    use crate::{Audience, TokenProblem};

    const ISSUER: Advice = Advice::Stop { side: Side::Issuer };
    const CONFIG: Advice = Advice::Stop { side: Side::Config };

    fn oauth(status: u16, error: &str) -> KeycloakError {
        KeycloakError::OAuth {
            issuer: "corp".to_owned(),
            status,
            error: error.to_owned(),
            description: "Invalid client or Invalid client credentials".to_owned(),
            hint: None,
        }
    }

    fn http(status: u16) -> KeycloakError {
        KeycloakError::Http {
            issuer: "corp".to_owned(),
            method: "POST",
            url: "https://sso.example.com/realms/infra/protocol/openid-connect/token".to_owned(),
            status,
            body: "<html>Service Unavailable</html>".to_owned(),
        }
    }

    fn rejected(problem: TokenProblem) -> KeycloakError {
        KeycloakError::TokenRejected {
            issuer: "corp".to_owned(),
            audience: "sts.amazonaws.com".to_owned(),
            problem,
        }
    }

    #[test]
    fn refusals_stop_on_the_keycloak_side_and_outages_back_off() {
        for error in ["invalid_client", "unauthorized_client", "invalid_scope"] {
            assert_eq!(oauth(401, error).advice(), ISSUER, "{error}");
        }
        assert_eq!(
            oauth(503, "temporarily_unavailable").advice(),
            Advice::Backoff
        );
        assert_eq!(http(503).advice(), Advice::Backoff);
        assert_eq!(http(429).advice(), Advice::Backoff);
        assert_eq!(
            http(404).advice(),
            CONFIG,
            "the configured URL names no token endpoint"
        );
        let transport = KeycloakError::Transport {
            issuer: "corp".to_owned(),
            method: "POST",
            url: "https://sso.example.com/".to_owned(),
            detail: "connection refused".to_owned(),
            timed_out: false,
        };
        assert_eq!(transport.advice(), Advice::Backoff);
        let unreadable = KeycloakError::InvalidResponse {
            issuer: "corp".to_owned(),
            what: "token response",
            url: "https://sso.example.com/".to_owned(),
            detail: "EOF while parsing".to_owned(),
        };
        assert_eq!(unreadable.advice(), Advice::Backoff);
    }

    #[test]
    fn a_token_failing_keyfeds_checks_stops_on_the_keycloak_side() {
        for problem in [
            TokenProblem::AudienceMissing {
                expected: "sts.amazonaws.com".to_owned(),
                found: Audience(vec!["account".to_owned()]),
                scope: Some("aws-audience".to_owned()),
            },
            TokenProblem::Expired { seconds_ago: 30 },
            TokenProblem::UnknownKey { kid: None },
            TokenProblem::BadSignature("does not verify".to_owned()),
        ] {
            assert_eq!(rejected(problem.clone()).advice(), ISSUER, "{problem}");
        }
    }

    #[test]
    fn what_keyfed_holds_itself_stops_on_its_configuration() {
        let setup = KeycloakError::Setup {
            issuer: "corp".to_owned(),
            source: HttpSetupError::InsecureUrl {
                url: "http://sso.example.com/".to_owned(),
            },
        };
        assert_eq!(setup.advice(), CONFIG);
        let assertion = KeycloakError::Assertion {
            issuer: "corp".to_owned(),
            detail: "the key is not an RSA key".to_owned(),
        };
        assert_eq!(assertion.advice(), CONFIG);
    }

    /// Review of issue 9: a discovery document without `jwks_uri` was retried with short
    /// backoff forever, though only a change of configuration can help.
    #[test]
    fn no_jwks_uri_stops_on_keyfeds_configuration() {
        let e = KeycloakError::NoJwksUri {
            issuer: "corp".to_owned(),
            url: "https://sso.example.com/realms/infra".to_owned(),
        };
        assert_eq!(e.advice(), CONFIG);
        assert!(e.to_string().contains("verify_signature = false"), "{e}");
    }
}
