//! What Entra ID hands keyfed: an access token for one scope, with its exact expiry.

use std::time::SystemTime;

use keyfed_core::SecretString;
use keyfed_core::exchange::Expiring;

/// An access token from Entra ID; the secret stays behind [`SecretString`].
#[derive(Debug, Clone)]
pub struct AzureToken {
    pub token: SecretString,
    /// The scope it was issued for: `<resource>/.default`.
    pub scope: String,
    pub tenant_id: String,
    pub client_id: String,
    /// The exact moment Entra said it stops working (`expires_in` after the request).
    pub expires_at: SystemTime,
}

impl AzureToken {
    /// The resource the scope names: `https://management.azure.com/.default` →
    /// `https://management.azure.com`.
    pub fn resource(&self) -> &str {
        self.scope.strip_suffix("/.default").unwrap_or(&self.scope)
    }
}

impl Expiring for AzureToken {
    fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

/// The scope for a resource as SDKs name it (`https://management.azure.com`, with or without a
/// trailing slash), or a scope already ending in `/.default`, kept as it is.
pub fn scope_for_resource(resource: &str) -> String {
    if resource.ends_with("/.default") {
        resource.to_owned()
    } else {
        format!("{}/.default", resource.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_become_default_scopes() {
        for (resource, scope) in [
            (
                "https://management.azure.com",
                "https://management.azure.com/.default",
            ),
            (
                "https://management.azure.com/",
                "https://management.azure.com/.default",
            ),
            (
                "https://vault.azure.net/.default",
                "https://vault.azure.net/.default",
            ),
            ("api://my-app", "api://my-app/.default"),
        ] {
            assert_eq!(scope_for_resource(resource), scope);
        }
    }
}
