//! The few claims of the web identity token that make STS's refusals actionable (`iss`, `aud`,
//! `sub`), read without verifying anything: they go into hints only, never into decisions.
//! None of them is a secret; the token itself never leaves this module.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyfed_core::{ExposeSecret as _, SecretString};
use serde_json::Value;

/// What the token says about itself, as far as it could be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TokenFacts {
    pub iss: Option<String>,
    pub aud: Vec<String>,
    pub sub: Option<String>,
}

impl TokenFacts {
    pub fn read(token: &SecretString) -> Self {
        let claims = token
            .expose_secret()
            .split('.')
            .nth(1)
            .and_then(|part| URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok())
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .unwrap_or(Value::Null);
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let aud = match claims.get("aud") {
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Array(many)) => many
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        Self {
            iss: text("iss"),
            aud,
            sub: text("sub"),
        }
    }

    /// The IAM OIDC provider name for this issuer: `iss` without its scheme or trailing slash.
    pub fn provider(&self) -> Option<String> {
        self.iss.as_deref().map(provider_name)
    }

    pub fn aud_text(&self) -> String {
        match self.aud.as_slice() {
            [] => "(none)".to_owned(),
            [one] => format!("\"{one}\""),
            many => format!("{many:?}"),
        }
    }
}

/// `https://sso.example.com/realms/infra/` → `sso.example.com/realms/infra`, the way IAM names
/// OIDC providers and the prefix of their condition keys.
pub(crate) fn provider_name(issuer: &str) -> String {
    let rest = issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://"))
        .unwrap_or(issuer);
    rest.trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: &str) -> SecretString {
        let part = URL_SAFE_NO_PAD.encode(claims);
        SecretString::from(format!("eyJhbGciOiJSUzI1NiJ9.{part}.c2ln"))
    }

    #[test]
    fn reads_iss_aud_sub() {
        let facts = TokenFacts::read(&token(
            r#"{"iss":"https://sso.example.com/realms/infra/","aud":["sts.amazonaws.com","account"],"sub":"u-1"}"#,
        ));
        assert_eq!(
            facts.provider().as_deref(),
            Some("sso.example.com/realms/infra")
        );
        assert_eq!(facts.aud, ["sts.amazonaws.com", "account"]);
        assert_eq!(facts.sub.as_deref(), Some("u-1"));
        let one = TokenFacts::read(&token(r#"{"aud":"sts.amazonaws.com"}"#));
        assert_eq!(one.aud_text(), "\"sts.amazonaws.com\"");
    }

    #[test]
    fn garbage_gives_nothing() {
        assert_eq!(
            TokenFacts::read(&SecretString::from("not a jwt")),
            TokenFacts::default()
        );
        assert_eq!(TokenFacts::read(&token("[1,2]")), TokenFacts::default());
    }
}
