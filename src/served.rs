//! What the daemon serves, built from one configuration and replaced as a whole on reload: the
//! engine, and for each target who may have its credentials and where the endpoint serves it.

use std::collections::BTreeMap;
use std::sync::Arc;

use keyfed_core::clock::Clock;

use crate::config::{Access, Config};
use crate::engine::{Engine, TargetEngine};
use crate::sources;

#[derive(Debug)]
pub struct Served {
    pub engine: Engine,
    pub access: BTreeMap<String, Access>,
    /// Container face path → target name.
    pub container_paths: BTreeMap<String, String>,
    /// Targets some listen address serves on its IMDSv2 face.
    pub imds_targets: std::collections::BTreeSet<String>,
    /// Each target's kind ("token", "aws").
    pub kinds: BTreeMap<String, &'static str>,
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
        let container_paths = config
            .targets
            .values()
            .filter_map(|t| t.container_path.clone().map(|p| (p, t.name.clone())))
            .collect();
        let imds_targets = config
            .endpoint
            .iter()
            .flat_map(|e| e.listen.iter().filter_map(|l| l.imds_target.clone()))
            .collect();
        let kinds = config
            .targets
            .values()
            .map(|t| (t.name.clone(), t.exchange.kind()))
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
            container_paths,
            imds_targets,
            kinds,
            fingerprints,
        })
    }

    /// Where the target's credentials can be had besides its output files.
    pub fn faces(&self, name: &str) -> Vec<String> {
        let mut faces = vec!["control socket".to_owned()];
        if self.imds_targets.contains(name) {
            faces.push("imds".to_owned());
        }
        for (path, target) in &self.container_paths {
            if target == name {
                faces.push(format!("container {path}"));
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
