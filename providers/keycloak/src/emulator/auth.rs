//! Client authentication as Keycloak performs it at the token endpoint: "Client Id and Secret"
//! (Basic, form-urlencoded before Base64, or POST body), "Signed JWT" and "Signed JWT with
//! Client Secret", with Keycloak's checks on assertions and its error bodies, in its order.

use std::collections::HashMap;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use keyfed_core::clock::unix_seconds;
use keyfed_core::emulator::oidc::signature_verifies;
use serde_json::Value;

use super::State;
use super::realm::{ClientSpec, Credential};

/// Keycloak's allowed clock skew for client assertions.
const SKEW: u64 = 15;
/// Keycloak's default "Max expiration" of a client assertion.
const MAX_EXP: u64 = 60;
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An error answer: HTTP status, OAuth `error`, `error_description`.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

fn refuse(status: u16, error: &'static str, description: impl Into<String>) -> Refusal {
    Refusal {
        status,
        error,
        description: description.into(),
    }
}

fn bad_credentials(error: &'static str) -> Refusal {
    refuse(401, error, "Invalid client or Invalid client credentials")
}

/// A check of Keycloak's assertion validator failed: its words as they are.
fn jwt_failed(why: &str) -> Refusal {
    refuse(400, "invalid_client", why)
}

/// A signature that does not verify: an exception inside Keycloak's authenticator, reported
/// behind the authenticator's own prefix (Keycloak 26.5's words, double space included).
fn bad_signature(credential: &Credential) -> Refusal {
    match credential {
        Credential::SecretJwt(_) => refuse(
            400,
            "unauthorized_client",
            "Client authentication with client secret signed JWT failed: Signature on JWT token by client secret  failed validation",
        ),
        _ => refuse(
            400,
            "invalid_client",
            "Client authentication with signed JWT failed: Signature on JWT token failed validation",
        ),
    }
}

/// Client assertion ids already used, with the time each stops mattering.
#[derive(Debug, Default)]
pub(crate) struct JtiStore(HashMap<String, u64>);

impl JtiStore {
    /// Records `jti`; false when it was already used and is still remembered.
    fn first_use(&mut self, jti: &str, keep_until: u64, now: u64) -> bool {
        self.0.retain(|_, until| *until >= now);
        if self.0.contains_key(jti) {
            return false;
        }
        self.0.insert(jti.to_owned(), keep_until);
        true
    }
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Authenticates the client making a token request.
pub(crate) fn authenticate<'a>(
    state: &'a State,
    form: &[(String, String)],
    authorization: Option<&str>,
) -> Result<&'a ClientSpec, Refusal> {
    if let Some(kind) = field(form, "client_assertion_type") {
        if kind != ASSERTION_TYPE {
            return Err(jwt_failed(&format!(
                "Parameter client_assertion_type has value '{kind}' but expected is '{ASSERTION_TYPE}'"
            )));
        }
        let assertion = field(form, "client_assertion")
            .ok_or_else(|| jwt_failed("client_assertion parameter missing"))?;
        return authenticate_assertion(state, form, assertion);
    }
    let (client_id, secret) = match authorization.and_then(|h| h.strip_prefix("Basic ")) {
        Some(encoded) if !percent_escapes_valid(encoded) => {
            // Java's URL decoder throws on a `%` without two hex digits after it.
            return Err(refuse(
                400,
                "unauthorized_client",
                "Unexpected error when authenticating client",
            ));
        }
        Some(encoded) => decode_basic(encoded).ok_or_else(|| bad_credentials("invalid_client"))?,
        None => match field(form, "client_id") {
            Some(id) => (
                id.to_owned(),
                field(form, "client_secret").map(str::to_owned),
            ),
            None => return Err(refuse(400, "invalid_client", "Missing client_id parameter")),
        },
    };
    let client = state
        .realm
        .find_client(&client_id)
        .ok_or_else(|| bad_credentials("invalid_client"))?;
    match (&client.credential, secret) {
        (Credential::Secret(expected), Some(given)) if *expected == given => Ok(client),
        _ => Err(bad_credentials("unauthorized_client")),
    }
}

/// Whether every `%` in the decoded Basic credentials starts a two-hex-digit escape.
fn percent_escapes_valid(encoded: &str) -> bool {
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return true;
    };
    bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    })
}

/// `base64(urlencode(id) ":" urlencode(secret))` back into its parts.
fn decode_basic(encoded: &str) -> Option<(String, Option<String>)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (id, secret) = text.split_once(':')?;
    let decode = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((decode(id)?, Some(decode(secret)?)))
}

fn authenticate_assertion<'a>(
    state: &'a State,
    form: &[(String, String)],
    assertion: &str,
) -> Result<&'a ClientSpec, Refusal> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|e| jwt_failed(&format!("Invalid token: {e}")))?;
    let claims: Value = jsonwebtoken::dangerous::insecure_decode::<Value>(assertion)
        .map(|d| d.claims)
        .map_err(|e| jwt_failed(&format!("Invalid token: {e}")))?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let sub = text("sub").ok_or_else(|| {
        refuse(
            400,
            "invalid_client",
            "Can't identify client. Subject missing on JWT token",
        )
    })?;
    let client = state
        .realm
        .find_client(sub)
        .ok_or_else(|| bad_credentials("invalid_client"))?;
    if text("iss") != Some(sub) {
        // Keycloak's JWT authenticator skips such assertions; nothing else accepts them.
        return Err(bad_credentials("invalid_client"));
    }
    if field(form, "client_id").is_some_and(|id| id != sub) {
        return Err(jwt_failed("client_id parameter does not match sub claim"));
    }
    let key = match &client.credential {
        Credential::SignedJwt {
            public_key_pem,
            algorithm,
            key_id,
        } => {
            if format!("{:?}", header.alg) != *algorithm {
                return Err(jwt_failed("Invalid signature algorithm"));
            }
            if header.kid.as_ref().is_some_and(|kid| kid != key_id) {
                return Err(refuse(400, "invalid_client", "Unable to load public key"));
            }
            match header.alg {
                Algorithm::ES256 | Algorithm::ES384 => {
                    DecodingKey::from_ec_pem(public_key_pem.as_bytes())
                }
                _ => DecodingKey::from_rsa_pem(public_key_pem.as_bytes()),
            }
            .map_err(|_| refuse(400, "invalid_client", "Unable to load public key"))?
        }
        Credential::SecretJwt(secret) => {
            if !matches!(
                header.alg,
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
            ) {
                return Err(jwt_failed("Invalid signature algorithm"));
            }
            DecodingKey::from_secret(secret.as_bytes())
        }
        Credential::Secret(_) => return Err(bad_credentials("unauthorized_client")),
    };
    if !signature_verifies(assertion, &key, header.alg) {
        return Err(bad_signature(&client.credential));
    }

    let issuer = state.issuer();
    let token_endpoint = state.token_endpoint();
    let allowed = [
        issuer.as_str(),
        token_endpoint.as_str(),
        &format!("{token_endpoint}/introspect"),
    ]
    .map(str::to_owned);
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if audiences.len() > 1 {
        return Err(jwt_failed("Multiple audiences not allowed"));
    }
    if !audiences.iter().any(|a| allowed.iter().any(|ok| ok == a)) {
        return Err(jwt_failed("Invalid token audience"));
    }

    // Keycloak's validator, in its order: `exp` required and not past (with skew); without
    // `iat`, at most "Max expiration" ahead; with it, not issued in the future, and usable only
    // until `iat` + "Max expiration" — however late `exp` is.
    let now = unix_seconds(state.clock.now());
    let time = |name: &str| claims.get(name).and_then(Value::as_u64);
    let exp = time("exp").ok_or_else(|| jwt_failed("Token exp claim is required"))?;
    if now > exp.saturating_add(SKEW) {
        return Err(jwt_failed("Token is not active"));
    }
    match time("iat") {
        None if exp.saturating_sub(now) > MAX_EXP => {
            return Err(jwt_failed(
                "Token expiration is too far in the future and iat claim not present in token",
            ));
        }
        None => {}
        Some(iat) if iat.saturating_sub(SKEW) > now => {
            return Err(jwt_failed("Token was issued in the future"));
        }
        Some(_) if exp <= now => return Err(jwt_failed("Token is not active")),
        Some(iat) if now > iat.saturating_add(MAX_EXP) => {
            return Err(jwt_failed(
                "Token was issued too far in the past to be used now",
            ));
        }
        Some(_) => {}
    }
    let jti = text("jti").ok_or_else(|| jwt_failed("Token jti claim is required"))?;
    let mut used = state
        .used_jtis
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !used.first_use(&format!("{sub}:{jti}"), exp.saturating_add(SKEW), now) {
        return Err(jwt_failed("Token reuse detected"));
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_urldecoded() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("host+1:a%3Ab%2Bc%25d");
        assert_eq!(
            decode_basic(&encoded),
            Some(("host 1".to_owned(), Some("a:b+c%d".to_owned())))
        );
        assert_eq!(decode_basic("!!!"), None);
        assert!(percent_escapes_valid(&encoded));
        let raw = base64::engine::general_purpose::STANDARD.encode("host:50%off");
        assert!(!percent_escapes_valid(&raw));
    }

    #[test]
    fn jti_reuse_is_caught_until_it_expires() {
        let mut store = JtiStore::default();
        assert!(store.first_use("c:1", 100, 50));
        assert!(!store.first_use("c:1", 100, 60));
        assert!(store.first_use("c:1", 200, 101));
    }
}
