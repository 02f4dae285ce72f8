//! Everything that can go wrong trading a subject token at Google, each variant naming the
//! call and the pool provider or service account, quoting Google's own words (RFC 6749
//! `error`/`error_description` from STS, `{error:{code,message,status}}` from IAM Credentials)
//! with a hint for the usual pool, provider and binding mistakes, and its [`Advice`]: back off,
//! fetch a fresh subject token and retry once, or stop until keyfed's configuration, the issuer
//! or the Google Cloud side changes. No token (subject, federated or issued) ever appears here.

use keyfed_core::exchange::{Advice, Advise, Side, SlotKey};
use keyfed_core::http::HttpSetupError;

/// Which of Google's calls failed, as error messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// STS `token` (the token exchange).
    Sts,
    /// IAM Credentials `generateAccessToken`.
    GenerateAccessToken,
    /// IAM Credentials `generateIdToken`.
    GenerateIdToken,
}

impl Call {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sts => "the STS token exchange",
            Self::GenerateAccessToken => "generateAccessToken",
            Self::GenerateIdToken => "generateIdToken",
        }
    }
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why no token came back from Google.
#[derive(Debug, thiserror::Error)]
pub enum GcpError {
    /// The client could not be built: a refused URL, an unreadable CA file, a bad proxy.
    #[error("Google Cloud client: {0}")]
    Setup(#[source] HttpSetupError),
    /// The request cannot work, whatever Google would say.
    #[error("Google Cloud: {detail}")]
    InvalidRequest { detail: String },
    /// A variant (slot) this cloud does not issue.
    #[error("Google Cloud issues no credential for {0}")]
    NoVariant(String),
    /// STS answered with an RFC 6749 error.
    #[error(
        "Google STS refused the token exchange for provider {provider} (HTTP {status}): {error}: \"{description}\"{}",
        hint_line(hint.as_deref())
    )]
    StsRefused {
        provider: String,
        status: u16,
        error: String,
        description: String,
        hint: Option<String>,
    },
    /// IAM Credentials answered with a Google API error.
    #[error(
        "IAM Credentials refused {call} for service account {service_account} (HTTP {status}): {google_status}: \"{message}\"{}",
        hint_line(hint.as_deref())
    )]
    IamRefused {
        call: Call,
        service_account: String,
        status: u16,
        /// Google's `error.status`, e.g. `PERMISSION_DENIED`.
        google_status: String,
        message: String,
        hint: Option<String>,
    },
    /// Something answered, but not in Google's error shape (a proxy, a load balancer, a URL
    /// that names something else).
    #[error("{url} answered HTTP {status} to {call}: {body}")]
    Http {
        call: Call,
        url: String,
        status: u16,
        body: String,
    },
    /// No answer: connection refused or reset, TLS failure, timeout.
    #[error("cannot reach {url} for {call}: {detail}{}", transport_hint(detail, *timed_out))]
    Transport {
        call: Call,
        url: String,
        detail: String,
        timed_out: bool,
    },
    /// A success status whose body could not be read or lacks what keyfed needs.
    #[error("the answer from {url} to {call} is not valid: {detail}")]
    InvalidResponse {
        call: Call,
        url: String,
        detail: String,
    },
}

fn hint_line(hint: Option<&str>) -> String {
    hint.map(|h| format!("\n  hint: {h}")).unwrap_or_default()
}

/// What to check when Google could not be reached at all.
fn transport_hint(detail: &str, timed_out: bool) -> &'static str {
    if timed_out {
        "\n  hint: the call timed out; check the network path to Google (proxy: HTTPS_PROXY / NO_PROXY) or raise the timeout"
    } else if detail.contains("certificate") {
        "\n  hint: the endpoint's TLS certificate is not trusted; set ca_file to the CA bundle that signs it (a Private Service Connect endpoint's CA, a TLS-inspecting proxy's CA)"
    } else {
        ""
    }
}

impl GcpError {
    /// The error for a variant this cloud does not issue.
    pub fn no_variant(slot: &SlotKey) -> Self {
        Self::NoVariant(slot.to_string())
    }

    /// Google's own error code: STS's `error` (`invalid_grant`) or IAM's `error.status`
    /// (`PERMISSION_DENIED`), when Google answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::StsRefused { error, .. } => Some(error),
            Self::IamRefused { google_status, .. } => Some(google_status),
            _ => None,
        }
    }

    /// The hint added to Google's words, when there is one.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Self::StsRefused { hint, .. } | Self::IamRefused { hint, .. } => hint.as_deref(),
            _ => None,
        }
    }
}

/// What the caller should do after a [`GcpError`] (DESIGN §9): outages back off; a subject
/// token STS did not take is fetched afresh once; refusals stop, naming the side to change —
/// what keyfed sends (its settings) is keyfed's configuration, the pool, provider and
/// service-account bindings are the Google Cloud side, and a token the issuer shapes wrongly
/// (its lifetime) is the issuer's.
impl Advise for GcpError {
    fn advice(&self) -> Advice {
        let passing = |status: u16| status >= 500 || status == 429;
        match self {
            Self::Setup(_) | Self::InvalidRequest { .. } | Self::NoVariant(_) => {
                Advice::Stop { side: Side::Config }
            }
            Self::Transport { .. } | Self::InvalidResponse { .. } => Advice::Backoff,
            Self::Http { status, .. } if passing(*status) => Advice::Backoff,
            // Not Google's voice: `sts_url` / `iam_url` name something else, or a proxy
            // refuses the call.
            Self::Http { .. } => Advice::Stop { side: Side::Config },
            Self::StsRefused {
                status,
                error,
                description,
                ..
            } => sts_advice(*status, error, description),
            Self::IamRefused {
                status,
                google_status,
                ..
            } => iam_advice(*status, google_status),
        }
    }
}

/// STS's refusals. `invalid_grant` is about the subject token: a fresh one may pass (expired
/// in transit, a signature that did not verify), except where the provider's settings refuse
/// every token (its audience, its issuer: the cloud side), the issuer makes every token so
/// (its lifetime, its algorithm, no `kid`: the issuer's side), or Google could not reach the
/// issuer's keys (back off: Google fetches them again).
pub(crate) fn sts_advice(status: u16, error: &str, description: &str) -> Advice {
    if status >= 500 || status == 429 || error == "temporarily_unavailable" {
        return Advice::Backoff;
    }
    match error {
        "invalid_grant"
            if description.contains("Error connecting to the given credential's issuer") =>
        {
            Advice::Backoff
        }
        "invalid_grant"
            if description.contains("audience in ID Token")
                || description.contains("issuer in ID Token") =>
        {
            Advice::Stop { side: Side::Cloud }
        }
        // How the issuer shapes and signs every token: a fresh one is no different.
        "invalid_grant"
            if description.contains("lifetime")
                || description.contains("signing algorithm")
                || description.contains("key ID (kid)") =>
        {
            Advice::Stop { side: Side::Issuer }
        }
        "invalid_grant" => Advice::FreshSubjectToken,
        // The provider's attribute mapping (or the token's sub) must change.
        "invalid_request" if description.contains("google.subject") => {
            Advice::Stop { side: Side::Cloud }
        }
        // What keyfed sent: its provider name, its scopes, its parameters.
        "invalid_request" | "invalid_scope" | "unsupported_grant_type" => {
            Advice::Stop { side: Side::Config }
        }
        // invalid_target (provider disabled, deleted or not there), invalid_client,
        // unauthorized_client (the attribute condition), and anything Google adds later.
        _ => Advice::Stop { side: Side::Cloud },
    }
}

/// IAM Credentials' refusals: the service account and its bindings are the Google Cloud side;
/// a request it finds invalid (the lifetime, a scope) is keyfed's configuration.
pub(crate) fn iam_advice(status: u16, google_status: &str) -> Advice {
    match (status, google_status) {
        (_, "RESOURCE_EXHAUSTED" | "UNAVAILABLE" | "INTERNAL" | "DEADLINE_EXCEEDED") => {
            Advice::Backoff
        }
        (s, _) if s >= 500 || s == 429 => Advice::Backoff,
        (400, _) | (_, "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE") => {
            Advice::Stop { side: Side::Config }
        }
        // PERMISSION_DENIED (the workloadIdentityUser binding), NOT_FOUND (no such service
        // account), UNAUTHENTICATED (IAM does not take the federated token).
        _ => Advice::Stop { side: Side::Cloud },
    }
}

/// What a hint may mention: the target's settings and what the subject token says of itself
/// (read without verifying, never printed whole).
#[derive(Debug, Clone, Default)]
pub(crate) struct HintContext {
    pub provider: String,
    pub pool: String,
    pub default_audience: String,
    pub service_account: Option<String>,
    pub lifetime_secs: u64,
    pub token: crate::token_facts::TokenFacts,
}

impl HintContext {
    fn principal(&self) -> String {
        format!(
            "principal://iam.googleapis.com/{}/subject/{}",
            self.pool,
            self.token.sub.as_deref().unwrap_or("<the token's sub>")
        )
    }
}

/// A line saying what to check next for STS's common refusals.
pub(crate) fn sts_hint(error: &str, description: &str, cx: &HintContext) -> Option<String> {
    let provider = &cx.provider;
    let iss = cx.token.iss.as_deref().unwrap_or("(none)");
    match error {
        "invalid_grant" if description.contains("audience in ID Token") => Some(format!(
            "the provider's allowed audiences must contain the token's aud {}; by default a provider allows only \"{}\" (and the same without https:), so make Keycloak put that value into aud (an audience mapper on the target's scope) or, for a custom audience, add it with `gcloud iam workload-identity-pools providers update-oidc … --allowed-audiences=<aud>` (which replaces the default)",
            cx.token.aud_text(),
            cx.default_audience
        )),
        "invalid_grant" if description.contains("issuer in ID Token") => Some(format!(
            "the provider {provider}'s issuer URI must be exactly the token's iss \"{iss}\" (scheme, host, port, path, no trailing slash)"
        )),
        "invalid_grant" if description.contains("Error connecting to the given credential's issuer") => Some(format!(
            "Google fetches {iss}/.well-known/openid-configuration and its jwks_uri over the internet to check the token's signature: both must be publicly reachable with a publicly trusted certificate (or upload the JWKS to the provider with --jwk-json-path); after a key rotation Google may take a while to see the new key"
        )),
        "invalid_grant"
            if description.contains("stale")
                || description.contains("expired")
                || description.contains("issued at") => Some(
            "the token had expired (or was not yet valid) when Google checked it, which allows about 60 s of clock skew; check this host's clock and the issuer's (timedatectl)".to_owned(),
        ),
        "invalid_grant" if description.contains("signature") => Some(format!(
            "Google could not verify the token's signature with the keys {iss} publishes; check that Keycloak signs with a key in its JWKS (Realm settings → Keys) and, if the provider has an uploaded JWKS, that it is current"
        )),
        "invalid_grant" if description.contains("lifetime") => Some(
            "Google takes tokens that live less than 48 hours (exp − iat); lower the Access Token Lifespan of the realm or client in Keycloak".to_owned(),
        ),
        "invalid_grant" if description.contains("kid") || description.contains("algorithm") => Some(
            "Google needs a token signed with RS256 or ES256 whose header names its key (kid); set the client's access token signature algorithm in Keycloak (Clients → <client> → Advanced → Fine grain OpenID Connect configuration)".to_owned(),
        ),
        "invalid_request" if description.contains("google.subject") => Some(format!(
            "the provider's attribute mapping for google.subject (usually assertion.sub; this token's sub is {} bytes) must produce at most 127 bytes; change the mapping on {provider}",
            cx.token.sub.as_deref().map_or(0, str::len)
        )),
        "invalid_request" if description.contains("audience") => Some(format!(
            "provider must be the full resource name projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<id> (now {provider})"
        )),
        "invalid_target" => Some(format!(
            "check that the pool and provider {provider} exist and are enabled (gcloud iam workload-identity-pools providers describe), and that the provider value uses the project's number, not its ID"
        )),
        "unauthorized_client" => Some(format!(
            "the provider {provider}'s attribute condition refused this token; check the condition against the token's claims (sub {})",
            cx.token.sub.as_deref().map_or("(none)".to_owned(), |s| format!("\"{s}\""))
        )),
        "invalid_scope" => Some("check the target's scopes (OAuth scope URLs such as https://www.googleapis.com/auth/cloud-platform)".to_owned()),
        _ => None,
    }
}

/// A line saying what to check next for IAM Credentials' common refusals.
pub(crate) fn iam_hint(
    call: Call,
    google_status: &str,
    message: &str,
    cx: &HintContext,
) -> Option<String> {
    let sa = cx.service_account.as_deref().unwrap_or("<service account>");
    match google_status {
        "PERMISSION_DENIED" => {
            let what = match call {
                Call::GenerateIdToken => "ID tokens",
                Call::GenerateAccessToken | Call::Sts => "access tokens",
            };
            Some(format!(
                "grant roles/iam.workloadIdentityUser on service account {sa} to {} (gcloud iam service-accounts add-iam-policy-binding {sa} --role=roles/iam.workloadIdentityUser --member={}) so the federated identity may mint its {what}; a new binding takes a minute or two to apply",
                cx.principal(),
                cx.principal()
            ))
        }
        "NOT_FOUND" => Some(format!(
            "service account {sa} does not exist (check service_account in keyfed's configuration, and that the account was not deleted or disabled)"
        )),
        "UNAUTHENTICATED" => Some(
            "IAM Credentials did not accept the federated token STS issued; check that the target's provider belongs to the project the service account's bindings name".to_owned(),
        ),
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION"
            if message.contains("lifetime") || message.contains("1 hour") =>
        {
            Some(format!(
                "lower the target's lifetime (now {} s) to 1h, or allow longer tokens for {sa} with the organization policy constraint constraints/iam.allowServiceAccountCredentialLifetimeExtension (up to 12h)",
                cx.lifetime_secs
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOUD: Advice = Advice::Stop { side: Side::Cloud };
    const CONFIG: Advice = Advice::Stop { side: Side::Config };
    const ISSUER: Advice = Advice::Stop { side: Side::Issuer };

    #[test]
    fn sts_refusals_follow_design() {
        assert_eq!(sts_advice(500, "internal", ""), Advice::Backoff);
        assert_eq!(sts_advice(429, "rate_limited", ""), Advice::Backoff);
        assert_eq!(
            sts_advice(
                400,
                "invalid_grant",
                "Error connecting to the given credential's issuer."
            ),
            Advice::Backoff
        );
        for d in [
            "ID Token issued at 1700000000 is stale to sign-in.",
            "Unable to verify the ID Token signature.",
        ] {
            assert_eq!(
                sts_advice(400, "invalid_grant", d),
                Advice::FreshSubjectToken,
                "{d}"
            );
        }
        assert_eq!(
            sts_advice(
                400,
                "invalid_grant",
                "The audience in ID Token [x] does not match the expected audience."
            ),
            CLOUD
        );
        assert_eq!(
            sts_advice(
                400,
                "invalid_grant",
                "The issuer in ID Token https://a does not match the expected one in config"
            ),
            CLOUD
        );
        assert_eq!(
            sts_advice(
                400,
                "invalid_grant",
                "The ID Token's lifetime (exp − iat) must be less than 48 hours."
            ),
            ISSUER
        );
        for d in [
            "The ID Token header has no key ID (kid).",
            "The ID Token is signed with HS256; the supported signing algorithms are RS256 and ES256.",
        ] {
            assert_eq!(sts_advice(400, "invalid_grant", d), ISSUER, "{d}");
        }
        assert_eq!(
            sts_advice(
                400,
                "invalid_request",
                "The size of mapped attribute google.subject exceeds the 127 bytes limit."
            ),
            CLOUD
        );
        for e in ["invalid_request", "invalid_scope", "unsupported_grant_type"] {
            assert_eq!(sts_advice(400, e, ""), CONFIG, "{e}");
        }
        for e in [
            "invalid_target",
            "invalid_client",
            "unauthorized_client",
            "new_thing",
        ] {
            assert_eq!(sts_advice(400, e, ""), CLOUD, "{e}");
        }
        assert_eq!(sts_advice(401, "invalid_client", ""), CLOUD);
    }

    #[test]
    fn iam_refusals_follow_design() {
        assert_eq!(iam_advice(403, "PERMISSION_DENIED"), CLOUD);
        assert_eq!(iam_advice(404, "NOT_FOUND"), CLOUD);
        assert_eq!(iam_advice(401, "UNAUTHENTICATED"), CLOUD);
        assert_eq!(iam_advice(400, "INVALID_ARGUMENT"), CONFIG);
        assert_eq!(iam_advice(400, "FAILED_PRECONDITION"), CONFIG);
        assert_eq!(iam_advice(429, "RESOURCE_EXHAUSTED"), Advice::Backoff);
        assert_eq!(iam_advice(503, "UNAVAILABLE"), Advice::Backoff);
        assert_eq!(iam_advice(500, "INTERNAL"), Advice::Backoff);
    }

    #[test]
    fn other_errors_advise_by_kind() {
        let http = |status| GcpError::Http {
            call: Call::Sts,
            url: "https://sts.googleapis.com/v1/token".to_owned(),
            status,
            body: "<html>".to_owned(),
        };
        assert_eq!(http(502).advice(), Advice::Backoff);
        assert_eq!(http(429).advice(), Advice::Backoff);
        assert_eq!(http(404).advice(), CONFIG);
        let transport = GcpError::Transport {
            call: Call::GenerateAccessToken,
            url: String::new(),
            detail: "connection refused".to_owned(),
            timed_out: false,
        };
        assert_eq!(transport.advice(), Advice::Backoff);
        let invalid = GcpError::InvalidResponse {
            call: Call::GenerateIdToken,
            url: String::new(),
            detail: String::new(),
        };
        assert_eq!(invalid.advice(), Advice::Backoff);
        let slot = SlotKey::Resource("https://management.azure.com".to_owned());
        let e = GcpError::no_variant(&slot);
        assert_eq!(e.advice(), CONFIG);
        assert!(e.to_string().contains("resource"), "{e}");
    }

    #[test]
    fn hints_name_what_to_change() {
        let cx = HintContext {
            provider: "projects/123/locations/global/workloadIdentityPools/onprem/providers/kc"
                .to_owned(),
            pool: "projects/123/locations/global/workloadIdentityPools/onprem".to_owned(),
            default_audience:
                "https://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/onprem/providers/kc"
                    .to_owned(),
            service_account: Some("app@proj-1.iam.gserviceaccount.com".to_owned()),
            lifetime_secs: 7200,
            token: crate::token_facts::TokenFacts {
                iss: Some("https://sso.example.com/realms/infra".to_owned()),
                aud: vec!["account".to_owned()],
                sub: Some("6f1c".to_owned()),
            },
        };
        let aud = sts_hint(
            "invalid_grant",
            "The audience in ID Token [account] does not match the expected audience.",
            &cx,
        )
        .unwrap_or_default();
        assert!(
            aud.contains("\"account\"")
                && aud.contains(&cx.default_audience)
                && aud.contains("--allowed-audiences"),
            "{aud}"
        );
        let denied = iam_hint(
            Call::GenerateAccessToken,
            "PERMISSION_DENIED",
            "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
            &cx,
        )
        .unwrap_or_default();
        assert!(
            denied.contains("roles/iam.workloadIdentityUser")
                && denied.contains(
                    "principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/onprem/subject/6f1c"
                )
                && denied.contains("app@proj-1.iam.gserviceaccount.com"),
            "{denied}"
        );
        let lifetime = iam_hint(
            Call::GenerateAccessToken,
            "INVALID_ARGUMENT",
            "can not have lifetimes of more than 1 hour.",
            &cx,
        )
        .unwrap_or_default();
        assert!(
            lifetime.contains("7200 s")
                && lifetime.contains("allowServiceAccountCredentialLifetimeExtension"),
            "{lifetime}"
        );
    }
}
