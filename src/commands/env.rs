//! `keyfed env <target> [--shell sh|fish|json]` (issue 12): a target's fresh credentials printed
//! as the variables `keyfed exec` would set (`child_env.rs`), for `eval "$(keyfed env t)"`:
//! `export NAME=VALUE` lines for sh, `set -gx NAME VALUE` for fish, one JSON object for
//! programs. Values are quoted by `crate::quote`; nothing else goes to standard output (logs go
//! to standard error). The values are fixed: they work until the credential expires (an Azure
//! identity header until the target's current token expires) and are not refreshed.

use std::fmt::Write as _;
use std::path::Path;

use super::child_env::{self, Use, Var};
use crate::cli::EnvShell;
use crate::quote;

pub async fn run(path: &Path, target: &str, shell: EnvShell) -> anyhow::Result<()> {
    let env = child_env::fetch(path, target, Use::Env).await?;
    if let Some(at) = env.expires {
        tracing::debug!(
            "valid until {}; run keyfed env again for fresh values",
            keyfed_core::clock::rfc3339(at)
        );
    }
    print!("{}", render(&env.vars, shell));
    Ok(())
}

/// The variables in `shell`'s syntax, one statement a line (one JSON object, for `json`).
fn render(vars: &[Var], shell: EnvShell) -> String {
    let mut out = String::new();
    match shell {
        EnvShell::Sh => {
            for v in vars {
                let _ = writeln!(out, "export {}={}", v.name, quote::sh(&v.value));
            }
        }
        EnvShell::Fish => {
            for v in vars {
                let _ = writeln!(out, "set -gx {} {}", v.name, quote::fish(&v.value));
            }
        }
        EnvShell::Json => {
            let object: serde_json::Map<String, serde_json::Value> = vars
                .iter()
                .map(|v| (v.name.to_owned(), v.value.clone().into()))
                .collect();
            let _ = writeln!(out, "{}", serde_json::Value::Object(object));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<Var> {
        vec![
            Var {
                name: "AWS_ACCESS_KEY_ID",
                value: "ASIAEXAMPLE".to_owned(),
            },
            Var {
                name: "AWS_SESSION_TOKEN",
                value: "it's a/b+c= $(id)".to_owned(),
            },
        ]
    }

    #[test]
    fn each_shell_gets_its_own_syntax_issue_12() {
        assert_eq!(
            render(&vars(), EnvShell::Sh),
            "export AWS_ACCESS_KEY_ID=ASIAEXAMPLE\nexport AWS_SESSION_TOKEN='it'\\''s a/b+c= $(id)'\n"
        );
        assert_eq!(
            render(&vars(), EnvShell::Fish),
            "set -gx AWS_ACCESS_KEY_ID ASIAEXAMPLE\nset -gx AWS_SESSION_TOKEN 'it\\'s a/b+c= $(id)'\n"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&vars(), EnvShell::Json))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            json,
            serde_json::json!({
                "AWS_ACCESS_KEY_ID": "ASIAEXAMPLE",
                "AWS_SESSION_TOKEN": "it's a/b+c= $(id)",
            })
        );
    }

    /// What sh makes of the exports is the values themselves.
    #[test]
    fn sh_evaluates_the_exports_to_the_values_issue_12() {
        let script = format!(
            "{}printf '%s\\n' \"$AWS_SESSION_TOKEN\"",
            render(&vars(), EnvShell::Sh)
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap_or_else(|e| panic!("sh: {e}"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's a/b+c= $(id)\n");
    }
}
