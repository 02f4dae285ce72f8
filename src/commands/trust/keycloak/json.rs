//! Keycloak's representations of the plan — the client, each client scope and its audience
//! mapper, the client's service-account user — as the admin REST API takes them, and
//! `--format json`: all of them in one partial realm import document.
//!
//! A partial import creates clients and users but ignores `clientScopes` (Keycloak 26.5, see
//! keycloak/keycloak#16289), links a client only to scopes that exist already, gives it only the
//! default scopes it names, and makes no service-account user for it: so the document names the
//! default scopes and the user, and the scopes are created first, one by one (the stderr notes
//! say how).

use serde_json::{Value, json};

use super::plan::{CLIENT_DEFAULT_SCOPES, MAPPER_NAME, Plan, Scope, TOKEN_ALGORITHM};

/// The client as `kcadm.sh create clients` and `update clients/<id>` take it: confidential,
/// service accounts on, every browser and password flow off, full scope off (so no role, and no
/// audience of a role's client, reaches its tokens), its credential and token settings. Its
/// scopes are linked separately (or by [`document`]).
pub fn client(plan: &Plan) -> Value {
    let mut attributes = serde_json::Map::new();
    attributes.insert(
        "access.token.lifespan".to_owned(),
        json!(plan.lifespan.value.as_secs().to_string()),
    );
    attributes.insert(
        "access.token.signed.response.alg".to_owned(),
        json!(TOKEN_ALGORITHM),
    );
    for (key, value) in plan.client.credential.attributes() {
        attributes.insert(key.to_owned(), json!(value));
    }
    json!({
        "clientId": plan.client.client_id,
        "protocol": "openid-connect",
        "enabled": true,
        "publicClient": false,
        "bearerOnly": false,
        "clientAuthenticatorType": plan.client.credential.authenticator(),
        "serviceAccountsEnabled": true,
        "standardFlowEnabled": false,
        "implicitFlowEnabled": false,
        "directAccessGrantsEnabled": false,
        "fullScopeAllowed": false,
        "attributes": attributes,
    })
}

/// The client scope, without its mapper.
pub fn scope(scope: &Scope) -> Value {
    json!({
        "name": scope.name,
        "description": format!("Puts {} in the access token's aud (keyfed)", scope.audience),
        "protocol": "openid-connect",
        "attributes": {
            "include.in.token.scope": "true",
            "display.on.consent.screen": "false",
        },
    })
}

/// The scope's audience mapper: the audience in access tokens (and introspection), not in ID
/// tokens.
pub fn mapper(scope: &Scope) -> Value {
    json!({
        "name": MAPPER_NAME,
        "protocol": "openid-connect",
        "protocolMapper": "oidc-audience-mapper",
        "config": {
            "included.custom.audience": scope.audience,
            "access.token.claim": "true",
            "id.token.claim": "false",
            "introspection.token.claim": "true",
            "lightweight.claim": "false",
        },
    })
}

/// The scope with its mapper, as `kcadm.sh create client-scopes` takes it.
pub fn scope_with_mapper(one: &Scope) -> Value {
    let mut value = scope(one);
    value["protocolMappers"] = json!([mapper(one)]);
    value
}

/// The service-account user Keycloak makes for a client created through the admin API; a
/// partial import needs it named.
fn service_account(plan: &Plan) -> Value {
    json!({
        "username": format!("service-account-{}", plan.client.client_id.to_lowercase()),
        "enabled": true,
        "serviceAccountClientId": plan.client.client_id,
    })
}

/// The partial realm import: every scope of the client (to create first), the client linked to
/// them and to Keycloak's default scopes, and its service-account user; existing ones skipped.
pub fn document(plan: &Plan) -> Value {
    let mut client = client(plan);
    let names = |optional: bool| -> Vec<&str> {
        plan.scopes
            .iter()
            .filter(|s| s.optional == optional)
            .map(|s| s.name.as_str())
            .collect()
    };
    // A realm without one of them (`service_account` before Keycloak 26) ignores its name.
    let mut defaults: Vec<&str> = CLIENT_DEFAULT_SCOPES.to_vec();
    defaults.extend(names(false));
    client["defaultClientScopes"] = json!(defaults);
    client["optionalClientScopes"] = json!(names(true));
    json!({
        "ifResourceExists": "SKIP",
        "clientScopes": plan.scopes.iter().map(scope_with_mapper).collect::<Vec<_>>(),
        "clients": [client],
        "users": [service_account(plan)],
    })
}

/// `--format json`, pretty.
pub fn render(plan: &Plan) -> String {
    let mut text = serde_json::to_string_pretty(&document(plan)).unwrap_or_default();
    text.push('\n');
    text
}
