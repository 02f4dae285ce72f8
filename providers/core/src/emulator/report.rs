//! The rows of the README's "Reliability" table. A reliability test that held records one row
//! (scenario, what it checked, figures it measured) as a JSON file in the folder named by
//! `KEYFED_RELIABILITY_DIR`; `tests/reliability.py` turns the folder into the table. The test
//! command sets the folder; a test run outside it records nothing.

use std::path::PathBuf;

use serde_json::json;

/// The environment variable naming the folder rows are written to.
pub const DIR_VAR: &str = "KEYFED_RELIABILITY_DIR";

/// Records that `scenario` held: `checked` says what was asserted, `figures` what was measured
/// (e.g. "38 refreshes, 0 partial reads"). One file per scenario, so tests running in parallel
/// processes never share a file; a later run of the same scenario replaces its row.
///
/// Panics when the row cannot be written: a test that held but could not say so must fail,
/// or the table would silently lose it.
pub fn held(scenario: &str, checked: &str, figures: &str) {
    let Some(dir) = std::env::var_os(DIR_VAR).map(PathBuf::from) else {
        return;
    };
    let slug: String = scenario
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let row = json!({
        "scenario": scenario,
        "checked": checked,
        "result": "held",
        "figures": figures,
    });
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        let partial = dir.join(format!(".{slug}.json.partial"));
        std::fs::write(&partial, row.to_string())?;
        std::fs::rename(&partial, dir.join(format!("{slug}.json")))
    });
    if let Err(error) = written {
        panic!(
            "recording the reliability row {scenario:?} in {}: {error}",
            dir.display()
        );
    }
}
