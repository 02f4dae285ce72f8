//! The real Keycloak server (issue 8, items 4 and 5): a realm signing key rotated and then
//! disabled while keyfed runs, and the whole AWS path — a real Keycloak token traded at moto's
//! STS, the credentials used by the AWS CLI. The server is the one `tests/run` starts (see
//! `util/keycloak.rs`); each test builds a realm of its own on it.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::interop::{ACCOUNT, ROLE_ARN, cli_caller_arn, moto, shared_file_env};
use crate::util::keycloak::{Clients, Server, confidential};
use crate::util::{
    API_AUD, Fixture, SECRET, SecretFile, claims, issuer, key_pair, leaks, target,
    wait_until_within,
};

/// The short-lived client's Access Token Lifespan: above keyfed's 30 s expiry margin (a token
/// with less life is never handed out), short enough that the daemon refreshes about 30 s
/// after its first token.
const LIFESPAN_SECONDS: u64 = 45;

/// How long a scheduled refresh may take to come: two thirds of the lifespan plus the 10 %
/// jitter, with room to spare on a busy machine.
const REFRESH_BOUND: Duration = Duration::from_secs(LIFESPAN_SECONDS * 2);

/// The log line keyfed writes (at debug level) for each JWKS it fetches.
const JWKS_FETCHED: &str = "JWKS fetched";

fn jwks_fetches(log: &str) -> usize {
    log.lines().filter(|l| l.contains(JWKS_FETCHED)).count()
}

/// The JOSE header of a JWT (test-side, no verification).
fn header(jwt: &str) -> Value {
    use base64::Engine as _;
    let part = jwt.trim().split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap_or_else(|e| panic!("not a JWT {jwt:?}: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("header: {e}"))
}

/// The `kid` of the token in `path`, once there is one.
fn kid_in(fx: &Fixture, path: &str) -> Option<String> {
    let jwt = std::fs::read_to_string(fx.path(path)).ok()?;
    header(&jwt)["kid"].as_str().map(str::to_owned)
}

/// The realm's RSA key provider `name`, holding `private_pem`, above the generated key's
/// priority (100); returns the component's id and the `kid` Keycloak gives the key.
async fn add_rsa_key(
    server: &Server,
    realm: &str,
    name: &str,
    private_pem: &str,
) -> (String, String) {
    server
        .create(
            &format!("/{realm}/components"),
            json!({
                "name": name,
                "providerId": "rsa",
                "providerType": "org.keycloak.keys.KeyProvider",
                "config": {
                    "priority": ["200"],
                    "enabled": ["true"],
                    "active": ["true"],
                    "algorithm": ["RS256"],
                    "privateKey": [private_pem],
                },
            }),
        )
        .await;
    let (_, found) = server
        .admin("GET", &format!("/{realm}/components?name={name}"), None)
        .await;
    let id = found[0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no component {name}: {found}"))
        .to_owned();
    let (_, keys) = server.admin("GET", &format!("/{realm}/keys"), None).await;
    let kid = keys["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["providerId"] == id.as_str())
        .and_then(|k| k["kid"].as_str())
        .unwrap_or_else(|| panic!("no key of provider {id}: {keys}"))
        .to_owned();
    (id, kid)
}

/// Switches the key provider `id` off: Keycloak stops signing with it and drops it from the
/// JWKS.
async fn disable_key(server: &Server, realm: &str, id: &str) {
    let path = format!("/{realm}/components/{id}");
    let (_, mut component) = server.admin("GET", &path, None).await;
    component["config"]["enabled"] = json!(["false"]);
    let (status, answer) = server.admin("PUT", &path, Some(component)).await;
    assert_eq!(status, 204, "PUT {path}: {answer}\n{}", server.log_tail());
}

/// The `kid`s the realm's JWKS publishes, as anyone fetching it sees them.
async fn published_kids(server: &Server, issuer: &str) -> Vec<String> {
    let jwks: Value = server
        .http
        .get(format!("{issuer}/protocol/openid-connect/certs"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("JWKS: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("JWKS: {e}"));
    jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect()
}

/// A token endpoint that answers every request with `access_token`; stops when dropped.
struct FakeTokenEndpoint {
    url: String,
    server: tokio::task::JoinHandle<()>,
}

impl FakeTokenEndpoint {
    async fn start(access_token: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        let answer = Arc::new(json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 120,
        }));
        let router = axum::Router::new().route(
            "/token",
            axum::routing::post(move || {
                let answer = Arc::clone(&answer);
                async move { axum::Json((*answer).clone()) }
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url: format!("http://127.0.0.1:{port}/token"),
            server,
        }
    }
}

impl Drop for FakeTokenEndpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A token as the realm would issue it — `template`'s claims, a fresh `iat`, `exp` and `jti` —
/// signed with `private_pem` under `kid`.
fn forge(template: &Value, private_pem: &str, kid: &str) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use keyfed_core::clock::{Clock as _, SystemClock, unix_seconds};
    let now = unix_seconds(SystemClock.now());
    let mut claims = template.clone();
    claims["iat"] = json!(now);
    claims["exp"] = json!(now + 120);
    claims["jti"] = json!(uuid::Uuid::new_v4().to_string());
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    jsonwebtoken::encode(&header, &claims, &key).unwrap_or_else(|e| panic!("{e}"))
}

/// Issue 8, item 4: a new realm key with a higher priority, added while `keyfed run` is up,
/// signs the next token; the daemon fetches the JWKS once more for its `kid` and carries on
/// without a failed refresh. A token signed by that key after it is disabled is refused, even
/// though keyfed is handed it by a token endpoint and its claims are the realm's.
#[tokio::test]
async fn a_rotated_realm_key_is_followed_and_a_disabled_one_refused() {
    let test = "a_rotated_realm_key_is_followed_and_a_disabled_one_refused";
    let Some(server) = Server::from_env(test) else {
        return;
    };
    let fx = Fixture::new();
    let realm = format!("rotation-{}", std::process::id());
    let url = server.realm(&realm, &Clients::of(&fx)).await;
    server
        .create(
            &format!("/{realm}/clients"),
            confidential(json!({
                "clientId": "host-short",
                "clientAuthenticatorType": "client-secret",
                "secret": SECRET,
                "attributes": { "access.token.lifespan": LIFESPAN_SECONDS.to_string() },
            })),
        )
        .await;
    fx.write_credentials();
    let port = crate::util::free_port();
    let corp = issuer("corp", "host-short", "client_secret_basic");
    let short_lived = "min_token_lifetime = \"20s\"\n";
    fx.write(
        "keyfed.toml",
        &format!(
            "{corp}\n[control]\nsocket = \"keyfed.sock\"\n\n{}{short_lived}\
             outputs = [ {{ kind = \"token\", path = \"t.jwt\" }} ]\n\n\
             [endpoint]\nlisten = [\"127.0.0.1:{port}\"]\ncontainer_token_file = \"container-token\"\n",
            target("t", "corp", API_AUD, "api-audience")
        )
        .replace("{issuer}", &url),
    );
    fx.known.add_file(fx.path("t.jwt"), SecretFile::Jwt);
    let daemon = fx.daemon().await;
    crate::util::wait_until("the daemon's first token", async || {
        kid_in(&fx, "t.jwt").is_some()
    })
    .await;
    let first_kid = kid_in(&fx, "t.jwt").unwrap_or_default();
    // The token file can be read before the test has read the log line that preceded it.
    crate::util::wait_until("the daemon's log of its JWKS fetch", async || {
        jwks_fetches(&daemon.log_so_far()) >= 1
    })
    .await;
    assert_eq!(
        jwks_fetches(&daemon.log_so_far()),
        1,
        "{}",
        daemon.log_so_far()
    );

    // A key of the test's own, so it can sign a token with it later.
    let rotated = key_pair(&rcgen::PKCS_RSA_SHA256);
    fx.known.add(
        "a line of the rotated realm key",
        &leaks::key_middle(&rotated.private_pem),
    );
    let (component, new_kid) = add_rsa_key(&server, &realm, "rotated", &rotated.private_pem).await;
    assert_ne!(new_kid, first_kid);
    let started = std::time::Instant::now();
    wait_until_within(
        REFRESH_BOUND,
        "the daemon's next token, from a scheduled refresh",
        async || kid_in(&fx, "t.jwt").is_some_and(|kid| kid != first_kid),
    )
    .await;
    let waited = started.elapsed();
    assert_eq!(
        kid_in(&fx, "t.jwt").as_deref(),
        Some(new_kid.as_str()),
        "the next token is signed with the new key"
    );
    let log = daemon.log_so_far();
    assert_eq!(
        jwks_fetches(&log),
        2,
        "the new kid made the daemon fetch the JWKS once more:\n{log}"
    );
    assert!(log.contains("reason=\"unknown kid\""), "{log}");
    assert!(!log.contains("refresh failed"), "{log}");
    let states = fx.status_json().await;
    let t = &states[0];
    assert_eq!(t["state"], "fresh", "{states}");
    assert_eq!(t["last_error"], Value::Null, "{states}");
    let metrics = crate::util::text_of(
        crate::util::http::client().get(format!("http://127.0.0.1:{port}/metrics")),
    )
    .await;
    for (result, count) in [("failure", 0), ("success", 2)] {
        let line = format!("keyfed_refreshes_total{{target=\"t\",result=\"{result}\"}} {count}\n");
        assert!(metrics.contains(&line), "{line:?} in:\n{metrics}");
    }

    // keyfed is handed, by a token endpoint of the test's, a token the realm could have issued
    // (its claims, signed with the new key): accepted while the key is published...
    let template = claims(&std::fs::read_to_string(fx.path("t.jwt")).unwrap_or_default());
    let forged_config = fx.path("forged.toml");
    let forged_config = forged_config.to_str().unwrap_or_default();
    let forged_run = async |token: String| {
        fx.known.add(
            "a token the test signed",
            token.rsplit('.').next().unwrap_or_default(),
        );
        let endpoint = FakeTokenEndpoint::start(token).await;
        fx.write(
            "forged.toml",
            &format!(
                "{corp}token_endpoint = \"{}\"\n\n{}{short_lived}",
                endpoint.url,
                target("t", "corp", API_AUD, "api-audience")
            )
            .replace("{issuer}", &url),
        );
        fx.keyfed_raw(&["--config", forged_config, "token", "t", "--decode"], &[])
            .await
    };
    let accepted = forged_run(forge(&template, &rotated.private_pem, &new_kid)).await;
    accepted.ok();
    let decoded: Value = serde_json::from_str(&accepted.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", accepted.stdout));
    assert_eq!(decoded["header"]["kid"], new_kid.as_str());

    // ...and refused once it is disabled, after keyfed fetched the JWKS again to be sure.
    disable_key(&server, &realm, &component).await;
    let kids = published_kids(&server, &url).await;
    assert!(
        kids.contains(&first_kid) && !kids.contains(&new_kid),
        "{kids:?}"
    );
    let refused = forged_run(forge(&template, &rotated.private_pem, &new_kid)).await;
    refused.fails_with(1).says(&format!(
        "error: issuer 'corp': the token for audience \"{API_AUD}\" was refused: no key in the issuer's JWKS matches its kid \"{new_kid}\", even after fetching the JWKS again\n  hint: the key that signed it is not published by the issuer"
    ));
    assert_eq!(
        jwks_fetches(&refused.stderr),
        2,
        "fetched once, then once more for the unknown kid:\n{}",
        refused.stderr
    );
    daemon.stop().await;
    // Past the harness's capture, for the README's record of the real server's cost.
    let _ = writeln!(
        std::io::stderr(),
        "{test}: the new key's token came {waited:?} after the key was added"
    );
}

/// Issue 8, item 5: the whole AWS path with a real Keycloak token: `keyfed once` trades it at
/// moto's STS (which does not check the token's signature, so the real server's token does) for
/// a shared credentials file and a `credential_process` document, and the AWS CLI gets the
/// assumed role's identity from the file and from `credential_process = keyfed
/// credential-process`, which (no daemon running) fetches a real token itself.
#[tokio::test]
async fn the_aws_cli_gets_an_identity_through_a_real_keycloak_token() {
    let Some(server) =
        Server::from_env("the_aws_cli_gets_an_identity_through_a_real_keycloak_token")
    else {
        return;
    };
    let moto = moto().await;
    let fx = Fixture::new();
    let realm = format!("aws-path-{}", std::process::id());
    let url = server.realm(&realm, &Clients::of(&fx)).await;
    fx.write_credentials();
    let session = "real-keycloak";
    fx.write(
        "keyfed.toml",
        &format!(
            "{}\n[control]\nsocket = \"keyfed.sock\"\n\n\
             [targets.aws]\nissuer = \"corp\"\nscope = \"aws-audience\"\n\
             aws = {{ role_arn = \"{ROLE_ARN}\", region = \"us-east-1\", endpoint_url = \"{}\", session_name = \"{session}\" }}\n\
             outputs = [ {{ kind = \"aws-credentials\", path = \"aws/credentials\", profile = \"default\" }},\n\
                         {{ kind = \"credential-process-json\", path = \"aws/process.json\" }} ]\n",
            issuer("corp", "host-secret", "client_secret_basic"),
            moto.url
        )
        .replace("{issuer}", &url),
    );
    fx.known
        .add_file(fx.path("aws/credentials"), SecretFile::AwsIni);
    fx.known
        .add_file(fx.path("aws/process.json"), SecretFile::AwsJson);
    let once = fx.keyfed(&["once"]).await;
    once.ok();
    assert!(
        once.stderr.contains("token received") && once.stderr.contains(JWKS_FETCHED),
        "keyfed checked the real server's token:\n{}",
        once.stderr
    );
    let document: Value = serde_json::from_str(
        &std::fs::read_to_string(fx.path("aws/process.json")).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("aws/process.json: {e}"));
    assert_eq!(document["Version"], 1, "{document}");
    let expected = format!("arn:aws:sts::{ACCOUNT}:assumed-role/interop/{session}");

    let from_file = cli_caller_arn(&fx, &moto.url, &shared_file_env(&fx)).await;
    assert_eq!(from_file, expected, "the shared credentials file");

    let daemonless = fx.daemonless("aws");
    fx.write(
        "aws-config",
        &format!(
            "[default]\ncredential_process = {} --config {} credential-process aws\nregion = us-east-1\n",
            fx.keyfed_wrapper().display(),
            fx.path("keyfed.toml").display()
        ),
    );
    let from_process = cli_caller_arn(
        &fx,
        &moto.url,
        &[
            (
                "AWS_CONFIG_FILE",
                fx.path("aws-config").display().to_string(),
            ),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
            ("XDG_RUNTIME_DIR", daemonless.runtime.display().to_string()),
        ],
    )
    .await;
    assert_eq!(from_process, expected, "credential_process");
    assert!(
        fx.check_wrapped() >= 1,
        "the AWS CLI ran keyfed credential-process"
    );
    // With no daemon to ask, keyfed got and checked a real token of its own for it.
    let logs: String = std::fs::read_dir(fx.path("wrapped"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "stderr"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(
        logs.contains("token received") && logs.contains(JWKS_FETCHED),
        "{logs}"
    );
}
