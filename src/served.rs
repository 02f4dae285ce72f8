//! What the daemon serves, built from one configuration and replaced as a whole on reload: the
//! engine, and for each target who may have its credentials and where the endpoint serves it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use keyfed_core::clock::Clock;

use crate::config::{Access, Config, Exchange};
use crate::engine::{Engine, TargetEngine};
use crate::sources::{self, Start};

/// Where a target's path on a face leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FacePath {
    /// The face's name (`container`).
    pub face: &'static str,
    pub target: String,
}

#[derive(Debug)]
pub struct Served {
    pub engine: Engine,
    pub access: BTreeMap<String, Access>,
    /// The paths targets chose on the faces that give targets paths (`container_path`): path →
    /// the face and the target.
    pub face_paths: BTreeMap<String, FacePath>,
    /// `(face, target)` for each target some listen address serves on a face with one target
    /// per address (`imds_target`).
    pub face_targets: BTreeSet<(&'static str, String)>,
    /// What each target trades its token for, with its cloud's settings: faces read what they
    /// show of a target from here (a GCP target's service account and project).
    pub exchanges: BTreeMap<String, Exchange>,
    /// Each target's settings with its issuer's (secrets redacted): a reload keeps a target's
    /// credential only while these stay the same.
    fingerprints: BTreeMap<String, String>,
}

impl Served {
    /// Builds from `config`; targets unchanged since `previous` keep their credentials.
    pub fn build(
        config: Config,
        clock: Arc<dyn Clock>,
        previous: Option<&Served>,
    ) -> anyhow::Result<Self> {
        let fingerprints: BTreeMap<String, String> = config
            .targets
            .values()
            .map(|t| {
                let issuer = config
                    .issuers
                    .get(&t.issuer)
                    .map(|i| format!("{:?}", i.settings));
                (t.name.clone(), format!("{t:?}{issuer:?}"))
            })
            .collect();
        let access = config
            .targets
            .values()
            .map(|t| (t.name.clone(), t.access.clone()))
            .collect();
        let face_paths = config
            .targets
            .values()
            .flat_map(|t| {
                crate::config::paths_of(t).map(|(face, path)| {
                    let at = FacePath {
                        face: face.name,
                        target: t.name.clone(),
                    };
                    (path.to_owned(), at)
                })
            })
            .collect();
        let face_targets = config
            .endpoint
            .iter()
            .flat_map(|e| &e.listen)
            .flat_map(|l| l.targets.iter().map(|(face, t)| (*face, t.clone())))
            .collect();
        let exchanges = config
            .targets
            .values()
            .map(|t| (t.name.clone(), t.exchange.clone()))
            .collect();
        // Only the daemon's first build draws start-jitter turns: a reload retries a changed or
        // stopped target at once, and a kept target keeps its turn when it adopts the old one.
        let start = match previous {
            None => Start::Jittered,
            Some(_) => Start::AtOnce,
        };
        let engine = sources::engine(config, clock, start)?;
        if let Some(previous) = previous {
            for target in engine.targets() {
                let name = target.name();
                let same = previous.fingerprints.get(name) == fingerprints.get(name);
                if let (true, Some(old)) = (same, previous.engine.target(name)) {
                    target.adopt(old);
                }
            }
        }
        Ok(Self {
            engine,
            access,
            face_paths,
            face_targets,
            exchanges,
            fingerprints,
        })
    }

    /// Serves `engine`'s targets, open to everyone, at `face_paths` and `face_targets` (tests
    /// of the endpoint, which need no configuration file).
    #[cfg(test)]
    pub fn for_tests(
        engine: Engine,
        face_paths: BTreeMap<String, FacePath>,
        face_targets: BTreeSet<(&'static str, String)>,
    ) -> Self {
        Self {
            engine,
            access: BTreeMap::new(),
            face_paths,
            face_targets,
            exchanges: BTreeMap::new(),
            fingerprints: BTreeMap::new(),
        }
    }

    /// The target's kind ("token", "aws", "gcp"); `None` for a target not served.
    pub fn kind(&self, name: &str) -> Option<&'static str> {
        self.exchanges.get(name).map(Exchange::kind)
    }

    /// Where the target's credentials can be had besides its output files.
    pub fn faces(&self, name: &str) -> Vec<String> {
        let mut faces = vec!["control socket".to_owned()];
        for (face, target) in &self.face_targets {
            if target == name {
                faces.push((*face).to_owned());
            }
        }
        // A face serving a default target of a kind also serves every other target of that kind
        // a request names (GCE by email, Azure by client ID): say so, so no exposure is hidden.
        let kind = self.kind(name);
        let enabled: BTreeSet<&'static str> = self.face_targets.iter().map(|(f, _)| *f).collect();
        for face in enabled {
            let serves = crate::config::face(face)
                .is_some_and(|spec| kind.is_some_and(|k| spec.serves.contains(&k)));
            if serves && !self.face_targets.contains(&(face, name.to_owned())) {
                faces.push(format!("{face} (when a request names it)"));
            }
        }
        for (path, at) in &self.face_paths {
            if at.target == name {
                faces.push(format!("{} {path}", at.face));
            }
        }
        faces
    }

    /// The target `name` if `uid` may have its credentials: `Err(true)` when it exists but is
    /// refused, `Err(false)` when there is no such target.
    pub fn target_for(&self, name: &str, uid: Option<u32>) -> Result<&Arc<TargetEngine>, bool> {
        let target = self.engine.target(name).ok_or(false)?;
        let open = self.access.get(name).is_none_or(Access::is_open);
        match uid {
            _ if open => Ok(target),
            Some(uid)
                if self
                    .access
                    .get(name)
                    .is_some_and(|a| crate::access::allowed(a, uid)) =>
            {
                Ok(target)
            }
            _ => Err(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn azure(client_id: &str) -> Exchange {
        Exchange::Azure(Box::new(keyfed_azure::config::AzureTarget {
            tenant_id: "contoso.onmicrosoft.com".to_owned(),
            client_id: client_id.to_owned(),
            scopes: vec![keyfed_azure::config::DEFAULT_SCOPE.to_owned()],
            authority_host: url::Url::parse(keyfed_azure::config::DEFAULT_AUTHORITY_HOST)
                .unwrap_or_else(|e| panic!("{e}")),
            http: keyfed_core::http::HttpSettings::default(),
        }))
    }

    /// issue 10 (review): a face serving a default target also serves every other target of
    /// its kind that a request names (Azure by client ID, GCE by email); `keyfed status` says
    /// so instead of listing only the default.
    #[test]
    fn targets_a_request_can_name_on_a_face_are_listed_issue_10() {
        let mut served = Served::for_tests(
            Engine::new(Vec::new()),
            BTreeMap::new(),
            [("azure-imds", "main".to_owned())].into_iter().collect(),
        );
        served.exchanges = [
            ("main".to_owned(), azure("1")),
            ("backup".to_owned(), azure("2")),
            ("plain".to_owned(), Exchange::Token),
        ]
        .into_iter()
        .collect();
        assert_eq!(served.faces("main"), ["control socket", "azure-imds"]);
        assert_eq!(
            served.faces("backup"),
            ["control socket", "azure-imds (when a request names it)"]
        );
        assert_eq!(served.faces("plain"), ["control socket"]);
    }

    /// Loads `body` as `keyfed.toml` beside a 0600 client secret.
    fn config(dir: &std::path::Path, body: &str) -> Config {
        use std::os::unix::fs::PermissionsExt as _;
        let secret = dir.join("secret");
        std::fs::write(&secret, "s\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        let file = dir.join("keyfed.toml");
        std::fs::write(&file, body).unwrap_or_else(|e| panic!("{e}"));
        let host = crate::config::Host {
            hostname: "web-01".into(),
            is_root: true,
        };
        crate::config::load(&file, &|_| None, &host).unwrap_or_else(|e| panic!("{e}"))
    }

    /// issue 11 (review D3): only the daemon's first build draws start-jitter turns. A reload
    /// retries a target whose settings changed at once (the README's "reload after a fix"),
    /// and a target it keeps keeps the turn it drew, so a reload in the start window pushes
    /// no first credential back.
    #[test]
    fn a_reload_draws_no_start_jitter_issue_11() {
        use keyfed_core::clock::ManualClock;
        use std::time::{Duration, SystemTime};
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let body = |scope: &str| {
            format!(
                "[issuers.corp]\nurl = \"https://sso.example.com/realms/r\"\nclient_id = \"c\"\n\
                 client_secret_file = \"secret\"\n\
                 [targets.kept]\nissuer = \"corp\"\naudience = \"api\"\n\
                 [targets.changed]\nissuer = \"corp\"\naudience = \"api\"\nscope = \"{scope}\"\n\
                 [engine]\nstart_jitter = \"1h\"\n"
            )
        };
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let started = clock.now();
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());
        // The first build draws a turn in [start, start + 1h) for each target; drawn as exactly
        // `start` it would prove nothing, so draw again (each draw is uniform: this ends).
        let first = loop {
            let built = Served::build(config(dir.path(), &body("a")), Arc::clone(&shared), None)
                .unwrap_or_else(|e| panic!("{e}"));
            let turns: Vec<SystemTime> = built
                .engine
                .targets()
                .map(|t| t.first_attempt_at())
                .collect();
            assert!(
                turns
                    .iter()
                    .all(|&t| t < started + Duration::from_secs(3600)),
                "{turns:?}"
            );
            if turns.iter().all(|&t| t > started) {
                break built;
            }
        };
        let turn_of = |served: &Served, name: &str| {
            served
                .engine
                .target(name)
                .unwrap_or_else(|| panic!("no target {name}"))
                .first_attempt_at()
        };
        clock.advance(Duration::from_secs(1));
        let reloaded = Served::build(config(dir.path(), &body("b")), shared, Some(&first))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            turn_of(&reloaded, "changed"),
            clock.now(),
            "a changed target waits again after a reload"
        );
        assert_eq!(
            turn_of(&reloaded, "kept"),
            turn_of(&first, "kept"),
            "a kept target's turn moved"
        );
    }
}
