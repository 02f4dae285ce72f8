//! issue 9: a target whose upstream refuses it for good is stopped, not retried like a network
//! blip. STS answers `AccessDenied` (the role's trust policy, on the AWS side): `keyfed once`
//! exits 1 saying "stopped: needs a change on the cloud side" with STS's words; the daemon's
//! `status`, `/readyz` and `/metrics` say so; neither the background loop nor callers reach
//! STS again before the longest backoff step; a reload retries at once, and once the AWS side
//! is fixed, the reload brings the target back.

use std::time::Duration;

use keyfed_core::clock::{Clock as _, SystemClock, rfc3339};
use keyfed_core::emulator::Fault;
use rustix::process::Signal;

use crate::util::http::{client, status_of, text_of};
use crate::util::{Fixture, wait_until};

/// `[engine] retry_max` in this test: far longer than the test runs, so a retry before the
/// longest step would be one of the short steps.
const LONGEST: Duration = Duration::from_secs(3600);

/// STS's answer when the role's trust policy does not admit the token.
fn access_denied() -> Fault {
    Fault::Status {
        status: 403,
        body: "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
               <Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error>\
               <RequestId>c0ffee00-0000-4000-8000-000000000009</RequestId></ErrorResponse>"
            .to_owned(),
    }
}

/// The words a stopped AWS target shows wherever its state is shown.
const STOPPED: &str =
    "stopped: needs a change on the cloud side: STS refused AssumeRoleWithWebIdentity";
const STS_WORDS: &str = "AccessDenied: \"Not authorized to perform sts:AssumeRoleWithWebIdentity\"";

async fn status(fx: &Fixture) -> serde_json::Value {
    let all = fx.status_json().await;
    all.as_array()
        .and_then(|targets| targets.iter().find(|t| t["name"] == "aws"))
        .cloned()
        .unwrap_or_else(|| panic!("no target aws in {all}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_access_denied_stops_the_target_until_the_longest_step_or_a_reload() {
    let fx = Fixture::aws().await;
    let base = fx.endpoint_config(
        "",
        &format!(
            "\n[engine]\nretry_min = \"1s\"\nretry_max = \"{}s\"\n",
            LONGEST.as_secs()
        ),
    );
    fx.sts().control().inject("/", access_denied(), None);

    // `keyfed once`: exit 1, naming the side and quoting STS; AccessDenied is not a refused
    // token, so no second Keycloak token and no second STS request.
    let once = fx.keyfed(&["once"]).await;
    once.fails_with(1)
        .prints(&format!("FAILED  aws: {STOPPED}"))
        .prints(STS_WORDS)
        .says("1 target(s) failed: aws");
    assert_eq!(fx.sts().control().hits("/"), 1);
    assert_eq!(fx.keycloak().token_requests(), 1);
    fx.sts().control().reset_hits();

    // The daemon: its first attempt is refused, and the target is stopped.
    let started = SystemClock.now();
    let mut daemon = fx.daemon().await;
    let mut target = serde_json::Value::Null;
    wait_until("the first attempt to be refused", async || {
        target = status(&fx).await;
        target["last_error"].is_string()
    })
    .await;
    assert_eq!(target["state"], "stopped", "{target}");
    assert_eq!(target["stopped"], "the cloud side", "{target}");
    let last_error = target["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.starts_with(STOPPED) && last_error.contains(STS_WORDS),
        "{target}"
    );
    // The next retry is the longest step away, not one of the short ones.
    let longest_after_start = rfc3339(started + LONGEST);
    assert!(
        target["next_refresh"]
            .as_str()
            .is_some_and(|at| at >= longest_after_start.as_str()),
        "next retry before {longest_after_start}: {target}"
    );
    fx.keyfed(&["status"])
        .await
        .ok()
        .prints(&format!("    last error: {STOPPED}"));

    let http = client();
    let readyz = http.get(format!("{base}/readyz"));
    assert_eq!(status_of(readyz).await, 503);
    let ready = text_of(http.get(format!("{base}/readyz"))).await;
    assert!(ready.contains(&format!("aws: {STOPPED}")), "{ready}");
    assert!(ready.contains(STS_WORDS), "{ready}");
    let metrics = text_of(http.get(format!("{base}/metrics"))).await;
    assert!(
        metrics.contains("keyfed_target_stopped{target=\"aws\",side=\"cloud\"} 1")
            && metrics.contains("keyfed_target_stopped{target=\"aws\",side=\"issuer\"} 0"),
        "{metrics}"
    );

    // Callers meanwhile get the reason and cause no upstream request.
    for _ in 0..5 {
        fx.keyfed(&["credential-process", "aws"])
            .await
            .fails_with(1)
            .says(STOPPED);
    }
    let container = http
        .get(format!("{base}/aws/app"))
        .header("Authorization", fx.container_token());
    assert_eq!(status_of(container).await, 503);
    assert_eq!(
        fx.sts().control().hits("/"),
        1,
        "STS was asked again before the longest backoff step"
    );

    // A reload with nothing changed retries the stopped target at once (a reload is what
    // follows a fix); STS still refuses, and the target is stopped again.
    let reloaded = SystemClock.now();
    daemon.signal(Signal::HUP);
    daemon.wait_for_log("configuration reloaded").await;
    wait_until("the retry at the reload", async || {
        fx.sts().control().hits("/") == 2
    })
    .await;
    let longest_after_reload = rfc3339(reloaded + LONGEST);
    wait_until("the retry to be refused again", async || {
        status(&fx).await["next_refresh"]
            .as_str()
            .is_some_and(|at| at >= longest_after_reload.as_str())
    })
    .await;
    assert!(
        status(&fx).await["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with(STOPPED)),
    );

    // The AWS side is fixed; the reload brings the target back.
    fx.sts().control().clear_faults();
    daemon.signal(Signal::HUP);
    wait_until("the target to recover at the reload", async || {
        status(&fx).await["state"] == "fresh"
    })
    .await;
    let target = status(&fx).await;
    assert_eq!(target["last_error"], serde_json::Value::Null, "{target}");
    assert_eq!(target["stopped"], serde_json::Value::Null, "{target}");
    assert_eq!(status_of(http.get(format!("{base}/readyz"))).await, 200);
    let metrics = text_of(http.get(format!("{base}/metrics"))).await;
    assert!(
        ["config", "issuer", "cloud"]
            .iter()
            .all(|side| metrics.contains(&format!(
                "keyfed_target_stopped{{target=\"aws\",side=\"{side}\"}} 0"
            ))),
        "{metrics}"
    );
    assert_eq!(fx.sts().assume_role_calls(), 1);
    daemon.stop().await.ok();
}
