//! The exchange itself: the checked token traded with the target's cloud exactly as the daemon
//! would (AWS STS, Google STS and IAM Credentials, Entra ID), once, with no retry, and within
//! the engine's attempt timeout. A refusal shows the cloud's own words and the fix the
//! provider's error carries (an AADSTS70021 names the issuer, subject and audience a federated
//! credential must have; an "Incorrect token audience" the audience to add to the IAM OIDC
//! provider; …). The credential is described, never shown, and nothing is written.

use std::time::Duration;

use keyfed_aws::{StsClient, StsExchange};
use keyfed_azure::{EntraClient, EntraExchange};
use keyfed_core::SecretString;
use keyfed_core::clock::rfc3339;
use keyfed_core::exchange::Expiring as _;
use keyfed_gcp::{GcpClient, GcpExchange};

use crate::config::Exchange;
use crate::credential::Credential;

use super::report::Check;

/// Trades `token` for the target's credential; `None` for a target with no exchange.
pub async fn check(exchange: &Exchange, token: &SecretString, timeout: Duration) -> Option<Check> {
    let outcome = match exchange {
        Exchange::Token => return None,
        Exchange::Aws(aws) => match StsClient::new(aws.sts_settings()) {
            Ok(sts) => {
                let request = aws.assume_role_request();
                trade(StsExchange { sts, request }, token, timeout).await
            }
            Err(e) => Err(e.to_string()),
        },
        Exchange::Gcp(gcp) => match GcpClient::new((**gcp).clone()) {
            Ok(client) => trade(GcpExchange { client }, token, timeout).await,
            Err(e) => Err(e.to_string()),
        },
        Exchange::Azure(azure) => match EntraClient::new((**azure).clone()) {
            Ok(client) => trade(EntraExchange { client }, token, timeout).await,
            Err(e) => Err(e.to_string()),
        },
    };
    Some(match outcome {
        Ok(detail) => Check::ok("exchange", detail),
        Err(error) => Check::fail_from(
            "exchange",
            &error,
            "as the cloud's words say: the claims.* checks above show what the token carries",
        ),
    })
}

/// One exchange: what was issued, or the error's text (its hint included).
async fn trade<E>(exchange: E, token: &SecretString, timeout: Duration) -> Result<String, String>
where
    E: keyfed_core::exchange::Exchange,
    E::Credential: Into<Credential>,
{
    match tokio::time::timeout(timeout, exchange.exchange(token)).await {
        Ok(Ok(issued)) => {
            let expires = rfc3339(issued.expires_at());
            let credential: Credential = issued.into();
            Ok(format!(
                "{}, expires {expires} (not shown, not written)",
                credential.describe()
            ))
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer within {} s (the engine's attempt_timeout)\n  hint: check the network path to the cloud (proxy: HTTPS_PROXY / NO_PROXY)",
            timeout.as_secs()
        )),
    }
}
