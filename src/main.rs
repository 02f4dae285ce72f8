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
mod stdout;
mod systemd;

fn main() -> std::process::ExitCode {
    let dumpable = not_dumpable();
    let cli = cli::parse();
    logging::init(logging::Settings {
        enabled: !matches!(cli.command, cli::Command::GcpSubjectToken { .. }),
        format: cli.log_format,
        level: cli.log_level,
    });
    if let Err(e) = dumpable {
        tracing::warn!("cannot mark the process non-dumpable (prctl PR_SET_DUMPABLE): {e}");
    }
    exit::report(commands::run(cli))
}

/// Marks the process non-dumpable before it reads any secret (issue 11): the kernel then
/// writes no core dump of it, and hands its `/proc/<pid>` files (`environ`, `mem`, `maps`, …) to
/// root and refuses `ptrace`, so another process of keyfed's own user cannot read its memory.
/// Every command does so: nearly all read a client secret, a key or a credential.
fn not_dumpable() -> rustix::io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
}
