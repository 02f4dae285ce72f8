//! What Keycloak needs for one client of this host, worked out from keyfed's configuration alone
//! (no token is fetched: Keycloak is not set up yet): the realm and server from the issuer URL,
//! the confidential client and how it authenticates, one client scope per target with the
//! audience that target must get, and the access-token lifespan the client's targets need. The
//! renderers (`shell`, `json`, `terraform`) only spell this out.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use keyfed_keycloak::ClientAuth;

use crate::config::{Config, Exchange, SecretSource, Target};
use crate::outputs::OutputKind;

/// Keycloak's own default access-token lifespan (Realm settings → Tokens).
pub const KEYCLOAK_DEFAULT_LIFESPAN: Duration = Duration::from_secs(300);

/// The lifespan given to a client whose targets need more than Keycloak's default.
pub const LONG_LIFESPAN: Duration = Duration::from_secs(20 * 60);

/// The least a file's readers get from a token written for them before keyfed replaces it
/// (the engine's `READERS_MINIMUM`).
const READERS_MINIMUM: Duration = Duration::from_secs(60);

/// The signing algorithm asked of the client's access tokens: the one AWS, Google Cloud and
/// Entra ID all accept (Entra accepts RS256 only).
pub const TOKEN_ALGORITHM: &str = "RS256";

/// The default client scopes Keycloak 26 gives a new client with service accounts on: the
/// realm's defaults (`basic` holds the `sub` mapper) and `service_account` (the `client_id`,
/// `clientHost` and `clientAddress` mappers), linked when service accounts are turned on. A
/// partial import gives a client only the default scopes it names, and Terraform's authoritative
/// list takes away those it does not, so both name these (issue 12).
pub const CLIENT_DEFAULT_SCOPES: [&str; 7] = [
    "web-origins",
    "acr",
    "roles",
    "profile",
    "basic",
    "email",
    "service_account",
];

/// The name of the audience mapper keyfed puts in each client scope.
pub const MAPPER_NAME: &str = "audience";

/// Everything Keycloak needs for the client behind one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The target named on the command line.
    pub target: String,
    /// The Keycloak server's base URL, for `kcadm.sh config credentials --server`.
    pub server: String,
    pub realm: String,
    pub client: Client,
    /// One scope per audience among the client's targets, the named target's first.
    pub scopes: Vec<Scope>,
    pub lifespan: Lifespan,
}

/// The confidential client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    /// keyfed's name for the method (`auth` in the configuration).
    pub method: &'static str,
    pub credential: Credential,
}

/// How the client proves itself, as Keycloak's client authenticator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `client-secret` (`jwt` false) or `client-secret-jwt`: a secret both sides hold.
    Secret { jwt: bool, from: SecretFrom },
    /// `client-jwt`: assertions signed with keyfed's key, whose public half is `jwks`.
    Key {
        algorithm: &'static str,
        jwks: String,
    },
}

impl Credential {
    /// Keycloak's `clientAuthenticatorType`.
    pub fn authenticator(&self) -> &'static str {
        match self {
            Self::Secret { jwt: false, .. } => "client-secret",
            Self::Secret { jwt: true, .. } => "client-secret-jwt",
            Self::Key { .. } => "client-jwt",
        }
    }

    /// The client attributes this credential needs.
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Secret { jwt: false, .. } => Vec::new(),
            Self::Secret { jwt: true, .. } => {
                vec![("token.endpoint.auth.signing.alg", "HS256".to_owned())]
            }
            Self::Key { algorithm, jwks } => vec![
                ("token.endpoint.auth.signing.alg", (*algorithm).to_owned()),
                ("use.jwks.string", "true".to_owned()),
                ("jwks.string", jwks.clone()),
            ],
        }
    }
}

/// Where keyfed reads the client secret; the setup reads it from the same place, so it is never
/// printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFrom {
    File(PathBuf),
    Env(String),
    /// Written inline in the configuration: the setup asks for it in [`INLINE_SECRET_VARIABLE`].
    Inline,
}

/// The variable the shell setup reads an inline secret from.
pub const INLINE_SECRET_VARIABLE: &str = "KEYFED_CLIENT_SECRET";

/// A client scope holding one audience mapper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub name: String,
    pub audience: String,
    /// The targets whose tokens it is for.
    pub targets: Vec<String>,
    /// Linked as an Optional client scope (a target requests it by name), else as a Default one.
    pub optional: bool,
}

/// The client's access-token lifespan and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifespan {
    pub value: Duration,
    pub reason: String,
}

/// What the plan wants the operator to know, for standard error.
pub type Notes = Vec<String>;

/// The plan for the client of `target_name`'s issuer.
pub fn plan(config: &Config, target_name: &str) -> anyhow::Result<(Plan, Notes)> {
    let Some(target) = config.targets.get(target_name) else {
        return Err(crate::commands::unknown_target(config, target_name).into());
    };
    let issuer = config
        .issuers
        .get(&target.issuer)
        .context("the configuration lost the target's issuer")?;
    let settings = &issuer.settings;
    let (server, realm) = realm_of(&settings.url).with_context(|| {
        format!(
            "issuers.{}.url ({}) does not name a Keycloak realm (…/realms/<realm>), so there is no Keycloak setup to print",
            target.issuer, settings.url
        )
    })?;
    let credential = match (&settings.auth, &issuer.secret_source) {
        (ClientAuth::PrivateKeyJwt(key), _) => {
            let jwk = key
                .public_jwk()
                .with_context(|| format!("issuers.{}.private_key_file", target.issuer))?;
            Credential::Key {
                algorithm: key.algorithm().name(),
                jwks: serde_json::json!({ "keys": [jwk] }).to_string(),
            }
        }
        (auth, source) => Credential::Secret {
            jwt: matches!(auth, ClientAuth::SecretJwt(_)),
            from: match source {
                SecretSource::File(path) => SecretFrom::File(path.clone()),
                SecretSource::Env(name) => SecretFrom::Env(name.clone()),
                SecretSource::Inline | SecretSource::PrivateKeyFile(_) => SecretFrom::Inline,
            },
        },
    };
    // The client's targets: this one first, then the others in the configuration's order.
    let targets: Vec<&Target> = std::iter::once(target)
        .chain(
            config
                .targets
                .values()
                .filter(|t| t.issuer == target.issuer && t.name != target.name),
        )
        .collect();
    let mut notes = Notes::new();
    let mut scopes: Vec<Scope> = Vec::new();
    for t in &targets {
        let (name, optional) = scope_of(t, &mut notes, &settings.client_id);
        match scopes.iter_mut().find(|s| s.name == name) {
            Some(same) if same.audience == t.request.audience => {
                same.targets.push(t.name.clone());
                // A default scope also serves a target that requests it; an optional one does
                // not serve a target that does not.
                same.optional &= optional;
            }
            Some(other) => anyhow::bail!(
                "targets {} and {} both ask for client scope \"{name}\" but for different audiences (\"{}\" and \"{}\"): one client scope adds one audience, so give each target its own `scope`",
                other.targets.join(", "),
                t.name,
                other.audience,
                t.request.audience
            ),
            None => scopes.push(Scope {
                name,
                audience: t.request.audience.clone(),
                targets: vec![t.name.clone()],
                optional,
            }),
        }
    }
    let plan = Plan {
        target: target.name.clone(),
        server,
        realm,
        client: Client {
            client_id: settings.client_id.clone(),
            method: settings.auth.method(),
            credential,
        },
        scopes,
        lifespan: lifespan(&targets),
    };
    Ok((plan, notes))
}

/// The scope carrying `target`'s audience, and whether the target requests it (so it is linked
/// as Optional); a note when it requests none or several.
fn scope_of(target: &Target, notes: &mut Notes, client_id: &str) -> (String, bool) {
    let requested: Vec<&str> = target
        .request
        .scope
        .as_deref()
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    match requested.as_slice() {
        [] => {
            let name = derived_scope_name(&target.request.audience);
            notes.push(format!(
                "target {} requests no scope, so client scope \"{name}\" is linked to client \"{client_id}\" as a Default scope: every token of that client then carries \"{}\", those of its other targets too. Set scope = \"{name}\" in [targets.{}] to have it linked as an Optional scope, asked for by this target only.",
                target.name, target.request.audience, target.name
            ));
            (name, false)
        }
        [one] => ((*one).to_owned(), true),
        [first, rest @ ..] => {
            notes.push(format!(
                "target {} requests several scopes; the first, \"{first}\", is the one given the audience mapper. The others ({}) must exist and be linked to client \"{client_id}\" already.",
                target.name,
                rest.join(", ")
            ));
            ((*first).to_owned(), true)
        }
    }
}

/// A stable client scope name for an audience no scope is requested for: `audience-` and the
/// audience without its scheme, every character Keycloak or a shell might mind made `-`.
pub fn derived_scope_name(audience: &str) -> String {
    let bare = audience
        .split_once("://")
        .map_or(audience, |(_, rest)| rest)
        .trim_start_matches('/');
    let mut name = String::from("audience-");
    for c in bare.chars() {
        let c = if c.is_ascii_alphanumeric() || "._".contains(c) {
            c
        } else {
            '-'
        };
        if !(c == '-' && name.ends_with('-')) {
            name.push(c);
        }
    }
    name.trim_end_matches('-').to_owned()
}

/// The server's base URL and the realm's name, from an issuer URL `<server>/realms/<realm>`.
pub fn realm_of(url: &url::Url) -> Option<(String, String)> {
    let path = url.path();
    let (before, realm) = path.rsplit_once("/realms/")?;
    let realm = percent_decoded(realm)?;
    if realm.is_empty() || realm.contains('/') {
        return None;
    }
    Some((
        format!("{}{before}", url.origin().ascii_serialization()),
        realm,
    ))
}

/// `%XX` escapes decoded, as the realm's name appears in its URL; `None` when that is not UTF-8.
fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The access-token lifespan the client's targets need: Keycloak's default 5 minutes, or 20
/// minutes when a target's Keycloak tokens must outlive a consumer's window — an
/// `azure-federated-token` output (Azure SDKs re-read the file every 600 s, so keyfed rewrites it
/// while the token in it has 11 minutes left and a minute more to give: at least 720 s), or a
/// Google Cloud target without `service_account` (the federated access token dies with the
/// Keycloak token, and Google's libraries renew it 3 min 45 s before expiry: at least 338 s).
pub fn lifespan(targets: &[&Target]) -> Lifespan {
    let needs: Vec<(Duration, String)> = targets.iter().filter_map(|t| need_of(t)).collect();
    match needs.iter().max_by_key(|(need, _)| *need) {
        Some((_, why)) => Lifespan {
            value: LONG_LIFESPAN,
            reason: why.clone(),
        },
        None => Lifespan {
            value: KEYCLOAK_DEFAULT_LIFESPAN,
            reason: "Keycloak's default: each token is traded or handed out at once".to_owned(),
        },
    }
}

/// The least lifetime `target`'s Keycloak tokens need, when that is more than Keycloak's
/// default, and why.
pub fn need_of(target: &Target) -> Option<(Duration, String)> {
    let federated_file = target
        .outputs
        .iter()
        .any(|o| o.kind == OutputKind::AzureFederatedToken);
    let need = match &target.exchange {
        Exchange::Azure(_) if federated_file => (
            crate::sources::AZURE_FEDERATED_TOKEN_WINDOW + READERS_MINIMUM,
            format!(
                "target {} writes an azure-federated-token file, which Azure SDKs re-read every 600 s",
                target.name
            ),
        ),
        Exchange::Gcp(gcp) if gcp.service_account.is_none() => (
            crate::sources::GCP_CONSUMER_WINDOW * 3 / 2,
            format!(
                "target {} uses Google's federated access token, which lives as long as the Keycloak token",
                target.name
            ),
        ),
        _ => return None,
    };
    (need.0 > KEYCLOAK_DEFAULT_LIFESPAN).then_some(need)
}
