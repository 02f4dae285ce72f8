//! Everything that can go wrong trading a web identity token with STS, each variant naming the
//! role and saying what to check next, and its [`Advice`]: what the caller should do about it
//! (DESIGN §9), and when it is to stop, whether keyfed's configuration or the AWS side must
//! change. STS's own error code and message are quoted verbatim; the token and the credentials
//! never appear here.

use keyfed_core::exchange::{Advice, Advise, Side};
use keyfed_core::http::HttpSetupError;
use keyfed_core::quote::sh;

use keyfed_core::token_facts::TokenFacts;

use crate::provider_name::provider_name;

/// Why no credentials came back from STS.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// The client could not be built: a refused endpoint URL, an unreadable CA file.
    #[error("AWS STS client: {0}")]
    Setup(#[source] HttpSetupError),
    /// The settings or the request cannot work, whatever STS would say.
    #[error("AWS STS: {detail}")]
    InvalidSettings { detail: String },
    /// STS answered with one of its errors.
    #[error(
        "STS refused AssumeRoleWithWebIdentity for role {role_arn} (HTTP {status}): {code}: \"{message}\"{}{}",
        request_id.as_deref().map(|id| format!(" (request id {id})")).unwrap_or_default(),
        hint.as_deref().map(|h| format!("\n  hint: {h}")).unwrap_or_default()
    )]
    Refused {
        role_arn: String,
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
        hint: Option<String>,
    },
    /// Something answered, but not with an STS error (a proxy, a load balancer).
    #[error(
        "{endpoint} answered HTTP {status} to AssumeRoleWithWebIdentity for role {role_arn}: {body}"
    )]
    Http {
        role_arn: String,
        endpoint: String,
        status: u16,
        body: String,
    },
    /// No answer: connection refused or reset, TLS failure, timeout.
    #[error("cannot reach STS at {endpoint} for role {role_arn}: {detail}{}", TRANSPORT_HINT.hint(detail, *timed_out))]
    Transport {
        role_arn: String,
        endpoint: String,
        detail: String,
        timed_out: bool,
    },
    /// STS's answer could not be read, or lacks a field keyfed needs.
    #[error("the answer from STS at {endpoint} for role {role_arn} is not valid: {detail}")]
    InvalidResponse {
        role_arn: String,
        endpoint: String,
        detail: String,
    },
}

/// What the caller should do after an [`AwsError`]. Settings keyfed sends (the endpoint, the
/// session policy, the duration, the session name) are keyfed's configuration; a refusal of
/// the role or the token's claims is the AWS side's (the IAM OIDC provider, the role's trust
/// policy).
impl Advise for AwsError {
    fn advice(&self) -> Advice {
        match self {
            Self::Setup(_) | Self::InvalidSettings { .. } => Advice::Stop { side: Side::Config },
            Self::Transport { .. } | Self::InvalidResponse { .. } => Advice::Backoff,
            // Not STS's voice: a proxy or whatever `endpoint_url` points at.
            Self::Http { status, .. } => {
                if *status >= 500 || *status == 429 {
                    Advice::Backoff
                } else {
                    Advice::Stop { side: Side::Config }
                }
            }
            Self::Refused { code, status, .. } => advice_for_code(code, *status),
        }
    }
}

impl AwsError {
    /// STS's error code, when STS answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// What to check when STS could not be reached at all.
const TRANSPORT_HINT: keyfed_core::http::TransportHint = keyfed_core::http::TransportHint {
    upstream: "STS",
    server: "the endpoint's",
    private_cas: "a VPC endpoint's private CA, a TLS-inspecting proxy's CA",
};

/// DESIGN §9: retry throttling, the issuer being unreachable from AWS and 5xx; retry once with
/// a fresh token when STS did not take the token; stop on refusals. A refusal of what keyfed
/// sent (its parameters, its session policy) needs keyfed's configuration changed; any other
/// refusal (`AccessDenied`, `IDPRejectedClaim`, a disabled region, a code keyfed does not know)
/// the AWS side.
fn advice_for_code(code: &str, status: u16) -> Advice {
    match code {
        "IDPCommunicationError"
        | "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "ServiceUnavailable"
        | "InternalFailure" => Advice::Backoff,
        "InvalidIdentityToken" | "ExpiredTokenException" => Advice::FreshSubjectToken,
        _ if status >= 500 => Advice::Backoff,
        // What keyfed sent is wrong: its configuration must change.
        "ValidationError"
        | "MalformedPolicyDocument"
        | "PackedPolicyTooLarge"
        | "InvalidParameterValue"
        | "InvalidParameterCombination"
        | "MissingParameter" => Advice::Stop { side: Side::Config },
        _ => Advice::Stop { side: Side::Cloud },
    }
}

/// What a hint may mention: the call's parameters and what the token says of itself.
pub(crate) struct HintContext<'a> {
    pub role_arn: &'a str,
    pub region: &'a str,
    pub duration_secs: u64,
    pub token: &'a TokenFacts,
}

impl HintContext<'_> {
    fn provider(&self) -> String {
        self.token
            .iss
            .as_deref()
            .map_or_else(|| "<issuer host and path>".to_owned(), provider_name)
    }

    /// `arn:<partition>:iam::<account>:role/<name>` → the account, when the ARN has that shape.
    fn account(&self) -> &str {
        self.role_arn.split(':').nth(4).unwrap_or("<account>")
    }

    /// The role's partition (`aws`, `aws-cn`, `aws-us-gov`, …): the IAM OIDC provider's ARN is
    /// in the same one.
    fn partition(&self) -> &str {
        self.role_arn
            .split(':')
            .nth(1)
            .filter(|p| !p.is_empty())
            .unwrap_or("aws")
    }

    /// The IAM OIDC identity provider's ARN, in the role's partition and account.
    fn provider_arn(&self) -> String {
        format!(
            "arn:{}:iam::{}:oidc-provider/{}",
            self.partition(),
            self.account(),
            self.provider()
        )
    }

    fn role_name(&self) -> &str {
        self.role_arn
            .split_once(":role/")
            .map_or(self.role_arn, |(_, name)| {
                name.rsplit('/').next().unwrap_or(name)
            })
    }
}

/// A line saying what to check next for STS's common refusals.
pub(crate) fn hint(code: &str, message: &str, cx: &HintContext<'_>) -> Option<String> {
    let provider = cx.provider();
    let iss = cx.token.iss.as_deref().unwrap_or("(none)");
    match code {
        "InvalidIdentityToken" if message.contains("Incorrect token audience") => Some(format!(
            "the IAM OIDC identity provider \"{provider}\" must list the token's aud {} among its audiences (client ID list): IAM → Identity providers → {provider} → Audiences → Add audience{}; or make Keycloak put one of the listed audiences into the token (the target's audience and scope)",
            cx.token.aud_text(),
            // The client ID to add, when the token names one (issue 12), as a pasteable command.
            match cx.token.aud.as_slice() {
                [one] => format!(
                    " (`aws iam add-client-id-to-open-id-connect-provider --open-id-connect-provider-arn {} --client-id {}`)",
                    sh(&cx.provider_arn()),
                    sh(one)
                ),
                _ => String::new(),
            }
        )),
        "InvalidIdentityToken" if message.contains("No OpenIDConnect provider found") => {
            Some(format!(
                "create an IAM OIDC identity provider in account {} whose URL is exactly the token's iss \"{iss}\" (IAM → Identity providers → Add provider → OpenID Connect), with the token's aud {} as an audience",
                cx.account(),
                cx.token.aud_text()
            ))
        }
        "InvalidIdentityToken" => Some(format!(
            "STS fetches {iss}/.well-known/openid-configuration and its jwks_uri over the internet to check the token's signature; check that both are publicly reachable with a publicly trusted certificate and that Keycloak signs with a key they publish"
        )),
        "ExpiredTokenException" => Some(
            "the token had expired when STS checked it; check this host's clock (timedatectl) and that the token is used right after it is fetched".to_owned(),
        ),
        "IDPCommunicationError" => Some(format!(
            "STS could not fetch {iss}/.well-known/openid-configuration or its JWKS; the issuer must be reachable from the internet, answer quickly, and use a publicly trusted certificate"
        )),
        "IDPRejectedClaim" => Some(format!(
            "the identity provider \"{provider}\" rejected a claim of the token; check the token's claims against the provider settings in IAM"
        )),
        "AccessDenied" => Some(format!(
            "check that role {} exists and its trust policy (IAM → Roles → {} → Trust relationships) has Principal {{\"Federated\": \"{}\"}}, Action \"sts:AssumeRoleWithWebIdentity\", and its conditions on \"{provider}:sub\" (this token's sub is {}) and \"{provider}:aud\" (this token's aud is {})",
            cx.role_arn,
            cx.role_name(),
            cx.provider_arn(),
            cx.token
                .sub
                .as_deref()
                .map_or("(none)".to_owned(), |s| format!("\"{s}\"")),
            cx.token.aud_text()
        )),
        "ValidationError"
            if message.contains("MaxSessionDuration") || message.contains("durationSeconds") =>
        {
            Some(format!(
                "lower the target's duration (now {} s) or raise the role's MaxSessionDuration (IAM → Roles → {} → Maximum session duration, up to 12 h)",
                cx.duration_secs,
                cx.role_name()
            ))
        }
        "ValidationError" if message.contains("roleSessionName") => Some(
            "the session name must be 2–64 characters of A–Z a–z 0–9 _ + = , . @ -".to_owned(),
        ),
        "RegionDisabledException" => Some(format!(
            "activate STS in region {} (IAM → Account settings → Security Token Service (STS) → Endpoints), or use another region",
            cx.region
        )),
        "MalformedPolicyDocument" | "PackedPolicyTooLarge" => Some(
            "fix or shorten the target's session policy (policy / policy_arns)".to_owned(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: &str, status: u16, message: &str) -> AwsError {
        AwsError::Refused {
            role_arn: "arn:aws:iam::123456789012:role/onprem-web".to_owned(),
            status,
            code: code.to_owned(),
            message: message.to_owned(),
            request_id: Some("req-1".to_owned()),
            hint: None,
        }
    }

    const CLOUD: Advice = Advice::Stop { side: Side::Cloud };
    const CONFIG: Advice = Advice::Stop { side: Side::Config };

    #[test]
    fn classification_follows_design() {
        for code in [
            "IDPCommunicationError",
            "Throttling",
            "ThrottlingException",
            "RequestLimitExceeded",
        ] {
            assert_eq!(refused(code, 400, "").advice(), Advice::Backoff, "{code}");
        }
        assert_eq!(refused("InternalError", 500, "").advice(), Advice::Backoff);
        assert_eq!(refused("Whatever", 503, "").advice(), Advice::Backoff);
        for code in ["InvalidIdentityToken", "ExpiredTokenException"] {
            assert_eq!(
                refused(code, 400, "").advice(),
                Advice::FreshSubjectToken,
                "{code}"
            );
        }
        // The role, its trust policy, the OIDC provider or the region: the AWS side.
        for code in [
            "AccessDenied",
            "IDPRejectedClaim",
            "RegionDisabledException",
            "SomethingNew",
        ] {
            assert_eq!(refused(code, 403, "").advice(), CLOUD, "{code}");
        }
        // What keyfed sent: its configuration.
        for code in [
            "MalformedPolicyDocument",
            "PackedPolicyTooLarge",
            "ValidationError",
            "InvalidParameterValue",
            "InvalidParameterCombination",
            "MissingParameter",
        ] {
            assert_eq!(refused(code, 400, "").advice(), CONFIG, "{code}");
        }
        let http = |status| AwsError::Http {
            role_arn: String::new(),
            endpoint: String::new(),
            status,
            body: String::new(),
        };
        assert_eq!(http(502).advice(), Advice::Backoff);
        assert_eq!(http(429).advice(), Advice::Backoff);
        assert_eq!(
            http(404).advice(),
            CONFIG,
            "endpoint_url names something else"
        );
        let transport = AwsError::Transport {
            role_arn: String::new(),
            endpoint: String::new(),
            detail: "connection refused".to_owned(),
            timed_out: false,
        };
        assert_eq!(transport.advice(), Advice::Backoff);
        let settings = AwsError::InvalidSettings {
            detail: String::new(),
        };
        assert_eq!(settings.advice(), CONFIG);
    }

    #[test]
    fn display_quotes_sts_and_names_the_role() {
        let text = refused(
            "AccessDenied",
            403,
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        )
        .to_string();
        assert!(
            text.contains("arn:aws:iam::123456789012:role/onprem-web"),
            "{text}"
        );
        assert!(
            text.contains(
                "AccessDenied: \"Not authorized to perform sts:AssumeRoleWithWebIdentity\""
            ),
            "{text}"
        );
        assert!(
            text.contains("HTTP 403") && text.contains("req-1"),
            "{text}"
        );
    }

    #[test]
    fn hints_name_what_to_change() {
        let token = TokenFacts {
            iss: Some("https://sso.example.com/realms/infra".to_owned()),
            aud: vec!["account".to_owned()],
            sub: Some("6f1c".to_owned()),
        };
        let cx = HintContext {
            role_arn: "arn:aws:iam::123456789012:role/onprem-web",
            region: "eu-west-1",
            duration_secs: 7200,
            token: &token,
        };
        let h = |code, msg| hint(code, msg, &cx).unwrap_or_default();
        let aud = h("InvalidIdentityToken", "Incorrect token audience");
        assert!(
            aud.contains("audiences") && aud.contains("\"account\""),
            "{aud}"
        );
        let none = h(
            "InvalidIdentityToken",
            "No OpenIDConnect provider found in your account for https://sso.example.com/realms/infra",
        );
        assert!(
            none.contains("exactly the token's iss \"https://sso.example.com/realms/infra\""),
            "{none}"
        );
        let denied = h(
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        );
        assert!(
            denied.contains("sso.example.com/realms/infra:sub") && denied.contains("\"6f1c\""),
            "{denied}"
        );
        assert!(
            denied.contains("arn:aws:iam::123456789012:oidc-provider/sso.example.com/realms/infra"),
            "{denied}"
        );
        let duration = h(
            "ValidationError",
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
        );
        assert!(
            duration.contains("7200 s") && duration.contains("onprem-web"),
            "{duration}"
        );
        assert!(h("RegionDisabledException", "").contains("eu-west-1"));
        assert_eq!(hint("Throttling", "Rate exceeded", &cx), None);
    }

    /// Issue 12: the provider's ARN in a hint is in the role's partition, and the command to
    /// paste quotes the token's aud for sh.
    #[test]
    fn issue_12_hints_name_the_roles_partition_and_quote_the_audience() {
        let token = TokenFacts {
            iss: Some("https://sso.example.com/realms/infra".to_owned()),
            aud: vec!["it's a,b $x".to_owned()],
            sub: Some("6f1c".to_owned()),
        };
        let cx = HintContext {
            role_arn: "arn:aws-cn:iam::123456789012:role/team/onprem-web",
            region: "cn-north-1",
            duration_secs: 3600,
            token: &token,
        };
        let arn = "arn:aws-cn:iam::123456789012:oidc-provider/sso.example.com/realms/infra";
        let aud = hint("InvalidIdentityToken", "Incorrect token audience", &cx).unwrap_or_default();
        assert!(
            aud.contains(&format!(
                "`aws iam add-client-id-to-open-id-connect-provider --open-id-connect-provider-arn {arn} --client-id 'it'\\''s a,b $x'`"
            )),
            "{aud}"
        );
        let denied = hint("AccessDenied", "Not authorized", &cx).unwrap_or_default();
        assert!(
            denied.contains(&format!("{{\"Federated\": \"{arn}\"}}"))
                && !denied.contains("arn:aws:"),
            "{denied}"
        );
    }
}
