//! Response bodies rendered once per credential rather than once per request: the hot path of
//! a face serving a fixed document (the container face) is then a read lock and a
//! reference-count increment. A body is keyed by the target, the slot (which credential of the
//! target: `None` for its main one) and the format (which face's document), so two faces
//! rendering one credential never hand out each other's body. A body is held as long as its
//! credential is current and dropped with it; it is secret, never logged.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use axum::body::Bytes;

use crate::credential::Credential;
use crate::engine::Issued;

/// Bodies kept at most; past it, those of expired credentials go first, then all the others
/// (each is rendered again when next asked for).
const MAX_BODIES: usize = 1024;

/// Bodies kept at most for one target (its variants come from consumers); past it, the oldest
/// goes first.
const MAX_BODIES_PER_TARGET: usize = 128;

/// Which body: of which target, slot and format.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a, S: ?Sized> {
    pub target: &'a str,
    /// `None` for the target's main credential.
    pub slot: Option<&'a S>,
    /// The face's name for its document: `"container"`.
    pub format: &'static str,
}

/// One rendered body and the credential it was rendered from.
struct Entry<S> {
    slot: Option<S>,
    format: &'static str,
    issued: Arc<Issued>,
    body: Bytes,
}

/// The last rendered body per target, slot and format. `S` is the slot key's borrowed form
/// (`str`, or the engine's slot key).
pub struct Documents<S: ?Sized + ToOwned = str>(RwLock<HashMap<String, Vec<Entry<S::Owned>>>>);

impl<S: ?Sized + ToOwned> Default for Documents<S> {
    fn default() -> Self {
        Self(RwLock::default())
    }
}

impl<S: ?Sized + ToOwned> std::fmt::Debug for Documents<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(keyfed_core::REDACTED)
    }
}

impl<S: ?Sized + ToOwned + PartialEq> Documents<S> {
    /// `issued` rendered by `render`, from the cache when `issued` is the credential the body
    /// for `key` was rendered from. `now` decides which bodies are stale when the cache is full.
    pub fn get(
        &self,
        key: Key<'_, S>,
        issued: &Arc<Issued>,
        render: fn(&Credential) -> Option<String>,
        now: SystemTime,
    ) -> Option<Bytes> {
        let cached = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let hit = cached
            .get(key.target)
            .and_then(|entries| entries.iter().find(|e| e.is(&key)))
            .filter(|e| Arc::ptr_eq(&e.issued, issued))
            .map(|e| e.body.clone());
        drop(cached);
        if hit.is_some() {
            return hit;
        }
        // Wiped when the last reference to it goes (issue 11); hyper's own buffers are not.
        let body = Bytes::from_owner(keyfed_core::secret::Zeroizing::new(
            render(&issued.credential)?.into_bytes(),
        ));
        let mut cache = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let known = cache
            .get(key.target)
            .is_some_and(|entries| entries.iter().any(|e| e.is(&key)));
        if !known && cache.values().map(Vec::len).sum::<usize>() >= MAX_BODIES {
            cache.retain(|_, entries| {
                entries.retain(|e| e.issued.credential.expires_at() > now);
                !entries.is_empty()
            });
            if cache.values().map(Vec::len).sum::<usize>() >= MAX_BODIES {
                cache.clear();
            }
        }
        let entries = cache.entry(key.target.to_owned()).or_default();
        let entry = Entry {
            slot: key.slot.map(ToOwned::to_owned),
            format: key.format,
            issued: Arc::clone(issued),
            body: body.clone(),
        };
        match entries.iter_mut().find(|e| e.is(&key)) {
            Some(held) => *held = entry,
            None => {
                // Keys within a target come from consumers (variants): the oldest goes first.
                if entries.len() >= MAX_BODIES_PER_TARGET {
                    entries.remove(0);
                }
                entries.push(entry);
            }
        }
        Some(body)
    }
}

impl<O> Entry<O> {
    fn is<S: ?Sized + PartialEq>(&self, key: &Key<'_, S>) -> bool
    where
        O: Borrow<S>,
    {
        self.format == key.format && self.slot.as_ref().map(Borrow::borrow) == key.slot
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use keyfed_aws::AwsCredentials;

    use super::*;

    /// A fixed moment: time is a parameter.
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn issued(id: &str, lifetime: Duration) -> Arc<Issued> {
        let now = now();
        Arc::new(Issued {
            credential: Credential::Aws(AwsCredentials {
                access_key_id: id.to_owned(),
                secret_access_key: "secret".into(),
                session_token: "session".into(),
                expiration: now + lifetime,
                assumed_role_arn: "arn:aws:sts::123456789012:assumed-role/r/s".to_owned(),
            }),
            refresh_at: now,
        })
    }

    fn key_id(c: &Credential) -> String {
        if let Credential::Aws(c) = c {
            c.access_key_id.clone()
        } else {
            String::new()
        }
    }

    fn json(c: &Credential) -> Option<String> {
        Some(format!("{{\"AccessKeyId\":\"{}\"}}", key_id(c)))
    }

    /// Renders for one test only, counting.
    static RENDERS: AtomicUsize = AtomicUsize::new(0);

    fn counted(c: &Credential) -> Option<String> {
        RENDERS.fetch_add(1, Ordering::SeqCst);
        json(c)
    }

    fn text(c: &Credential) -> Option<String> {
        Some(format!("key={}", key_id(c)))
    }

    fn key<'a>(target: &'a str, slot: Option<&'a str>, format: &'static str) -> Key<'a, str> {
        Key {
            target,
            slot,
            format,
        }
    }

    /// issue 9: keyed by target alone, a second format of one credential was handed the first
    /// format's body; by slot alone, a variant got the main credential's.
    #[test]
    fn issue_9_bodies_are_kept_per_target_slot_and_format() {
        let docs = Documents::<str>::default();
        let now = now();
        let main = issued("MAIN", Duration::from_secs(3600));
        let json_body = docs.get(key("t", None, "json"), &main, json, now);
        let text_body = docs.get(key("t", None, "text"), &main, text, now);
        assert_eq!(
            json_body.as_deref(),
            Some(&b"{\"AccessKeyId\":\"MAIN\"}"[..])
        );
        assert_eq!(text_body.as_deref(), Some(&b"key=MAIN"[..]));
        // Warm: each format still gets its own.
        assert_eq!(
            docs.get(key("t", None, "json"), &main, json, now),
            json_body
        );
        assert_eq!(
            docs.get(key("t", None, "text"), &main, text, now),
            text_body
        );
        let variant = issued("VARIANT", Duration::from_secs(3600));
        let slot_body = docs.get(key("t", Some("scopes a"), "json"), &variant, json, now);
        assert_eq!(
            slot_body.as_deref(),
            Some(&b"{\"AccessKeyId\":\"VARIANT\"}"[..])
        );
        assert_eq!(
            docs.get(key("t", None, "json"), &main, json, now),
            json_body
        );
        assert_eq!(
            docs.get(key("other", None, "json"), &variant, json, now)
                .as_deref(),
            Some(&b"{\"AccessKeyId\":\"VARIANT\"}"[..])
        );
    }

    #[test]
    fn a_body_is_rendered_once_per_credential() {
        let docs = Documents::<str>::default();
        let now = now();
        let first = issued("ONE", Duration::from_secs(3600));
        for _ in 0..5 {
            docs.get(key("once", None, "json"), &first, counted, now);
        }
        assert_eq!(RENDERS.load(Ordering::SeqCst), 1);
        let second = issued("TWO", Duration::from_secs(3600));
        let body = docs.get(key("once", None, "json"), &second, counted, now);
        assert_eq!(RENDERS.load(Ordering::SeqCst), 2);
        assert_eq!(body.as_deref(), Some(&b"{\"AccessKeyId\":\"TWO\"}"[..]));
    }

    #[test]
    fn the_cache_is_bounded_and_drops_expired_bodies_first() {
        let docs = Documents::<str>::default();
        let now = now();
        let expired = issued("OLD", Duration::ZERO);
        let live = issued("LIVE", Duration::from_secs(3600));
        docs.get(key("live", None, "json"), &live, json, now);
        for i in 0..MAX_BODIES {
            docs.get(key(&format!("t{i}"), None, "json"), &expired, json, now);
        }
        let held = |docs: &Documents<str>| {
            let cache = docs.0.read().unwrap_or_else(PoisonError::into_inner);
            cache.values().map(Vec::len).sum::<usize>()
        };
        assert!(held(&docs) <= MAX_BODIES);
        let cache = docs.0.read().unwrap_or_else(PoisonError::into_inner);
        assert!(cache.contains_key("live"), "the live body stays");
    }

    /// Review of issue 9: the bound was checked only when a new target arrived, so one target's
    /// consumer-chosen variants grew the cache without end.
    #[test]
    fn one_targets_variants_are_bounded_too() {
        let docs = Documents::<str>::default();
        let now = now();
        let live = issued("LIVE", Duration::from_secs(3600));
        for i in 0..2000 {
            let slot = format!("scopes s{i}");
            docs.get(key("t", Some(&slot), "json"), &live, json, now);
        }
        let cache = docs.0.read().unwrap_or_else(PoisonError::into_inner);
        let held = cache.get("t").map_or(0, Vec::len);
        assert_eq!(held, MAX_BODIES_PER_TARGET);
        assert!(
            cache["t"]
                .iter()
                .any(|e| e.slot.as_deref() == Some("scopes s1999")),
            "the newest stays"
        );
    }
}
