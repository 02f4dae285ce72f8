//! `keyfed trust <target> --keycloak`: what Keycloak needs for this host's client and the
//! target — the confidential client, a client scope with the target's audience, the token
//! signing algorithm and lifespan — as a `kcadm.sh` script, a partial realm import or Terraform.
//! Worked out from the configuration alone (`plan`); no token is fetched, since Keycloak is not
//! set up yet. No secret is printed: the script reads it from where keyfed does, the import
//! leaves it to Keycloak. Notes for the operator go to standard error.

mod json;
mod plan;
mod shell;
mod terraform;

#[cfg(test)]
mod tests;

use std::path::Path;

use crate::cli::TrustFormat;
use plan::{Credential, Plan, SecretFrom};

pub async fn run(path: &Path, target: &str, format: TrustFormat) -> anyhow::Result<()> {
    let config = crate::commands::load(path)?;
    let (plan, mut notes) = plan::plan(&config, target)?;
    let text = match format {
        TrustFormat::Shell => shell::render(&plan, &config.file),
        TrustFormat::Json => {
            notes.extend(import_notes(&plan));
            json::render(&plan)
        }
        TrustFormat::Terraform => terraform::render(&plan, &config.file),
    };
    crate::stdout::write(text)?;
    for note in notes {
        eprintln!("note: {note}");
    }
    Ok(())
}

/// How to apply the partial import, which Keycloak does not do in one step, and how keyfed gets
/// the secret Keycloak generates.
fn import_notes(plan: &Plan) -> Vec<String> {
    use keyfed_core::quote::sh;
    let realm = sh(&plan.realm);
    let mut notes = vec![format!(
        "Keycloak's partial import ignores clientScopes (keycloak/keycloak#16289), so create them first, then import (saved as keycloak.json):\n  \
         jq -c '.clientScopes[]' keycloak.json | while IFS= read -r scope; do kcadm.sh create client-scopes -r {realm} -f - <<<\"$scope\"; done\n  \
         kcadm.sh create partialImport -r {realm} -o -f keycloak.json\n\
         A scope or client that exists already is left as it is (ifResourceExists SKIP: OVERWRITE would give the client a new secret and a new service-account user, whose id is its tokens' sub); to add a target to a client that exists, use --format shell."
    )];
    if let Credential::Secret { from, .. } = &plan.client.credential {
        let get = format!(
            "kcadm.sh get \"clients/$(kcadm.sh get clients -r {realm} -q clientId={client} --fields id --format csv --noquotes)/client-secret\" -r {realm} --fields value --format csv --noquotes",
            client = sh(&plan.client.client_id),
        );
        let put = match from {
            SecretFrom::File(path) => format!(
                "write it to the file keyfed reads:\n  (umask 077; {get} > {})",
                sh(&path.to_string_lossy())
            ),
            SecretFrom::Env(name) => {
                format!("set the environment variable keyfed reads, {name}, to it:\n  {get}")
            }
            SecretFrom::Inline => {
                format!("write it as client_secret in keyfed's configuration:\n  {get}")
            }
        };
        notes.push(format!(
            "the import sets no client secret: Keycloak generates one; {put}"
        ));
    }
    notes
}
