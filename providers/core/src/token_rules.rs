//! What a cloud requires of the subject token it is given, beyond a signature it can verify:
//! which algorithms and header it takes, what its `iss` may look like, how big its `sub` and the
//! token may be, how long it may live, and how the cloud gets the issuer's keys. Each cloud's
//! crate states its own ([`SubjectTokenRules`] constants beside its configuration), from that
//! cloud's documentation; `keyfed doctor` checks a token against them before the cloud does, so
//! an operator learns which claim is wrong and why rather than the cloud's one-line refusal.

use std::time::Duration;

/// One cloud's rules for the subject token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectTokenRules {
    /// The cloud's service as messages name it: "AWS STS", "Google STS", "Entra ID".
    pub cloud: &'static str,
    /// Where the cloud's setup says which audiences it accepts, for a fix: "the IAM OIDC
    /// identity provider's audiences (client ID list)".
    pub audience_setting: &'static str,
    /// The `alg` values the cloud takes.
    pub algorithms: &'static [&'static str],
    /// Whether the header must name its key (`kid`); without one, the cloud can only use a
    /// JWKS holding a single key.
    pub kid_required: bool,
    /// Whether the issuer URL may name a port.
    pub issuer_port_allowed: bool,
    /// The most bytes `sub` may have (once mapped).
    pub max_subject_bytes: Option<usize>,
    /// The longest `exp − iat` the cloud takes.
    pub max_lifetime: Option<Duration>,
    /// The longest token, in bytes, the cloud takes.
    pub max_token_bytes: Option<usize>,
    /// How the cloud can be given the issuer's keys instead of fetching them from the internet,
    /// when it can.
    pub uploaded_jwks: Option<&'static str>,
}
