//! Reading JWTs without trusting them: splitting, base64url-decoding and parsing the header and
//! claims of a token from an untrusted source, with errors instead of panics. Signature checks
//! live in `validate.rs`.

use std::fmt;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyfed_core::{ExposeSecret as _, SecretString};
use serde_json::{Map, Value};

/// A JWT's parts, decoded but not verified.
#[derive(Debug, Clone)]
pub struct DecodedJwt {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
}

/// `aud` as JWTs carry it: a string for one value, an array otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience(pub Vec<String>);

impl Audience {
    pub fn from_claims(claims: &Map<String, Value>) -> Self {
        match claims.get("aud") {
            Some(Value::String(s)) => Self(vec![s.clone()]),
            Some(Value::Array(items)) => Self(
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            ),
            _ => Self(Vec::new()),
        }
    }

    pub fn contains(&self, value: &str) -> bool {
        self.0.iter().any(|a| a == value)
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => f.write_str("(none)"),
            [one] => write!(f, "\"{one}\""),
            many => write!(f, "{many:?}"),
        }
    }
}

impl DecodedJwt {
    /// Splits and decodes a compact JWS; the signature part is required but not checked here.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut parts = raw.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT (expected three dot-separated parts)".to_owned());
        };
        if signature.is_empty() {
            return Err("the JWT is unsigned".to_owned());
        }
        Ok(Self {
            header: decode_part(header, "header")?,
            claims: decode_part(claims, "claims")?,
        })
    }

    pub fn string_claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A NumericDate claim (`exp`, `iat`, `nbf`) as whole seconds; fractions are truncated.
    pub fn time_claim(&self, name: &str) -> Option<u64> {
        match self.claims.get(name)? {
            Value::Number(n) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
            _ => None,
        }
    }

    pub fn audience(&self) -> Audience {
        Audience::from_claims(&self.claims)
    }
}

fn decode_part(part: &str, what: &str) -> Result<Map<String, Value>, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|e| format!("the JWT {what} is not base64url: {e}"))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(format!("the JWT {what} is not a JSON object")),
        Err(e) => Err(format!("the JWT {what} is not JSON: {e}")),
    }
}

/// A token the issuer gave that failed keyfed's checks: its header and claims, read without
/// trusting them, and its length — what `keyfed doctor` shows to say which claim is wrong. It
/// is never used as a token, and holds nothing that makes one usable (no signature).
#[derive(Debug, Clone)]
pub struct RefusedToken {
    pub decoded: DecodedJwt,
    /// The compact JWT's length in bytes.
    pub length: usize,
}

/// An access token that passed every check; the raw JWT stays a secret.
#[derive(Clone)]
pub struct AccessToken {
    raw: SecretString,
    decoded: DecodedJwt,
    expires_at: SystemTime,
}

impl AccessToken {
    pub(crate) fn new(raw: SecretString, decoded: DecodedJwt, expires_at: SystemTime) -> Self {
        Self {
            raw,
            decoded,
            expires_at,
        }
    }

    /// The raw JWT, for handing to an upstream exchange or a token file.
    pub fn secret(&self) -> &SecretString {
        &self.raw
    }

    /// The raw JWT as text; callers must treat it as a secret.
    pub fn expose(&self) -> &str {
        self.raw.expose_secret()
    }

    pub fn decoded(&self) -> &DecodedJwt {
        &self.decoded
    }

    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    pub fn audience(&self) -> Audience {
        self.decoded.audience()
    }

    pub fn subject(&self) -> Option<&str> {
        self.decoded.string_claim("sub")
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("raw", &keyfed_core::REDACTED)
            .field("aud", &self.audience())
            .field("sub", &self.subject())
            .field("expires_at", &keyfed_core::clock::rfc3339(self.expires_at))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn parses_string_and_array_audiences() {
        let raw = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(r#"{"aud":"a","exp":5}"#)
        );
        let jwt = DecodedJwt::parse(&raw).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(jwt.audience(), Audience(vec!["a".into()]));
        assert_eq!(jwt.time_claim("exp"), Some(5));
        let raw = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(r#"{"aud":["a","account"]}"#)
        );
        let jwt = DecodedJwt::parse(&raw).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(jwt.audience().to_string(), r#"["a", "account"]"#);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for raw in [
            "",
            "a.b",
            "a.b.c.d",
            "!!!.???.sig",
            &format!("{}.{}.", b64("{}"), b64("{}")),
            &format!("{}.{}.s", b64("[1]"), b64("{}")),
            &format!("{}.{}.s", b64("{}"), b64("not json")),
            "\u{0}\u{1}.\u{2}.\u{3}",
        ] {
            assert!(DecodedJwt::parse(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn debug_hides_the_raw_token() {
        let raw = format!(
            "{}.{}.SIGNATURE",
            b64(r#"{"alg":"RS256"}"#),
            b64(r#"{"aud":"a"}"#)
        );
        let decoded = DecodedJwt::parse(&raw).unwrap_or_else(|e| panic!("{e}"));
        let token = AccessToken::new(raw.clone().into(), decoded, SystemTime::UNIX_EPOCH);
        let shown = format!("{token:?}");
        assert!(
            !shown.contains("SIGNATURE") && !shown.contains(&raw),
            "{shown}"
        );
    }
}
