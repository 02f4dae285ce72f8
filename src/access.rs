//! Who is asking: on a multi-user host a target's credentials can be limited to some local users
//! and groups (`allow_users`, `allow_groups`). On the control socket the kernel tells the peer's
//! uid (SO_PEERCRED); on the TCP endpoint keyfed asks the kernel which uid owns the connecting
//! socket (`crate::peer_uid`, both ends being on this host).
//!
//! This stops other local users from reading a target's credentials. It does not stop root, a
//! process running as an allowed user, or anything that can act as one (ptrace, the user's own
//! files); and for TCP it relies on the connection coming from this host, which the loopback-only
//! default guarantees.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::config::Access;

/// Whether `uid` may have the credentials `access` guards. Root always may.
pub fn allowed(access: &Access, uid: u32) -> bool {
    if access.is_open() || uid == 0 || access.users.contains(&uid) {
        return true;
    }
    !access.groups.is_empty() && groups_of(uid).iter().any(|g| access.groups.contains(g))
}

/// Refusals so far per uid, target and face.
type Refusals = HashMap<(Option<u32>, String, &'static str), u64>;

/// Logs that `uid` was refused `target`'s credentials on `face`: the first refusal of each
/// (uid, target, face) and then every 100th, so a local user asking in a loop cannot flood the
/// log.
pub fn log_refusal(uid: Option<u32>, target: &str, face: &'static str) {
    static SEEN: OnceLock<Mutex<Refusals>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if seen.len() >= REMEMBERED {
        seen.clear();
    }
    let count = seen.entry((uid, target.to_owned(), face)).or_default();
    *count += 1;
    if *count % 100 == 1 {
        tracing::warn!(uid = ?uid, target = %target, face, refusals = *count, "credentials refused to this uid");
    }
}

/// How long a user's groups are remembered: the user database may be a network service (SSSD,
/// LDAP), and a local user's requests must not turn into a lookup each.
const GROUPS_TTL: Duration = Duration::from_secs(60);
/// Users (or users and targets) remembered at most; the whole memory is dropped when full.
const REMEMBERED: usize = 1024;

type GroupCache = HashMap<u32, (Instant, Arc<Vec<u32>>)>;

/// The primary and supplementary groups of `uid`, remembered for [`GROUPS_TTL`].
fn groups_of(uid: u32) -> Arc<Vec<u32>> {
    static CACHE: OnceLock<Mutex<GroupCache>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    let now = Instant::now();
    if let Some((at, groups)) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&uid)
        && now.duration_since(*at) < GROUPS_TTL
    {
        return Arc::clone(groups);
    }
    let groups = Arc::new(look_up_groups(uid));
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= REMEMBERED {
        cache.clear();
    }
    cache.insert(uid, (now, Arc::clone(&groups)));
    groups
}

/// The primary and supplementary groups of `uid`, from the user database.
fn look_up_groups(uid: u32) -> Vec<u32> {
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return Vec::new();
    };
    let mut groups = vec![user.gid.as_raw()];
    if let Ok(name) = std::ffi::CString::new(user.name.as_bytes())
        && let Ok(list) = nix::unistd::getgrouplist(&name, user.gid)
    {
        groups.extend(list.iter().map(|g| g.as_raw()));
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists() {
        let open = Access::default();
        assert!(allowed(&open, 1234));
        let only = Access {
            users: vec![1000],
            groups: vec![],
        };
        assert!(allowed(&only, 1000));
        assert!(allowed(&only, 0), "root always may");
        assert!(!allowed(&only, 1001));
        // nobody's primary group is nogroup (65534) on Debian.
        let group = Access {
            users: vec![],
            groups: vec![65534],
        };
        assert!(allowed(&group, 65534));
        assert!(!allowed(&group, 4242));
    }
}
