//! Identity-header pairs (issue 12): short-lived `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` pairs
//! that `keyfed exec` and `keyfed env` ask the daemon for over the control socket
//! (`Request::Environment`) and hand to a command's Azure SDK. Each pair's header is a random
//! secret bound to ONE Azure target — as configured when it was issued: its tenant and client
//! ID — and to the uid that asked: the App Service face (`app_service.rs`) answers a request
//! carrying it only from that uid, and only with that target's tokens whatever identity the
//! request names (`azure::bound_token`). The identity header file's secret keeps working beside
//! them, unchanged.
//!
//! A pair lives while the control connection that asked for it stays open (`keyfed exec`
//! holds it for the command's life, and the kernel closes it when keyfed dies however it dies,
//! so nothing stays valid behind it), or until a deadline (`keyfed env`: the target's current
//! token's expiry, at most [`MAX_DEADLINE`] ahead). `keyfed env` asked again by the same uid
//! for the same target gets the live deadline pair again, its deadline moved to the later of
//! the two, so a shell hook that runs it at every prompt holds one pair, not one per prompt.
//! Pairs live in the daemon's memory only: a restart ends them all. At most [`PER_USER`] are
//! live per uid and [`TOTAL`] in all; past that a new one is refused, never an old one dropped.
//!
//! Headers are looked up by their SHA-256 digest: a request's header is hashed and found in
//! one map look-up, so neither the number of live pairs nor how much of a header matches shows
//! in the time an answer takes (what a look-up compares is a digest, which says nothing of the
//! header it came from).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use keyfed_core::clock::Clock;
use keyfed_core::{ExposeSecret as _, SecretString};

use crate::config::EndpointSettings;

/// Live pairs per uid: a user's loop of `keyfed exec` can hold this many control connections
/// (out of the control socket's 128 per user), leaving the rest for its other requests.
/// `keyfed env` adds at most one per Azure target (see the module's documentation).
pub const PER_USER: usize = 32;
/// Live pairs in all: far more than the control socket's 256 connections can hold, so that
/// deadline pairs of many users (one per user and target) never keep anyone from a pair.
pub const TOTAL: usize = 4096;
/// The longest a deadline-bound pair lives, whatever its token's expiry.
pub const MAX_DEADLINE: Duration = Duration::from_secs(12 * 3600);

/// How long a pair stays valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// While the [`Held`] handle lives (the asking connection is open).
    Held,
    Deadline(SystemTime),
}

/// What a pair is bound to: one Azure target as it was configured when the pair was issued,
/// and the uid that asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub target: String,
    /// The target's tenant and client ID: a reload that points the target at another app
    /// does not carry the pair over to it.
    pub tenant_id: String,
    pub client_id: String,
    pub uid: u32,
}

/// A header's SHA-256 digest: the key pairs are found by.
type Digest = [u8; 32];

struct Entry {
    /// Kept to hand a deadline pair out again to its uid.
    header: SecretString,
    binding: Binding,
    until: Until,
}

/// Live pairs in each kind, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub held: usize,
    pub deadline: usize,
}

/// Every live pair, and where the App Service face listens.
pub struct Pairs {
    /// `IDENTITY_ENDPOINT`, or why there is none.
    endpoint: Result<String, String>,
    clock: Arc<dyn Clock>,
    live: Mutex<HashMap<Digest, Entry>>,
}

impl std::fmt::Debug for Pairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pairs")
            .field("endpoint", &self.endpoint)
            .field("live", &self.lock().len())
            .finish_non_exhaustive()
    }
}

/// A pair handed out: its header (to send once, to the asking client), how long it lives (a
/// deadline capped at [`MAX_DEADLINE`] from now) and, for [`Until::Held`], the handle that ends
/// it when dropped.
pub struct Issued {
    pub header: SecretString,
    pub until: Until,
    pub held: Option<Held>,
}

/// Ends a held pair when dropped.
pub struct Held {
    pairs: Arc<Pairs>,
    digest: Digest,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").finish_non_exhaustive()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.pairs.lock().remove(&self.digest);
    }
}

/// Why no pair was issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    NoFace(String),
    #[error(
        "uid {uid} holds {PER_USER} identity headers already (keyfed exec commands running); \
         wait for one to end"
    )]
    UserFull { uid: u32 },
    #[error("the daemon holds {TOTAL} identity headers already; try again later")]
    Full,
}

impl Pairs {
    /// Pairs served by the App Service face of `endpoint` (none where it has no such face).
    pub fn new(endpoint: Option<&EndpointSettings>, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            endpoint: identity_endpoint(endpoint),
            clock,
            live: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Entry>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `IDENTITY_ENDPOINT` (`http://ADDRESS/msi/token`), or why the daemon serves none.
    pub fn endpoint(&self) -> Result<&str, Refused> {
        self.endpoint
            .as_deref()
            .map_err(|why| Refused::NoFace(why.clone()))
    }

    /// A pair bound to `binding`, valid `until` (a deadline at most [`MAX_DEADLINE`] ahead): a
    /// fresh one, or for a deadline the live deadline pair of the same binding, lasting until
    /// the later of its deadline and this one.
    pub fn issue(self: &Arc<Self>, binding: Binding, until: Until) -> Result<Issued, Refused> {
        self.endpoint()?;
        let now = self.clock.now();
        let until = match until {
            Until::Deadline(at) => Until::Deadline(at.min(now + MAX_DEADLINE)),
            Until::Held => Until::Held,
        };
        let mut live = self.lock();
        live.retain(|_, e| !expired(e, now));
        if let Until::Deadline(at) = until
            && let Some(entry) = live
                .values_mut()
                .find(|e| matches!(e.until, Until::Deadline(_)) && e.binding == binding)
        {
            if let Until::Deadline(old) = entry.until {
                entry.until = Until::Deadline(old.max(at));
            }
            return Ok(Issued {
                header: entry.header.clone(),
                until: entry.until,
                held: None,
            });
        }
        if live.len() >= TOTAL {
            return Err(Refused::Full);
        }
        let uid = binding.uid;
        if live.values().filter(|e| e.binding.uid == uid).count() >= PER_USER {
            return Err(Refused::UserFull { uid });
        }
        let header = SecretString::from(super::random_token());
        // 256 random bits: two headers with one digest would take a broken random source.
        let digest = digest(header.expose_secret().as_bytes());
        live.insert(
            digest,
            Entry {
                header: header.clone(),
                binding,
                until,
            },
        );
        let held = (until == Until::Held).then(|| Held {
            pairs: Arc::clone(self),
            digest,
        });
        Ok(Issued {
            header,
            until,
            held,
        })
    }

    /// What the live pair whose header is `given` is bound to.
    pub fn bound(&self, given: &[u8]) -> Option<Binding> {
        let digest = digest(given);
        let now = self.clock.now();
        self.lock()
            .get(&digest)
            .filter(|e| !expired(e, now))
            .map(|e| e.binding.clone())
    }

    /// Live pairs now, by kind.
    pub fn counts(&self) -> Counts {
        let now = self.clock.now();
        let mut counts = Counts::default();
        for entry in self.lock().values().filter(|e| !expired(e, now)) {
            match entry.until {
                Until::Held => counts.held += 1,
                Until::Deadline(_) => counts.deadline += 1,
            }
        }
        counts
    }
}

fn digest(header: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, header).as_ref());
    out
}

fn expired(entry: &Entry, now: SystemTime) -> bool {
    matches!(entry.until, Until::Deadline(at) if now >= at)
}

/// `http://ADDRESS/msi/token` for the first listen address serving the App Service face (an
/// unspecified address is reached on loopback), or what to configure for one.
fn identity_endpoint(endpoint: Option<&EndpointSettings>) -> Result<String, String> {
    let Some(settings) = endpoint else {
        return Err(
            "the daemon serves no local endpoint: add an [endpoint] section naming the \
                    Azure target in azure_target (for all addresses or on a listen entry), then \
                    restart keyfed run"
                .to_owned(),
        );
    };
    let Some(listen) = settings
        .listen
        .iter()
        .find(|l| l.target(super::app_service::NAME).is_some())
    else {
        return Err(
            "the daemon's endpoint serves no App Service face: name an Azure target \
                    with azure_target in [endpoint] (or on a listen entry), then restart \
                    keyfed run"
                .to_owned(),
        );
    };
    let mut address = listen.address;
    if address.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if address.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        address.set_ip(loopback);
    }
    Ok(format!(
        "http://{address}{}",
        super::app_service::TOKEN_PATH
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use keyfed_core::ManualClock;

    use super::*;
    use crate::config::Listen;

    fn settings(listen: &[(&str, Option<&str>)]) -> EndpointSettings {
        EndpointSettings {
            listen: listen
                .iter()
                .map(|(address, target)| Listen {
                    address: address.parse().unwrap_or_else(|e| panic!("{e}")),
                    targets: target
                        .iter()
                        .map(|t| (super::super::app_service::NAME, (*t).to_owned()))
                        .collect::<BTreeMap<_, _>>(),
                })
                .collect(),
            imds_v1: false,
            health_listen: None,
            container_token_file: "container-token".into(),
            container_token_group: None,
            identity_header_file: "identity-header".into(),
            identity_header_group: None,
            max_connections: 16,
            max_connections_per_user: 4,
            allowed_hosts: Vec::new(),
            request_timeout: Duration::from_secs(10),
        }
    }

    fn pairs(clock: &Arc<ManualClock>) -> Arc<Pairs> {
        let on = settings(&[("127.0.0.1:9911", Some("azure"))]);
        Pairs::new(Some(&on), Arc::clone(clock) as Arc<dyn Clock>)
    }

    /// `target` (tenant "t", client "c-<target>") for `uid`.
    fn bind(target: &str, uid: u32) -> Binding {
        Binding {
            target: target.to_owned(),
            tenant_id: "t".to_owned(),
            client_id: format!("c-{target}"),
            uid,
        }
    }

    fn issue(pairs: &Arc<Pairs>, binding: Binding, until: Until) -> Issued {
        pairs
            .issue(binding, until)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn header(issued: &Issued) -> String {
        issued.header.expose_secret().to_owned()
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn the_endpoint_is_the_first_address_with_the_face_issue_12() {
        let on = settings(&[("127.0.0.2:80", None), ("0.0.0.0:9911", Some("azure"))]);
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        let pairs = Pairs::new(Some(&on), Arc::clone(&clock));
        assert_eq!(pairs.endpoint(), Ok("http://127.0.0.1:9911/msi/token"));
        let off = Pairs::new(Some(&settings(&[("[::]:9911", None)])), Arc::clone(&clock));
        let why = off
            .endpoint()
            .map(str::to_owned)
            .unwrap_or_else(|e| e.to_string());
        assert!(
            why.contains("no App Service face") && why.contains("azure_target"),
            "{why}"
        );
        assert!(off.issue(bind("azure", 1000), Until::Held).is_err());
        let none = Pairs::new(None, clock);
        let why = none
            .endpoint()
            .map(str::to_owned)
            .unwrap_or_else(|e| e.to_string());
        assert!(why.contains("[endpoint]"), "{why}");
    }

    /// issue 12 (review): the binding found for a header names the uid it was issued to, which
    /// the App Service face compares with the caller's, and the target's tenant and client.
    #[test]
    fn a_held_pair_lives_as_long_as_its_handle_issue_12() {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        let pairs = pairs(&clock);
        let issued = issue(&pairs, bind("azure", 1000), Until::Held);
        let header = header(&issued);
        assert_eq!(header.len(), 64);
        assert_eq!(pairs.bound(header.as_bytes()), Some(bind("azure", 1000)));
        assert_eq!(pairs.bound(b"not-it"), None);
        assert_eq!(pairs.bound(&header.as_bytes()[..63]), None);
        clock.advance(MAX_DEADLINE * 2);
        assert!(pairs.bound(header.as_bytes()).is_some());
        assert_eq!(
            pairs.counts(),
            Counts {
                held: 1,
                deadline: 0
            }
        );
        drop(issued.held);
        assert_eq!(pairs.bound(header.as_bytes()), None);
        assert_eq!(pairs.counts(), Counts::default());
    }

    #[test]
    fn a_deadline_pair_ends_at_its_deadline_issue_12() {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        let pairs = pairs(&clock);
        let issued = issue(&pairs, bind("mi", 1000), Until::Deadline(at(60)));
        assert!(issued.held.is_none());
        let header = header(&issued);
        clock.advance(Duration::from_secs(59));
        assert_eq!(
            pairs.bound(header.as_bytes()).map(|b| b.target),
            Some("mi".to_owned())
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(pairs.bound(header.as_bytes()), None);
        // Never later than MAX_DEADLINE ahead.
        let far = issue(&pairs, bind("mi", 1000), Until::Deadline(at(1 << 40)));
        assert_eq!(far.until, Until::Deadline(at(60) + MAX_DEADLINE));
    }

    /// issue 12 (review): `eval "$(keyfed env azure)"` at every prompt used to add a pair each
    /// time until the user's 32 were gone and their `keyfed exec` refused. The same uid asking
    /// for the same target gets its live deadline pair again, lasting until the later
    /// deadline; another uid, target or app gets one of its own, and a held pair is never
    /// handed out twice.
    #[test]
    fn a_deadline_pair_is_handed_out_again_to_its_uid_issue_12() {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        let pairs = pairs(&clock);
        let first = issue(&pairs, bind("azure", 1000), Until::Deadline(at(600)));
        for n in 0..40 {
            let again = issue(&pairs, bind("azure", 1000), Until::Deadline(at(600 + n)));
            assert_eq!(header(&again), header(&first), "prompt {n}");
            assert_eq!(again.until, Until::Deadline(at(600 + n)));
        }
        // An earlier deadline does not shorten it.
        let again = issue(&pairs, bind("azure", 1000), Until::Deadline(at(300)));
        assert_eq!(again.until, Until::Deadline(at(639)));
        assert_eq!(
            pairs.counts(),
            Counts {
                held: 0,
                deadline: 1
            }
        );
        let held = issue(&pairs, bind("azure", 1000), Until::Held);
        assert!(held.held.is_some());
        let mut other_app = bind("azure", 1000);
        other_app.client_id = "c-other".to_owned();
        for (what, binding) in [
            ("another uid", bind("azure", 1001)),
            ("another target", bind("mi", 1000)),
            ("another app", other_app),
        ] {
            let theirs = issue(&pairs, binding, Until::Deadline(at(600)));
            assert_ne!(header(&theirs), header(&first), "{what}");
        }
        assert_ne!(header(&held), header(&first));
        let second_held = issue(&pairs, bind("azure", 1000), Until::Held);
        assert_ne!(header(&second_held), header(&held));
        assert_eq!(
            pairs.counts(),
            Counts {
                held: 2,
                deadline: 4
            }
        );
        // Once it has expired, a new one.
        clock.advance(Duration::from_secs(639));
        let later = issue(&pairs, bind("azure", 1000), Until::Deadline(at(1200)));
        assert_ne!(header(&later), header(&first));
    }

    #[test]
    fn pairs_are_capped_per_user_and_in_all_issue_12() {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        let pairs = pairs(&clock);
        let mut held = Vec::new();
        for _ in 0..PER_USER {
            held.push(issue(&pairs, bind("azure", 1000), Until::Held));
        }
        assert_eq!(
            pairs.issue(bind("azure", 1000), Until::Held).err(),
            Some(Refused::UserFull { uid: 1000 })
        );
        // issue 12 (review): four users holding all they may hold, a fifth still gets one.
        for uid in 1001..1004 {
            for _ in 0..PER_USER {
                held.push(issue(&pairs, bind("azure", uid), Until::Held));
            }
        }
        assert!(pairs.issue(bind("azure", 1005), Until::Held).is_ok());
        held.pop();
        assert!(
            pairs.issue(bind("azure", 1003), Until::Held).is_ok(),
            "a place freed"
        );
        // Fills the daemon's places with held pairs, PER_USER a uid from `first_uid`.
        let fill = |held: &mut Vec<Issued>, first_uid: u32| {
            let counts = pairs.counts();
            for n in counts.held + counts.deadline..TOTAL {
                let uid = first_uid + (n / PER_USER) as u32;
                held.push(issue(&pairs, bind("azure", uid), Until::Held));
            }
        };
        fill(&mut held, 2000);
        assert_eq!(
            pairs.issue(bind("azure", 9999), Until::Held).err(),
            Some(Refused::Full)
        );
        // The one deadline pair a user already has is still handed out when all are taken.
        drop(held);
        let mut held = Vec::new();
        let mine = issue(&pairs, bind("azure", 3000), Until::Deadline(at(1)));
        fill(&mut held, 4000);
        let again = issue(&pairs, bind("azure", 3000), Until::Deadline(at(1)));
        assert_eq!(header(&again), header(&mine));
        // Expired deadline pairs give their places back.
        clock.advance(Duration::from_secs(1));
        assert!(
            pairs
                .issue(bind("azure", 3000), Until::Deadline(at(1) + MAX_DEADLINE))
                .is_ok()
        );
    }
}
