//! One look at everything a consumer or an operator sees of the daemon, taken at once: every
//! face's answer (AWS container and IMDSv2, GCE, Azure IMDS and App Service), every output
//! file, `status` (the control socket's answer, what `keyfed status --json` prints), `/readyz`
//! and `/metrics`. Credentials are kept as a fingerprint and an expiry, never as their value.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use keyfed_core::clock::{Clock as _, SystemClock, from_unix_seconds};
use serde_json::Value;

use super::upstreams::{MGMT, Upstreams};

/// The daemon's targets, each with the faces that serve it and its output file.
pub const TARGETS: [(&str, &[Face], &str); 4] = [
    ("token", &[], "token.jwt"),
    ("aws", &[Face::Container, Face::Imds], "aws.json"),
    ("gcp", &[Face::Gce], "gcp.json"),
    ("azure", &[Face::AzureImds, Face::AppService], "azure.json"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    Container,
    Imds,
    Gce,
    AzureImds,
    AppService,
}

/// A credential as the test keeps it: which one (a hash of its secret part), its expiry, and
/// when the test saw it (the answer arrived, the file was read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cred {
    pub id: u64,
    pub expires: SystemTime,
    pub seen: SystemTime,
}

/// What a face answered.
#[derive(Debug, Clone)]
pub enum Answer {
    Served(Cred),
    Refused { status: u16, body: String },
}

/// One target's `status`.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub state: String,
    pub expires: Option<SystemTime>,
    pub last_error: Option<String>,
    pub stopped: Option<String>,
}

/// Everything seen of one target in one look.
#[derive(Debug, Clone)]
pub struct View {
    pub faces: Vec<(Face, Answer)>,
    /// The output file's credential: `None` before it is first written.
    pub file: Option<Cred>,
    pub status: Status,
    /// Its line in `/readyz` (why it is not ready), if listed.
    pub unready: Option<String>,
    /// `keyfed_target_up`.
    pub up: Option<bool>,
    /// The `side` label of the `keyfed_target_stopped` series at 1, if any.
    pub stopped_on: Option<String>,
    /// `keyfed_refreshes_total{result="failure"}` and `{result="success"}`.
    pub failures: u64,
    pub successes: u64,
}

/// One look: every target's view, between `before` and `after`.
#[derive(Debug, Clone)]
pub struct Look {
    pub before: SystemTime,
    pub after: SystemTime,
    pub ready: bool,
    pub targets: BTreeMap<&'static str, View>,
}

/// What a scenario looks through.
pub struct Probe {
    http: reqwest::Client,
    base: String,
    socket: PathBuf,
    out: PathBuf,
    container_token: String,
    identity_header: String,
    imds_token: String,
}

fn fingerprint(secret: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    secret.hash(&mut hasher);
    hasher.finish()
}

fn rfc3339(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("not RFC 3339: {text:?}: {e}"))
}

/// Seconds since the epoch, as a JSON number or a string of digits.
fn epoch(value: &Value) -> Option<SystemTime> {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .map(from_unix_seconds)
}

impl Probe {
    /// The probe of the daemon `up` configured, once it runs (it reads the secrets the daemon
    /// wrote at start, and asks IMDS for a session token).
    pub async fn new(up: &Upstreams) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            // A face asked for a credential while none is usable waits for a refresh: at most
            // an attempt, however slow the upstream.
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let read = |name: &str| {
            std::fs::read_to_string(up.fx.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let imds_token = http
            .put(format!("{}/latest/api/token", up.base))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
            .send()
            .await
            .unwrap_or_else(|e| panic!("IMDS session token: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("IMDS session token: {e}"));
        up.fx.know("an IMDS session token", &imds_token);
        Self {
            http,
            base: up.base.clone(),
            socket: up.fx.path("keyfed.sock"),
            out: up.fx.path("out"),
            container_token: read("container-token"),
            identity_header: read("identity-header"),
            imds_token,
        }
    }

    /// One look at everything.
    pub async fn look(&self) -> Look {
        let before = SystemClock.now();
        let faces = futures::future::join_all(
            TARGETS
                .iter()
                .flat_map(|(_, faces, _)| faces.iter())
                .map(|&face| async move { (face, self.face(face).await) }),
        );
        let (faces, status, (ready, readyz), metrics) =
            futures::join!(faces, self.status(), self.readyz(), self.metrics());
        let after = SystemClock.now();
        let targets = TARGETS
            .iter()
            .map(|&(name, served_on, file)| {
                let metric = |family: &str, labels: &str| {
                    metrics
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix(&format!("{family}{{target=\"{name}\"{labels}}} "))
                        })
                        .and_then(|v| v.trim().parse::<u64>().ok())
                };
                let view = View {
                    faces: faces
                        .iter()
                        .filter(|(face, _)| served_on.contains(face))
                        .cloned()
                        .collect(),
                    file: read_output(&self.out.join(file)),
                    status: status
                        .get(name)
                        .cloned()
                        .unwrap_or_else(|| panic!("status names no target {name}")),
                    unready: readyz
                        .lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                        .map(str::to_owned),
                    up: metric("keyfed_target_up", "").map(|v| v == 1),
                    stopped_on: ["config", "issuer", "cloud"]
                        .into_iter()
                        .find(|side| {
                            metric("keyfed_target_stopped", &format!(",side=\"{side}\"")) == Some(1)
                        })
                        .map(str::to_owned),
                    failures: metric("keyfed_refreshes_total", ",result=\"failure\"")
                        .unwrap_or_default(),
                    successes: metric("keyfed_refreshes_total", ",result=\"success\"")
                        .unwrap_or_default(),
                };
                (name, view)
            })
            .collect();
        Look {
            before,
            after,
            ready,
            targets,
        }
    }

    async fn face(&self, face: Face) -> Answer {
        let asked = SystemClock.now();
        let request = match face {
            Face::Container => self
                .http
                .get(format!("{}/aws/app", self.base))
                .header("Authorization", &self.container_token),
            Face::Imds => self
                .http
                .get(format!(
                    "{}/latest/meta-data/iam/security-credentials/aws",
                    self.base
                ))
                .header("X-aws-ec2-metadata-token", &self.imds_token),
            Face::Gce => self
                .http
                .get(format!(
                    "{}/computeMetadata/v1/instance/service-accounts/default/token",
                    self.base
                ))
                .header("Metadata-Flavor", "Google"),
            Face::AzureImds => self
                .http
                .get(format!(
                    "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={MGMT}",
                    self.base
                ))
                .header("Metadata", "true"),
            Face::AppService => self
                .http
                .get(format!(
                    "{}/msi/token?api-version=2019-08-01&resource={MGMT}",
                    self.base
                ))
                .header("X-IDENTITY-HEADER", &self.identity_header),
        };
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{face:?} face: {e}"));
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        let seen = SystemClock.now();
        if status != 200 {
            return Answer::Refused { status, body };
        }
        let doc: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{face:?} face: {e}"));
        let text = |key: &str| {
            doc[key]
                .as_str()
                .unwrap_or_else(|| panic!("{face:?} face: no {key}"))
                .to_owned()
        };
        Answer::Served(match face {
            Face::Container | Face::Imds => Cred {
                seen,
                id: fingerprint(&text("AccessKeyId")),
                expires: rfc3339(&text("Expiration")),
            },
            // Whole seconds left when it answered, after it was asked: the expiry is no
            // earlier than this.
            Face::Gce => Cred {
                seen,
                id: fingerprint(&text("access_token")),
                expires: asked
                    + Duration::from_secs(doc["expires_in"].as_u64().unwrap_or_default()),
            },
            Face::AzureImds | Face::AppService => Cred {
                seen,
                id: fingerprint(&text("access_token")),
                expires: epoch(&doc["expires_on"])
                    .unwrap_or_else(|| panic!("{face:?} face: no expires_on")),
            },
        })
    }

    /// Every target's status, from the control socket (what `keyfed status --json` prints).
    async fn status(&self) -> BTreeMap<String, Status> {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .unwrap_or_else(|e| panic!("the control socket: {e}"));
        stream
            .write_all(b"\"status\"\n")
            .await
            .unwrap_or_else(|e| panic!("the control socket: {e}"));
        let mut line = String::new();
        tokio::io::BufReader::new(stream)
            .read_line(&mut line)
            .await
            .unwrap_or_else(|e| panic!("the control socket: {e}"));
        let answer: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("status: {e}: {line}"));
        answer["status"]["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("status: {line}"))
            .iter()
            .map(|t| {
                let text = |key: &str| t[key].as_str().map(str::to_owned);
                (
                    text("name").unwrap_or_default(),
                    Status {
                        state: text("state").unwrap_or_default(),
                        expires: text("expires").map(|e| rfc3339(&e)),
                        last_error: text("last_error"),
                        stopped: text("stopped"),
                    },
                )
            })
            .collect()
    }

    async fn readyz(&self) -> (bool, String) {
        let response = self
            .http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("/readyz: {e}"));
        let ready = response.status() == 200;
        (ready, response.text().await.unwrap_or_default())
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("/metrics: {e}"))
            .text()
            .await
            .unwrap_or_default()
    }
}

/// The credential in an output file, `None` while there is no file. A file that exists but does
/// not parse fails the test: keyfed replaces files atomically.
fn read_output(path: &Path) -> Option<Cred> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("{}: {e}", path.display()),
    };
    let bad = |why: &str| -> ! { panic!("{} is not a whole credential ({why})", path.display()) };
    if path.extension().is_some_and(|e| e == "jwt") {
        let claims = crate::util::claims(&text);
        let exp = epoch(&claims["exp"]).unwrap_or_else(|| bad("no exp"));
        return Some(Cred {
            id: fingerprint(&text),
            expires: exp,
            seen: SystemClock.now(),
        });
    }
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| bad(&e.to_string()));
    let (secret, expires) = if let Some(key) = doc["AccessKeyId"].as_str() {
        (key, doc["Expiration"].as_str().map(rfc3339))
    } else if let Some(token) = doc["accessToken"].as_str() {
        (token, epoch(&doc["expires_on"]))
    } else if let Some(token) = doc["access_token"].as_str() {
        (token, doc["expires_at"].as_str().map(rfc3339))
    } else {
        bad("no credential")
    };
    Some(Cred {
        id: fingerprint(secret),
        expires: expires.unwrap_or_else(|| bad("no expiry")),
        seen: SystemClock.now(),
    })
}
