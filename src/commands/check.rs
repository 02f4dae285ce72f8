//! `keyfed check`: validate the configuration and print it resolved, secrets redacted.

use std::path::Path;

use crate::config;

pub fn run(path: &Path) -> anyhow::Result<()> {
    let config = super::load(path)?;
    let mut text = config::show(&config);
    text.push_str(&format!(
        "# {}: valid ({} issuer{}, {} target{})\n",
        config.file.display(),
        config.issuers.len(),
        if config.issuers.len() == 1 { "" } else { "s" },
        config.targets.len(),
        if config.targets.len() == 1 { "" } else { "s" },
    ));
    crate::stdout::write(text)?;
    Ok(())
}
