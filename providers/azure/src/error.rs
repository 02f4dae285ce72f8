//! Everything that can go wrong getting a token from Entra ID, each variant naming the client
//! and tenant, quoting Entra's own words (`AADSTSnnnn: description` from its JSON error, with
//! the trace and correlation IDs Microsoft support asks for), a hint for the usual
//! federated-credential mistakes, and its [`Advice`]: back off, fetch a fresh subject token and
//! retry once, or stop until keyfed's configuration, the issuer or the Azure side changes. No
//! token (the subject token or one Entra issued) ever appears here.

use keyfed_core::exchange::{Advice, Advise, Side, SlotKey};
use keyfed_core::http::HttpSetupError;
use keyfed_core::token_facts::TokenFacts;

use crate::config::AUDIENCE;

/// Why no token came back from Entra ID.
#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    /// The client could not be built: a refused URL, an unreadable CA file, a bad proxy.
    #[error("Entra ID client: {0}")]
    Setup(#[source] HttpSetupError),
    /// The request cannot work, whatever Entra would say.
    #[error("Entra ID: {detail}")]
    InvalidRequest { detail: String },
    /// A variant (slot) this cloud does not issue.
    #[error("Entra ID issues no credential for {0}")]
    NoVariant(String),
    /// Entra answered with its JSON error.
    #[error("{0}")]
    Refused(Box<Refusal>),
    /// Something answered, but not in Entra's error shape (a proxy, a load balancer, an
    /// authority host that is something else).
    #[error("{url} answered HTTP {status}: {body}")]
    Http {
        url: String,
        status: u16,
        body: String,
    },
    /// No answer: connection refused or reset, TLS failure, timeout.
    #[error("cannot reach Entra ID at {url}: {detail}{}", TRANSPORT_HINT.hint(detail, *timed_out))]
    Transport {
        url: String,
        detail: String,
        timed_out: bool,
    },
    /// A success status whose body could not be read or lacks what keyfed needs.
    #[error("the answer from {url} is not a valid token response: {detail}")]
    InvalidResponse { url: String, detail: String },
}

/// Entra's refusal: its words, the trace Microsoft support asks for, and keyfed's hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub tenant_id: String,
    pub client_id: String,
    pub scope: String,
    pub status: u16,
    /// The OAuth error: `invalid_client`, `invalid_request`, `invalid_scope`, …
    pub error: String,
    /// The first of `error_codes`: the number after `AADSTS`.
    pub code: Option<u64>,
    /// `AADSTSnnnn: …`: the first line of `error_description`, without the trace.
    pub description: String,
    pub trace_id: String,
    pub correlation_id: String,
    pub timestamp: String,
    pub hint: Option<String>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Entra ID refused a token for client {} in tenant {} (scope {}, HTTP {}, {}): {}{}{}",
            self.client_id,
            self.tenant_id,
            self.scope,
            self.status,
            self.error,
            self.description,
            hint_line(self.hint.as_deref()),
            trace_line(&self.trace_id, &self.correlation_id, &self.timestamp)
        )
    }
}

fn hint_line(hint: Option<&str>) -> String {
    hint.map(|h| format!("\n  hint: {h}")).unwrap_or_default()
}

fn trace_line(trace_id: &str, correlation_id: &str, timestamp: &str) -> String {
    if trace_id.is_empty() && correlation_id.is_empty() {
        return String::new();
    }
    let at = if timestamp.is_empty() {
        String::new()
    } else {
        format!(", timestamp {timestamp}")
    };
    format!("\n  Entra trace ID {trace_id}, correlation ID {correlation_id}{at}")
}

/// What to check when Entra could not be reached at all.
const TRANSPORT_HINT: keyfed_core::http::TransportHint = keyfed_core::http::TransportHint {
    upstream: "the authority host",
    server: "the authority host's",
    private_cas: "a TLS-inspecting proxy's CA, or a private authority's",
};

impl AzureError {
    /// The error for a variant this cloud does not issue.
    pub fn no_variant(slot: &SlotKey) -> Self {
        Self::NoVariant(slot.to_string())
    }

    /// Entra's error code, the number after `AADSTS`, when Entra answered with one.
    pub fn code(&self) -> Option<u64> {
        match self {
            Self::Refused(r) => r.code,
            _ => None,
        }
    }

    /// The hint added to Entra's words, when there is one.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Self::Refused(r) => r.hint.as_deref(),
            _ => None,
        }
    }
}

/// What the caller should do after an [`AzureError`] (DESIGN §9): outages back off; an
/// assertion Entra found outside its validity is fetched afresh once; refusals stop, naming
/// the side to change.
impl Advise for AzureError {
    fn advice(&self) -> Advice {
        match self {
            Self::Setup(_) | Self::InvalidRequest { .. } | Self::NoVariant(_) => {
                Advice::Stop { side: Side::Config }
            }
            Self::Transport { .. } | Self::InvalidResponse { .. } => Advice::Backoff,
            Self::Http { status, .. } if *status >= 500 || *status == 429 => Advice::Backoff,
            // Not Entra's voice: `authority_host` names something else, or a proxy refuses.
            Self::Http { .. } => Advice::Stop { side: Side::Config },
            Self::Refused(r) => refusal_advice(r.status, &r.error, r.code),
        }
    }
}

/// Entra's refusals by `AADSTS` code, then by OAuth error. What keyfed sends (tenant, client
/// ID, scope) is keyfed's configuration; the federated identity credential's issuer and
/// subject are the Azure side; the token's audience, lifetime and algorithm are how the issuer
/// (Keycloak) shapes every token.
pub(crate) fn refusal_advice(status: u16, error: &str, code: Option<u64>) -> Advice {
    const CLOUD: Advice = Advice::Stop { side: Side::Cloud };
    const CONFIG: Advice = Advice::Stop { side: Side::Config };
    const ISSUER: Advice = Advice::Stop { side: Side::Issuer };
    if status >= 500 || status == 429 || matches!(error, "temporarily_unavailable" | "server_error")
    {
        return Advice::Backoff;
    }
    match code {
        // No federated credential matches — also what Entra says for minutes after one is
        // created, until it has propagated.
        Some(70021) => Advice::Backoff,
        // Entra could not fetch the issuer's discovery document or keys.
        Some(50166 | 90061 | 501661) => Advice::Backoff,
        // The federated credential's issuer or subject differs from the token's.
        Some(700211 | 700213 | 7002137 | 7002138) => CLOUD,
        // The token's audience is not the credential's.
        Some(700212) => ISSUER,
        // Expired in transit or not yet valid: a fresh one passes unless the clocks disagree.
        Some(700024) => Advice::FreshSubjectToken,
        // Signed with a key Entra has not seen yet, or unreadable: a fresh one may pass.
        Some(700027 | 50027) => Advice::FreshSubjectToken,
        // Every token the issuer makes lives too long, is signed with another algorithm, or
        // comes from Entra itself.
        Some(70023 | 5002738 | 5002730 | 700222) => ISSUER,
        // The app, the tenant, the scope or the resource as keyfed's configuration names them.
        Some(700016 | 90002 | 900023 | 70011 | 1002012 | 500011 | 900144) => CONFIG,
        // The app is disabled, or has no service principal in the tenant.
        Some(7000112 | 7000222) => CLOUD,
        _ => match error {
            "invalid_scope"
            | "invalid_resource"
            | "invalid_tenant"
            | "invalid_request"
            | "unsupported_grant_type" => CONFIG,
            // invalid_client, unauthorized_client, invalid_grant and anything Entra adds.
            _ => CLOUD,
        },
    }
}

/// What a hint may mention: the target's settings and what the subject token says of itself
/// (read without verifying, never printed whole).
#[derive(Debug, Clone, Default)]
pub(crate) struct HintContext {
    pub tenant_id: String,
    pub client_id: String,
    pub authority_host: String,
    pub scope: String,
    pub token: TokenFacts,
}

impl HintContext {
    fn iss(&self) -> &str {
        self.token.iss.as_deref().unwrap_or("(none)")
    }

    fn sub(&self) -> &str {
        self.token.sub.as_deref().unwrap_or("(none)")
    }

    /// The audience a federated credential matches: [`AUDIENCE`] when the token carries it,
    /// else the token's only audience, else all of them.
    fn aud(&self) -> String {
        match self.token.aud.as_slice() {
            many if many.iter().any(|a| a == AUDIENCE) => AUDIENCE.to_owned(),
            [one] => one.clone(),
            _ => self.token.aud_text(),
        }
    }
}

/// A line saying what to check next for Entra's common refusals.
pub(crate) fn hint(error: &str, code: Option<u64>, cx: &HintContext) -> Option<String> {
    let client = &cx.client_id;
    let tenant = &cx.tenant_id;
    let (iss, sub, aud) = (cx.iss(), cx.sub(), cx.aud());
    let hint = match code {
        Some(70021) => format!(
            "no federated identity credential of {client} matches what keyfed sent: one must have exactly issuer \"{iss}\", subject \"{sub}\" and audience \"{aud}\" (case-sensitive; `az ad app federated-credential create --id {client} --parameters '{{\"name\":\"keyfed\",\"issuer\":\"{iss}\",\"subject\":\"{sub}\",\"audiences\":[\"{aud}\"]}}'`, or for a user-assigned managed identity `az identity federated-credential create --name keyfed --identity-name <identity> --resource-group <group> --issuer \"{iss}\" --subject \"{sub}\" --audiences \"{aud}\"`); a credential created in the last few minutes may not have propagated yet, so keyfed keeps retrying with backoff"
        ),
        Some(700211) => format!(
            "the federated credential's issuer must be exactly the token's iss \"{iss}\" — a trailing slash is the usual difference (a Keycloak realm's issuer has none), then scheme, host, port and path"
        ),
        Some(700213 | 7002137 | 7002138) => format!(
            "the federated credential's subject must be exactly the token's sub \"{sub}\", compared case-sensitively (a Keycloak service account's sub is the service-account user's ID, not the client ID)"
        ),
        Some(700212) => format!(
            "the token's aud {} must hold the federated credential's audience (by default \"{AUDIENCE}\"): add an audience mapper with that value to the Keycloak client scope keyfed requests, or make the target's audience and the credential's audience the same",
            cx.token.aud_text()
        ),
        Some(700024) => "the token had expired (or was not yet valid) when Entra checked it; keyfed fetches a fresh one and retries once, and if it repeats, check this host's and Keycloak's clocks (timedatectl)".to_owned(),
        Some(70023) => "Entra takes assertions that live at most about a day (exp − iat, and iat must be present): lower the Access Token Lifespan of the Keycloak realm or client".to_owned(),
        Some(5002738 | 5002730) => "Entra accepts RS256-signed assertions only: give the Keycloak realm an active RS256 key and set the client's access token signature algorithm to RS256".to_owned(),
        Some(50166 | 90061 | 501661) => format!(
            "Entra fetches {}/.well-known/openid-configuration and its jwks_uri over the internet to check the token's signature: both must be publicly reachable with a publicly trusted certificate",
            iss.trim_end_matches('/')
        ),
        Some(700027) => "Entra could not verify the token's signature with the issuer's published keys; after a Keycloak key rotation Entra may take a while to see the new key".to_owned(),
        Some(700222) => "Entra does not take its own tokens as federated assertions: the subject token must come from Keycloak".to_owned(),
        Some(700016) => format!(
            "check client_id {client} and tenant_id {tenant}: the app registration or user-assigned managed identity must exist in that tenant (`az ad sp show --id {client}`); a managed identity's client ID is its clientId, not its principal (object) ID"
        ),
        Some(90002 | 900023) => format!(
            "check tenant_id \"{tenant}\" and authority_host {}: a tenant lives in one cloud (public https://login.microsoftonline.com, US Government https://login.microsoftonline.us, China https://login.chinacloudapi.cn)",
            cx.authority_host
        ),
        Some(70011 | 1002012) => format!(
            "the client-credentials flow takes one scope of the form <resource>/.default, such as \"https://management.azure.com/.default\"; keyfed asked for \"{}\"",
            cx.scope
        ),
        Some(500011) => format!(
            "no resource \"{}\" is known to tenant {tenant}: check the scope's spelling (https://management.azure.com, https://vault.azure.net, https://storage.azure.com, …) or, for your own API, its application ID URI",
            cx.scope.strip_suffix("/.default").unwrap_or(&cx.scope)
        ),
        _ if error == "invalid_scope" => format!(
            "check the scope \"{}\": it must be <resource>/.default",
            cx.scope
        ),
        _ => return None,
    };
    Some(hint)
}

/// Entra's `error_description` cut to what an error line needs: its first line, without the
/// "Trace ID: … Correlation ID: … Timestamp: …" tail (kept apart), whitespace flattened, at
/// most 600 characters, and never anything shaped like a token. When it does not begin with
/// `AADSTS<code>`, the code is put in front.
pub(crate) fn description(raw: &str, code: Option<u64>) -> String {
    const MAX: usize = 600;
    let first = raw.split(['\r', '\n']).next().unwrap_or_default();
    let first = first
        .split_once(" Trace ID:")
        .map_or(first, |(before, _)| before);
    let flat = first
        .split_whitespace()
        .map(|word| {
            // A JWT (or its signature) in Entra's words would be a secret in keyfed's logs.
            if word.trim_start_matches(['\'', '"', '(']).starts_with("eyJ") && word.len() > 20 {
                "(a token, withheld)"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    // Control characters (an escape sequence in an upstream's words) stay visible escapes in a
    // log line or an endpoint's answer.
    let flat = if flat.contains(char::is_control) {
        flat.escape_default().to_string()
    } else {
        flat
    };
    let text = match code {
        Some(code) if !flat.starts_with("AADSTS") => {
            if flat.is_empty() {
                format!("AADSTS{code}")
            } else {
                format!("AADSTS{code}: {flat}")
            }
        }
        _ if flat.is_empty() => "(no description)".to_owned(),
        _ => flat,
    };
    if text.chars().count() <= MAX {
        text
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOUD: Advice = Advice::Stop { side: Side::Cloud };
    const CONFIG: Advice = Advice::Stop { side: Side::Config };
    const ISSUER: Advice = Advice::Stop { side: Side::Issuer };

    #[test]
    fn refusals_follow_design() {
        for (status, error, code, advice) in [
            (400, "invalid_request", Some(70021), Advice::Backoff),
            (401, "invalid_client", Some(700211), CLOUD),
            (401, "invalid_client", Some(700213), CLOUD),
            (401, "invalid_client", Some(7002138), CLOUD),
            (401, "invalid_client", Some(700212), ISSUER),
            (
                401,
                "invalid_client",
                Some(700024),
                Advice::FreshSubjectToken,
            ),
            (400, "invalid_request", Some(70023), ISSUER),
            (400, "unauthorized_client", Some(700016), CONFIG),
            (400, "invalid_tenant", Some(90002), CONFIG),
            (400, "invalid_scope", Some(70011), CONFIG),
            (400, "invalid_scope", Some(1002012), CONFIG),
            (400, "invalid_resource", Some(500011), CONFIG),
            (400, "invalid_request", Some(50166), Advice::Backoff),
            (400, "invalid_request", Some(5002738), ISSUER),
            (429, "invalid_request", Some(700016), Advice::Backoff),
            (503, "server_error", None, Advice::Backoff),
            (400, "temporarily_unavailable", None, Advice::Backoff),
            (400, "invalid_scope", None, CONFIG),
            (401, "invalid_client", Some(123456), CLOUD),
            (400, "something_new", None, CLOUD),
        ] {
            assert_eq!(
                refusal_advice(status, error, code),
                advice,
                "{status} {error} {code:?}"
            );
        }
    }

    #[test]
    fn other_errors_advise_by_kind() {
        let http = |status| AzureError::Http {
            url: "https://login.microsoftonline.com/t/oauth2/v2.0/token".to_owned(),
            status,
            body: "<html>".to_owned(),
        };
        assert_eq!(http(502).advice(), Advice::Backoff);
        assert_eq!(http(429).advice(), Advice::Backoff);
        assert_eq!(http(404).advice(), CONFIG);
        let transport = AzureError::Transport {
            url: String::new(),
            detail: "connection refused".to_owned(),
            timed_out: false,
        };
        assert_eq!(transport.advice(), Advice::Backoff);
        let invalid = AzureError::InvalidResponse {
            url: String::new(),
            detail: String::new(),
        };
        assert_eq!(invalid.advice(), Advice::Backoff);
        let e = AzureError::no_variant(&SlotKey::SubjectToken);
        assert_eq!(e.advice(), CONFIG);
    }

    #[test]
    fn issue_10_control_characters_in_a_description_stay_escaped() {
        let shown = description("AADSTS70021: evil\u{1b}[31m red", Some(70021));
        assert!(!shown.contains('\u{1b}'), "{shown}");
        assert!(shown.contains("\\u{1b}[31m"), "{shown}");
    }

    #[test]
    fn descriptions_lose_their_trace_tail() {
        let old = "AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: 'https://kc'. Assertion Subject: 's'. Assertion Audience: 'api://AzureADTokenExchange'. https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation\r\nTrace ID: 30b6df93\r\nCorrelation ID: dffc6012\r\nTimestamp: 2022-10-27 23:39:22Z";
        assert_eq!(
            description(old, Some(70021)),
            "AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: 'https://kc'. Assertion Subject: 's'. Assertion Audience: 'api://AzureADTokenExchange'. https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation"
        );
        let new = "AADSTS700213: No matching federated identity record found for presented assertion subject 'x'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation Trace ID: 8eea681d Correlation ID: d0f0de73 Timestamp: 2025-10-13 14:54:34Z";
        assert!(description(new, Some(700213)).ends_with("workload-identity-federation"));
        assert_eq!(description("  ", Some(50058)), "AADSTS50058");
        assert_eq!(description("Bad thing.", Some(1)), "AADSTS1: Bad thing.");
        assert_eq!(description("", None), "(no description)");
        let leaky =
            "AADSTS50027: Invalid JWT token 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl'.";
        assert_eq!(
            description(leaky, Some(50027)),
            "AADSTS50027: Invalid JWT token (a token, withheld)"
        );
        assert!(description(&"x".repeat(5000), None).chars().count() <= 601);
    }

    fn context() -> HintContext {
        HintContext {
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".to_owned(),
            client_id: "af3110ba-0ba9-4412-b1a0-59f50b7e9273".to_owned(),
            authority_host: "https://login.microsoftonline.com/".to_owned(),
            scope: "https://management.azure.com/.default".to_owned(),
            token: TokenFacts {
                iss: Some("https://sso.example.com/realms/infra".to_owned()),
                aud: vec![AUDIENCE.to_owned(), "account".to_owned()],
                sub: Some("6f1c".to_owned()),
            },
        }
    }

    #[test]
    fn hints_name_what_keyfed_sent() {
        let cx = context();
        let no_match = hint("invalid_request", Some(70021), &cx).unwrap_or_default();
        for part in [
            "issuer \"https://sso.example.com/realms/infra\"",
            "subject \"6f1c\"",
            "audience \"api://AzureADTokenExchange\"",
            "propagated",
        ] {
            assert!(no_match.contains(part), "{part}: {no_match}");
        }
        let issuer = hint("invalid_client", Some(700211), &cx).unwrap_or_default();
        assert!(
            issuer.contains("trailing slash")
                && issuer.contains("\"https://sso.example.com/realms/infra\""),
            "{issuer}"
        );
        let subject = hint("invalid_client", Some(700213), &cx).unwrap_or_default();
        assert!(
            subject.contains("case-sensitively") && subject.contains("\"6f1c\""),
            "{subject}"
        );
        assert!(hint("invalid_client", Some(700024), &cx).is_some_and(|h| h.contains("clock")));
        assert!(hint("invalid_request", Some(70023), &cx).is_some_and(|h| h.contains("Lifespan")));
        assert!(hint("x", Some(424242), &cx).is_none());
    }
}
