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
//!
//! A target may hold keyed variants of its credential besides the main one — an access token
//! for other scopes, an ID token for an audience, a token for another resource — each named by
//! a [`SlotKey`]. A cloud says which variants it issues ([`Exchange::has_slot`]) and issues them
//! ([`Exchange::exchange_slot`]); by default it has none, as AWS, whose role is the whole
//! credential.

use std::collections::BTreeSet;
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

/// Which variant ("slot") of a target's credential is wanted, besides the main one (no slot).
/// The engine keeps one credential per key and compares keys for equality only; the cloud
/// decides what a key means. The values come from local consumers (a metadata request's
/// `?scopes=`), so they show escaped wherever a key is displayed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SlotKey {
    /// An access token for these scopes (a set, so `a,b` and `b,a` are one slot): GCE's
    /// `token?scopes=`.
    Scopes(BTreeSet<String>),
    /// An ID token for `audience`; `full` asks for the fuller claim set (GCE's `format=full`).
    IdToken { audience: String, full: bool },
    /// An access token for one resource: Azure IMDS's `resource=`.
    Resource(String),
    /// The issuer's token itself, kept fresh for consumers that make the exchange themselves
    /// (Google's external_account files, Azure's federated token file). Every cloud that
    /// exchanges a subject token has it; the host issues it without calling the cloud.
    SubjectToken,
}

impl SlotKey {
    /// The access-token slot for `scopes`, however they were ordered or repeated.
    pub fn scopes<S: Into<String>>(scopes: impl IntoIterator<Item = S>) -> Self {
        Self::Scopes(scopes.into_iter().map(Into::into).collect())
    }
}

/// How a slot reads in status, logs and errors: `scopes "a" "b"`, `ID token for "aud"`.
impl fmt::Display for SlotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scopes(scopes) => {
                f.write_str("scopes")?;
                for scope in scopes {
                    write!(f, " {scope:?}")?;
                }
                Ok(())
            }
            Self::IdToken {
                audience,
                full: false,
            } => write!(f, "ID token for {audience:?}"),
            Self::IdToken {
                audience,
                full: true,
            } => write!(f, "ID token (full) for {audience:?}"),
            Self::Resource(resource) => write!(f, "resource {resource:?}"),
            Self::SubjectToken => f.write_str("the subject token"),
        }
    }
}

/// One cloud's token exchange: a subject token in, a credential with an exact expiry out. An
/// implementation holds everything else the call needs (client, role or audience, duration)
/// and makes exactly one upstream attempt per call: when to retry is the caller's business.
pub trait Exchange: fmt::Debug + Send + Sync {
    type Credential: Expiring + Send + 'static;
    type Error: Advise + Send + Sync + 'static;

    /// One exchange for the main credential. The subject token goes to the cloud and nowhere
    /// else: it never appears in an error or a log line.
    fn exchange<'a>(
        &'a self,
        subject_token: &'a SecretString,
    ) -> impl Future<Output = Result<Self::Credential, Self::Error>> + Send + 'a;

    /// Whether this cloud issues the variant `slot`. Asked before any upstream call, so a
    /// variant the cloud does not have is refused without troubling the issuer. None by
    /// default: a cloud with keyed variants overrides this and [`Exchange::exchange_slot`].
    fn has_slot(&self, slot: &SlotKey) -> bool {
        let _ = slot;
        false
    }

    /// One exchange for the variant `slot`, under the same rules as [`Exchange::exchange`];
    /// `None` when this cloud has no such variant (the default: the caller refuses the request
    /// and makes no upstream call), so a cloud without variants never hands out its main
    /// credential for one.
    fn exchange_slot<'a>(
        &'a self,
        subject_token: &'a SecretString,
        slot: &'a SlotKey,
    ) -> Option<impl Future<Output = Result<Self::Credential, Self::Error>> + Send + 'a> {
        let _ = (subject_token, slot);
        None::<std::future::Ready<Result<Self::Credential, Self::Error>>>
    }
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

    /// issue 9: a scope set is one slot however it was written, and a key from a consumer reads
    /// escaped (no line breaks of its own in a log line).
    #[test]
    fn issue_9_slot_keys_are_canonical_and_read_escaped() {
        assert_eq!(
            SlotKey::scopes(["b", "a", "b"]),
            SlotKey::scopes(["a", "b"])
        );
        assert_eq!(SlotKey::scopes(["b", "a"]).to_string(), r#"scopes "a" "b""#);
        // A consumer's line break stays a visible escape, not a forged log line.
        let audience = SlotKey::IdToken {
            audience: "https://x\nforged: line".to_owned(),
            full: false,
        };
        assert_eq!(
            audience.to_string(),
            r#"ID token for "https://x\nforged: line""#
        );
        assert!(!audience.to_string().contains('\n'));
        assert_ne!(
            SlotKey::IdToken {
                audience: "a".to_owned(),
                full: true
            },
            SlotKey::IdToken {
                audience: "a".to_owned(),
                full: false
            }
        );
    }
}
