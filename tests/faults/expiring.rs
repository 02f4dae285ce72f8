//! A token that expires between its fetch and its exchange: Keycloak's clock runs behind so
//! that its token has [`SHORT`] left when keyfed gets it (targets accept a token with a second
//! left), and each cloud's first exchange is held [`HELD`] before the cloud looks at it. The
//! clouds' clocks run ahead by just under the skew each allows (so a token with its normal life
//! still passes), so each finds the held token expired by its own check and says so in its own
//! words (STS `ExpiredTokenException`, Google's "stale to sign-in", Entra's AADSTS700024).
//! keyfed must fetch a fresh token and try once more within the same attempt: no failed
//! attempt, two requests to each cloud, and every face served once it is through.

use std::time::{Duration, Instant};

use keyfed_core::emulator::Fault;

use super::ledger::{Expect, Ledger};
use super::observe::Probe;
use super::run::Finish;
use super::upstreams::{LIFETIME, Upstreams};

/// How long Keycloak's token has left when keyfed gets it, and how long each cloud holds the
/// first exchange: longer, so the token has expired when the cloud checks it.
const SHORT: Duration = Duration::from_secs(3);
const HELD: Duration = Duration::from_secs(5);
/// Every upstream's `timeout` here: longer than a held exchange; and the attempt's, long
/// enough for two tokens and two exchanges, one of them held, on a busy machine.
const TIMEOUT: Duration = Duration::from_secs(7);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Just under the skew each cloud allows past a token's `exp`: STS and Entra 5 minutes,
/// Google one.
const STS_AHEAD: i64 = 299;
const GOOGLE_AHEAD: i64 = 59;
const ENTRA_AHEAD: i64 = 299;
/// Each cloud's exchange: its path, and what it says of an expired token.
const EXCHANGES: [(&str, &str, &str); 3] = [
    ("AWS STS", "/", "ExpiredTokenException"),
    ("Google STS", "/v1/token", "stale to sign-in"),
    ("Entra", "/oauth2/v2.0/token", "AADSTS700024"),
];

/// What the scenario measured.
#[derive(Debug, Clone)]
pub struct Expiring {
    /// From the start to every target served.
    pub served_after: Duration,
    /// Requests each cloud got (two each: the expired token and the fresh one).
    pub exchanges: Vec<(&'static str, u64)>,
}

pub async fn expiring(mut up: Upstreams) -> (Expiring, Finish) {
    let scenario = "token expired between fetch and exchange (issue 11)";
    let clocks = up.clocks.clone();
    clocks
        .keycloak
        .set(SHORT.as_secs() as i64 - LIFETIME.as_secs() as i64);
    clocks.sts.set(STS_AHEAD);
    clocks.gcp.set(GOOGLE_AHEAD);
    clocks.entra.set(ENTRA_AHEAD);
    let controls = [
        up.sts().control().clone(),
        up.gcp.control().clone(),
        up.entra.control().clone(),
    ];
    for (control, (_, path, _)) in controls.iter().zip(EXCHANGES) {
        control.inject(path, Fault::Delay(HELD), Some(1));
    }
    up.configure_with("min_token_lifetime = \"1s\"\n", TIMEOUT, ATTEMPT_TIMEOUT);
    let started = Instant::now();
    let daemon = up.fx.daemon().await;
    let probe = Probe::new(&up).await;
    let mut ledger = Ledger::new(scenario);

    // Once every cloud holds its first exchange, Keycloak's clock is right again: the fresh
    // token keyfed fetches next lives its full life.
    crate::util::wait_until("every cloud to hold its first exchange", async || {
        controls
            .iter()
            .zip(EXCHANGES)
            .all(|(control, (_, path, _))| control.hits(path) >= 1)
    })
    .await;
    clocks.keycloak.set(0);
    let bound = HELD + Duration::from_secs(20);
    let served_after = loop {
        let look = probe.look().await;
        ledger.record(&look, |_| Expect::Changing, &[], None);
        if look.ready {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < bound,
            "{scenario}: not every target was served within {bound:?}: {:?}",
            look.targets
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let look = probe.look().await;
    ledger.record(&look, |_| Expect::Changing, &[], None);
    for name in ["aws", "gcp", "azure"] {
        let view = &look.targets[name];
        assert_eq!(
            (view.failures, view.successes),
            (0, 1),
            "{scenario}: target {name} did not get through on its first attempt"
        );
    }
    let log = daemon.log_so_far();
    let mut exchanges = Vec::new();
    for (control, (cloud, path, words)) in controls.iter().zip(EXCHANGES) {
        let requests = control.hits(path);
        assert_eq!(
            requests, 2,
            "{scenario}: {cloud} got {requests} exchanges, not the expired token and a fresh one"
        );
        // The cloud's words, then (after its hint, on lines of their own) the retry.
        let chunks: Vec<&str> = log.split("retrying once with a new one").collect();
        let retried = chunks[..chunks.len() - 1]
            .iter()
            .any(|before| before.rsplit('\n').take(4).any(|l| l.contains(words)));
        assert!(
            retried,
            "{scenario}: keyfed did not say {cloud} refused the expired token ({words}) and that \
             it retried with a new one"
        );
        exchanges.push((cloud, requests));
    }
    (
        Expiring {
            served_after,
            exchanges,
        },
        Finish {
            scenario: scenario.to_owned(),
            daemon,
            up,
        },
    )
}
