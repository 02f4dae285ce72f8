//! Azure as a cloud of keyfed's exchange contract ([`keyfed_core::exchange`]): the main
//! credential is an access token for the target's first scope; every other resource is a keyed
//! variant ([`SlotKey::Resource`], holding the scope `<resource>/.default`), those the target's
//! `scopes` name kept fresh in the background, others fetched when a local consumer asks.

use keyfed_core::SecretString;
use keyfed_core::exchange::{Exchange, SlotKey};

use crate::{AzureError, AzureToken, EntraClient};

/// Federated credential exchange for one target.
#[derive(Debug, Clone)]
pub struct EntraExchange {
    pub client: EntraClient,
}

impl EntraExchange {
    /// The main credential's scope.
    fn main_scope(&self) -> &str {
        self.client
            .target()
            .scopes
            .first()
            .map_or(crate::config::DEFAULT_SCOPE, String::as_str)
    }
}

impl Exchange for EntraExchange {
    type Credential = AzureToken;
    type Error = AzureError;

    async fn exchange(&self, subject_token: &SecretString) -> Result<AzureToken, AzureError> {
        self.client.token(subject_token, self.main_scope()).await
    }

    fn has_slot(&self, slot: &SlotKey) -> bool {
        match slot {
            SlotKey::Resource(scope) => {
                scope.ends_with("/.default")
                    && scope.len() > 9
                    && !scope.contains(|c: char| c.is_whitespace() || c.is_control())
            }
            SlotKey::Scopes(_) | SlotKey::IdToken { .. } | SlotKey::SubjectToken => false,
        }
    }

    fn exchange_slot<'a>(
        &'a self,
        subject_token: &'a SecretString,
        slot: &'a SlotKey,
    ) -> Option<impl Future<Output = Result<AzureToken, AzureError>> + Send + 'a> {
        match slot {
            SlotKey::Resource(scope) if self.has_slot(slot) => {
                Some(async move { self.client.token(subject_token, scope).await })
            }
            _ => None,
        }
    }
}
