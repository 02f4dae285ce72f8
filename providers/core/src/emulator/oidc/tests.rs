//! The verifier against a small issuer serving discovery and a JWKS the test edits: keys
//! cached and fetched again for an unknown `kid`, the policy's algorithms and `kid` rule,
//! forged and foreign signatures, and issuers that cannot be reached.

use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use super::*;
use crate::emulator::{Control, Fault, RunningServer, serve};

const BOTH: Policy = Policy {
    algorithms: &[Algorithm::RS256, Algorithm::ES256],
    require_kid: false,
};
const STRICT: Policy = Policy {
    algorithms: &[Algorithm::RS256, Algorithm::ES256],
    require_kid: true,
};

struct Key {
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

fn key(alg: Algorithm, kid: Option<&str>) -> Key {
    let (rcgen_alg, from_pem): (_, fn(&[u8]) -> _) = match alg {
        Algorithm::ES256 => (&rcgen::PKCS_ECDSA_P256_SHA256, EncodingKey::from_ec_pem),
        _ => (&rcgen::PKCS_RSA_SHA256, EncodingKey::from_rsa_pem),
    };
    let pair = rcgen::KeyPair::generate_for(rcgen_alg).unwrap_or_else(|e| panic!("{e}"));
    let encoding = from_pem(pair.serialize_pem().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap_or_else(|e| panic!("{e}"));
    jwk.common.key_id = kid.map(str::to_owned);
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let jwk = serde_json::to_value(jwk).unwrap_or_else(|e| panic!("{e}"));
    Key { alg, encoding, jwk }
}

/// An issuer publishing whatever JWKS the test puts in `jwks`.
struct Issuer {
    server: RunningServer,
    control: Control,
    jwks: Arc<Mutex<Vec<Value>>>,
}

impl Issuer {
    async fn start(keys: &[&Key]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let base = format!(
            "http://{}",
            listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
        );
        let jwks = Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect()));
        let discovery = json!({ "issuer": base, "jwks_uri": format!("{base}/jwks") });
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/jwks",
                get(|State(keys): State<Arc<Mutex<Vec<Value>>>>| async move {
                    let keys = keys.lock().unwrap_or_else(PoisonError::into_inner).clone();
                    axum::Json(json!({ "keys": keys }))
                }),
            )
            .with_state(Arc::clone(&jwks));
        let control = Control::default();
        let server =
            serve(router, listener, None, control.clone()).unwrap_or_else(|e| panic!("{e}"));
        Self {
            server,
            control,
            jwks,
        }
    }

    fn url(&self) -> String {
        self.server.base_url()
    }

    fn publish(&self, keys: &[&Key]) {
        *self.jwks.lock().unwrap_or_else(PoisonError::into_inner) =
            keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn sign(&self, key: &Key, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(key.alg);
        header.kid = kid.map(str::to_owned);
        let mut claims = claims.clone();
        claims["iss"] = json!(self.url());
        jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap_or_else(|e| panic!("{e}"))
    }

    fn jwks_fetches(&self) -> u64 {
        self.control.hits("/jwks")
    }
}

fn verifier() -> OidcVerifier {
    OidcVerifier::new([]).unwrap_or_else(|e| panic!("{e}"))
}

/// Why `token` is refused; fails the test when it verifies.
async fn refused(verifier: &OidcVerifier, token: &str, policy: &Policy) -> OidcFailure {
    match verify(verifier, token, policy).await {
        Ok(claims) => panic!("verified, with {claims:?}"),
        Err(failure) => failure,
    }
}

/// An issuer publishing one RSA key with `kid` "r1", and a fresh verifier.
async fn one_key() -> (Key, Issuer, OidcVerifier) {
    let rsa = key(Algorithm::RS256, Some("r1"));
    let issuer = Issuer::start(&[&rsa]).await;
    (rsa, issuer, verifier())
}

async fn verify(
    verifier: &OidcVerifier,
    token: &str,
    policy: &Policy,
) -> Result<Claims, OidcFailure> {
    let jwt = UnverifiedJwt::parse(token)?;
    verifier.verify(jwt, policy).await.map(|v| v.claims)
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_and_their_claims_decode() {
    let (rsa, ec) = (
        key(Algorithm::RS256, Some("r1")),
        key(Algorithm::ES256, Some("e1")),
    );
    let issuer = Issuer::start(&[&rsa, &ec]).await;
    let verifier = verifier();

    let token = issuer.sign(
        &rsa,
        Some("r1"),
        &json!({"sub": "svc", "aud": "one", "exp": 42}),
    );
    let jwt = UnverifiedJwt::parse(&token).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((jwt.algorithm(), jwt.kid()), (Algorithm::RS256, Some("r1")));
    let signature = token.rsplit('.').next().unwrap_or_default();
    assert!(!format!("{jwt:?}").contains(signature), "{jwt:?}");
    let verified = verifier
        .verify(jwt, &STRICT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(verified.issuer, issuer.url());
    assert_eq!(verified.kid.as_deref(), Some("r1"));
    assert_eq!(verified.claims.string("sub"), Some("svc"));
    assert_eq!(verified.claims.audiences(), ["one"]);
    assert_eq!(verified.claims.seconds("exp"), Some(42));

    let token = issuer.sign(&ec, Some("e1"), &json!({"aud": ["a", 7, "b"], "exp": -1}));
    let claims = verify(&verifier, &token, &STRICT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claims.audiences(), ["a", "b"]);
    assert_eq!(claims.seconds("exp"), None);
    assert_eq!(claims.string("sub"), None);
}

#[tokio::test]
async fn keys_are_cached_and_fetched_again_only_for_an_unknown_kid() {
    let (old, new) = (
        key(Algorithm::RS256, Some("old")),
        key(Algorithm::RS256, Some("new")),
    );
    let issuer = Issuer::start(&[&old]).await;
    let verifier = verifier();
    let claims = json!({"sub": "svc"});

    for _ in 0..3 {
        let token = issuer.sign(&old, Some("old"), &claims);
        assert!(verify(&verifier, &token, &BOTH).await.is_ok());
    }
    assert_eq!(issuer.jwks_fetches(), 1);

    // Rotated in after the keys were cached: found by fetching again.
    issuer.publish(&[&old, &new]);
    let token = issuer.sign(&new, Some("new"), &claims);
    assert!(verify(&verifier, &token, &BOTH).await.is_ok());
    assert_eq!(issuer.jwks_fetches(), 2);

    // A kid the issuer never published: one more fetch, then a refusal.
    let token = issuer.sign(&new, Some("nobody"), &claims);
    assert_eq!(
        refused(&verifier, &token, &BOTH).await,
        OidcFailure::UnknownKey
    );
    assert_eq!(issuer.jwks_fetches(), 3);
}

#[tokio::test]
async fn the_policy_decides_algorithms_and_whether_a_kid_is_needed() {
    let (rsa, issuer, verifier) = one_key().await;
    let claims = json!({"iss": issuer.url()});

    // HMAC with anything as the secret, before any key is fetched.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"the-public-key-as-a-secret"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        refused(&verifier, &hs, &BOTH).await,
        OidcFailure::Algorithm(Algorithm::HS256)
    );
    let only_es: Policy = Policy {
        algorithms: &[Algorithm::ES256],
        require_kid: false,
    };
    let token = issuer.sign(&rsa, Some("r1"), &claims);
    assert_eq!(
        refused(&verifier, &token, &only_es).await,
        OidcFailure::Algorithm(Algorithm::RS256)
    );
    assert_eq!(issuer.jwks_fetches(), 0);

    // Without a kid: refused where one is required, else checked with the only key.
    let no_kid = issuer.sign(&rsa, None, &claims);
    assert_eq!(
        refused(&verifier, &no_kid, &STRICT).await,
        OidcFailure::MissingKid
    );
    assert!(verify(&verifier, &no_kid, &BOTH).await.is_ok());
    // …and with several keys there is no telling which.
    let other = key(Algorithm::RS256, Some("r2"));
    issuer.publish(&[&rsa, &other]);
    let verifier = self::verifier();
    assert_eq!(
        refused(&verifier, &no_kid, &BOTH).await,
        OidcFailure::UnknownKey
    );
}

#[tokio::test]
async fn forged_and_foreign_signatures_do_not_verify() {
    let (rsa, issuer, verifier) = one_key().await;

    // Claims changed under a genuine signature.
    let genuine = issuer.sign(&rsa, Some("r1"), &json!({"sub": "svc"}));
    let mut parts: Vec<String> = genuine.split('.').map(str::to_owned).collect();
    let forged = json!({"iss": issuer.url(), "sub": "admin"}).to_string();
    parts[1] = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged)
    };
    assert_eq!(
        refused(&verifier, &parts.join("."), &BOTH).await,
        OidcFailure::BadSignature
    );

    // A key the issuer does not publish, claiming the published kid.
    let foreign = key(Algorithm::RS256, Some("r1"));
    let token = issuer.sign(&foreign, Some("r1"), &json!({"sub": "svc"}));
    assert_eq!(
        refused(&verifier, &token, &BOTH).await,
        OidcFailure::BadSignature
    );

    // A published encryption key is not a signing key.
    let mut enc = key(Algorithm::RS256, Some("e1"));
    enc.jwk["use"] = json!("enc");
    issuer.publish(&[&rsa, &enc]);
    let token = issuer.sign(&enc, Some("e1"), &json!({"sub": "svc"}));
    assert_eq!(
        refused(&verifier, &token, &BOTH).await,
        OidcFailure::UnknownKey
    );
}

#[tokio::test]
async fn tokens_that_are_not_jwts_or_name_no_issuer_fail_before_any_fetch() {
    let (rsa, issuer, verifier) = one_key().await;
    for garbage in [
        "not-a-jwt",
        "a.b.c",
        "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln",
        "",
    ] {
        assert_eq!(
            UnverifiedJwt::parse(garbage).err(),
            Some(OidcFailure::Malformed),
            "{garbage:?}"
        );
    }
    let no_issuer = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub": "svc"}),
        &rsa.encoding,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        refused(&verifier, &no_issuer, &BOTH).await,
        OidcFailure::MissingIssuer
    );
    assert_eq!(issuer.control.hits("/"), 0);
}

#[tokio::test]
async fn an_issuer_whose_keys_cannot_be_fetched_says_where_and_why() {
    let (rsa, issuer, verifier) = one_key().await;
    let token = issuer.sign(&rsa, Some("r1"), &json!({"sub": "svc"}));

    let faults = [
        ("/.well-known", Fault::Drop, "openid-configuration"),
        (
            "/jwks",
            Fault::Status {
                status: 404,
                body: "{}".to_owned(),
            },
            "HTTP 404",
        ),
        ("/jwks", Fault::Malformed, "not JSON"),
        (
            "/jwks",
            Fault::Status {
                status: 200,
                body: "{\"keys\":{}}".to_owned(),
            },
            "holds no keys array",
        ),
    ];
    for (path, fault, says) in faults {
        issuer.control.inject(path, fault, Some(1));
        match verify(&verifier, &token, &BOTH).await {
            Err(OidcFailure::KeysUnavailable(why)) => assert!(why.contains(says), "{why}"),
            other => panic!("{other:?}"),
        }
    }
    // A failed fetch is not cached: the issuer is asked again and the token verifies.
    assert!(verify(&verifier, &token, &BOTH).await.is_ok());
}

#[tokio::test]
async fn a_key_from_elsewhere_checks_a_signature_alone() {
    let rsa = key(Algorithm::RS256, None);
    let pem_key = DecodingKey::from_jwk(
        &serde_json::from_value::<Jwk>(rsa.jwk.clone()).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Expired long ago and for no one: only the signature counts.
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &json!({"exp": 1, "aud": "x"}),
        &rsa.encoding,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(signature_verifies(&token, &pem_key, Algorithm::RS256));
    assert!(!signature_verifies(&token, &pem_key, Algorithm::PS256));
    assert!(!signature_verifies(
        &format!("{token}x"),
        &pem_key,
        Algorithm::RS256
    ));
}
