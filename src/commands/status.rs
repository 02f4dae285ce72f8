//! `keyfed status [--json]`: every target's state as the running daemon sees it — state,
//! expiry, next refresh, last error in the upstream's words, and the outputs and faces it feeds.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::config;
use crate::control::client::ask;
use crate::control::{Request, Response};

pub async fn run(path: &Path, json: bool) -> anyhow::Result<()> {
    let socket = config::control_socket(path, &super::env_var, &super::host())?;
    let (targets, hidden) = match ask(&socket, &Request::Status, Duration::from_secs(10)).await? {
        Response::Status { targets, hidden } => (targets, hidden),
        Response::Error { message, .. } => anyhow::bail!("{message}"),
        Response::Credential { .. } | Response::IdentityPair { .. } => {
            anyhow::bail!("the daemon answered something else")
        }
    };
    if json {
        // An array of the targets this user may see, as before; the count of hidden ones goes
        // to standard error so the document keeps its shape.
        if hidden > 0 {
            eprintln!("{hidden} more target(s) restricted to other users");
        }
        crate::stdout::write(format!("{}\n", serde_json::to_string_pretty(&targets)?))?;
        return Ok(());
    }
    let mut text = String::new();
    for t in &targets {
        let _ = writeln!(
            text,
            "{:<20} {:<6} {:<12} expires {:<20} next refresh {}",
            t.name,
            t.kind,
            t.state,
            t.expires.as_deref().unwrap_or("-"),
            t.next_refresh.as_deref().unwrap_or("-"),
        );
        if let Some(e) = &t.last_error {
            let _ = writeln!(text, "    last error: {e}");
        }
        for e in &t.output_errors {
            let _ = writeln!(text, "    output error: {e}");
        }
        for o in &t.outputs {
            let _ = writeln!(text, "    output: {o}");
        }
        let _ = writeln!(text, "    served by: {}", t.faces.join(", "));
    }
    if hidden > 0 {
        let _ = writeln!(text, "({hidden} more target(s) restricted to other users)");
    }
    crate::stdout::write(text)?;
    Ok(())
}
