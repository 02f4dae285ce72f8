//! What Azure's two managed-identity faces share (issue 10, DESIGN §8): the Azure IMDS face
//! (`azure_imds.rs`) and the App Service face (`app_service.rs`) read the same query, pick the
//! target the same way, and hand out the same tokens; they differ in the header they require,
//! the document they write and the statuses and shape of their refusals.
//!
//! **Which target.** The one `azure_target` names on the address the request arrived on (the
//! faces are off where none is named), unless the request names a user-assigned identity:
//! `client_id` selects the Azure target with that client ID (GUIDs compared without regard to
//! case); `object_id` (or `principal_id`) and `msi_res_id` (or `mi_res_id`) select the target
//! whose current token carries that `oid` or `xms_mirid` — keyfed's configuration knows only
//! client IDs, so only a token Entra issued can say which principal or resource a target is.
//! Targets are tried the default first, then by name, and only those the caller may use: a
//! target hidden from the caller answers exactly as an identity no target has (the refusal is
//! logged), while the default target, asked for without an identity, is refused as such. A
//! request carrying an identity-header pair (issue 12) gets only the pair's target, as
//! configured when the pair was issued ([`bound_token`]).
//!
//! **Which token.** SDKs send `resource` as Azure AD v1 named it (`https://management.azure.com`,
//! with or without a trailing slash); keyfed asks for the scope `<resource>/.default`. The
//! target's first scope is its main credential; any other is the target's `Resource` slot —
//! kept fresh in the background when the target's `scopes` name it, else fetched on demand and
//! bounded by the engine. The answer echoes `resource` as the request gave it, as Azure does.

use std::sync::Arc;

use keyfed_core::ExposeSecret as _;
use keyfed_core::clock::unix_seconds;
use serde_json::Value;

use super::Core;
use super::documents::Key;
use super::pairs::Binding;
use super::refusal::Refusal;
use super::server::Peer;
use crate::config::{AzureExchange, Exchange};
use crate::credential::Credential;
use crate::engine::{Issued, SlotKey};
use crate::served::Served;

/// How a request names a user-assigned identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Identity {
    Client(String),
    /// `object_id` or `principal_id`: the token's `oid`.
    Object(String),
    /// `msi_res_id` or `mi_res_id`: the token's `xms_mirid`.
    Resource(String),
}

impl Identity {
    /// The parameter as the caller wrote it, for messages.
    fn describe(&self) -> String {
        match self {
            Self::Client(id) => format!("client_id {id:?}"),
            Self::Object(id) => format!("principal (object) ID {id:?}"),
            Self::Resource(id) => format!("resource ID {id:?}"),
        }
    }
}

/// The query parameters both faces read; others are ignored, as Azure ignores them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Query {
    pub resource: Option<String>,
    pub api_version: Option<String>,
    pub identity: Option<Identity>,
    /// More than one identity parameter was given.
    pub identities: usize,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        let mut parsed = Self::default();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let value = value.into_owned();
            let identity = match &*name {
                "resource" => {
                    parsed.resource = Some(value);
                    continue;
                }
                "api-version" => {
                    parsed.api_version = Some(value);
                    continue;
                }
                "client_id" => Identity::Client(value),
                "object_id" | "principal_id" => Identity::Object(value),
                "msi_res_id" | "mi_res_id" => Identity::Resource(value),
                _ => continue,
            };
            parsed.identities += 1;
            parsed.identity = Some(identity);
        }
        parsed
    }

    /// The resource asked for: required, and an absolute URI without spaces or control
    /// characters (anything else is the consumer's mistake, refused before any upstream call
    /// rather than cached as a failing variant that holds a place for the longest backoff).
    pub fn resource(&self) -> Result<&str, Refusal> {
        let resource = self
            .resource
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                Refusal::BadRequest(
                    "the resource parameter is required, e.g. resource=https://management.azure.com"
                        .to_owned(),
                )
            })?;
        let plain = !resource.contains(|c: char| c.is_whitespace() || c.is_control());
        if plain && url::Url::parse(resource).is_ok() {
            Ok(resource)
        } else {
            Err(Refusal::BadRequest(format!(
                "the resource parameter must be an absolute URI such as \
                 https://management.azure.com, not {resource:?}"
            )))
        }
    }
}

/// A token handed out: the target it came from, its credential, and the slot's name for the
/// document cache.
pub(super) struct Token {
    pub target: String,
    pub issued: Arc<Issued>,
    pub slot: Option<String>,
}

impl Token {
    /// The cache key of this token's document in `format`.
    pub fn key(&self, format: &'static str) -> Key<'_, str> {
        Key {
            target: &self.target,
            slot: self.slot.as_deref(),
            format,
        }
    }

    /// When the token stops working, in seconds since the epoch.
    pub fn expires_on(&self) -> u64 {
        unix_seconds(self.issued.credential.expires_at())
    }
}

/// The Azure targets served, by name.
fn azure_targets(served: &Served) -> impl Iterator<Item = (&str, &AzureExchange)> {
    served
        .exchanges
        .iter()
        .filter_map(|(name, exchange)| match exchange {
            Exchange::Azure(azure) => Some((name.as_str(), &**azure)),
            Exchange::Token | Exchange::Aws(_) | Exchange::Gcp(_) => None,
        })
}

/// The token for the request: the target chosen (see the module's documentation), then its
/// credential for the resource.
pub(super) async fn token(
    core: &Core,
    face: &'static str,
    peer: Peer,
    query: &Query,
) -> Result<Token, Refusal> {
    let served = core.served();
    let default = core.target_at(face, &peer)?;
    let resource = query.resource()?;
    if query.identities > 1 {
        return Err(Refusal::BadRequest(
            "give at most one of client_id, object_id (principal_id) and msi_res_id (mi_res_id)"
                .to_owned(),
        ));
    }
    let (target, azure) = match &query.identity {
        None => {
            let azure = azure_targets(&served)
                .find(|(name, _)| *name == default)
                .map(|(_, azure)| azure)
                .ok_or(Refusal::NotFound)?;
            core.allowed(&served, default, peer.uid)?;
            (default.to_owned(), azure.clone())
        }
        Some(identity) => {
            let (target, azure) = select(core, face, &served, default, identity, peer).await?;
            (target.to_owned(), azure.clone())
        }
    };
    fetch(core, &served, target, &azure, resource, peer).await
}

/// The token for a request carrying an identity-header pair bound to `binding` (issue 12,
/// `pairs.rs`; the caller's uid already compared with the pair's): only that target's, whatever
/// the address's default is, and only while the target is the app it was when the pair was
/// issued (a reload may remove it or point it at another tenant or client ID). An identity
/// parameter may name it (as an SDK given `AZURE_CLIENT_ID` does), never another target: that
/// is refused as an identity this header does not serve, so a pair cannot reach past its one
/// target.
pub(super) async fn bound_token(
    core: &Core,
    face: &'static str,
    peer: Peer,
    query: &Query,
    binding: &Binding,
) -> Result<Token, Refusal> {
    let served = core.served();
    core.target_at(face, &peer)?;
    let resource = query.resource()?;
    if query.identities > 1 {
        return Err(Refusal::BadRequest(
            "give at most one of client_id, object_id (principal_id) and msi_res_id (mi_res_id)"
                .to_owned(),
        ));
    }
    let target = binding.target.as_str();
    let reloaded = |now: &str| {
        Refusal::BadRequest(format!(
            "target \"{target}\", which this IDENTITY_HEADER was issued for, {now} since the \
             configuration was reloaded: run keyfed exec or keyfed env again"
        ))
    };
    let azure = azure_targets(&served)
        .find(|(name, _)| *name == target)
        .map(|(_, azure)| azure.clone())
        .ok_or_else(|| reloaded("is no longer served"))?;
    let same_app = azure.tenant_id.eq_ignore_ascii_case(&binding.tenant_id)
        && azure.client_id.eq_ignore_ascii_case(&binding.client_id);
    if !same_app {
        return Err(reloaded("names another app (tenant or client ID)"));
    }
    if let Some(identity) = &query.identity {
        let names_it = match identity {
            Identity::Client(id) => azure.client_id.eq_ignore_ascii_case(id.trim()),
            Identity::Object(_) | Identity::Resource(_) => {
                let issued = core.credential(&served, target, peer).await?;
                token_names(&issued.credential, identity)
            }
        };
        if !names_it {
            return Err(Refusal::BadRequest(format!(
                "this IDENTITY_HEADER serves only the managed identity of target \"{target}\" \
                 (client_id {}), not {}",
                azure.client_id,
                identity.describe()
            )));
        }
    }
    fetch(core, &served, target.to_owned(), &azure, resource, peer).await
}

/// `target`'s token for `resource`: its main credential when that is the first scope, else
/// the resource's variant.
async fn fetch(
    core: &Core,
    served: &Served,
    target: String,
    azure: &AzureExchange,
    resource: &str,
    peer: Peer,
) -> Result<Token, Refusal> {
    let scope = keyfed_azure::scope_for_resource(resource);
    let slot = (azure.scopes.first() != Some(&scope)).then_some(SlotKey::Resource(scope));
    let issued = core
        .credential_for(served, &target, slot.as_ref(), peer)
        .await?;
    Ok(Token {
        target,
        issued,
        slot: slot.as_ref().map(ToString::to_string),
    })
}

/// The target a request's identity parameter names, among those the caller may use.
async fn select<'s>(
    core: &Core,
    face: &'static str,
    served: &'s Served,
    default: &str,
    identity: &Identity,
    peer: Peer,
) -> Result<(&'s str, &'s AzureExchange), Refusal> {
    let mut candidates: Vec<(&str, &AzureExchange)> = azure_targets(served)
        .filter(|(name, _)| *name == default)
        .collect();
    candidates.extend(azure_targets(served).filter(|(name, _)| *name != default));
    // Targets whose token could not be had: they may be the one asked for, so the refusal
    // names them.
    let mut unchecked: Vec<&str> = Vec::new();
    for (name, azure) in candidates {
        let matches = match identity {
            Identity::Client(id) => azure.client_id.eq_ignore_ascii_case(id.trim()),
            // Only a target the caller may use is asked for its token.
            Identity::Object(_) | Identity::Resource(_) => {
                if core.allowed(served, name, peer.uid).is_err() {
                    continue;
                }
                match core.credential(served, name, peer).await {
                    Ok(issued) => token_names(&issued.credential, identity),
                    Err(_) => {
                        unchecked.push(name);
                        continue;
                    }
                }
            }
        };
        if !matches {
            continue;
        }
        match core.allowed(served, name, peer.uid) {
            Ok(_) => return Ok((name, azure)),
            // Hidden: answered as an identity no target has; operators see it in the log.
            Err(Refusal::Forbidden { target, uid }) => {
                crate::access::log_refusal(uid, &target, face);
            }
            Err(_) => {}
        }
    }
    let mut why = format!(
        "no managed identity with {} is served here (keyfed serves its Azure targets: their \
         client_id, or the oid and xms_mirid of their tokens)",
        identity.describe()
    );
    if !unchecked.is_empty() {
        why.push_str(&format!(
            "; targets without a token now could not be checked: {}",
            unchecked.join(", ")
        ));
    }
    Err(Refusal::BadRequest(why))
}

/// Whether an Azure token's claims name the principal or resource ID `identity` gives.
fn token_names(credential: &Credential, identity: &Identity) -> bool {
    let Credential::Azure(token) = credential else {
        return false;
    };
    let Some(claims) = keyfed_core::token_facts::claims(token.token.expose_secret()) else {
        return false;
    };
    let (claim, wanted) = match identity {
        Identity::Object(id) => ("oid", id),
        Identity::Resource(id) => ("xms_mirid", id),
        Identity::Client(_) => return false,
    };
    claims
        .get(claim)
        .and_then(Value::as_str)
        .is_some_and(|value| value.eq_ignore_ascii_case(wanted.trim()))
}

/// `"access_token":…,"client_id":…,` of an Azure token, JSON-escaped: the start both faces'
/// documents share.
pub(super) fn token_fields(credential: &Credential) -> Option<(String, &keyfed_azure::AzureToken)> {
    let Credential::Azure(token) = credential else {
        return None;
    };
    let access_token = Value::from(token.token.expose_secret());
    let client_id = Value::from(token.client_id.as_str());
    Some((
        format!("\"access_token\":{access_token},\"client_id\":{client_id},"),
        token,
    ))
}

/// A string as a JSON value.
pub(super) fn json_string(text: &str) -> String {
    Value::from(text).to_string()
}

#[cfg(test)]
#[path = "azure_tests.rs"]
mod tests;
