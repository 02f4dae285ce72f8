//! Identity-header pairs (issue 12): short-lived `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` pairs
//! that `keyfed exec` and `keyfed env` ask the daemon for over the control socket
//! (`Request::Environment`) and hand to a command's Azure SDK. Each pair's header is a fresh
//! random secret bound to ONE Azure target and the uid that asked: the App Service face
//! (`app_service.rs`) answers a request carrying it only with that target's tokens, whatever
//! identity the request names (`azure::bound_token`). The identity header file's secret keeps
//! working beside them, unchanged.
//!
//! A pair lives while the control connection that asked for it stays open (`keyfed exec`
//! holds it for the command's life, and the kernel closes it when keyfed dies however it dies,
//! so nothing stays valid behind it), or until a deadline (`keyfed env`: the target's current
//! token's expiry, at most [`MAX_DEADLINE`] ahead). Pairs live in the daemon's memory only: a
//! restart ends them all. At most [`PER_USER`] are live per uid and [`TOTAL`] in all; past that
//! a new one is refused, never an old one dropped.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use keyfed_core::clock::Clock;
use keyfed_core::{ExposeSecret as _, SecretString};

use super::container::constant_time_eq;
use crate::config::EndpointSettings;

/// Live pairs per uid: a user's loop of `keyfed exec` can hold this many control connections
/// (out of the control socket's 128 per user), leaving the rest for its other requests.
pub const PER_USER: usize = 32;
/// Live pairs in all (the control socket takes 256 connections in all).
pub const TOTAL: usize = 128;
/// The longest a deadline-bound pair lives, whatever its token's expiry.
pub const MAX_DEADLINE: Duration = Duration::from_secs(12 * 3600);

/// How long a pair stays valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// While the [`Held`] handle lives (the asking connection is open).
    Held,
    Deadline(SystemTime),
}

struct Entry {
    id: u64,
    header: SecretString,
    target: String,
    uid: u32,
    until: Until,
}

#[derive(Default)]
struct Live {
    next_id: u64,
    entries: Vec<Entry>,
}

/// Every live pair, and where the App Service face listens.
pub struct Pairs {
    /// `IDENTITY_ENDPOINT`, or why there is none.
    endpoint: Result<String, String>,
    clock: Arc<dyn Clock>,
    live: Mutex<Live>,
}

impl std::fmt::Debug for Pairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pairs")
            .field("endpoint", &self.endpoint)
            .field("live", &self.lock().entries.len())
            .finish_non_exhaustive()
    }
}

/// A pair just issued: its header (to send once, to the asking client), how long it lives (a
/// deadline capped at [`MAX_DEADLINE`] from now) and, for [`Until::Held`], the handle that ends
/// it when dropped.
pub struct Issued {
    pub header: SecretString,
    pub until: Until,
    pub held: Option<Held>,
}

/// Ends a held pair when dropped.
#[derive(Debug)]
pub struct Held {
    pairs: Arc<Pairs>,
    id: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.pairs.lock().entries.retain(|e| e.id != self.id);
    }
}

/// Why no pair was issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    NoFace(String),
    #[error(
        "uid {uid} holds {PER_USER} identity headers already (keyfed exec running, or keyfed env \
         pairs not yet expired); wait for one to end"
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `IDENTITY_ENDPOINT` (`http://ADDRESS/msi/token`), or why the daemon serves none.
    pub fn endpoint(&self) -> Result<&str, Refused> {
        self.endpoint
            .as_deref()
            .map_err(|why| Refused::NoFace(why.clone()))
    }

    /// A fresh pair for `target`, asked for by `uid`, valid `until` (a deadline at most
    /// [`MAX_DEADLINE`] ahead).
    pub fn issue(
        self: &Arc<Self>,
        target: &str,
        uid: u32,
        until: Until,
    ) -> Result<Issued, Refused> {
        self.endpoint()?;
        let now = self.clock.now();
        let until = match until {
            Until::Deadline(at) => Until::Deadline(at.min(now + MAX_DEADLINE)),
            Until::Held => Until::Held,
        };
        let mut live = self.lock();
        live.entries.retain(|e| !expired(e, now));
        if live.entries.len() >= TOTAL {
            return Err(Refused::Full);
        }
        if live.entries.iter().filter(|e| e.uid == uid).count() >= PER_USER {
            return Err(Refused::UserFull { uid });
        }
        live.next_id += 1;
        let id = live.next_id;
        let header = SecretString::from(super::random_token());
        live.entries.push(Entry {
            id,
            header: header.clone(),
            target: target.to_owned(),
            uid,
            until,
        });
        let held = (until == Until::Held).then(|| Held {
            pairs: Arc::clone(self),
            id,
        });
        Ok(Issued {
            header,
            until,
            held,
        })
    }

    /// The target the live pair whose header is `given` is bound to. Every live header is
    /// compared in constant time, so timing tells nothing of any of them.
    pub fn target_of(&self, given: &[u8]) -> Option<String> {
        let now = self.clock.now();
        let live = self.lock();
        let mut found = None;
        for entry in &live.entries {
            let matches = constant_time_eq(given, entry.header.expose_secret().as_bytes());
            if matches && !expired(entry, now) {
                found = Some(entry.target.clone());
            }
        }
        found
    }

    /// Live pairs now.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        let now = self.clock.now();
        self.lock()
            .entries
            .iter()
            .filter(|e| !expired(e, now))
            .count()
    }
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
        assert!(off.issue("azure", 1000, Until::Held).is_err());
        let none = Pairs::new(None, clock);
        let why = none
            .endpoint()
            .map(str::to_owned)
            .unwrap_or_else(|e| e.to_string());
        assert!(why.contains("[endpoint]"), "{why}");
    }

    #[test]
    fn a_held_pair_lives_as_long_as_its_handle_issue_12() {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        let pairs = pairs(&clock);
        let issued = pairs
            .issue("azure", 1000, Until::Held)
            .unwrap_or_else(|e| panic!("{e}"));
        let header = issued.header.expose_secret().to_owned();
        assert_eq!(header.len(), 64);
        assert_eq!(pairs.target_of(header.as_bytes()).as_deref(), Some("azure"));
        assert_eq!(pairs.target_of(b"not-it"), None);
        clock.advance(MAX_DEADLINE * 2);
        assert_eq!(pairs.target_of(header.as_bytes()).as_deref(), Some("azure"));
        drop(issued.held);
        assert_eq!(pairs.target_of(header.as_bytes()), None);
        assert_eq!(pairs.count(), 0);
    }

    #[test]
    fn a_deadline_pair_ends_at_its_deadline_issue_12() {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        let pairs = pairs(&clock);
        let until = SystemTime::UNIX_EPOCH + Duration::from_secs(60);
        let issued = pairs
            .issue("mi", 1000, Until::Deadline(until))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(issued.held.is_none());
        let header = issued.header.expose_secret().to_owned();
        clock.advance(Duration::from_secs(59));
        assert_eq!(pairs.target_of(header.as_bytes()).as_deref(), Some("mi"));
        clock.advance(Duration::from_secs(1));
        assert_eq!(pairs.target_of(header.as_bytes()), None);
    }

    #[test]
    fn pairs_are_capped_per_user_and_in_all_issue_12() {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        let pairs = pairs(&clock);
        let mut held = Vec::new();
        for _ in 0..PER_USER {
            held.push(
                pairs
                    .issue("azure", 1000, Until::Held)
                    .unwrap_or_else(|e| panic!("{e}")),
            );
        }
        assert_eq!(
            pairs.issue("azure", 1000, Until::Held).err(),
            Some(Refused::UserFull { uid: 1000 })
        );
        // Another user is not held back by the first one's pairs.
        let other = pairs.issue("azure", 1001, Until::Held);
        assert!(other.is_ok());
        held.pop();
        assert!(
            pairs.issue("azure", 1000, Until::Held).is_ok(),
            "a place freed"
        );
        for uid in 2000..2000 + TOTAL as u32 {
            if pairs.count() >= TOTAL {
                break;
            }
            held.push(
                pairs
                    .issue("azure", uid, Until::Held)
                    .unwrap_or_else(|e| panic!("{e}")),
            );
        }
        assert_eq!(
            pairs.issue("azure", 9999, Until::Held).err(),
            Some(Refused::Full)
        );
        // Expired deadline pairs give their places back.
        drop(held);
        let until = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        for _ in 0..PER_USER {
            let issued = pairs.issue("azure", 3000, Until::Deadline(until));
            assert!(issued.is_ok());
        }
        clock.advance(Duration::from_secs(1));
        assert!(
            pairs
                .issue("azure", 3000, Until::Deadline(until + MAX_DEADLINE))
                .is_ok()
        );
    }
}
