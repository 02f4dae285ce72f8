//! What the leak check scanned over the whole suite (issue 11), for the README's reliability
//! row "Secret hygiene: debug logs and outputs of the whole suite": how many processes' output,
//! how many lines, checked against how many distinct secrets, and how many were found.
//!
//! Each test process keeps its own counts and, after every check, writes them to a file of its
//! own under `$KEYFED_RELIABILITY_DIR/leak-scan/` (a suite run as one process by `cargo test`
//! or as one process per test by `cargo nextest` alike), then — under a lock on that folder —
//! adds up every process's file and records the row: the last check of the suite leaves the
//! whole suite's figures. A leak found anywhere withdraws the row for the rest of the run.
//! Secrets are kept as hashes only. Nothing is written without the variable.

use std::collections::HashSet;
use std::hash::{Hash as _, Hasher as _};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use keyfed_core::emulator::report;

pub const SCENARIO: &str = "Secret hygiene: debug logs and outputs of the whole suite";
const CHECKED: &str = "the stdout and stderr of every keyfed process the integration suite \
    starts (daemons and one-shot commands with KEYFED_LOG=debug, keyfed run by the AWS CLI, the \
    demo, keyfed in the unit's sandbox) and of every consumer it runs (AWS CLI, boto3, the JS SDK, \
    google-auth, azure-identity), searched for every secret the run knew — client secrets raw, \
    form-urlencoded and as Basic auth, private key bits, every token, key and session token the \
    emulators issued, container tokens, identity headers, output files — and for the shape of a \
    signed JWT, a Google access token, an AWS session token and a PEM private key";

#[derive(Default)]
struct Counts {
    processes: u64,
    lines: u64,
    bytes: u64,
    found: u64,
    secrets: HashSet<u64>,
}

static COUNTS: Mutex<Option<Counts>> = Mutex::new(None);

fn hash(secret: &str) -> u64 {
    // Fixed keys: every test process of one build hashes alike.
    let mut hasher = std::hash::DefaultHasher::new();
    secret.hash(&mut hasher);
    hasher.finish()
}

/// One process's output checked: `text` its streams, `secrets` the values it was checked
/// against, `found` how many of them (and shapes) it held.
pub fn record(streams: &[&str], secrets: &[String], found: usize) {
    let mut counts = COUNTS.lock().unwrap_or_else(PoisonError::into_inner);
    let counts = counts.get_or_insert_with(Counts::default);
    counts.processes += 1;
    counts.lines += streams
        .iter()
        .map(|s| s.lines().count() as u64)
        .sum::<u64>();
    counts.bytes += streams.iter().map(|s| s.len() as u64).sum::<u64>();
    counts.found += found as u64;
    counts.secrets.extend(secrets.iter().map(|s| hash(s)));
    let Some(dir) = std::env::var_os(report::DIR_VAR).map(PathBuf::from) else {
        return;
    };
    publish_to(&dir, counts);
}

fn row_file(dir: &Path) -> PathBuf {
    let slug: String = SCENARIO
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    dir.join(format!("{slug}.json"))
}

/// Writes this process's counts to `dir`, adds up every process's, and records (or withdraws)
/// the row there.
fn publish_to(dir: &Path, counts: &Counts) {
    let folder = dir.join("leak-scan");
    std::fs::create_dir_all(&folder).unwrap_or_else(|e| panic!("{}: {e}", folder.display()));
    let lock = std::fs::File::create(folder.join(".lock"))
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()));
    lock.lock().unwrap_or_else(|e| panic!("lock: {e}"));
    let mine = serde_json::json!({
        "processes": counts.processes,
        "lines": counts.lines,
        "bytes": counts.bytes,
        "found": counts.found,
        "secrets": counts.secrets.iter().map(|h| format!("{h:x}")).collect::<Vec<_>>().join(" "),
    });
    let file = folder.join(format!("{}.json", std::process::id()));
    let partial = folder.join(format!(".{}.partial", std::process::id()));
    std::fs::File::create(&partial)
        .and_then(|mut f| f.write_all(mine.to_string().as_bytes()))
        .and_then(|()| std::fs::rename(&partial, &file))
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut total = Counts::default();
    for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(doc) = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string()))
        else {
            continue;
        };
        let n = |k: &str| doc[k].as_u64().unwrap_or(0);
        total.processes += n("processes");
        total.lines += n("lines");
        total.bytes += n("bytes");
        total.found += n("found");
        total.secrets.extend(
            doc["secrets"]
                .as_str()
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|h| u64::from_str_radix(h, 16).ok()),
        );
    }
    if total.found > 0 {
        // A leak anywhere in the run: the row must not say it held.
        let _ = std::fs::remove_file(row_file(dir));
        return;
    }
    let figures = format!(
        "{} processes, {} lines ({} KiB) scanned, {} distinct secrets and {} shapes checked, 0 found",
        total.processes,
        total.lines,
        total.bytes / 1024,
        total.secrets.len(),
        super::shapes::COUNT,
    );
    // The row as `report::held` writes it, into `dir` (which `held` reads from the environment).
    let row = serde_json::json!({
        "scenario": SCENARIO,
        "checked": CHECKED,
        "result": "held",
        "figures": figures,
    });
    let partial = folder.join(".row.partial");
    std::fs::write(&partial, row.to_string())
        .and_then(|()| std::fs::rename(&partial, row_file(dir)))
        .unwrap_or_else(|e| panic!("recording the row {SCENARIO:?}: {e}"));
    drop(lock);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(found: u64) -> Counts {
        Counts {
            processes: 2,
            lines: 10,
            bytes: 2048,
            found,
            secrets: [1, 2, 3].into_iter().collect(),
        }
    }

    /// issue 11: the row adds up every process's counts, and a leak anywhere withdraws it.
    #[test]
    fn issue_11_the_row_adds_up_every_process_and_a_leak_withdraws_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let row = row_file(dir.path());
        // Another test process's counts, written before this one's.
        std::fs::create_dir_all(dir.path().join("leak-scan")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            dir.path().join("leak-scan/1.json"),
            r#"{"processes":3,"lines":5,"bytes":1024,"found":0,"secrets":"3 4"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        publish_to(dir.path(), &counts(0));
        let text = std::fs::read_to_string(&row).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            text.contains("5 processes, 15 lines (3 KiB) scanned, 4 distinct secrets"),
            "{text}"
        );
        publish_to(dir.path(), &counts(1));
        assert!(!row.exists(), "a leak withdraws the row");
        // Counts only grow: this process's leak keeps the row away however much more passes.
        let mut later = counts(1);
        later.processes += 100;
        publish_to(dir.path(), &later);
        assert!(
            !row.exists(),
            "the row stays withdrawn for the rest of the run"
        );
    }
}
