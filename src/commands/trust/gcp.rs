//! The Google Cloud side of `keyfed trust`: the workload identity pool and its OIDC provider
//! for the token's issuer (allowed audience: the target's; attribute mapping
//! `google.subject=assertion.sub`), and the binding that lets this host's federated principal
//! (`principal://…/subject/<sub>`) impersonate the target's service account — or, without one,
//! that principal, to grant roles to. When Google cannot reach the issuer (`public.rs`), the
//! issuer's keys go with the provider: a JWKS file for `--jwk-json-path` in shell format,
//! `jwks_json` / `jwksJson` inline in Terraform and JSON. The APIs federation uses come first. As
//! `gcloud` commands, as the REST bodies (`services`, `pool`, `provider`, `principal`, `binding`)
//! or as `google_project_service`, `google_iam_workload_identity_pool`,
//! `google_iam_workload_identity_pool_provider` and `google_service_account_iam_member`.

use std::path::Path;

use anyhow::Context as _;
use keyfed_core::quote::{gcloud_list, hcl, label, sh};
use keyfed_keycloak::KeycloakClient;
use serde::Serialize;
use serde_json::{Value, json};

use super::terraform::{GOOGLE, required_providers};
use super::{Facts, built_from, command, comment, flag, jwks, public};
use crate::cli::TrustFormat;
use crate::config::GcpExchange;
use crate::outputs::{FileSpec, write_atomic};

const MAPPING: (&str, &str) = ("google.subject", "assertion.sub");
const ROLE: &str = "roles/iam.workloadIdentityUser";
/// The APIs workload identity federation uses, as Google's guide has them enabled.
const SERVICES: [&str; 4] = [
    "iam.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "iamcredentials.googleapis.com",
    "sts.googleapis.com",
];

/// The names the setup uses, from the configuration and the token.
struct Setup<'a> {
    facts: &'a Facts,
    gcp: &'a GcpExchange,
    /// `projects/<number>/locations/global/workloadIdentityPools/<pool>`.
    pool_name: String,
    pool_id: String,
    provider_id: String,
    /// What `--project` and Terraform's `project` say: the project ID when configured, else
    /// the number.
    project: String,
    principal: String,
    /// The issuer's keys, when Google cannot fetch them.
    private: Option<Private>,
}

/// An issuer Google cannot reach: why, its keys, and the file they went to (shell format).
struct Private {
    why: String,
    jwks: Value,
    file: Option<String>,
}

pub(super) async fn setup(
    facts: &Facts,
    gcp: &GcpExchange,
    format: TrustFormat,
    client: &KeycloakClient,
    jwks_file: &Path,
) -> anyhow::Result<String> {
    let private = match public::not_public(&facts.issuer) {
        None => None,
        Some(why) => Some(keys_for_google(facts, why, format, client, jwks_file).await?),
    };
    let setup = Setup::new(facts, gcp, private)?;
    Ok(match format {
        TrustFormat::Shell => shell(&setup),
        TrustFormat::Json => json(&setup)?,
        TrustFormat::Terraform => terraform(&setup)?,
    })
}

/// The issuer's keys, for an issuer Google cannot reach (`why`): fetched, and in shell format
/// written to `jwks_file` for `--jwk-json-path`. Says so on standard error.
async fn keys_for_google(
    facts: &Facts,
    why: String,
    format: TrustFormat,
    client: &KeycloakClient,
    jwks_file: &Path,
) -> anyhow::Result<Private> {
    let published = client
        .published_keys()
        .await
        .context("cannot fetch the issuer's JWKS, which Google must be given")?;
    let jwks = jwks::for_google(&published.document)?;
    let issuer = super::shown(&facts.issuer);
    if format != TrustFormat::Shell {
        eprintln!(
            "note: Google cannot fetch the keys of issuer {issuer} ({why}): the provider carries \
             its JWKS"
        );
        return Ok(Private {
            why,
            jwks,
            file: None,
        });
    }
    let text = serde_json::to_string_pretty(&jwks)? + "\n";
    // Public keys: readable by whoever runs gcloud.
    let spec = FileSpec {
        mode: 0o644,
        owner: None,
        group: None,
    };
    write_atomic(jwks_file, text.as_bytes(), spec)
        .map_err(|e| anyhow::anyhow!("cannot write the JWKS to {}: {e}", jwks_file.display()))?;
    eprintln!(
        "note: Google cannot fetch the keys of issuer {issuer} ({why}): wrote its JWKS to {} for \
         --jwk-json-path",
        jwks_file.display()
    );
    Ok(Private {
        why,
        jwks,
        file: Some(jwks_file.display().to_string()),
    })
}

impl<'a> Setup<'a> {
    fn new(
        facts: &'a Facts,
        gcp: &'a GcpExchange,
        private: Option<Private>,
    ) -> anyhow::Result<Self> {
        let Some(name) = keyfed_gcp::config::ProviderName::parse(&gcp.provider) else {
            anyhow::bail!("cannot read the pool provider \"{}\"", gcp.provider);
        };
        let pool_name = gcp.pool().to_owned();
        Ok(Self {
            facts,
            gcp,
            principal: format!(
                "principal://iam.googleapis.com/{pool_name}/subject/{}",
                facts.subject
            ),
            pool_name,
            pool_id: name.pool.to_owned(),
            provider_id: name.provider.to_owned(),
            project: gcp
                .project_id
                .clone()
                .unwrap_or_else(|| name.project_number.to_owned()),
            private,
        })
    }

    /// The service account as IAM's resource name: its own project when its email says it.
    fn service_account_resource(&self, email: &str) -> String {
        let project = email
            .split_once('@')
            .and_then(|(_, domain)| domain.strip_suffix(".iam.gserviceaccount.com"))
            .map(str::to_owned)
            .or_else(|| self.gcp.project_id.clone())
            .unwrap_or_else(|| "-".to_owned());
        format!("projects/{project}/serviceAccounts/{email}")
    }

    fn jwks_text(&self) -> anyhow::Result<Option<String>> {
        self.private
            .as_ref()
            .map(|p| serde_json::to_string(&p.jwks))
            .transpose()
            .map_err(Into::into)
    }
}

fn shell(s: &Setup<'_>) -> String {
    let f = s.facts;
    let location = || [flag("project", &s.project), flag("location", "global")];
    let mut out = comment(&format!(
        "keyfed trust: the Google Cloud side of target \"{}\" (provider {}).",
        f.target, s.gcp.provider
    ));
    out.push('\n');
    out += &comment("1. The APIs workload identity federation uses, once per project.");
    out += &command(
        &["gcloud services enable".to_owned()],
        &SERVICES
            .iter()
            .map(|s| (*s).to_owned())
            .chain([flag("project", &s.project)])
            .collect::<Vec<_>>(),
    );
    out.push('\n');
    out += &comment("2. The workload identity pool, once per pool (skip it if it exists).");
    out += &command(
        &[
            "gcloud iam workload-identity-pools create".to_owned(),
            sh(&s.pool_id),
        ],
        &location(),
    );
    out.push('\n');
    out += &comment(
        "3. The pool's OIDC provider for the issuer, once per issuer: tokens with this audience,\n   \
         their sub taken as google.subject.",
    );
    let mut args = location().to_vec();
    args.extend([
        flag("workload-identity-pool", &s.pool_id),
        flag("issuer-uri", &f.issuer),
        // gcloud splits a list flag on commas; an audience holding one takes its other form.
        flag("allowed-audiences", &gcloud_list(&[&f.audience])),
        flag("attribute-mapping", &format!("{}={}", MAPPING.0, MAPPING.1)),
    ]);
    if let Some(private) = &s.private {
        let file = private.file.as_deref().unwrap_or_default();
        out += &comment(&format!(
            "   Google cannot fetch the issuer's keys: {}.\n   \
             It reads them from {file}, which keyfed wrote. When Keycloak's keys change,\n   \
             run keyfed trust again and upload the new file with\n   \
             gcloud iam workload-identity-pools providers update-oidc … --jwk-json-path={}",
            private.why,
            sh(file)
        ));
        args.push(flag("jwk-json-path", file));
    }
    out += &command(
        &[
            "gcloud iam workload-identity-pools providers create-oidc".to_owned(),
            sh(&s.provider_id),
        ],
        &args,
    );
    out.push('\n');
    match &s.gcp.service_account {
        Some(sa) => {
            out += &comment(
                "4. This host's federated principal (the token's sub) may impersonate the service\n   \
                 account.",
            );
            if !s.gcp.delegates.is_empty() {
                out += &comment(
                    "   With delegates, each account of the chain also needs\n   \
                     roles/iam.serviceAccountTokenCreator on the next one.",
                );
            }
            out += &command(
                &[
                    "gcloud iam service-accounts add-iam-policy-binding".to_owned(),
                    sh(sa),
                ],
                &[flag("role", ROLE), flag("member", &s.principal)],
            );
        }
        None => {
            out += &comment(&format!(
                "4. No service_account: Google's APIs see this host as the principal\n   \
                 {}\n   \
                 Grant it the roles it needs where it needs them, e.g.:\n   \
                 gcloud projects add-iam-policy-binding {} --role=ROLE --member={}",
                s.principal,
                sh(&s.project),
                sh(&s.principal)
            ));
        }
    }
    out.push('\n');
    out += &built_from(f);
    out
}

/// `--format json`: the `services` to enable, the REST bodies, `pool` and `provider` each with the `name` to create and
/// its `body`, the `principal`, and the `binding` on the service account (null without one).
#[derive(Serialize)]
struct Document<'a> {
    services: [&'static str; 4],
    pool: Value,
    provider: Value,
    principal: &'a str,
    binding: Option<Value>,
}

fn json(s: &Setup<'_>) -> anyhow::Result<String> {
    let f = s.facts;
    let mut oidc = json!({
        "issuerUri": f.issuer,
        "allowedAudiences": [f.audience],
    });
    if let Some(text) = s.jwks_text()? {
        oidc["jwksJson"] = text.into();
    }
    let document = Document {
        services: SERVICES,
        pool: json!({"name": s.pool_name, "body": {}}),
        provider: json!({
            "name": s.gcp.provider,
            "body": {
                "attributeMapping": {MAPPING.0: MAPPING.1},
                "oidc": oidc,
            },
        }),
        principal: &s.principal,
        binding: s.gcp.service_account.as_deref().map(|sa| {
            json!({
                "resource": s.service_account_resource(sa),
                "role": ROLE,
                "member": s.principal,
            })
        }),
    };
    Ok(serde_json::to_string_pretty(&document)? + "\n")
}

fn terraform(s: &Setup<'_>) -> anyhow::Result<String> {
    let f = s.facts;
    let l = label(&f.target);
    let mut out = comment(&format!(
        "keyfed trust: the Google Cloud side of target \"{}\" (provider {}).",
        f.target, s.gcp.provider
    ));
    out.push('\n');
    out += &required_providers(&[&GOOGLE]);
    let services: Vec<String> = SERVICES.iter().map(|s| hcl(s)).collect();
    out += &comment("The APIs workload identity federation uses.");
    out += &format!(
        "resource \"google_project_service\" \"{l}\" {{\n  \
         for_each           = toset([{}])\n  \
         project            = {}\n  \
         service            = each.value\n  \
         disable_on_destroy = false\n}}\n\n",
        services.join(", "),
        hcl(&s.project),
    );
    out += &format!(
        "resource \"google_iam_workload_identity_pool\" \"{l}\" {{\n  \
         project                   = {}\n  \
         workload_identity_pool_id = {}\n}}\n\n",
        hcl(&s.project),
        hcl(&s.pool_id),
    );
    let jwks = match s.jwks_text()? {
        Some(text) => format!("    jwks_json         = {}\n", hcl(&text)),
        None => String::new(),
    };
    if let Some(private) = &s.private {
        out += &comment(&format!(
            "Google cannot fetch the issuer's keys: {}.\n\
             jwks_json carries them; when Keycloak's keys change, run keyfed trust again.",
            private.why
        ));
    }
    out += &format!(
        "resource \"google_iam_workload_identity_pool_provider\" \"{l}\" {{\n  \
         project                            = {}\n  \
         workload_identity_pool_id          = google_iam_workload_identity_pool.{l}.workload_identity_pool_id\n  \
         workload_identity_pool_provider_id = {}\n  \
         attribute_mapping = {{\n    {} = {}\n  }}\n  \
         oidc {{\n    \
         issuer_uri        = {}\n    \
         allowed_audiences = [{}]\n{jwks}  }}\n}}\n\n",
        hcl(&s.project),
        hcl(&s.provider_id),
        hcl(MAPPING.0),
        hcl(MAPPING.1),
        hcl(&f.issuer),
        hcl(&f.audience),
    );
    match &s.gcp.service_account {
        Some(sa) => {
            out += &format!(
                "resource \"google_service_account_iam_member\" \"{l}\" {{\n  \
                 service_account_id = {}\n  \
                 role               = {}\n  \
                 member             = {}\n}}\n\n",
                hcl(&s.service_account_resource(sa)),
                hcl(ROLE),
                hcl(&s.principal),
            );
        }
        None => {
            out += &comment(
                "No service_account: Google's APIs see this host as this principal; grant it\n\
                 the roles it needs.",
            );
            out += &format!(
                "output \"{l}_principal\" {{\n  value = {}\n}}\n\n",
                hcl(&s.principal)
            );
        }
    }
    out += &built_from(f);
    Ok(out)
}
