//! Issue 11: configuration parsing under fuzzing. The configuration parser lives in the keyfed
//! binary, out of reach of a `cargo fuzz` crate, so it is fuzzed here with proptest: each case
//! takes one of the annotated examples in `config/` (the seed corpus: every key keyfed knows,
//! half of them commented out) and mutates it — uncommenting optional keys, giving keys values
//! of any type and content, deleting, duplicating and swapping lines, inserting and deleting
//! characters — then loads it as `keyfed` does. Nothing may panic; a refusal names the file,
//! and a line and column inside it when it gives one; an accepted configuration prints
//! (`keyfed check`) and debug-prints without the secret it loaded.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

use super::*;

/// The seed corpus: the examples `config/` ships, every one of which loads as it is.
const SEEDS: [(&str, &str); 6] = [
    ("keyfed.toml", include_str!("../../config/keyfed.toml")),
    ("aws.toml", include_str!("../../config/aws.toml")),
    ("gcp.toml", include_str!("../../config/gcp.toml")),
    ("azure.toml", include_str!("../../config/azure.toml")),
    ("endpoint.toml", include_str!("../../config/endpoint.toml")),
    (
        "private-key-jwt.toml",
        include_str!("../../config/private-key-jwt.toml"),
    ),
];

/// The client secret the examples' `client_secret_file` holds: never printed.
const SECRET: &str = "issue-11-fuzzed-config-client-secret";

/// Mutated configurations loaded per run.
const CASES: u32 = 2000;

/// One change to a configuration's text.
#[derive(Debug, Clone)]
enum Edit {
    /// Strips the `#` and the spaces after it from the line (the examples comment out what is
    /// optional, so this turns keys on).
    Uncomment(usize),
    /// Replaces the value of the line's `key = value`.
    Value(usize, String),
    Delete(usize),
    Duplicate(usize, usize),
    Swap(usize, usize),
    /// Inserts text at a character of the line.
    Insert(usize, usize, String),
    /// Deletes characters of the line.
    Cut(usize, usize, usize),
}

/// Values of every TOML type, with contents keyfed's checks must survive.
fn value() -> impl Strategy<Value = String> {
    let text = prop_oneof![
        Just(String::new()),
        Just("${CREDENTIALS_DIRECTORY}/keycloak-secret".to_owned()),
        Just("${UNSET}".to_owned()),
        Just("$".to_owned()),
        Just("${".to_owned()),
        Just("corp".to_owned()),
        Just("aws-prod".to_owned()),
        Just("https://sso.example.com/realms/infra".to_owned()),
        Just("http://sso.example.com/realms/infra".to_owned()),
        Just("http://[::1]:0/realms/x?y#z".to_owned()),
        Just("127.0.0.1:9911".to_owned()),
        Just("[::1]:0".to_owned()),
        Just("169.254.169.254:80".to_owned()),
        Just("0s".to_owned()),
        Just("5m".to_owned()),
        Just("1h 30m".to_owned()),
        Just("18446744073709551615s".to_owned()),
        Just("99999999999999999h".to_owned()),
        Just("-1s".to_owned()),
        Just("/aws/aws-prod".to_owned()),
        Just("/".to_owned()),
        Just("relative/path".to_owned()),
        Just("arn:aws:iam::123456789012:role/onprem-web".to_owned()),
        Just("https://www.googleapis.com/auth/cloud-platform".to_owned()),
        Just("https://management.azure.com/.default".to_owned()),
        Just("0640".to_owned()),
        Just("root".to_owned()),
        "\\PC{0,24}",
        "[a-z0-9_.:/@${}-]{0,24}",
        any::<String>().prop_map(|s| s.chars().take(24).collect()),
    ];
    let string = text.prop_map(|s| toml_string(&s));
    prop_oneof![
        4 => string.clone(),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => prop_oneof![Just(0i64), Just(1), Just(-1), Just(0o640), Just(65536)]
            .prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(toml_float),
        1 => any::<bool>().prop_map(|b| b.to_string()),
        1 => proptest::collection::vec(string.clone(), 0..4)
            .prop_map(|items| format!("[{}]", items.join(", "))),
        1 => (string.clone(), string)
            .prop_map(|(a, b)| format!("{{ address = {a}, imds_target = {b} }}")),
    ]
}

/// `text` as a TOML basic string (JSON's escapes are TOML's).
fn toml_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

fn toml_float(f: f64) -> String {
    if f.is_nan() {
        "nan".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        format!("{f:?}")
    }
}

/// Texts worth inserting: TOML's syntax, and fragments of keyfed's keys and values.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("[[".to_owned()),
        Just("\"".to_owned()),
        Just("'''".to_owned()),
        Just("=".to_owned()),
        Just(".".to_owned()),
        Just(",".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("\n".to_owned()),
        Just("#".to_owned()),
        Just("\\u0000".to_owned()),
        Just("\u{feff}".to_owned()),
        Just("é".to_owned()),
        Just("targets.".to_owned()),
        Just("issuers.".to_owned()),
        Just("outputs".to_owned()),
        Just("endpoint.".to_owned()),
        "\\PC{1,8}",
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    let line = 0usize..200;
    prop_oneof![
        3 => line.clone().prop_map(Edit::Uncomment),
        4 => (line.clone(), value()).prop_map(|(l, v)| Edit::Value(l, v)),
        1 => line.clone().prop_map(Edit::Delete),
        1 => (line.clone(), line.clone()).prop_map(|(a, b)| Edit::Duplicate(a, b)),
        1 => (line.clone(), line.clone()).prop_map(|(a, b)| Edit::Swap(a, b)),
        2 => (line.clone(), 0usize..80, fragment()).prop_map(|(l, at, t)| Edit::Insert(l, at, t)),
        1 => (line, 0usize..80, 1usize..12).prop_map(|(l, at, n)| Edit::Cut(l, at, n)),
    ]
}

/// Applies `edits` to the text's lines (line numbers taken modulo the line count).
fn mutate(seed: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = seed.lines().map(str::to_owned).collect();
    for edit in edits {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match edit {
            Edit::Uncomment(l) => {
                let line = &mut lines[l % n];
                if let Some(rest) = line.trim_start().strip_prefix('#') {
                    *line = rest.trim_start().to_owned();
                }
            }
            Edit::Value(l, value) => {
                let line = &mut lines[l % n];
                if let Some((key, _)) = line.split_once('=') {
                    *line = format!("{key}= {value}");
                }
            }
            Edit::Delete(l) => {
                lines.remove(l % n);
            }
            Edit::Duplicate(from, to) => {
                let copy = lines[from % n].clone();
                lines.insert(to % (n + 1), copy);
            }
            Edit::Swap(a, b) => lines.swap(a % n, b % n),
            Edit::Insert(l, at, text) => {
                let line = &mut lines[l % n];
                let at = char_offset(line, *at);
                line.insert_str(at, text);
            }
            Edit::Cut(l, at, len) => {
                let line = &mut lines[l % n];
                let start = char_offset(line, *at);
                let end = char_offset(line, at + len);
                line.replace_range(start..end, "");
            }
        }
    }
    lines.join("\n")
}

/// The byte offset of the `chars`-th character of `line` (its end when shorter).
fn char_offset(line: &str, chars: usize) -> usize {
    line.char_indices()
        .nth(chars)
        .map_or(line.len(), |(i, _)| i)
}

/// A folder like a systemd unit's credentials directory: the examples' secret and key.
fn credentials() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let write = |name: &str, content: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
    };
    write("keycloak-secret", format!("{SECRET}\n").as_bytes());
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap_or_else(|e| panic!("{e}"));
    write("client-key.pem", key.serialize_pem().as_bytes());
    dir
}

/// Loads `text` from `file` as keyfed does; checks what a refusal or an acceptance shows.
fn load_checked(file: &Path, text: &str, credentials: &Path) -> Result<(), ConfigError> {
    std::fs::write(file, text).unwrap_or_else(|e| panic!("{e}"));
    let dir = credentials.to_string_lossy().into_owned();
    let env = move |name: &str| (name == "CREDENTIALS_DIRECTORY").then(|| dir.clone());
    let host = Host {
        hostname: "web-01".to_owned(),
        is_root: true,
    };
    let _ = control_socket(file, &env, &host);
    match load(file, &env, &host) {
        Ok(config) => {
            let shown = show(&config);
            assert!(
                !shown.contains(SECRET),
                "keyfed check shows the secret:\n{shown}"
            );
            let debug = format!("{config:?}");
            assert!(!debug.contains(SECRET), "Debug shows the secret:\n{debug}");
            Ok(())
        }
        Err(error) => {
            let shown = error.to_string();
            assert!(
                shown.starts_with(&file.display().to_string()),
                "the refusal does not name the file: {shown}"
            );
            assert!(!error.message.is_empty(), "an empty refusal: {shown}");
            if let Some((line, column)) = error.position {
                let lines = text.lines().count().max(1);
                assert!(
                    (1..=lines + 1).contains(&line) && column >= 1,
                    "position {line}:{column} outside the {lines} lines: {shown}"
                );
            }
            assert!(
                !shown.contains(SECRET),
                "the refusal shows the secret: {shown}"
            );
            Err(error)
        }
    }
}

/// Every seed loads as it is: the mutations start from configurations keyfed accepts.
#[test]
fn issue_11_every_seed_configuration_loads() {
    let credentials = credentials();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (name, text) in SEEDS {
        load_checked(&dir.path().join(name), text, credentials.path())
            .unwrap_or_else(|e| panic!("the example {name} does not load: {e}"));
    }
}

/// issue 11: mutated configurations never panic the loader, and every refusal and acceptance
/// shows what it should.
#[test]
fn issue_11_mutated_configurations_load_or_are_refused_cleanly() {
    let credentials = credentials();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let accepted = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let started = std::time::Instant::now();
    let mut runner = TestRunner::new(RunnerConfig {
        cases: CASES,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let strategy = (0..SEEDS.len(), proptest::collection::vec(edit(), 1..8));
    let result = runner.run(&strategy, |(seed, edits)| {
        let (name, text) = SEEDS[seed];
        let mutated = mutate(text, &edits);
        let counter = match load_checked(&dir.path().join(name), &mutated, credentials.path()) {
            Ok(()) => &accepted,
            Err(_) => &refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let (accepted, refused) = (accepted.into_inner(), refused.into_inner());
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused: the mutations explore nothing"
    );
    keyfed_core::emulator::report::held(
        "Fuzzing: configuration parsing",
        "proptest mutating the config/ examples (uncommented keys, values of every type, lines and characters moved): no panic, refusals name the file and a line inside it, no secret printed",
        &format!(
            "{} configurations in {:.1} s: {accepted} accepted, {refused} refused, 0 panics",
            accepted + refused,
            started.elapsed().as_secs_f64()
        ),
    );
}

proptest! {
    #![proptest_config(RunnerConfig { cases: 2000, failure_persistence: None, ..RunnerConfig::default() })]

    /// issue 11: `${VAR}` expansion takes any text: an error or the text with each variable
    /// replaced, and text without `$` unchanged.
    #[test]
    fn issue_11_expansion_takes_any_text(text in "\\PC{0,40}|[a-z${}]{0,20}", value in "\\PC{0,8}") {
        let env = |name: &str| (name == "A").then(|| value.clone());
        let expanded = expand::expand(&text, &env);
        if !text.contains('$') {
            prop_assert_eq!(expanded, Ok(text.clone()));
        }
    }
}
