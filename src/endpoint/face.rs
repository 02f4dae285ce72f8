//! What a face is to the endpoint: one protocol some SDK family speaks to a metadata service,
//! in a module of its own with its own state (session tokens, a shared secret), routes, answers
//! and statuses. The core (`mod.rs`) gives every face the same services — the DNS-rebinding
//! guard, connection caps and timed writes before a request reaches it, and through [`Core`]
//! the served targets, per-user access control, credentials, rendered-body caching and request
//! counting — and knows a face only through this trait.
//!
//! A new face is a module implementing [`Face`], with a `start` function building it, plus one
//! line in `mod.rs`'s `FACES`; its configuration — name, `[endpoint]` target key, kinds of
//! target served, reserved paths — is its [`FaceSpec`], declared with its cloud's glue in
//! `crate::config` (see `config/endpoint.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;

use super::Core;
use super::refusal::Refusal;
use super::server::Peer;
use crate::config::FaceSpec;

/// A face's answer still to come.
pub type Answer = Pin<Box<dyn Future<Output = Response> + Send>>;

/// Builds a face at start-up, after every address is bound: its state, and anything it must
/// write first (the container face's token file).
pub type Start = fn(&Arc<Core>) -> anyhow::Result<Arc<dyn Face>>;

/// One face of the endpoint.
pub trait Face: Send + Sync + 'static {
    /// What the configuration knows of it: its name (the metrics label), its `[endpoint]` target
    /// key, the kinds of target it serves and the paths it reserves.
    fn spec(&self) -> &'static FaceSpec;

    /// Its routes, every one under a path its spec reserves (a request refused before it is
    /// routed is then still answered and counted as this face's). Merged into each listener
    /// serving credentials; every answer should go through [`Core::answer`].
    fn routes(self: Arc<Self>) -> Router;

    /// The status this face gives each refusal. Write it as one `match` naming every variant,
    /// with no `_` arm — `#[deny(clippy::wildcard_enum_match_arm,
    /// clippy::match_wildcard_for_single_variants)]` on it makes clippy hold to that — so a new
    /// refusal is a decision made for every face.
    fn status(&self, refusal: &Refusal) -> StatusCode;

    /// This face's answer to a refusal: the status and the reason as plain text, unless its
    /// SDKs expect another shape.
    fn refuse(&self, refusal: &Refusal) -> Response {
        refusal.response(self.status(refusal))
    }

    /// Headers every response of this face carries, refusals included (a face whose clients
    /// check a marker header on each answer adds it here).
    fn finish(&self, response: &mut Response) {
        let _ = response;
    }

    /// Answers `request` at a path `target` chose on this face (its spec's `path_key`). Only
    /// faces with a `path_key` are given such paths, so only they need to say more than "not
    /// found".
    fn at_path(self: Arc<Self>, target: String, peer: Peer, request: Request) -> Answer {
        let _ = (target, peer, request);
        let response = self.refuse(&Refusal::NotFound);
        Box::pin(std::future::ready(response))
    }
}
