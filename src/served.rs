//! What the daemon serves, built from one configuration and replaced as a whole on reload: the
//! engine, and for each target who may have its credentials and where the endpoint serves it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use keyfed_core::clock::Clock;

use crate::config::{Access, Config, Exchange};
use crate::engine::{Engine, TargetEngine};
use crate::sources;

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
        let engine = sources::engine(config, clock)?;
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
}
