//! Fault injection and request counting shared between an emulator and the test that drives it:
//! faults that strike matching requests ([`Fault`], [`Control::inject`]), and the state of the
//! emulator's whole listener — down (connections refused, open ones cut), presenting another
//! TLS certificate, or sending no `Date` header ([`Control::set_down`],
//! [`Control::present_certificate`], [`Control::set_date_header`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

/// Something an emulator does instead of (or before) answering normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Answer with this status and body (`Content-Type: application/json`).
    Status { status: u16, body: String },
    /// Answer 200 with a truncated JSON document.
    Malformed,
    /// Answer with the emulator's own answer (status and headers) cut off halfway but framed
    /// as complete, its Content-Length matching what is sent: a JSON or XML document that ends
    /// mid-way, whichever the route answers.
    Garbled,
    /// Send the emulator's own answer with a Content-Length for all of it, but only its first
    /// half, then close the connection: a body truncated in transit.
    Truncated,
    /// Close the connection without answering.
    Drop,
    /// Reset the connection (TCP RST) without answering.
    Reset,
    /// Wait until the latch is released, then answer normally: a test makes its callers
    /// arrive while an upstream request is provably under way.
    Hold(Latch),
}

/// A gate that held requests wait at until the test releases it; clones share the gate. Once
/// released it stays open: later requests pass at once.
#[derive(Debug, Clone)]
pub struct Latch {
    open: Arc<watch::Sender<bool>>,
    waiting: Arc<watch::Sender<usize>>,
}

impl PartialEq for Latch {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.open, &other.open)
    }
}

impl Eq for Latch {}

impl Default for Latch {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts a held request for as long as it waits, even if its connection goes away.
struct Waiting<'a>(&'a watch::Sender<usize>);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Latch {
    pub fn new() -> Self {
        Self {
            open: Arc::new(watch::Sender::new(false)),
            waiting: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Lets every held request through, and every later one.
    pub fn release(&self) {
        self.open.send_replace(true);
    }

    /// How many requests are waiting at the latch right now.
    pub fn waiting(&self) -> usize {
        *self.waiting.borrow()
    }

    /// Completes once at least `n` requests are waiting at the latch (no polling: the count
    /// is watched). Tests bound it with a timeout of their own.
    pub async fn until_waiting(&self, n: usize) {
        let mut count = self.waiting.subscribe();
        let _ = count.wait_for(|&waiting| waiting >= n).await;
    }

    /// Waits until released (at once when it already is).
    pub(crate) async fn pass(&self) {
        let mut open = self.open.subscribe();
        if *open.borrow_and_update() {
            return;
        }
        self.waiting.send_modify(|n| *n += 1);
        let _counted = Waiting(&self.waiting);
        // The sender lives in `self`, so this ends only when the latch opens.
        let _ = open.wait_for(|&released| released).await;
    }
}

#[derive(Debug)]
struct Rule {
    path_contains: String,
    fault: Fault,
    remaining: Option<u32>,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    hits: HashMap<String, u64>,
}

/// The state of the emulator's listener as a whole, watched by its accept loop.
#[derive(Debug)]
struct Listener {
    /// While true the port is closed (connections are refused) and open connections are cut.
    down: watch::Sender<bool>,
    /// A TLS configuration to present instead of the emulator's own.
    certificate: watch::Sender<Option<Arc<rustls::ServerConfig>>>,
    /// Whether the server adds a `Date` header to answers that have none (hyper's default).
    date_header: AtomicBool,
}

impl Default for Listener {
    fn default() -> Self {
        Self {
            down: watch::Sender::new(false),
            certificate: watch::Sender::new(None),
            date_header: AtomicBool::new(true),
        }
    }
}

/// The handle a test holds to steer an emulator; clones share state.
#[derive(Debug, Clone, Default)]
pub struct Control {
    state: Arc<Mutex<State>>,
    listener: Arc<Listener>,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `fault` to requests whose path contains `path_contains`, `times` times
    /// (or until [`Control::clear_faults`] when `None`). Rules apply in the order added.
    pub fn inject(&self, path_contains: &str, fault: Fault, times: Option<u32>) {
        self.lock().rules.push(Rule {
            path_contains: path_contains.to_owned(),
            fault,
            remaining: times,
        });
    }

    /// Holds requests whose path contains `path_contains` until the returned latch is
    /// released (a [`Fault::Hold`] that stays until [`Control::clear_faults`]).
    pub fn hold(&self, path_contains: &str) -> Latch {
        let latch = Latch::new();
        self.inject(path_contains, Fault::Hold(latch.clone()), None);
        latch
    }

    pub fn clear_faults(&self) {
        self.lock().rules.clear();
    }

    /// Counts a request and returns the fault it should suffer, if any.
    pub(crate) fn on_request(&self, path: &str) -> Option<Fault> {
        let mut state = self.lock();
        *state.hits.entry(path.to_owned()).or_default() += 1;
        let index = state
            .rules
            .iter()
            .position(|r| path.contains(&r.path_contains))?;
        let rule = &mut state.rules[index];
        let fault = rule.fault.clone();
        match &mut rule.remaining {
            Some(1) => {
                state.rules.remove(index);
            }
            Some(n) => *n -= 1,
            None => {}
        }
        Some(fault)
    }

    /// How many requests reached a path containing `path_contains`, faulted ones included.
    pub fn hits(&self, path_contains: &str) -> u64 {
        self.lock()
            .hits
            .iter()
            .filter(|(p, _)| p.contains(path_contains))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn reset_hits(&self) {
        self.lock().hits.clear();
    }

    /// Takes the emulator down (`true`): its port is closed, so connections are refused, and
    /// every open connection (a client's kept-alive ones too) is cut; `false` listens again on
    /// the same address. Requests refused this way are not counted: they never arrive.
    pub fn set_down(&self, down: bool) {
        self.listener.down.send_replace(down);
    }

    /// Presents `certificate` (e.g. one the client does not trust, or one for another name) on
    /// new TLS connections instead of the emulator's own, until called with `None`; open
    /// connections are cut, as by a server restarted with a new certificate. Applies only to an
    /// emulator served over TLS.
    pub fn present_certificate(&self, certificate: Option<Arc<rustls::ServerConfig>>) {
        self.listener.certificate.send_replace(certificate);
    }

    /// Whether new connections' answers get a `Date` header when the emulator's routes set
    /// none (they do by default, as hyper's; Keycloak 26 sends none, issue 12).
    pub fn set_date_header(&self, on: bool) {
        self.listener.date_header.store(on, Ordering::SeqCst);
    }

    pub(crate) fn date_header(&self) -> bool {
        self.listener.date_header.load(Ordering::SeqCst)
    }

    /// The TLS configuration to present on a new connection instead of the emulator's own.
    pub(crate) fn certificate(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.listener.certificate.borrow().clone()
    }

    /// Watches [`Control::set_down`].
    pub(crate) fn down(&self) -> watch::Receiver<bool> {
        self.listener.down.subscribe()
    }

    /// Watches [`Control::present_certificate`].
    pub(crate) fn certificates(&self) -> watch::Receiver<Option<Arc<rustls::ServerConfig>>> {
        self.listener.certificate.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_run_out_and_hits_count() {
        let c = Control::default();
        c.inject("/token", Fault::Malformed, Some(2));
        assert_eq!(c.on_request("/realms/a/token"), Some(Fault::Malformed));
        assert_eq!(c.on_request("/realms/a/certs"), None);
        assert_eq!(c.on_request("/realms/a/token"), Some(Fault::Malformed));
        assert_eq!(c.on_request("/realms/a/token"), None);
        assert_eq!(c.hits("/token"), 3);
        assert_eq!(c.hits("/realms/a"), 4);
        c.inject("/token", Fault::Drop, None);
        for _ in 0..5 {
            assert_eq!(c.on_request("/token"), Some(Fault::Drop));
        }
        c.clear_faults();
        assert_eq!(c.on_request("/token"), None);
    }

    #[tokio::test]
    async fn a_latch_holds_requests_until_released_and_counts_them() {
        let c = Control::default();
        let latch = c.hold("/token");
        let Some(Fault::Hold(held)) = c.on_request("/realms/a/token") else {
            panic!("the rule did not apply");
        };
        assert_eq!(held, latch);
        let first = tokio::spawn({
            let held = held.clone();
            async move { held.pass().await }
        });
        let second = tokio::spawn({
            let held = held.clone();
            async move { held.pass().await }
        });
        tokio::time::timeout(Duration::from_secs(10), latch.until_waiting(2))
            .await
            .unwrap_or_else(|_| panic!("{} waiting, not 2", latch.waiting()));
        assert!(!first.is_finished() && !second.is_finished());
        // A held request whose connection goes away stops counting.
        second.abort();
        let _ = second.await;
        assert_eq!(latch.waiting(), 1);
        latch.release();
        first.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(latch.waiting(), 0);
        // Open for good: later requests pass at once.
        tokio::time::timeout(Duration::from_secs(10), latch.pass())
            .await
            .unwrap_or_else(|_| panic!("a released latch held a request"));
    }
}
