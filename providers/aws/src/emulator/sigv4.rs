//! AWS Signature Version 4 as STS checks it on signed calls such as GetCallerIdentity: parse the
//! `Authorization: AWS4-HMAC-SHA256 Credential=<AKID>/<date>/<region>/<service>/aws4_request,
//! SignedHeaders=…, Signature=…` header, rebuild the canonical request from what arrived, and
//! compare signatures computed with the secret key the emulator issued.

use aws_lc_rs::{constant_time, digest, hmac};
use axum::http::HeaderMap;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The parts of an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD`
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Why a header is not a SigV4 `Authorization`; the text is STS's `IncompleteSignature` message.
pub(crate) fn parse_authorization(header: &str) -> Result<Authorization, String> {
    let rest = header
        .strip_prefix(ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| format!("Authorization header requires the {ALGORITHM} algorithm"))?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (key, value) = part.trim().split_once('=').ok_or_else(|| {
            format!(
                "Authorization header component '{}' is malformed",
                part.trim()
            )
        })?;
        match key {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            _ => {}
        }
    }
    let missing = |what: &str| format!("Authorization header requires '{what}' parameter");
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed_headers = signed_headers.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, "aws4_request"] = scope.as_slice() else {
        return Err(format!(
            "Credential should be scoped to a valid region, service and aws4_request terminator: '{credential}'"
        ));
    };
    Ok(Authorization {
        access_key_id: (*access_key_id).to_owned(),
        date: (*date).to_owned(),
        region: (*region).to_owned(),
        service: (*service).to_owned(),
        signed_headers: signed_headers.split(';').map(str::to_lowercase).collect(),
        signature: signature.to_owned(),
    })
}

/// What arrived, as the signature covers it.
pub(crate) struct Received<'a> {
    pub method: &'a str,
    /// The path as sent, still percent-encoded.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

impl Authorization {
    /// Whether `signature` is what `secret_access_key` makes of this request at `amz_date`.
    pub fn verify(&self, secret_access_key: &str, amz_date: &str, request: &Received<'_>) -> bool {
        let expected = self.sign(secret_access_key, amz_date, request);
        constant_time::verify_slices_are_equal(expected.as_bytes(), self.signature.as_bytes())
            .is_ok()
    }

    fn sign(&self, secret_access_key: &str, amz_date: &str, request: &Received<'_>) -> String {
        let canonical = canonical_request(&self.signed_headers, request);
        let scope = format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        );
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
            hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
        );
        let mut key = hmac_sha256(
            format!("AWS4{secret_access_key}").as_bytes(),
            self.date.as_bytes(),
        );
        for part in [self.region.as_str(), self.service.as_str(), "aws4_request"] {
            key = hmac_sha256(&key, part.as_bytes());
        }
        hex(&hmac_sha256(&key, string_to_sign.as_bytes()))
    }
}

fn canonical_request(signed_headers: &[String], request: &Received<'_>) -> String {
    let uri = if request.path.is_empty() {
        "/".to_owned()
    } else {
        // Non-S3 services encode each path segment once more.
        request
            .path
            .split('/')
            .map(uri_encode)
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut query: Vec<(String, String)> = request
        .query
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (uri_encode(&k), uri_encode(&v)))
                .collect()
        })
        .unwrap_or_default();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let headers: String = signed_headers
        .iter()
        .map(|name| {
            let values: Vec<String> = request
                .headers
                .get_all(name.as_str())
                .iter()
                .map(|v| {
                    String::from_utf8_lossy(v.as_bytes())
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            format!("{name}:{}\n", values.join(","))
        })
        .collect();
    let payload = request
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .filter(|v| *v == "UNSIGNED-PAYLOAD")
        .map(str::to_owned)
        .unwrap_or_else(|| hex(digest::digest(&digest::SHA256, request.body).as_ref()));
    format!(
        "{}\n{uri}\n{query}\n{headers}\n{}\n{payload}",
        request.method,
        signed_headers.join(";")
    )
}

/// SigV4's URI encoding: everything but `A–Z a–z 0–9 - _ . ~` as `%XX`.
fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn parses_the_authorization_header() {
        let auth = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20150830/us-east-1/sts/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=abc",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(auth.access_key_id, "ASIAEXAMPLE");
        assert_eq!(auth.region, "us-east-1");
        assert_eq!(auth.service, "sts");
        assert_eq!(auth.signed_headers, ["content-type", "host", "x-amz-date"]);
        assert!(parse_authorization("Bearer x").is_err());
        assert!(
            parse_authorization("AWS4-HMAC-SHA256 Credential=A/B, Signature=x, SignedHeaders=host")
                .is_err()
        );
    }

    /// The worked example of AWS's SigV4 documentation ("Examples of the complete Signature
    /// Version 4 signing process", IAM ListUsers with the documented example key).
    #[test]
    fn matches_the_documented_example() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        headers.insert("host", HeaderValue::from_static("iam.amazonaws.com"));
        headers.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
        let request = Received {
            method: "GET",
            path: "/",
            query: Some("Action=ListUsers&Version=2010-05-08"),
            headers: &headers,
            body: b"",
        };
        let auth = Authorization {
            access_key_id: "AKIDEXAMPLE".to_owned(),
            date: "20150830".to_owned(),
            region: "us-east-1".to_owned(),
            service: "iam".to_owned(),
            signed_headers: vec![
                "content-type".to_owned(),
                "host".to_owned(),
                "x-amz-date".to_owned(),
            ],
            signature: "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
                .to_owned(),
        };
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        assert!(auth.verify(secret, "20150830T123600Z", &request));
        assert!(!auth.verify("another-secret", "20150830T123600Z", &request));
    }
}
