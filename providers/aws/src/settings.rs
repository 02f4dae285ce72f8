//! What the client needs to know about one STS endpoint and one role to assume, already
//! validated by the caller (keyfed's configuration layer builds these from a target's `aws`
//! table: `region`, `endpoint_url`, `fips`, `role_arn`, `session_name`, `duration`, `policy`,
//! `policy_arns`).

use std::time::Duration;

use keyfed_core::http::HttpSettings;
use url::Url;

/// Where and how to reach STS.
#[derive(Debug, Clone)]
pub struct StsSettings {
    /// The region whose STS endpoint is used, e.g. `eu-west-1` (`https://sts.eu-west-1.amazonaws.com`).
    pub region: String,
    /// Replaces the regional endpoint: a VPC endpoint, moto, or keyfed's emulator. Plain
    /// `http://` only to loopback unless `http.allow_insecure_http` is set.
    pub endpoint_url: Option<Url>,
    /// Use the region's FIPS endpoint (`sts-fips.<region>.amazonaws.com`); not combinable with
    /// `endpoint_url`.
    pub fips: bool,
    /// CA bundle and timeouts. `timeout` bounds each AssumeRoleWithWebIdentity call as a whole.
    pub http: HttpSettings,
}

/// One AssumeRoleWithWebIdentity call's parameters, apart from the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRoleRequest {
    /// `arn:aws:iam::<account>:role/<name>`.
    pub role_arn: String,
    /// `RoleSessionName`: 2–64 characters of `[A-Za-z0-9_+=,.@-]`; see [`crate::session_name`].
    pub session_name: String,
    /// `DurationSeconds`, whole seconds, 900–43200 and at most the role's MaxSessionDuration.
    pub duration: Duration,
    /// An inline session policy (JSON) that narrows the role's permissions.
    pub policy: Option<String>,
    /// Managed policies that narrow the role's permissions.
    pub policy_arns: Vec<String>,
}

/// The range STS accepts for `DurationSeconds`.
pub(crate) const MIN_DURATION_SECS: u64 = 900;
pub(crate) const MAX_DURATION_SECS: u64 = 43_200;
