//! The `keyfed` binary: parse the command line, run the command, turn the outcome into an exit
//! status (see `exit.rs` and the README for what each status means).

mod access;
mod caps;
mod cli;
mod commands;
mod config;
mod control;
mod credential;
mod endpoint;
mod engine;
mod exit;
mod logging;
mod outputs;
mod peer_uid;
mod served;
mod sources;
mod systemd;

fn main() -> std::process::ExitCode {
    let cli = cli::parse();
    logging::init(!matches!(cli.command, cli::Command::GcpSubjectToken { .. }));
    exit::report(commands::run(cli))
}
