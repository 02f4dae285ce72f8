//! Claims read from a JWT without verifying anything: the subject token's `iss`, `aud` and `sub`
//! make a cloud's refusals actionable (they go into hints only, never into decisions), and a
//! cloud-signed ID token's `exp` is its expiry (keyfed only hands it on). Every provider reads
//! them here. None of these claims is a secret; the token itself never leaves this module, and
//! a claim's control characters are escaped, so a token cannot forge a line of a hint.

use crate::secret::{ExposeSecret as _, SecretString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// The claims (payload) of a compact JWT, or `None` when it has no readable JSON object there.
pub fn claims(jwt: &str) -> Option<serde_json::Map<String, Value>> {
    let mut parts = jwt.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice::<Value>(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// A claim's text made safe for one line of a log or error: control characters escaped.
pub fn printable(text: &str) -> String {
    if text.chars().any(char::is_control) {
        text.escape_default().to_string()
    } else {
        text.to_owned()
    }
}

/// What the subject token says about itself, as far as it could be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenFacts {
    pub iss: Option<String>,
    pub aud: Vec<String>,
    pub sub: Option<String>,
}

impl TokenFacts {
    pub fn read(token: &SecretString) -> Self {
        let Some(claims) = claims(token.expose_secret()) else {
            return Self::default();
        };
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(printable);
        let aud = match claims.get("aud") {
            Some(Value::String(one)) => vec![printable(one)],
            Some(Value::Array(many)) => many
                .iter()
                .filter_map(Value::as_str)
                .map(printable)
                .collect(),
            _ => Vec::new(),
        };
        Self {
            iss: text("iss"),
            aud,
            sub: text("sub"),
        }
    }

    pub fn aud_text(&self) -> String {
        match self.aud.as_slice() {
            [] => "(none)".to_owned(),
            [one] => format!("\"{one}\""),
            many => format!("{many:?}"),
        }
    }
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
            r#"{"iss":"https://sso.example.com/realms/infra","aud":["a","account"],"sub":"u-1"}"#,
        ));
        assert_eq!(
            facts.iss.as_deref(),
            Some("https://sso.example.com/realms/infra")
        );
        assert_eq!(facts.aud, ["a", "account"]);
        assert_eq!(facts.sub.as_deref(), Some("u-1"));
        let one = TokenFacts::read(&token(r#"{"aud":"x"}"#));
        assert_eq!(one.aud_text(), "\"x\"");
    }

    #[test]
    fn garbage_gives_nothing_and_never_panics() {
        for text in ["not a jwt", "a.b", "a.b.c.d", "a.!!!.c", ""] {
            assert_eq!(
                TokenFacts::read(&SecretString::from(text)),
                TokenFacts::default()
            );
            assert!(claims(text).is_none(), "{text}");
        }
        assert_eq!(TokenFacts::read(&token("[1,2]")), TokenFacts::default());
    }

    #[test]
    fn a_forged_line_break_stays_escaped() {
        let facts = TokenFacts::read(&token(r#"{"sub":"a\nhint: forged"}"#));
        assert_eq!(facts.sub.as_deref(), Some("a\\nhint: forged"));
    }
}
