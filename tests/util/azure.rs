//! The Azure side of the fixtures (issue 10): an Entra ID emulator over TLS with a test CA
//! generated at run time (its PEM written to `entra-ca.pem`, the targets' `ca_file`), whose
//! app [`APP`] and user-assigned managed identity [`IDENTITY`] each have a federated identity
//! credential trusting the standard realm's `host-secret` service account; and Azure targets
//! against it. The realm's `azure-audience` scope puts `api://AzureADTokenExchange` in the token.

use std::path::PathBuf;
use std::sync::Arc;

use keyfed_azure::emulator::{App, EntraEmulator, FederatedCredential};
use keyfed_core::emulator::TestCa;
use keyfed_keycloak::emulator::KeycloakEmulator;

use super::Fixture;

/// The tenant the emulator serves.
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// An app registration trusting the standard realm's `host-secret`.
pub const APP: &str = "af3110ba-0ba9-4412-b1a0-59f50b7e9273";
/// A user-assigned managed identity trusting it too.
pub const IDENTITY: &str = "0b5e9c1d-7f5a-4c3e-9d43-2e1f00c0ffee";
/// The Keycloak client whose service account the credentials trust (the daemon's issuer).
const CLIENT: &str = "host-secret";

impl Fixture {
    /// The standard realm's Keycloak emulator and an Entra emulator trusting its `host-secret`
    /// service account for [`APP`] and [`IDENTITY`]; the Entra emulator's tokens become known
    /// secrets, and its CA is written to `entra-ca.pem`.
    pub async fn azure() -> (Self, Arc<EntraEmulator>) {
        let mut fx = Self::new();
        let realm = fx.realm();
        let sub = service_account_of(&realm);
        fx.start(KeycloakEmulator::builder(realm)).await;
        let entra = fx.start_entra(&sub).await;
        (fx, entra)
    }

    /// An Entra emulator trusting the service account `sub` of the running Keycloak emulator's
    /// `host-secret` (see [`service_account_of`]) for [`APP`] and [`IDENTITY`]; its tokens
    /// become known secrets, and its CA is written to `entra-ca.pem`.
    pub async fn start_entra(&self, sub: &str) -> Arc<EntraEmulator> {
        let issuer = self.keycloak().issuer_url();
        let ca = TestCa::new().unwrap_or_else(|e| panic!("test CA: {e}"));
        let credential = FederatedCredential::new(&issuer, sub);
        let entra = EntraEmulator::builder()
            .tenant(TENANT)
            .tls(&ca)
            .app(App::new(APP).federated_credential(credential.clone()))
            .app(App::managed_identity(IDENTITY).federated_credential(credential))
            .start()
            .await
            .unwrap_or_else(|e| panic!("entra emulator: {e}"));
        self.write(
            "entra-ca.pem",
            entra.ca_pem().unwrap_or_else(|| panic!("no CA")),
        );
        let entra = Arc::new(entra);
        self.known.add_emulator(&entra);
        entra
    }

    /// The Entra emulator's CA certificate, for consumers that must trust it.
    pub fn entra_ca(&self) -> PathBuf {
        self.path("entra-ca.pem")
    }

    /// An Azure target `name` for `client_id` against `entra`, keeping `resources` fresh (the
    /// first its main credential), with `outputs` (a TOML array body).
    pub fn azure_target(
        &self,
        entra: &EntraEmulator,
        name: &str,
        client_id: &str,
        resources: &[&str],
        outputs: &str,
    ) -> String {
        let scopes: Vec<String> = resources
            .iter()
            .map(|r| format!("\"{}\"", keyfed_azure::scope_for_resource(r)))
            .collect();
        format!(
            "[targets.{name}]\nissuer = \"corp\"\nscope = \"azure-audience\"\n\
             outputs = [{outputs}]\n\n\
             [targets.{name}.azure]\ntenant_id = \"{TENANT}\"\nclient_id = \"{client_id}\"\n\
             scopes = [{}]\nauthority_host = \"{}\"\nca_file = \"entra-ca.pem\"\n",
            scopes.join(", "),
            entra.authority_host(),
        )
    }
}

/// The service account id (`sub`) of `host-secret` in `realm`, which the Entra emulator's
/// federated credentials trust.
pub fn service_account_of(realm: &keyfed_keycloak::emulator::Realm) -> String {
    realm
        .clients
        .iter()
        .find(|c| c.client_id == CLIENT)
        .map(|c| c.service_account_id.clone())
        .unwrap_or_else(|| panic!("no {CLIENT} in the standard realm"))
}
