//! The realm model the emulator serves: clients with their authenticator and credentials,
//! and client scopes whose audience mappers put values into `aud`.

use std::time::Duration;

/// A realm and everything in it.
#[derive(Debug, Clone)]
pub struct Realm {
    pub name: String,
    /// Access Token Lifespan (Keycloak's default is 5 minutes).
    pub lifespan: Duration,
    /// Serve under `/auth` like Keycloak before version 17.
    pub legacy_auth_prefix: bool,
    /// Service-account tokens also carry `"account"` in `aud`, as Keycloak's default "roles"
    /// scope does when the service account holds account-client roles.
    pub account_audience: bool,
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
    /// "Signed JWT": an assertion verified with this public key (PEM) and algorithm.
    SignedJwt {
        public_key_pem: String,
        algorithm: String,
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
            account_audience: false,
            scopes: Vec::new(),
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

    pub fn account_audience(mut self, on: bool) -> Self {
        self.account_audience = on;
        self
    }

    pub(crate) fn prefix(&self) -> &'static str {
        if self.legacy_auth_prefix { "/auth" } else { "" }
    }

    pub(crate) fn find_client(&self, client_id: &str) -> Option<&ClientSpec> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }

    /// The audiences the given scopes' mappers add.
    pub(crate) fn audiences_of<'a>(
        &'a self,
        scopes: &'a [String],
    ) -> impl Iterator<Item = &'a String> {
        self.scopes
            .iter()
            .filter(move |s| scopes.contains(&s.name))
            .flat_map(|s| s.audiences.iter())
    }
}
