//! What `keyfed doctor` found, and how it is shown: each check's id, status, what it found and
//! (when it is not ✓) the fix; the configuration's checks first, then each target's in order.
//!
//! Text: a section per target, one line per check — `✓` ok, `✗` failed, `!` warning, `-`
//! skipped (an earlier check it needs failed), `i` information — with its fix on the next line.
//! JSON (`--json`), one document:
//!
//! ```json
//! {"ok": false, "file": "/etc/keyfed/keyfed.toml",
//!  "config": [{"id": "config", "status": "ok", "detail": "…", "fix": null}],
//!  "targets": [{"name": "prod", "kind": "aws", "issuer": "corp",
//!               "checks": [{"id": "claims.aud", "status": "fail", "detail": "…", "fix": "…"}]}]}
//! ```
//!
//! `status` is `ok`, `fail`, `warn`, `skip` or `info`; `ok` is false when any check failed.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Something that stops the target working; the exit status says so.
    Fail,
    /// Works, but deserves the operator's attention; does not fail the run.
    Warn,
    /// Not run: a check it needs failed.
    Skip,
    /// A reminder of something doctor cannot check from here.
    Info,
}

impl Status {
    fn symbol(self) -> &'static str {
        match self {
            Self::Ok => "✓",
            Self::Fail => "✗",
            Self::Warn => "!",
            Self::Skip => "-",
            Self::Info => "i",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(id: &'static str, detail: impl Into<String>) -> Self {
        Self {
            id,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(id: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            id,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn warn(id: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            id,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// Not run because `reason` (an earlier check failed).
    pub fn skip(id: &'static str, reason: impl Into<String>) -> Self {
        Self {
            id,
            status: Status::Skip,
            detail: format!("not run: {}", reason.into()),
            fix: None,
        }
    }

    pub fn info(id: &'static str, detail: impl Into<String>) -> Self {
        Self {
            id,
            status: Status::Info,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A failure from an error's text: its first line is what happened, a `hint:` line the
    /// fix (`fallback` when it has none), other lines (a trace ID) stay with what happened.
    pub fn fail_from(id: &'static str, error: &str, fallback: impl Into<String>) -> Self {
        let (detail, fix) = split_hint(error);
        Self::fail(id, detail, fix.unwrap_or_else(|| fallback.into()))
    }
}

/// An error's text as keyfed's errors write it (`what happened` then `\n  hint: the fix`, maybe
/// other indented lines) split into what happened and the fix.
pub fn split_hint(error: &str) -> (String, Option<String>) {
    let mut lines = error.lines();
    let mut detail = lines.next().unwrap_or_default().trim().to_owned();
    let mut fix: Option<String> = None;
    for line in lines.map(str::trim).filter(|l| !l.is_empty()) {
        match line.strip_prefix("hint: ") {
            Some(hint) => {
                fix = Some(match fix {
                    Some(before) => format!("{before} {hint}"),
                    None => hint.to_owned(),
                });
            }
            None => {
                let _ = write!(detail, " ({line})");
            }
        }
    }
    (detail, fix)
}

/// One target's checks.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub name: String,
    pub kind: &'static str,
    pub issuer: String,
    pub checks: Vec<Check>,
}

/// Everything one run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub file: PathBuf,
    pub config: Vec<Check>,
    pub targets: Vec<TargetReport>,
}

impl Report {
    pub fn new(file: PathBuf, config: Vec<Check>, targets: Vec<TargetReport>) -> Self {
        let failed = config
            .iter()
            .chain(targets.iter().flat_map(|t| &t.checks))
            .any(|c| c.status == Status::Fail);
        Self {
            ok: !failed,
            file,
            config,
            targets,
        }
    }

    /// `target check` (or `check` for the configuration's) of every failed check.
    pub fn failures(&self) -> Vec<String> {
        let config = self
            .config
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.id.to_owned());
        let targets = self.targets.iter().flat_map(|t| {
            t.checks
                .iter()
                .filter(|c| c.status == Status::Fail)
                .map(move |c| format!("{} {}", t.name, c.id))
        });
        config.chain(targets).collect()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "configuration {}", self.file.display());
        lines(&mut out, &self.config);
        for target in &self.targets {
            let _ = writeln!(
                out,
                "\ntarget {} ({}, issuer {})",
                target.name, target.kind, target.issuer
            );
            lines(&mut out, &target.checks);
        }
        let warnings = self
            .config
            .iter()
            .chain(self.targets.iter().flat_map(|t| &t.checks))
            .filter(|c| c.status == Status::Warn)
            .count();
        let failures = self.failures();
        let _ = writeln!(
            out,
            "\n{}, {warnings} warning{}",
            match failures.len() {
                0 => "no check failed".to_owned(),
                1 => "1 check failed".to_owned(),
                n => format!("{n} checks failed"),
            },
            if warnings == 1 { "" } else { "s" }
        );
        out
    }
}

/// The id column is this wide, so details line up.
const ID_WIDTH: usize = 18;

fn lines(out: &mut String, checks: &[Check]) {
    for check in checks {
        let _ = writeln!(
            out,
            "  {} {:<ID_WIDTH$} {}",
            check.status.symbol(),
            check.id,
            check.detail
        );
        if let Some(fix) = &check.fix {
            let _ = writeln!(out, "    {:<ID_WIDTH$} fix: {fix}", "");
        }
    }
}
