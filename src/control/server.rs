//! The daemon's side of the control socket.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use keyfed_core::clock::{rfc3339, unix_seconds};

use super::{ErrorCode, MAX_REQUEST, Request, Response, TargetStatus};
use crate::caps::{Caps, Limits};
use crate::config::{Exchange, SocketSpec};
use crate::endpoint::pairs::{Binding, Held, Pairs, Until};
use crate::engine::{Issued, SlotKey, TargetEngine, Unavailable};
use crate::served::Served;

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Takes the daemon's lock beside the socket (`<socket>.lock`, held until the returned
/// descriptor is dropped), so of two daemons started at the same moment with one socket, the
/// second stops before it binds or writes anything. The folder is checked as [`bind`] does.
pub fn lock(spec: &SocketSpec) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{FlockOperation, Mode, OFlags};
    if let Some(dir) = spec.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        socket_folder(dir, spec.group)?;
    }
    let mut name = spec.path.clone().into_os_string();
    name.push(".lock");
    let fd = rustix::fs::open(
        &name,
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(fd),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "{} is in use: is another keyfed running?",
                spec.path.display()
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Binds the socket, replacing a stale one left by a previous run (but never a live one). The
/// socket's folder is created if missing and must be keyfed's own (see [`socket_folder`]).
pub async fn bind(spec: &SocketSpec) -> std::io::Result<UnixListener> {
    if let Some(dir) = spec.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        socket_folder(dir, spec.group)?;
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

/// Makes sure the socket's folder is keyfed's own. A missing folder (and missing parents) is
/// created 0700, or 0750 with the socket's group, mode and group set explicitly whatever the
/// umask. An existing one is opened without following a symlink and checked on the open
/// descriptor: owned by keyfed's uid or root, and writable by nobody else — else another user
/// could have created it first, or could swap the socket for one of their own.
fn socket_folder(dir: &Path, group: Option<u32>) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let refuse = |why: String| {
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "refusing the control socket's folder {}: {why}",
                dir.display()
            ),
        )
    };
    let open = || {
        rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    let fd = match open() {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            let fd = open().map_err(std::io::Error::from)?;
            if group.is_some() {
                std::os::unix::fs::fchown(&fd, None, group)?;
            }
            let mode = if group.is_some() { 0o750 } else { 0o700 };
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(std::io::Error::from)?;
            fd
        }
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR)
            if dir
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            return Err(refuse("it is a symlink".to_owned()));
        }
        Err(e) => return Err(std::io::Error::from(e)),
    };
    let st = rustix::fs::fstat(&fd).map_err(std::io::Error::from)?;
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != me && st.st_uid != 0 {
        return Err(refuse(format!(
            "owned by uid {}, expected {me} (keyfed) or root",
            st.st_uid
        )));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "its mode {mode:04o} lets others create or replace the socket"
        )));
    }
    Ok(())
}

/// Control connections open at once, in all and per uid: enough for a burst of parallel
/// `credential_process` calls from one user; each lives at most the request timeout plus one
/// refresh, and the caps keep a local user from holding descriptors the refreshes need.
const CONTROL_LIMITS: Limits = Limits {
    total: 256,
    per_user: 128,
};

/// Answers requests until the task is dropped; `served` follows configuration reloads;
/// `pairs` issues the identity-header pairs of `keyfed exec` and `keyfed env`.
/// Connections past the caps (under a soft descriptor limit of `fd_limit`) are closed at once;
/// accept errors pause the loop instead of spinning it.
pub async fn serve(
    listener: UnixListener,
    served: watch::Receiver<Arc<Served>>,
    fd_limit: u64,
    pairs: Arc<Pairs>,
) {
    let caps = Caps::new(crate::caps::fit(CONTROL_LIMITS, fd_limit, 2));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!("control socket cannot accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Read once: the caps count the connection under its uid, and the answer depends on it.
        let cred = stream.peer_cred();
        let Some(slot) = caps.admit(cred.as_ref().ok().map(|c| c.uid())) else {
            continue;
        };
        let served = Arc::clone(&served.borrow());
        let pairs = Arc::clone(&pairs);
        tokio::spawn(async move {
            if let Err(e) = answer(stream, cred, &served, &pairs).await {
                tracing::debug!("control socket client: {e}");
            }
            drop(slot);
        });
    }
}

async fn answer(
    stream: UnixStream,
    cred: std::io::Result<tokio::net::unix::UCred>,
    served: &Served,
    pairs: &Arc<Pairs>,
) -> std::io::Result<()> {
    let uid = cred?.uid();
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64 + 1);
    let read = tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    let (response, held) = match read {
        Err(_) => (bad("no request within 5 s"), None),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) if line.len() > MAX_REQUEST => (bad("request too long"), None),
        Ok(Ok(_)) => match serde_json::from_slice::<Request>(&line) {
            Ok(request) => handle(request, served, pairs, uid).await,
            Err(e) => (bad(&format!("not a keyfed request: {e}")), None),
        },
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    // A client that stops reading cannot hold the connection: the answer goes out in time or
    // not at all.
    let sent = async {
        write.write_all(&out).await?;
        write.shutdown().await
    };
    tokio::time::timeout(READ_TIMEOUT, sent)
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "the client read nothing")
        })??;
    if let Some(held) = held {
        // A held identity-header pair lives until the client closes its end: `keyfed exec`'s
        // command ended, or keyfed died (the kernel closes the socket however it dies). Anything
        // the client sends meanwhile is read and ignored (its allowance is the request cap).
        let mut sink = [0u8; 512];
        while let Ok(1..) = reader.read(&mut sink).await {}
        drop(held);
        tracing::debug!(uid, "identity header ended: its control connection closed");
    }
    Ok(())
}

fn bad(message: &str) -> Response {
    Response::Error {
        code: ErrorCode::BadRequest,
        message: message.to_owned(),
    }
}

/// The answer to `request` from `uid`, and the identity-header pair the connection holds
/// (only [`Request::Environment`] with `hold` has one).
async fn handle(
    request: Request,
    served: &Served,
    pairs: &Arc<Pairs>,
    uid: u32,
) -> (Response, Option<Held>) {
    match request {
        // Only the targets this uid may have: a status names paths and upstream errors.
        Request::Status => {
            let (mine, others): (Vec<_>, Vec<_>) = served
                .engine
                .targets()
                .partition(|t| served.target_for(t.name(), Some(uid)).is_ok());
            let response = Response::Status {
                targets: mine.into_iter().map(|t| status(served, t)).collect(),
                hidden: others.len(),
            };
            (response, None)
        }
        Request::Credential { target } => (credential(served, &target, None, uid).await, None),
        Request::SubjectToken { target } => {
            let slot = Some(&SlotKey::SubjectToken);
            (credential(served, &target, slot, uid).await, None)
        }
        Request::Environment { target, hold } => {
            environment(served, pairs, &target, hold, uid).await
        }
    }
}

/// The target `target` if `uid` may have its credentials, else the refusal (logged).
fn allowed<'s>(
    served: &'s Served,
    target: &str,
    uid: u32,
) -> Result<&'s Arc<TargetEngine>, Response> {
    served.target_for(target, Some(uid)).map_err(|exists| {
        if exists {
            crate::access::log_refusal(Some(uid), target, "control socket");
        }
        Response::Error {
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
        }
    })
}

/// What the variables `keyfed exec` and `keyfed env` hand out (review of issue 12) should last
/// at the least — botocore's own refresh window: a command gets fixed values, which nothing
/// refreshes inside it.
const LASTING: Duration = Duration::from_secs(15 * 60);

/// What `keyfed exec` and `keyfed env` put in a command's environment (issue 12): an AWS or
/// GCP target's credential; for an Azure target an identity-header pair bound to it and to
/// `uid` (held by this connection with `hold`, else until the target's current token expires),
/// once the target holds a usable token; a token target is refused. Values that stay fixed in
/// the command (all but a held pair's, whose face keeps the token fresh) are refreshed first
/// when they would last under [`LASTING`] (`TargetEngine::credential_lasting`).
async fn environment(
    served: &Served,
    pairs: &Arc<Pairs>,
    target: &str,
    hold: bool,
    uid: u32,
) -> (Response, Option<Held>) {
    let t = match allowed(served, target, uid) {
        Ok(t) => t,
        Err(refusal) => return (refusal, None),
    };
    let azure = match served.exchanges.get(target) {
        Some(Exchange::Azure(azure)) => Some(azure),
        Some(Exchange::Token) => {
            let message = super::no_environment_for_token_target(target);
            return (error(ErrorCode::BadRequest, message), None);
        }
        Some(Exchange::Aws(_) | Exchange::Gcp(_)) | None => None,
    };
    let endpoint = match azure.map(|_| pairs.endpoint()).transpose() {
        Ok(endpoint) => endpoint.map(str::to_owned),
        Err(e) => return (error(ErrorCode::Unavailable, e.to_string()), None),
    };
    let issued = if azure.is_some() && hold {
        // The command gets tokens only through the face: make sure there is one to get now.
        t.credential_for(None).await
    } else {
        t.credential_lasting(LASTING).await
    };
    let issued = match issued {
        Ok(issued) => issued,
        Err(e) => return (unavailable(e), None),
    };
    let (Some(azure), Some(endpoint)) = (azure, endpoint) else {
        return (credential_response(&issued), None);
    };
    let until = if hold {
        Until::Held
    } else {
        Until::Deadline(issued.credential.expires_at())
    };
    let binding = Binding {
        target: target.to_owned(),
        tenant_id: azure.tenant_id.clone(),
        client_id: azure.client_id.clone(),
        uid,
    };
    match pairs.issue(binding, until) {
        Ok(pair) => {
            let expires_at = match pair.until {
                Until::Held => None,
                Until::Deadline(at) => Some(unix_seconds(at)),
            };
            tracing::debug!(target, uid, ?expires_at, "identity header handed out");
            let response = Response::IdentityPair {
                endpoint,
                header: keyfed_core::ExposeSecret::expose_secret(&pair.header).to_owned(),
                client_id: azure.client_id.clone(),
                expires_at,
            };
            (response, pair.held)
        }
        Err(e) => (error(ErrorCode::Unavailable, e.to_string()), None),
    }
}

fn error(code: ErrorCode, message: String) -> Response {
    Response::Error { code, message }
}

/// The credential of `target` (its main one, or the variant `slot`) for `uid`, if allowed.
async fn credential(served: &Served, target: &str, slot: Option<&SlotKey>, uid: u32) -> Response {
    let t = match allowed(served, target, uid) {
        Ok(t) => t,
        Err(refusal) => return refusal,
    };
    // The issuer's token goes only to the consumers a target is configured for (an
    // external_account file): it may carry more audiences than the target's credential.
    if let Some(key) = slot.filter(|k| !t.keeps(k)) {
        return Response::Error {
            code: ErrorCode::BadRequest,
            message: format!(
                "target \"{target}\" does not hand out {key}: only a target with an output \
                 that reads it does (gcp-external-account, gcp-subject-token, \
                 azure-federated-token)"
            ),
        };
    }
    match t.credential_for(slot).await {
        Ok(issued) => credential_response(&issued),
        Err(e) => unavailable(e),
    }
}

fn credential_response(issued: &Issued) -> Response {
    Response::Credential {
        kind: issued.credential.kind().to_owned(),
        document: issued.credential.process_document(),
        expires_at: unix_seconds(issued.credential.expires_at()),
    }
}

/// Why no credential: a variant the target's cloud does not issue is the caller's mistake.
fn unavailable(e: Unavailable) -> Response {
    match e {
        Unavailable::UnknownSlot(e) => error(ErrorCode::BadRequest, e.to_string()),
        other => error(ErrorCode::Unavailable, other.to_string()),
    }
}

fn status(served: &Served, target: &TargetEngine) -> TargetStatus {
    let s = target.snapshot();
    TargetStatus {
        name: target.name().to_owned(),
        kind: served.kind(target.name()).unwrap_or("?").to_owned(),
        state: s.state().to_owned(),
        stopped: s.stopped.map(|side| side.to_string()),
        expires: s.expires_at.map(rfc3339),
        next_refresh: s.next_refresh.map(rfc3339),
        last_error: s.last_error,
        output_errors: s.output_errors,
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::os::unix::fs::MetadataExt as _;

    use keyfed_core::clock::{Clock, SystemClock};

    use super::*;
    use crate::config::{AzureExchange, EndpointSettings, Listen};
    use crate::control::client::ask_and_keep;
    use crate::credential::Credential;
    use crate::engine::{Backoff, Engine, Fetch, Source};

    fn refusal(dir: &Path) -> String {
        match socket_folder(dir, None) {
            Ok(()) => panic!("{} was accepted", dir.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_missing_folder_is_created_private_and_with_the_socket_s_group() {
        let base = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = base.path().join("a/b/run");
        socket_folder(&dir, None).unwrap_or_else(|e| panic!("{e}"));
        let meta = std::fs::metadata(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta.mode() & 0o7777, 0o700);
        let parent = std::fs::metadata(base.path().join("a")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parent.mode() & 0o777, 0o700);
        // An existing folder of ours passes again (a restart).
        socket_folder(&dir, None).unwrap_or_else(|e| panic!("{e}"));

        let gid = rustix::process::getegid().as_raw();
        let grouped = base.path().join("grouped");
        socket_folder(&grouped, Some(gid)).unwrap_or_else(|e| panic!("{e}"));
        let meta = std::fs::metadata(&grouped).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o750, gid));
    }

    /// issue 7: a socket folder another user could write to, or that points elsewhere, is
    /// refused with its name, owner and mode.
    #[test]
    fn a_folder_others_control_is_refused() {
        let base = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for (name, mode, needle) in [
            ("world", 0o777, "mode 0777"),
            ("sticky", 0o1777, "mode 1777"),
            ("group", 0o770, "mode 0770"),
        ] {
            let dir = base.path().join(name);
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("{e}"));
            let text = refusal(&dir);
            assert!(
                text.contains(&dir.display().to_string()) && text.contains(needle),
                "{text}"
            );
        }
        let target = base.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap_or_else(|e| panic!("{e}"));
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap_or_else(|e| panic!("{e}"));
        assert!(refusal(&link).contains("is a symlink"));

        let theirs = base.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::chown(&theirs, Some(12345), Some(12345))
            .unwrap_or_else(|e| panic!("chown needs root (tests run as root): {e}"));
        let text = refusal(&theirs);
        assert!(text.contains("owned by uid 12345"), "{text}");
    }

    /// An Entra ID that issues an hour's token at once.
    #[derive(Debug)]
    struct Entra;

    impl Source for Entra {
        fn fetch<'a>(&'a self, _slot: Option<&'a SlotKey>) -> Fetch<'a> {
            Box::pin(async {
                Ok(Credential::Azure(keyfed_azure::AzureToken {
                    token: "eyJ0eXAiOiJKV1QifQ.e30.sig".into(),
                    scope: "https://management.azure.com/.default".to_owned(),
                    tenant_id: "tenant".to_owned(),
                    client_id: "app".to_owned(),
                    expires_at: SystemClock.now() + Duration::from_secs(3600),
                }))
            })
        }

        fn consumer_window(&self) -> Duration {
            Duration::from_secs(300)
        }
    }

    /// A daemon's control socket in `dir` serving Azure target `azure` (the App Service face's)
    /// and token target `api`; its pairs.
    fn daemon(dir: &Path) -> (std::path::PathBuf, Arc<Pairs>) {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let targets = ["azure", "api"]
            .map(|name| {
                TargetEngine::new(
                    name.to_owned(),
                    Box::new(Entra),
                    Vec::new(),
                    Arc::clone(&clock),
                    Backoff::DEFAULT,
                    Duration::from_secs(10),
                )
            })
            .into();
        let mut served = Served::for_tests(Engine::new(targets), BTreeMap::new(), BTreeSet::new());
        let azure = AzureExchange {
            tenant_id: "tenant".to_owned(),
            client_id: "app".to_owned(),
            scopes: vec!["https://management.azure.com/.default".to_owned()],
            authority_host: url::Url::parse("https://login.microsoftonline.com")
                .unwrap_or_else(|e| panic!("{e}")),
            http: keyfed_core::http::HttpSettings::default(),
        };
        served
            .exchanges
            .insert("azure".to_owned(), Exchange::Azure(Box::new(azure)));
        served.exchanges.insert("api".to_owned(), Exchange::Token);
        let settings = EndpointSettings {
            listen: vec![Listen {
                address: "127.0.0.1:9".parse().unwrap_or_else(|e| panic!("{e}")),
                targets: BTreeMap::from([("app-service", "azure".to_owned())]),
            }],
            imds_v1: false,
            health_listen: None,
            container_token_file: dir.join("container-token"),
            container_token_group: None,
            identity_header_file: dir.join("identity-header"),
            identity_header_group: None,
            max_connections: 16,
            max_connections_per_user: 4,
            allowed_hosts: Vec::new(),
            request_timeout: Duration::from_secs(10),
        };
        let pairs = Pairs::new(Some(&settings), clock);
        let path = dir.join("keyfed.sock");
        let listener = UnixListener::bind(&path).unwrap_or_else(|e| panic!("{e}"));
        let (_publish, current) = watch::channel(Arc::new(served));
        tokio::spawn(serve(listener, current, 1 << 16, Arc::clone(&pairs)));
        (path, pairs)
    }

    async fn environment(socket: &Path, target: &str, hold: bool) -> (Response, UnixStream) {
        let request = Request::Environment {
            target: target.to_owned(),
            hold,
        };
        ask_and_keep(socket, &request, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The header of an `IdentityPair` answer, and whether it has a deadline.
    fn header(response: &Response) -> (String, bool) {
        match response {
            Response::IdentityPair {
                header, expires_at, ..
            } => (header.clone(), expires_at.is_some()),
            other => panic!("not a pair: {other:?}"),
        }
    }

    /// issue 12 (review): through the control socket, `keyfed env` asked 40 times (a prompt
    /// hook) holds one deadline pair; `keyfed exec` connections hold the rest of the uid's
    /// places, past which a held pair is refused saying why, while the deadline pair is still
    /// handed out; a closed connection frees its place. A token target is refused with the one
    /// message `keyfed exec` and `keyfed env` also give without a daemon.
    #[tokio::test]
    async fn issue_12_environment_through_the_control_socket() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (socket, pairs) = daemon(dir.path());
        let (first, _) = environment(&socket, "azure", false).await;
        let (env_header, deadline) = header(&first);
        assert!(deadline);
        for _ in 0..39 {
            let (again, _) = environment(&socket, "azure", false).await;
            assert_eq!(header(&again), (env_header.clone(), true));
        }
        let mut held = Vec::new();
        for _ in 1..crate::endpoint::pairs::PER_USER {
            let (response, stream) = environment(&socket, "azure", true).await;
            let (pair, deadline) = header(&response);
            assert!(!deadline && pair != env_header);
            held.push(stream);
        }
        assert_eq!(pairs.counts().held + pairs.counts().deadline, 32);
        let me = rustix::process::geteuid().as_raw();
        match environment(&socket, "azure", true).await.0 {
            Response::Error { code, message } => {
                assert_eq!(code, ErrorCode::Unavailable);
                assert!(
                    message.contains(&format!("uid {me} holds 32 identity headers already")),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        let (again, _) = environment(&socket, "azure", false).await;
        assert_eq!(header(&again), (env_header, true), "at the cap too");
        held.pop();
        let mut freed = false;
        for _ in 0..1000 {
            if pairs.counts().held < 31 {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(freed, "the closed connection's pair was not dropped");
        let (response, _stream) = environment(&socket, "azure", true).await;
        assert!(!header(&response).1);
        match environment(&socket, "api", false).await.0 {
            Response::Error { code, message } => {
                assert_eq!(code, ErrorCode::BadRequest);
                assert_eq!(
                    message,
                    crate::control::no_environment_for_token_target("api")
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
