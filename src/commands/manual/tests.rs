use super::*;

/// The page as a reader sees its words: roff's escapes and font changes removed.
fn plain(roff: &str) -> String {
    roff.replace(r"\-", "-")
        .replace(r"\*(Aq", "'")
        .replace(r"\fB", "")
        .replace(r"\fI", "")
        .replace(r"\fR", "")
        .replace(r"\fP", "")
        .replace(r"\&", "")
}

fn the_page() -> String {
    page().unwrap_or_else(|e| panic!("the manual page: {e}"))
}

/// issue 13: every subcommand has its section, and every one of its long flags, value names
/// and possible values is on the page — walked from the command line's definition, so a flag
/// added to `cli.rs` without reaching the manual fails here.
#[test]
fn the_page_covers_every_subcommand_and_flag_issue_13() {
    let page = the_page();
    let text = plain(&page);
    let command = command();
    let mut checked = 0;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("keyfed {}", sub.get_name());
        assert!(
            page.contains(&format!(".SS \"{name}\"\n")),
            "no section for {name}"
        );
        for arg in sub.get_arguments().filter(|a| a.get_id() != "help") {
            if let Some(long) = arg.get_long() {
                assert!(
                    text.contains(&format!("--{long}")),
                    "{name}: --{long} missing"
                );
                checked += 1;
            }
            let values = arg
                .get_action()
                .takes_values()
                .then(|| arg.get_value_names());
            for value in values.flatten().into_iter().flatten() {
                assert!(text.contains(value.as_str()), "{name}: {value} missing");
            }
            for value in arg.get_possible_values() {
                assert!(
                    text.contains(value.get_name()),
                    "{name}: value {} of {} missing",
                    value.get_name(),
                    arg.get_id()
                );
            }
        }
    }
    // Every subcommand carries the three global flags; trust, token, doctor, status… their own.
    assert!(checked > 3 * command.get_subcommands().count(), "{checked}");
    for global in ["--config", "--log-format", "--log-level", "--version"] {
        assert!(text.contains(global), "{global} missing");
    }
}

/// issue 13: the global options are described once, under OPTIONS, not again in each
/// subcommand's section; a subcommand's own flags are in its section.
#[test]
fn global_options_are_described_once_issue_13() {
    let text = plain(&the_page());
    assert_eq!(text.matches("--log-format <FORMAT>").count(), 1, "{text}");
    let trust = text
        .split(".SS \"keyfed trust\"")
        .nth(1)
        .and_then(|rest| rest.split(".SS ").next())
        .unwrap_or_else(|| panic!("no trust section"));
    assert!(trust.contains("--jwks-file"), "{trust}");
    assert!(!trust.contains("--config"), "{trust}");
}

/// issue 13: the hand-written sections are there, with the statuses `exit.rs` defines.
#[test]
fn files_environment_and_exit_statuses_are_described_issue_13() {
    let page = the_page();
    let text = plain(&page);
    for heading in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH OPTIONS",
        ".SH COMMANDS",
        ".SH FILES",
        ".SH ENVIRONMENT",
        ".SH \"EXIT STATUS\"",
        ".SH \"SEE ALSO\"",
    ] {
        assert_eq!(page.matches(heading).count(), 1, "{heading}");
    }
    for needle in [
        "/etc/keyfed/keyfed.toml",
        "/etc/keyfed/keycloak-secret",
        "/run/keyfed/keyfed.sock",
        "/usr/share/doc/keyfed/examples/",
        "KEYFED_CONFIG",
        "KEYFED_LOG",
        "JOURNAL_STREAM",
        "NOTIFY_SOCKET",
        "CREDENTIALS_DIRECTORY",
    ] {
        assert!(text.contains(needle), "{needle} missing");
    }
    for status in [0, exit::FAILURE, exit::USAGE, exit::CONFIG, exit::EXEC] {
        assert!(
            page.contains(&format!(".TP\n\\fB{status}\\fR\n")),
            "{status}"
        );
    }
    assert!(page.contains(&format!(".TP\n\\fB{}\\fR\n", exit::READER_GONE)));
    // roff's preamble once, at the top; no line that roff would take for a request by mistake.
    assert_eq!(page.matches(PREAMBLE[0]).count(), 1);
    assert!(page.starts_with(PREAMBLE[0]));
    // Plain ASCII, whatever the help texts hold: `…` is groff's escape.
    assert!(page.is_ascii());
    assert!(page.contains(r"signals, \[u2026])"));
    for line in page.lines() {
        assert!(!line.starts_with('\''), "{line}");
    }
}

/// issue 13: each shell's script completes every subcommand.
#[test]
fn completions_name_every_subcommand_issue_13() {
    let command = command();
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        let script = String::from_utf8(script(shell)).unwrap_or_else(|e| panic!("{e}"));
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            assert!(
                script.contains(sub.get_name()),
                "{shell}: {} missing",
                sub.get_name()
            );
        }
        // fish spells long options `-l log-level`.
        assert!(script.contains("log-level"), "{shell}");
    }
    for shell in [
        clap_complete::Shell::Elvish,
        clap_complete::Shell::PowerShell,
    ] {
        let script = String::from_utf8(script(shell)).unwrap_or_else(|e| panic!("{e}"));
        assert!(script.contains("credential-process"), "{shell}");
    }
}

/// issue 13 (review): FILES gives an instance's socket rule — /etc/keyfed/NAME.toml uses
/// /run/keyfed-NAME/keyfed.sock while that folder exists — and NOTIFY_SOCKET names every
/// message keyfed sends; JOURNAL_STREAM does not suggest JSON loses the priority prefix.
#[test]
fn files_name_the_instance_socket_and_environment_the_notify_messages_issue_13() {
    let text = plain(&the_page()).replace('\n', " ");
    assert!(
        text.contains(
            "While /run/keyfed-NAME/ exists, the default control socket of /etc/keyfed/NAME.toml"
        ) && text.contains("is /run/keyfed-NAME/keyfed.sock"),
        "{text}"
    );
    for message in [
        "READY=1",
        "STATUS=",
        "EXTEND_TIMEOUT_USEC=",
        "RELOADING=1",
        "MONOTONIC_USEC=",
        "STOPPING=1",
        "WATCHDOG=1",
    ] {
        assert!(text.contains(message), "{message} missing");
    }
    assert!(!text.contains("unless --log-format json"), "{text}");
    assert!(text.contains("text or JSON"), "{text}");
}

/// issue 13 (review): the completions are generated from a copy of the command line without
/// its hidden subcommands; with none hidden (a build with the demo), that copy completes
/// exactly as the command line itself, so nothing the copy leaves out matters to a shell.
#[cfg(feature = "demo")]
#[test]
fn the_completed_copy_completes_like_the_command_line_issue_13() {
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
        clap_complete::Shell::Elvish,
        clap_complete::Shell::PowerShell,
    ] {
        let mut full = Cli::command();
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut full, "keyfed", &mut out);
        assert!(
            script(shell) == out,
            "{shell}: the copy completes differently"
        );
    }
}

/// issue 13 (review): a build without the demo's emulators (the Debian package's) hides
/// `keyfed demo` from --help, the manual and the completions; `cargo test
/// --no-default-features` runs this (tests/package.rs checks the packaged page and scripts).
#[cfg(not(feature = "demo"))]
#[test]
fn a_build_without_the_emulators_hides_the_demo_issue_13() {
    let page = plain(&the_page());
    assert!(!page.contains("demo"), "the page names the demo");
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        let script = String::from_utf8(script(shell)).unwrap_or_else(|e| panic!("{e}"));
        assert!(!script.contains("demo"), "{shell} completes the demo");
    }
}
