//! The emulator on the wire: raw Query-protocol requests and the XML, statuses and codes that
//! come back, and the token checks an IAM OIDC provider makes (signature, keys, algorithms).

use std::sync::Arc;

use keyfed_core::clock::{Clock, ManualClock, unix_seconds};
use keyfed_keycloak::emulator::{ClientSpec, Credential, KeycloakEmulator, Realm};
use serde_json::json;

use super::{OidcProvider, Role, StsEmulator};

const AUDIENCE: &str = "sts.amazonaws.com";

struct Rig {
    clock: ManualClock,
    kc: KeycloakEmulator,
    sts: StsEmulator,
    http: reqwest::Client,
}

async fn rig() -> Rig {
    let clock = ManualClock::starting_now();
    let realm = Realm::new("infra").client(ClientSpec::new(
        "host-web-01",
        Credential::Secret("s".to_owned()),
    ));
    let kc = KeycloakEmulator::builder(realm)
        .clock(Arc::new(clock.clone()))
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sts = StsEmulator::builder()
        .account("210987654321")
        .provider(OidcProvider::new(&kc.issuer_url(), &[AUDIENCE]))
        .role(Role::new("team/onprem-web", &kc.issuer_url()))
        .clock(Arc::new(clock.clone()))
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Rig {
        clock,
        kc,
        sts,
        http: reqwest::Client::new(),
    }
}

impl Rig {
    fn claims(&self) -> serde_json::Value {
        let now = unix_seconds(self.clock.now());
        json!({
            "iss": self.kc.issuer_url(),
            "sub": "0d4c-service-account",
            "aud": ["account", AUDIENCE],
            "azp": "host-web-01",
            "iat": now,
            "exp": now + 300,
        })
    }

    fn token(&self) -> String {
        self.kc
            .sign(&self.claims())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn post(&self, form: &[(&str, &str)]) -> (u16, String) {
        let response = self
            .http
            .post(self.sts.endpoint_url())
            .form(form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(content_type.as_deref(), Some("text/xml"));
        assert!(response.headers().contains_key("x-amzn-requestid"));
        (status, response.text().await.unwrap_or_default())
    }

    async fn assume(&self, token: &str, duration: &str, session: &str) -> (u16, String) {
        let role_arn = self.sts.role_arn("team/onprem-web");
        self.post(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", &role_arn),
            ("RoleSessionName", session),
            ("WebIdentityToken", token),
            ("DurationSeconds", duration),
        ])
        .await
    }
}

fn error_code(body: &str) -> Option<&str> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = body[start..].find("</Code>")? + start;
    Some(&body[start..end])
}

#[tokio::test]
async fn success_has_the_shape_sdks_parse() {
    let rig = rig().await;
    let (status, body) = rig.assume(&rig.token(), "1800", "web-01").await;
    assert_eq!(status, 200, "{body}");
    let ns = "xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"";
    assert!(
        body.starts_with(&format!("<AssumeRoleWithWebIdentityResponse {ns}><AssumeRoleWithWebIdentityResult><SubjectFromWebIdentityToken>0d4c-service-account</SubjectFromWebIdentityToken><Audience>sts.amazonaws.com</Audience><AssumedRoleUser><Arn>arn:aws:sts::210987654321:assumed-role/onprem-web/web-01</Arn><AssumedRoleId>AROA")),
        "{body}"
    );
    let issued = rig.sts.issued_credentials();
    let expiration = keyfed_core::clock::rfc3339(issued[0].expiration);
    assert_eq!(
        unix_seconds(issued[0].expiration),
        unix_seconds(rig.clock.now()) + 1800
    );
    for part in [
        format!("<AccessKeyId>{}</AccessKeyId>", issued[0].access_key_id),
        "<SecretAccessKey>".to_owned(),
        "<SessionToken>IQoJb3JpZ2luX2Vj".to_owned(),
        format!("<Expiration>{expiration}</Expiration>"),
        format!("<Provider>{}</Provider>", rig.kc.issuer_url()),
        "</AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>".to_owned(),
    ] {
        assert!(body.contains(&part), "{part} missing from {body}");
    }
    assert_eq!(
        issued[0].role_arn,
        "arn:aws:iam::210987654321:role/team/onprem-web"
    );
}

#[tokio::test]
async fn parameters_are_checked_like_sts_does() {
    let rig = rig().await;
    let token = rig.token();
    let (status, body) = rig.assume(&token, "600", "web-01").await;
    assert_eq!((status, error_code(&body)), (400, Some("ValidationError")));
    assert!(body.contains("Value '600' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900"), "{body}");

    let (status, body) = rig.assume(&token, "43201", "web-01").await;
    assert_eq!(
        (status, error_code(&body)),
        (400, Some("ValidationError")),
        "{body}"
    );

    let (_, body) = rig.assume(&token, "3600", "web 01/x").await;
    assert!(
        body.contains(r"Member must satisfy regular expression pattern: [\w+=,.@-]*"),
        "{body}"
    );
    let (_, body) = rig.assume(&token, "3600", "w").await;
    assert!(
        body.contains("Member must have length greater than or equal to 2"),
        "{body}"
    );

    let long = "x".repeat(20_001);
    let (status, body) = rig.assume(&long, "3600", "web-01").await;
    assert_eq!((status, error_code(&body)), (400, Some("ValidationError")));
    assert!(
        !body.contains("xxxxxxxx"),
        "the token is not echoed: {body}"
    );

    let (status, body) = rig
        .post(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
        ])
        .await;
    assert_eq!((status, error_code(&body)), (400, Some("ValidationError")));
    assert!(body.contains("Value null at 'roleArn'"), "{body}");

    let (status, body) = rig
        .post(&[("Action", "AssumeRole"), ("Version", "2011-06-15")])
        .await;
    assert_eq!((status, error_code(&body)), (400, Some("InvalidAction")));
    assert!(body.starts_with("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>"), "{body}");

    assert_eq!(rig.sts.issued_credentials().len(), 0);
}

#[tokio::test]
async fn tokens_are_verified_like_an_iam_oidc_provider_does() {
    let rig = rig().await;

    // Signed by a key the issuer does not publish.
    rig.kc
        .sign_with_foreign_key(true)
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = rig.assume(&rig.token(), "3600", "web-01").await;
    assert_eq!(
        (status, error_code(&body)),
        (400, Some("InvalidIdentityToken")),
        "{body}"
    );
    rig.kc
        .sign_with_foreign_key(false)
        .unwrap_or_else(|e| panic!("{e}"));

    // Tampered claims under a genuine signature.
    let genuine = rig.token();
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let mut claims = rig.claims();
    claims["sub"] = json!("someone-else");
    let forged_claims = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string())
    };
    parts[1] = &forged_claims;
    let (status, body) = rig.assume(&parts.join("."), "3600", "web-01").await;
    assert_eq!(
        (status, error_code(&body)),
        (400, Some("InvalidIdentityToken")),
        "{body}"
    );

    // HMAC "signed" with anything is never accepted.
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &rig.claims(),
        &jsonwebtoken::EncodingKey::from_secret(b"public-key-as-secret"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = rig.assume(&hs, "3600", "web-01").await;
    assert_eq!(
        (status, error_code(&body)),
        (400, Some("InvalidIdentityToken")),
        "{body}"
    );

    let (status, body) = rig.assume("not-a-jwt", "3600", "web-01").await;
    assert_eq!(
        (status, error_code(&body)),
        (400, Some("InvalidIdentityToken")),
        "{body}"
    );

    // The issuer's keys were fetched once and are cached; a rotated key is fetched anew.
    let before = rig.kc.control().hits("/certs");
    assert_eq!(rig.assume(&rig.token(), "3600", "web-01").await.0, 200);
    assert_eq!(rig.kc.control().hits("/certs"), before);
    rig.kc
        .rotate_signing_key()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rig.assume(&rig.token(), "3600", "web-01").await.0, 200);
    assert_eq!(rig.kc.control().hits("/certs"), before + 1);
}

#[tokio::test]
async fn an_unreachable_issuer_is_an_idp_communication_error() {
    let rig = rig().await;
    let token = rig.token();
    rig.kc.control().inject(
        "/.well-known/openid-configuration",
        keyfed_core::emulator::Fault::Drop,
        None,
    );
    let (status, body) = rig.assume(&token, "3600", "web-01").await;
    assert_eq!(
        (status, error_code(&body)),
        (400, Some("IDPCommunicationError")),
        "{body}"
    );
}

#[tokio::test]
async fn get_caller_identity_needs_a_signature_by_an_issued_key() {
    let rig = rig().await;
    let (status, body) = rig
        .post(&[("Action", "GetCallerIdentity"), ("Version", "2011-06-15")])
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (403, Some("MissingAuthenticationToken")),
        "{body}"
    );

    let response = rig
        .http
        .post(rig.sts.endpoint_url())
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=ASIANOTISSUEDNOTISSU/20250101/eu-west-1/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
        )
        .header("x-amz-date", "20250101T000000Z")
        .form(&[("Action", "GetCallerIdentity"), ("Version", "2011-06-15")])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status().as_u16(), 403);
    let body = response.text().await.unwrap_or_default();
    assert_eq!(error_code(&body), Some("InvalidClientTokenId"), "{body}");
}

#[tokio::test]
async fn every_request_is_counted_and_faults_apply() {
    let rig = rig().await;
    rig.sts.control().inject(
        "/",
        keyfed_core::emulator::Fault::Status {
            status: 503,
            body: "busy".to_owned(),
        },
        Some(1),
    );
    let response = rig
        .http
        .post(rig.sts.endpoint_url())
        .form(&[("Action", "GetCallerIdentity")])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(rig.assume(&rig.token(), "3600", "web-01").await.0, 200);
    assert_eq!(rig.sts.control().hits("/"), 2);
    assert_eq!(rig.sts.assume_role_calls(), 1);
    assert_eq!(
        rig.sts.last_assume_role().and_then(|s| s.session_name),
        Some("web-01".to_owned())
    );
}
