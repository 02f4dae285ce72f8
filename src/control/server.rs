//! The daemon's side of the control socket.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use keyfed_core::clock::rfc3339;

use super::{ErrorCode, MAX_REQUEST, Request, Response, TargetStatus};
use crate::credential::{Credential, credential_process_json};
use crate::engine::{Phase, TargetEngine};
use crate::served::Served;

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how the socket is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    pub path: PathBuf,
    pub mode: u32,
    pub group: Option<u32>,
}

/// Binds the socket, replacing a stale one left by a previous run (but never a live one).
pub async fn bind(spec: &SocketSpec) -> std::io::Result<UnixListener> {
    if let Some(dir) = spec.path.parent() {
        std::fs::DirBuilder::new().recursive(true).create(dir)?;
    }
    if spec.path.exists() {
        if UnixStream::connect(&spec.path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "{} is in use: is another keyfed running?",
                    spec.path.display()
                ),
            ));
        }
        std::fs::remove_file(&spec.path)?;
    }
    let listener = UnixListener::bind(&spec.path)?;
    if let Some(gid) = spec.group {
        std::os::unix::fs::chown(&spec.path, None, Some(gid))?;
    }
    std::fs::set_permissions(&spec.path, std::fs::Permissions::from_mode(spec.mode))?;
    Ok(listener)
}

/// Answers requests until the task is dropped; `served` follows configuration reloads.
pub async fn serve(listener: UnixListener, served: watch::Receiver<Arc<Served>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let served = Arc::clone(&served.borrow());
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &served).await {
                tracing::debug!("control socket client: {e}");
            }
        });
    }
}

async fn answer(stream: UnixStream, served: &Served) -> std::io::Result<()> {
    let uid = stream.peer_cred()?.uid();
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64 + 1);
    let read = tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    let response = match read {
        Err(_) => bad("no request within 5 s"),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) if line.len() > MAX_REQUEST => bad("request too long"),
        Ok(Ok(_)) => match serde_json::from_slice::<Request>(&line) {
            Ok(request) => handle(request, served, uid).await,
            Err(e) => bad(&format!("not a keyfed request: {e}")),
        },
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

fn bad(message: &str) -> Response {
    Response::Error {
        code: ErrorCode::BadRequest,
        message: message.to_owned(),
    }
}

async fn handle(request: Request, served: &Served, uid: u32) -> Response {
    match request {
        Request::Status => Response::Status {
            targets: served.engine.targets().map(|t| status(served, t)).collect(),
        },
        Request::Credential { target } => {
            let t = match served.target_for(&target, Some(uid)) {
                Ok(t) => t,
                Err(exists) => {
                    if exists {
                        tracing::warn!(uid, target = %target, face = "control socket", "credentials refused to this uid");
                    }
                    return Response::Error {
                        code: if exists {
                            ErrorCode::Forbidden
                        } else {
                            ErrorCode::UnknownTarget
                        },
                        message: if exists {
                            format!("uid {uid} may not have the credentials of target \"{target}\"")
                        } else {
                            format!("no target named \"{target}\"")
                        },
                    };
                }
            };
            match t.credential().await {
                Ok(issued) => Response::Credential {
                    kind: issued.credential.kind().to_owned(),
                    document: match &issued.credential {
                        Credential::Aws(c) => credential_process_json(c),
                        Credential::Token(token) => token.expose().to_owned(),
                    },
                },
                Err(e) => Response::Error {
                    code: ErrorCode::Unavailable,
                    message: e.to_string(),
                },
            }
        }
    }
}

fn status(served: &Served, target: &TargetEngine) -> TargetStatus {
    let s = target.snapshot();
    TargetStatus {
        name: target.name().to_owned(),
        kind: served
            .kinds
            .get(target.name())
            .copied()
            .unwrap_or("?")
            .to_owned(),
        state: match s.phase {
            Phase::Pending => "pending",
            Phase::Fresh => "fresh",
            Phase::Refreshing => "refreshing",
            Phase::BackingOff => "backing off",
            Phase::Expired => "expired",
        }
        .to_owned(),
        expires: s.expires_at.map(rfc3339),
        next_refresh: s.next_refresh.map(rfc3339),
        last_error: s.last_error,
        outputs: target
            .outputs()
            .iter()
            .map(|o| format!("{} {}", o.name, o.path.display()))
            .collect(),
        faces: served.faces(target.name()),
    }
}

/// Removes the socket file when the daemon stops.
pub fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}
