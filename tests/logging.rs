//! Issue 13, logs: the real binary's standard error under systemd's journal (`JOURNAL_STREAM`
//! naming standard error's device and inode: a syslog priority prefix on every line, no
//! timestamp), elsewhere (an RFC 3339 timestamp), as JSON for log shippers (every line an
//! object, no secret in it even at debug during a real refresh, checked raw and decoded by the
//! leak check), and which lines `--log-level` and `KEYFED_LOG` let through — each a `keyfed
//! once` refreshing an AWS target against the emulators.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Stdio;

use crate::util::{Fixture, Run, Serves};

/// A fixture whose `keyfed once` refreshes one AWS target through Keycloak and STS.
async fn refreshing() -> Fixture {
    let fx = Fixture::aws().await;
    fx.daemon_config(&fx.aws_target(
        "aws",
        r#"{ kind = "credential-process-json", path = "process.json" }"#,
    ));
    fx
}

/// `DEVICE:INODE` of `path`, as systemd sets `JOURNAL_STREAM`.
fn identity(path: &Path) -> String {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("{}:{}", meta.dev(), meta.ino())
}

/// `keyfed --config … ARGS` with standard error a file (`log`, created empty) and `env` added;
/// its output is leak-checked as every keyfed run's is.
async fn keyfed_into_file(fx: &Fixture, log: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let config = fx.path("keyfed.toml");
    let mut full = vec!["--config", config.to_str().unwrap_or_default()];
    full.extend_from_slice(args);
    let output = fx
        .keyfed_command(&[], &full, env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run keyfed: {e}"))
        .wait_with_output()
        .await
        .unwrap_or_else(|e| panic!("keyfed: {e}"));
    let run = Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: std::fs::read_to_string(log).unwrap_or_else(|e| panic!("{e}")),
    };
    let what = format!("keyfed {} (stderr into a file)", full.join(" "));
    fx.check_output(&what, Serves::for_keyfed(&full), &run.stdout, &run.stderr);
    run
}

/// The syslog priority journald takes from the prefix for each level word.
fn priority_of(level: &str) -> Option<char> {
    match level {
        "ERROR" => Some('3'),
        "WARN" => Some('4'),
        "INFO" => Some('6'),
        "DEBUG" | "TRACE" => Some('7'),
        _ => None,
    }
}

#[tokio::test]
async fn issue13_under_the_journal_every_line_has_a_priority_and_no_timestamp() {
    let fx = refreshing().await;
    let log = fx.path("journal.log");
    std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
    let stream = identity(&log);
    let run = keyfed_into_file(&fx, &log, &["once"], &[("JOURNAL_STREAM", &stream)]).await;
    run.ok();
    assert!(
        run.stderr
            .contains("<6>INFO refresh{target=aws}: refreshed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("<7>DEBUG refresh{target=aws}: token received"),
        "{}",
        run.stderr
    );
    for line in run.stderr.lines() {
        let (prefix, rest) = line.split_at_checked(3).unwrap_or_default();
        let level = rest.split(' ').next().unwrap_or_default();
        assert_eq!(
            Some(prefix),
            priority_of(level).map(|p| format!("<{p}>")).as_deref(),
            "every line starts with its priority, then its level (no timestamp): {line:?}\n{}",
            run.stderr
        );
    }
    assert!(!run.stderr.contains('\x1b'), "no colour under the journal");

    // JSON under the journal: the prefix, then the object (journald strips the prefix).
    let run = keyfed_into_file(
        &fx,
        &log,
        &["once", "--log-format", "json"],
        &[("JOURNAL_STREAM", &identity(&log))],
    )
    .await;
    run.ok();
    for line in run.stderr.lines() {
        let (prefix, object) = line.split_at_checked(3).unwrap_or_default();
        let event = json(object);
        let level = event["level"].as_str().unwrap_or_default().to_uppercase();
        assert_eq!(
            Some(prefix),
            priority_of(&level).map(|p| format!("<{p}>")).as_deref(),
            "{line}"
        );
    }
}

#[tokio::test]
async fn issue13_an_inherited_journal_stream_naming_another_file_gives_normal_lines() {
    let fx = refreshing().await;
    // The journal's stream as a parent saw it; this keyfed's standard error is redirected.
    let journal = fx.path("journal.log");
    std::fs::File::create(&journal).unwrap_or_else(|e| panic!("{e}"));
    let stream = identity(&journal);
    let log = fx.path("redirected.log");
    let run = keyfed_into_file(&fx, &log, &["once"], &[("JOURNAL_STREAM", &stream)]).await;
    run.ok();
    assert!(run.stderr.contains("refreshed"), "{}", run.stderr);
    for line in run.stderr.lines() {
        let stamp = line.split(' ').next().unwrap_or_default();
        assert!(
            stamp.len() == 24 && humantime::parse_rfc3339(stamp).is_ok(),
            "a UTC timestamp with milliseconds first: {line:?}"
        );
        assert!(!line.starts_with('<'), "no priority prefix: {line:?}");
    }
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON object ({e}): {line:?}"))
}

/// Every string in `value`, decoded, one a line.
fn strings(value: &serde_json::Value, into: &mut String) {
    match value {
        serde_json::Value::String(s) => {
            into.push_str(s);
            into.push('\n');
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, into)),
        serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| {
            into.push_str(k);
            into.push('\n');
            strings(v, into);
        }),
        _ => {}
    }
}

#[tokio::test]
async fn issue13_json_logs_at_debug_are_objects_with_their_fields_and_hold_no_secret() {
    let fx = refreshing().await;
    // KEYFED_LOG=debug, as for every keyfed the tests run; the raw output is leak-checked.
    let run = fx.keyfed(&["once", "--log-format", "json"]).await;
    run.ok();
    let events: Vec<serde_json::Value> = run.stderr.lines().map(json).collect();
    assert!(events.len() > 3, "{}", run.stderr);
    for event in &events {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(event[key].is_string(), "{key} in {event}");
        }
        assert!(event["fields"].is_object(), "{event}");
        assert!(event["spans"].is_array(), "{event}");
        let stamp = event["timestamp"].as_str().unwrap_or_default();
        assert!(
            stamp.ends_with('Z') && humantime::parse_rfc3339(stamp).is_ok(),
            "RFC 3339 UTC: {stamp}"
        );
    }
    let refreshed = events
        .iter()
        .find(|e| e["message"] == "refreshed")
        .unwrap_or_else(|| panic!("no refreshed event:\n{}", run.stderr));
    assert_eq!(refreshed["level"], "info");
    assert_eq!(refreshed["target"], "keyfed::engine::target");
    assert_eq!(refreshed["fields"]["target"], "aws");
    assert!(
        refreshed["fields"]["took_ms"].is_u64(),
        "a number: {refreshed}"
    );
    assert_eq!(
        refreshed["spans"],
        serde_json::json!([{ "name": "refresh", "target": "aws" }])
    );
    assert!(
        events
            .iter()
            .any(|e| e["level"] == "debug" && e["target"] == "keyfed_keycloak::client"),
        "debug lines of keyfed's crates:\n{}",
        run.stderr
    );
    // JSON escapes some characters: the leak check also reads every string decoded.
    let mut decoded = String::new();
    events.iter().for_each(|e| strings(e, &mut decoded));
    fx.check_output(
        "keyfed once --log-format json (its log's strings decoded)",
        Serves::Nothing,
        "",
        &decoded,
    );
}

/// `keyfed once ARGS` without `KEYFED_LOG`.
async fn once_without_keyfed_log(fx: &Fixture, args: &[&str]) -> Run {
    let config = fx.path("keyfed.toml");
    let mut full = vec!["--config", config.to_str().unwrap_or_default(), "once"];
    full.extend_from_slice(args);
    let mut command = fx.keyfed_command(&[], &full, &[]);
    command.env_remove("KEYFED_LOG");
    let run = crate::util::process::run(
        &format!("keyfed {}", full.join(" ")),
        command,
        &fx.known,
        Serves::Nothing,
    )
    .await;
    run.ok();
    run
}

#[tokio::test]
async fn issue13_log_level_debug_shows_what_info_hides_and_warn_hides_info() {
    let fx = refreshing().await;
    let debug = once_without_keyfed_log(&fx, &["--log-level", "debug"]).await;
    assert!(debug.stderr.contains("token received"), "{}", debug.stderr);
    assert!(debug.stderr.contains("refreshed"), "{}", debug.stderr);
    let info = once_without_keyfed_log(&fx, &["--log-level", "info"]).await;
    assert!(info.stderr.contains("refreshed"), "{}", info.stderr);
    assert!(!info.stderr.contains("DEBUG"), "{}", info.stderr);
    assert!(!info.stderr.contains("token received"), "{}", info.stderr);
    let warn = once_without_keyfed_log(&fx, &["--log-level", "warn"]).await;
    assert!(!warn.stderr.contains("INFO"), "{}", warn.stderr);
    assert!(!warn.stderr.contains("refreshed"), "{}", warn.stderr);
}

#[tokio::test]
async fn issue13_a_bad_keyfed_log_is_named_in_one_warning_and_the_default_applies() {
    let fx = refreshing().await;
    let run = fx
        .keyfed_with(&["once"], &[("KEYFED_LOG", "keyfed=loud")])
        .await;
    run.ok();
    let warning = "KEYFED_LOG=\"keyfed=loud\" is not a valid filter";
    assert_eq!(run.stderr.matches(warning).count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains(" WARN "), "{}", run.stderr);
    assert!(
        run.stderr.contains("refreshed"),
        "info, as by default: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("token received"),
        "not debug: {}",
        run.stderr
    );

    // Issue 13, review: one that is not UTF-8 was taken as unset, without a word.
    let config = fx.path("keyfed.toml");
    let args = ["--config", config.to_str().unwrap_or_default(), "once"];
    let mut command = fx.keyfed_command(&[], &args, &[]);
    command.env("KEYFED_LOG", OsStr::from_bytes(b"keyfed=\xffdebug"));
    let run = crate::util::process::run(
        "keyfed once (KEYFED_LOG not UTF-8)",
        command,
        &fx.known,
        Serves::Nothing,
    )
    .await;
    run.ok();
    let warning = "KEYFED_LOG=\"keyfed=\u{fffd}debug\" is not UTF-8";
    assert_eq!(run.stderr.matches(warning).count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("refreshed"), "{}", run.stderr);
    assert!(!run.stderr.contains("token received"), "{}", run.stderr);
}

#[tokio::test]
async fn issue13_gcp_subject_token_still_logs_nothing_whatever_the_flags() {
    let (fx, gcp) = Fixture::gcp().await;
    let output = r#"{ kind = "gcp-subject-token", path = "subject.jwt" }"#;
    fx.daemon_config(&fx.gcp_target(&gcp, "gcp", "", output));
    let daemon = fx.daemon().await;
    let log = fx.path("journal.log");
    std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
    let stream = identity(&log);
    // Every way to ask for logs at once, a bad KEYFED_LOG (whose warning would be a log line)
    // among them: Google's libraries read its stderr with its stdout.
    let args = [
        "gcp-subject-token",
        "gcp",
        "--log-level",
        "trace",
        "--log-format",
        "json",
    ];
    let env = [
        ("JOURNAL_STREAM", stream.as_str()),
        ("KEYFED_LOG", "keyfed=loud"),
    ];
    let run = keyfed_into_file(&fx, &log, &args, &env).await;
    run.ok();
    assert_eq!(run.stderr, "", "nothing but the JSON document");
    assert!(run.stdout.contains("\"success\":true"), "{}", run.stdout);
    daemon.stop().await;
}
