//! The host's side of Azure targets: a target's `azure` table, checked by
//! `keyfed_azure::config` with its errors put at their full key path
//! (`targets.NAME.azure.tenant_id`); the output kinds Azure's consumers read
//! (`azure-access-token` with its `scope` key, `azure-federated-token`); and how `keyfed check`
//! shows them; and the managed-identity faces (Azure IMDS, App Service) their SDKs call.

use keyfed_azure::config::RawAzure;
use keyfed_core::config::{KeyError, Keys};
use keyfed_core::exchange::SlotKey;
use serde::{Deserialize as _, Deserializer};
use toml::{Table, Value};

use super::ConfigError;
use super::output::{OutputCx, OutputKindSpec, RawOutput};
use super::resolve::Ctx;
use super::target::Exchange;
use crate::outputs::OutputKind;

/// `azure = {…}` checked: a federated credential of one app or managed identity.
pub type AzureExchange = keyfed_azure::config::AzureTarget;

/// The target `name`'s `azure` table.
pub(super) fn exchange(
    ctx: &Ctx<'_>,
    name: &str,
    raw: &RawAzure,
) -> Result<AzureExchange, ConfigError> {
    let table = format!("targets.{name}.azure");
    keyfed_azure::config::resolve(raw, ctx).map_err(ctx.within(&table))
}

/// The outputs Azure's consumers read.
pub(super) const OUTPUT_KINDS: [OutputKindSpec; 2] = [
    // An access token for one of the target's scopes: raw, or `az account get-access-token`'s
    // JSON.
    OutputKindSpec {
        name: "azure-access-token",
        target: "azure",
        formats: &["raw", "json"],
        build: access_token,
    },
    // AZURE_FEDERATED_TOKEN_FILE: the issuer's token, which the SDK exchanges itself.
    OutputKindSpec {
        name: "azure-federated-token",
        target: "azure",
        formats: &[],
        build: |_, _| Ok(OutputKind::AzureFederatedToken),
    },
];

/// The output keys only Azure's kinds read.
#[derive(Debug, Default)]
pub struct OutputKeys {
    pub scope: Option<String>,
}

const OUTPUT_KEYS: [&str; 1] = ["scope"];

impl Keys for OutputKeys {
    fn find(key: &str) -> Option<&'static str> {
        OUTPUT_KEYS.into_iter().find(|k| *k == key)
    }

    fn names() -> Vec<&'static str> {
        OUTPUT_KEYS.to_vec()
    }

    fn read<'de, D: Deserializer<'de>>(
        &mut self,
        key: &'static str,
        value: D,
    ) -> Result<(), D::Error> {
        match key {
            "scope" => self.scope = Some(String::deserialize(value)?),
            other => return Err(serde::de::Error::unknown_field(other, &OUTPUT_KEYS)),
        }
        Ok(())
    }
}

/// `scope` is refused on outputs of another kind than `azure-access-token`.
pub(super) fn check_output_keys(kind: &str, keys: &OutputKeys) -> Result<(), KeyError> {
    if keys.scope.is_some() && kind != "azure-access-token" {
        return Err(KeyError::new(
            "scope",
            "is only used with kind = \"azure-access-token\"",
        ));
    }
    Ok(())
}

/// The token for `scope` (one of the target's `scopes`; default its first, the main credential).
fn access_token(raw: &RawOutput, cx: &OutputCx<'_>) -> Result<OutputKind, KeyError> {
    let Exchange::Azure(azure) = cx.exchange else {
        return Err(KeyError::new("kind", "needs a target with an azure table"));
    };
    let json = cx.format == "json";
    let Some(scope) = &raw.keys.2.scope else {
        return Ok(OutputKind::AzureAccessToken { scope: None, json });
    };
    let scope = keyfed_azure::scope_for_resource(scope);
    match azure.scopes.iter().position(|s| *s == scope) {
        Some(0) => Ok(OutputKind::AzureAccessToken { scope: None, json }),
        Some(_) => Ok(OutputKind::AzureAccessToken {
            scope: Some(scope),
            json,
        }),
        None => Err(KeyError::new(
            "scope",
            format!(
                "\"{scope}\" is not one of the target's scopes ({}); add it to \
                 targets.{}.azure.scopes so it is kept fresh",
                azure.scopes.join(", "),
                cx.target
            ),
        )),
    }
}

/// The variants a target keeps fresh besides its main credential: its other scopes.
pub fn configured_slots(azure: &AzureExchange) -> Vec<SlotKey> {
    azure
        .scopes
        .iter()
        .skip(1)
        .cloned()
        .map(SlotKey::Resource)
        .collect()
}

/// The `azure` table as `keyfed check` prints it.
pub(super) fn show(azure: &AzureExchange) -> Table {
    let mut t = Table::new();
    t.insert("tenant_id".into(), azure.tenant_id.clone().into());
    t.insert("client_id".into(), azure.client_id.clone().into());
    t.insert(
        "scopes".into(),
        Value::Array(azure.scopes.iter().map(|s| s.clone().into()).collect()),
    );
    t.insert(
        "authority_host".into(),
        azure.authority_host.to_string().into(),
    );
    super::show::http(&mut t, &azure.http);
    t
}

/// An Azure output's own keys as `keyfed check` prints them.
pub(super) fn show_output(kind: &OutputKind, t: &mut Table) {
    if let OutputKind::AzureAccessToken { scope, json } = kind {
        t.insert(
            "scope".into(),
            scope
                .clone()
                .unwrap_or_else(|| "(the target's first)".to_owned())
                .into(),
        );
        t.insert("format".into(), if *json { "json" } else { "raw" }.into());
    }
}

/// The managed-identity faces Azure SDKs call (issue 10): both serve the Azure target
/// `azure_target` names on a listen address, and any other Azure target a request's
/// `client_id` names.
pub(super) const FACES: [super::endpoint::FaceSpec; 2] = [
    // Azure IMDS, as on a VM: `AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:9911`.
    super::endpoint::FaceSpec {
        name: "azure-imds",
        title: "Azure IMDS",
        target_key: Some("azure_target"),
        path_key: None,
        serves: &["azure"],
        reserved: &["/metadata"],
        advise: |_| None,
    },
    // App Service's managed identity endpoint: `IDENTITY_ENDPOINT=http://127.0.0.1:9911/msi/token`
    // with `IDENTITY_HEADER` from `endpoint.identity_header_file`.
    super::endpoint::FaceSpec {
        name: "app-service",
        title: "App Service managed identity",
        target_key: Some("azure_target"),
        path_key: None,
        serves: &["azure"],
        reserved: &["/msi"],
        advise: |_| None,
    },
];
