//! The Entra ID side of `keyfed trust`: the federated identity credential (issuer = the token's
//! `iss`, subject = its `sub`, audiences = the target's audience) on what the target's
//! `client_id` names — an app registration or a user-assigned managed identity; keyfed cannot
//! tell which, so shell and Terraform output cover both, chosen by a value only the operator
//! knows (`IDENTITY_NAME` and `RESOURCE_GROUP`; the `<label>_managed_identity_id` and
//! `<label>_resource_group_name` variables). As `az ad app federated-credential create` /
//! `az identity federated-credential create`, as the credential's JSON document, or as
//! `azuread_application_federated_identity_credential` (its application found with a
//! `data "azuread_application"` by client ID) and `azurerm_federated_identity_credential`.

use keyfed_core::quote::{hcl, label, sh};
use serde::Serialize;

use super::terraform::{AZUREAD, AZURERM, required_providers};
use super::{Facts, built_from, command_at, comment, comment_at};
use crate::cli::TrustFormat;
use crate::config::AzureExchange;

/// The credential's name: Entra takes 3–120 letters, digits, `-` and `_`, starting with a
/// letter or digit. Named for the Keycloak client, one credential per host identity.
fn credential_name(client_id: &str) -> String {
    let safe: String = client_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("keyfed-{safe}").chars().take(120).collect()
}

/// The credential's document, as Microsoft Graph and `az ad app federated-credential create
/// --parameters` take it.
#[derive(Serialize)]
struct Document<'a> {
    name: String,
    issuer: &'a str,
    subject: &'a str,
    audiences: [&'a str; 1],
    description: String,
}

fn document(f: &Facts) -> Document<'_> {
    Document {
        name: credential_name(&f.client_id),
        issuer: &f.issuer,
        subject: &f.subject,
        audiences: [&f.audience],
        description: description(f),
    }
}

fn description(f: &Facts) -> String {
    let host = super::super::host().hostname;
    // Entra takes at most 600 characters.
    format!(
        "keyfed on {host}: Keycloak client {} (target {})",
        f.client_id, f.target
    )
    .chars()
    .take(600)
    .collect()
}

pub(super) fn setup(
    facts: &Facts,
    azure: &AzureExchange,
    format: TrustFormat,
) -> anyhow::Result<String> {
    Ok(match format {
        TrustFormat::Shell => shell(facts, azure)?,
        TrustFormat::Json => serde_json::to_string_pretty(&document(facts))? + "\n",
        TrustFormat::Terraform => terraform(facts, azure),
    })
}

fn shell(f: &Facts, azure: &AzureExchange) -> anyhow::Result<String> {
    let doc = serde_json::to_string_pretty(&document(f))?;
    let mut out = comment(&format!(
        "keyfed trust: the Entra ID side of target \"{}\" (tenant {}, client_id {}).",
        f.target, azure.tenant_id, azure.client_id
    ));
    out += &comment(
        "client_id names an app registration or a user-assigned managed identity, and keyfed\n\
         cannot tell which: for a managed identity, set IDENTITY_NAME to its name and\n\
         RESOURCE_GROUP to its resource group first.",
    );
    out.push('\n');
    out += "if [ -z \"${IDENTITY_NAME:-}\" ]; then\n";
    out += &comment_at(
        "  ",
        "An app registration: a federated identity credential on the application.",
    );
    out += &command_at(
        "  ",
        &[
            "az ad app federated-credential create".to_owned(),
            format!("--id {}", sh(&azure.client_id)),
        ],
        &[format!("--parameters {}", sh(&doc))],
    );
    out += "else\n";
    out += &comment_at(
        "  ",
        "A user-assigned managed identity: IDENTITY_NAME in RESOURCE_GROUP.",
    );
    out += &command_at(
        "  ",
        &["az identity federated-credential create".to_owned()],
        &[
            format!("--name {}", sh(&credential_name(&f.client_id))),
            "--identity-name \"$IDENTITY_NAME\"".to_owned(),
            // No quote characters in the message: within "${VAR:?…}" bash takes one for the
            // start of a quoted word and the script no longer parses.
            "--resource-group \"${RESOURCE_GROUP:?set RESOURCE_GROUP to the resource group of the managed identity}\""
                .to_owned(),
            format!("--issuer {}", sh(&f.issuer)),
            format!("--subject {}", sh(&f.subject)),
            format!("--audiences {}", sh(&f.audience)),
        ],
    );
    out += "fi\n\n";
    out += &built_from(f);
    Ok(out)
}

fn terraform(f: &Facts, azure: &AzureExchange) -> String {
    let l = label(&f.target);
    let name = credential_name(&f.client_id);
    let mi = format!("{l}_managed_identity_id");
    let rg = format!("{l}_resource_group_name");
    let app = format!("var.{mi} == null ? 1 : 0");
    let managed = format!("var.{mi} == null ? 0 : 1");
    let mut out = comment(&format!(
        "keyfed trust: the Entra ID side of target \"{}\" (tenant {}, client_id {}).",
        f.target, azure.tenant_id, azure.client_id
    ));
    out += &comment(
        "client_id names an app registration or a user-assigned managed identity, and keyfed\n\
         cannot tell which: for a managed identity, set the two variables below.",
    );
    out.push('\n');
    out += &required_providers(&[&AZUREAD, &AZURERM]);
    out += &comment(
        "azurerm also needs, in the root module, a provider \"azurerm\" block with features {}\n\
         (and, from azurerm 4.0 on, a subscription_id).",
    );
    out.push('\n');
    out += &format!(
        "variable \"{mi}\" {{\n  \
         description = \"The managed identity's resource ID, when client_id names a user-assigned managed identity\"\n  \
         type        = string\n  \
         default     = null\n}}\n\n\
         variable \"{rg}\" {{\n  \
         description = \"The managed identity's resource group\"\n  \
         type        = string\n  \
         default     = null\n}}\n\n"
    );
    out += &comment("An app registration: a federated identity credential on the application.");
    out += &format!(
        "data \"azuread_application\" \"{l}\" {{\n  \
         count     = {app}\n  \
         client_id = {}\n}}\n\n\
         resource \"azuread_application_federated_identity_credential\" \"{l}\" {{\n  \
         count          = {app}\n  \
         application_id = data.azuread_application.{l}[0].id\n  \
         display_name   = {}\n  \
         description    = {}\n  \
         issuer         = {}\n  \
         subject        = {}\n  \
         audiences      = [{}]\n}}\n\n",
        hcl(&azure.client_id),
        hcl(&name),
        hcl(&description(f)),
        hcl(&f.issuer),
        hcl(&f.subject),
        hcl(&f.audience),
    );
    out += &comment("A user-assigned managed identity.");
    out += &format!(
        "resource \"azurerm_federated_identity_credential\" \"{l}\" {{\n  \
         count               = {managed}\n  \
         name                = {}\n  \
         resource_group_name = var.{rg}\n  \
         parent_id           = var.{mi}\n  \
         issuer              = {}\n  \
         subject             = {}\n  \
         audience            = [{}]\n}}\n\n",
        hcl(&name),
        hcl(&f.issuer),
        hcl(&f.subject),
        hcl(&f.audience),
    );
    out += &built_from(f);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_are_what_entra_takes() {
        assert_eq!(credential_name("host-web-01"), "keyfed-host-web-01");
        assert_eq!(credential_name("it's a $x"), "keyfed-it-s-a--x");
        assert_eq!(credential_name(&"x".repeat(300)).len(), 120);
    }
}
