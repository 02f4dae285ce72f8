//! issue 11, part 1: upstream faults. Keycloak, and every cloud at once (AWS STS, Google STS
//! and IAM Credentials, Entra ID), are put in trouble through their emulators — down at start,
//! down mid-life for longer than the credentials live, flapping, slower than the timeout, 5xx,
//! throttling, malformed JSON/XML, truncated bodies, connection resets, TLS failures, clock
//! skew, a token that expires between fetch and exchange — while a real `keyfed run` keeps four
//! targets and serves them on every face (`upstreams.rs`; each upstream's own trouble in
//! `keycloak.rs`, `aws.rs`, `gcp.rs`, `azure.rs`, the kinds in `kinds.rs`).
//!
//! Each scenario has a daemon of its own (`run.rs`; the stories in `outage.rs`, `flapping.rs`
//! and `expiring.rs`) and is checked at every look at its faces, files, `status`, `/readyz` and
//! metrics (`observe.rs`, `ledger.rs`): the valid credential stays in every output and face
//! until it expires, nothing expired is served or written (faces answer 503 with the reason),
//! attempts follow the backoff, service resumes within one backoff step of the recovery, and
//! `status`, `/readyz` and the metrics agree. Scenarios run side by side (`matrix.rs`), so the
//! whole matrix takes about as long as its longest scenario.

mod aws;
mod azure;
mod clock;
mod expiring;
mod flapping;
mod gcp;
mod keycloak;
mod kinds;
mod ledger;
mod matrix;
mod observe;
mod outage;
mod run;
mod upstreams;
