//! Issue 12: doctor's judgements of a token's claims against each cloud's rules, the clock
//! check, and how errors' hints become fixes. The checks against live emulators are in
//! `tests/doctor.rs`.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyfed_core::clock::{from_unix_seconds, unix_seconds};
use keyfed_core::token_rules::SubjectTokenRules;
use keyfed_keycloak::{DecodedJwt, TokenRequest};
use serde_json::{Value, json};
use url::Url;

use super::claims::{Claimed, check};
use super::report::{Check, Report, Status, TargetReport, split_hint};
use crate::config::{Access, Exchange, Target};
use crate::outputs::{Output, OutputKind};

const AWS: &SubjectTokenRules = &keyfed_aws::config::SUBJECT_TOKEN;
const GCP: &SubjectTokenRules = &keyfed_gcp::config::SUBJECT_TOKEN;
const AZURE: &SubjectTokenRules = &keyfed_azure::config::SUBJECT_TOKEN;

fn target(audience: &str, outputs: Vec<Output>) -> Target {
    Target {
        name: "prod".to_owned(),
        issuer: "corp".to_owned(),
        request: TokenRequest {
            audience: audience.to_owned(),
            strict_audience: false,
            scope: Some("cloud-audience".to_owned()),
            resource: None,
            audience_parameter: false,
            min_remaining: Duration::from_secs(60),
        },
        exchange: Exchange::Token,
        outputs,
        container_path: None,
        access: Access::default(),
    }
}

/// Target `prod` as the configuration loads it from `table` (its keys after `issuer`), so its
/// cloud's settings are real.
fn loaded(table: &str) -> Target {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("keyfed.toml");
    let text = format!(
        "[issuers.corp]\nurl = \"https://sso.example.com/realms/infra\"\nclient_id = \"host-01\"\n\
         client_secret_file = \"secret\"\n\n[targets.prod]\nissuer = \"corp\"\n{table}"
    );
    std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
    let host = crate::config::Host {
        hostname: "web-01".into(),
        is_root: true,
    };
    let mut config = crate::config::load(&file, &|_| None, &host).unwrap_or_else(|e| panic!("{e}"));
    config
        .targets
        .remove("prod")
        .unwrap_or_else(|| panic!("no target prod"))
}

const PROVIDER: &str = "projects/1/locations/global/workloadIdentityPools/p/providers/k";

fn gcp_target(audience: Option<&str>) -> Target {
    loaded(&format!(
        "{}gcp = {{ provider = \"{PROVIDER}\" }}\n",
        audience
            .map(|a| format!("audience = \"{a}\"\n"))
            .unwrap_or_default()
    ))
}

fn azure_target(audience: Option<&str>) -> Target {
    loaded(&format!(
        "{}azure = {{ tenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\", client_id = \"0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b\" }}\n",
        audience
            .map(|a| format!("audience = \"{a}\"\n"))
            .unwrap_or_default()
    ))
}

fn jwt(header: Value, claims: Value) -> DecodedJwt {
    let raw = format!(
        "{}.{}.sig",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    DecodedJwt::parse(&raw).unwrap_or_else(|e| panic!("{e}"))
}

fn now() -> u64 {
    unix_seconds(keyfed_core::Clock::now(&keyfed_core::SystemClock))
}

/// A token as Keycloak makes one, with `changes` merged into its claims.
fn claims(aud: Value, changes: Value) -> Value {
    let mut claims = json!({
        "iss": "https://sso.example.com/realms/infra",
        "aud": aud,
        "sub": "5d0c2c2e-7d5f-4f7e-9f59-3f4f2b9c3a10",
        "iat": now(),
        "exp": now() + 300,
    });
    if let (Some(map), Value::Object(changes)) = (claims.as_object_mut(), changes) {
        map.extend(changes);
    }
    claims
}

fn rs256() -> Value {
    json!({"alg": "RS256", "kid": "k1", "typ": "JWT"})
}

/// The checks of `decoded` for `target` under `rules`, by id.
fn judged(
    rules: &SubjectTokenRules,
    target: &Target,
    decoded: &DecodedJwt,
    length: usize,
    local: Option<&Url>,
) -> Vec<Check> {
    check(&Claimed {
        target,
        client_id: "host-01",
        rules,
        local_cloud: local,
        decoded,
        length,
    })
}

fn find<'a>(checks: &'a [Check], id: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no {id} in {checks:?}"))
}

#[test]
fn issue_12_a_good_token_passes_every_clouds_rules() {
    for (rules, aud) in [
        (AWS, "sts.amazonaws.com"),
        (
            GCP,
            "https://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k",
        ),
        (AZURE, "api://AzureADTokenExchange"),
    ] {
        let decoded = jwt(rs256(), claims(json!(aud), json!({})));
        let checks = judged(rules, &target(aud, Vec::new()), &decoded, 900, None);
        for check in &checks {
            assert_eq!(check.status, Status::Ok, "{}: {check:?}", rules.cloud);
        }
    }
}

#[test]
fn issue_12_the_audience_must_be_the_targets_one_and_alone() {
    let t = target("sts.amazonaws.com", Vec::new());
    let wrong = jwt(rs256(), claims(json!("https://api.example.com"), json!({})));
    let aud = find(&judged(AWS, &t, &wrong, 900, None), "claims.aud").clone();
    assert_eq!(aud.status, Status::Fail, "{aud:?}");
    let fix = aud.fix.unwrap_or_default();
    assert!(
        fix.contains("Included Custom Audience")
            && fix.contains("\"sts.amazonaws.com\"")
            && fix.contains("cloud-audience"),
        "{fix}"
    );
    let array = jwt(
        rs256(),
        claims(json!(["sts.amazonaws.com", "account"]), json!({})),
    );
    // Issue 12: aud a single string, for every cloud, even one that takes any of the values.
    for rules in [AWS, GCP, AZURE] {
        let aud = find(&judged(rules, &t, &array, 900, None), "claims.aud").clone();
        assert_eq!(aud.status, Status::Fail, "{}: {aud:?}", rules.cloud);
        assert!(aud.detail.contains("array"), "{aud:?}");
        let fix = aud.fix.unwrap_or_default();
        for words in [
            "strict_audience = true",
            "Full scope allowed off",
            "`keyfed trust prod --keycloak`",
            "scope = \"cloud-audience\"",
        ] {
            assert!(fix.contains(words), "{words}: {fix}");
        }
    }
    let none = jwt(rs256(), claims(Value::Null, json!({})));
    assert_eq!(
        find(&judged(AWS, &t, &none, 900, None), "claims.aud").status,
        Status::Fail
    );
}

#[test]
fn issue_12_algorithms_and_kid_follow_each_cloud() {
    let t = target("x", Vec::new());
    let hs256 = jwt(
        json!({"alg": "HS256", "kid": "k1"}),
        claims(json!("x"), json!({})),
    );
    for rules in [AWS, GCP, AZURE] {
        let alg = find(&judged(rules, &t, &hs256, 900, None), "claims.alg").clone();
        assert_eq!(alg.status, Status::Fail, "{}", rules.cloud);
        assert!(
            alg.fix
                .unwrap_or_default()
                .contains("Access token signature algorithm"),
            "{}",
            rules.cloud
        );
    }
    let es256 = jwt(
        json!({"alg": "ES256", "kid": "k1"}),
        claims(json!("x"), json!({})),
    );
    assert_eq!(
        find(&judged(GCP, &t, &es256, 900, None), "claims.alg").status,
        Status::Ok
    );
    let alg = find(&judged(AZURE, &t, &es256, 900, None), "claims.alg").clone();
    assert!(
        alg.status == Status::Fail && alg.detail.contains("RS256 only"),
        "{alg:?}"
    );
    let no_kid = jwt(json!({"alg": "RS256"}), claims(json!("x"), json!({})));
    assert_eq!(
        find(&judged(GCP, &t, &no_kid, 900, None), "claims.kid").status,
        Status::Fail
    );
    assert_eq!(
        find(&judged(AWS, &t, &no_kid, 900, None), "claims.kid").status,
        Status::Warn
    );
}

#[test]
fn issue_12_the_issuer_must_be_what_the_cloud_can_fetch() {
    let t = target("x", Vec::new());
    let iss = |iss: &str| jwt(rs256(), claims(json!("x"), json!({"iss": iss})));
    let slash = find(
        &judged(
            AZURE,
            &t,
            &iss("https://sso.example.com/realms/infra/"),
            900,
            None,
        ),
        "claims.iss",
    )
    .clone();
    assert_eq!(slash.status, Status::Fail);
    assert!(slash.fix.unwrap_or_default().contains("AADSTS700211"));
    let port = iss("https://sso.example.com:8443/realms/infra");
    assert_eq!(
        find(&judged(AWS, &t, &port, 900, None), "claims.iss").status,
        Status::Fail
    );
    assert_eq!(
        find(&judged(GCP, &t, &port, 900, None), "claims.iss").status,
        Status::Ok
    );
    let local = iss("http://127.0.0.1:8080/realms/infra");
    let real = find(&judged(AWS, &t, &local, 900, None), "claims.iss").clone();
    assert_eq!(real.status, Status::Fail);
    for part in ["not https", "loopback", "port 8080"] {
        assert!(real.detail.contains(part), "{part}: {real:?}");
    }
    // Plain http is refused by every cloud, Google included (its issuer URI must be https),
    // even where nothing else is wrong with the issuer.
    let http = iss("http://sso.example.com/realms/infra");
    for rules in [AWS, GCP, AZURE] {
        let check = find(&judged(rules, &t, &http, 900, None), "claims.iss").clone();
        assert_eq!(check.status, Status::Fail, "{}: {check:?}", rules.cloud);
        assert!(check.detail.contains("is not https"), "{check:?}");
        assert!(!check.detail.contains("reachable"), "{check:?}");
        assert!(
            check
                .fix
                .unwrap_or_default()
                .contains("--hostname=https://")
        );
    }
    let google_local = find(&judged(GCP, &t, &local, 900, None), "claims.iss").clone();
    assert_eq!(google_local.status, Status::Fail, "{google_local:?}");
    assert!(
        google_local.detail.contains("is not https")
            && google_local
                .detail
                .contains("not reachable from the internet"),
        "{google_local:?}"
    );
    // Google can be given the keys of an issuer it cannot reach.
    let private = iss("https://sso.corp.internal/realms/infra");
    let google = find(&judged(GCP, &t, &private, 900, None), "claims.iss").clone();
    assert_eq!(google.status, Status::Warn, "{google:?}");
    assert!(google.fix.unwrap_or_default().contains("--jwk-json-path"));
    assert_eq!(
        find(&judged(AZURE, &t, &private, 900, None), "claims.iss").status,
        Status::Fail
    );
    let stand_in = Url::parse("http://127.0.0.1:4566").unwrap_or_else(|e| panic!("{e}"));
    for rules in [AWS, GCP, AZURE] {
        let here = find(
            &judged(rules, &t, &local, 900, Some(&stand_in)),
            "claims.iss",
        )
        .clone();
        assert!(
            here.status == Status::Ok && here.detail.contains("stand-in"),
            "{}: {here:?}",
            rules.cloud
        );
    }
}

#[test]
fn issue_12_subject_lifetime_and_size_limits() {
    let t = target("x", Vec::new());
    let long_sub = jwt(rs256(), claims(json!("x"), json!({"sub": "s".repeat(128)})));
    assert_eq!(
        find(&judged(GCP, &t, &long_sub, 900, None), "claims.sub").status,
        Status::Fail
    );
    assert_eq!(
        find(&judged(AWS, &t, &long_sub, 900, None), "claims.sub").status,
        Status::Ok
    );
    let two_days = jwt(
        rs256(),
        claims(json!("x"), json!({"exp": now() + 48 * 3600})),
    );
    assert_eq!(
        find(&judged(GCP, &t, &two_days, 900, None), "claims.lifetime").status,
        Status::Fail
    );
    assert_eq!(
        find(&judged(AZURE, &t, &two_days, 900, None), "claims.lifetime").status,
        Status::Fail
    );
    assert_eq!(
        find(&judged(AWS, &t, &two_days, 900, None), "claims.lifetime").status,
        Status::Ok
    );
    let size = find(&judged(AWS, &t, &two_days, 20_001, None), "claims.size").clone();
    assert_eq!(size.status, Status::Fail, "{size:?}");
    assert!(
        !judged(GCP, &t, &two_days, 20_001, None)
            .iter()
            .any(|c| c.id == "claims.size")
    );
    // An Azure federated token file's readers need the token to outlive their 600 s re-read.
    let file = Output {
        name: "azure-federated-token",
        kind: OutputKind::AzureFederatedToken,
        path: "/run/keyfed/azure/federated-token.jwt".into(),
        mode: None,
        owner: None,
        group: None,
    };
    let with_file = target("api://AzureADTokenExchange", vec![file]);
    let five_minutes = jwt(
        rs256(),
        claims(json!("api://AzureADTokenExchange"), json!({})),
    );
    let short = find(
        &judged(AZURE, &with_file, &five_minutes, 900, None),
        "claims.lifetime",
    )
    .clone();
    // A warning (DESIGN §7: "doctor warns"), naming the lifespan to set.
    assert_eq!(short.status, Status::Warn, "{short:?}");
    let fix = short.fix.unwrap_or_default();
    assert!(
        fix.contains("720 s or more")
            && fix.contains("1200 s")
            && fix.contains("Access Token Lifespan"),
        "{fix}"
    );
    let twenty = jwt(
        rs256(),
        claims(
            json!("api://AzureADTokenExchange"),
            json!({"exp": now() + 1200}),
        ),
    );
    assert_eq!(
        find(
            &judged(AZURE, &with_file, &twenty, 900, None),
            "claims.lifetime"
        )
        .status,
        Status::Ok
    );
}

#[test]
fn issue_12_a_claim_cannot_forge_a_line_of_the_report() {
    let t = target("x", Vec::new());
    let forged = jwt(
        rs256(),
        claims(json!("x"), json!({"sub": "a\n  ✓ exchange  fine"})),
    );
    let checks = judged(AWS, &t, &forged, 900, None);
    let report = Report::new(
        "/etc/keyfed/keyfed.toml".into(),
        Vec::new(),
        vec![TargetReport {
            name: "prod".to_owned(),
            kind: "aws",
            issuer: "corp".to_owned(),
            checks,
        }],
    );
    assert!(
        !report.text().contains("\n  ✓ exchange"),
        "{}",
        report.text()
    );
}

#[test]
fn issue_12_the_clock_warns_beyond_30_seconds_either_way() {
    let t0 = from_unix_seconds(1_700_000_000);
    let at = |secs: i64| {
        if secs >= 0 {
            t0 + Duration::from_secs(secs.unsigned_abs())
        } else {
            t0 - Duration::from_secs(secs.unsigned_abs())
        }
    };
    let skew = |local| super::keycloak::skew(t0, local, "its Date header");
    let ok = skew(at(12));
    assert_eq!(ok.status, Status::Ok, "{ok:?}");
    let ahead = skew(at(90));
    assert!(
        ahead.status == Status::Warn && ahead.detail.contains("90 s ahead of"),
        "{ahead:?}"
    );
    let behind = skew(at(-45));
    assert!(
        behind.status == Status::Warn && behind.detail.contains("45 s behind"),
        "{behind:?}"
    );
}

#[test]
fn issue_12_hints_become_fixes_and_other_lines_stay_with_the_detail() {
    let (detail, fix) = split_hint(
        "Entra ID refused a token (HTTP 400): AADSTS70021: no match\n  hint: add a credential\n  Entra trace ID t, correlation ID c",
    );
    assert_eq!(
        detail,
        "Entra ID refused a token (HTTP 400): AADSTS70021: no match (Entra trace ID t, correlation ID c)"
    );
    assert_eq!(fix.as_deref(), Some("add a credential"));
    assert_eq!(split_hint("plain"), ("plain".to_owned(), None));
}

#[test]
fn issue_12_the_report_fails_only_on_failures_and_its_json_matches_its_text() {
    let checks = vec![
        Check::ok("secret", "fine"),
        Check::warn("keycloak.clock", "45 s behind", "sync"),
        Check::skip("exchange", "no token"),
    ];
    let report = Report::new(
        "/k.toml".into(),
        vec![Check::ok("config", "valid")],
        vec![TargetReport {
            name: "a".to_owned(),
            kind: "aws",
            issuer: "corp".to_owned(),
            checks,
        }],
    );
    assert!(report.ok && report.failures().is_empty());
    let json = report.json();
    assert_eq!(json["ok"], true);
    assert_eq!(json["targets"][0]["checks"][1]["status"], "warn");
    assert_eq!(json["targets"][0]["checks"][2]["status"], "skip");
    let text = report.text();
    assert!(
        text.contains("  ! keycloak.clock") && text.contains("fix: sync"),
        "{text}"
    );
    assert!(text.contains("no check failed, 1 warning"), "{text}");
}

/// Issue 12: an audience other than the one Entra ID or Google expects by default works only
/// where the cloud's side lists it: a warning saying where.
#[test]
fn issue_12_an_unusual_cloud_audience_is_warned_about() {
    let token = |aud: &str| jwt(rs256(), claims(json!(aud), json!({})));
    // The defaults pass.
    let azure = azure_target(None);
    let usual = &azure.request.audience;
    assert_eq!(usual, "api://AzureADTokenExchange");
    let ok = find(
        &judged(AZURE, &azure, &token(usual), 900, None),
        "claims.aud",
    )
    .clone();
    assert_eq!(ok.status, Status::Ok, "{ok:?}");
    for aud in [
        format!("https://iam.googleapis.com/{PROVIDER}"),
        format!("//iam.googleapis.com/{PROVIDER}"),
    ] {
        let gcp = gcp_target(Some(&aud));
        let ok = find(&judged(GCP, &gcp, &token(&aud), 900, None), "claims.aud").clone();
        assert_eq!(ok.status, Status::Ok, "{aud}: {ok:?}");
    }
    // Another audience for Entra ID: the federated credential must list it.
    let odd = "api://keyfed-prod";
    let azure = azure_target(Some(odd));
    let warned = find(&judged(AZURE, &azure, &token(odd), 900, None), "claims.aud").clone();
    assert_eq!(warned.status, Status::Warn, "{warned:?}");
    assert!(
        warned.detail.contains("api://AzureADTokenExchange"),
        "{warned:?}"
    );
    assert!(
        warned
            .fix
            .unwrap_or_default()
            .contains("federated identity credential's audiences"),
    );
    // Another audience for Google (another provider's name too): its allowed audiences.
    for odd in [
        "https://api.example.com".to_owned(),
        format!(
            "https://iam.googleapis.com/{}",
            PROVIDER.replace("/k", "/other")
        ),
    ] {
        let gcp = gcp_target(Some(&odd));
        let warned = find(&judged(GCP, &gcp, &token(&odd), 900, None), "claims.aud").clone();
        assert_eq!(warned.status, Status::Warn, "{odd}: {warned:?}");
        assert!(
            warned
                .detail
                .contains(&format!("\"https://iam.googleapis.com/{PROVIDER}\"")),
            "{warned:?}"
        );
        assert!(
            warned
                .fix
                .unwrap_or_default()
                .contains("the provider's allowed audiences"),
        );
    }
}
