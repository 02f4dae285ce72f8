//! `keyfed doctor` in the fixtures (issue 12): a run as text and with `--json`, the check that
//! the document says what the text says, and lookups of one target's check in the document.

use serde_json::Value;

use super::{Fixture, Run};

/// Runs `keyfed doctor ARGS` twice, as text and with `--json`; checks that the JSON parses and
/// says what the text says; returns both runs and the document.
pub async fn doctor(fx: &Fixture, args: &[&str]) -> (Run, Run, Value) {
    let mut text_args = vec!["doctor"];
    text_args.extend_from_slice(args);
    let text = fx.keyfed(&text_args).await;
    text_args.push("--json");
    let json = fx.keyfed(&text_args).await;
    assert_eq!(
        text.code, json.code,
        "text and JSON runs disagree:\n{}\n{}",
        text.stdout, json.stdout
    );
    let document: Value = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|e| panic!("doctor --json is not JSON ({e}):\n{}", json.stdout));
    matches_text(&document, &text.stdout);
    (text, json, document)
}

/// Numbers and hex identifiers masked: two runs a second apart differ in lifetimes, expiry
/// times and the request and trace IDs the clouds give. A run of hex digits is masked when it
/// holds a decimal digit or is 4 or more long, whatever it holds: a UUID's group may be all
/// letters (`ffbe`) in one run and not in the next. Words such as "added" are masked too, on
/// both sides of a comparison alike.
fn masked(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 4 || run.chars().any(|c| c.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[test]
fn issue_12_masking_hides_every_identifier_whatever_its_letters() {
    // Request and trace IDs of two runs: groups of letters only, of digits only, and mixed.
    let first = masked("request ID 5d0cffbe-abdc-4f7e-9f59-3f4f2b9c3a10, trace ID dead, 42 s");
    let second = masked("request ID 1234ab12-ffbe-0000-abcd-eeeeeeeeeeee, trace ID b00c, 7 s");
    assert_eq!(first, second);
    assert_eq!(first, "request ID #-#-#-#-#, trace ID #, # s");
    // Short runs of letters are words, kept.
    assert_eq!(masked("a bad fix: add a"), "a bad fix: add a");
}

/// Each check of the document is a line of the text, in its section, with its fix.
fn matches_text(document: &Value, text: &str) {
    let text = masked(text);
    let symbol = |status: &str| match status {
        "ok" => "✓",
        "fail" => "✗",
        "warn" => "!",
        "skip" => "-",
        "info" => "i",
        other => panic!("unknown status {other}"),
    };
    let section = |header: &str| -> String {
        let start = text
            .find(&masked(header))
            .unwrap_or_else(|| panic!("no section {header:?} in:\n{text}"));
        let rest = &text[start..];
        let end = rest[1..].find("\ntarget ").map_or(rest.len(), |i| i + 1);
        rest[..end].to_owned()
    };
    let mut sections = vec![(
        section(&format!(
            "configuration {}",
            document["file"].as_str().unwrap_or("")
        )),
        &document["config"],
    )];
    for target in document["targets"].as_array().into_iter().flatten() {
        let header = format!(
            "target {} ({}, issuer {})",
            target["name"].as_str().unwrap_or(""),
            target["kind"].as_str().unwrap_or(""),
            target["issuer"].as_str().unwrap_or("")
        );
        sections.push((section(&header), &target["checks"]));
    }
    for (section, checks) in sections {
        for check in checks.as_array().into_iter().flatten() {
            let line = masked(&format!(
                "  {} {:<18} {}\n",
                symbol(check["status"].as_str().unwrap_or("")),
                check["id"].as_str().unwrap_or(""),
                check["detail"].as_str().unwrap_or("")
            ));
            assert!(section.contains(&line), "{line:?} not in:\n{section}");
            if let Some(fix) = check["fix"].as_str() {
                let fix = masked(&format!("fix: {fix}\n"));
                assert!(section.contains(&fix), "{fix:?} not in:\n{section}");
            }
        }
    }
}

/// The check `id` of target `name` in a doctor document.
pub fn check<'a>(document: &'a Value, name: &str, id: &str) -> &'a Value {
    document["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == name)
        .and_then(|t| t["checks"].as_array())
        .into_iter()
        .flatten()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} for target {name} in {document:#}"))
}

/// Asserts check `id` of target `name` has `status`, and that its detail and fix (together)
/// hold each of `words`.
pub fn says(document: &Value, name: &str, id: &str, status: &str, words: &[&str]) {
    let c = check(document, name, id);
    assert_eq!(c["status"], status, "{name} {id}: {c:#}");
    let said = format!(
        "{} {}",
        c["detail"].as_str().unwrap_or(""),
        c["fix"].as_str().unwrap_or("")
    );
    for word in words {
        assert!(said.contains(word), "{name} {id} lacks {word:?}: {c:#}");
    }
}
