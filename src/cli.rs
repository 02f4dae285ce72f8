//! The command line: subcommands and flags as clap parses them, nothing more. `--config` is
//! accepted before or after the subcommand.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "keyfed",
    version,
    about = "Short-lived AWS, Google Cloud and Azure credentials from Keycloak service-account tokens",
    long_about = None
)]
pub struct Cli {
    /// Configuration file [default: $KEYFED_CONFIG, else ~/.config/keyfed/keyfed.toml for a
    /// non-root user when it exists, else /etc/keyfed/keyfed.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// How log lines look [default: text; under systemd (JOURNAL_STREAM) text with a syslog
    /// priority prefix and no timestamp of its own]
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// The least severe of keyfed's own log lines to print: error, warn, info, debug or trace
    /// [default: as KEYFED_LOG says, else info]; it replaces KEYFED_LOG's level for keyfed's
    /// crates and leaves libraries to KEYFED_LOG (else warn)
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: keep every target fresh, write its outputs, answer the control socket
    Run,
    /// Refresh every target once, write the outputs, exit non-zero naming each target that failed
    Once,
    /// Print an AWS target's credentials for the AWS CLI/SDKs' `credential_process`
    CredentialProcess {
        /// The target's name in the configuration
        target: String,
    },
    /// Print a GCP target's subject token as Google's executable-sourced credentials expect
    /// (`credential_source.executable` in an external_account file)
    GcpSubjectToken {
        /// The target's name in the configuration
        target: String,
    },
    /// Show every target's state as the running daemon sees it
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration and print it resolved, with secrets redacted
    Check,
    /// Print a fresh token for a target (e.g. `curl -H "Authorization: Bearer $(keyfed token api)"`)
    Token {
        /// The target's name in the configuration
        target: String,
        /// Print the token's header and claims as JSON instead (never its signature)
        #[arg(long)]
        decode: bool,
    },
    /// Check a target end to end (configuration, Keycloak, token claims, the cloud's exchange)
    /// and print the fix for each check that fails
    Doctor {
        /// Check only this target [default: every target]
        target: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Print the cloud-side setup a target needs (or, with --keycloak, the Keycloak side)
    Trust {
        /// The target's name in the configuration
        target: String,
        /// How to print it
        #[arg(long, value_enum, default_value_t = TrustFormat::Shell)]
        format: TrustFormat,
        /// Print what Keycloak needs for this host and target instead of the cloud side
        #[arg(long)]
        keycloak: bool,
        /// Where to write the issuer's JWKS when Google cannot fetch it (a GCP target whose
        /// issuer is not public; shell format) [default: ./<target>-jwks.json]
        #[arg(long, value_name = "PATH")]
        jwks_file: Option<PathBuf>,
    },
    /// Run a command with a target's fresh credentials in its environment, passing its exit
    /// status and signals through (AWS and GCP values are not refreshed inside it)
    ///
    /// AWS: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
    /// AWS_CREDENTIAL_EXPIRATION. GCP: CLOUDSDK_AUTH_ACCESS_TOKEN, GOOGLE_OAUTH_ACCESS_TOKEN.
    /// These are fixed for the command's life and stop working when the credential expires
    /// (for AWS at AWS_CREDENTIAL_EXPIRATION; a Google token lives an hour at most, a federated
    /// one no longer than the Keycloak token): for long-running programs prefer
    /// credential_process or the local endpoint, which refresh. Azure: IDENTITY_ENDPOINT,
    /// IDENTITY_HEADER and AZURE_CLIENT_ID, the daemon's App Service face with a header bound to
    /// this one target, valid until the command ends (the SDK asks the face, which refreshes);
    /// needs `keyfed run` with an [endpoint] naming an azure_target. Token targets are refused
    /// (use `keyfed token`). Without a daemon, AWS and GCP targets are exchanged once, directly.
    ///
    /// Signals sent to keyfed (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM,
    /// real-time signals, …) are forwarded to the command. keyfed exits with the command's
    /// status, or ends by the signal that killed it (128+N where that signal is ignored); 127
    /// when the command is not found, 126 when it cannot be run, 125 when keyfed itself fails
    /// (an unknown target, a refused request, no credential).
    Exec {
        /// The target's name in the configuration
        target: String,
        /// The command and its arguments, after `--`
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
    /// Print a target's fresh credentials as environment variables, for `eval "$(keyfed env
    /// <target>)"` (valid until the credential expires; never refreshed)
    ///
    /// The variables `keyfed exec` sets. AWS and GCP values stop working when the credential
    /// expires (AWS_CREDENTIAL_EXPIRATION for AWS); an Azure IDENTITY_HEADER when the target's
    /// current token expires (at most 12 hours). Run it again for fresh values, or prefer
    /// credential_process or the local endpoint, which refresh.
    Env {
        /// The target's name in the configuration
        target: String,
        /// The syntax to print
        #[arg(long, value_enum, default_value_t = EnvShell::Sh)]
        shell: EnvShell,
    },
    /// Print a shell completion script (e.g. `keyfed completions bash >
    /// /usr/share/bash-completion/completions/keyfed`)
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print keyfed's manual page (roff), generated from this command line's own help
    Man,
    /// Run keyfed against built-in emulators of Keycloak, with a demo configuration
    // Hidden from --help, the manual and the completions in a build without the emulators
    // (the Debian package's), where it only explains that (commands::NO_DEMO).
    #[cfg_attr(not(feature = "demo"), command(hide = true))]
    Demo {
        /// Folder for the demo configuration, secret and token files
        #[arg(long, default_value = "keyfed-demo")]
        dir: PathBuf,
        /// Exit after the first full round instead of serving until Ctrl-C
        #[arg(long)]
        once: bool,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event
    Text,
    /// One JSON object per line, for log shippers
    Json,
}

/// The least severe level `--log-level` lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// How `keyfed trust` prints a setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrustFormat {
    /// Commands for the cloud's CLI (or `kcadm.sh` with --keycloak), ready to paste
    Shell,
    /// The same as JSON documents (a partial realm import with --keycloak)
    Json,
    /// Terraform resources of the official providers
    Terraform,
}

/// The syntax `keyfed env` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnvShell {
    /// `export NAME='value'` lines (sh, bash, zsh)
    Sh,
    /// `set -gx NAME 'value'` lines
    Fish,
    /// One JSON object of names to values
    Json,
}

/// Parses the command line. A mistake in it exits 2, clap's usage status — or 125 for
/// `keyfed exec`, whose statuses below 125 are its command's (`exit::ExecFailure`).
pub fn parse() -> Cli {
    Cli::try_parse().unwrap_or_else(|error| {
        if error.use_stderr() && names_exec(std::env::args_os().skip(1)) {
            let _ = error.print();
            std::process::exit(i32::from(crate::exit::EXEC));
        }
        error.exit()
    })
}

/// Whether `args` name the subcommand `exec`: the first that is neither an option nor the value
/// of `--config`.
fn names_exec(mut args: impl Iterator<Item = OsString>) -> bool {
    while let Some(arg) = args.next() {
        if arg == "--config" {
            args.next();
        } else if !arg.as_encoded_bytes().starts_with(b"-") {
            return arg == "exec";
        }
    }
    false
}
