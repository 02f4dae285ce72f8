//! The matrix: every kind of trouble, on Keycloak and on every cloud at once, each scenario
//! with a daemon of its own, all side by side (so the suite takes as long as one scenario), and
//! one row of the README's reliability table per scenario that held.

use keyfed_core::emulator::report;

use super::expiring;
use super::flapping::{self, Flapping};
use super::kinds::{Kind, Side, Trouble};
use super::outage::{self, Outage};
use super::run::{self, Rate};
use super::upstreams::Upstreams;

/// Every kind of trouble each side goes through.
const KINDS: [Kind; 9] = [
    Kind::Down,
    Kind::Slow,
    Kind::ServerError,
    Kind::Throttled,
    Kind::Malformed,
    Kind::Truncated,
    Kind::Reset,
    Kind::Tls,
    Kind::ClockSkew,
];

/// What the rows say was checked.
const AT_START: &str = "daemon started while the upstream was in trouble: no credential \
    served or written, every face 503 with the reason, /readyz, status and metrics agreeing; \
    attempts within the backoff; every target served within one backoff step of the recovery";
const MID_LIFE: &str = "trouble struck just after the credentials were issued and outlasted \
    them: each served on every face and file until 30 s before its expiry, none after (503 with \
    the reason), /readyz, status and metrics agreeing throughout; attempts within the backoff; \
    every target served within one backoff step of the recovery";
const BOTH: &str = "in trouble when the daemon started, and again from just after the \
    credentials were issued until past their expiry: no credential served or written before the \
    first nor after 30 s before its expiry, every face 503 with the reason then; until then each \
    served on every face and file; /readyz, status and metrics agreeing throughout; attempts \
    within the backoff; every target served within one backoff step of each recovery";
const SKEW: &str = "in trouble when the daemon started, and again from just after the \
    credentials were issued until past their expiry: every target stopped on the side whose \
    clock is off (status, /readyz and metrics naming it, the hint naming the clocks) and retried \
    only at the longest backoff step; each credential served on every face and file until 30 s \
    before its expiry, none after (503 with the reason); every target served within one step of \
    the clock being set right";
const EXPIRING: &str = "Keycloak's token had 3 s left when fetched, each cloud held the \
    exchange 5 s and found it expired by its own check (STS ExpiredTokenException, Google \
    \"stale to sign-in\", Entra AADSTS700024): keyfed fetched a fresh token and tried once more \
    within the same attempt; no failed attempt, nothing expired served or written";
const FLAPPING: &str = "upstream down 3 s, up 2 s, across the credentials' refresh: nothing \
    expired served or written, a usable credential always served, every target refreshed \
    through the gaps, none stopped, all fresh within one backoff step of the end";

/// Who a side's rows name.
fn who(side: Side, kind: Kind) -> &'static str {
    match (side, kind) {
        (Side::Keycloak, _) => "Keycloak",
        (Side::Clouds, Kind::Down | Kind::Tls) => "clouds (AWS STS, Google STS and IAM, Entra)",
        (Side::Clouds, Kind::Slow | Kind::Throttled | Kind::Truncated | Kind::ClockSkew) => {
            "clouds (AWS STS, Google STS, Entra)"
        }
        (Side::Clouds, _) => "clouds (AWS STS, Google IAM, Entra)",
    }
}

fn rate(r: &Rate, counted: bool) -> String {
    let requests = if counted {
        format!(", {:.0} upstream requests/min", r.requests_per_minute)
    } else {
        String::new()
    };
    format!(
        "{:.0} attempts/min per target over {:.0} s (backoff allows ≤ {:.0}){requests}",
        r.attempts_per_minute, r.seconds, r.allowed_per_minute
    )
}

fn at_start(o: &Outage, requests: bool) -> String {
    format!(
        "{}; resumed {:.1} s after recovery",
        rate(&o.at_start, requests),
        o.resumed_at_start.as_secs_f64()
    )
}

fn mid_life(o: &Outage, requests: bool) -> String {
    format!(
        "last credential served {:.0} s into the outage, until {:.0} s before its expiry; {}; \
         resumed {:.1} s after recovery",
        o.served_into_outage.as_secs_f64(),
        o.served_until_before_expiry.as_secs_f64(),
        rate(&o.mid_life, requests),
        o.resumed_mid_life.as_secs_f64()
    )
}

fn flapping(f: &Flapping) -> String {
    format!(
        "{} flaps: {} refreshes and {} failed attempts; {} face answers served, {} 503 (a \
         credential expired before an attempt got through); resumed {:.1} s after the end",
        f.flaps,
        f.refreshed,
        f.failed,
        f.served,
        f.refused,
        f.resumed.as_secs_f64()
    )
}

/// Prepares a scenario's upstreams on a task of its own, so that making keys for several
/// scenarios uses both cores.
async fn prepare(side: Side, kind: Kind) -> (Upstreams, Trouble) {
    on_a_task(run::prepare(side, kind)).await
}

async fn on_a_task<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    match tokio::spawn(work).await {
        Ok(done) => done,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("preparing a scenario failed: {e}"),
        },
    }
}

/// Runs every scenario of `side` side by side and records their rows. Every scenario's
/// upstreams are ready (keys made, emulators listening) before the first daemon starts, and
/// every daemon is stopped (its log checked for leaks) only once all are done, so that no
/// scenario's clock runs while another does slow work.
async fn side(side: Side) {
    let mut prepared =
        futures::future::join_all(KINDS.iter().map(|&kind| prepare(side, kind))).await;
    let flapping_upstreams = prepare(side, Kind::Down).await;
    // Beside the clouds' scenarios: a token expiring between fetch and exchange.
    let expiring_upstreams = match side {
        Side::Clouds => Some(on_a_task(Upstreams::start()).await),
        Side::Keycloak => None,
    };
    let outages = prepared
        .drain(..)
        .map(|p| async move { (p.1.kind, outage::outage(p).await) });
    let expiring = async {
        match expiring_upstreams {
            Some(up) => Some(expiring::expiring(up).await),
            None => None,
        }
    };
    let (outages, (flapped, flapping_finish), expired) = futures::join!(
        futures::future::join_all(outages),
        flapping::flapping(flapping_upstreams),
        expiring
    );
    let mut figures = Vec::new();
    for (kind, (o, finish)) in outages {
        finish.stop().await;
        figures.push((kind, o));
    }
    flapping_finish.stop().await;
    if let Some((e, finish)) = expired {
        finish.stop().await;
        let exchanges: Vec<String> = e
            .exchanges
            .iter()
            .map(|(cloud, n)| format!("{cloud} {n}"))
            .collect();
        report::held(
            "Upstream fault: token expired between fetch and exchange (AWS, GCP, Entra)",
            EXPIRING,
            &format!(
                "exchanges per cloud: {}; every target served {:.1} s after start, 0 failed \
                 attempts",
                exchanges.join(", "),
                e.served_after.as_secs_f64()
            ),
        );
    }
    for (kind, o) in &figures {
        let name = who(side, *kind);
        // Requests refused at the port or at the handshake never reach the emulator's count.
        let counted = !matches!(kind, Kind::Down | Kind::Tls);
        if *kind == Kind::Down {
            report::held(
                &format!("Upstream fault: {name} down at start"),
                AT_START,
                &at_start(o, counted),
            );
            report::held(
                &format!("Upstream fault: {name} down mid-life, past expiry"),
                MID_LIFE,
                &mid_life(o, counted),
            );
        } else if *kind == Kind::ClockSkew {
            let skew = match side {
                Side::Keycloak => "clock behind (its tokens arrive expired)",
                Side::Clouds => "clocks ahead (every token looks expired)",
            };
            report::held(
                &format!("Upstream fault: {name} {skew}"),
                SKEW,
                &format!(
                    "at start: {}; mid-life: {}",
                    at_start(o, counted),
                    mid_life(o, counted)
                ),
            );
        } else {
            report::held(
                &format!("Upstream fault: {name} {}", kind.title()),
                BOTH,
                &format!(
                    "at start: {}; mid-life: {}",
                    at_start(o, counted),
                    mid_life(o, counted)
                ),
            );
        }
    }
    report::held(
        &format!("Upstream fault: {} flapping", who(side, Kind::Down)),
        FLAPPING,
        &flapping(&flapped),
    );
}

/// issue 11: Keycloak in every kind of trouble; every target fails with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_keycloak_in_trouble() {
    side(Side::Keycloak).await;
}

/// issue 11: AWS STS, Google and Entra in every kind of trouble at once; the bare token target,
/// which needs no cloud, never notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_clouds_in_trouble() {
    side(Side::Clouds).await;
}
