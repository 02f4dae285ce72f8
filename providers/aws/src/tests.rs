//! The client against the STS emulator end to end, with tokens from the Keycloak emulator: the
//! operator's story of a host trading its service-account token for role credentials, and each
//! way that goes wrong, with the advice keyfed gives and what the engine should do next.

use std::sync::Arc;
use std::time::Duration;

use keyfed_core::clock::{Clock, ManualClock, unix_seconds};
use keyfed_core::emulator::{Fault, TestCa};
use keyfed_core::exchange::{Advice, Advise as _, Side};
use keyfed_core::http::HttpSettings;
use keyfed_core::{ExposeSecret as _, SecretString};
use keyfed_keycloak::emulator::{ClientSpec, Credential, KeycloakEmulator, Realm};
use keyfed_keycloak::{
    AssertionAudience, ClientAuth, IssuerSettings, KeycloakClient, TokenRequest,
};
use url::Url;

use crate::emulator::{Condition, OidcProvider, Role, StsEmulator};
use crate::{AssumeRoleRequest, AwsCredentials, AwsError, StsClient, StsSettings};

const AUDIENCE: &str = "sts.amazonaws.com";
const CLIENT_ID: &str = "host-web-01";
const ROLE: &str = "onprem-web";

/// A Keycloak realm whose `aws-audience` scope puts `sts.amazonaws.com` into `aud`, and whose
/// `other-audience` scope puts `api.example.com` there instead.
async fn keycloak(clock: &ManualClock, tls: Option<&TestCa>) -> KeycloakEmulator {
    let realm = Realm::new("infra")
        .scope("aws-audience", &[AUDIENCE])
        .scope("other-audience", &["api.example.com"])
        .client(
            ClientSpec::new(CLIENT_ID, Credential::Secret("kc-secret".to_owned()))
                .optional_scopes(&["aws-audience", "other-audience"]),
        );
    let mut builder = KeycloakEmulator::builder(realm).clock(Arc::new(clock.clone()));
    if let Some(ca) = tls {
        builder = builder.tls(ca);
    }
    builder
        .start()
        .await
        .unwrap_or_else(|e| panic!("keycloak emulator: {e}"))
}

async fn token(
    kc: &KeycloakEmulator,
    clock: &ManualClock,
    scope: &str,
    audience: &str,
    ca_file: Option<std::path::PathBuf>,
) -> SecretString {
    let url = Url::parse(&kc.issuer_url()).unwrap_or_else(|e| panic!("{e}"));
    let client = KeycloakClient::new(
        IssuerSettings {
            name: "corp".to_owned(),
            url,
            client_id: CLIENT_ID.to_owned(),
            auth: ClientAuth::SecretBasic(SecretString::from("kc-secret")),
            token_endpoint: None,
            assertion_audience: AssertionAudience::default(),
            verify_signature: true,
            http: HttpSettings {
                ca_file,
                ..HttpSettings::default()
            },
        },
        Arc::new(clock.clone()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let token = client
        .fetch_token(&TokenRequest {
            audience: audience.to_owned(),
            strict_audience: false,
            scope: Some(scope.to_owned()),
            resource: None,
            audience_parameter: false,
            min_remaining: Duration::from_secs(30),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    token.secret().clone()
}

fn client(sts: &StsEmulator, ca_file: Option<std::path::PathBuf>) -> StsClient {
    client_at(
        &sts.endpoint_url(),
        HttpSettings {
            ca_file,
            timeout: Duration::from_secs(10),
            ..HttpSettings::default()
        },
    )
}

/// A client for the STS endpoint at `url` (region eu-west-1) with `http`.
fn client_at(url: &str, http: HttpSettings) -> StsClient {
    StsClient::new(StsSettings {
        region: "eu-west-1".to_owned(),
        endpoint_url: Some(Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))),
        fips: false,
        http,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn request(sts: &StsEmulator, duration: Duration) -> AssumeRoleRequest {
    AssumeRoleRequest {
        role_arn: sts.role_arn(ROLE),
        session_name: crate::session_name("keyfed-{hostname}", "web-01.example.com", "aws-prod"),
        duration,
        policy: None,
        policy_arns: Vec::new(),
    }
}

/// The usual world: one realm, an STS account trusting it, one role.
struct World {
    clock: ManualClock,
    kc: KeycloakEmulator,
    sts: StsEmulator,
    client: StsClient,
}

async fn world(role: impl FnOnce(Role) -> Role) -> World {
    let clock = ManualClock::starting_now();
    let kc = keycloak(&clock, None).await;
    let sts = StsEmulator::builder()
        .provider(OidcProvider::new(&kc.issuer_url(), &[AUDIENCE]))
        .role(role(Role::new(ROLE, &kc.issuer_url())))
        .clock(Arc::new(clock.clone()))
        .start()
        .await
        .unwrap_or_else(|e| panic!("sts emulator: {e}"));
    let client = client(&sts, None);
    World {
        clock,
        kc,
        sts,
        client,
    }
}

impl World {
    async fn token(&self) -> SecretString {
        token(&self.kc, &self.clock, "aws-audience", AUDIENCE, None).await
    }

    async fn assume(&self, duration: Duration) -> Result<AwsCredentials, AwsError> {
        let token = self.token().await;
        let result = self
            .client
            .assume_role_with_web_identity(&request(&self.sts, duration), &token)
            .await;
        if let Err(e) = &result {
            assert_no_secret_in(e, &token);
        }
        result
    }
}

fn assert_no_secret_in(error: &AwsError, token: &SecretString) {
    let shown = format!("{error} {error:?}");
    let jwt = token.expose_secret();
    assert!(!shown.contains(jwt), "the token leaked: {shown}");
    // Neither its signature alone.
    if let Some(signature) = jwt.rsplit('.').next() {
        assert!(
            !shown.contains(signature),
            "the token's signature leaked: {shown}"
        );
    }
}

fn refused(result: Result<AwsCredentials, AwsError>) -> AwsError {
    match result {
        Ok(creds) => panic!("expected a refusal, got {creds:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn a_host_gets_role_credentials_for_its_token() {
    let w = world(|r| r).await;
    let creds = w
        .assume(Duration::from_secs(3600))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        creds.assumed_role_arn,
        "arn:aws:sts::123456789012:assumed-role/onprem-web/keyfed-web-01.example.com"
    );
    assert!(creds.access_key_id.starts_with("ASIA"), "{creds:?}");
    assert_eq!(
        unix_seconds(creds.expiration),
        unix_seconds(w.clock.now()) + 3600,
        "credentials expire DurationSeconds after now, by the emulator's clock"
    );
    let issued = w.sts.issued_credentials();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].access_key_id, creds.access_key_id);
    assert_eq!(issued[0].audience, AUDIENCE);
    assert_eq!(issued[0].role_arn, w.sts.role_arn(ROLE));
    assert_eq!(w.sts.assume_role_calls(), 1);

    let shown = format!("{creds:?}");
    assert!(
        !shown.contains(creds.secret_access_key.expose_secret()),
        "{shown}"
    );
    assert!(
        !shown.contains(creds.session_token.expose_secret()),
        "{shown}"
    );
}

#[tokio::test]
async fn session_policies_reach_sts() {
    let w = world(|r| r).await;
    let token = w.token().await;
    let mut req = request(&w.sts, Duration::from_secs(900));
    req.policy = Some(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#.to_owned());
    req.policy_arns = vec![
        "arn:aws:iam::aws:policy/ReadOnlyAccess".to_owned(),
        "arn:aws:iam::123456789012:policy/extra".to_owned(),
    ];
    w.client
        .assume_role_with_web_identity(&req, &token)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let seen = w.sts.last_assume_role().unwrap_or_default();
    assert_eq!(seen.version.as_deref(), Some("2011-06-15"));
    assert_eq!(seen.duration_seconds.as_deref(), Some("900"));
    assert_eq!(seen.policy, req.policy);
    assert_eq!(seen.policy_arns, req.policy_arns);

    req.policy = Some("{not json".to_owned());
    let e = refused(w.client.assume_role_with_web_identity(&req, &token).await);
    assert_eq!(e.code(), Some("MalformedPolicyDocument"), "{e}");
    assert_eq!(e.advice(), Advice::Stop { side: Side::Config });
}

#[tokio::test]
async fn wrong_audience_asks_for_a_fresh_token_and_names_the_audience_list() {
    let w = world(|r| r).await;
    let token = token(&w.kc, &w.clock, "other-audience", "api.example.com", None).await;
    let e = refused(
        w.client
            .assume_role_with_web_identity(&request(&w.sts, Duration::from_secs(3600)), &token)
            .await,
    );
    assert_no_secret_in(&e, &token);
    assert_eq!(e.code(), Some("InvalidIdentityToken"), "{e}");
    assert_eq!(e.advice(), Advice::FreshSubjectToken);
    let text = e.to_string();
    assert!(text.contains("\"Incorrect token audience\""), "{text}");
    assert!(text.contains(&w.sts.role_arn(ROLE)), "{text}");
    assert!(
        text.contains("audiences (client ID list)") && text.contains("\"api.example.com\""),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_provider_says_to_create_one_for_the_issuer() {
    let clock = ManualClock::starting_now();
    let kc = keycloak(&clock, None).await;
    let elsewhere = "https://sso.elsewhere.example/realms/infra";
    let sts = StsEmulator::builder()
        .provider(OidcProvider::new(elsewhere, &[AUDIENCE]))
        .role(Role::new(ROLE, elsewhere))
        .clock(Arc::new(clock.clone()))
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let token = token(&kc, &clock, "aws-audience", AUDIENCE, None).await;
    let e = refused(
        client(&sts, None)
            .assume_role_with_web_identity(&request(&sts, Duration::from_secs(3600)), &token)
            .await,
    );
    assert_no_secret_in(&e, &token);
    assert_eq!(e.code(), Some("InvalidIdentityToken"), "{e}");
    assert_eq!(e.advice(), Advice::FreshSubjectToken);
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "No OpenIDConnect provider found in your account for {}",
            kc.issuer_url()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("exactly the token's iss \"{}\"", kc.issuer_url())),
        "{text}"
    );
}

#[tokio::test]
async fn failed_trust_condition_is_access_denied_and_final() {
    let w = world(|r| r.condition(Condition::string_equals("sub", &["someone-else"]))).await;
    let e = refused(w.assume(Duration::from_secs(3600)).await);
    assert_eq!(e.code(), Some("AccessDenied"), "{e}");
    assert_eq!(e.advice(), Advice::Stop { side: Side::Cloud });
    let text = e.to_string();
    assert!(text.contains("HTTP 403"), "{text}");
    assert!(
        text.contains("Not authorized to perform sts:AssumeRoleWithWebIdentity"),
        "{text}"
    );
    let provider = crate::provider_name::provider_name(&w.kc.issuer_url());
    assert!(text.contains(&format!("\"{provider}:sub\"")), "{text}");
}

#[tokio::test]
async fn matching_trust_conditions_let_the_token_in() {
    let w = world(|r| {
        r.condition(Condition::string_like("sub", &["*"]))
            .condition(Condition::string_equals("aud", &[AUDIENCE]))
            .condition(Condition::string_equals("azp", &[CLIENT_ID]))
    })
    .await;
    w.assume(Duration::from_secs(3600))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn unknown_role_is_access_denied() {
    let w = world(|r| r).await;
    let token = w.token().await;
    let mut req = request(&w.sts, Duration::from_secs(3600));
    req.role_arn = w.sts.role_arn("no-such-role");
    let e = refused(w.client.assume_role_with_web_identity(&req, &token).await);
    assert_eq!(e.code(), Some("AccessDenied"), "{e}");
    assert_eq!(e.advice(), Advice::Stop { side: Side::Cloud });
}

#[tokio::test]
async fn duration_beyond_the_roles_maximum_says_what_to_change() {
    let w = world(|r| r).await;
    let e = refused(w.assume(Duration::from_secs(7200)).await);
    assert_eq!(e.code(), Some("ValidationError"), "{e}");
    assert_eq!(e.advice(), Advice::Stop { side: Side::Config });
    let text = e.to_string();
    assert!(
        text.contains(
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
        ),
        "{text}"
    );
    assert!(
        text.contains("7200 s") && text.contains("MaxSessionDuration"),
        "{text}"
    );

    let longer = world(|r| r.max_session(Duration::from_secs(12 * 3600))).await;
    let creds = longer
        .assume(Duration::from_secs(7200))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        unix_seconds(creds.expiration),
        unix_seconds(longer.clock.now()) + 7200
    );
}

#[tokio::test]
async fn expired_token_asks_for_a_fresh_one() {
    let w = world(|r| r).await;
    let token = w.token().await;
    // Keycloak's 300 s lifespan plus STS's 5-minute grace, and a second more.
    w.clock.advance(Duration::from_secs(601));
    let e = refused(
        w.client
            .assume_role_with_web_identity(&request(&w.sts, Duration::from_secs(3600)), &token)
            .await,
    );
    assert_no_secret_in(&e, &token);
    assert_eq!(e.code(), Some("ExpiredTokenException"), "{e}");
    assert_eq!(e.advice(), Advice::FreshSubjectToken);
    assert!(
        e.to_string().contains("Token expired: current date/time"),
        "{e}"
    );
}

#[tokio::test]
async fn a_token_within_stss_grace_period_is_accepted() {
    let w = world(|r| r).await;
    let token = w.token().await;
    w.clock.advance(Duration::from_secs(300 + 299));
    w.client
        .assume_role_with_web_identity(&request(&w.sts, Duration::from_secs(3600)), &token)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn server_errors_and_throttling_back_off() {
    let w = world(|r| r).await;
    w.sts.control().inject(
        "/",
        Fault::Status {
            status: 500,
            body: r#"{"message":"internal"}"#.to_owned(),
        },
        Some(1),
    );
    let e = refused(w.assume(Duration::from_secs(3600)).await);
    assert!(matches!(e, AwsError::Http { status: 500, .. }), "{e:?}");
    assert_eq!(e.advice(), Advice::Backoff);

    let throttled =
        crate::emulator::xml::error(400, "Throttling", "Rate exceeded", "req-throttled");
    w.sts.control().inject(
        "/",
        Fault::Status {
            status: 400,
            body: throttled,
        },
        Some(1),
    );
    let e = refused(w.assume(Duration::from_secs(3600)).await);
    assert_eq!(e.code(), Some("Throttling"), "{e}");
    assert_eq!(e.advice(), Advice::Backoff);
    assert!(e.to_string().contains("\"Rate exceeded\""), "{e}");

    let unavailable =
        crate::emulator::xml::error(503, "ServiceUnavailable", "Service is unavailable", "r");
    w.sts.control().inject(
        "/",
        Fault::Status {
            status: 503,
            body: unavailable,
        },
        Some(1),
    );
    let e = refused(w.assume(Duration::from_secs(3600)).await);
    assert_eq!(e.advice(), Advice::Backoff, "{e}");

    // The faults were used up; STS works again.
    w.assume(Duration::from_secs(3600))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(w.sts.control().hits("/"), 4);
    assert_eq!(
        w.sts.assume_role_calls(),
        1,
        "faulted requests never reached STS"
    );
}

#[tokio::test]
async fn a_dropped_connection_backs_off() {
    let w = world(|r| r).await;
    w.sts.control().inject("/", Fault::Drop, Some(1));
    let e = refused(w.assume(Duration::from_secs(3600)).await);
    assert!(matches!(e, AwsError::Transport { .. }), "{e:?}");
    assert_eq!(e.advice(), Advice::Backoff);
    assert!(e.to_string().contains(&w.sts.endpoint_url()), "{e}");
}

#[tokio::test]
async fn a_malformed_answer_backs_off() {
    let w = world(|r| r).await;
    w.sts.control().inject("/", Fault::Malformed, Some(1));
    let e = refused(w.assume(Duration::from_secs(3600)).await);
    assert!(matches!(e, AwsError::InvalidResponse { .. }), "{e:?}");
    assert_eq!(e.advice(), Advice::Backoff);
}

/// issue 7: STS answers were buffered whatever their size; the README promises 1 MiB.
#[tokio::test]
async fn an_answer_over_1_mib_is_refused() {
    let w = world(|r| r).await;
    for status in [200, 500] {
        w.sts.control().inject(
            "/",
            Fault::Status {
                status,
                body: "x".repeat(2 << 20),
            },
            Some(1),
        );
        let e = refused(w.assume(Duration::from_secs(3600)).await);
        assert!(matches!(e, AwsError::InvalidResponse { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("STS answered with more than 1 MiB")
                && text.contains(&format!("HTTP {status}")),
            "{text}"
        );
        assert!(
            text.len() < 1000,
            "the body is not quoted: {} bytes",
            text.len()
        );
        assert_eq!(e.advice(), Advice::Backoff);
    }
    // Exactly 1 MiB is read (and is not an STS answer).
    w.sts.control().inject(
        "/",
        Fault::Status {
            status: 200,
            body: "x".repeat(1 << 20),
        },
        Some(1),
    );
    let e = refused(w.assume(Duration::from_secs(3600)).await);
    assert!(!e.to_string().contains("more than 1 MiB"), "{e}");
}

/// issue 7: an answer without a length (chunked) that never ends is cut at 1 MiB, not read
/// until the timeout with memory growing all the while.
#[tokio::test]
async fn an_endless_chunked_answer_is_cut_at_1_mib() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&sent);
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut request = vec![0u8; 64 << 10];
        let _ = stream.read(&mut request).await;
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: text/xml\r\ntransfer-encoding: chunked\r\n\r\n";
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = format!("4000\r\n{}\r\n", "<".repeat(0x4000));
        while stream.write_all(chunk.as_bytes()).await.is_ok() {
            counter.fetch_add(0x4000, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let client = client_at(
        &format!("http://127.0.0.1:{port}/"),
        HttpSettings {
            // Far beyond what the cap needs: a test that hit it would have failed the cap.
            timeout: Duration::from_secs(300),
            ..HttpSettings::default()
        },
    );
    let request = AssumeRoleRequest {
        role_arn: "arn:aws:iam::123456789012:role/onprem-web".to_owned(),
        session_name: "web-01".to_owned(),
        duration: Duration::from_secs(3600),
        policy: None,
        policy_arns: Vec::new(),
    };
    let e = refused(
        client
            .assume_role_with_web_identity(&request, &SecretString::from("not.a.jwt"))
            .await,
    );
    assert!(
        e.to_string().contains("STS answered with more than 1 MiB"),
        "{e}"
    );
    // The server wrote into socket buffers; keyfed stopped reading shortly after 1 MiB.
    let written = sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(written < 16 << 20, "{written} bytes were taken");
}

#[tokio::test]
async fn a_slow_sts_times_out_and_backs_off() {
    let w = world(|r| r).await;
    let quick = client_at(
        &w.sts.endpoint_url(),
        HttpSettings {
            timeout: Duration::from_millis(300),
            ..HttpSettings::default()
        },
    );
    w.sts
        .control()
        .inject("/", Fault::Delay(Duration::from_secs(3)), Some(1));
    let token = w.token().await;
    let e = refused(
        quick
            .assume_role_with_web_identity(&request(&w.sts, Duration::from_secs(3600)), &token)
            .await,
    );
    assert!(
        matches!(
            e,
            AwsError::Transport {
                timed_out: true,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.advice(), Advice::Backoff);
}

#[tokio::test]
async fn both_emulators_over_tls_with_a_ca_file() {
    let ca = TestCa::new().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.ca_pem()).unwrap_or_else(|e| panic!("{e}"));
    let clock = ManualClock::starting_now();
    let kc = keycloak(&clock, Some(&ca)).await;
    let sts = StsEmulator::builder()
        .provider(OidcProvider::new(&kc.issuer_url(), &[AUDIENCE]))
        .role(Role::new(ROLE, &kc.issuer_url()))
        .clock(Arc::new(clock.clone()))
        .tls(&ca)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(sts.endpoint_url().starts_with("https://localhost:"));
    let token = token(&kc, &clock, "aws-audience", AUDIENCE, Some(ca_file.clone())).await;
    let creds = client(&sts, Some(ca_file))
        .assume_role_with_web_identity(&request(&sts, Duration::from_secs(3600)), &token)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        creds.assumed_role_arn.rsplit('/').next(),
        Some("keyfed-web-01.example.com")
    );

    // Without the CA the emulator's certificate is not trusted: a transport error.
    let e = refused(
        client(&sts, None)
            .assume_role_with_web_identity(&request(&sts, Duration::from_secs(3600)), &token)
            .await,
    );
    assert!(matches!(e, AwsError::Transport { .. }), "{e:?}");
    assert!(e.to_string().contains("set ca_file"), "{e}");
}

/// An SDK client that signs with the issued credentials, as a program on the host would.
fn signed_client(sts: &StsEmulator, creds: &AwsCredentials) -> aws_sdk_sts::Client {
    let static_creds = aws_sdk_sts::config::Credentials::new(
        creds.access_key_id.clone(),
        creds.secret_access_key.expose_secret(),
        Some(creds.session_token.expose_secret().to_owned()),
        Some(creds.expiration),
        "keyfed-test",
    );
    let http =
        crate::http_client::build(&HttpSettings::default(), true).unwrap_or_else(|e| panic!("{e}"));
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("eu-west-1"))
        .endpoint_url(sts.endpoint_url())
        .credentials_provider(static_creds)
        .http_client(http)
        .retry_config(aws_smithy_types::retry::RetryConfig::disabled())
        .build();
    aws_sdk_sts::Client::from_conf(config)
}

#[tokio::test]
async fn issued_credentials_sign_get_caller_identity() {
    use aws_sdk_sts::error::ProvideErrorMetadata as _;

    let w = world(|r| r).await;
    let creds = w
        .assume(Duration::from_secs(900))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let identity = signed_client(&w.sts, &creds)
        .get_caller_identity()
        .send()
        .await
        .unwrap_or_else(|e| panic!("{:?}", e.into_service_error()));
    assert_eq!(identity.arn(), Some(creds.assumed_role_arn.as_str()));
    assert_eq!(identity.account(), Some("123456789012"));
    assert!(
        identity
            .user_id()
            .is_some_and(|id| id.starts_with("AROA") && id.ends_with(":keyfed-web-01.example.com")),
        "{identity:?}"
    );

    // A wrong secret: the signature does not match.
    let mut forged = creds.clone();
    forged.secret_access_key = SecretString::from("not-the-secret");
    let e = signed_client(&w.sts, &forged)
        .get_caller_identity()
        .send()
        .await
        .err()
        .map(|e| e.into_service_error());
    assert_eq!(
        e.as_ref().and_then(|e| e.code()),
        Some("SignatureDoesNotMatch")
    );

    // A key the emulator never issued.
    let mut unknown = creds.clone();
    unknown.access_key_id = "ASIAUNKNOWNUNKNOWN12".to_owned();
    let e = signed_client(&w.sts, &unknown)
        .get_caller_identity()
        .send()
        .await
        .err()
        .map(|e| e.into_service_error());
    assert_eq!(
        e.as_ref().and_then(|e| e.code()),
        Some("InvalidClientTokenId")
    );

    // Past their expiry, by the emulator's clock.
    w.clock.advance(Duration::from_secs(901));
    let e = signed_client(&w.sts, &creds)
        .get_caller_identity()
        .send()
        .await
        .err()
        .map(|e| e.into_service_error());
    assert_eq!(e.as_ref().and_then(|e| e.code()), Some("ExpiredToken"));
}
