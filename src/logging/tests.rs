//! What each line looks like (issue 13): the priority prefix per level and no timestamp under
//! the journal, one event on one line wherever it is not a terminal, timestamps elsewhere, the
//! JSON objects' shape, the journal check, and which events `KEYFED_LOG` and `--log-level` let
//! through — against an in-memory standard error and a clock the test sets.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use keyfed_core::clock::ManualClock;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Filter, SubscriberExt as _};
use tracing_subscriber::{EnvFilter, Layer as _, Registry};

use super::line::{MAX_TEXT, is_journal, shape};
use super::{Destination, filter, layer};
use crate::cli::{LogFormat, LogLevel};

/// 2023-11-14T22:13:20.250Z.
fn moment() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250)
}

/// Standard error, in memory.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Sink {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into()
    }
}

impl io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = Sink;

    fn make_writer(&'a self) -> Sink {
        self.clone()
    }
}

/// What `events` log with `format` for `destination`, everything let through.
fn logged(format: LogFormat, destination: Destination, events: impl FnOnce()) -> String {
    logged_with(format, destination, EnvFilter::new("trace"), events)
}

fn logged_with(
    format: LogFormat,
    destination: Destination,
    filter: impl Filter<Registry> + Send + Sync + 'static,
    events: impl FnOnce(),
) -> String {
    let sink = Sink::default();
    let clock = Arc::new(ManualClock::new(moment()));
    let subscriber = Registry::default()
        .with(layer(format, destination, clock, sink.clone()).with_filter(filter));
    tracing::subscriber::with_default(subscriber, events);
    sink.text()
}

/// One event of each level.
fn every_level() {
    tracing::error!("an error");
    tracing::warn!("a warning");
    tracing::info!("some news");
    tracing::debug!("a detail");
    tracing::trace!("a fine detail");
}

/// A message and a field with newlines (and a carriage return) inside.
fn multi_line() {
    tracing::warn!(detail = "a\nb", "first line\nsecond line\r\nthird");
}

#[test]
fn issue13_under_the_journal_each_line_starts_with_its_priority_and_has_no_timestamp() {
    let log = logged(LogFormat::Text, Destination::Journal, every_level);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        [
            "<3>ERROR an error",
            "<4>WARN a warning",
            "<6>INFO some news",
            "<7>DEBUG a detail",
            "<7>TRACE a fine detail",
        ],
        "{log}"
    );
}

#[test]
fn issue13_a_multi_line_message_is_one_prefixed_line_under_the_journal() {
    let log = logged(LogFormat::Text, Destination::Journal, multi_line);
    // The formatter quotes a field's text as Rust does (`"a\nb"`, a backslash and an n), and
    // the line escapes that backslash like any other.
    assert_eq!(
        log, "<4>WARN first line\\nsecond line\\r\\nthird detail=\"a\\\\nb\"\n",
        "escaped: no line of it reaches the journal without the prefix"
    );
}

#[test]
fn issue13_text_elsewhere_has_a_utc_timestamp_with_milliseconds_and_one_line_per_event() {
    let log = logged(LogFormat::Text, Destination::Other, every_level);
    let first = log.lines().next().unwrap_or_default();
    assert_eq!(first, "2023-11-14T22:13:20.250Z ERROR an error", "{log}");
    assert_eq!(log.lines().count(), 5, "{log}");
    assert!(!log.contains('\x1b'), "no colour outside a terminal: {log}");
    assert!(
        !log.contains('<'),
        "no priority prefix outside the journal: {log}"
    );

    let log = logged(LogFormat::Text, Destination::Other, multi_line);
    assert_eq!(
        log,
        "2023-11-14T22:13:20.250Z  WARN first line\\nsecond line\\r\\nthird detail=\"a\\\\nb\"\n"
    );
}

#[test]
fn issue13_on_a_terminal_text_has_the_time_of_day_and_keeps_newlines() {
    let log = logged(LogFormat::Text, Destination::Terminal, || {
        tracing::info!("one\ntwo");
    });
    assert!(log.contains("22:13:20.250Z"), "{log}");
    assert!(!log.contains("2023-11-14"), "{log}");
    assert!(
        log.contains("one\ntwo\n"),
        "a person reads it as written: {log:?}"
    );
}

fn parse(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn issue13_json_is_one_object_per_line_with_typed_fields_and_spans() {
    let log = logged(LogFormat::Json, Destination::Other, || {
        let span = tracing::info_span!("refresh", target = "aws", slot = 2);
        let _in = span.enter();
        tracing::info!(
            target = "aws",
            took_ms = 84_u64,
            delta = -3_i64,
            ratio = 0.5,
            fresh = true,
            credential = %"AWS keys",
            "refreshed\nwith a newline"
        );
    });
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1, "{log}");
    let event = parse(lines[0]);
    let mut keys: Vec<&str> = event
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["fields", "level", "message", "spans", "target", "timestamp"],
        "{event}"
    );
    // Written in this order, for people reading the file too.
    assert!(
        lines[0].starts_with(
            r#"{"timestamp":"2023-11-14T22:13:20.250Z","level":"info","target":"keyfed::logging::tests","message":"#
        ),
        "{log}"
    );
    assert_eq!(event["timestamp"], "2023-11-14T22:13:20.250Z");
    assert_eq!(event["level"], "info");
    assert_eq!(event["target"], "keyfed::logging::tests");
    assert_eq!(event["message"], "refreshed\nwith a newline");
    assert_eq!(
        event["fields"],
        serde_json::json!({
            "target": "aws", "took_ms": 84, "delta": -3, "ratio": 0.5, "fresh": true,
            "credential": "AWS keys",
        })
    );
    assert_eq!(
        event["spans"],
        serde_json::json!([{ "name": "refresh", "target": "aws", "slot": 2 }])
    );
}

#[test]
fn issue13_json_outside_spans_has_empty_fields_and_spans() {
    let log = logged(LogFormat::Json, Destination::Other, || {
        tracing::warn!("plain");
    });
    let event = parse(log.trim_end());
    assert_eq!(event["fields"], serde_json::json!({}));
    assert_eq!(event["spans"], serde_json::json!([]));
    assert_eq!(event["level"], "warn");
}

#[test]
fn issue13_a_span_field_recorded_later_shows_in_json() {
    let log = logged(LogFormat::Json, Destination::Other, || {
        let span = tracing::info_span!("attempt", n = 1, outcome = tracing::field::Empty);
        span.record("outcome", "retry");
        span.record("n", 2);
        let _in = span.enter();
        tracing::info!("inside");
    });
    let event = parse(log.trim_end());
    assert_eq!(
        event["spans"],
        serde_json::json!([{ "name": "attempt", "n": 2, "outcome": "retry" }])
    );
}

#[test]
fn issue13_json_under_the_journal_is_prefixed_and_the_rest_is_the_object() {
    let log = logged(LogFormat::Json, Destination::Journal, every_level);
    let mut priorities = Vec::new();
    for line in log.lines() {
        let (prefix, object) = line.split_at(3);
        priorities.push(prefix.to_owned());
        let event = parse(object);
        assert!(event["timestamp"].is_string(), "{line}");
    }
    assert_eq!(priorities, ["<3>", "<4>", "<6>", "<7>", "<7>"], "{log}");
}

#[test]
fn issue13_shape_escapes_control_characters_but_keeps_tabs_and_utf8() {
    assert_eq!(
        shape("a\0b\tc\x1bé\x7f\\n\n".as_bytes(), None, true),
        "a\\x00b\tc\\x1bé\\x7f\\\\n\n".as_bytes()
    );
    assert_eq!(shape(b"x", Some(6), true), b"<6>x\n", "a newline is added");
    assert_eq!(shape(b"  INFO x\n", Some(6), false), b"<6>INFO x\n");
    assert_eq!(
        shape(b"a\nb\n", None, false),
        b"a\nb\n",
        "a terminal's line as is"
    );
}

#[test]
fn issue13_the_journal_is_standard_error_only_when_journal_stream_names_it() {
    let stderr = Some((64769, 1234));
    assert!(is_journal(Some("64769:1234"), stderr));
    assert!(!is_journal(Some("64769:1235"), stderr), "another inode");
    assert!(!is_journal(Some("1:1234"), stderr), "another device");
    assert!(
        !is_journal(Some("64769:1234"), None),
        "standard error closed"
    );
    assert!(!is_journal(None, stderr));
    for garbage in [
        "",
        ":",
        "64769",
        "64769:",
        "x:1234",
        "64769:1234:5",
        "-1:1234",
    ] {
        assert!(!is_journal(Some(garbage), stderr), "{garbage:?}");
    }
}

/// Which of a set of events, one per (target, level) pair, `keyfed_log` and `level` let through.
fn passed(
    keyfed_log: Option<&str>,
    level: Option<LogLevel>,
) -> (Vec<&'static str>, Option<String>) {
    let chosen = filter::choose(keyfed_log.map(OsStr::new), level);
    let log = logged_with(LogFormat::Json, Destination::Other, chosen.filter, || {
        tracing::info!(target: "keyfed", "keyfed info");
        tracing::debug!(target: "keyfed", "keyfed debug");
        tracing::debug!(target: "keyfed::engine", "keyfed::engine debug");
        tracing::trace!(target: "keyfed::engine", "keyfed::engine trace");
        tracing::info!(target: "keyfed_azure", "keyfed_azure info");
        tracing::debug!(target: "keyfed_azure", "keyfed_azure debug");
        tracing::debug!(target: "keyfed_keycloak", "keyfed_keycloak debug");
        tracing::warn!(target: "reqwest", "reqwest warn");
        tracing::info!(target: "reqwest", "reqwest info");
        tracing::debug!(target: "reqwest", "reqwest debug");
        tracing::debug!(target: "hyper", "hyper debug");
    });
    let all = [
        "keyfed info",
        "keyfed debug",
        "keyfed::engine debug",
        "keyfed::engine trace",
        "keyfed_azure info",
        "keyfed_azure debug",
        "keyfed_keycloak debug",
        "reqwest warn",
        "reqwest info",
        "reqwest debug",
        "hyper debug",
    ];
    let messages: Vec<String> = log
        .lines()
        .map(|l| parse(l)["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    let passed = all
        .into_iter()
        .filter(|m| messages.iter().any(|x| x == m))
        .collect();
    (passed, chosen.warning)
}

#[test]
fn issue13_the_default_is_info_for_every_keyfed_crate_and_warn_for_libraries() {
    let (passed, warning) = passed(None, None);
    assert_eq!(passed, ["keyfed info", "keyfed_azure info", "reqwest warn"]);
    assert_eq!(warning, None);
    assert_eq!(
        passed_ignoring_warning(Some("  ")),
        passed,
        "empty KEYFED_LOG is unset"
    );
}

fn passed_ignoring_warning(keyfed_log: Option<&str>) -> Vec<&'static str> {
    passed(keyfed_log, None).0
}

#[test]
fn issue13_log_level_sets_keyfeds_crates_and_leaves_libraries_at_warn() {
    let (debug, _) = passed(None, Some(LogLevel::Debug));
    assert_eq!(
        debug,
        [
            "keyfed info",
            "keyfed debug",
            "keyfed::engine debug",
            "keyfed_azure info",
            "keyfed_azure debug",
            "keyfed_keycloak debug",
            "reqwest warn",
        ]
    );
    let (warn, _) = passed(None, Some(LogLevel::Warn));
    assert_eq!(warn, ["reqwest warn"]);
}

#[test]
fn issue13_log_level_combines_with_keyfed_log_and_wins_for_keyfeds_crates() {
    // Libraries as KEYFED_LOG says, keyfed's crates as --log-level says.
    let (both, _) = passed(Some("reqwest=debug"), Some(LogLevel::Debug));
    assert_eq!(
        both,
        [
            "keyfed info",
            "keyfed debug",
            "keyfed::engine debug",
            "keyfed_azure info",
            "keyfed_azure debug",
            "keyfed_keycloak debug",
            "reqwest warn",
            "reqwest info",
            "reqwest debug",
        ]
    );
    // KEYFED_LOG=debug lets everything through at debug; --log-level warn quiets keyfed only.
    let (quiet, _) = passed(Some("debug"), Some(LogLevel::Warn));
    assert_eq!(
        quiet,
        [
            "reqwest warn",
            "reqwest info",
            "reqwest debug",
            "hyper debug"
        ]
    );
    // A module named in KEYFED_LOG is more specific than a crate: it keeps its level.
    let (module, _) = passed(Some("warn,keyfed::engine=trace"), Some(LogLevel::Info));
    assert_eq!(
        module,
        [
            "keyfed info",
            "keyfed::engine debug",
            "keyfed::engine trace",
            "keyfed_azure info",
            "reqwest warn",
        ]
    );
}

#[test]
fn issue13_a_bad_keyfed_log_is_named_in_a_warning_and_the_default_applies() {
    let (default, _) = passed(None, None);
    let (bad, warning) = passed(Some("keyfed=loud"), None);
    assert_eq!(bad, default);
    let warning = warning.unwrap_or_else(|| panic!("no warning"));
    assert!(warning.contains("KEYFED_LOG=\"keyfed=loud\""), "{warning}");
    // --log-level still applies over the default.
    let (with_level, _) = passed(Some("keyfed=loud"), Some(LogLevel::Warn));
    assert_eq!(with_level, ["reqwest warn"]);
}

#[test]
fn issue13_every_crate_of_the_workspace_is_one_of_keyfeds_own() {
    // keyfed_azure was missing from the default filter: its lines were hidden even at
    // --log-level debug.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |path: &std::path::Path| -> toml::Table {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.parse()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let workspace = read(&root.join("Cargo.toml"));
    let members = workspace["workspace"]["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no workspace members"));
    let mut crates: Vec<String> = members
        .iter()
        .map(|m| {
            let manifest = read(&root.join(m.as_str().unwrap_or_default()).join("Cargo.toml"));
            let name = manifest["package"]["name"].as_str().unwrap_or_default();
            name.replace('-', "_")
        })
        .collect();
    crates.sort();
    let mut own: Vec<String> = filter::CRATES.iter().map(|c| (*c).to_owned()).collect();
    own.sort();
    assert_eq!(own, crates);
    for c in filter::CRATES {
        assert!(filter::default().contains(&format!("{c}=info")), "{c}");
    }
}

#[test]
fn issue13_the_aws_runtime_stays_capped_at_debug_whatever_the_flags() {
    let chosen = filter::choose(Some(OsStr::new("trace")), Some(LogLevel::Trace));
    let log = logged_with(
        LogFormat::Text,
        Destination::Other,
        chosen.filter.and(super::cap()),
        || {
            tracing::trace!(target: "aws_smithy_runtime::client", "whole request");
            tracing::debug!(target: "aws_smithy_runtime::client", "a summary");
        },
    );
    assert!(log.contains("a summary"), "{log}");
    assert!(!log.contains("whole request"), "{log}");
}

/// Issue 13, review: serde_json writes DEL as is, and the text lines' escaping turned it into
/// `\x7f`, which is no JSON escape: anyone who chose an upstream's error text could make a
/// log shipper drop the line.
#[test]
fn issue13_json_with_a_del_or_a_backslash_in_it_stays_json_in_the_journal_and_a_file() {
    for destination in [Destination::Journal, Destination::Other] {
        let log = logged(LogFormat::Json, destination, || {
            tracing::warn!(detail = "c\x7f\\d\0", "a\x7fb\\n\u{2028}é");
        });
        let object = log.strip_prefix("<4>").unwrap_or(&log);
        assert_eq!(log.lines().count(), 1, "{destination:?}: {log:?}");
        let event = parse(object.trim_end());
        assert_eq!(event["message"], "a\u{7f}b\\n\u{2028}é", "{destination:?}");
        assert_eq!(event["fields"]["detail"], "c\u{7f}\\d\0", "{destination:?}");
    }
}

/// Issue 13, review: a backslash was written as is, so an upstream's text `\n<3>ERROR …` read
/// like a real newline escaped.
#[test]
fn issue13_a_backslash_in_text_is_escaped_so_no_one_forges_an_escaped_newline() {
    let log = logged(LogFormat::Text, Destination::Journal, || {
        tracing::error!("real\nforged\\n<3>ERROR x");
    });
    assert_eq!(log, "<3>ERROR real\\nforged\\\\n<3>ERROR x\n");
    let log = logged(LogFormat::Text, Destination::Other, || {
        tracing::error!("a\\b");
    });
    assert!(log.ends_with(" ERROR a\\\\b\n"), "{log:?}");
    let log = logged(LogFormat::Text, Destination::Terminal, || {
        tracing::error!("a\\b");
    });
    assert!(log.contains(" a\\b"), "as written on a terminal: {log:?}");
}

const MARKER: &str = " bytes cut]";

/// The number of bytes a `…[N bytes cut]` marker ending `text` says were cut.
fn cut_bytes(text: &str) -> usize {
    let inside = text
        .strip_suffix(MARKER)
        .and_then(|t| t.rsplit_once("…["))
        .unwrap_or_else(|| panic!("no marker at the end: …{:?}", tail(text)));
    inside
        .1
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {:?}", tail(text)))
}

fn tail(text: &str) -> &str {
    let from = text.floor_char_boundary(text.len().saturating_sub(60));
    &text[from..]
}

/// Issue 13, review: journald splits a line longer than 48 KiB and reads a priority at the
/// start of each piece, where anyone's text could say `<0>`.
#[test]
fn issue13_a_long_event_is_cut_on_a_character_boundary_with_a_marker_in_text_and_json() {
    // 3-byte characters, so a cut at a byte count would split one; NULs, written 4 (text) or 6
    // (JSON) bytes long, so the limit must count bytes as written.
    let long = format!("start {}", "€".repeat(6000));
    let nuls = "\0".repeat(6000);
    for (text, escaped) in [(&long, long.clone()), (&nuls, "\\x00".repeat(6000))] {
        let log = logged(LogFormat::Text, Destination::Journal, || {
            tracing::error!("{text}");
        });
        assert_eq!(log.lines().count(), 1);
        let line = log.strip_suffix('\n').unwrap_or_else(|| panic!("{log:?}"));
        let written = line.strip_prefix("<3>").unwrap_or_else(|| panic!("{line}"));
        let cut = cut_bytes(written);
        let kept = &written[..written.len() - format!("…[{cut}{MARKER}").len()];
        assert!(
            kept.len() <= MAX_TEXT && kept.len() > MAX_TEXT - 4,
            "{}",
            kept.len()
        );
        let kept = kept.strip_prefix("ERROR ").unwrap_or_default();
        assert!(
            escaped.starts_with(kept),
            "cut between characters and escapes"
        );
        let kept_bytes = kept.len() * text.len() / escaped.len();
        assert_eq!(
            kept_bytes + cut,
            text.len(),
            "the marker counts the bytes cut"
        );
    }
    let short = logged(LogFormat::Text, Destination::Other, || {
        tracing::error!("{}", "x".repeat(MAX_TEXT - 100));
    });
    assert!(!short.contains(MARKER), "a line that fits is whole");

    for destination in [Destination::Journal, Destination::Other] {
        let log = logged(LogFormat::Json, destination, || {
            tracing::error!(detail = %long, nuls = %nuls, "{long}");
        });
        assert_eq!(log.lines().count(), 1);
        let object = log.strip_prefix("<3>").unwrap_or(&log);
        let event = parse(object.trim_end());
        for (key, value, original) in [
            ("message", &event["message"], &long),
            ("detail", &event["fields"]["detail"], &long),
            ("nuls", &event["fields"]["nuls"], &nuls),
        ] {
            let value = value.as_str().unwrap_or_else(|| panic!("{key}: {event}"));
            let cut = cut_bytes(value);
            let kept = &value[..value.len() - format!("…[{cut}{MARKER}").len()];
            assert!(original.starts_with(kept), "{key}");
            assert_eq!(kept.len() + cut, original.len(), "{key}");
            let as_json = serde_json::to_string(kept).unwrap_or_default().len() - 2;
            assert!(
                as_json <= MAX_TEXT && as_json > MAX_TEXT - 8,
                "{key}: {as_json}"
            );
        }
        assert!(object.len() < 4 * MAX_TEXT, "{}", object.len());
    }
}

/// A failure whose message already holds its cause's, as many libraries' errors do.
#[derive(Debug)]
struct Outer(Inner);

#[derive(Debug)]
struct Inner;

impl std::fmt::Display for Outer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot reach Keycloak: {}", self.0)
    }
}

impl std::fmt::Display for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection refused")
    }
}

impl std::error::Error for Outer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl std::error::Error for Inner {}

/// Issue 13, review: JSON's error fields had their own chain, which said a cause twice when
/// the outer message already held it; now the one every error message uses.
#[test]
fn issue13_a_json_error_field_names_each_cause_once() {
    let log = logged(LogFormat::Json, Destination::Other, || {
        let error: &(dyn std::error::Error + 'static) = &Outer(Inner);
        tracing::warn!(error, "refresh failed");
    });
    let event = parse(log.trim_end());
    assert_eq!(
        event["fields"]["error"],
        "cannot reach Keycloak: connection refused"
    );
}

/// Issue 13, review: a `KEYFED_LOG` that is not UTF-8 was taken as unset, without a word.
#[test]
fn issue13_a_keyfed_log_that_is_not_utf8_is_named_in_a_warning_and_the_default_applies() {
    let chosen = filter::choose(Some(OsStr::from_bytes(b"keyfed=\xffdebug")), None);
    let warning = chosen.warning.unwrap_or_else(|| panic!("no warning"));
    assert!(
        warning.starts_with(
            "KEYFED_LOG=\"keyfed=\u{fffd}debug\" is not UTF-8; logging with the default filter"
        ),
        "{warning}"
    );
    let log = logged_with(LogFormat::Text, Destination::Other, chosen.filter, || {
        tracing::debug!(target: "keyfed", "keyfed debug");
        tracing::info!(target: "keyfed", "keyfed info");
    });
    assert!(
        log.contains("keyfed info") && !log.contains("keyfed debug"),
        "{log}"
    );
}
