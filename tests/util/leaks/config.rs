//! The secrets a keyfed configuration names (issue 11): whatever a test configured is checked,
//! not only what the fixture's standard files hold — each issuer's client secret (inline or in
//! `client_secret_file`, in each form it takes on the wire) and every line of key bits of its
//! `private_key_file`; the endpoint's container token and App Service identity header (where
//! configured, and their default place beside the control socket); and every output file's
//! secret parts. Files are read at each check, so a secret written after the configuration
//! (a rotated key, a refreshed credential) is known too.

use std::path::{Path, PathBuf};

use super::{SecretFile, basic_auth, urlencode};

/// What a configuration names: secret values, and files to read with their kind.
#[derive(Default)]
pub struct Named {
    pub values: Vec<(String, String)>,
    pub files: Vec<(PathBuf, SecretFile)>,
}

impl Named {
    fn value(&mut self, what: String, value: &str) {
        self.values.push((what, value.to_owned()));
    }

    fn client_secret(&mut self, what: &str, secret: &str, client_id: &str) {
        self.value(what.to_owned(), secret);
        self.value(format!("{what}, form-urlencoded"), &urlencode(secret));
        self.value(
            format!("{what}, as the Basic auth value of client {client_id}"),
            &basic_auth(client_id, secret),
        );
    }
}

/// Every line of key bits of a PEM private key but the first, which is the same for every key
/// of a kind and size.
pub fn key_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .skip(1)
        .map(str::to_owned)
        .collect()
}

/// `value` as keyfed resolves a path in `config` (relative to its folder); `None` for a path
/// with a `${VAR}` the test's own view cannot expand.
fn resolve(config: &Path, value: &str) -> Option<PathBuf> {
    if value.contains('$') || value.is_empty() {
        return None;
    }
    let path = PathBuf::from(value);
    Some(if path.is_absolute() {
        path
    } else {
        config.parent().unwrap_or(Path::new(".")).join(path)
    })
}

fn string<'a>(table: &'a toml::Table, key: &str) -> Option<&'a str> {
    table.get(key).and_then(toml::Value::as_str)
}

fn tables(table: &toml::Table, key: &str) -> Vec<(String, toml::Table)> {
    table
        .get(key)
        .and_then(toml::Value::as_table)
        .map(|t| {
            t.iter()
                .filter_map(|(k, v)| v.as_table().map(|v| (k.clone(), v.clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// What the configuration file `path` names; a file that is no valid TOML (tests write broken
/// ones on purpose) still gives its inline client secrets, line by line.
pub fn named_by(path: &Path) -> Named {
    let mut named = Named::default();
    let Ok(text) = std::fs::read_to_string(path) else {
        return named;
    };
    let shown = path.display();
    let Ok(doc) = toml::from_str::<toml::Table>(&text) else {
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            if key.trim() == "client_secret" && !value.is_empty() {
                named.value(format!("the inline client secret in {shown}"), value);
            }
        }
        return named;
    };
    for (name, issuer) in tables(&doc, "issuers") {
        let client_id = string(&issuer, "client_id").unwrap_or_default();
        if let Some(secret) = string(&issuer, "client_secret") {
            named.client_secret(
                &format!("the inline client secret of issuers.{name} in {shown}"),
                secret,
                client_id,
            );
        }
        if let Some(file) = string(&issuer, "client_secret_file").and_then(|f| resolve(path, f)) {
            named.files.push((
                file,
                SecretFile::ClientSecret {
                    client_id: client_id.to_owned(),
                },
            ));
        }
        if let Some(file) = string(&issuer, "private_key_file").and_then(|f| resolve(path, f)) {
            named.files.push((file, SecretFile::PrivateKey));
        }
    }
    let endpoint = doc.get("endpoint").and_then(toml::Value::as_table);
    let socket = doc
        .get("control")
        .and_then(toml::Value::as_table)
        .and_then(|c| string(c, "socket"))
        .and_then(|s| resolve(path, s));
    for (key, default) in [
        ("container_token_file", "container-token"),
        ("identity_header_file", "identity-header"),
    ] {
        let configured = endpoint
            .and_then(|e| string(e, key))
            .and_then(|f| resolve(path, f));
        let beside_socket = socket
            .as_deref()
            .and_then(Path::parent)
            .map(|dir| dir.join(default));
        for file in configured.into_iter().chain(beside_socket) {
            named.files.push((file, SecretFile::Whole));
        }
    }
    for (_, target) in tables(&doc, "targets") {
        let outputs = target.get("outputs").and_then(toml::Value::as_array);
        for output in outputs
            .into_iter()
            .flatten()
            .filter_map(toml::Value::as_table)
        {
            if let Some(file) = string(output, "path").and_then(|p| resolve(path, p)) {
                named.files.push((file, SecretFile::Output));
            }
        }
    }
    named
}

/// The configuration files in `dir` (not below it: a test's folder holds its configuration at
/// the top, and its outputs below).
pub fn configs_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_11_a_configuration_names_its_secrets() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config = dir.path().join("keyfed.toml");
        std::fs::write(
            &config,
            "[issuers.a]\nurl = \"http://127.0.0.1:1\"\nclient_id = \"c\"\nclient_secret = \"inline-secret-1\"\n\
             [issuers.b]\nurl = \"http://127.0.0.1:1\"\nclient_id = \"d\"\nauth = \"private_key_jwt\"\nprivate_key_file = \"/k/key.pem\"\n\
             [issuers.e]\nurl = \"x\"\nclient_id = \"e\"\nclient_secret_file = \"${CREDENTIALS_DIRECTORY}/s\"\n\
             [control]\nsocket = \"run/keyfed.sock\"\n\
             [endpoint]\ncontainer_token_file = \"/t/token\"\n\
             [targets.x]\nissuer = \"a\"\noutputs = [{ kind = \"token\", path = \"out/x.jwt\" }]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let named = named_by(&config);
        let values: Vec<&str> = named.values.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(
            values,
            [
                "inline-secret-1",
                "inline-secret-1",
                &basic_auth("c", "inline-secret-1")
            ]
        );
        let at = |p: &str| dir.path().join(p);
        assert_eq!(
            named.files,
            [
                (PathBuf::from("/k/key.pem"), SecretFile::PrivateKey),
                (PathBuf::from("/t/token"), SecretFile::Whole),
                (at("run/container-token"), SecretFile::Whole),
                (at("run/identity-header"), SecretFile::Whole),
                (at("out/x.jwt"), SecretFile::Output),
            ]
        );
        // A broken file still gives its inline secret.
        std::fs::write(
            &config,
            "[issuers.a]\nclient_secret = \"broken-but-secret\"\n[[[",
        )
        .ok();
        let named = named_by(&config);
        assert_eq!(named.values.len(), 1);
        assert_eq!(named.values[0].1, "broken-but-secret");
    }
}
