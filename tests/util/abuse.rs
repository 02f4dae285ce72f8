//! The endpoint abuse tests' instruments (issue 11): a local user abusing the endpoint
//! (`abuser.py`, run as another uid so the per-user caps see a user of its own), a legitimate
//! client checking every answer on every face and measuring its latency, and the daemon's
//! resident memory and sockets sampled from /proc. Latencies are figures for the report, never
//! assertions.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::faces::FaceCase;
use super::process::{self, Process};
use super::{Fixture, Serves, raw_exchange, users};

/// The abusing user: not root, not the test's user.
pub const ABUSER_UID: u32 = 65534;

const SCRIPT: &str = include_str!("abuser.py");

/// `abuser.py` running as [`ABUSER_UID`], abusing as its spec says until stopped.
pub struct Abuser {
    process: Process,
}

impl Abuser {
    /// Starts the abuse `spec` describes (see `abuser.py`; `host` and `port` are added) against
    /// the endpoint at `addr` (`127.0.0.1:PORT`) and returns once it is under way.
    pub async fn start(fx: &Fixture, addr: &str, mut spec: serde_json::Value) -> Self {
        let (host, port) = addr
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("no port in {addr}"));
        spec["host"] = host.into();
        spec["port"] = port.parse::<u16>().unwrap_or_else(|e| panic!("{e}")).into();
        let mut command = tokio::process::Command::new("prlimit");
        command
            .arg("--nofile=8192:8192")
            .args(users::setpriv(ABUSER_UID, ABUSER_UID))
            .args(["/usr/bin/python3", "-c", SCRIPT])
            .env_clear();
        let mut process = process::spawn_with_stdin(
            &format!("abuser.py as uid {ABUSER_UID} ({})", spec["mode"]),
            command,
            &fx.known,
            Serves::Nothing,
        );
        process.write_stdin(format!("{spec}\n").as_bytes()).await;
        let started = process.wait_for_stdout_lines(1).await;
        assert_eq!(started[0], "started", "{}", process.log_so_far());
        Self { process }
    }

    /// Ends the abuse; what the abuser saw (see `abuser.py`).
    pub async fn stop(mut self) -> serde_json::Value {
        self.process.write_stdin(b"stop\n").await;
        let lines = self.process.wait_for_stdout_lines(2).await;
        let run = self.process.wait().await;
        assert_eq!(run.code, Some(0), "abuser.py failed:\n{}", run.stderr);
        serde_json::from_str(&lines[1]).unwrap_or_else(|e| panic!("{e}: {}", lines[1]))
    }
}

/// What the legitimate client saw.
#[derive(Debug, Default, Clone)]
pub struct Probed {
    /// Every request's time from connecting to the end of the answer.
    pub latencies: Vec<Duration>,
    /// Requests not answered 200 with a credential, described.
    pub failures: Vec<String>,
    /// Requests per face.
    pub by_face: BTreeMap<&'static str, u64>,
    /// The distinct access tokens the GCE face served, in order.
    pub gce_tokens: Vec<String>,
}

impl Probed {
    /// The latency below which `share` (0 to 1) of the requests were answered.
    pub fn percentile(&self, share: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = (share * sorted.len() as f64).ceil() as usize;
        sorted
            .get(rank.saturating_sub(1))
            .copied()
            .unwrap_or_default()
    }

    /// "N requests on F faces, p99 X ms (p50 Y ms)".
    pub fn figures(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "legit {} requests on {} faces, p99 {:.1} ms (p50 {:.1} ms)",
            self.latencies.len(),
            self.by_face.len(),
            ms(self.percentile(0.99)),
            ms(self.percentile(0.5)),
        )
    }
}

/// A legitimate client on a thread of its own (so the test's other work does not skew its
/// figures): each face's SDK request in turn, each on a new connection, until stopped.
pub struct Prober {
    seen: Arc<Mutex<Probed>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Between a client's requests: a steady stream, not a flood of its own.
const PROBE_PAUSE: Duration = Duration::from_millis(5);

impl Prober {
    pub fn start(addr: &str, cases: Vec<FaceCase>) -> Self {
        let seen = Arc::new(Mutex::new(Probed::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, host) = (addr.to_owned(), addr.to_owned());
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                for case in cases.iter().cycle() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let head = case.head(&host, true, &[]);
                    let started = Instant::now();
                    let answer = exchange(&addr, head.as_bytes());
                    let took = started.elapsed();
                    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                    seen.latencies.push(took);
                    *seen.by_face.entry(case.name).or_default() += 1;
                    match check(case, &answer) {
                        Ok(Some(token)) if !seen.gce_tokens.contains(&token) => {
                            seen.gce_tokens.push(token);
                        }
                        Ok(_) => {}
                        Err(why) => seen.failures.push(why),
                    }
                    drop(seen);
                    std::thread::sleep(PROBE_PAUSE);
                }
            })
        };
        Self {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// What it saw so far.
    pub fn seen(&self) -> Probed {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn stop(mut self) -> Probed {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .unwrap_or_else(|_| panic!("the prober panicked"));
        }
        self.seen()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One request on a connection of its own: all the server sent until it closed, or why not.
fn exchange(addr: &str, head: &[u8]) -> Result<Vec<u8>, String> {
    let limit = Duration::from_secs(10);
    let target = addr.parse().map_err(|e| format!("address {addr}: {e}"))?;
    let mut stream =
        TcpStream::connect_timeout(&target, limit).map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_read_timeout(Some(limit));
    let _ = stream.set_write_timeout(Some(limit));
    stream.write_all(head).map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    Ok(answer)
}

/// Whether `answer` is `case`'s credential: the GCE face's access token when it is that face's.
fn check(case: &FaceCase, answer: &Result<Vec<u8>, String>) -> Result<Option<String>, String> {
    let answer = answer.as_ref().map_err(|e| format!("{}: {e}", case.name))?;
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200 ") || !body.contains(case.marker) {
        // A refusal's body is its reason; a 200 without the marker is cut short, not shown.
        let shown = if head.starts_with("HTTP/1.1 200 ") {
            "(no credential in it)"
        } else {
            body
        };
        let status = head.lines().next().unwrap_or("no answer");
        return Err(format!("{}: {status}: {shown:.200}", case.name));
    }
    if case.name != "gce" {
        return Ok(None);
    }
    let document: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("gce: {e}"))?;
    Ok(document["access_token"].as_str().map(str::to_owned))
}

/// The daemon's resident memory and open sockets, sampled every 20 ms from /proc until
/// stopped.
pub struct Vitals {
    pid: u32,
    before: Sample,
    peak: Arc<Mutex<Sample>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// One look at the daemon: its resident memory in KiB, and its sockets (listeners, upstream
/// connections and every endpoint connection it holds).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub rss_kib: u64,
    pub sockets: u64,
}

impl Sample {
    fn of(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
        let sockets = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .ok()?
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|link| link.to_string_lossy().starts_with("socket:"))
            .count() as u64;
        Some(Self { rss_kib, sockets })
    }

    fn max(self, other: Self) -> Self {
        Self {
            rss_kib: self.rss_kib.max(other.rss_kib),
            sockets: self.sockets.max(other.sockets),
        }
    }
}

/// What [`Vitals`] measured: before, the highest of each during, and after.
#[derive(Debug, Clone, Copy)]
pub struct VitalFigures {
    pub before: Sample,
    pub peak: Sample,
    pub after: Sample,
}

impl VitalFigures {
    /// "RSS 14.2 MiB before, +1.8 MiB at peak, +0.9 MiB after".
    pub fn memory(&self) -> String {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let delta = |kib: u64| mib(kib) - mib(self.before.rss_kib);
        format!(
            "RSS {:.1} MiB before, {:+.1} MiB at peak, {:+.1} MiB after",
            mib(self.before.rss_kib),
            delta(self.peak.rss_kib),
            delta(self.after.rss_kib)
        )
    }

    /// How much the resident memory grew at its peak, in KiB.
    pub fn growth_kib(&self) -> u64 {
        self.peak.rss_kib.saturating_sub(self.before.rss_kib)
    }
}

impl Vitals {
    pub fn start(pid: u32) -> Self {
        let before = Sample::of(pid).unwrap_or_else(|| panic!("no /proc/{pid}: the daemon exited"));
        let peak = Arc::new(Mutex::new(before));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(now) = Sample::of(pid) {
                        let mut peak = peak.lock().unwrap_or_else(PoisonError::into_inner);
                        *peak = peak.max(now);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Self {
            pid,
            before,
            peak,
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) -> VitalFigures {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let pid = self.pid;
        let after = Sample::of(pid).unwrap_or_else(|| panic!("no /proc/{pid}: the daemon exited"));
        let peak = *self.peak.lock().unwrap_or_else(PoisonError::into_inner);
        VitalFigures {
            before: self.before,
            peak: peak.max(after),
            after,
        }
    }
}

impl Drop for Vitals {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The daemon's `/metrics`, as root sees them (every target).
pub async fn metrics(base: &str) -> String {
    let host = base.trim_start_matches("http://");
    raw_exchange(
        base,
        format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// The sum of the samples in `metrics` whose line starts with `prefix` and holds every one of
/// `labels` (e.g. `result="success"`).
pub fn sample_sum(metrics: &str, prefix: &str, labels: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The daemon's successful refreshes so far, every target's.
pub async fn successful_refreshes(base: &str) -> u64 {
    let text = metrics(base).await;
    sample_sum(&text, "keyfed_refreshes_total{", &["result=\"success\""])
}
