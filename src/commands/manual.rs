//! `keyfed completions <shell>` and `keyfed man`: shell completions and the manual page,
//! generated from the command line's definition (`cli.rs`) so they never drift from `--help`.
//!
//! The manual is one page, keyfed(1): clap_mangen renders its name, synopsis, description and
//! global options; then every subcommand gets a section of its own with its synopsis, its
//! long help and its arguments (clap_mangen's own subcommand list points at one page per
//! subcommand, which keyfed does not ship); then FILES, ENVIRONMENT, EXIT STATUS and SEE ALSO,
//! written here, with the exit statuses' numbers taken from `exit.rs`.

use std::io;

use clap::CommandFactory as _;
use clap_mangen::roff::{Inline, Roff, bold, italic, roman};

use crate::cli::Cli;
use crate::exit;

#[cfg(test)]
mod tests;

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    crate::stdout::write(script(shell))?;
    Ok(())
}

/// Prints the manual page (roff).
pub fn man() -> anyhow::Result<()> {
    crate::stdout::write(page()?)?;
    Ok(())
}

/// The completion script for `shell`, completing `keyfed`.
pub fn script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut command = completed();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "keyfed", &mut out);
    out
}

/// The command line the completions offer: [`Cli`]'s without its hidden subcommands (`demo`
/// in a build without the emulators). clap_complete's scripts offer hidden subcommands too, and
/// clap cannot remove one from a command, so this is a copy with the visible ones.
fn completed() -> clap::Command {
    let full = Cli::command();
    let mut command = clap::Command::new("keyfed")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = full.get_about() {
        command = command.about(about.clone());
    }
    command
}

/// The command line as the manual describes it: built, so every subcommand knows its global
/// options and its name as typed (`keyfed trust`).
fn command() -> clap::Command {
    let mut command = Cli::command()
        .disable_help_subcommand(true)
        .subcommand_value_name("COMMAND");
    command.build();
    command
}

/// The whole manual page, keyfed(1), in roff.
pub fn page() -> io::Result<String> {
    let command = command();
    let man = clap_mangen::Man::new(command.clone())
        .title("KEYFED")
        .manual("keyfed manual");
    let mut page = String::new();
    // The first rendering keeps roff's preamble (the apostrophe string); the others drop it.
    page.push_str(&rendered(|w| man.render_title(w))?);
    // Paths, variables and flags stay whole: no hyphenation, no stretched lines.
    page.push_str(".nh\n.ad l\n");
    page.push_str(&section(|w| man.render_name_section(w))?);
    page.push_str(&section(|w| man.render_synopsis_section(w))?);
    page.push_str(&section(|w| man.render_description_section(w))?);
    page.push_str(&about()?);
    page.push_str(&section(|w| man.render_options_section(w))?);
    page.push_str(&commands(&command)?);
    page.push_str(&hand_written()?);
    Ok(ascii(&page))
}

/// The page with every character beyond ASCII written as groff's `\[uXXXX]` escape: the help
/// texts hold a few (`…`), which a roff reading its input as Latin-1 (groff without preconv)
/// would garble and warn about.
fn ascii(page: &str) -> String {
    let mut out = String::with_capacity(page.len());
    for c in page.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out
}

/// The COMMANDS section: for each subcommand its synopsis, long help and arguments. Its global
/// options and `--help` are described once, in OPTIONS.
fn commands(command: &clap::Command) -> io::Result<String> {
    let mut roff = Roff::default();
    roff.control("SH", ["COMMANDS"]);
    roff.text([roman(
        "Every command also takes the options above, before or after its name. \
         The commands that read the configuration find it as described under FILES.",
    )]);
    let mut out = without_preamble(&to_string(&roff)?);
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
        let mut heading = Roff::default();
        heading.control("SS", [name]);
        out.push_str(&without_preamble(&to_string(&heading)?));
        let own = sub.clone().mut_args(|arg| {
            let shared = arg.is_global_set() || arg.get_id() == "help";
            arg.hide(shared)
        });
        let man = clap_mangen::Man::new(own.clone());
        out.push_str(&part(|w| man.render_synopsis_section(w))?);
        out.push_str(&part(|w| man.render_description_section(w))?);
        if own.get_arguments().any(|a| !a.is_hide_set()) {
            out.push_str(&part(|w| man.render_options_section(w))?);
        }
    }
    Ok(out)
}

/// The description's paragraphs after the command line's one-line `about`.
fn about() -> io::Result<String> {
    let mut roff = Roff::default();
    for paragraph in ABOUT {
        roff.control("PP", []);
        roff.text([roman(*paragraph)]);
    }
    Ok(without_preamble(&to_string(&roff)?))
}

const ABOUT: &[&str] = &[
    "keyfed gives a Linux host outside the cloud short-lived cloud credentials without any \
     long-lived cloud key on disk. The host proves who it is with a Keycloak service account \
     (OAuth 2.0 client credentials), asks Keycloak for a token carrying the audience a cloud \
     expects, and trades it with AWS STS, Google Cloud workload identity federation or \
     Microsoft Entra ID for credentials. keyfed run, the daemon, keeps them fresh, writes them \
     to files, answers a Unix control socket and may serve a local metadata endpoint (AWS \
     IMDSv2 and container, GCE metadata, Azure IMDS and App Service faces).",
    "Start with an annotated configuration from /usr/share/doc/keyfed/examples/, put the \
     client secret in /etc/keyfed/keycloak-secret, check both with keyfed check and \
     keyfed doctor, then systemctl enable --now keyfed.",
];

/// What a configuration management tool or an operator finds on a host with the package.
const FILES: &[(&str, &str)] = &[
    (
        "/etc/keyfed/keyfed.toml",
        "The configuration, unless --config or KEYFED_CONFIG names another file; a user other \
         than root reads ~/.config/keyfed/keyfed.toml ($XDG_CONFIG_HOME/keyfed/keyfed.toml) \
         first when it exists. keyfed check validates it and prints it resolved.",
    ),
    (
        "/etc/keyfed/keycloak-secret",
        "The Keycloak client secret, root:root 0600. keyfed.service hands it to keyfed with \
         LoadCredential=, so the configuration names it as \
         client_secret_file = \"${CREDENTIALS_DIRECTORY}/keycloak-secret\".",
    ),
    (
        "/run/keyfed/keyfed.sock",
        "The control socket keyfed run answers (credential-process, gcp-subject-token, status, \
         exec, env), unless [control] socket names another: the default for root and for a \
         configuration in /etc/keyfed/ (but see /run/keyfed-NAME/ below); else \
         $XDG_RUNTIME_DIR/keyfed.sock, $RUNTIME_DIRECTORY/keyfed.sock or \
         ~/.cache/keyfed/keyfed.sock.",
    ),
    (
        "/run/keyfed/",
        "keyfed.service's runtime folder: the socket and the credential files its outputs \
         name there, removed when the service stops.",
    ),
    (
        "/etc/keyfed/NAME.toml, /run/keyfed-NAME/",
        "The configuration of the instance keyfed@NAME.service (its secret: \
         /etc/keyfed/NAME.keycloak-secret) and its runtime folder, beside /run/keyfed, which \
         systemd creates when the instance starts and removes when it stops. While \
         /run/keyfed-NAME/ exists, the default control socket of /etc/keyfed/NAME.toml (any \
         NAME, keyfed too) is /run/keyfed-NAME/keyfed.sock, for the instance and its clients \
         alike; otherwise it is /run/keyfed/keyfed.sock as above.",
    ),
    (
        "$XDG_RUNTIME_DIR/keyfed/, ~/.cache/keyfed/",
        "The cache of keyfed credential-process when no daemon answers (0600).",
    ),
    (
        "/usr/lib/systemd/system/keyfed.service",
        "The hardened service; keyfed@.service runs one instance per configuration file, \
         keyfed-once.service and keyfed-once.timer refresh on a schedule without a daemon.",
    ),
    (
        "/usr/lib/sysusers.d/keyfed.conf, /usr/lib/tmpfiles.d/keyfed.conf",
        "The system user keyfed and the folder /etc/keyfed (0750 root:keyfed).",
    ),
    (
        "/usr/share/doc/keyfed/examples/",
        "Annotated configurations (keyfed.toml documents every key and its default; aws.toml, \
         gcp.toml, azure.toml, endpoint.toml, private-key-jwt.toml) and drop-ins for units \
         that consume credentials (consumer-*.conf).",
    ),
];

/// The environment keyfed reads.
const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "KEYFED_CONFIG",
        "The configuration file, when --config is not given.",
    ),
    (
        "KEYFED_LOG",
        "A log filter: a level (error, warn, info, debug, trace) or per-module directives \
         (keyfed=debug,reqwest=trace); --log-level takes precedence. Default: info for keyfed, \
         warn for libraries.",
    ),
    (
        "JOURNAL_STREAM",
        "Set by systemd when standard error goes to the journal: when it names standard \
         error, every log line, text or JSON (--log-format), starts with a syslog priority \
         prefix (<3> error to <7> debug) that journald turns into the entry's priority, and \
         text lines carry no timestamp of their own (the journal has one).",
    ),
    (
        "NOTIFY_SOCKET, WATCHDOG_USEC",
        "Set by systemd for Type=notify services: keyfed run reports there READY=1; STATUS= \
         with the targets' state; EXTEND_TIMEOUT_USEC= while its first round outlasts \
         systemd's start timeout; RELOADING=1 with MONOTONIC_USEC= on SIGHUP, then READY=1 \
         again; STOPPING=1; and WATCHDOG=1 pings every half WATCHDOG_USEC.",
    ),
    (
        "CREDENTIALS_DIRECTORY, RUNTIME_DIRECTORY",
        "Set by systemd for LoadCredential= and RuntimeDirectory=; any ${NAME} in the \
         configuration's paths and URLs is expanded from the environment.",
    ),
    (
        "XDG_RUNTIME_DIR, XDG_CONFIG_HOME, HOME",
        "Where a user other than root keeps the configuration, the socket and the cache.",
    ),
    (
        "HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY",
        "Proxies for Keycloak and the clouds (upper or lower case); loopback hosts are never \
         reached through a proxy.",
    ),
];

/// The exit statuses (the numbers are `exit.rs`'s).
fn exit_statuses() -> [(u8, &'static str); 6] {
    [
        (0, "Success."),
        (
            exit::FAILURE,
            "The work failed: Keycloak or a cloud refused, a token failed its checks, the \
             network failed, or a target is stopped (stopped: needs a change on ...).",
        ),
        (
            exit::USAGE,
            "Usage: bad flags or arguments, an unknown target name.",
        ),
        (
            exit::CONFIG,
            "Configuration: the file is missing, unreadable or invalid.",
        ),
        (
            exit::EXEC,
            "keyfed exec only: keyfed itself failed and ran no command. Otherwise keyfed exec \
             exits with its command's status (126 when it cannot be run, 127 when it is not \
             found, 128+N when it was killed by signal N).",
        ),
        (
            exit::READER_GONE,
            "Standard output's reader went away before all was written (keyfed doctor --json | \
             head -1): keyfed stops quietly, as a shell reports a program killed by SIGPIPE.",
        ),
    ]
}

/// Other manual pages an operator of keyfed reads.
const SEE_ALSO: &[(&str, &str)] = &[
    ("systemctl", "1"),
    ("journalctl", "1"),
    ("systemd.exec", "5"),
    ("systemd.service", "5"),
    ("systemd.timer", "5"),
    ("sysusers.d", "5"),
    ("tmpfiles.d", "5"),
];

/// FILES, ENVIRONMENT, EXIT STATUS and SEE ALSO.
fn hand_written() -> io::Result<String> {
    let mut roff = Roff::default();
    roff.control("SH", ["FILES"]);
    for (path, what) in FILES {
        definition(&mut roff, [bold(*path)], what);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    for (names, what) in ENVIRONMENT {
        definition(&mut roff, [bold(*names)], what);
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (status, what) in exit_statuses() {
        definition(&mut roff, [bold(status.to_string())], what);
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut line = Vec::new();
    for (i, (page, section)) in SEE_ALSO.iter().enumerate() {
        let sep = if i + 1 < SEE_ALSO.len() { ", " } else { "" };
        line.push(bold(*page));
        line.push(roman(format!("({section}){sep}")));
    }
    roff.text(line);
    roff.control("PP", []);
    roff.text([
        roman("The README, with the configuration's reference and every output kind: "),
        italic("/usr/share/doc/keyfed/README.md"),
        roman("."),
    ]);
    Ok(without_preamble(&to_string(&roff)?))
}

/// One `.TP` item: a term and its explanation.
fn definition<const N: usize>(roff: &mut Roff, term: [Inline; N], what: &str) {
    roff.control("TP", []);
    roff.text(term);
    roff.text([roman(what)]);
}

fn to_string(roff: &Roff) -> io::Result<String> {
    let mut out = Vec::new();
    roff.to_writer(&mut out)?;
    String::from_utf8(out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// What one of clap_mangen's renderers writes, as text.
fn rendered(render: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> io::Result<String> {
    let mut out = Vec::new();
    render(&mut out)?;
    String::from_utf8(out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// One of the page's own sections as clap_mangen renders it, without roff's preamble.
fn section(render: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> io::Result<String> {
    Ok(without_preamble(&rendered(render)?))
}

/// A part of a subcommand's section: what clap_mangen renders without its `.SH` heading (the
/// subcommand's `.SS` heads it), as a paragraph of its own.
fn part(render: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> io::Result<String> {
    let text = without_preamble(&rendered(render)?);
    let mut out = String::from(".PP\n");
    for line in text.lines().filter(|line| !line.starts_with(".SH ")) {
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// Drops roff's preamble, which defines the apostrophe string, from all but the first part.
fn without_preamble(text: &str) -> String {
    text.lines()
        .filter(|line| !PREAMBLE.contains(line))
        .flat_map(|line| [line, "\n"])
        .collect()
}

/// The two lines `roff` starts every rendering with.
const PREAMBLE: [&str; 2] = [r".ie \n(.g .ds Aq \(aq", r".el .ds Aq '"];
