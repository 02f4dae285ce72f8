//! The client's side of the control socket.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

use super::{Request, Response};

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No daemon listens there (missing socket, refused connection).
    #[error("no keyfed daemon at {0}")]
    NoDaemon(String),
    #[error("the keyfed daemon at {path} did not answer properly: {detail}")]
    Protocol { path: String, detail: String },
}

/// Sends one request and reads the answer, within `timeout`.
pub async fn ask(path: &Path, request: &Request, timeout: Duration) -> Result<Response, AskError> {
    ask_and_keep(path, request, timeout)
        .await
        .map(|(response, _)| response)
}

/// [`ask`], and the connection, still open: the daemon keeps what it issued on it (an
/// identity-header pair held for `keyfed exec`) until it is closed.
pub async fn ask_and_keep(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<(Response, UnixStream), AskError> {
    let shown = path.display().to_string();
    let protocol = |detail: String| AskError::Protocol {
        path: shown.clone(),
        detail,
    };
    let mut stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(AskError::NoDaemon(shown));
        }
        Err(e) => return Err(protocol(e.to_string())),
    };
    let exchange = async {
        let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        line.push(b'\n');
        stream.write_all(&line).await.map_err(|e| e.to_string())?;
        let mut answer = String::new();
        BufReader::new(&mut stream)
            .read_line(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_str::<Response>(&answer).map_err(|e| format!("{e}"))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(response)) => Ok((response, stream)),
        Ok(Err(detail)) => Err(protocol(detail)),
        Err(_) => Err(protocol(format!(
            "no answer within {} s",
            timeout.as_secs()
        ))),
    }
}
