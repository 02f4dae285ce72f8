//! issue 7: single flight and the engine's lifecycle through the real binary. Callers provably
//! arrive while the upstream call is held at a latch — the daemon logs each one waiting for the
//! refresh — for a first fetch and for a renewal, over the control socket and the container
//! face: one Keycloak and one STS request per refresh. Concurrent daemonless
//! `credential-process` calls share one exchange through the cache lock, whose wait is bounded.
//! A reload keeps an unchanged failing target's backoff and last error, and an engine retired
//! by a reload writes none of the old configuration's outputs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use keyfed_aws::emulator::{OidcProvider, Role, StsEmulator};
use keyfed_core::clock::{Clock, Sleep, SystemClock, rfc3339};

use crate::util::{AWS_AUD, Fixture, ROLE, Run, free_port, held, wait_until};

/// What the daemon logs (at debug level) for each caller that waits for a refresh.
const WAITING: &str = "no usable credential: waiting for a refresh";

/// The lifetime the STS emulator gives credentials in these tests (`duration = "15m"`).
const DURATION: u64 = 900;

/// A clock running behind the real one by an adjustable number of seconds: an STS emulator on
/// it issues credentials that expire sooner than their duration says, so a test can see one
/// expire without waiting a quarter of an hour.
#[derive(Debug, Default)]
struct Behind(AtomicU64);

impl Behind {
    fn set(&self, seconds: u64) {
        self.0.store(seconds, Ordering::SeqCst);
    }

    fn by(&self) -> Duration {
        Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

impl Clock for Behind {
    fn now(&self) -> SystemTime {
        SystemClock.now() - self.by()
    }

    fn sleep_until(&self, deadline: SystemTime) -> Sleep<'_> {
        Box::pin(async move { SystemClock.sleep_until(deadline + self.by()).await })
    }
}

/// An STS emulator trusting the fixture's Keycloak, on `clock`, known to the leak check.
async fn sts_on(fx: &Fixture, clock: Arc<dyn Clock>, roles: &[&str]) -> Arc<StsEmulator> {
    let issuer = fx.keycloak().issuer_url();
    let mut builder = StsEmulator::builder()
        .provider(OidcProvider {
            url: issuer.clone(),
            client_ids: vec![AWS_AUD.to_owned()],
        })
        .clock(clock);
    for role in roles {
        builder = builder.role(Role::new(role, &issuer));
    }
    let sts = Arc::new(
        builder
            .start()
            .await
            .unwrap_or_else(|e| panic!("sts emulator: {e}")),
    );
    fx.known.add_emulator(&sts);
    sts
}

/// Keycloak, and STS on a clock the test can set back.
async fn fixture_behind() -> (Fixture, Arc<Behind>) {
    let mut fx = Fixture::new();
    fx.start_default().await;
    let behind = Arc::new(Behind::default());
    let sts = sts_on(&fx, Arc::clone(&behind) as Arc<dyn Clock>, &[ROLE]).await;
    fx.sts = Some(sts);
    (fx, behind)
}

/// The AWS target `name` with `duration = "15m"` and `outputs`.
fn aws_target(fx: &Fixture, name: &str, outputs: &str) -> String {
    fx.aws_target(name, outputs).replacen(
        "session_name =",
        &format!("duration = \"{DURATION}s\", session_name ="),
        1,
    )
}

/// An `[endpoint]` serving target "aws" on the container face at `/aws/app`; its base URL.
fn endpoint() -> (String, String) {
    let port = free_port();
    (
        format!(
            "container_path = \"/aws/app\"\n\n[endpoint]\nlisten = [\"127.0.0.1:{port}\"]\n\
             container_token_file = \"container-token\"\n"
        ),
        format!("http://127.0.0.1:{port}"),
    )
}

fn access_key(document: &str) -> String {
    let doc: serde_json::Value =
        serde_json::from_str(document.trim()).unwrap_or_else(|e| panic!("{e}: {document}"));
    doc["AccessKeyId"]
        .as_str()
        .unwrap_or_else(|| panic!("no AccessKeyId in {document}"))
        .to_owned()
}

/// The daemon's view of target `name` (`keyfed status --json`).
async fn status(fx: &Fixture, name: &str) -> serde_json::Value {
    let all = fx.status_json().await;
    all.as_array()
        .and_then(|targets| targets.iter().find(|t| t["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no target {name} in {all}"))
}

/// `processes` `keyfed credential-process aws` runs and `requests` container-face requests, all
/// started at once; `release` runs beside them (it waits for them to arrive, then lets the
/// upstream answer). Returns every AccessKeyId they got.
async fn callers(
    fx: &Fixture,
    base: &str,
    processes: usize,
    requests: usize,
    release: impl Future<Output = ()>,
) -> Vec<String> {
    let token = fx.container_token();
    let http = crate::util::http::client();
    let url = format!("{base}/aws/app");
    let by_process = futures::future::join_all(
        (0..processes).map(|_| fx.keyfed(&["credential-process", "aws"])),
    );
    let by_http = futures::future::join_all((0..requests).map(|_| async {
        let response = http
            .get(&url)
            .header("Authorization", &token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("container face: {e}"));
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "container face: {body}");
        body
    }));
    let (runs, bodies, ()) = tokio::join!(by_process, by_http, release);
    let mut keys: Vec<String> = runs
        .iter()
        .map(|r: &Run| access_key(&r.ok().stdout))
        .collect();
    keys.extend(bodies.iter().map(|b| access_key(b)));
    keys
}

/// issue 7 (single flight): callers that arrive while the first exchange is held at STS — over
/// the control socket and the container face — all wait for it: one Keycloak and one STS
/// request, one credential for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_callers_during_a_held_first_fetch_share_one_exchange() {
    let fx = Fixture::aws().await;
    let (endpoint_keys, base) = endpoint();
    fx.daemon_config(&(fx.aws_target("aws", "") + &endpoint_keys));
    let latch = fx.sts().control().hold("/");
    let daemon = fx.daemon().await;
    held(&latch, 1, "the first exchange").await;
    let (processes, requests) = (30, 50);
    let release = async {
        wait_until("every caller to wait inside the daemon", async || {
            daemon.log_so_far().matches(WAITING).count() >= processes + requests
        })
        .await;
        assert_eq!(latch.waiting(), 1, "the first exchange is still held");
        assert_eq!(fx.keycloak().token_requests(), 1);
        latch.release();
    };
    let keys = callers(&fx, &base, processes, requests, release).await;
    assert_eq!(keys.len(), processes + requests);
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    assert_eq!(fx.keycloak().token_requests(), 1);
    assert_eq!(fx.sts().control().hits("/"), 1);
    assert_eq!(fx.sts().assume_role_calls(), 1);
    daemon.stop().await.ok();
}

/// issue 7 (single flight): the same for a renewal. The first credential expires (STS issued it
/// on a clock 14 minutes behind); the callers that find it expired start one renewal, held at
/// STS, and share it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_callers_during_a_held_renewal_share_one_exchange() {
    let (fx, behind) = fixture_behind().await;
    behind.set(DURATION - 40);
    let (endpoint_keys, base) = endpoint();
    fx.daemon_config(&(aws_target(&fx, "aws", "") + &endpoint_keys));
    let daemon = fx.daemon().await;
    let first = access_key(&fx.keyfed(&["credential-process", "aws"]).await.ok().stdout);
    let issued = fx.sts().issued_credentials();
    assert_eq!(issued.len(), 1);
    let expiration = issued[0].expiration;

    // From now on STS issues full-length credentials, and holds its answers.
    behind.set(0);
    let latch = fx.sts().control().hold("/");
    // Expired for keyfed once it is within 30 s of its end (keyfed reads the expiry to the
    // second, never later than STS recorded it).
    wait_until("the first credential to expire", async || {
        SystemClock.now() + Duration::from_secs(30) >= expiration
    })
    .await;
    assert_eq!(status(&fx, "aws").await["state"], "expired");
    let (keycloak_before, sts_before) =
        (fx.keycloak().token_requests(), fx.sts().control().hits("/"));
    let waiting_before = daemon.log_so_far().matches(WAITING).count();

    let (processes, requests) = (30, 50);
    let release = async {
        wait_until("every caller to wait inside the daemon", async || {
            daemon.log_so_far().matches(WAITING).count() >= waiting_before + processes + requests
        })
        .await;
        held(&latch, 1, "the renewal").await;
        assert_eq!(latch.waiting(), 1, "one renewal, held");
        assert_eq!(fx.keycloak().token_requests(), keycloak_before + 1);
        latch.release();
    };
    let keys = callers(&fx, &base, processes, requests, release).await;
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    assert_ne!(keys[0], first, "a renewed credential");
    assert_eq!(fx.keycloak().token_requests(), keycloak_before + 1);
    assert_eq!(fx.sts().control().hits("/"), sts_before + 1);
    daemon.stop().await.ok();
}

/// issue 7: concurrent `keyfed credential-process` calls without a daemon share one exchange
/// through the cache lock: one call exchanges (held at STS) while the seven others provably
/// wait for the lock; then all print the same credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_concurrent_daemonless_credential_process_calls_share_one_exchange() {
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target("aws", ""));
    let daemonless = fx.daemonless("aws");
    let (args, env) = (daemonless.args(), daemonless.env());
    let latch = fx.sts().control().hold("/");
    let calls: Vec<_> = (0..8).map(|_| fx.spawn_with(&args, &env)).collect();
    held(&latch, 1, "the exchange of the call holding the cache lock").await;
    wait_until("seven calls to wait for the cache lock", async || {
        calls
            .iter()
            .filter(|c| c.log_so_far().contains("waiting for the cache lock"))
            .count()
            == 7
    })
    .await;
    assert_eq!(fx.keycloak().token_requests(), 1);
    latch.release();
    let mut keys = Vec::new();
    for call in calls {
        let run = call.wait().await;
        keys.push(access_key(&run.ok().stdout));
    }
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    assert_eq!(fx.keycloak().token_requests(), 1);
    assert_eq!(fx.sts().control().hits("/"), 1);
}

/// issue 7: the wait for the daemonless cache lock is bounded. With the lock held by someone
/// else (and the cache stale), a call waits one attempt timeout and a little more, then
/// exchanges without the lock.
#[tokio::test]
async fn issue_7_a_held_cache_lock_does_not_hang_credential_process() {
    let fx = Fixture::aws().await;
    fx.daemon_config(&format!(
        "[engine]\nattempt_timeout = \"2s\"\n\n{}",
        fx.aws_target("aws", "")
    ));
    let daemonless = fx.daemonless("aws");
    let (args, env) = (daemonless.args(), daemonless.env());
    fx.keyfed_raw(&args, &env).await.ok();
    // The cache goes stale (removed), and someone holds its lock.
    let files: Vec<_> = std::fs::read_dir(daemonless.runtime.join("keyfed"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    let lock_path = files
        .iter()
        .find(|p| p.extension().is_some_and(|x| x == "lock"))
        .unwrap_or_else(|| panic!("no lock file in {files:?}"));
    for cache in files
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
    {
        std::fs::remove_file(cache).unwrap_or_else(|e| panic!("{e}"));
    }
    let lock = std::fs::File::open(lock_path).unwrap_or_else(|e| panic!("{e}"));
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .unwrap_or_else(|e| panic!("{e}"));
    let run = tokio::time::timeout(Duration::from_secs(60), fx.keyfed_raw(&args, &env))
        .await
        .unwrap_or_else(|_| panic!("credential-process waited for the held cache lock"));
    run.ok().says("exchanging without it");
    assert_eq!(fx.sts().assume_role_calls(), 2);
    drop(lock);
}

/// issue 7 (reload): a reload that changes one target leaves a failing, unchanged sibling in
/// its backoff — same retry time, same last error, no upstream request — where it used to
/// start over and call its upstream at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_a_reload_keeps_a_failing_siblings_backoff_and_last_error() {
    let fx = Fixture::aws().await;
    // The sibling's own STS, throttling every request: a passing trouble, retried with backoff
    // (issue 9: a refusal such as AccessDenied stops the target instead, and a reload retries
    // a stopped target at once — tests/stopped_targets.rs).
    let refusing = sts_on(&fx, Arc::new(SystemClock), &[]).await;
    refusing.control().inject(
        "/",
        keyfed_core::emulator::Fault::Status {
            status: 400,
            body: "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
                   <Code>Throttling</Code><Message>Rate exceeded</Message></Error>\
                   <RequestId>c0ffee00-0000-4000-8000-000000000007</RequestId></ErrorResponse>"
                .to_owned(),
        },
        None,
    );
    let config = |output: &str| {
        let changed = fx.aws_target(
            "changed",
            &format!("{{ kind = \"credential-process-json\", path = \"{output}\" }}"),
        );
        let steady = fx
            .aws_target("steady", "")
            .replace(&fx.sts().endpoint_url(), &refusing.endpoint_url());
        format!("[engine]\nretry_min = \"1h\"\nretry_max = \"1h\"\n\n{changed}\n{steady}")
    };
    fx.daemon_config(&config("changed-1.json"));
    // Backoff is random (full jitter up to an hour); a retry due within two minutes could
    // come during the test, so such a draw starts over with a new daemon.
    let mut attempt = 0;
    let (mut daemon, before) = loop {
        attempt += 1;
        let daemon = fx.daemon().await;
        let mut steady = serde_json::Value::Null;
        wait_until("the sibling's first attempt to fail", async || {
            steady = status(&fx, "steady").await;
            steady["last_error"].is_string()
        })
        .await;
        let soonest = rfc3339(SystemClock.now() + Duration::from_secs(120));
        if steady["next_refresh"]
            .as_str()
            .is_some_and(|at| at > soonest.as_str())
        {
            break (daemon, steady);
        }
        assert!(
            attempt < 5,
            "five backoff draws under two minutes: {steady}"
        );
        daemon.stop().await;
    };
    assert_eq!(before["state"], "backing off");
    assert!(
        before["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("Throttling") && !e.contains("stopped")),
        "{before}"
    );
    let refused = refusing.control().hits("/");

    fx.daemon_config(&config("changed-2.json"));
    daemon.signal(rustix::process::Signal::HUP);
    daemon.wait_for_log("configuration reloaded").await;
    // The changed target started over: it refreshed and wrote its new output.
    wait_until("the changed target's new output", async || {
        fx.path("changed-2.json").exists()
    })
    .await;
    let after = status(&fx, "steady").await;
    assert_eq!(after["state"], "backing off", "{after}");
    assert_eq!(after["next_refresh"], before["next_refresh"], "{after}");
    assert_eq!(after["last_error"], before["last_error"], "{after}");
    assert_eq!(
        refusing.control().hits("/"),
        refused,
        "the sibling retried at the reload"
    );
    daemon.stop().await.ok();
}

/// issue 7 (defect 9): an engine replaced by a reload while its refresh is in flight lets that
/// refresh finish for its caller, but writes nothing to the old configuration's output: the
/// file keeps the credential it had, and the new configuration's output gets the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_7_a_refresh_in_flight_at_a_reload_writes_no_old_output() {
    let (fx, behind) = fixture_behind().await;
    behind.set(DURATION - 40);
    let config = |output: &str| {
        aws_target(
            &fx,
            "aws",
            &format!("{{ kind = \"credential-process-json\", path = \"{output}\" }}"),
        )
    };
    fx.daemon_config(&config("old.json"));
    let mut daemon = fx.daemon().await;
    let first = access_key(&fx.keyfed(&["credential-process", "aws"]).await.ok().stdout);
    let read = |name: &str| std::fs::read_to_string(fx.path(name)).unwrap_or_default();
    wait_until("the first credential in old.json", async || {
        read("old.json").contains(&first)
    })
    .await;
    let expiration = fx.sts().issued_credentials()[0].expiration;
    behind.set(0);
    let latch = fx.sts().control().hold("/");
    wait_until("the first credential to expire", async || {
        SystemClock.now() + Duration::from_secs(30) >= expiration
    })
    .await;

    // A caller makes the old engine refresh; the refresh waits at STS.
    let caller = fx.keyfed(&["credential-process", "aws"]);
    let reload = async {
        held(&latch, 1, "the old engine's refresh").await;
        fx.daemon_config(&config("new.json"));
        daemon.signal(rustix::process::Signal::HUP);
        daemon.wait_for_log("configuration reloaded").await;
        // The new engine (its outputs changed) refreshes for itself.
        held(&latch, 2, "the new engine's refresh beside the old one's").await;
        latch.release();
    };
    let (run, ()) = tokio::join!(caller, reload);
    let renewed = access_key(&run.ok().stdout);
    assert_ne!(renewed, first);
    daemon
        .wait_for_log("retired by a reload: outputs left to the new configuration")
        .await;
    wait_until("the new output", async || {
        read("new.json").contains("AccessKeyId")
    })
    .await;
    assert!(
        read("old.json").contains(&first),
        "the old output was rewritten after the reload: {}",
        read("old.json")
    );
    assert_eq!(fx.sts().assume_role_calls(), 3);
    daemon.stop().await.ok();
}
