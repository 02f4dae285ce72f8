//! The AWS side of the fixtures: an STS emulator trusting the standard realm for the role
//! [`ROLE`], AWS targets against it, and the endpoint configuration that serves one on the
//! container and IMDS faces.

use std::sync::Arc;

use keyfed_aws::emulator::{OidcProvider, Role, StsEmulator};

use super::{AWS_AUD, Fixture, free_port};

/// The role the standard STS emulator trusts the standard realm for.
pub const ROLE: &str = "app";

impl Fixture {
    /// Starts an STS emulator trusting the Keycloak emulator for audience sts.amazonaws.com.
    pub async fn start_sts(&mut self) -> &StsEmulator {
        let issuer = self.keycloak().issuer_url();
        let sts = StsEmulator::builder()
            .provider(OidcProvider::new(&issuer, &[AWS_AUD]))
            .role(Role::new(ROLE, &issuer))
            .start()
            .await
            .unwrap_or_else(|e| panic!("sts emulator: {e}"));
        let sts = Arc::new(sts);
        self.known.add_emulator(&sts);
        self.sts.insert(sts)
    }

    /// A fixture with the standard realm's Keycloak emulator and an STS emulator trusting it.
    pub async fn aws() -> Self {
        let mut fx = Self::new();
        fx.start_default().await;
        fx.start_sts().await;
        fx
    }

    pub fn sts(&self) -> &StsEmulator {
        self.sts
            .as_ref()
            .unwrap_or_else(|| panic!("start the STS emulator first"))
    }

    /// An AWS target against the STS emulator, with `outputs` (a TOML array body).
    pub fn aws_target(&self, name: &str, outputs: &str) -> String {
        format!(
            "[targets.{name}]\nissuer = \"corp\"\nscope = \"aws-audience\"\n\
             aws = {{ role_arn = \"{}\", region = \"us-east-1\", endpoint_url = \"{}\", session_name = \"{{target}}-{{hostname}}\" }}\n\
             outputs = [{outputs}]\n",
            self.sts().role_arn(ROLE),
            self.sts().endpoint_url()
        )
    }

    /// The standard issuer, an AWS target "aws" served on the container face at `/aws/app` and
    /// on IMDS, `extra_target_keys` added to that target, and an `[endpoint]` on a free port.
    /// Returns the endpoint's base URL.
    pub fn endpoint_config(&self, extra_target_keys: &str, extra_endpoint_keys: &str) -> String {
        let port = free_port();
        let target =
            self.aws_target("aws", "") + "container_path = \"/aws/app\"\n" + extra_target_keys;
        self.daemon_config(&format!(
            "{target}\n[endpoint]\nlisten = [\"127.0.0.1:{port}\"]\nimds_target = \"aws\"\ncontainer_token_file = \"container-token\"\n{extra_endpoint_keys}"
        ));
        format!("http://127.0.0.1:{port}")
    }

    pub fn container_token(&self) -> String {
        std::fs::read_to_string(self.path("container-token")).unwrap_or_else(|e| panic!("{e}"))
    }
}
