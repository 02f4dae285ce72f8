//! The realm model the emulator serves: clients with their authenticator and credentials,
//! and client scopes whose audience mappers put values into `aud`.

use std::time::Duration;

/// Keycloak's built-in `roles` client scope; in the emulator it adds `"account"` to `aud`.
pub const ROLES_SCOPE: &str = "roles";

/// A realm and everything in it; every realm has the built-in `roles` scope.
#[derive(Debug, Clone)]
pub struct Realm {
    pub name: String,
    /// Access Token Lifespan (Keycloak's default is 5 minutes).
    pub lifespan: Duration,
    /// Serve under `/auth` like Keycloak before version 17.
    pub legacy_auth_prefix: bool,
    /// Name the issuer with a trailing slash in tokens' `iss` and the discovery document (as a
    /// frontend URL ending in `/` makes some servers do; issue 12).
    pub trailing_slash_issuer: bool,
    pub scopes: Vec<ClientScope>,
    pub clients: Vec<ClientSpec>,
}

/// A client scope with an audience mapper adding `audiences` to `aud`.
#[derive(Debug, Clone)]
pub struct ClientScope {
    pub name: String,
    pub audiences: Vec<String>,
}

/// How a client authenticates, as its "Client Authenticator" setting says.
#[derive(Debug, Clone)]
pub enum Credential {
    /// "Client Id and Secret": Basic or POST.
    Secret(String),
    /// "Signed JWT": an assertion verified with this public key (PEM) and algorithm. An
    /// assertion naming another `kid` finds no key, as in Keycloak (whose `kid` for a key
    /// registered as a certificate is its own thumbprint, not one the client chose).
    SignedJwt {
        public_key_pem: String,
        algorithm: String,
        key_id: String,
    },
    /// "Signed JWT with Client Secret": an HS256 assertion over the secret.
    SecretJwt(String),
}

/// A confidential client.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub client_id: String,
    pub credential: Credential,
    pub service_accounts_enabled: bool,
    /// Applied to every token of this client.
    pub default_scopes: Vec<String>,
    /// Applied only when requested with `scope`.
    pub optional_scopes: Vec<String>,
    /// A stable per-client UUID, used as the service account's `sub`.
    pub service_account_id: String,
}

impl ClientSpec {
    pub fn new(client_id: &str, credential: Credential) -> Self {
        Self {
            client_id: client_id.to_owned(),
            credential,
            service_accounts_enabled: true,
            default_scopes: vec!["profile".to_owned(), "email".to_owned()],
            optional_scopes: Vec::new(),
            service_account_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    pub fn optional_scopes(mut self, scopes: &[&str]) -> Self {
        self.optional_scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    pub fn default_scopes(mut self, scopes: &[&str]) -> Self {
        self.default_scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Keeps Keycloak's default `roles` scope, whose audience resolver adds `"account"` to
    /// `aud` (the service account holds the account client's default roles).
    pub fn keeps_roles_scope(mut self) -> Self {
        self.default_scopes.push(ROLES_SCOPE.to_owned());
        self
    }

    pub fn without_service_account(mut self) -> Self {
        self.service_accounts_enabled = false;
        self
    }
}

impl Realm {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            lifespan: Duration::from_secs(300),
            legacy_auth_prefix: false,
            trailing_slash_issuer: false,
            scopes: vec![ClientScope {
                name: ROLES_SCOPE.to_owned(),
                audiences: vec!["account".to_owned()],
            }],
            clients: Vec::new(),
        }
    }

    pub fn client(mut self, client: ClientSpec) -> Self {
        self.clients.push(client);
        self
    }

    /// Adds a client scope with an audience mapper for each of `audiences`.
    pub fn scope(mut self, name: &str, audiences: &[&str]) -> Self {
        self.scopes.push(ClientScope {
            name: name.to_owned(),
            audiences: audiences.iter().map(|s| (*s).to_owned()).collect(),
        });
        self
    }

    pub fn lifespan(mut self, lifespan: Duration) -> Self {
        self.lifespan = lifespan;
        self
    }

    pub fn legacy_auth_prefix(mut self, on: bool) -> Self {
        self.legacy_auth_prefix = on;
        self
    }

    pub fn trailing_slash_issuer(mut self, on: bool) -> Self {
        self.trailing_slash_issuer = on;
        self
    }

    pub(crate) fn prefix(&self) -> &'static str {
        if self.legacy_auth_prefix { "/auth" } else { "" }
    }

    pub(crate) fn find_client(&self, client_id: &str) -> Option<&ClientSpec> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }

    /// The audiences the given scopes' mappers add, the `roles` scope's last (Keycloak runs
    /// its audience resolver after the audience mappers).
    pub(crate) fn audiences_of<'a>(&'a self, scopes: &'a [String]) -> Vec<&'a String> {
        let mut chosen: Vec<&ClientScope> = self
            .scopes
            .iter()
            .filter(|s| scopes.contains(&s.name))
            .collect();
        chosen.sort_by_key(|s| s.name == ROLES_SCOPE);
        chosen.iter().flat_map(|s| s.audiences.iter()).collect()
    }
}
