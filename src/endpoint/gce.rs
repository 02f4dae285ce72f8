//! The GCE metadata face, as Google's libraries call the metadata server of a Compute Engine VM:
//! google-auth (Python, and gcloud on it: `GCE_METADATA_HOST` and `GCE_METADATA_IP`),
//! google-auth-library and gcp-metadata (Node: `GCE_METADATA_HOST`), the Go and Java libraries
//! (`GCE_METADATA_HOST`), and `gcp_auth` (Rust: hard-wired to `metadata.google.internal`, served
//! through a hosts entry and `endpoint.allowed_hosts`). What it answers (DESIGN §8):
//!
//! - `GET /`, `/computeMetadata/v1/instance` (and `…/instance/`): 200, the detection pings of
//!   google-auth (`/`) and the Node library (`…/instance`); the directories above the leaves
//!   list what is below them.
//! - `…/instance/service-accounts/`: one `name/` a line — `default/`, then each account.
//! - `…/service-accounts/<account>/token[?scopes=a,b]`: `{"access_token","expires_in",
//!   "token_type":"Bearer"}`; `…/identity?audience=X[&format=full]`: the raw ID token;
//!   `…/email`, `…/scopes` (one a line), `…/aliases`; `…/<account>/?recursive=true`: the JSON
//!   `{"aliases","email","scopes"}` google-auth starts with; `…/<account>/` the directory.
//! - `…/project/project-id` (404 without `project_id`), `…/project/numeric-project-id`,
//!   `…/universe/universe-domain` (`googleapis.com`, what GCE answers in Google's universe).
//!
//! Accounts: `default` is the target `gce_target` names on the address the request arrived on
//! (the face is off where none is named); every GCP target also answers under its account name,
//! its `service_account` email — or, impersonating none, its target name, since a federated
//! identity has no email and the name google-auth reads from `email` must lead back to it. When
//! targets share an email, the default answers for it, then the first by name the caller may
//! use. Listings and settings show only targets the caller may have (`access`), as the IMDS
//! face's role listing does; an account the caller may not use, asked for by email or name,
//! is not found (404, the answer to an unknown name, the refusal logged), so no answer confirms
//! an email or names a target the listing hides. Only `default`, which every GCE host has, is
//! refused with 403 (and the project values read from its target).
//!
//! Variants: `?scopes=` other than the target's `scopes` (as a set) is the target's
//! `Scopes` slot — equal to them, it is the main credential, since google-auth passes the
//! scopes it read from `?recursive=true` back on every token request; `identity` is the
//! `IdToken` slot. An ID token for a target that impersonates no service account is refused
//! with 400 and a reason naming `service_account` before anything is asked upstream: Google
//! issues ID tokens only to service accounts, so it is keyfed's configuration, not a path, that
//! is missing (GCE's own 404 would send the user hunting for a typo). A variant refused to bound
//! upstream calls, like an outage, is 503.
//!
//! Rules of the metadata server kept: `Metadata-Flavor: Google` is required on every request
//! (403 without it, as GCE answers), and every answer, refusals included, carries it back — the
//! Node and Java libraries and Go's detection check it on each response. `X-Forwarded-For` is
//! 403 (the core's guard refuses it with `Host`, `Origin` and `Sec-Fetch-*`). JSON is sent as
//! exactly `application/json` (older google-auth compares the whole header), leaves as
//! `application/text`, as GCE does.
//!
//! Bodies: the ID token and the token document's head (everything up to `expires_in`'s value)
//! are rendered once per credential through the core's cache (format `gce-identity`,
//! `gce-token`); `expires_in` — whole seconds left, rounded down, so a client never believes a
//! token lives longer than it does — is written into each answer, since a cached number would
//! grow stale by the second.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::any;
use keyfed_core::ExposeSecret as _;
use keyfed_gcp::GcpTokenKind;
use serde_json::json;

use super::Core;
use super::documents::Key;
use super::face::Face;
use super::refusal::Refusal;
use super::server::Peer;
use crate::config::{Exchange, FaceSpec, GcpExchange};
use crate::credential::Credential;
use crate::engine::SlotKey;
use crate::served::Served;

/// The face's name, as its `FaceSpec` declares it.
const NAME: &str = "gce";
/// The header every request must carry with [`FLAVOR`], and every answer carries back.
const FLAVOR_HEADER: &str = "metadata-flavor";
const FLAVOR: &str = "Google";
/// The alias of the account `gce_target` names.
const DEFAULT: &str = "default";
/// Where GCE serves its metadata: everything but the root ping is below it.
const ROOT: &str = "/computeMetadata/v1";
/// The document formats of the core's cache.
const TOKEN_FORMAT: &str = "gce-token";
const IDENTITY_FORMAT: &str = "gce-identity";
/// GCE's content type for leaf values.
const TEXT: &str = "application/text";
const JSON: &str = "application/json";
/// What an account directory holds.
const ACCOUNT_LISTING: &str = "aliases\nemail\nidentity\nscopes\ntoken\n";

/// The GCE metadata face; it keeps no state of its own.
pub struct Gce {
    spec: &'static FaceSpec,
    core: Arc<Core>,
}

pub fn start(core: &Arc<Core>) -> anyhow::Result<Arc<dyn Face>> {
    Ok(Arc::new(Gce {
        spec: super::declared(NAME)?,
        core: Arc::clone(core),
    }))
}

/// The metadata server's statuses: a missing `Metadata-Flavor` is 403, as every other reason
/// not to answer a caller is.
#[deny(
    clippy::wildcard_enum_match_arm,
    clippy::match_wildcard_for_single_variants
)]
fn status(refusal: &Refusal) -> StatusCode {
    match refusal {
        Refusal::Forwarded => StatusCode::FORBIDDEN,
        Refusal::ForeignHost(_) => StatusCode::FORBIDDEN,
        Refusal::FromBrowser => StatusCode::FORBIDDEN,
        Refusal::MissingHeader(_) => StatusCode::FORBIDDEN,
        Refusal::BadToken => StatusCode::FORBIDDEN,
        Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
        Refusal::Forbidden { .. } => StatusCode::FORBIDDEN,
        Refusal::NotFound => StatusCode::NOT_FOUND,
        Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl Face for Gce {
    fn spec(&self) -> &'static FaceSpec {
        self.spec
    }

    /// Every path under its reserved prefixes, read by [`Gce::respond`] itself: the tree is
    /// small, and one handler answers unknown paths with the face's own 404 (and marker)
    /// rather than the endpoint's.
    fn routes(self: Arc<Self>) -> Router {
        Router::new()
            .route("/", any(serve))
            .route("/computeMetadata", any(serve))
            .route("/computeMetadata/", any(serve))
            .route("/computeMetadata/{*rest}", any(serve))
            .with_state(self)
    }

    fn status(&self, refusal: &Refusal) -> StatusCode {
        status(refusal)
    }

    fn finish(&self, response: &mut Response) {
        response
            .headers_mut()
            .insert(FLAVOR_HEADER, HeaderValue::from_static(FLAVOR));
    }
}

async fn serve(
    State(gce): State<Arc<Gce>>,
    peer: axum::Extension<Peer>,
    request: Request,
) -> Response {
    let (request, _) = request.into_parts();
    let result = gce.respond(peer.0, &request).await;
    gce.core.answer(&*gce, result)
}

/// One GCP target as the face shows it.
struct Account<'s> {
    target: &'s str,
    gcp: &'s GcpExchange,
    /// The target `gce_target` names here: its alias is `default`.
    default: bool,
}

impl Account<'_> {
    fn name(&self) -> &str {
        account_name(self.target, self.gcp)
    }
}

/// The name a target answers under: its service account's email, else its own name.
fn account_name<'a>(target: &'a str, gcp: &'a GcpExchange) -> &'a str {
    gcp.service_account.as_deref().unwrap_or(target)
}

/// The GCP targets served, by name.
fn gcp_targets(served: &Served) -> impl Iterator<Item = (&str, &GcpExchange)> {
    served
        .exchanges
        .iter()
        .filter_map(|(name, exchange)| match exchange {
            Exchange::Gcp(gcp) => Some((name.as_str(), &**gcp)),
            Exchange::Token | Exchange::Aws(_) | Exchange::Azure(_) => None,
        })
}

impl Gce {
    /// The whole request: the header check, then the path.
    async fn respond(&self, peer: Peer, request: &Parts) -> Result<Response, Refusal> {
        let flavored = request
            .headers
            .get(FLAVOR_HEADER)
            .is_some_and(|v| v.as_bytes() == FLAVOR.as_bytes());
        if !flavored {
            return Err(Refusal::MissingHeader("Metadata-Flavor: Google"));
        }
        if request.method != Method::GET && request.method != Method::HEAD {
            return Err(Refusal::NotFound);
        }
        let served = self.core.served();
        let default = self.core.target_at(NAME, &peer)?;
        let query = Query::parse(request.uri.query());
        let path = request.uri.path();
        let below = match path {
            "/" => return Ok(text("computeMetadata/\n")),
            "/computeMetadata" | "/computeMetadata/" => return Ok(text("v1/\n")),
            _ => path
                .strip_prefix(ROOT)
                .filter(|below| below.is_empty() || below.starts_with('/'))
                .ok_or(Refusal::NotFound)?,
        };
        let segments: Vec<&str> = below.split('/').skip(1).collect();
        match segments.as_slice() {
            [] | [""] => Ok(text("instance/\nproject/\nuniverse/\n")),
            ["instance"] | ["instance", ""] => Ok(text("service-accounts/\n")),
            ["instance", "service-accounts"] | ["instance", "service-accounts", ""] => {
                self.listing(&served, default, peer)
            }
            ["instance", "service-accounts", account]
            | ["instance", "service-accounts", account, ""] => {
                let account = self.account(&served, default, &decode(account)?, peer)?;
                Ok(directory(&account, &query))
            }
            ["instance", "service-accounts", account, leaf] => {
                let account = self.account(&served, default, &decode(account)?, peer)?;
                self.leaf(&served, &account, leaf, &query, peer).await
            }
            ["project"] | ["project", ""] => Ok(text("numeric-project-id\nproject-id\n")),
            ["project", leaf] => {
                let account = self.account(&served, default, DEFAULT, peer)?;
                project(account.gcp, leaf)
            }
            ["universe"] | ["universe", ""] => Ok(text("universe-domain\n")),
            // Google's own universe: keyfed's targets may name other STS and IAM URLs, but the
            // libraries only ask to pick their default API hosts.
            ["universe", "universe-domain"] => Ok(text("googleapis.com")),
            _ => Err(Refusal::NotFound),
        }
    }

    /// `instance/service-accounts/`: `default/` and each account the caller may use.
    fn listing(&self, served: &Served, default: &str, peer: Peer) -> Result<Response, Refusal> {
        let mut names = Vec::new();
        let refused = match self.account(served, default, DEFAULT, peer) {
            Ok(account) => {
                names.push(DEFAULT.to_owned());
                names.push(account.name().to_owned());
                None
            }
            Err(refusal) => Some(refusal),
        };
        for (target, gcp) in gcp_targets(served) {
            let name = account_name(target, gcp);
            if target != default
                && !names.iter().any(|n| n == name)
                && self.core.allowed(served, target, peer.uid).is_ok()
            {
                names.push(name.to_owned());
            }
        }
        // Nothing to list for this caller: say why, for the default account.
        if let (true, Some(refusal)) = (names.is_empty(), refused) {
            return Err(refusal);
        }
        let mut body = String::new();
        for name in names {
            body.push_str(&name);
            body.push_str("/\n");
        }
        Ok(text(body))
    }

    /// The account `name` (`default`, an email, a target's name) for the caller: the default
    /// target first, then the others by name, the first the caller may use.
    fn account<'s>(
        &self,
        served: &'s Served,
        default: &'s str,
        name: &str,
        peer: Peer,
    ) -> Result<Account<'s>, Refusal> {
        let default_gcp = gcp_targets(served)
            .find(|(target, _)| *target == default)
            .map(|(_, gcp)| gcp);
        let mut candidates: Vec<Account<'s>> = Vec::new();
        if let Some(gcp) =
            default_gcp.filter(|gcp| name == DEFAULT || account_name(default, gcp) == name)
        {
            candidates.push(Account {
                target: default,
                gcp,
                default: true,
            });
        }
        if name != DEFAULT {
            candidates.extend(
                gcp_targets(served)
                    .filter(|(target, gcp)| *target != default && account_name(target, gcp) == name)
                    .map(|(target, gcp)| Account {
                        target,
                        gcp,
                        default: false,
                    }),
            );
        }
        let mut first_refusal = None;
        for account in candidates {
            match self.core.allowed(served, account.target, peer.uid) {
                Ok(_) => return Ok(account),
                Err(refusal) => {
                    first_refusal.get_or_insert(refusal);
                }
            }
        }
        match first_refusal {
            // `default` is on every GCE host: saying the caller may not use it reveals nothing.
            Some(refusal) if name == DEFAULT => Err(refusal),
            // Any other account the caller may not use is one the listing hides: a 403 would
            // confirm the email and name the target, so it is not found, as an unknown name
            // is. Operators still see the refusal in the log.
            Some(Refusal::Forbidden { target, uid }) => {
                crate::access::log_refusal(uid, &target, self.spec.name);
                Err(Refusal::NotFound)
            }
            Some(_) | None => Err(Refusal::NotFound),
        }
    }

    /// One value of an account.
    async fn leaf(
        &self,
        served: &Served,
        account: &Account<'_>,
        leaf: &str,
        query: &Query,
        peer: Peer,
    ) -> Result<Response, Refusal> {
        match leaf {
            "token" => self.token(served, account, query, peer).await,
            "identity" => self.identity(served, account, query, peer).await,
            "email" => Ok(text(account.name().to_owned())),
            "scopes" => Ok(text(lines(&account.gcp.scopes))),
            "aliases" => Ok(text(if account.default { DEFAULT } else { "" })),
            _ => Err(Refusal::NotFound),
        }
    }

    /// `token[?scopes=a,b]`: the main access token, or the variant for other scopes.
    async fn token(
        &self,
        served: &Served,
        account: &Account<'_>,
        query: &Query,
        peer: Peer,
    ) -> Result<Response, Refusal> {
        let configured: BTreeSet<&str> = account.gcp.scopes.iter().map(String::as_str).collect();
        let asked: BTreeSet<&str> = query.scopes.iter().map(String::as_str).collect();
        let slot = (!asked.is_empty() && asked != configured).then(|| SlotKey::scopes(asked));
        let issued = self
            .core
            .credential_for(served, account.target, slot.as_ref(), peer)
            .await?;
        let slot_name = slot.as_ref().map(ToString::to_string);
        let key = Key {
            target: account.target,
            slot: slot_name.as_deref(),
            format: TOKEN_FORMAT,
        };
        let head = self
            .core
            .document(key, &issued, token_head)
            .ok_or(Refusal::NotFound)?;
        let left = issued
            .credential
            .expires_at()
            .duration_since(self.core.now())
            .unwrap_or_default()
            .as_secs();
        Ok(json_body(token_document(&head, left)))
    }

    /// `identity?audience=X[&format=full]`: a service account's ID token for the audience.
    async fn identity(
        &self,
        served: &Served,
        account: &Account<'_>,
        query: &Query,
        peer: Peer,
    ) -> Result<Response, Refusal> {
        let audience = query
            .audience
            .clone()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                Refusal::BadRequest("a non-empty audience parameter is required".to_owned())
            })?;
        let full = match query.format.as_deref() {
            None | Some("standard") => false,
            Some("full") => true,
            Some(other) => {
                return Err(Refusal::BadRequest(format!(
                    "format must be \"standard\" or \"full\", not {other:?}"
                )));
            }
        };
        if account.gcp.service_account.is_none() {
            return Err(Refusal::BadRequest(format!(
                "target '{}' impersonates no service account, and Google issues ID tokens only \
                 to service accounts: set targets.{}.gcp.service_account",
                account.target, account.target
            )));
        }
        let slot = SlotKey::IdToken { audience, full };
        let issued = self
            .core
            .credential_for(served, account.target, Some(&slot), peer)
            .await?;
        let slot_name = slot.to_string();
        let key = Key {
            target: account.target,
            slot: Some(slot_name.as_str()),
            format: IDENTITY_FORMAT,
        };
        let token = self
            .core
            .document(key, &issued, id_token)
            .ok_or(Refusal::NotFound)?;
        Ok(text(token))
    }
}

/// `…/<account>/`: the directory, or with `recursive=true` the account's values as JSON.
fn directory(account: &Account<'_>, query: &Query) -> Response {
    if !query.recursive {
        return text(ACCOUNT_LISTING);
    }
    let aliases: &[&str] = if account.default { &[DEFAULT] } else { &[] };
    let document = json!({
        "aliases": aliases,
        "email": account.name(),
        "scopes": account.gcp.scopes,
    });
    json_body(document.to_string())
}

/// `project/<leaf>`, from the default target's settings.
fn project(gcp: &GcpExchange, leaf: &str) -> Result<Response, Refusal> {
    match leaf {
        "project-id" => gcp.project_id.clone().map(text).ok_or(Refusal::NotFound),
        "numeric-project-id" => Ok(text(gcp.project_number.clone())),
        _ => Err(Refusal::NotFound),
    }
}

/// The token document up to `expires_in`'s value, for the cache: the part that changes only
/// with the credential.
fn token_head(credential: &Credential) -> Option<String> {
    let Credential::Gcp(token) = credential else {
        return None;
    };
    let GcpTokenKind::Access { .. } = token.kind else {
        return None;
    };
    let access_token = serde_json::Value::from(token.token.expose_secret());
    Some(format!("{{\"access_token\":{access_token},\"expires_in\":"))
}

/// The whole token document: the cached head, the seconds left, the tail.
fn token_document(head: &Bytes, seconds_left: u64) -> Bytes {
    const TAIL: &str = ",\"token_type\":\"Bearer\"}";
    let seconds = seconds_left.to_string();
    let mut body = Vec::with_capacity(head.len() + seconds.len() + TAIL.len());
    body.extend_from_slice(head);
    body.extend_from_slice(seconds.as_bytes());
    body.extend_from_slice(TAIL.as_bytes());
    Bytes::from(body)
}

/// An ID token's body: the raw JWT.
fn id_token(credential: &Credential) -> Option<String> {
    let Credential::Gcp(token) = credential else {
        return None;
    };
    let GcpTokenKind::Id { .. } = token.kind else {
        return None;
    };
    Some(token.token.expose_secret().to_owned())
}

/// Values one a line, each line ended.
fn lines(values: &[String]) -> String {
    values.iter().map(|v| format!("{v}\n")).collect()
}

fn text(body: impl Into<Bytes>) -> Response {
    ([(header::CONTENT_TYPE, TEXT)], body.into()).into_response()
}

fn json_body(body: impl Into<Bytes>) -> Response {
    ([(header::CONTENT_TYPE, JSON)], body.into()).into_response()
}

/// The query parameters the face reads; others are ignored, as GCE ignores them.
#[derive(Debug, Default)]
struct Query {
    /// `scopes=a,b` (repeated parameters add up), without empty entries.
    scopes: Vec<String>,
    audience: Option<String>,
    format: Option<String>,
    recursive: bool,
}

impl Query {
    fn parse(query: Option<&str>) -> Self {
        let mut parsed = Self::default();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match &*name {
                "scopes" => parsed.scopes.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                ),
                "audience" => parsed.audience = Some(value.into_owned()),
                "format" => parsed.format = Some(value.into_owned()),
                "recursive" => parsed.recursive = value.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        parsed
    }
}

/// A path segment percent-decoded (`…%40…` for the `@` of an email); not found when it does not
/// decode to UTF-8.
fn decode(segment: &str) -> Result<String, Refusal> {
    if !segment.contains('%') {
        return Ok(segment.to_owned());
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = (b == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| Refusal::NotFound)
}

#[cfg(test)]
#[path = "gce_tests.rs"]
mod tests;
