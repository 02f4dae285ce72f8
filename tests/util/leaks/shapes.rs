//! Secrets recognised by their shape, whoever issued them (issue 11): a run cannot know the
//! value of every secret it causes — a real Keycloak's tokens, client assertions keyfed signs,
//! the intermediate tokens of `keyfed demo`'s own emulators, moto's session tokens — but each
//! kind has a shape no log line, error or status has by chance.

/// Base64url, as JWT parts and Google tokens use it.
fn is_b64url(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Standard Base64 (AWS session tokens, PEM bodies).
fn is_b64(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='
}

/// Whether `text` holds a signed compact JWT: a JSON header and payload (Base64url of `{"`,
/// so `eyJ`) and a signature, dot-separated.
pub fn contains_signed_jwt(text: &str) -> bool {
    text.match_indices("eyJ").any(|(start, _)| {
        let mut parts = text[start..].splitn(3, '.');
        let (Some(header), Some(payload), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let signature: String = rest.chars().take_while(|c| is_b64url(*c)).collect();
        header.chars().all(is_b64url)
            && payload.starts_with("eyJ")
            && payload.chars().all(is_b64url)
            && signature.len() >= 16
    })
}

/// Whether `prefix` occurs in `text` followed by at least `min` characters that `body` admits.
fn prefixed(text: &str, prefix: &str, min: usize, body: fn(char) -> bool) -> bool {
    text.match_indices(prefix).any(|(start, _)| {
        text[start + prefix.len()..]
            .chars()
            .take_while(|c| body(*c))
            .count()
            >= min
    })
}

/// A Google OAuth access token (`ya29.` and its body, as Google and the GCP emulator issue
/// them).
fn contains_google_token(text: &str) -> bool {
    prefixed(text, "ya29.", 20, |c| is_b64url(c) || c == '.')
}

/// An AWS session token: STS's start with the Base64 of a fixed protobuf-like header
/// (`IQoJb3JpZ2lu…` today, `FwoGZXIvYXdz…`/`FQoGZXIvYXdz…` before; moto and the STS emulator
/// follow them).
fn contains_aws_session_token(text: &str) -> bool {
    ["IQoJb3JpZ2lu", "FwoGZXIvYXdz", "FQoGZXIvYXdz"]
        .iter()
        .any(|p| prefixed(text, p, 40, is_b64))
}

/// A PEM private key with its key bits.
fn contains_private_key(text: &str) -> bool {
    prefixed(text, "PRIVATE KEY-----", 40, |c| {
        is_b64(c) || c.is_whitespace()
    })
}

/// A shape: whether a text holds it, and its name in a failure message.
type Shape = (fn(&str) -> bool, &'static str);

/// The kinds of secret whose shape is in `text`, named for a failure message.
pub fn found_in(text: &str) -> Vec<String> {
    let shapes: [Shape; COUNT] = [
        (
            contains_signed_jwt,
            "a signed JWT (from any issuer, the real Keycloak's too)",
        ),
        (contains_google_token, "a Google access token (ya29.…)"),
        (contains_aws_session_token, "an AWS session token"),
        (contains_private_key, "a PEM private key"),
    ];
    shapes
        .iter()
        .filter(|(found, _)| found(text))
        .map(|(_, what)| (*what).to_owned())
        .collect()
}

/// How many shapes [`found_in`] knows.
pub const COUNT: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_signed_jwt_is_found() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLW9mLWVub3VnaC1sZW5ndGg";
        assert!(contains_signed_jwt(&format!("token received: {jwt}\n")));
        assert!(!contains_signed_jwt(
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.<served>"
        ));
        assert!(!contains_signed_jwt("header eyJhbGciOiJSUzI1NiJ9 only"));
    }

    #[test]
    fn issue_11_tokens_and_keys_are_found_by_their_shape() {
        let found = |text: &str| found_in(text);
        assert_eq!(
            found("access_token=ya29.c.b0AXv0zTOuQ3yUo1KqJc7n1dL2_x-y.z end"),
            ["a Google access token (ya29.…)"]
        );
        assert_eq!(
            found("token IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ== end"),
            ["an AWS session token"]
        );
        assert_eq!(
            found(
                "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQ\n"
            ),
            ["a PEM private key"]
        );
        // What keyfed does print: names, prefixes, headers without bits.
        for clean in [
            "Google Cloud access token for app@x.iam.gserviceaccount.com (ya29.…)",
            "the header -----BEGIN PRIVATE KEY----- and nothing",
            "session token IQoJb3JpZ2lu only",
            "expires 2030-01-01T00:00:00Z",
        ] {
            assert!(found(clean).is_empty(), "{clean}: {:?}", found(clean));
        }
    }
}
