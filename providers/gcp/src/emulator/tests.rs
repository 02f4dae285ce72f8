//! The emulator on the wire, as Google's libraries see it: the exact parameters, response and
//! error shapes, lifetimes and bindings, without keyfed's client in between.

use std::sync::Arc;
use std::time::Duration;

use keyfed_core::clock::{Clock, ManualClock, rfc3339, unix_seconds};
use keyfed_core::emulator::IssuesSecrets as _;
use keyfed_keycloak::emulator::{ClientSpec, Credential, KeycloakEmulator, Realm};
use serde_json::{Value, json};

use super::*;

const POOL: &str = "projects/42/locations/global/workloadIdentityPools/p";
const PROVIDER: &str = "projects/42/locations/global/workloadIdentityPools/p/providers/kc";
const SA: &str = "sa@proj-1.iam.gserviceaccount.com";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

struct Wire {
    clock: ManualClock,
    kc: KeycloakEmulator,
    gcp: GcpEmulator,
    http: reqwest::Client,
}

async fn wire(provider: impl FnOnce(&str) -> PoolProvider, account: ServiceAccount) -> Wire {
    wire_with(provider, account, &[]).await
}

/// A [`wire`] with `disabled` APIs left off on the pool's project.
async fn wire_with(
    provider: impl FnOnce(&str) -> PoolProvider,
    account: ServiceAccount,
    disabled: &[GoogleApi],
) -> Wire {
    let clock = ManualClock::starting_now();
    let realm =
        Realm::new("infra").client(ClientSpec::new("c", Credential::Secret("s".to_owned())));
    let kc = KeycloakEmulator::builder(realm)
        .clock(Arc::new(clock.clone()))
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut gcp = GcpEmulator::builder()
        .provider(provider(&kc.issuer_url()))
        .service_account(account)
        .service_account(ServiceAccount::new("other@proj-1.iam.gserviceaccount.com"))
        .clock(Arc::new(clock.clone()));
    for api in disabled {
        gcp = gcp.api_disabled(*api);
    }
    let gcp = gcp.start().await.unwrap_or_else(|e| panic!("{e}"));
    Wire {
        clock,
        kc,
        gcp,
        http: reqwest::Client::new(),
    }
}

impl Wire {
    fn subject(&self, sub: &str) -> String {
        let now = unix_seconds(self.clock.now());
        self.kc
            .sign(&json!({
                "iss": self.kc.issuer_url(),
                "aud": format!("//iam.googleapis.com/{PROVIDER}"),
                "sub": sub,
                "iat": now,
                "exp": now + 3000,
            }))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn sts(&self, form: &[(&'static str, String)]) -> (u16, Value) {
        let response = self
            .http
            .post(self.gcp.sts_url())
            .form(form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn federated(&self, sub: &str) -> String {
        let subject = self.subject(sub);
        let (status, body) = self.sts(&exchange_form(&subject, PROVIDER)).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap_or_default().to_owned()
    }

    async fn iam(
        &self,
        email: &str,
        method: &str,
        bearer: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let mut request = self.http.post(format!(
            "{}/v1/projects/-/serviceAccounts/{email}:{method}",
            self.gcp.base_url()
        ));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        let response = request
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn exchange_form(subject: &str, provider: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
        ),
        ("audience", format!("//iam.googleapis.com/{provider}")),
        ("scope", CLOUD_PLATFORM.to_owned()),
        (
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token".to_owned(),
        ),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:jwt".to_owned(),
        ),
        ("subject_token", subject.to_owned()),
    ]
}

fn bound() -> ServiceAccount {
    ServiceAccount::new(SA).bind(&principal(POOL, "u-1"))
}

#[tokio::test]
async fn sts_answers_like_google() {
    let w = wire(|iss| PoolProvider::new(PROVIDER, iss), bound()).await;
    let subject = w.subject("u-1");
    let (status, body) = w.sts(&exchange_form(&subject, PROVIDER)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    // min(exp − now, 1 h)
    assert_eq!(body["expires_in"], 3000);
    assert!(
        body["access_token"]
            .as_str()
            .is_some_and(|t| t.starts_with("ya29."))
    );

    let (status, body) = w
        .sts(&exchange_form(
            &subject,
            "projects/42/locations/global/workloadIdentityPools/p/providers/nope",
        ))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_target")),
        "{body}"
    );
    let (status, body) = w
        .sts(&exchange_form(
            &subject,
            "projects/my-proj/locations/global/workloadIdentityPools/p/providers/kc",
        ))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Invalid value for \"audience\"")
    );
    assert_eq!(w.gcp.sts_calls(), 3);
}

#[tokio::test]
async fn sts_checks_the_issuer_and_the_key_id() {
    let w = wire(
        |_| PoolProvider::new(PROVIDER, "https://elsewhere.example.com"),
        bound(),
    )
    .await;
    let subject = w.subject("u-1");
    let (status, body) = w.sts(&exchange_form(&subject, PROVIDER)).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error_description"],
        format!(
            "The issuer in ID Token {} does not match the expected one in config",
            w.kc.issuer_url()
        )
    );

    // A kid the issuer does not publish: Google cannot find the key at the issuer.
    let w = wire(|iss| PoolProvider::new(PROVIDER, iss), bound()).await;
    let pair =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap_or_else(|e| panic!("{e}"));
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("not-published".to_owned());
    let now = unix_seconds(w.clock.now());
    let token = jsonwebtoken::encode(
        &header,
        &json!({"iss": w.kc.issuer_url(), "aud": format!("https://iam.googleapis.com/{PROVIDER}"), "sub": "u-1", "iat": now, "exp": now + 60}),
        &key,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = w.sts(&exchange_form(&token, PROVIDER)).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(
        body["error_description"],
        "Error connecting to the given credential's issuer."
    );
}

#[tokio::test]
async fn iam_takes_only_live_bearers_it_issued() {
    let w = wire(|iss| PoolProvider::new(PROVIDER, iss), bound()).await;
    let scope = json!({"scope": [CLOUD_PLATFORM]});
    for bearer in [None, Some("ya29.made-up")] {
        let (status, body) = w
            .iam(SA, "generateAccessToken", bearer, scope.clone())
            .await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
        assert_eq!(body["error"]["code"], 401);
    }
    let federated = w.federated("u-1").await;
    // The federated token lives until the subject token's exp (3000 s).
    w.clock.advance(Duration::from_secs(3001));
    let (status, _) = w
        .iam(SA, "generateAccessToken", Some(&federated), scope)
        .await;
    assert_eq!(status, 401, "an expired bearer");
}

#[tokio::test]
async fn generate_access_token_honours_lifetime_and_answers_in_googles_form() {
    let w = wire(|iss| PoolProvider::new(PROVIDER, iss), bound()).await;
    let federated = w.federated("u-1").await;
    let now = w.clock.now();
    let (status, body) = w
        .iam(
            SA,
            "generateAccessToken",
            Some(&federated),
            json!({"scope": [CLOUD_PLATFORM]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expireTime"], rfc3339(now + Duration::from_secs(3600)));
    assert!(
        body["expireTime"]
            .as_str()
            .is_some_and(|t| t.len() == 20 && t.ends_with('Z'))
    );
    let (_, body) = w
        .iam(
            SA,
            "generateAccessToken",
            Some(&federated),
            json!({"scope": [CLOUD_PLATFORM], "lifetime": "43200s"}),
        )
        .await;
    assert_eq!(
        body["expireTime"],
        rfc3339(now + Duration::from_secs(43_200))
    );
    for (lifetime, says) in [
        ("43201s", "12 hours"),
        ("0s", "larger then zero"),
        ("1h", "Illegal duration format"),
    ] {
        let (status, body) = w
            .iam(
                SA,
                "generateAccessToken",
                Some(&federated),
                json!({"scope": [CLOUD_PLATFORM], "lifetime": lifetime}),
            )
            .await;
        assert_eq!(
            (status, body["error"]["status"].as_str()),
            (400, Some("INVALID_ARGUMENT")),
            "{lifetime}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(says),
            "{body}"
        );
    }
    let (status, body) = w
        .iam(SA, "generateAccessToken", Some(&federated), json!({}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(w.gcp.generate_access_token_calls(), 6);
    // Every token it issued is known to the leak check.
    let secrets = w.gcp.issued_secrets();
    assert_eq!(
        secrets.len(),
        3,
        "one federated, two service account tokens"
    );
    assert!(secrets.contains(&federated));
}

#[tokio::test]
async fn only_bound_principals_impersonate() {
    let w = wire(|iss| PoolProvider::new(PROVIDER, iss), bound()).await;
    let stranger = w.federated("u-2").await;
    let (status, body) = w
        .iam(
            SA,
            "generateAccessToken",
            Some(&stranger),
            json!({"scope": [CLOUD_PLATFORM]}),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(
        body["error"]["details"][0]["reason"],
        "IAM_PERMISSION_DENIED"
    );
    let (status, body) = w
        .iam(
            "ghost@proj-1.iam.gserviceaccount.com",
            "generateIdToken",
            Some(&stranger),
            json!({"audience": "x"}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        body["error"]["message"],
        "Not found; Gaia id not found for email ghost@proj-1.iam.gserviceaccount.com"
    );

    // A pool-wide binding lets every identity of the pool in.
    let w = wire(
        |iss| PoolProvider::new(PROVIDER, iss),
        ServiceAccount::new(SA).bind(&principal_set(POOL)),
    )
    .await;
    let anyone = w.federated("u-3").await;
    let (status, body) = w
        .iam(
            SA,
            "generateIdToken",
            Some(&anyone),
            json!({"audience": "https://api.example.com", "includeEmail": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );
}

/// Issue 9: a disabled API answers as Google's front end does: 403 PERMISSION_DENIED, the
/// "has not been used in project … before or it is disabled" message naming the consumer
/// project's number, and an ErrorInfo with reason SERVICE_DISABLED.
#[tokio::test]
async fn issue_9_a_disabled_api_answers_service_disabled() {
    let w = wire_with(
        |iss| PoolProvider::new(PROVIDER, iss),
        bound(),
        &[GoogleApi::IamCredentials],
    )
    .await;
    let federated = w.federated("u-1").await;
    let (status, body) = w
        .iam(
            SA,
            "generateAccessToken",
            Some(&federated),
            json!({"scope": [CLOUD_PLATFORM]}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(
        body["error"]["message"],
        "IAM Service Account Credentials API has not been used in project 42 before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/iamcredentials.googleapis.com/overview?project=42 then retry. If you enabled this API recently, wait a few minutes for the action to propagate to our systems and retry."
    );
    let info = &body["error"]["details"][0];
    assert_eq!(info["reason"], "SERVICE_DISABLED");
    assert_eq!(info["metadata"]["service"], "iamcredentials.googleapis.com");
    assert_eq!(info["metadata"]["consumer"], "projects/42");

    let w = wire_with(
        |iss| PoolProvider::new(PROVIDER, iss),
        bound(),
        &[GoogleApi::Sts],
    )
    .await;
    let (status, body) = w.sts(&exchange_form(&w.subject("u-1"), PROVIDER)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["details"][0]["reason"], "SERVICE_DISABLED");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m
                .starts_with("Security Token Service API has not been used in project 42 before")),
        "{body}"
    );
    assert_eq!(w.gcp.sts_calls(), 1);
}

#[tokio::test]
async fn a_path_google_does_not_serve_is_an_html_404() {
    let w = wire(|iss| PoolProvider::new(PROVIDER, iss), bound()).await;
    let response = w
        .http
        .post(format!(
            "{}/v1/projects/-/serviceAccounts/{SA}:signJwt",
            w.gcp.base_url()
        ))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status().as_u16(), 404);
    let body = response.text().await.unwrap_or_default();
    assert!(body.contains("Error 404 (Not Found)"), "{body}");
}
