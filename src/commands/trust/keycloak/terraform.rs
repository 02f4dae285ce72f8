//! `--format terraform`: the plan as resources of the keycloak/keycloak provider — the client,
//! a client scope and audience mapper per audience, and the client's optional (and, when a
//! target requests no scope, default) scopes. Those two link resources are authoritative over
//! the client's lists, so the output covers every target of the client, not only the one named,
//! and the default scopes are those the import names too ([`CLIENT_DEFAULT_SCOPES`]).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use keyfed_core::quote::{hcl, label};

use super::plan::{
    CLIENT_DEFAULT_SCOPES, Credential, MAPPER_NAME, Plan, SecretFrom, TOKEN_ALGORITHM,
};
use crate::commands::trust::terraform::{KEYCLOAK, required_providers};

/// The resources for `plan`'s client.
pub fn render(plan: &Plan, config_file: &std::path::Path) -> String {
    let mut out = String::new();
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let targets: Vec<&str> = plan
        .scopes
        .iter()
        .flat_map(|s| s.targets.iter().map(String::as_str))
        .collect();
    let _ = write!(
        out,
        "# The Keycloak side of keyfed's client {client} in realm {realm} of {server}, for its\n\
         # targets {targets} in {file};\n\
         # printed by `keyfed trust {target} --keycloak --format terraform`.\n\
         # Provider: keycloak/keycloak (registry.terraform.io/providers/keycloak/keycloak).\n\
         # A client scope shared with another client appears in that client's output too: keep one.\n\n",
        client = q(&plan.client.client_id),
        realm = q(&plan.realm),
        server = q(&plan.server),
        targets = targets.join(", "),
        target = keyfed_core::quote::sh(&plan.target),
        file = q(&config_file.to_string_lossy()),
    );
    out += &required_providers(&[&KEYCLOAK]);
    let realm = hcl(&plan.realm);
    let client = unique(&plan.client.client_id, &mut BTreeSet::new());
    if let Credential::Secret {
        from: SecretFrom::Env(_) | SecretFrom::Inline,
        ..
    } = &plan.client.credential
    {
        let _ = write!(
            out,
            "variable \"{client}_secret\" {{\n  \
               description = {description}\n  \
               type        = string\n  \
               sensitive   = true\n\
             }}\n\n",
            description = hcl(&secret_description(&plan.client.credential, config_file)),
        );
    }
    client_resource(&mut out, plan, &realm, &client);
    let mut taken = BTreeSet::from([client.clone()]);
    let mut optional = Vec::new();
    let mut default: Vec<String> = CLIENT_DEFAULT_SCOPES.iter().map(|s| hcl(s)).collect();
    let mut any_default = false;
    for scope in &plan.scopes {
        let name = unique(&scope.name, &mut taken);
        let _ = write!(
            out,
            "resource \"keycloak_openid_client_scope\" \"{name}\" {{\n  \
               realm_id               = {realm}\n  \
               name                   = {scope_name}\n  \
               description            = {description}\n  \
               include_in_token_scope = true\n\
             }}\n\n\
             resource \"keycloak_openid_audience_protocol_mapper\" \"{name}\" {{\n  \
               realm_id                 = {realm}\n  \
               client_scope_id          = keycloak_openid_client_scope.{name}.id\n  \
               name                     = {mapper}\n  \
               included_custom_audience = {audience}\n  \
               add_to_access_token      = true\n  \
               add_to_id_token          = false\n\
             }}\n\n",
            scope_name = hcl(&scope.name),
            description = hcl(&format!(
                "Puts {} in the access token's aud (keyfed)",
                scope.audience
            )),
            mapper = hcl(MAPPER_NAME),
            audience = hcl(&scope.audience),
        );
        let reference = format!("keycloak_openid_client_scope.{name}.name");
        if scope.optional {
            optional.push(reference);
        } else {
            default.push(reference);
            any_default = true;
        }
    }
    if !optional.is_empty() {
        let _ = write!(
            out,
            "# Authoritative: the client's Optional scopes are exactly these (Keycloak's own optional\n\
             # scopes, such as address and phone, are of no use to keyfed).\n\
             resource \"keycloak_openid_client_optional_scopes\" \"{client}\" {{\n  \
               realm_id        = {realm}\n  \
               client_id       = keycloak_openid_client.{client}.id\n  \
               optional_scopes = {list}\n\
             }}\n\n",
            list = list(&optional),
        );
    }
    if any_default {
        let _ = write!(
            out,
            "# Authoritative: the client's Default scopes are exactly these, those Keycloak gives a\n\
             # client with service accounts kept (basic gives tokens their sub; service_account,\n\
             # Keycloak 26's, their client_id: leave it out on an older realm, which lacks it).\n\
             resource \"keycloak_openid_client_default_scopes\" \"{client}\" {{\n  \
               realm_id       = {realm}\n  \
               client_id      = keycloak_openid_client.{client}.id\n  \
               default_scopes = {list}\n\
             }}\n\n",
            list = list(&default),
        );
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

fn client_resource(out: &mut String, plan: &Plan, realm: &str, client: &str) {
    let credential = &plan.client.credential;
    let secret = match credential {
        Credential::Secret {
            from: SecretFrom::File(path),
            ..
        } => format!(
            "  # The secret keyfed reads, as keyfed reads it (one trailing newline is not part of\n  \
             # it). Terraform keeps it in its state.\n  \
             client_secret                = replace(file({path}), {newline}, \"\")\n",
            path = hcl(&path.to_string_lossy()),
            newline = hcl(r"/\r?\n\z/"),
        ),
        Credential::Secret { .. } => {
            format!("  client_secret                = var.{client}_secret\n")
        }
        Credential::Key { .. } => String::new(),
    };
    let mut extra = vec![(
        "access.token.signed.response.alg",
        TOKEN_ALGORITHM.to_owned(),
    )];
    extra.extend(credential.attributes());
    let width = extra.iter().map(|(k, _)| hcl(k).len()).max().unwrap_or(0);
    let extra: Vec<String> = extra
        .iter()
        .map(|(k, v)| format!("    {:width$} = {}", hcl(k), hcl(v)))
        .collect();
    let _ = write!(
        out,
        "resource \"keycloak_openid_client\" \"{client}\" {{\n  \
           realm_id                     = {realm}\n  \
           client_id                    = {client_id}\n  \
           enabled                      = true\n  \
           access_type                  = \"CONFIDENTIAL\"\n  \
           client_authenticator_type    = {authenticator}\n\
         {secret}  \
           service_accounts_enabled     = true\n  \
           standard_flow_enabled        = false\n  \
           implicit_flow_enabled        = false\n  \
           direct_access_grants_enabled = false\n  \
           full_scope_allowed           = false\n  \
           # {reason}\n  \
           access_token_lifespan        = {lifespan}\n  \
           extra_config = {{\n{extra}\n  \
           }}\n\
         }}\n\n",
        client_id = hcl(&plan.client.client_id),
        authenticator = hcl(credential.authenticator()),
        reason = plan.lifespan.reason.replace(['\n', '\r'], " "),
        lifespan = hcl(&plan.lifespan.value.as_secs().to_string()),
        extra = extra.join("\n"),
    );
}

/// An HCL list, one item a line.
fn list(items: &[String]) -> String {
    let mut text = String::from("[\n");
    for item in items {
        let _ = writeln!(text, "    {item},");
    }
    text.push_str("  ]");
    text
}

fn secret_description(credential: &Credential, config_file: &std::path::Path) -> String {
    match credential {
        Credential::Secret {
            from: SecretFrom::Env(name),
            ..
        } => format!("The client secret keyfed reads from the environment variable {name}"),
        _ => format!(
            "The client secret written inline in {}",
            config_file.display()
        ),
    }
}

/// `text` as a Terraform label ([`label`]) not in `taken` (which it joins): two scopes whose
/// names differ only in characters a label cannot hold get `_2`, `_3`….
fn unique(text: &str, taken: &mut BTreeSet<String>) -> String {
    let base = label(text);
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}_{n}");
        n += 1;
    }
    taken.insert(name.clone());
    name
}
