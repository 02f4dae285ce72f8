//! The Google Cloud side of the fixtures: a GCP emulator (STS and IAM Credentials) whose pool
//! provider [`PROVIDER`] trusts the standard realm's issuer, with the service account
//! [`SERVICE_ACCOUNT`] bound to every principal of the pool, and GCP targets against it. The
//! realm's `gcp-audience` scope puts the provider's audience ([`GCP_AUD`]) in the token.

use std::sync::Arc;

use keyfed_gcp::emulator::{GcpEmulator, PoolProvider, ServiceAccount, principal, principal_set};

use super::Fixture;
pub use super::keycloak::GCP_AUD;

/// The pool provider the standard realm's `gcp-audience` scope names ([`GCP_AUD`]).
pub const PROVIDER: &str =
    "projects/123456789/locations/global/workloadIdentityPools/onprem/providers/keycloak";
/// The service account every principal of the pool may impersonate.
pub const SERVICE_ACCOUNT: &str = "app@keyfed-test.iam.gserviceaccount.com";
/// The project id GCP targets give the GCE metadata face.
pub const PROJECT_ID: &str = "keyfed-test";

impl Fixture {
    /// Starts a GCP emulator trusting the Keycloak emulator for [`PROVIDER`]; its tokens become
    /// known secrets.
    pub async fn start_gcp(&self) -> Arc<GcpEmulator> {
        let provider = PoolProvider::new(PROVIDER, &self.keycloak().issuer_url());
        let gcp = GcpEmulator::builder()
            .service_account(
                ServiceAccount::new(SERVICE_ACCOUNT).bind(&principal_set(provider.pool())),
            )
            .provider(provider)
            .start()
            .await
            .unwrap_or_else(|e| panic!("gcp emulator: {e}"));
        let gcp = Arc::new(gcp);
        self.known.add_emulator(&gcp);
        gcp
    }

    /// A fixture with the standard realm's Keycloak emulator, and a GCP emulator trusting it.
    pub async fn gcp() -> (Self, Arc<GcpEmulator>) {
        let mut fx = Self::new();
        fx.start_default().await;
        let gcp = fx.start_gcp().await;
        (fx, gcp)
    }

    /// A GCP target `name` against `gcp` with `outputs` (a TOML array body) and `gcp_keys`
    /// (extra lines of its `gcp` table, e.g. `service_account = "…"`).
    pub fn gcp_target(
        &self,
        gcp: &GcpEmulator,
        name: &str,
        gcp_keys: &str,
        outputs: &str,
    ) -> String {
        format!(
            "[targets.{name}]\nissuer = \"corp\"\naudience = \"{GCP_AUD}\"\nscope = \"gcp-audience\"\n\
             outputs = [{outputs}]\n\n\
             [targets.{name}.gcp]\nprovider = \"{PROVIDER}\"\nproject_id = \"{PROJECT_ID}\"\n\
             sts_url = \"{}\"\niam_url = \"{}\"\n{gcp_keys}\n",
            gcp.sts_url(),
            gcp.base_url(),
        )
    }
}

/// The pool of [`PROVIDER`].
pub fn pool() -> &'static str {
    PROVIDER
        .rsplit_once("/providers/")
        .map_or(PROVIDER, |(pool, _)| pool)
}

/// The federated principal of the subject token `jwt` (its `sub`), as the emulator records it.
pub fn principal_of(jwt: &str) -> String {
    let claims = super::claims(jwt);
    let sub = claims["sub"]
        .as_str()
        .unwrap_or_else(|| panic!("no sub in {claims}"));
    principal(pool(), sub)
}
