//! `keyfed once`: refresh every target once, write its outputs, and exit non-zero naming each
//! target that failed.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use keyfed_core::clock::{SystemClock, rfc3339};

use crate::sources;

pub async fn run(path: &Path) -> anyhow::Result<()> {
    let config = super::load(path)?;
    let engine = sources::engine(config, Arc::new(SystemClock), sources::Start::AtOnce)?;
    let mut failed = Vec::new();
    for (name, outcome) in engine.refresh_all().await {
        match outcome {
            Ok(issued) => {
                let mut text = format!(
                    "ok      {name}: {}, expires {}\n",
                    issued.credential.describe(),
                    rfc3339(issued.credential.expires_at())
                );
                let written = engine
                    .target(&name)
                    .map(|t| t.outputs())
                    .unwrap_or_default();
                for output in written {
                    let _ = writeln!(
                        text,
                        "        {:<24} {}",
                        output.name,
                        output.path.display()
                    );
                }
                crate::stdout::write(text)?;
            }
            Err(e) => {
                crate::stdout::write(format!("FAILED  {name}: {e}\n"))?;
                failed.push(name);
            }
        }
    }
    let output_errors: Vec<String> = engine
        .targets()
        .flat_map(|t| t.snapshot().output_errors)
        .collect();
    if !failed.is_empty() {
        anyhow::bail!("{} target(s) failed: {}", failed.len(), failed.join(", "));
    }
    if !output_errors.is_empty() {
        anyhow::bail!("{}", output_errors.join("; "));
    }
    Ok(())
}
