//! The AWS side of `keyfed trust`: the IAM OIDC identity provider for the token's issuer (its
//! URL, and the target's audience in its client ID list) and the trust policy of the target's
//! role, which lets that provider's tokens assume the role under `StringEquals` on
//! `<provider>:aud` and `<provider>:sub` — the provider named as IAM names it, the issuer
//! without `https://`. As `aws iam` commands, as JSON (`oidc_provider`, `role`,
//! `trust_policy`) or as `aws_iam_openid_connect_provider` and `aws_iam_role` resources.

use std::collections::BTreeMap;

use keyfed_core::quote::{hcl, label, sh};
use serde::Serialize;

use super::terraform::{AWS, required_providers};
use super::{Facts, built_from, command, comment};
use crate::cli::TrustFormat;
use crate::config::AwsExchange;

/// The role as its ARN names it: `arn:<partition>:iam::<account>:role/<path/><name>`.
#[derive(Debug, PartialEq, Eq)]
struct Role {
    arn: String,
    partition: String,
    account: String,
    name: String,
    /// `/` or `/a/b/`, as IAM writes a role's path.
    path: String,
}

impl Role {
    fn parse(arn: &str) -> anyhow::Result<Self> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [_, partition, _, _, account, resource] = parts.as_slice() else {
            anyhow::bail!("cannot read the role ARN \"{arn}\"");
        };
        let Some((path, name)) = resource
            .strip_prefix("role/")
            .map(|rest| rest.rsplit_once('/').unwrap_or(("", rest)))
        else {
            anyhow::bail!("cannot read the role ARN \"{arn}\"");
        };
        Ok(Self {
            arn: arn.to_owned(),
            partition: (*partition).to_owned(),
            account: (*account).to_owned(),
            name: name.to_owned(),
            path: if path.is_empty() {
                "/".to_owned()
            } else {
                format!("/{path}/")
            },
        })
    }
}

/// Everything the setup names.
struct Setup<'a> {
    facts: &'a Facts,
    role: Role,
    /// IAM's name for the provider: the issuer without its scheme.
    provider: String,
    provider_arn: String,
}

impl<'a> Setup<'a> {
    fn new(facts: &'a Facts, aws: &AwsExchange) -> anyhow::Result<Self> {
        let role = Role::parse(&aws.role_arn)?;
        let provider = facts
            .issuer
            .strip_prefix("https://")
            .or_else(|| facts.issuer.strip_prefix("http://"))
            .unwrap_or(&facts.issuer)
            .to_owned();
        let provider_arn = format!(
            "arn:{}:iam::{}:oidc-provider/{provider}",
            role.partition, role.account
        );
        Ok(Self {
            facts,
            role,
            provider,
            provider_arn,
        })
    }

    /// The condition keys and the values they must equal.
    fn conditions(&self) -> [(String, &str); 2] {
        [
            (format!("{}:aud", self.provider), &self.facts.audience),
            (format!("{}:sub", self.provider), &self.facts.subject),
        ]
    }

    fn trust_policy(&self) -> Policy<'_> {
        Policy {
            version: "2012-10-17",
            statement: [Statement {
                effect: "Allow",
                principal: Principal {
                    federated: &self.provider_arn,
                },
                action: "sts:AssumeRoleWithWebIdentity",
                condition: Condition {
                    string_equals: self.conditions().into_iter().collect(),
                },
            }],
        }
    }
}

/// A role trust policy, its fields in the order IAM's documentation writes them.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Policy<'a> {
    version: &'static str,
    statement: [Statement<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Statement<'a> {
    effect: &'static str,
    principal: Principal<'a>,
    action: &'static str,
    condition: Condition<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Principal<'a> {
    federated: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Condition<'a> {
    string_equals: BTreeMap<String, &'a str>,
}

/// `--format json`: IAM's CreateOpenIDConnectProvider fields, the role, and its trust policy.
#[derive(Serialize)]
struct Document<'a> {
    oidc_provider: OidcProvider<'a>,
    role: RoleDocument<'a>,
    trust_policy: Policy<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct OidcProvider<'a> {
    arn: &'a str,
    url: &'a str,
    #[serde(rename = "ClientIDList")]
    client_id_list: [&'a str; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RoleDocument<'a> {
    arn: &'a str,
    role_name: &'a str,
    path: &'a str,
}

pub(super) fn setup(
    facts: &Facts,
    aws: &AwsExchange,
    format: TrustFormat,
) -> anyhow::Result<String> {
    let setup = Setup::new(facts, aws)?;
    Ok(match format {
        TrustFormat::Shell => shell(&setup)?,
        TrustFormat::Json => json(&setup)?,
        TrustFormat::Terraform => terraform(&setup),
    })
}

fn shell(s: &Setup<'_>) -> anyhow::Result<String> {
    let f = s.facts;
    let policy = serde_json::to_string_pretty(&s.trust_policy())?;
    let mut out = comment(&format!(
        "keyfed trust: the AWS side of target \"{}\" (role {}).",
        f.target, s.role.arn
    ));
    out.push('\n');
    out += &comment(&format!(
        "1. The IAM OIDC identity provider for the issuer, once per account and issuer. If it\n   \
         exists already (aws iam list-open-id-connect-providers), add the audience to it instead:\n   \
         aws iam add-client-id-to-open-id-connect-provider --open-id-connect-provider-arn {} --client-id {}",
        sh(&s.provider_arn),
        sh(&f.audience)
    ));
    out += &command(
        &["aws iam create-open-id-connect-provider".to_owned()],
        &[
            format!("--url {}", sh(&f.issuer)),
            format!("--client-id-list {}", sh(&f.audience)),
        ],
    );
    out.push('\n');
    out += &comment(
        "2. The role's trust policy, replacing its current one: tokens of that provider with this\n   \
         audience, for this host's service account (sub), may assume the role.",
    );
    out += &command(
        &["aws iam update-assume-role-policy".to_owned()],
        &[
            format!("--role-name {}", sh(&s.role.name)),
            format!("--policy-document {}", sh(&policy)),
        ],
    );
    out += &comment(&format!(
        "For a new role, create it with the same policy document instead:\n  \
         aws iam create-role --role-name {} --path {} --assume-role-policy-document POLICY",
        sh(&s.role.name),
        sh(&s.role.path)
    ));
    out.push('\n');
    out += &built_from(f);
    Ok(out)
}

/// `{"oidc_provider": {Arn, Url, ClientIDList}, "role": {Arn, RoleName, Path},
/// "trust_policy": …}`.
fn json(s: &Setup<'_>) -> anyhow::Result<String> {
    let document = Document {
        oidc_provider: OidcProvider {
            arn: &s.provider_arn,
            url: &s.facts.issuer,
            client_id_list: [&s.facts.audience],
        },
        role: RoleDocument {
            arn: &s.role.arn,
            role_name: &s.role.name,
            path: &s.role.path,
        },
        trust_policy: s.trust_policy(),
    };
    Ok(serde_json::to_string_pretty(&document)? + "\n")
}

fn terraform(s: &Setup<'_>) -> String {
    let f = s.facts;
    let l = label(&f.target);
    let conditions: String = s
        .conditions()
        .iter()
        .map(|(k, v)| format!("          {} = {}\n", hcl(k), hcl(v)))
        .collect();
    let mut out = comment(&format!(
        "keyfed trust: the AWS side of target \"{}\" (role {}).",
        f.target, s.role.arn
    ));
    out.push('\n');
    out += &required_providers(&[&AWS]);
    out += &comment("The IAM OIDC identity provider for the issuer, once per account and issuer.");
    out += &format!(
        "resource \"aws_iam_openid_connect_provider\" \"{l}\" {{\n  \
         url            = {}\n  \
         client_id_list = [{}]\n}}\n\n",
        hcl(&f.issuer),
        hcl(&f.audience),
    );
    out += &comment(
        "The role, trusting that provider's tokens with this audience for this host's service\n\
         account (sub). If the role is defined elsewhere, move assume_role_policy there.",
    );
    out += &format!(
        "resource \"aws_iam_role\" \"{l}\" {{\n  \
         name = {}\n  \
         path = {}\n  \
         assume_role_policy = jsonencode({{\n    \
         Version = \"2012-10-17\"\n    \
         Statement = [{{\n      \
         Effect    = \"Allow\"\n      \
         Principal = {{ Federated = aws_iam_openid_connect_provider.{l}.arn }}\n      \
         Action    = \"sts:AssumeRoleWithWebIdentity\"\n      \
         Condition = {{\n        \
         StringEquals = {{\n{conditions}        }}\n      }}\n    }}]\n  }})\n}}\n\n",
        hcl(&s.role.name),
        hcl(&s.role.path),
    );
    out += &built_from(f);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_arn_gives_partition_account_path_and_name() {
        let role = Role::parse("arn:aws-cn:iam::123456789012:role/team/web/onprem-web")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (role.partition.as_str(), role.account.as_str()),
            ("aws-cn", "123456789012")
        );
        assert_eq!(
            (role.name.as_str(), role.path.as_str()),
            ("onprem-web", "/team/web/")
        );
        let plain =
            Role::parse("arn:aws:iam::123456789012:role/app").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((plain.name.as_str(), plain.path.as_str()), ("app", "/"));
        assert!(Role::parse("arn:aws:iam::123456789012:user/x").is_err());
        assert!(Role::parse("nonsense").is_err());
    }
}
