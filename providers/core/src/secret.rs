//! Secrets are types. [`SecretString`] (from the `secrecy` crate) zeroizes its memory on drop and
//! prints as redacted under `Debug`; it has no `Display`, so a secret cannot reach a log line or
//! an error message by accident — reading it takes an explicit `expose_secret()`. Buffers that
//! hold a secret only for a moment (a secret file's bytes, a configuration file's text) are
//! [`Zeroizing`], wiped when dropped.
//!
//! Two ways a secret could still reach words keyfed shows are closed here (issue 11):
//! [`redact_sent`] takes keyfed's own secrets out of an upstream's answer before keyfed quotes
//! it (a gateway that echoes requests in its error pages hands back what keyfed sent), and
//! [`deserialize_secret`] reads a secret from the configuration without the deserializer's
//! usual "invalid type: integer `…`" quoting the value back.

use std::fmt;

pub use secrecy::zeroize::{Zeroize, Zeroizing};
pub use secrecy::{ExposeSecret, SecretString};

/// What keyfed prints wherever a secret would otherwise appear.
pub const REDACTED: &str = "** redacted **";

/// Secrets shorter than this are not searched for in upstream words: replacing a two-letter
/// "secret" everywhere would garble the message and protect nothing.
const MIN_SENT_LEN: usize = 4;

/// The most of an upstream's words [`redact_sent`] reads: quoting takes a line of them
/// ([`crate::http::trim_body`]); callers parse the redacted words as a JSON error document, and
/// Google's, with its details, runs to a few KiB. Bounding the input bounds the work on a
/// hostile 1 MiB error body (issue 11).
pub const MAX_REDACTED_INPUT: usize = 16 << 10;

/// `text` — words an upstream sent back, about to be quoted in an error — with keyfed's own
/// secrets taken out: each of `sent` (as sent, form-urlencoded as a form carries it, percent-
/// encoded with upper- or lower-case hex, and JSON-escaped as an echo inside a JSON document
/// carries it) and anything shaped like a signed JWT (a client assertion or subject token;
/// whoever's, it is a credential) or a Google access token become [`REDACTED`]. The upstream's
/// own words around them stay. Only the first [`MAX_REDACTED_INPUT`] bytes are kept (then `…`).
pub fn redact_sent(mut text: &str, sent: &[&str]) -> String {
    let cut = text.len() > MAX_REDACTED_INPUT;
    if cut {
        let mut end = MAX_REDACTED_INPUT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text = &text[..end];
    }
    let mut forms: Vec<String> = sent
        .iter()
        .filter(|s| s.len() >= MIN_SENT_LEN)
        .flat_map(|secret| sent_forms(secret))
        .filter(|form| form.len() >= MIN_SENT_LEN)
        .collect();
    // Longest first, so a secret that holds another is taken out whole.
    forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
    forms.dedup();
    let mut out = text.to_owned();
    if cut {
        // A secret the cut went through leaves no beginning behind.
        let keep = forms
            .iter()
            .filter_map(|form| {
                (1..form.len())
                    .rev()
                    .filter(|k| form.is_char_boundary(*k))
                    .find(|k| out.ends_with(&form[..*k]))
                    .map(|k| out.len() - k)
            })
            .min();
        if let Some(keep) = keep {
            out.truncate(keep);
        }
    }
    // The sent values before the shapes: a secret that starts like a token ("eyJ", "ya29.")
    // would otherwise be cut at the shape's end and leave its rest.
    for form in &forms {
        if out.contains(form.as_str()) {
            out = out.replace(form.as_str(), REDACTED);
        }
    }
    let mut out = redact_shapes(&out).0;
    if cut {
        out.push('…');
    }
    out
}

/// The ways `secret` may come back in an upstream's words.
fn sent_forms(secret: &str) -> Vec<String> {
    let urlencoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    // Form encoding writes a space as '+' (a '+' itself is %2B); percent-encoding as %20.
    let percent = urlencoded.replace('+', "%20");
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json.trim_matches('"').to_owned();
    let mut forms = vec![secret.to_owned(), json];
    for encoded in [urlencoded, percent] {
        forms.push(lower_hex(&encoded));
        forms.push(encoded);
    }
    forms
}

/// `encoded` with each `%XX` written in lower case, as some servers re-encode.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut hex_left = 0;
    for c in encoded.chars() {
        if c == '%' {
            hex_left = 2;
            out.push(c);
        } else if hex_left > 0 {
            hex_left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`redact_sent`] over a body of bytes (lossily decoded).
pub fn redact_sent_bytes(body: &[u8], sent: &[&str]) -> Vec<u8> {
    let head = &body[..body.len().min(MAX_REDACTED_INPUT)];
    let mut out = redact_sent(&String::from_utf8_lossy(head), sent);
    if head.len() < body.len() && !out.ends_with('…') {
        out.push('…');
    }
    out.into_bytes()
}

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// The length of the signed compact JWT starting at `at` (`eyJ…` header, `.`, `eyJ…` payload,
/// `.`, a signature), if one does; else where the header's run of token characters ends: no
/// JWT starts inside that run either (each would end its header at the same place and fail
/// the same way), so the scan resumes there and stays linear. `steps` counts bytes examined.
fn jwt_at(text: &[u8], at: usize, steps: &mut usize) -> Result<usize, usize> {
    let mut run = |from: usize| {
        let n = text[from..].iter().take_while(|c| is_b64url(**c)).count();
        *steps += n + 1;
        n
    };
    let header = run(at);
    let dot1 = at + header;
    if text.get(dot1) != Some(&b'.') || !text[dot1 + 1..].starts_with(b"eyJ") {
        return Err(dot1.max(at + 1));
    }
    let payload = run(dot1 + 1);
    let dot2 = dot1 + 1 + payload;
    if text.get(dot2) != Some(&b'.') {
        return Err(dot1);
    }
    let signature = run(dot2 + 1);
    if signature > 0 {
        Ok(dot2 + 1 + signature - at)
    } else {
        Err(dot1)
    }
}

/// The length of the Google access token starting at `at` (`ya29.` and at least 16 more token
/// characters), if one does. A failed match examined fewer than 22 bytes.
fn google_token_at(text: &[u8], at: usize, steps: &mut usize) -> Option<usize> {
    let rest = text[at..].strip_prefix(b"ya29.")?;
    let body = rest
        .iter()
        .take_while(|c| is_b64url(**c) || **c == b'.')
        .count();
    *steps += 5 + body + 1;
    (body >= 16).then_some(5 + body)
}

/// `text` with every signed JWT and Google access token replaced by [`REDACTED`], and the
/// number of bytes the scan examined (linear in `text`'s length; a test counts it).
fn redact_shapes(text: &str) -> (String, usize) {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut steps = 0;
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        steps += 1;
        let found = match bytes[at] {
            b'e' if bytes[at..].starts_with(b"eyJ") => jwt_at(bytes, at, &mut steps),
            b'y' => google_token_at(bytes, at, &mut steps).ok_or(at + 1),
            _ => Err(at + 1),
        };
        match found {
            Ok(len) => {
                // Both shapes are ASCII, so `at` and `at + len` are character boundaries.
                out.push_str(&text[copied..at]);
                out.push_str(REDACTED);
                at += len;
                copied = at;
            }
            // Past a run of token characters (ASCII), so still a character boundary.
            Err(next) => at = next,
        }
    }
    out.push_str(&text[copied..]);
    (out, steps)
}

/// Deserializes an optional secret (`client_secret = "…"`): a string becomes a
/// [`SecretString`]; anything else is refused without quoting it, where serde would say
/// "invalid type: integer `12345678`" — the secret, had it been written without quotes.
pub fn deserialize_secret<'de, D>(deserializer: D) -> Result<Option<SecretString>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Visitor;

    impl Visitor {
        fn refuse<E: serde::de::Error>(self, kind: &str) -> Result<Option<SecretString>, E> {
            Err(E::custom(format!(
                "expected the secret as a quoted string, found {kind} (its value is not shown)"
            )))
        }
    }

    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Option<SecretString>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("the secret as a quoted string")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(v)))
        }

        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(v)))
        }

        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            self.refuse("a boolean")
        }

        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            self.refuse("an integer")
        }

        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            self.refuse("an integer")
        }

        // Integers past 64 bits arrive here; serde's default would quote them too.
        fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<Self::Value, E> {
            self.refuse("an integer")
        }

        fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<Self::Value, E> {
            self.refuse("an integer")
        }

        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            self.refuse("a number")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            self.refuse("an array")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            self.refuse("a table")
        }
    }

    deserializer.deserialize_any(Visitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJob3N0In0.c2lnbmF0dXJl-_x";

    #[test]
    fn debug_never_shows_the_secret() {
        let s = SecretString::from("hunter2-very-secret");
        for shown in [format!("{s:?}"), format!("{s:#?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        assert_eq!(s.expose_secret(), "hunter2-very-secret");
    }

    #[test]
    fn issue_11_what_keyfed_sent_is_taken_out_of_an_upstreams_words() {
        let secret = "s3cr3t:with+plus%percent&amp space=eq\"q";
        let echoed = format!(
            "invalid_client: refused POST client_secret=s3cr3t%3Awith%2Bplus%25percent%26amp+space%3Deq%22q&client_assertion={JWT} \
             raw {secret} json \"s3cr3t:with+plus%percent&amp space=eq\\\"q\" bearer ya29.c.b0AXv0zTOuQ3yUo1KqJc end"
        );
        let redacted = redact_sent(&echoed, &[secret]);
        assert_eq!(
            redacted,
            "invalid_client: refused POST client_secret=** redacted **&client_assertion=** redacted ** \
             raw ** redacted ** json \"** redacted **\" bearer ** redacted ** end"
        );
        // The upstream's own words are untouched, short values are not hunted for, and
        // anything not shaped like a token stays.
        let plain = "invalid_scope: scope 'eyJ' or ya29. or a.b.c is not linked";
        assert_eq!(redact_sent(plain, &["ab", ""]), plain);
        assert_eq!(
            String::from_utf8(redact_sent_bytes(JWT.as_bytes(), &[])).unwrap_or_default(),
            REDACTED
        );
        // Untrusted input never panics, multi-byte text included.
        for text in [
            "eyJ",
            "eyJ.",
            "eyJa.eyJ",
            "eyJa.eyJb.",
            "ya29.",
            "é eyJ€.eyJ€.x ya29.€",
        ] {
            let _ = redact_sent(text, &[text]);
        }
    }

    /// issue 11: the token-shape scan examines each byte a bounded number of times (it was
    /// quadratic: 1 MiB of "eyJ" took minutes), and `redact_sent` reads only the words it may
    /// quote.
    #[test]
    fn issue_11_redacting_a_hostile_body_is_linear_and_bounded() {
        const MIB: usize = 1 << 20;
        // 64 KiB: a quadratic scan counts ~700 million steps here and fails within seconds.
        for unit in [
            "eyJ",
            "eyJ.",
            "eyJa.eyJb.",
            "eyJa.eyJb.eyJ",
            "ya29.",
            "ya29.eyJ.",
            "e",
        ] {
            let text = unit.repeat((64 << 10) / unit.len());
            let (_, steps) = redact_shapes(&text);
            assert!(
                steps <= 5 * text.len(),
                "{unit:?}: {steps} steps for {} bytes",
                text.len()
            );
        }
        let (redacted, _) = redact_shapes(&format!("{JWT} {}", "eyJ".repeat(1000)));
        assert!(
            redacted.starts_with(&format!("{REDACTED} eyJeyJ")),
            "{redacted}"
        );
        let body = "eyJ".repeat(MIB / 3);
        let redacted = redact_sent(&body, &["a-sent-secret"]);
        assert!(
            redacted.len() <= MAX_REDACTED_INPUT + 3,
            "{}",
            redacted.len()
        );
        assert!(redacted.ends_with('…'));
        let bytes = redact_sent_bytes(body.as_bytes(), &[]);
        assert!(bytes.len() <= MAX_REDACTED_INPUT + 3, "{}", bytes.len());
        // A secret the cut goes through leaves none of its beginning.
        let secret = "s3cr3t-across-the-cut";
        let pad = "x".repeat(MAX_REDACTED_INPUT - 6);
        let redacted = redact_sent(&format!("{pad}{secret} and more"), &[secret]);
        assert_eq!(redacted, format!("{pad}…"));
        // Multi-byte text at the cut does not panic.
        let _ = redact_sent(&"é".repeat(MAX_REDACTED_INPUT), &["ééé"]);
    }

    /// issue 11: a sent secret shaped like a token start ("ya29.", "eyJ") goes whole, not cut
    /// at the shape's end; percent-encodings with lower-case hex or %20 go too.
    #[test]
    fn issue_11_a_sent_secret_goes_whole_in_every_encoding() {
        for secret in [
            "ya29.0123456789abcdefXYZ!tail",
            "eyJhZWFk.eyJib2R5.c2ln$tail",
        ] {
            let redacted = redact_sent(&format!("echo: {secret} end"), &[secret]);
            assert_eq!(redacted, format!("echo: {REDACTED} end"));
        }
        let secret = "pa:ss/wo rd+x";
        for echoed in [
            "pa%3Ass%2Fwo+rd%2Bx",
            "pa%3ass%2fwo+rd%2bx",
            "pa%3Ass%2Fwo%20rd%2Bx",
            "pa%3ass%2fwo%20rd%2bx",
        ] {
            assert_eq!(
                redact_sent(&format!("secret={echoed}&x=1"), &[secret]),
                format!("secret={REDACTED}&x=1"),
                "{echoed}"
            );
        }
    }

    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(default, deserialize_with = "deserialize_secret")]
        client_secret: Option<SecretString>,
    }

    #[test]
    fn issue_11_a_secret_of_the_wrong_type_is_refused_without_its_value() {
        let raw: Raw =
            toml::from_str("client_secret = \"s3cr3t-12345\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            raw.client_secret.as_ref().map(|s| s.expose_secret()),
            Some("s3cr3t-12345")
        );
        let raw: Raw = toml::from_str("").unwrap_or_else(|e| panic!("{e}"));
        assert!(raw.client_secret.is_none());
        for (toml, kind) in [
            ("client_secret = 98765432109876", "an integer"),
            ("client_secret = 98765432109876543210", "an integer"),
            ("client_secret = 9876.54321", "a number"),
            ("client_secret = true", "a boolean"),
            ("client_secret = [\"s3cr3t-in-array\"]", "an array"),
            ("client_secret = { s = \"s3cr3t-in-table\" }", "a table"),
        ] {
            // The message keyfed shows (with the file, line and column of its own; toml's
            // Display adds a snippet of the source, which keyfed does not print).
            let error = toml::from_str::<Raw>(toml)
                .err()
                .map(|e| e.message().to_owned())
                .unwrap_or_default();
            assert!(error.contains(kind), "{toml}: {error}");
            for value in ["98765432109876", "9876.54321", "s3cr3t-in"] {
                assert!(!error.contains(value), "{toml}: {error}");
            }
        }
    }
}
