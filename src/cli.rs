//! The command line: subcommands and flags as clap parses them, nothing more. `--config` is
//! accepted before or after the subcommand.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    /// Run keyfed against built-in emulators of Keycloak, with a demo configuration
    #[cfg(feature = "demo")]
    Demo {
        /// Folder for the demo configuration, secret and token files
        #[arg(long, default_value = "keyfed-demo")]
        dir: PathBuf,
        /// Exit after the first full round instead of serving until Ctrl-C
        #[arg(long)]
        once: bool,
    },
}

pub fn parse() -> Cli {
    Cli::parse()
}
