//! Response bodies rendered once per credential rather than once per request: the hot path of
//! the container face is then a read lock and a reference-count increment. A body is held as
//! long as its credential is current and dropped with it; it is secret, never logged.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use axum::body::Bytes;

use crate::credential::Credential;
use crate::engine::Issued;

/// The last rendered body per target, with the credential it was rendered from.
#[derive(Default)]
pub struct Documents(RwLock<HashMap<String, (Arc<Issued>, Bytes)>>);

impl std::fmt::Debug for Documents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(keyfed_core::REDACTED)
    }
}

impl Documents {
    /// `issued` rendered by `render`, from the cache when `issued` is the credential it holds.
    pub fn get(
        &self,
        target: &str,
        issued: &Arc<Issued>,
        render: fn(&Credential) -> Option<String>,
    ) -> Option<Bytes> {
        let cached = self.0.read().unwrap_or_else(PoisonError::into_inner);
        if let Some((held, body)) = cached.get(target)
            && Arc::ptr_eq(held, issued)
        {
            return Some(body.clone());
        }
        drop(cached);
        let body = Bytes::from(render(&issued.credential)?);
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(target.to_owned(), (Arc::clone(issued), body.clone()));
        Some(body)
    }
}
