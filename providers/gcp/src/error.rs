//! Everything that can go wrong trading a subject token at Google, each variant naming the
//! call and the pool provider or service account, quoting Google's own words (RFC 6749
//! `error`/`error_description` from STS, `{error:{code,message,status}}` from IAM Credentials)
//! with a hint for the usual pool, provider and binding mistakes, and its [`Advice`]: back off,
//! fetch a fresh subject token and retry once, or stop until keyfed's configuration, the issuer
//! or the Google Cloud side changes. No token (subject, federated or issued) ever appears here.

use keyfed_core::exchange::{Advice, Advise, Side, SlotKey};
use keyfed_core::http::HttpSetupError;
use keyfed_core::quote::{gcloud_list, sh};

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
    #[error("cannot reach {url} for {call}: {detail}{}", TRANSPORT_HINT.hint(detail, *timed_out))]
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
const TRANSPORT_HINT: keyfed_core::http::TransportHint = keyfed_core::http::TransportHint {
    upstream: "Google",
    server: "the endpoint's",
    private_cas: "a Private Service Connect endpoint's CA, a TLS-inspecting proxy's CA",
};

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
    // The Security Token Service API is not enabled on the pool's project (issue 9).
    if api_disabled(description, None) {
        return Advice::Stop { side: Side::Cloud };
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

/// IAM Credentials' refusals: the service account, its bindings and the project's enabled APIs
/// are the Google Cloud side; a request it finds invalid (the lifetime, a scope) is keyfed's
/// configuration.
pub(crate) fn iam_advice(status: u16, google_status: &str) -> Advice {
    match (status, google_status) {
        (_, "RESOURCE_EXHAUSTED" | "UNAVAILABLE" | "INTERNAL" | "DEADLINE_EXCEEDED") => {
            Advice::Backoff
        }
        (s, _) if s >= 500 || s == 429 => Advice::Backoff,
        (400, _) | (_, "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE") => {
            Advice::Stop { side: Side::Config }
        }
        // PERMISSION_DENIED (the workloadIdentityUser binding, or the IAM Service Account
        // Credentials API not enabled), NOT_FOUND (no such service account), UNAUTHENTICATED
        // (IAM does not take the federated token).
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
    /// The delegation chain, as configured: `projects/-/serviceAccounts/<email>`, first hop
    /// first.
    pub delegates: Vec<String>,
    /// The pool's project (its number): where STS and IAM Credentials must be enabled.
    pub project_number: String,
    pub lifetime_secs: u64,
    pub token: keyfed_core::token_facts::TokenFacts,
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

/// Whether Google's words say the API called is not enabled on the consumer project: 403
/// `PERMISSION_DENIED` with "<API> has not been used in project <n> before or it is disabled.
/// Enable it by visiting …" and a `google.rpc.ErrorInfo` whose reason is `SERVICE_DISABLED`.
pub(crate) fn api_disabled(message: &str, reason: Option<&str>) -> bool {
    reason == Some("SERVICE_DISABLED")
        || message.contains("SERVICE_DISABLED")
        || message.contains("has not been used")
        || message.contains("it is disabled")
}

/// The hint for an API not enabled on the pool's project: which service (the one Google's
/// activation URL names, else the one `call` needs) and which project (the one Google names,
/// else the target's project number).
fn api_disabled_hint(call: Call, message: &str, cx: &HintContext) -> String {
    // Only what looks like a service or project name is taken from Google's text.
    let word = |after: &str, end: char| {
        message
            .split_once(after)
            .and_then(|(_, rest)| rest.split(end).next())
            .filter(|w| {
                !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
            })
            .map(str::to_owned)
    };
    let service = word("/apis/api/", '/').unwrap_or_else(|| {
        match call {
            Call::Sts => "sts.googleapis.com",
            Call::GenerateAccessToken | Call::GenerateIdToken => "iamcredentials.googleapis.com",
        }
        .to_owned()
    });
    let project = word("in project ", ' ').unwrap_or_else(|| cx.project_number.clone());
    let title = match service.as_str() {
        "sts.googleapis.com" => "the Security Token Service API",
        "iamcredentials.googleapis.com" => "the IAM Service Account Credentials API",
        _ => "the API",
    };
    format!(
        "{title} ({service}) is not enabled on project {project}, the workload identity pool's project: enable it with `gcloud services enable {service} --project={project}` (workload identity federation needs sts.googleapis.com and, to impersonate a service account, iamcredentials.googleapis.com); it takes a few minutes to apply"
    )
}

/// A line saying what to check next for STS's common refusals (`reason`: the
/// `google.rpc.ErrorInfo` reason when Google answered in its API error shape).
pub(crate) fn sts_hint(
    error: &str,
    description: &str,
    reason: Option<&str>,
    cx: &HintContext,
) -> Option<String> {
    let provider = &cx.provider;
    let iss = cx.token.iss.as_deref().unwrap_or("(none)");
    if api_disabled(description, reason) {
        return Some(api_disabled_hint(Call::Sts, description, cx));
    }
    match error {
        "invalid_grant" if description.contains("audience in ID Token") => Some(format!(
            "the provider's allowed audiences must contain the token's aud {}; by default a provider allows only \"{}\" (and the same without https:), so make Keycloak put that value into aud (an audience mapper on the target's scope) or, for a custom audience, add it with `gcloud iam workload-identity-pools providers update-oidc {} --allowed-audiences={}` (which replaces the default)",
            cx.token.aud_text(),
            cx.default_audience,
            sh(provider),
            // The value to allow, when the token names one (issue 12), as gcloud reads a list
            // flag and quoted for sh.
            match cx.token.aud.as_slice() {
                [one] => sh(&gcloud_list(&[one])),
                _ => "AUDIENCE".to_owned(),
            }
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

/// A line saying what to check next for IAM Credentials' common refusals (`reason`: the
/// `google.rpc.ErrorInfo` reason in the answer's details, when there is one).
pub(crate) fn iam_hint(
    call: Call,
    google_status: &str,
    message: &str,
    reason: Option<&str>,
    cx: &HintContext,
) -> Option<String> {
    let sa = cx.service_account.as_deref().unwrap_or("<service account>");
    match google_status {
        // Not a binding at all: the API is off on the pool's project (issue 9).
        "PERMISSION_DENIED" if api_disabled(message, reason) => {
            Some(api_disabled_hint(call, message, cx))
        }
        "PERMISSION_DENIED" => Some(binding_hint(call, sa, cx)),
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

/// What to grant so the federated principal may mint the service account's tokens: directly,
/// `roles/iam.workloadIdentityUser` on the account; through a delegation chain, on its FIRST
/// account, then `roles/iam.serviceAccountTokenCreator` on each next account to the one
/// before it (issue 9).
fn binding_hint(call: Call, sa: &str, cx: &HintContext) -> String {
    let what = match call {
        Call::GenerateIdToken => "ID tokens",
        Call::GenerateAccessToken | Call::Sts => "access tokens",
    };
    let principal = cx.principal();
    // Quoted for sh: the member holds the token's sub.
    let grant = |account: &str, role: &str, member: &str| {
        format!(
            "gcloud iam service-accounts add-iam-policy-binding {} --role=roles/iam.{role} --member={}",
            sh(account),
            sh(member)
        )
    };
    let delegates: Vec<&str> = cx
        .delegates
        .iter()
        .map(|d| d.strip_prefix("projects/-/serviceAccounts/").unwrap_or(d))
        .collect();
    let Some(first) = delegates.first() else {
        return format!(
            "grant roles/iam.workloadIdentityUser on service account {sa} to {principal} ({}) so the federated identity may mint its {what}; a new binding takes a minute or two to apply",
            grant(sa, "workloadIdentityUser", &principal)
        );
    };
    let chain: Vec<&str> = delegates.iter().copied().chain([sa]).collect();
    let hops: Vec<String> = chain
        .windows(2)
        .map(|pair| {
            grant(
                pair[1],
                "serviceAccountTokenCreator",
                &format!("serviceAccount:{}", pair[0]),
            )
        })
        .collect();
    format!(
        "with delegates the federated identity acts through the chain {principal} → {}: it needs roles/iam.workloadIdentityUser (or roles/iam.serviceAccountTokenCreator) on the FIRST delegate {first}, not on {sa} ({}), and each account in the chain needs roles/iam.serviceAccountTokenCreator on the next ({}) so {sa} mints its {what}; new bindings take a minute or two to apply",
        chain.join(" → "),
        grant(first, "workloadIdentityUser", &principal),
        hops.join("; ")
    )
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

    fn context() -> HintContext {
        HintContext {
            provider: "projects/123/locations/global/workloadIdentityPools/onprem/providers/kc"
                .to_owned(),
            pool: "projects/123/locations/global/workloadIdentityPools/onprem".to_owned(),
            default_audience:
                "https://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/onprem/providers/kc"
                    .to_owned(),
            service_account: Some("app@proj-1.iam.gserviceaccount.com".to_owned()),
            delegates: Vec::new(),
            project_number: "123".to_owned(),
            lifetime_secs: 7200,
            token: keyfed_core::token_facts::TokenFacts {
                iss: Some("https://sso.example.com/realms/infra".to_owned()),
                aud: vec!["account".to_owned()],
                sub: Some("6f1c".to_owned()),
            },
        }
    }

    #[test]
    fn hints_name_what_to_change() {
        let cx = context();
        let aud = sts_hint(
            "invalid_grant",
            "The audience in ID Token [account] does not match the expected audience.",
            None,
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
            Some("IAM_PERMISSION_DENIED"),
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
            None,
            &cx,
        )
        .unwrap_or_default();
        assert!(
            lifetime.contains("7200 s")
                && lifetime.contains("allowServiceAccountCredentialLifetimeExtension"),
            "{lifetime}"
        );
    }

    /// Issue 12: the audience to allow comes out as one value of gcloud's list flag (a comma
    /// in it taking gcloud's alternate delimiter) and quoted for sh, as does the member, which
    /// holds the token's sub.
    #[test]
    fn issue_12_the_hints_commands_quote_the_tokens_values() {
        let mut cx = context();
        cx.token.aud = vec!["api a,b".to_owned()];
        cx.token.sub = Some("it's".to_owned());
        let aud = sts_hint(
            "invalid_grant",
            "The audience in ID Token [api a,b] does not match the expected audience.",
            None,
            &cx,
        )
        .unwrap_or_default();
        assert!(
            aud.contains(
                "`gcloud iam workload-identity-pools providers update-oidc projects/123/locations/global/workloadIdentityPools/onprem/providers/kc --allowed-audiences='^:^api a,b'`"
            ),
            "{aud}"
        );
        let denied = iam_hint(
            Call::GenerateAccessToken,
            "PERMISSION_DENIED",
            "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
            None,
            &cx,
        )
        .unwrap_or_default();
        assert!(
            denied.contains(
                "--member='principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/onprem/subject/it'\\''s'"
            ),
            "{denied}"
        );
    }

    /// Issue 9: an API left disabled on the pool's project is not a missing binding.
    #[test]
    fn issue_9_a_disabled_api_is_named_with_the_command_that_enables_it() {
        let cx = context();
        let iam = "IAM Service Account Credentials API has not been used in project 123456789012 before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/iamcredentials.googleapis.com/overview?project=123456789012 then retry. If you enabled this API recently, wait a few minutes for the action to propagate to our systems and retry.";
        for call in [Call::GenerateAccessToken, Call::GenerateIdToken] {
            let hint = iam_hint(
                call,
                "PERMISSION_DENIED",
                iam,
                Some("SERVICE_DISABLED"),
                &cx,
            )
            .unwrap_or_default();
            assert!(
                hint.contains(
                    "gcloud services enable iamcredentials.googleapis.com --project=123456789012"
                ) && !hint.contains("workloadIdentityUser"),
                "{hint}"
            );
        }
        // The reason alone is enough, and the project then comes from the target.
        let hint = iam_hint(
            Call::GenerateAccessToken,
            "PERMISSION_DENIED",
            "The caller does not have permission",
            Some("SERVICE_DISABLED"),
            &cx,
        )
        .unwrap_or_default();
        assert!(
            hint.contains("gcloud services enable iamcredentials.googleapis.com --project=123"),
            "{hint}"
        );
        let sts = "Security Token Service API has not been used in project 123456789012 before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/sts.googleapis.com/overview?project=123456789012 then retry.";
        let hint =
            sts_hint("PERMISSION_DENIED", sts, Some("SERVICE_DISABLED"), &cx).unwrap_or_default();
        assert!(
            hint.contains("gcloud services enable sts.googleapis.com --project=123456789012"),
            "{hint}"
        );
        assert_eq!(sts_advice(403, "PERMISSION_DENIED", sts), CLOUD);
        // In the RFC 6749 shape too, whatever the error code.
        assert_eq!(sts_advice(400, "invalid_request", sts), CLOUD);
        assert!(
            sts_hint("invalid_request", sts, None, &cx)
                .unwrap_or_default()
                .contains("gcloud services enable sts.googleapis.com"),
        );
        assert_eq!(iam_advice(403, "PERMISSION_DENIED"), CLOUD);
        // A disabled provider is not a disabled API.
        let target = "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.";
        assert!(!api_disabled(target, None));
        assert!(
            sts_hint("invalid_target", target, None, &cx)
                .unwrap_or_default()
                .contains("project's number")
        );
        // Text from Google that is not a name stays out of the command.
        let odd = "X API has not been used in project `rm -rf` before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/a;b/overview";
        let hint = iam_hint(
            Call::GenerateAccessToken,
            "PERMISSION_DENIED",
            odd,
            None,
            &cx,
        )
        .unwrap_or_default();
        assert!(
            hint.contains("`gcloud services enable iamcredentials.googleapis.com --project=123`")
                && !hint.contains("rm -rf")
                && !hint.contains("a;b"),
            "{hint}"
        );
    }

    /// Issue 9: with delegates the principal's binding belongs on the first delegate, and each
    /// account in the chain needs Token Creator on the next.
    #[test]
    fn issue_9_the_binding_hint_follows_the_delegation_chain() {
        let cx = HintContext {
            delegates: vec![
                "projects/-/serviceAccounts/hop1@proj-1.iam.gserviceaccount.com".to_owned(),
                "projects/-/serviceAccounts/hop2@proj-1.iam.gserviceaccount.com".to_owned(),
            ],
            ..context()
        };
        let principal = "principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/onprem/subject/6f1c";
        let hint = iam_hint(
            Call::GenerateIdToken,
            "PERMISSION_DENIED",
            "Permission 'iam.serviceAccounts.getOpenIdToken' denied on resource (or it may not exist).",
            Some("IAM_PERMISSION_DENIED"),
            &cx,
        )
        .unwrap_or_default();
        for part in [
            format!(
                "gcloud iam service-accounts add-iam-policy-binding hop1@proj-1.iam.gserviceaccount.com --role=roles/iam.workloadIdentityUser --member={principal}"
            ),
            "add-iam-policy-binding hop2@proj-1.iam.gserviceaccount.com --role=roles/iam.serviceAccountTokenCreator --member=serviceAccount:hop1@proj-1.iam.gserviceaccount.com".to_owned(),
            "add-iam-policy-binding app@proj-1.iam.gserviceaccount.com --role=roles/iam.serviceAccountTokenCreator --member=serviceAccount:hop2@proj-1.iam.gserviceaccount.com".to_owned(),
            "FIRST delegate hop1@proj-1.iam.gserviceaccount.com".to_owned(),
        ] {
            assert!(hint.contains(&part), "{part}\n{hint}");
        }
        assert!(
            !hint.contains("add-iam-policy-binding app@proj-1.iam.gserviceaccount.com --role=roles/iam.workloadIdentityUser"),
            "{hint}"
        );
    }
}
