//! Fault injection and request counting shared between an emulator and the test that drives it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Something an emulator does instead of (or before) answering normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Answer with this status and body (`Content-Type: application/json`).
    Status { status: u16, body: String },
    /// Answer 200 with a truncated JSON document.
    Malformed,
    /// Close the connection without answering.
    Drop,
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

/// The handle a test holds to steer an emulator; clones share state.
#[derive(Debug, Clone, Default)]
pub struct Control {
    state: Arc<Mutex<State>>,
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
}
