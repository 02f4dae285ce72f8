//! The token's header and claims against what the target's cloud requires of a subject token
//! (its [`SubjectTokenRules`]): `aud` one string, the target's audience; `alg` and `kid`; `iss`
//! over https (every cloud), without a trailing slash, without a port where the cloud forbids
//! one, and reachable from the internet (as `keyfed trust` judges it; Google can be given the
//! keys instead); `sub` present and short enough; the lifetime within the cloud's limit (and
//! long enough for an Azure federated token file's readers); the token's size. Each failure
//! says what to change, on the Keycloak side or the cloud's.
//!
//! A cloud endpoint on this host (an emulator, moto, LocalStack) is a stand-in for the cloud:
//! it needs no public https issuer, so the rules about the issuer's URL (https, reachable, no
//! port) are shown as passed with a note instead of failing.

use std::time::Duration;

use keyfed_core::Clock as _;
use keyfed_core::clock::{SystemClock, unix_seconds};
use keyfed_core::token_facts::printable;
use keyfed_core::token_rules::SubjectTokenRules;
use keyfed_keycloak::{Audience, DecodedJwt, TokenProblem};
use serde_json::Value;
use url::Url;

use crate::config::{Exchange, Target};
use crate::outputs::OutputKind;
use crate::sources::AZURE_FEDERATED_TOKEN_WINDOW;

use super::report::{Check, split_hint};

/// What the claim checks look at.
pub struct Claimed<'a> {
    pub target: &'a Target,
    pub client_id: &'a str,
    pub rules: &'a SubjectTokenRules,
    /// The cloud's endpoint, when it is on this host.
    pub local_cloud: Option<&'a Url>,
    pub decoded: &'a DecodedJwt,
    pub length: usize,
}

/// Every claim check, in order.
pub fn check(claimed: &Claimed<'_>) -> Vec<Check> {
    let mut checks = vec![
        audience(claimed),
        algorithm(claimed),
        key_id(claimed),
        issuer(claimed),
        subject(claimed),
        lifetime(claimed),
    ];
    if let Some(max) = claimed.rules.max_token_bytes {
        checks.push(size(claimed, max));
    }
    checks
}

/// A string header field or claim, made safe for one line.
fn text(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(printable)
}

fn quoted(value: Option<&str>) -> String {
    value.map_or("(none)".to_owned(), |v| format!("\"{v}\""))
}

/// `aud`: exactly the target's audience, one string; and, for Entra ID and Google, the audience
/// their setup expects unless told otherwise.
fn audience(c: &Claimed<'_>) -> Check {
    let expected = &c.target.request.audience;
    let found = Audience(
        c.decoded
            .audience()
            .0
            .iter()
            .map(|a| printable(a))
            .collect(),
    );
    let single = matches!(c.decoded.claims.get("aud"), Some(Value::String(_)));
    let cloud = c.rules.cloud;
    if single && found.contains(expected) {
        return match unusual_audience(c) {
            Some((usual, setting)) => Check::warn(
                "claims.aud",
                format!("\"{expected}\", the target's audience, is not {cloud}'s usual {usual}"),
                format!(
                    "{cloud} takes it only if it is among {setting}: add it there, or set the target's audience to {usual} (and the audience mapper's Included Custom Audience with it)"
                ),
            ),
            None => Check::ok(
                "claims.aud",
                format!(
                    "\"{expected}\", the target's audience; it must be one of {}",
                    c.rules.audience_setting
                ),
            ),
        };
    }
    if found.contains(expected) {
        // The rule for every cloud: aud a single string. A cloud that takes any of
        // the values still trusts a token meant for others too.
        return Check::fail(
            "claims.aud",
            format!(
                "aud is the array {found}, not the single string \"{expected}\" {cloud} is to get"
            ),
            format!(
                "give the token the single audience \"{expected}\": a client with Full scope allowed off and only the client scope whose audience mapper adds it{} (`keyfed trust {} --keycloak` prints that setup), then set strict_audience = true on target {} so keyfed refuses any other token",
                c.target
                    .request
                    .scope
                    .as_deref()
                    .map(|s| format!(" (scope = \"{s}\")"))
                    .unwrap_or_default(),
                // Target names are letters, digits, '-', '_' and '.': safe in a command.
                c.target.name,
                c.target.name
            ),
        );
    }
    // keyfed's own words for a token without the audience, hint included.
    let problem = TokenProblem::AudienceMissing {
        expected: expected.clone(),
        found: found.clone(),
        scope: c.target.request.scope.clone(),
    };
    let (_, fix) = split_hint(&problem.to_string());
    Check::fail(
        "claims.aud",
        format!("aud is {found}, not \"{expected}\", the audience {cloud} is to get"),
        fix.unwrap_or_default(),
    )
}

/// The audience the target's cloud expects by default and where else it may be allowed, when
/// the target's audience is another: Entra ID's `api://AzureADTokenExchange` (else the federated
/// credential's audiences), Google's own name of the provider (else its allowed audiences).
fn unusual_audience(c: &Claimed<'_>) -> Option<(String, &'static str)> {
    let audience = c.target.request.audience.as_str();
    match &c.target.exchange {
        Exchange::Azure(_) if audience != keyfed_azure::config::AUDIENCE => Some((
            format!("\"{}\"", keyfed_azure::config::AUDIENCE),
            "the federated identity credential's audiences (az ... federated-credential create --audiences)",
        )),
        Exchange::Gcp(gcp) => {
            let own = format!("//iam.googleapis.com/{}", gcp.provider);
            let https = format!("https:{own}");
            (audience != own && audience != https).then(|| {
                (
                    format!("\"{https}\" (or \"{own}\")"),
                    "the provider's allowed audiences (--allowed-audiences)",
                )
            })
        }
        _ => None,
    }
}

/// `alg`: one the cloud takes.
fn algorithm(c: &Claimed<'_>) -> Check {
    let alg = text(c.decoded.header.get("alg"));
    let accepted = c.rules.algorithms;
    if alg.as_deref().is_some_and(|a| accepted.contains(&a)) {
        return Check::ok("claims.alg", quoted(alg.as_deref()));
    }
    let takes = match accepted {
        [one] => format!("{one} only"),
        many => many.join(", "),
    };
    let wanted = accepted.first().copied().unwrap_or("RS256");
    Check::fail(
        "claims.alg",
        format!(
            "signed with {}; {} takes {takes}",
            quoted(alg.as_deref()),
            c.rules.cloud
        ),
        format!(
            "in Keycloak set the access token signature algorithm to {wanted} (Clients → {} → Advanced → Fine grain OpenID Connect configuration → Access token signature algorithm, or the realm's default signature algorithm in Realm settings → Tokens), with an active {wanted} key in Realm settings → Keys",
            c.client_id
        ),
    )
}

/// `kid`: present, so the cloud knows which of the issuer's keys to use.
fn key_id(c: &Claimed<'_>) -> Check {
    if let Some(kid) = text(c.decoded.header.get("kid")) {
        return Check::ok("claims.kid", format!("\"{kid}\""));
    }
    let fix = "Keycloak always names its signing key: check that the token comes from the realm (the issuer url and token_endpoint)";
    if c.rules.kid_required {
        Check::fail(
            "claims.kid",
            format!(
                "the header names no key (kid); {} requires one",
                c.rules.cloud
            ),
            fix,
        )
    } else {
        Check::warn(
            "claims.kid",
            format!(
                "the header names no key (kid): {} can check it only while the issuer's JWKS holds a single key",
                c.rules.cloud
            ),
            fix,
        )
    }
}

/// `iss`: what the cloud compares with its own setting and fetches keys from.
fn issuer(c: &Claimed<'_>) -> Check {
    let cloud = c.rules.cloud;
    let Some(iss) = text(c.decoded.claims.get("iss")) else {
        return Check::fail(
            "claims.iss",
            "the token has no iss",
            "check that the token comes from the realm (the issuer url and token_endpoint)",
        );
    };
    if iss.ends_with('/') {
        return Check::fail(
            "claims.iss",
            format!("\"{iss}\" ends with a slash"),
            format!(
                "{cloud} compares the issuer as a string, and a trailing slash is the usual mismatch (Entra: AADSTS700211): let Keycloak name the realm without it (its hostname / frontend URL setting without a trailing \"/\"), and give the cloud side exactly the token's iss"
            ),
        );
    }
    let Ok(url) = Url::parse(&iss) else {
        return Check::fail(
            "claims.iss",
            format!("\"{iss}\" is not a URL"),
            "set Keycloak's hostname so the realm's issuer is an https:// URL",
        );
    };
    // What is wrong with it, the fix, and whether the cloud refuses it outright.
    let mut problems: Vec<(String, &str, bool)> = Vec::new();
    // The judgements `keyfed trust` makes of the same URL. Every cloud takes an https issuer
    // only (Google too: its provider's issuer URI must be https, even with uploaded keys); a
    // cloud that can be given the issuer's keys (Google) still works with one it cannot reach.
    if let Some(why) = crate::commands::trust::public::not_https(&iss) {
        problems.push((
            format!("is not https: {why}"),
            "serve Keycloak over https with a publicly trusted certificate, and set its hostname (e.g. --hostname=https://sso.example.com) so the realm's issuer is an https:// URL",
            true,
        ));
    }
    if let Some(why) = crate::commands::trust::public::not_reachable(&iss) {
        let fix = c.rules.uploaded_jwks.unwrap_or(
            "serve Keycloak under a name the internet resolves and can reach (its hostname setting), behind a reverse proxy if need be",
        );
        problems.push((
            format!("is not reachable from the internet: {why}"),
            fix,
            c.rules.uploaded_jwks.is_none(),
        ));
    }
    if let Some(port) = url.port().filter(|_| !c.rules.issuer_port_allowed) {
        problems.push((
            format!("names port {port}, which {cloud} does not take in an issuer URL"),
            "serve Keycloak on port 443 (behind a reverse proxy, or its hostname setting without a port) so the realm's issuer has no port",
            true,
        ));
    }
    if problems.is_empty() {
        return Check::ok("claims.iss", format!("\"{iss}\""));
    }
    let what: Vec<&str> = problems.iter().map(|(what, ..)| what.as_str()).collect();
    let fixes: Vec<&str> = problems.iter().map(|(_, fix, _)| *fix).collect();
    let detail = format!("\"{iss}\" {}", what.join("; "));
    match c.local_cloud {
        Some(endpoint) => Check::ok(
            "claims.iss",
            format!(
                "{detail}: fine for the stand-in at {endpoint} on this host, not for the real {cloud}"
            ),
        ),
        None if problems.iter().any(|(.., fatal)| *fatal) => {
            Check::fail("claims.iss", detail, fixes.join("; "))
        }
        None => Check::warn("claims.iss", detail, fixes.join("; ")),
    }
}

/// `sub`: present, and short enough where the cloud maps it.
fn subject(c: &Claimed<'_>) -> Check {
    let Some(sub) = text(c.decoded.claims.get("sub")) else {
        return Check::fail(
            "claims.sub",
            "the token has no sub",
            "a Keycloak service account's token always has one: check that the client has Service accounts roles on",
        );
    };
    let bytes = c
        .decoded
        .claims
        .get("sub")
        .and_then(Value::as_str)
        .map_or(0, str::len);
    match c.rules.max_subject_bytes {
        Some(max) if bytes > max => Check::fail(
            "claims.sub",
            format!(
                "\"{sub}\" is {bytes} bytes; {} maps it to google.subject, which takes at most {max}",
                c.rules.cloud
            ),
            "map a shorter claim to google.subject in the provider's attribute mapping, or give the client a shorter subject",
        ),
        _ => Check::ok("claims.sub", format!("\"{sub}\" ({bytes} bytes)")),
    }
}

/// The token's lifetime (`exp − iat`): within the cloud's limit, and long enough for an
/// `azure-federated-token` output's readers.
fn lifetime(c: &Claimed<'_>) -> Check {
    let cloud = c.rules.cloud;
    let Some(exp) = c.decoded.time_claim("exp") else {
        return Check::fail(
            "claims.lifetime",
            "the token has no exp",
            "check that the token comes from the realm (the issuer url and token_endpoint)",
        );
    };
    let iat = c.decoded.time_claim("iat");
    let lifespan_fix = format!(
        "set the Access Token Lifespan of client {} (Clients → {} → Advanced → Advanced settings) or of the realm (Realm settings → Tokens)",
        c.client_id, c.client_id
    );
    let (lifetime, measured) = match iat {
        Some(iat) => (exp.saturating_sub(iat), "exp − iat"),
        None if c.rules.max_lifetime.is_some() => {
            return Check::fail(
                "claims.lifetime",
                format!("the token has no iat, which {cloud} needs to judge its lifetime"),
                "check that the token comes from the realm (the issuer url and token_endpoint)",
            );
        }
        None => (
            exp.saturating_sub(unix_seconds(SystemClock.now())),
            "exp − now",
        ),
    };
    let shown = humantime::format_duration(Duration::from_secs(lifetime));
    if let Some(max) = c.rules.max_lifetime.filter(|m| lifetime > m.as_secs()) {
        return Check::fail(
            "claims.lifetime",
            format!(
                "the token lives {shown} ({measured}); {cloud} takes at most {}",
                humantime::format_duration(max)
            ),
            format!("shorten it: {lifespan_fix}"),
        );
    }
    let federated_file = c
        .target
        .outputs
        .iter()
        .any(|o| o.kind == OutputKind::AzureFederatedToken);
    if federated_file
        && crate::engine::too_short_for_readers(
            Duration::from_secs(lifetime),
            AZURE_FEDERATED_TOKEN_WINDOW,
        )
    {
        // A warning (DESIGN §7): keyfed still writes the file, rewriting it as late as the
        // token allows, and readers may be handed a token that expires before their re-read.
        // The least lifespan that leaves the engine its minute after the readers' window:
        let least = AZURE_FEDERATED_TOKEN_WINDOW.as_secs() + 60;
        return Check::warn(
            "claims.lifetime",
            format!(
                "the token lives {shown} ({measured}): too short for the azure-federated-token output, whose readers (Azure SDKs) re-read the file only every 600 s, so keyfed must rewrite it while the token in it has more than {} left",
                humantime::format_duration(AZURE_FEDERATED_TOKEN_WINDOW)
            ),
            format!(
                "lengthen it to {least} s or more (`keyfed trust {} --keycloak` sets 1200 s): {lifespan_fix}",
                c.target.name
            ),
        );
    }
    Check::ok("claims.lifetime", format!("{shown} ({measured})"))
}

/// The whole token's size.
fn size(c: &Claimed<'_>, max: usize) -> Check {
    if c.length <= max {
        return Check::ok("claims.size", format!("{} bytes, at most {max}", c.length));
    }
    Check::fail(
        "claims.size",
        format!(
            "the token is {} bytes; {} takes at most {max}",
            c.length, c.rules.cloud
        ),
        format!(
            "drop claims it need not carry: remove unneeded client scopes and mappers (roles, groups, profile, email) from client {}",
            c.client_id
        ),
    )
}
