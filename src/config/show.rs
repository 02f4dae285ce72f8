//! The resolved configuration as `keyfed check` prints it: TOML with every default filled in
//! and every secret replaced by where it came from.

use std::time::Duration;

use keyfed_core::config::HumanDuration;
use keyfed_core::http::HttpSettings;
use keyfed_keycloak::{AssertionAudience, ClientAuth};
use toml::{Table, Value};

use super::{Config, Exchange, SecretSource, aws, azure, gcp};
use crate::outputs::Output;

/// A duration as the configuration accepts it (`"1m 30s"`).
pub(super) fn duration(d: Duration) -> Value {
    HumanDuration(d).to_string().into()
}

/// The HTTP keys an issuer's and a cloud's tables share.
pub(super) fn http(t: &mut Table, http: &HttpSettings) {
    if let Some(ca) = &http.ca_file {
        t.insert("ca_file".into(), ca.display().to_string().into());
    }
    t.insert(
        "allow_insecure_http".into(),
        http.allow_insecure_http.into(),
    );
    t.insert("connect_timeout".into(), duration(http.connect_timeout));
    t.insert("timeout".into(), duration(http.timeout));
}

/// Renders `config` as TOML; secrets appear only as their source, never their value.
pub fn show(config: &Config) -> String {
    let mut issuers = Table::new();
    for (name, issuer) in &config.issuers {
        let s = &issuer.settings;
        let mut t = Table::new();
        t.insert("url".into(), s.url.to_string().into());
        t.insert("client_id".into(), s.client_id.clone().into());
        t.insert("auth".into(), s.auth.method().into());
        let secret = match &issuer.secret_source {
            SecretSource::File(p) => {
                format!("{} (from file {})", keyfed_core::REDACTED, p.display())
            }
            SecretSource::Env(v) => {
                format!("{} (from environment variable {v})", keyfed_core::REDACTED)
            }
            SecretSource::Inline => format!("{} (inline)", keyfed_core::REDACTED),
            SecretSource::PrivateKeyFile(p) => {
                format!("{} (from file {})", keyfed_core::REDACTED, p.display())
            }
        };
        if let ClientAuth::PrivateKeyJwt(key) = &s.auth {
            t.insert("private_key".into(), secret.into());
            t.insert("algorithm".into(), key.algorithm().name().into());
            if let Some(kid) = key.key_id() {
                t.insert("key_id".into(), kid.into());
            }
        } else {
            t.insert("client_secret".into(), secret.into());
        }
        if matches!(
            s.auth,
            ClientAuth::PrivateKeyJwt(_) | ClientAuth::SecretJwt(_)
        ) {
            let aud = match s.assertion_audience {
                AssertionAudience::Issuer => "issuer",
                AssertionAudience::TokenEndpoint => "token_endpoint",
            };
            t.insert("assertion_audience".into(), aud.into());
        }
        t.insert(
            "token_endpoint".into(),
            s.token_endpoint
                .as_ref()
                .map_or("(from discovery)".to_owned(), |u| u.to_string())
                .into(),
        );
        t.insert("verify_signature".into(), s.verify_signature.into());
        http(&mut t, &s.http);
        issuers.insert(name.clone(), Value::Table(t));
    }
    let mut targets = Table::new();
    for (name, target) in &config.targets {
        let r = &target.request;
        let mut t = Table::new();
        t.insert("kind".into(), target.exchange.kind().into());
        t.insert("issuer".into(), target.issuer.clone().into());
        t.insert("audience".into(), r.audience.clone().into());
        t.insert("strict_audience".into(), r.strict_audience.into());
        if let Some(scope) = &r.scope {
            t.insert("scope".into(), scope.clone().into());
        }
        if let Some(resource) = &r.resource {
            t.insert("resource".into(), resource.clone().into());
        }
        t.insert("audience_parameter".into(), r.audience_parameter.into());
        t.insert("min_token_lifetime".into(), duration(r.min_remaining));
        match &target.exchange {
            Exchange::Token => {}
            Exchange::Aws(table) => {
                t.insert("aws".into(), Value::Table(aws::show(table)));
            }
            Exchange::Gcp(table) => {
                t.insert("gcp".into(), Value::Table(gcp::show(table)));
            }
            Exchange::Azure(table) => {
                t.insert("azure".into(), Value::Table(azure::show(table)));
            }
        }
        let outputs: Vec<Value> = target
            .outputs
            .iter()
            .map(|o| Value::Table(show_output(o)))
            .collect();
        t.insert("outputs".into(), Value::Array(outputs));
        targets.insert(name.clone(), Value::Table(t));
    }
    let mut control = Table::new();
    control.insert(
        "socket".into(),
        config.control.path.display().to_string().into(),
    );
    control.insert("mode".into(), format!("{:04o}", config.control.mode).into());
    if let Some(gid) = config.control.group {
        control.insert("group".into(), i64::from(gid).into());
    }
    let mut root = Table::new();
    root.insert("issuers".into(), Value::Table(issuers));
    root.insert("targets".into(), Value::Table(targets));
    root.insert("control".into(), Value::Table(control));
    let mut engine = Table::new();
    engine.insert(
        "retry_min".into(),
        duration(config.engine.backoff.ceiling(1)),
    );
    engine.insert(
        "retry_max".into(),
        duration(config.engine.backoff.ceiling(u32::MAX)),
    );
    engine.insert(
        "attempt_timeout".into(),
        duration(config.engine.attempt_timeout),
    );
    engine.insert("start_jitter".into(), duration(config.engine.start_jitter));
    engine.insert("ready".into(), config.engine.ready.name().into());
    root.insert("engine".into(), Value::Table(engine));
    if let Some(e) = &config.endpoint {
        root.insert("endpoint".into(), Value::Table(show_endpoint(e)));
    }
    toml::to_string(&root).unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
}

fn show_output(o: &Output) -> Table {
    let mut t = Table::new();
    t.insert("kind".into(), o.name.into());
    t.insert("path".into(), o.path.display().to_string().into());
    aws::show_output(&o.kind, &mut t);
    gcp::show_output(&o.kind, &mut t);
    azure::show_output(&o.kind, &mut t);
    let mode = match o.mode {
        Some(m) => format!("{m:04o}"),
        None => aws::unset_mode(&o.kind).unwrap_or("0600").to_owned(),
    };
    t.insert("mode".into(), mode.into());
    if let Some(uid) = o.owner {
        t.insert("owner".into(), i64::from(uid).into());
    }
    if let Some(gid) = o.group {
        t.insert("group".into(), i64::from(gid).into());
    }
    t
}

fn show_endpoint(e: &super::EndpointSettings) -> Table {
    let mut t = Table::new();
    let listen: Vec<Value> = e
        .listen
        .iter()
        .map(|l| {
            let mut entry = Table::new();
            entry.insert("address".into(), l.address.to_string().into());
            for face in super::faces() {
                if let Some(key) = face.target_key {
                    let target = l
                        .target(face.name)
                        .map_or_else(|| format!("(none: {} off)", face.title), str::to_owned);
                    entry.insert(key.into(), target.into());
                }
            }
            Value::Table(entry)
        })
        .collect();
    t.insert("listen".into(), Value::Array(listen));
    t.insert("imds_v1".into(), e.imds_v1.into());
    t.insert(
        "health_listen".into(),
        e.health_listen
            .map_or("(the listen addresses)".to_owned(), |a| a.to_string())
            .into(),
    );
    t.insert(
        "container_token_file".into(),
        e.container_token_file.display().to_string().into(),
    );
    if let Some(gid) = e.container_token_group {
        t.insert("container_token_group".into(), i64::from(gid).into());
    }
    t.insert(
        "identity_header_file".into(),
        e.identity_header_file.display().to_string().into(),
    );
    if let Some(gid) = e.identity_header_group {
        t.insert("identity_header_group".into(), i64::from(gid).into());
    }
    for (key, n) in [
        ("max_connections", e.max_connections),
        ("max_connections_per_user", e.max_connections_per_user),
    ] {
        t.insert(key.into(), i64::try_from(n).unwrap_or(i64::MAX).into());
    }
    let hosts = std::iter::once("localhost".to_owned())
        .chain(e.listen.iter().map(|l| l.address.ip().to_string()))
        .chain(e.allowed_hosts.iter().cloned())
        .map(Value::from)
        .collect();
    t.insert("allowed_hosts".into(), Value::Array(hosts));
    t.insert("request_timeout".into(), duration(e.request_timeout));
    t
}
