//! Connection caps, in all and per local user, kept well below the process's file-descriptor
//! limit: a local user holding connections open can use up their own share, but never the
//! descriptors a refresh needs for its sockets and temporary files, nor other users' share.
//! Shared by the endpoint and the control socket (each has its own `Caps`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Descriptors kept free for everything but endpoint and control connections: upstream
/// sockets, temporary files, the listeners themselves.
pub const RESERVED_FDS: u64 = 256;

/// How many connections may be open at once, and per uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub total: usize,
    pub per_user: usize,
}

#[derive(Debug, Default)]
struct Open {
    /// Connections turned away so far, for rate-limited logging.
    refused: u64,
    total: usize,
    /// Open connections per owning uid; `None` for connections whose owner is unknown, which
    /// share one allowance.
    by_user: HashMap<Option<u32>, usize>,
}

/// Admits connections within [`Limits`].
#[derive(Debug)]
pub struct Caps {
    limits: Limits,
    open: Mutex<Open>,
}

/// One admitted connection; its place is given back when dropped.
#[derive(Debug)]
pub struct Slot {
    caps: Arc<Caps>,
    uid: Option<u32>,
}

impl Caps {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::new(Open::default()),
        })
    }

    /// A slot for a connection owned by `uid`, or `None` when it would pass a cap. Refusals
    /// are logged, the first and then every 1000th: a flood must not become a flood of logs.
    pub fn admit(self: &Arc<Self>, uid: Option<u32>) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = open.by_user.get(&uid).copied().unwrap_or(0);
        if open.total >= self.limits.total || mine >= self.limits.per_user {
            open.refused += 1;
            if open.refused % 1000 == 1 {
                tracing::warn!(
                    uid = ?uid,
                    refused = open.refused,
                    "connection closed: over the cap of {} in all, {} per user",
                    self.limits.total,
                    self.limits.per_user
                );
            }
            return None;
        }
        open.total += 1;
        open.by_user.insert(uid, mine + 1);
        Some(Slot {
            caps: Arc::clone(self),
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .caps
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_user.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_user.remove(&self.uid);
            }
        }
    }
}

/// Raises the soft file-descriptor limit to the hard one (as a unit's `LimitNOFILE=` would) and
/// returns the soft limit in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(hard)) = (limit.current, limit.maximum)
        && current < hard
    {
        let raised = rustix::process::Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return hard;
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

/// The limits in force for `wanted` connections in all (`per_user` each), under a soft
/// descriptor limit of `fd_limit` shared by `listeners` caps: each gets at most an equal share
/// of what [`RESERVED_FDS`] leaves, and the per-user cap never exceeds the total.
pub fn fit(wanted: Limits, fd_limit: u64, listeners: u64) -> Limits {
    let share = fd_limit.saturating_sub(RESERVED_FDS) / listeners.max(1);
    let total = wanted
        .total
        .min(usize::try_from(share).unwrap_or(usize::MAX))
        .max(1);
    Limits {
        total,
        per_user: wanted.per_user.min(total).max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_in_all_and_per_user() {
        let caps = Caps::new(Limits {
            total: 3,
            per_user: 2,
        });
        let a1 = caps.admit(Some(1000));
        let a2 = caps.admit(Some(1000));
        assert!(a1.is_some() && a2.is_some());
        assert!(caps.admit(Some(1000)).is_none(), "per-user cap");
        let b = caps.admit(Some(1001));
        assert!(b.is_some());
        assert!(caps.admit(Some(1002)).is_none(), "total cap");
        drop(a1);
        let c = caps.admit(Some(1002));
        assert!(c.is_some(), "a closed connection frees its place");
        assert!(caps.admit(None).is_none(), "unknown owners count too");
    }

    #[test]
    fn limits_stay_below_the_descriptor_limit() {
        let wanted = Limits {
            total: 1024,
            per_user: 256,
        };
        assert_eq!(fit(wanted, 65_536, 2), wanted);
        let tight = fit(wanted, 1024, 2);
        assert_eq!(tight.total, 384);
        assert!(tight.total as u64 * 2 + RESERVED_FDS <= 1024);
        let tiny = fit(wanted, 100, 1);
        assert_eq!(
            tiny,
            Limits {
                total: 1,
                per_user: 1
            }
        );
    }
}
