//! What every `--format terraform` output of `keyfed trust` starts with: the
//! `terraform { required_providers { … } }` block naming where its providers come from and the
//! oldest version that has every resource and argument keyfed prints. Without it
//! `terraform init` looks for `hashicorp/<name>` (which keycloak's provider is not) and takes any
//! version.

use std::fmt::Write as _;

use keyfed_core::quote::hcl;

/// A Terraform provider the printed resources come from.
pub(super) struct Provider {
    /// Its local name: the prefix of its resource types.
    pub name: &'static str,
    /// Its registry address.
    pub source: &'static str,
    /// The version constraint: the oldest release with everything keyfed prints.
    pub version: &'static str,
}

/// `aws_iam_openid_connect_provider` without `thumbprint_list`, which was required before
/// 5.81.0 (hashicorp/terraform-provider-aws#37255, approved on 2024-12-10; 5.81.0 is the first
/// release after it).
pub(super) const AWS: Provider = Provider {
    name: "aws",
    source: "hashicorp/aws",
    version: ">= 5.81.0",
};

/// `oidc.jwks_json` of `google_iam_workload_identity_pool_provider` (4.71.0).
pub(super) const GOOGLE: Provider = Provider {
    name: "google",
    source: "hashicorp/google",
    version: ">= 4.71.0",
};

/// `data "azuread_application"` found by `client_id`, and `application_id` on
/// `azuread_application_federated_identity_credential` (2.44.0), which takes the data source's
/// `id` as it is from 2.46.0 on (`/applications/<object id>`; a bare object ID before).
pub(super) const AZUREAD: Provider = Provider {
    name: "azuread",
    source: "hashicorp/azuread",
    version: ">= 2.46.0",
};

/// `azurerm_federated_identity_credential` (3.31.0).
pub(super) const AZURERM: Provider = Provider {
    name: "azurerm",
    source: "hashicorp/azurerm",
    version: ">= 3.31.0",
};

/// The Keycloak provider's first release under keycloak/keycloak (5.0.0; mrparkers/keycloak
/// before), which knows Keycloak 26.
pub(super) const KEYCLOAK: Provider = Provider {
    name: "keycloak",
    source: "keycloak/keycloak",
    version: ">= 5.0.0",
};

/// The `terraform` block requiring `providers`, with a comment saying when to leave it out, and
/// a blank line after it.
pub(super) fn required_providers(providers: &[&Provider]) -> String {
    let mut out = String::from(
        "# The providers of the resources below. A module names each provider once: where\n\
         # yours names these already, keep its block and leave this one out.\n\
         terraform {\n  required_providers {\n",
    );
    for p in providers {
        let _ = write!(
            out,
            "    {} = {{\n      source  = {}\n      version = {}\n    }}\n",
            p.name,
            hcl(p.source),
            hcl(p.version)
        );
    }
    out.push_str("  }\n}\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_names_each_providers_source_and_version() {
        assert_eq!(
            required_providers(&[&AZUREAD, &AZURERM])
                .lines()
                .skip(2)
                .collect::<Vec<_>>(),
            [
                "terraform {",
                "  required_providers {",
                "    azuread = {",
                "      source  = \"hashicorp/azuread\"",
                "      version = \">= 2.46.0\"",
                "    }",
                "    azurerm = {",
                "      source  = \"hashicorp/azurerm\"",
                "      version = \">= 3.31.0\"",
                "    }",
                "  }",
                "}",
                "",
            ]
        );
    }
}
