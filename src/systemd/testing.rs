//! Engines for the tests of readiness and STATUS=: targets on a manual clock whose upstream
//! issues an Entra token at once, or once a gate opens.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use keyfed_core::clock::{Clock, ManualClock};
use tokio::sync::watch;

use crate::credential::Credential;
use crate::engine::{Backoff, Engine, Fetch, SlotKey, Source, TargetEngine};
use crate::served::Served;

/// An upstream issuing tokens that live `lifetime` on `clock`, each once `gate` is open.
#[derive(Debug)]
struct Upstream {
    clock: ManualClock,
    lifetime: Duration,
    gate: watch::Receiver<bool>,
}

impl Source for Upstream {
    fn fetch<'a>(&'a self, _slot: Option<&'a SlotKey>) -> Fetch<'a> {
        Box::pin(async move {
            let _ = self.gate.clone().wait_for(|&open| open).await;
            Ok(Credential::Azure(keyfed_azure::AzureToken {
                token: "eyJ0eXAiOiJKV1QifQ.e30.sig".into(),
                scope: "https://management.azure.com/.default".to_owned(),
                tenant_id: "tenant".to_owned(),
                client_id: "app".to_owned(),
                expires_at: self.clock.now() + self.lifetime,
            }))
        })
    }

    fn consumer_window(&self) -> Duration {
        Duration::from_secs(300)
    }
}

/// What a daemon serving the targets `names` serves, their upstream issuing tokens of
/// `lifetime` once `gate` is open.
pub fn served(
    clock: &ManualClock,
    lifetime: Duration,
    gate: &watch::Receiver<bool>,
    names: &[&str],
) -> Arc<Served> {
    let targets = names
        .iter()
        .map(|name| {
            TargetEngine::new(
                (*name).to_owned(),
                Box::new(Upstream {
                    clock: clock.clone(),
                    lifetime,
                    gate: gate.clone(),
                }),
                Vec::new(),
                Arc::new(clock.clone()),
                Backoff::DEFAULT,
                Duration::from_secs(60),
            )
        })
        .collect();
    Arc::new(Served::for_tests(
        Engine::new(targets),
        BTreeMap::new(),
        BTreeSet::new(),
    ))
}
