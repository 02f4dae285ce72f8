//! The Keycloak emulator in the fixtures: the standard realm (the same clients, scopes and
//! audiences as the real server's realm of `keycloak.rs`), started and known to the leak check.

use std::sync::Arc;

use keyfed_keycloak::emulator::{Builder, ClientSpec, Credential, KeycloakEmulator, Realm};

use super::{API_AUD, AWS_AUD, EC_KID, Fixture, JWT_SECRET, KeyPair, RSA_KID, SECRET, keycloak};

impl Fixture {
    /// The standard realm, as the real one of `keycloak.rs`: one client per authentication
    /// method, the same client scopes (plus `both`, with two audience mappers), a client keeping
    /// the `roles` scope and one without service accounts.
    pub fn realm(&self) -> Realm {
        let mut linked = keycloak::LINKED.to_vec();
        linked.push("both");
        let client =
            |id: &str, credential| ClientSpec::new(id, credential).optional_scopes(&linked);
        let signed = |id: &str, pair: &KeyPair, algorithm: &str, key_id: &str| {
            client(
                id,
                Credential::SignedJwt {
                    public_key_pem: pair.public_pem.clone(),
                    algorithm: algorithm.into(),
                    key_id: key_id.into(),
                },
            )
        };
        let mut realm = Realm::new("infra").scope("both", &[AWS_AUD, API_AUD]);
        for (scope, audience) in keycloak::SCOPES {
            realm = realm.scope(scope, audience.as_slice());
        }
        realm
            .client(client("host-secret", Credential::Secret(SECRET.into())))
            .client(signed("host-rs256", &self.rsa, "RS256", RSA_KID))
            // Keycloak names a key registered as a certificate itself.
            .client(signed(
                "host-rs256-cert",
                &self.rsa,
                "RS256",
                "derived-by-keycloak",
            ))
            .client(signed("host-ps256", &self.rsa, "PS256", RSA_KID))
            .client(signed("host-es256", &self.ec, "ES256", EC_KID))
            .client(client(
                "host-hs256",
                Credential::SecretJwt(JWT_SECRET.into()),
            ))
            .client(client("host-roles", Credential::Secret(SECRET.into())).keeps_roles_scope())
            .client(
                client("no-service-account", Credential::Secret(SECRET.into()))
                    .without_service_account(),
            )
    }

    /// Starts the emulator from `builder` (see [`Fixture::realm`]) and keeps it.
    pub async fn start(&mut self, builder: Builder) -> &KeycloakEmulator {
        let started = Arc::new(
            builder
                .start()
                .await
                .unwrap_or_else(|e| panic!("emulator: {e}")),
        );
        self.known.add_emulator(&started);
        self.keycloak.insert(started)
    }

    pub async fn start_default(&mut self) -> &KeycloakEmulator {
        let realm = self.realm();
        self.start(KeycloakEmulator::builder(realm)).await
    }

    pub fn keycloak(&self) -> &KeycloakEmulator {
        self.keycloak
            .as_ref()
            .unwrap_or_else(|| panic!("start the emulator first"))
    }
}
