//! Google Cloud as a cloud of keyfed's exchange contract ([`keyfed_core::exchange`]): the main
//! credential is an access token for the target's scopes (the federated token, or the
//! impersonated service account's); the keyed variants are access tokens for other scopes and,
//! when impersonating, ID tokens for an audience. Resources (Azure's) are not Google's.

use keyfed_core::SecretString;
use keyfed_core::exchange::{Exchange, SlotKey};

use crate::{GcpClient, GcpError, GcpToken};

/// Workload identity federation for one target.
#[derive(Debug, Clone)]
pub struct GcpExchange {
    pub client: GcpClient,
}

impl Exchange for GcpExchange {
    type Credential = GcpToken;
    type Error = GcpError;

    async fn exchange(&self, subject_token: &SecretString) -> Result<GcpToken, GcpError> {
        let scopes = self.client.target().scopes.clone();
        self.client.access_token(subject_token, &scopes).await
    }

    fn has_slot(&self, slot: &SlotKey) -> bool {
        match slot {
            SlotKey::Scopes(scopes) => !scopes.is_empty(),
            // Only a service account has ID tokens: a federated principal has none.
            SlotKey::IdToken { audience, .. } => {
                !audience.is_empty() && self.client.target().service_account.is_some()
            }
            // The subject token is the host's to keep, not Google's.
            SlotKey::Resource(_) | SlotKey::SubjectToken => false,
        }
    }

    fn exchange_slot<'a>(
        &'a self,
        subject_token: &'a SecretString,
        slot: &'a SlotKey,
    ) -> Option<impl Future<Output = Result<GcpToken, GcpError>> + Send + 'a> {
        self.has_slot(slot).then_some(async move {
            match slot {
                SlotKey::Scopes(scopes) => {
                    let scopes: Vec<String> = scopes.iter().cloned().collect();
                    self.client.access_token(subject_token, &scopes).await
                }
                SlotKey::IdToken { audience, full } => {
                    self.client.id_token(subject_token, audience, *full).await
                }
                SlotKey::Resource(_) | SlotKey::SubjectToken => Err(GcpError::no_variant(slot)),
            }
        })
    }
}
