//! `keyfed run` speaks systemd's notification protocol (issue 7: untested before): against a
//! real `NOTIFY_SOCKET` it sends READY=1 only once the first round of refreshes is done,
//! WATCHDOG=1 at half of `WATCHDOG_USEC`, RELOADING=1 then READY=1 again on SIGHUP, and
//! STOPPING=1 on SIGTERM.

use std::time::Duration;

use keyfed_core::emulator::{Fault, Latch};
use tokio::net::UnixDatagram;

use crate::util::{Fixture, held};

/// What systemd would receive, one datagram at a time.
struct Notifications {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Notifications {
    /// The next datagram's assignments (`READY=1`, …), waiting a generous while for it.
    async fn next(&mut self) -> Vec<String> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(15), self.socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no notification after {:?}", self.seen))
            .unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        self.seen.push(text.clone());
        text.lines().map(str::to_owned).collect()
    }

    /// Reads datagrams until one holds `wanted`, skipping watchdog pings; any other
    /// assignment on the way fails the test.
    async fn until(&mut self, wanted: &str) {
        loop {
            let lines = self.next().await;
            if lines.iter().any(|l| l == wanted) {
                return;
            }
            assert!(
                lines.iter().all(|l| l == "WATCHDOG=1"),
                "{lines:?} before {wanted} (all: {:?})",
                self.seen
            );
        }
    }
}

#[tokio::test]
async fn issue_7_ready_watchdog_reloading_and_stopping_reach_notify_socket() {
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target(
        "aws",
        r#"{ kind = "credential-process-json", path = "process.json" }"#,
    ));
    let path = fx.path("notify.sock");
    let mut notes = Notifications {
        socket: UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{e}")),
        seen: Vec::new(),
    };
    // The first exchange is held, so READY=1 provably waits for the first round.
    let first_exchange = Latch::new();
    fx.sts()
        .control()
        .inject("/", Fault::Hold(first_exchange.clone()), Some(1));
    let mut daemon = fx.spawn_run(
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap_or_default()),
            // A 2 s watchdog: keyfed pings every second.
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    held(&first_exchange, 1, "the first exchange").await;
    let mut buf = [0u8; 64];
    assert!(
        notes.socket.try_recv(&mut buf).is_err(),
        "nothing is sent while the first round is under way"
    );
    first_exchange.release();

    let first = notes.next().await;
    assert!(
        first.iter().any(|l| l == "READY=1"),
        "READY=1 comes first: {first:?}"
    );
    assert!(
        fx.path("process.json").exists(),
        "READY=1 only once the first credentials are written"
    );
    // The watchdog is pinged again and again.
    assert_eq!(notes.next().await, ["WATCHDOG=1"]);
    assert_eq!(notes.next().await, ["WATCHDOG=1"]);

    daemon.signal(rustix::process::Signal::HUP);
    notes.until("RELOADING=1").await;
    notes.until("READY=1").await;
    daemon.wait_for_log("configuration reloaded").await;

    let log = daemon.stop().await;
    assert_eq!(log.code, Some(0), "{}", log.stderr);
    notes.until("STOPPING=1").await;
}
