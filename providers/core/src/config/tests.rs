use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::*;

/// A provider's own keys, read beside the HTTP keys.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Own {
    role: String,
    count: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    target: std::collections::BTreeMap<String, WithHttp<Own>>,
}

/// Parses like keyfed's host does: toml's deserializer under serde_path_to_error, and the
/// error as "line:column: path: message".
fn parse(text: &str) -> Result<File, String> {
    let de = toml::Deserializer::parse(text).map_err(|e| e.message().to_owned())?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let line_column = e.inner().span().map(|s| {
            let before = &text[..s.start];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, str::len) + 1;
            format!("{line}:{column}")
        });
        format!(
            "{}: {}: {}",
            line_column.unwrap_or_default(),
            e.path(),
            e.inner().message()
        )
    })
}

#[test]
fn with_http_reads_both_parts_of_one_table() {
    let file = parse(
        "[target.a]\nrole = \"r\"\nca_file = \"ca.pem\"\ncount = 3\ntimeout = \"90s\"\n\
         [target.b]\nrole = \"s\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let a = &file.target["a"];
    assert_eq!(
        a.table,
        Own {
            role: "r".into(),
            count: Some(3)
        }
    );
    assert_eq!(a.role, "r", "With derefs to the table's own keys");
    assert_eq!(
        *a.http(),
        RawHttp {
            ca_file: Some("ca.pem".into()),
            timeout: Some(HumanDuration(Duration::from_secs(90))),
            ..RawHttp::default()
        }
    );
    assert_eq!(*file.target["b"].http(), RawHttp::default());
}

#[test]
fn errors_name_the_key_and_its_position_as_a_flat_table_would() {
    // An unknown key: serde's message, listing the table's keys and then the HTTP keys.
    let err = parse("[target.a]\nrole = \"r\"\nrolle = 1\n").err();
    assert_eq!(
        err.as_deref(),
        Some(
            "3:1: target.a.rolle: unknown field `rolle`, expected one of `role`, `count`, \
             `ca_file`, `allow_insecure_http`, `connect_timeout`, `timeout`"
        )
    );
    // A bad value of a shared key, and of an own key after it.
    let err = parse("[target.a]\nrole = \"r\"\ntimeout = \"soonish\"\n").err();
    assert!(
        err.as_deref().is_some_and(|e| e.starts_with(
            "3:11: target.a.timeout: expected a duration such as \"90s\", \"5m\" or \"1h\", found \"soonish\""
        )),
        "{err:?}"
    );
    let err = parse("[target.a]\nallow_insecure_http = 1\nrole = \"r\"\n").err();
    assert_eq!(
        err.as_deref(),
        Some("2:23: target.a.allow_insecure_http: invalid type: integer `1`, expected a boolean")
    );
    let err = parse("[target.a]\nconnect_timeout = \"1s\"\ncount = \"x\"\nrole = \"r\"\n").err();
    assert_eq!(
        err.as_deref(),
        Some("3:9: target.a.count: invalid type: string \"x\", expected u32")
    );
    // A missing key of the table's own.
    let err = parse("[target.a]\ntimeout = \"1s\"\n").err();
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("target.a: missing field `role`")),
        "{err:?}"
    );
    // Inline tables too.
    let err = parse("target = { a = { role = \"r\", proxy = \"p\" } }\n").err();
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("target.a.proxy: unknown field `proxy`")),
        "{err:?}"
    );
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Extra {
    colour: Option<String>,
}

impl Keys for Extra {
    fn find(key: &str) -> Option<&'static str> {
        (key == "colour").then_some("colour")
    }
    fn names() -> Vec<&'static str> {
        vec!["colour"]
    }
    fn read<'de, D: serde::Deserializer<'de>>(
        &mut self,
        _key: &'static str,
        value: D,
    ) -> Result<(), D::Error> {
        self.colour = Some(String::deserialize(value)?);
        Ok(())
    }
}

#[test]
fn key_sets_compose_as_tuples() {
    #[derive(Debug, Deserialize)]
    struct Doc {
        t: With<Own, (RawHttp, Extra)>,
    }
    let doc: Doc = toml::from_str("[t]\nrole = \"r\"\ncolour = \"red\"\ntimeout = \"1s\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(doc.t.keys.1.colour.as_deref(), Some("red"));
    assert_eq!(
        doc.t.keys.0.timeout,
        Some(HumanDuration(Duration::from_secs(1)))
    );
    let err = toml::from_str::<Doc>("[t]\nrole = \"r\"\nshade = 1\n")
        .err()
        .map(|e| e.message().to_owned());
    assert_eq!(
        err.as_deref(),
        Some(
            "unknown field `shade`, expected one of `role`, `count`, `ca_file`, \
             `allow_insecure_http`, `connect_timeout`, `timeout`, `colour`"
        )
    );
}

#[test]
fn human_durations_parse_and_print_and_bare_numbers_are_refused() {
    #[derive(Deserialize)]
    struct T {
        d: HumanDuration,
    }
    let t: Result<T, _> = toml::from_str("d = \"1h 30m\"");
    assert_eq!(t.map(|t| t.d.0).ok(), Some(Duration::from_secs(5400)));
    let bad: Result<T, _> = toml::from_str("d = \"soon\"");
    assert!(bad.is_err_and(|e| e.message().contains("expected a duration")));
    let number: Result<T, _> = toml::from_str("d = 90");
    assert!(number.is_err());
    assert_eq!(HumanDuration(Duration::from_secs(90)).to_string(), "1m 30s");
}

/// A host whose configuration file sits in `dir` and whose environment has `CA=ca.pem`.
struct Host<'a> {
    dir: &'a Path,
}

impl Context for Host<'_> {
    fn expand(&self, value: &str) -> Result<String, String> {
        Ok(value.replace("${CA}", "ca.pem"))
    }
    fn path(&self, value: &str) -> Result<PathBuf, String> {
        let value = self.expand(value)?;
        if value.is_empty() {
            return Err("expected a file path, found an empty string".into());
        }
        Ok(self.dir.join(value))
    }
    fn hostname(&self) -> &str {
        "web-01"
    }
}

#[test]
fn http_keys_resolve_with_defaults_and_refuse_what_cannot_work() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let host = Host { dir: dir.path() };
    let defaults = RawHttp::default()
        .resolve(&host)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(defaults.connect_timeout, Duration::from_secs(5));
    assert_eq!(defaults.timeout, Duration::from_secs(30));
    assert!(!defaults.allow_insecure_http && defaults.ca_file.is_none());

    let with_ca = RawHttp {
        ca_file: Some("${CA}".into()),
        allow_insecure_http: Some(true),
        ..RawHttp::default()
    };
    assert_eq!(
        with_ca.resolve(&host).err(),
        Some(KeyError::new(
            "ca_file",
            format!("{}/ca.pem is not a readable file", dir.path().display())
        ))
    );
    std::fs::write(dir.path().join("ca.pem"), "pem").unwrap_or_else(|e| panic!("{e}"));
    let resolved = with_ca.resolve(&host).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resolved.ca_file, Some(dir.path().join("ca.pem")));
    assert!(resolved.allow_insecure_http);

    let zero = RawHttp {
        timeout: Some(HumanDuration(Duration::ZERO)),
        ..RawHttp::default()
    };
    assert_eq!(
        zero.resolve(&host).err(),
        Some(KeyError::new(
            "timeout",
            "expected a duration greater than zero"
        ))
    );
}

#[test]
fn urls_are_absolute_https_or_loopback_without_credentials() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let host = Host { dir: dir.path() };
    let check = |value: &str, insecure: bool| url(&host, "endpoint_url", value, insecure);
    assert!(check("https://sts.example.com", false).is_ok());
    assert!(check("http://127.0.0.1:9000", false).is_ok());
    assert!(check("http://sts.example.com", true).is_ok());
    for (value, says) in [
        ("sts.example.com", "expected an absolute URL"),
        ("https://u:p@sts.example.com", "credentials in the URL"),
        ("https://sts.example.com/?a=b", "without ?query"),
        ("http://sts.example.com", "plain http://"),
    ] {
        let err = check(value, false).err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.key == "endpoint_url" && e.message.contains(says)),
            "{value}: {err:?}"
        );
    }
}
