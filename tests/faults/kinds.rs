//! The faults of the matrix: which side suffers one (Keycloak, or every cloud at once), what
//! kind of trouble it is, and how an emulator is made to show it ([`Struck`], described by each
//! upstream's own module).

use std::time::Duration;

use keyfed_core::emulator::{Control, Fault, TestCa};

use super::clock::Skewed;
use super::gcp::Api;
use super::upstreams::{Clocks, LIFETIME, TIMEOUT, Upstreams};
use super::{aws, azure, gcp, keycloak};

/// Which side a fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Keycloak: every target fails, the bare token target included.
    Keycloak,
    /// AWS STS, Google and Entra at once: the `token` target, which needs no cloud, must not
    /// notice.
    Clouds,
}

/// A kind of trouble an upstream can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The port is closed: connections are refused, open ones cut.
    Down,
    /// Answers come later than keyfed's timeout.
    Slow,
    /// The upstream's own "unavailable" answer (HTTP 503).
    ServerError,
    /// The upstream's own throttling answer (429, or STS's `Throttling`).
    Throttled,
    /// A 200 whose JSON or XML document ends mid-way (properly framed).
    Malformed,
    /// A body cut off in transit: fewer bytes than its Content-Length, then the connection
    /// closes.
    Truncated,
    /// The connection is reset (TCP RST) instead of an answer.
    Reset,
    /// A certificate keyfed must refuse: Keycloak's from a CA keyfed does not trust, the
    /// clouds' from the trusted CA but for another name.
    Tls,
    /// The upstream's clock is off: Keycloak's so far behind that its tokens arrive expired,
    /// the clouds' so far ahead that every token looks expired to them. Only fixing a clock
    /// helps, so keyfed stops the targets on that side.
    ClockSkew,
}

impl Kind {
    /// How the README's table names it.
    pub fn title(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Slow => "slower than the timeout",
            Self::ServerError => "5xx",
            Self::Throttled => "throttling",
            Self::Malformed => "malformed JSON/XML",
            Self::Truncated => "truncated body",
            Self::Reset => "connection reset",
            Self::Tls => "TLS failure",
            Self::ClockSkew => "clock skew",
        }
    }

    /// What keyfed's reason for a failure of this kind says, whichever upstream (any one of
    /// these words): an operator must recognise the trouble from `status` and `/readyz`.
    pub fn words(self) -> &'static [&'static str] {
        match self {
            Self::Down => &["Connection refused"],
            Self::Slow => &["timed out", "no answer within"],
            Self::ServerError => &["HTTP 503"],
            Self::Throttled => &["HTTP 429", "Throttling"],
            Self::Malformed => &["not valid", "not a valid", "not the expected JSON"],
            Self::Truncated => &["error reading a body", "cut off"],
            Self::Reset => &["Connection reset"],
            Self::Tls => &["invalid peer certificate"],
            Self::ClockSkew => &[
                "expired",
                "stale to sign-in",
                "not within its valid time range",
            ],
        }
    }

    /// The side keyfed stops the targets on (`status`'s words and the metric's label), when
    /// only a change there helps.
    pub fn stops(self, side: Side) -> Option<Stop> {
        match (self, side) {
            (Self::ClockSkew, Side::Keycloak) => Some(Stop {
                side: "the Keycloak side",
                label: "issuer",
            }),
            (Self::ClockSkew, Side::Clouds) => Some(Stop {
                side: "the cloud side",
                label: "cloud",
            }),
            _ => None,
        }
    }

    /// The Google API a request-level fault strikes: the matrix alternates, so that both of
    /// Google's APIs meet most kinds of trouble between the Keycloak and cloud scenarios…
    /// (a fault on the whole server strikes both).
    fn google_api(self) -> Api {
        match self {
            Self::Slow | Self::Throttled | Self::Truncated | Self::ClockSkew => Api::Sts,
            Self::Down | Self::ServerError | Self::Malformed | Self::Reset | Self::Tls => Api::Iam,
        }
    }
}

/// Where a stopped target must be changed, as `status` and the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    pub side: &'static str,
    pub label: &'static str,
}

/// How far the clocks are off the real time: Keycloak's behind by more than its tokens live, the clouds'
/// ahead by more than a token lives plus the skew each allows (STS and Entra 5 minutes, Google
/// one).
const KEYCLOAK_BEHIND: i64 = -(LIFETIME.as_secs() as i64) - 60;
const CLOUDS_AHEAD: i64 = LIFETIME.as_secs() as i64 + 300 + 60;

/// How long a slow upstream takes to answer: well past keyfed's timeout.
const SLOW: Duration = Duration::from_secs(5 * TIMEOUT.as_secs());

/// One upstream a fault strikes: its emulator's control, the requests a request-level fault
/// strikes (paths holding `path`), and its own answers when failing and when throttling.
pub struct Struck {
    pub name: &'static str,
    pub control: Control,
    pub path: &'static str,
    pub server_error: Fault,
    pub throttled: Fault,
}

/// Presents a TLS failure's certificate on an emulator (`true`), or the emulator's own again.
type Present = Box<dyn Fn(&Control, bool) + Send + Sync>;

/// A fault of one kind on one side, ready to strike and to heal.
pub struct Trouble {
    pub side: Side,
    pub kind: Kind,
    pub struck: Vec<Struck>,
    /// Presents the certificate of a TLS failure on an emulator (`true`), or its own again.
    present: Option<Present>,
    /// The clocks a clock skew sets, each with its offset in trouble and its own.
    skews: Vec<(Skewed, i64, i64)>,
}

impl Trouble {
    pub fn new(up: &Upstreams, side: Side, kind: Kind) -> Self {
        let struck = match side {
            Side::Keycloak => vec![keycloak::struck(up)],
            Side::Clouds => vec![
                aws::struck(up),
                gcp::struck(up, kind.google_api()),
                azure::struck(up),
            ],
        };
        let present = (kind == Kind::Tls).then(|| {
            let certificate = match side {
                Side::Keycloak => TestCa::new()
                    .unwrap_or_else(|e| panic!("another CA: {e}"))
                    .server_config(),
                Side::Clouds => up
                    .ca
                    .server_config_for(&["wrong-name.invalid"])
                    .unwrap_or_else(|e| panic!("a certificate for another name: {e}")),
            };
            let present: Present = Box::new(move |control, on| {
                control.present_certificate(on.then(|| certificate.clone()));
            });
            present
        });
        let skews = if kind == Kind::ClockSkew {
            let Clocks {
                keycloak,
                sts,
                gcp,
                entra,
            } = up.clocks.clone();
            // Set against the real time, whatever the clock's own offset (STS's runs behind).
            let skew = |clock: Skewed, to: i64| {
                let own = clock.offset();
                (clock, to, own)
            };
            match side {
                Side::Keycloak => vec![skew(keycloak, KEYCLOAK_BEHIND)],
                Side::Clouds => vec![
                    skew(sts, CLOUDS_AHEAD),
                    skew(gcp, CLOUDS_AHEAD),
                    skew(entra, CLOUDS_AHEAD),
                ],
            }
        } else {
            Vec::new()
        };
        Self {
            side,
            kind,
            struck,
            present,
            skews,
        }
    }

    /// "Keycloak", or "AWS STS, Google IAM, Entra".
    pub fn names(&self) -> String {
        let names: Vec<&str> = self
            .struck
            .iter()
            .map(|s| match self.kind {
                // A fault on Google's whole server strikes both of its APIs.
                Kind::Down | Kind::Tls if s.name.starts_with("Google") => "Google",
                _ => s.name,
            })
            .collect();
        names.join(", ")
    }

    /// Puts every struck upstream in trouble, until [`Trouble::heal`].
    pub fn strike(&self) {
        for (clock, skewed, _) in &self.skews {
            clock.set(*skewed);
        }
        for s in &self.struck {
            let fault = match self.kind {
                Kind::Down => {
                    s.control.set_down(true);
                    continue;
                }
                Kind::Tls => {
                    if let Some(present) = &self.present {
                        present(&s.control, true);
                    }
                    continue;
                }
                Kind::Slow => Fault::Delay(SLOW),
                Kind::ServerError => s.server_error.clone(),
                Kind::Throttled => s.throttled.clone(),
                Kind::Malformed => Fault::Garbled,
                Kind::Truncated => Fault::Truncated,
                Kind::Reset => Fault::Reset,
                Kind::ClockSkew => continue,
            };
            s.control.inject(s.path, fault, None);
        }
    }

    pub fn heal(&self) {
        for (clock, _, own) in &self.skews {
            clock.set(*own);
        }
        for s in &self.struck {
            s.control.clear_faults();
            s.control.set_down(false);
            if let Some(present) = &self.present {
                present(&s.control, false);
            }
        }
    }

    /// Requests that reached the struck upstreams so far (a request refused by a closed port
    /// never arrives, and is not counted).
    pub fn hits(&self) -> u64 {
        self.struck.iter().map(|s| s.control.hits(s.path)).sum()
    }

    /// The targets this trouble reaches.
    pub fn reaches(&self, target: &str) -> bool {
        reaches(self.side, target)
    }
}

/// Whether trouble on `side` reaches `target`: Keycloak's reaches every target, the clouds'
/// every one but `token`.
pub fn reaches(side: Side, target: &str) -> bool {
    side == Side::Keycloak || target != "token"
}
