//! `keyfed check`: validate the configuration and print it resolved, secrets redacted.

use std::path::Path;

use crate::config;

pub fn run(path: &Path) -> anyhow::Result<()> {
    let config = super::load(path)?;
    print!("{}", config::show(&config));
    println!(
        "# {}: valid ({} issuer{}, {} target{})",
        config.file.display(),
        config.issuers.len(),
        if config.issuers.len() == 1 { "" } else { "s" },
        config.targets.len(),
        if config.targets.len() == 1 { "" } else { "s" },
    );
    Ok(())
}
