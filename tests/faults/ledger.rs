//! The rules every look must keep, and what the looks add up to. Whatever the upstreams do:
//!
//! - nothing expired is served: every credential a face hands out has at least [`SERVED_LEFT`]
//!   left (keyfed stops serving 30 s before expiry), and every credential an output file
//!   changes to has as much when it appears;
//! - a valid credential stays: while the newest credential seen (on a face, in a file or in
//!   `status`) is usable, every face serves and every file holds a usable one;
//! - output files never vanish once written, and always parse (checked as they are read).
//!
//! And while nothing can change a target's credential (an outage that began before its
//! credential was issued, or no fault at all), `status`, `/readyz`, the metrics and the faces
//! must agree with the credential's expiry: usable — faces serve, not listed by `/readyz`,
//! `keyfed_target_up` 1, not "pending" or "expired"; not usable — every face answers 503 with
//! the reason, `/readyz` lists the target with the reason, `keyfed_target_up` 0, not "fresh";
//! and the reason, once an attempt failed, names the fault in words an operator recognises.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::kinds::Stop;
use super::observe::{Answer, Cred, Look, TARGETS};

/// The least life a served credential may have left when the test sees it: keyfed's 30 s
/// margin, less what the answer may have taken to arrive on a loaded machine.
pub const SERVED_LEFT: Duration = Duration::from_secs(20);
/// What keyfed says of an upstream that did not answer in time.
const TIMEOUT_WORDS: &[&str] = &["timed out", "no answer within"];
/// keyfed stops serving a credential this long before it expires.
pub const MARGIN: Duration = Duration::from_secs(30);
/// Distance from the margin within which a look cannot tell usable from not.
const BLUR: Duration = Duration::from_secs(2);
/// How long an output file may still hold an unusable credential after a usable one is known:
/// files are written on a thread of their own, after the credential is served.
const FILE_LAG: Duration = Duration::from_secs(3);

/// What a scenario expects of a target at a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Its upstream is in trouble and has been since before its current credential (if any)
    /// was issued: nothing can change it, so every view must agree with its expiry.
    Outage,
    /// No trouble reaches it: it stays usable, every view saying so.
    Healthy,
    /// Trouble starting or ending, or flapping: only the rules that hold whatever happens.
    Changing,
}

/// What one target went through.
#[derive(Debug, Default, Clone)]
pub struct Track {
    /// The newest credential seen anywhere (latest expiry).
    pub newest: Option<Cred>,
    file: Option<Cred>,
    file_behind_since: Option<SystemTime>,
    /// Face answers: credentials served, and 503s.
    pub served: u64,
    pub refused: u64,
    /// The last look at which a face served it.
    pub last_served: Option<SystemTime>,
    /// Whether its last error named the trouble in the trouble's own words at some look.
    pub named: bool,
}

/// Every look of one scenario, checked as it is recorded.
pub struct Ledger {
    scenario: String,
    pub tracks: BTreeMap<&'static str, Track>,
    pub looks: u64,
}

impl Ledger {
    pub fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            tracks: TARGETS
                .iter()
                .map(|(name, _, _)| (*name, Track::default()))
                .collect(),
            looks: 0,
        }
    }

    /// Checks `look` against the rules (see the module's doc): `expect` says what each target
    /// should be going through, `words` what the reason of a target in an outage must say (any
    /// one of them).
    pub fn record(
        &mut self,
        look: &Look,
        expect: impl Fn(&str) -> Expect,
        words: &[&str],
        stops: Option<Stop>,
    ) {
        self.looks += 1;
        for (&name, view) in &look.targets {
            let at = |what: String| {
                format!(
                    "{}: target {name}, look {} ({:?} before the end of the look): {what}",
                    self.scenario,
                    self.looks,
                    look.after.duration_since(look.before).unwrap_or_default()
                )
            };
            let track = self
                .tracks
                .get_mut(name)
                .unwrap_or_else(|| panic!("{name}?"));
            let left = |c: &Cred| c.expires.duration_since(c.seen).unwrap_or_default();

            // Nothing expired is served or written.
            for (face, answer) in &view.faces {
                if let Answer::Served(c) = answer {
                    assert!(
                        left(c) >= SERVED_LEFT,
                        "{}",
                        at(format!(
                            "the {face:?} face served a credential with {:?} left",
                            left(c)
                        ))
                    );
                }
            }
            match (track.file, view.file) {
                (Some(_), None) => panic!("{}", at("its output file vanished".to_owned())),
                (old, Some(new)) if old.is_none_or(|old| old.id != new.id) => assert!(
                    left(&new) >= SERVED_LEFT,
                    "{}",
                    at(format!(
                        "its output file was written with a credential with {:?} left",
                        left(&new)
                    ))
                ),
                _ => {}
            }

            // A valid credential stays on every face (as known before this look: a new one
            // may arrive during it) and in the file.
            let usable_before = track
                .newest
                .is_some_and(|c| c.expires > look.after + MARGIN + BLUR);
            if usable_before {
                for (face, answer) in &view.faces {
                    if let Answer::Refused { status, body } = answer {
                        panic!(
                            "{}",
                            at(format!(
                                "the {face:?} face answered {status} while a usable credential existed: {body}"
                            ))
                        );
                    }
                }
            }
            let newest = [track.newest, view.file]
                .into_iter()
                .flatten()
                .chain(view.faces.iter().filter_map(|(_, a)| match a {
                    Answer::Served(c) => Some(*c),
                    Answer::Refused { .. } => None,
                }))
                .chain(view.status.expires.map(|expires| Cred {
                    id: 0,
                    expires,
                    seen: look.after,
                }))
                .max_by_key(|c| c.expires);
            track.newest = newest;
            let usable_now = newest.is_some_and(|c| c.expires > look.after + MARGIN + BLUR);
            let file_usable = view
                .file
                .is_some_and(|c| c.expires > look.after + MARGIN - BLUR);
            if usable_now && !file_usable {
                let since = *track.file_behind_since.get_or_insert(look.after);
                assert!(
                    look.after.duration_since(since).unwrap_or_default() <= FILE_LAG,
                    "{}",
                    at("its output file holds no usable credential while one exists".to_owned())
                );
            } else {
                track.file_behind_since = None;
            }
            track.file = view.file;

            for (_, answer) in &view.faces {
                match answer {
                    Answer::Served(_) => {
                        track.served += 1;
                        track.last_served = Some(look.after);
                    }
                    Answer::Refused { .. } => track.refused += 1,
                }
            }

            if let Some(error) = &view.status.last_error {
                track.named |= words.iter().any(|w| error.contains(w));
            }
            let expect = expect(name);
            if expect != Expect::Changing {
                agree(view, look, expect, words, stops, &at);
            }
        }
    }
}

/// `status`, `/readyz`, the metrics and the faces agree on a target nothing can change.
fn agree(
    view: &super::observe::View,
    look: &Look,
    expect: Expect,
    words: &[&str],
    stops: Option<Stop>,
    at: &dyn Fn(String) -> String,
) {
    let status = &view.status;
    let usable = status
        .expires
        .is_some_and(|e| e > look.after + MARGIN + BLUR);
    let unusable = status
        .expires
        .is_none_or(|e| e + BLUR < look.before + MARGIN);
    // Stopped on the side only a change there can fix, once an attempt failed; never by a
    // passing trouble.
    match stops {
        Some(stop) if status.last_error.is_some() => {
            assert_eq!(
                (status.stopped.as_deref(), view.stopped_on.as_deref()),
                (Some(stop.side), Some(stop.label)),
                "{}",
                at(format!("not stopped on {}: {status:?}", stop.side))
            );
            let error = status.last_error.as_deref().unwrap_or_default();
            assert!(
                error.starts_with(&format!("stopped: needs a change on {}", stop.side)),
                "{}",
                at(format!(
                    "its last error does not say where to change: {error}"
                ))
            );
        }
        _ => {
            // `status` is read before the metrics: in a scenario that stops, the first failure
            // may land between the two reads, so the metrics may already show that stop.
            let later = stops.map(|stop| stop.side);
            assert!(
                status.stopped.is_none()
                    && (view.stopped_on.is_none() || view.stopped_on.as_deref() == later),
                "{}",
                at(format!("stopped by a passing trouble: {status:?}"))
            );
        }
    }
    let stopped: &[&str] = if stops.is_some() { &["stopped"] } else { &[] };
    if expect == Expect::Healthy {
        assert!(usable, "{}", at(format!("not usable: {status:?}")));
        assert!(
            status.last_error.is_none(),
            "{}",
            at(format!("an error with no trouble: {status:?}"))
        );
    }
    // A timeout may come of a busy machine rather than of the trouble; the scenario checks that
    // the trouble's own words were given too (`Track::named`).
    let reason_ok = |text: &str| {
        words.is_empty() || words.iter().chain(TIMEOUT_WORDS).any(|w| text.contains(w))
    };
    if let Some(error) = &status.last_error {
        assert!(
            reason_ok(error),
            "{}",
            at(format!("its last error names none of {words:?}: {error}"))
        );
    }
    if usable {
        for (face, answer) in &view.faces {
            assert!(
                matches!(answer, Answer::Served(_)),
                "{}",
                at(format!(
                    "status says usable, the {face:?} face refused: {answer:?}"
                ))
            );
        }
        assert_eq!(
            view.unready,
            None,
            "{}",
            at("/readyz lists it while usable".into())
        );
        assert_eq!(
            view.up,
            Some(true),
            "{}",
            at("keyfed_target_up is not 1 while usable".into())
        );
        assert!(
            ["fresh", "refreshing", "backing off"]
                .iter()
                .chain(stopped)
                .any(|s| *s == status.state),
            "{}",
            at(format!("status says {:?} while usable", status.state))
        );
    } else if unusable {
        let reason = status
            .last_error
            .clone()
            .unwrap_or_else(|| "no credential yet".to_owned());
        for (face, answer) in &view.faces {
            let Answer::Refused { status: 503, body } = answer else {
                panic!(
                    "{}",
                    at(format!(
                        "nothing usable, yet the {face:?} face answered {answer:?}"
                    ))
                );
            };
            let words_ok = status.last_error.is_none() || reason_ok(body);
            assert!(
                (body.contains("no credential yet") || body.contains("expired")) && words_ok,
                "{}",
                at(format!(
                    "the {face:?} face's 503 does not say why ({words:?}): {body}"
                ))
            );
        }
        let unready = view
            .unready
            .as_deref()
            .unwrap_or_else(|| panic!("{}", at("/readyz does not list it while unusable".into())));
        assert!(
            unready == reason || reason_ok(unready),
            "{}",
            at(format!("/readyz says {unready:?}, status {reason:?}"))
        );
        assert!(
            !look.ready,
            "{}",
            at("/readyz answered 200 while unusable".into())
        );
        assert_eq!(
            view.up,
            Some(false),
            "{}",
            at("keyfed_target_up is not 0 while unusable".into())
        );
        assert!(
            ["pending", "backing off", "refreshing", "expired"]
                .iter()
                .chain(stopped)
                .any(|s| *s == status.state),
            "{}",
            at(format!("status says {:?} while unusable", status.state))
        );
    }
}
