//! The contract between keyfed's engine and a cloud: a provider crate trades a subject token
//! (the issuer's JWT) for a credential with an exact expiry ([`Exchange`]), and every error a
//! provider or the issuer's client returns says what its caller should do next ([`Advice`],
//! through [`Advise`]): back off and retry, fetch a fresh subject token and retry once, or stop
//! until someone changes keyfed's configuration, the issuer or the cloud ([`Side`]).
//!
//! The credential is an associated type rather than keyfed's own credential enum: provider
//! crates know nothing of the host, so the host turns each provider's credential into its enum
//! (`From`), and a new cloud adds an implementation here and a variant there without touching
//! the engine. The engine needs only [`Expiring`] of it: the exact moment it stops working.

use std::fmt;
use std::future::Future;
use std::time::SystemTime;

use crate::secret::SecretString;

/// Who has to change something before a stopped target can work again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// keyfed's own configuration: a setting, or a key or secret file it reads.
    Config,
    /// The issuer: the Keycloak realm, client, scope or key settings.
    Issuer,
    /// The cloud: its identity provider, role, trust policy or permissions.
    Cloud,
}

impl Side {
    /// A short label for metrics (`side="cloud"`) and JSON.
    pub fn label(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Issuer => "issuer",
            Self::Cloud => "cloud",
        }
    }
}

/// How a stopped target names the side: "stopped: needs a change on the cloud side".
impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Config => "keyfed's configuration",
            Self::Issuer => "the Keycloak side",
            Self::Cloud => "the cloud side",
        })
    }
}

/// What the caller should do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advice {
    /// A passing trouble (network, timeout, throttling, a 5xx): retry with exponential backoff.
    Backoff,
    /// The cloud did not accept this subject token (expired in transit, signed with a key it
    /// had not seen yet): fetch a fresh one from the issuer and retry once. Refused again, the
    /// exchange stops with [`Side::Cloud`]: the cloud does not take the issuer's tokens.
    FreshSubjectToken,
    /// Retrying cannot help until `side` changes: retry only rarely, and report it.
    Stop { side: Side },
}

impl Advice {
    /// The side that must change, when the advice is to stop.
    pub fn stopped(self) -> Option<Side> {
        match self {
            Self::Stop { side } => Some(side),
            Self::Backoff | Self::FreshSubjectToken => None,
        }
    }
}

/// How the decision reads in a log line.
impl fmt::Display for Advice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Backoff => f.write_str("retry with backoff"),
            Self::FreshSubjectToken => f.write_str("retry once with a fresh subject token"),
            Self::Stop { side } => write!(f, "stop until {side} changes"),
        }
    }
}

/// An error that says what its caller should do about it.
pub trait Advise: std::error::Error {
    fn advice(&self) -> Advice;
}

/// A credential that stops working at a known moment.
pub trait Expiring {
    fn expires_at(&self) -> SystemTime;
}

/// One cloud's token exchange: a subject token in, a credential with an exact expiry out. An
/// implementation holds everything else the call needs (client, role or audience, duration)
/// and makes exactly one upstream attempt per call: when to retry is the caller's business.
pub trait Exchange: fmt::Debug + Send + Sync {
    type Credential: Expiring + Send + 'static;
    type Error: Advise + Send + Sync + 'static;

    /// One exchange. The subject token goes to the cloud and nowhere else: it never appears in
    /// an error or a log line.
    fn exchange<'a>(
        &'a self,
        subject_token: &'a SecretString,
    ) -> impl Future<Output = Result<Self::Credential, Self::Error>> + Send + 'a;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_and_advice_read_as_the_operator_needs() {
        assert_eq!(Side::Cloud.to_string(), "the cloud side");
        assert_eq!(Side::Issuer.to_string(), "the Keycloak side");
        assert_eq!(Side::Config.to_string(), "keyfed's configuration");
        assert_eq!(Side::Cloud.label(), "cloud");
        let stop = Advice::Stop { side: Side::Issuer };
        assert_eq!(stop.to_string(), "stop until the Keycloak side changes");
        assert_eq!(stop.stopped(), Some(Side::Issuer));
        assert_eq!(Advice::Backoff.stopped(), None);
        assert_eq!(Advice::FreshSubjectToken.stopped(), None);
    }
}
