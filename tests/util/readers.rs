//! Concurrent readers of keyfed's output files (issue 11, crash safety): threads that read every
//! output in a tight loop while keyfed writes them, is killed and restarts, and judge each read
//! as the file's consumer would — a whole, parsable credential — and, once they stop, the order
//! of what they saw: a file never goes back to a credential older than one it held before
//! (newer: later in the order the issuing emulator issued it — Keycloak, STS, Google Cloud and
//! Entra each keep theirs — with an expiry no earlier where the file carries its issuer's; and
//! never a credential the file held before another). Failure messages name files and
//! credentials by number, never by their secret content.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::SystemTime;

/// How an output file is read: as its consumer reads it.
#[derive(Debug, Clone)]
pub enum Format {
    /// A shared credentials file of one profile (`aws-credentials`).
    AwsProfile { profile: &'static str },
    /// A user's credentials file keyfed merges `profile` into; each line of `kept` must stay.
    AwsMerged { profile: &'static str, kept: String },
    /// The `credential_process` document (`credential-process-json`).
    ProcessJson,
    /// A raw JWT from Keycloak with no trailing newline (`token`, `web-identity-token`,
    /// `gcp-subject-token`, `azure-federated-token`, an external_account's subject token).
    KeycloakJwt,
    /// A raw Google access token (`gcp-access-token`).
    GcpRaw,
    /// `{"access_token","expires_at","token_type"}` (`gcp-access-token`, `format = "json"`).
    GcpJson,
    /// An external_account document; a file-sourced one names a subject-token file that must
    /// be there whenever the document is.
    ExternalAccount,
    /// A raw Azure access token (a JWT from Entra).
    AzureRaw,
    /// `az account get-access-token`'s JSON (`azure-access-token`, `format = "json"`).
    AzureJson,
}

/// One output file the readers watch.
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: &'static str,
    pub path: PathBuf,
    pub format: Format,
}

/// The emulator that issued a credential, and what it knows the credential by: its issue order
/// tells which of two credentials is newer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Issued {
    /// A Keycloak access token (the token).
    Keycloak(String),
    /// STS credentials (their access key id).
    Sts(String),
    /// A Google access token (the token).
    Gcp(String),
    /// An Entra access token (the token).
    Entra(String),
    /// A document keyfed makes from its configuration (an external_account file): always the
    /// same, first in any order.
    Document,
}

/// What one read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// What tells credentials apart (the token, or the access key id).
    pub value: String,
    pub issued: Issued,
    /// Unix seconds, when the file carries the expiry its issuer stated (a JWT's `exp`, STS's
    /// `Expiration`); not keyfed's own reckoning from a relative `expires_in`, which can move
    /// back a second between two tokens that expire together.
    pub expires: Option<u64>,
}

/// What one reader saw.
#[derive(Debug, Default)]
pub struct Log {
    pub reads: u64,
    pub bad: Vec<String>,
    /// Per watched file, each credential it held in the order this reader saw them (a repeat
    /// of the one just seen is not recorded again).
    pub sequences: Vec<Vec<Seen>>,
}

/// Reader threads, until [`Readers::finish`].
pub struct Readers {
    files: Arc<Vec<Watched>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Log>>,
}

/// Everything the readers saw.
pub struct Report {
    pub files: Arc<Vec<Watched>>,
    pub logs: Vec<Log>,
}

impl Readers {
    /// Starts `n` threads, each reading every file in turn (starting at a different one) as
    /// fast as it can.
    pub fn start(files: Vec<Watched>, n: usize) -> Self {
        let files = Arc::new(files);
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|i| {
                let (files, stop) = (Arc::clone(&files), Arc::clone(&stop));
                std::thread::spawn(move || read_until(&files, &stop, i))
            })
            .collect();
        Self {
            files,
            stop,
            threads,
        }
    }

    /// Stops the readers and collects what they saw.
    pub fn finish(mut self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        let logs = std::mem::take(&mut self.threads)
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| panic!("a reader panicked")))
            .collect();
        Report {
            files: Arc::clone(&self.files),
            logs,
        }
    }
}

impl Drop for Readers {
    /// A test that fails before [`Readers::finish`] leaves no thread spinning.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn read_until(files: &[Watched], stop: &AtomicBool, first: usize) -> Log {
    let mut log = Log {
        sequences: vec![Vec::new(); files.len()],
        ..Log::default()
    };
    let mut present = vec![false; files.len()];
    while !stop.load(Ordering::Relaxed) {
        for k in 0..files.len() {
            let i = (first + k) % files.len();
            let file = &files[i];
            let bytes = match std::fs::read(&file.path) {
                Ok(bytes) => bytes,
                // Not written yet: a consumer started too early finds no file, not a bad one.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !present[i] => continue,
                Err(e) => {
                    log.reads += 1;
                    log.bad.push(format!("{}: cannot read it: {e}", file.name));
                    continue;
                }
            };
            log.reads += 1;
            match parse(&file.format, &bytes) {
                // A user's own file keyfed has not merged into yet.
                Ok(None) if !present[i] => {}
                Ok(None) => log.bad.push(format!(
                    "{}: the credential keyfed merged is gone",
                    file.name
                )),
                Ok(Some(seen)) => {
                    present[i] = true;
                    let sequence = &mut log.sequences[i];
                    if sequence.last() != Some(&seen) {
                        sequence.push(seen);
                    }
                }
                Err(why) => {
                    present[i] = true;
                    log.bad.push(format!("{}: {why}", file.name));
                }
            }
        }
    }
    log
}

impl Report {
    pub fn reads(&self) -> u64 {
        self.logs.iter().map(|l| l.reads).sum()
    }

    /// Every read that was not a whole credential.
    pub fn bad_reads(&self) -> Vec<&str> {
        self.logs
            .iter()
            .flat_map(|l| l.bad.iter().map(String::as_str))
            .collect()
    }

    /// How many credentials `name` held, as the reader that saw most changes saw them.
    pub fn credentials_seen(&self, name: &str) -> usize {
        let Some(i) = self.files.iter().position(|f| f.name == name) else {
            return 0;
        };
        self.logs
            .iter()
            .map(|l| l.sequences[i].len())
            .max()
            .unwrap_or(0)
    }

    /// Every time a reader saw a file go back: to a credential it held before another, to one
    /// issued earlier than the one before (`rank` gives the issue order the emulators know;
    /// `None` for a credential no emulator issued, itself a failure), or to an earlier expiry.
    pub fn regressions(&self, rank: impl Fn(&Issued) -> Option<usize>) -> Vec<String> {
        let mut found = Vec::new();
        for (reader, log) in self.logs.iter().enumerate() {
            for (file, sequence) in self.files.iter().zip(&log.sequences) {
                let mut held: HashSet<&str> = HashSet::new();
                let mut last_rank: Option<usize> = None;
                let mut last_expiry: Option<u64> = None;
                for (n, seen) in sequence.iter().enumerate() {
                    let at = format!("reader {reader}: {}: credential {n}", file.name);
                    if !held.insert(&seen.value) {
                        found.push(format!("{at} is one the file held before another"));
                    }
                    match rank(&seen.issued) {
                        None => found.push(format!("{at} was not issued by the emulator")),
                        Some(r) => {
                            if let Some(last) = last_rank.filter(|&last| r <= last) {
                                found.push(format!(
                                    "{at} was issued before the credential the file held just before it (issue order {r} after {last})"
                                ));
                            }
                            last_rank = Some(r);
                        }
                    }
                    if let Some(e) = seen.expires {
                        if let Some(last) = last_expiry.filter(|&last| e < last) {
                            found.push(format!(
                                "{at} expires {} s before the credential the file held just before it",
                                last - e
                            ));
                        }
                        last_expiry = Some(e);
                    }
                }
            }
        }
        found
    }
}

/// Judges one read of a file in `format`: a whole credential, none yet (a user's own file
/// keyfed has not merged into), or why not (never quoting it).
pub fn parse(format: &Format, bytes: &[u8]) -> Result<Option<Seen>, String> {
    if let Format::AwsMerged { profile, kept } = format {
        let text = String::from_utf8_lossy(bytes);
        if !text.ends_with('\n') {
            return Err("does not end with a newline".to_owned());
        }
        if let Some(n) = kept.lines().position(|l| !text.lines().any(|t| t == l)) {
            return Err(format!("line {n} of the user's own content is missing"));
        }
        if !text.lines().any(|l| l.trim() == format!("[{profile}]")) {
            return Ok(None);
        }
    }
    whole(format, bytes).map(Some)
}

fn whole(format: &Format, bytes: &[u8]) -> Result<Seen, String> {
    if bytes.is_empty() {
        return Err("empty".to_owned());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    match format {
        Format::AwsProfile { profile } => {
            let key = profile_keys(text, profile)?;
            let lines = text.lines().count();
            if lines != 4 || !text.ends_with('\n') {
                return Err(format!("{lines} lines, not a profile and its three keys"));
            }
            Ok(sts(key))
        }
        // Whole and the user's content kept: checked by `parse`.
        Format::AwsMerged { profile, .. } => Ok(sts(profile_keys(text, profile)?)),
        Format::ProcessJson => {
            let doc = json(text)?;
            if doc["Version"] != 1 {
                return Err("Version is not 1".to_owned());
            }
            for key in ["AccessKeyId", "SecretAccessKey", "SessionToken"] {
                non_empty(&doc, key)?;
            }
            Ok(Seen {
                expires: Some(rfc3339(non_empty(&doc, "Expiration")?)?),
                ..sts(non_empty(&doc, "AccessKeyId")?.to_owned())
            })
        }
        Format::KeycloakJwt => {
            let exp = jwt_exp(text)?;
            Ok(Seen {
                value: text.to_owned(),
                issued: Issued::Keycloak(text.to_owned()),
                expires: Some(exp),
            })
        }
        Format::AzureRaw => Ok(Seen {
            value: text.to_owned(),
            issued: Issued::Entra(text.to_owned()),
            expires: Some(jwt_exp(text)?),
        }),
        Format::GcpRaw => {
            if !text.starts_with("ya29.") || text.len() < 100 || text.contains(char::is_whitespace)
            {
                return Err(format!(
                    "not a whole Google access token ({} bytes)",
                    text.len()
                ));
            }
            Ok(gcp(text))
        }
        Format::GcpJson => {
            let doc = json(text)?;
            if doc["token_type"] != "Bearer" {
                return Err("token_type is not Bearer".to_owned());
            }
            rfc3339(non_empty(&doc, "expires_at")?)?;
            Ok(gcp(non_empty(&doc, "access_token")?))
        }
        Format::AzureJson => {
            let doc = json(text)?;
            for key in ["expiresOn", "tenant", "tokenType"] {
                non_empty(&doc, key)?;
            }
            doc["expires_on"]
                .as_u64()
                .or_else(|| doc["expires_on"].as_str().and_then(|s| s.parse().ok()))
                .ok_or("expires_on is not a number of seconds")?;
            let token = non_empty(&doc, "accessToken")?;
            Ok(Seen {
                value: token.to_owned(),
                issued: Issued::Entra(token.to_owned()),
                expires: Some(jwt_exp(token)?),
            })
        }
        Format::ExternalAccount => {
            let doc = json(text)?;
            if doc["type"] != "external_account" {
                return Err("type is not external_account".to_owned());
            }
            for key in ["audience", "subject_token_type", "token_url"] {
                non_empty(&doc, key)?;
            }
            let source = &doc["credential_source"];
            if let Some(file) = source["file"].as_str() {
                // Written first, so the document never names a file that is not there.
                let token = std::fs::read(file)
                    .map_err(|e| format!("the subject-token file it names: {e}"))?;
                whole(&Format::KeycloakJwt, &token)
                    .map_err(|e| format!("the subject-token file it names: {e}"))?;
            } else if source["executable"]["command"].as_str().is_none() {
                return Err("credential_source names neither a file nor an executable".to_owned());
            }
            // Fixed by the configuration: only torn reads and changes matter.
            Ok(Seen {
                value: text.to_owned(),
                issued: Issued::Document,
                expires: None,
            })
        }
    }
}

fn sts(access_key_id: String) -> Seen {
    Seen {
        value: access_key_id.clone(),
        issued: Issued::Sts(access_key_id),
        expires: None,
    }
}

fn gcp(token: &str) -> Seen {
    Seen {
        value: token.to_owned(),
        issued: Issued::Gcp(token.to_owned()),
        expires: None,
    }
}

fn json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON ({} bytes): {e}", text.len()))
}

fn non_empty<'a>(doc: &'a serde_json::Value, key: &str) -> Result<&'a str, String> {
    doc[key]
        .as_str()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{key} is missing or empty"))
}

fn rfc3339(text: &str) -> Result<u64, String> {
    humantime::parse_rfc3339(text)
        .map_err(|e| format!("a time that is not RFC 3339: {e}"))?
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|e| e.to_string())
}

/// The `exp` of a whole JWT: three base64url parts, JSON header and claims, a signature.
fn jwt_exp(text: &str) -> Result<u64, String> {
    use base64::Engine as _;
    let parts: Vec<&str> = text.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err(format!("not a JWT: {} parts", parts.len()));
    };
    if signature.is_empty() || text.contains(char::is_whitespace) {
        return Err("not a whole JWT".to_owned());
    }
    let decode = |part: &str, what: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| format!("the JWT's {what} is not base64url: {e}"))
            .and_then(|b| {
                serde_json::from_slice::<serde_json::Value>(&b)
                    .map_err(|e| format!("the JWT's {what} is not JSON: {e}"))
            })
    };
    decode(header, "header")?;
    decode(claims, "claims")?["exp"]
        .as_u64()
        .ok_or_else(|| "the JWT has no exp".to_owned())
}

/// The access key id of `[profile]`, which must hold all three keys, each once.
fn profile_keys(text: &str, profile: &str) -> Result<String, String> {
    let header = format!("[{profile}]");
    let mut lines = text.lines().skip_while(|l| l.trim() != header);
    if lines.next().is_none() {
        return Err(format!("no [{profile}] profile"));
    }
    let mut key_id = None;
    let mut found = Vec::new();
    for line in lines.take_while(|l| !l.trim_start().starts_with('[')) {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if v.is_empty() {
            return Err(format!("{k} is empty"));
        }
        if found.contains(&k) {
            return Err(format!("{k} twice"));
        }
        found.push(k);
        if k == "aws_access_key_id" {
            key_id = Some(v.to_owned());
        }
    }
    for key in ["aws_secret_access_key", "aws_session_token"] {
        if !found.contains(&key) {
            return Err(format!("[{profile}] lacks {key}"));
        }
    }
    key_id.ok_or_else(|| format!("[{profile}] lacks aws_access_key_id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_files_are_told_from_whole_ones() {
        let profile = Format::AwsProfile { profile: "p" };
        let text =
            "[p]\naws_access_key_id = ASIA1\naws_secret_access_key = s\naws_session_token = t\n";
        let read = |bytes: &[u8]| parse(&profile, bytes).map(|s| s.map(|s| s.value));
        assert_eq!(read(text.as_bytes()), Ok(Some("ASIA1".into())));
        for cut in [0, 1, 10, text.len() - 1] {
            assert!(read(&text.as_bytes()[..cut]).is_err(), "{cut}");
        }
        assert!(parse(&Format::ProcessJson, b"{\"Version\":1,").is_err());
        assert!(parse(&Format::KeycloakJwt, b"a.b").is_err());
        let merged = Format::AwsMerged {
            profile: "p",
            kept: "# mine\n".to_owned(),
        };
        assert_eq!(parse(&merged, b"# mine\n[q]\n"), Ok(None), "not merged yet");
        let both = format!("# mine\n{text}");
        assert!(parse(&merged, both.as_bytes()).is_ok_and(|s| s.is_some()));
        assert!(
            parse(&merged, text.as_bytes()).is_err(),
            "the user's line lost"
        );
    }

    fn seen(value: &str, issued: Issued, expires: Option<u64>) -> Seen {
        Seen {
            value: value.to_owned(),
            issued,
            expires,
        }
    }

    /// The order checks catch a file gone back, however they learn of it.
    #[test]
    fn a_file_gone_back_is_a_regression() {
        let report = |sequence: Vec<Seen>| Report {
            files: Arc::new(vec![Watched {
                name: "f",
                path: PathBuf::from("f"),
                format: Format::GcpRaw,
            }]),
            logs: vec![Log {
                reads: 3,
                bad: Vec::new(),
                sequences: vec![sequence],
            }],
        };
        let sts = |k: &str| Issued::Sts(k.to_owned());
        // Google tokens rank first whatever they are: only the rule against a credential held
        // before catches them going back.
        let rank = |i: &Issued| match i {
            Issued::Sts(k) => k.parse().ok(),
            _ => Some(0),
        };
        let forward = report(vec![
            seen("1", sts("1"), Some(10)),
            seen("2", sts("2"), Some(10)),
            seen("3", sts("3"), Some(11)),
        ]);
        assert_eq!(forward.regressions(rank), Vec::<String>::new());
        let gcp = |t: &str| seen(t, Issued::Gcp(t.to_owned()), None);
        assert_eq!(
            report(vec![gcp("a"), gcp("b"), gcp("a")])
                .regressions(rank)
                .len(),
            3
        );
        for back in [
            vec![seen("2", sts("2"), None), seen("1", sts("1"), None)],
            vec![seen("3", sts("3"), Some(11)), seen("4", sts("4"), Some(10))],
            vec![seen("x", sts("not issued"), None)],
        ] {
            assert_eq!(report(back).regressions(rank).len(), 1);
        }
    }
}
