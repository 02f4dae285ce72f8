//! `keyfed env <target> [--shell sh|fish|json]` (issue 12): a target's fresh credentials printed
//! as the variables `keyfed exec` would set (`child_env.rs`), for `eval "$(keyfed env t)"`:
//! `export NAME=VALUE` lines for sh, `set -gx NAME VALUE` for fish, one JSON object for
//! programs. The variables `keyfed exec` leaves out of a command's environment (those that
//! would make an SDK take another identity) come first, unset: `unset NAME` for sh,
//! `set -eg NAME` for fish (the global a shell inherits or `set -gx` made; a universal variable
//! is the user's lasting setting, not erased), `"NAME": null` in JSON. Values are quoted by
//! `keyfed_core::quote`; nothing else goes to standard output (logs and the note on values that
//! expire within 15 minutes go to standard error). The values are fixed: they work until the
//! credential expires (an Azure identity header until the target's current token expires) and
//! are not refreshed.
//!
//! An Azure identity header is handed out before it is printed: one that cannot be printed
//! (standard output closed) stays live until its deadline. It is left so on purpose: it is
//! bound to the asking uid (no other user can use it), it is the one the same uid's next
//! `keyfed env` for the target gets again (another shell may be using it already), and no
//! one has seen it.

use std::fmt::Write as _;
use std::path::Path;

use super::child_env::{self, ChildEnv, Use};
use crate::cli::EnvShell;
use keyfed_core::quote;

pub async fn run(path: &Path, target: &str, shell: EnvShell) -> anyhow::Result<()> {
    let env = child_env::fetch(path, target, Use::Env).await?;
    if let Some(at) = env.expires {
        tracing::debug!(
            "valid until {}; run keyfed env again for fresh values",
            keyfed_core::clock::rfc3339(at)
        );
    }
    crate::stdout::write(render(&env, shell))?;
    Ok(())
}

/// The variables in `shell`'s syntax, one statement a line, the removed ones first (one JSON
/// object, for `json`).
fn render(env: &ChildEnv, shell: EnvShell) -> String {
    let mut out = String::new();
    match shell {
        EnvShell::Sh => {
            for name in env.removes {
                let _ = writeln!(out, "unset {name}");
            }
            for v in &env.vars {
                let _ = writeln!(out, "export {}={}", v.name, quote::sh(&v.value));
            }
        }
        EnvShell::Fish => {
            for name in env.removes {
                let _ = writeln!(out, "set -eg {name}");
            }
            for v in &env.vars {
                let _ = writeln!(out, "set -gx {} {}", v.name, quote::fish(&v.value));
            }
        }
        EnvShell::Json => {
            let removed = env
                .removes
                .iter()
                .map(|name| ((*name).to_owned(), serde_json::Value::Null));
            let set = env
                .vars
                .iter()
                .map(|v| (v.name.to_owned(), v.value.clone().into()));
            let object: serde_json::Map<String, serde_json::Value> = removed.chain(set).collect();
            let _ = writeln!(out, "{}", serde_json::Value::Object(object));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::child_env::Var;

    fn env(removes: &'static [&'static str]) -> ChildEnv {
        ChildEnv {
            vars: vec![
                Var {
                    name: "AWS_ACCESS_KEY_ID",
                    value: "ASIAEXAMPLE".to_owned(),
                },
                Var {
                    name: "AWS_SESSION_TOKEN",
                    value: "it's a/b+c= $(id)".to_owned(),
                },
            ],
            removes,
            expires: None,
            hold: None,
        }
    }

    #[test]
    fn each_shell_gets_its_own_syntax_issue_12() {
        assert_eq!(
            render(&env(&[]), EnvShell::Sh),
            "export AWS_ACCESS_KEY_ID=ASIAEXAMPLE\nexport AWS_SESSION_TOKEN='it'\\''s a/b+c= $(id)'\n"
        );
        assert_eq!(
            render(&env(&[]), EnvShell::Fish),
            "set -gx AWS_ACCESS_KEY_ID ASIAEXAMPLE\nset -gx AWS_SESSION_TOKEN 'it\\'s a/b+c= $(id)'\n"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&env(&[]), EnvShell::Json))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            json,
            serde_json::json!({
                "AWS_ACCESS_KEY_ID": "ASIAEXAMPLE",
                "AWS_SESSION_TOKEN": "it's a/b+c= $(id)",
            })
        );
    }

    /// issue 12 (review): the variables that would override the credentials are unset first,
    /// in each shell's syntax.
    #[test]
    fn overriding_variables_are_unset_issue_12() {
        let removes = &["AWS_PROFILE", "AWS_DEFAULT_PROFILE"];
        let sh = render(&env(removes), EnvShell::Sh);
        assert!(
            sh.starts_with("unset AWS_PROFILE\nunset AWS_DEFAULT_PROFILE\nexport "),
            "{sh}"
        );
        let fish = render(&env(removes), EnvShell::Fish);
        assert!(
            fish.starts_with("set -eg AWS_PROFILE\nset -eg AWS_DEFAULT_PROFILE\nset -gx "),
            "{fish}"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&env(removes), EnvShell::Json))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json["AWS_PROFILE"], serde_json::Value::Null);
        assert!(
            json.as_object()
                .is_some_and(|o| o.contains_key("AWS_DEFAULT_PROFILE"))
        );
        assert_eq!(json["AWS_ACCESS_KEY_ID"], "ASIAEXAMPLE");
    }

    /// What sh makes of the exports is the values themselves, with the removed variables gone.
    #[test]
    fn sh_evaluates_the_exports_to_the_values_issue_12() {
        let script = format!(
            "{}printf '%s|%s\\n' \"$AWS_SESSION_TOKEN\" \"${{AWS_PROFILE-unset}}\"",
            render(&env(&["AWS_PROFILE"]), EnvShell::Sh)
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("AWS_PROFILE", "personal")
            .output()
            .unwrap_or_else(|e| panic!("sh: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "it's a/b+c= $(id)|unset\n"
        );
    }
}
