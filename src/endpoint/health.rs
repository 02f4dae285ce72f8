//! `/healthz` (the process answers), `/readyz` (every target holds a usable credential: 503 with
//! the reasons until then — named only for targets the caller may have, since reasons carry
//! upstream errors and paths; a stopped target's reason reads "stopped: needs a change on …")
//! and `/metrics` (Prometheus text format).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyfed_core::clock::unix_seconds;
use keyfed_core::exchange::Side;

use super::{Core, HEALTH};
use crate::engine::LATENCY_BUCKETS;

pub async fn healthz(State(core): State<Arc<Core>>) -> Response {
    core.count(HEALTH, StatusCode::OK);
    "ok\n".into_response()
}

pub async fn readyz(
    State(core): State<Arc<Core>>,
    peer: axum::Extension<super::server::Peer>,
) -> Response {
    let served = core.served();
    let now = core.now();
    let mut waiting = String::new();
    let mut hidden = 0usize;
    for target in served.engine.targets() {
        let s = target.snapshot();
        let usable = s.usable_at(now);
        if !usable && served.target_for(target.name(), peer.uid).is_err() {
            hidden += 1;
        } else if !usable {
            let why = s
                .last_error
                .unwrap_or_else(|| "no credential yet".to_owned());
            let _ = writeln!(waiting, "{}: {why}", target.name());
        }
    }
    if hidden > 0 {
        let _ = writeln!(
            waiting,
            "{hidden} target(s) restricted to other users: not ready"
        );
    }
    let status = if waiting.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    core.count(HEALTH, status);
    let body = if waiting.is_empty() {
        "ready\n".to_owned()
    } else {
        waiting
    };
    (status, body).into_response()
}

pub async fn metrics(
    State(core): State<Arc<Core>>,
    peer: axum::Extension<super::server::Peer>,
) -> Response {
    core.count(HEALTH, StatusCode::OK);
    let mut response = render(&core, peer.uid).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The metrics of the targets `uid` may have (restricted targets' names and states are theirs
/// alone), and the endpoint's request counts.
fn render(core: &Core, uid: Option<u32>) -> String {
    let served = core.served();
    let snapshots: Vec<_> = served
        .engine
        .targets()
        .filter(|t| served.target_for(t.name(), uid).is_ok())
        .map(|t| (t.name().to_owned(), t.snapshot()))
        .collect();
    let mut out = String::new();

    let name = "keyfed_credential_expiry_timestamp_seconds";
    family(
        &mut out,
        name,
        "gauge",
        "When the target's current credential expires (Unix time).",
    );
    for (target, s) in &snapshots {
        if let Some(e) = s.expires_at {
            let _ = writeln!(out, "{name}{{target=\"{target}\"}} {}", unix_seconds(e));
        }
    }
    let name = "keyfed_last_refresh_success_timestamp_seconds";
    family(
        &mut out,
        name,
        "gauge",
        "When the target last refreshed successfully (Unix time).",
    );
    for (target, s) in &snapshots {
        if let Some(t) = s.stats.last_success {
            let _ = writeln!(out, "{name}{{target=\"{target}\"}} {}", unix_seconds(t));
        }
    }
    let name = "keyfed_target_up";
    family(
        &mut out,
        name,
        "gauge",
        "1 while the target holds a usable credential.",
    );
    // Usable as /readyz judges it: an expired credential being refreshed is not up (issue 11:
    // the phase said "refreshing" and the gauge 1 while faces answered 503).
    let now = core.now();
    for (target, s) in &snapshots {
        let up = s.usable_at(now);
        let _ = writeln!(out, "{name}{{target=\"{target}\"}} {}", u8::from(up));
    }
    let name = "keyfed_target_stopped";
    family(
        &mut out,
        name,
        "gauge",
        "1 while the target is stopped until the side named (config, issuer or cloud) changes.",
    );
    // Every side of every target, always: a series that stays put is what alert rules and
    // rate() expect, where one appearing and vanishing with its label would not.
    for (target, s) in &snapshots {
        for side in [Side::Config, Side::Issuer, Side::Cloud] {
            let label = side.label();
            let stopped = u8::from(s.stopped == Some(side));
            let _ = writeln!(
                out,
                "{name}{{target=\"{target}\",side=\"{label}\"}} {stopped}"
            );
        }
    }
    let name = "keyfed_slot_evictions_total";
    family(
        &mut out,
        name,
        "counter",
        "On-demand credential variants dropped (least recently used) to stay within the target's bound.",
    );
    for (target, s) in &snapshots {
        let _ = writeln!(out, "{name}{{target=\"{target}\"}} {}", s.slot_evictions);
    }
    let name = "keyfed_refreshes_total";
    family(&mut out, name, "counter", "Refresh attempts by outcome.");
    for (target, s) in &snapshots {
        for (result, n) in [
            ("success", s.stats.refreshes_ok),
            ("failure", s.stats.refreshes_failed),
        ] {
            let _ = writeln!(out, "{name}{{target=\"{target}\",result=\"{result}\"}} {n}");
        }
    }
    let name = "keyfed_upstream_request_duration_seconds";
    family(
        &mut out,
        name,
        "histogram",
        "Time one refresh attempt took (Keycloak and the cloud together).",
    );
    for (target, s) in &snapshots {
        for (bound, count) in LATENCY_BUCKETS.iter().zip(s.stats.latency_buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{target=\"{target}\",le=\"{bound}\"}} {count}"
            );
        }
        let st = &s.stats;
        let _ = writeln!(
            out,
            "{name}_bucket{{target=\"{target}\",le=\"+Inf\"}} {}",
            st.latency_count
        );
        let _ = writeln!(out, "{name}_sum{{target=\"{target}\"}} {}", st.latency_sum);
        let _ = writeln!(
            out,
            "{name}_count{{target=\"{target}\"}} {}",
            st.latency_count
        );
    }
    let name = "keyfed_endpoint_requests_total";
    family(
        &mut out,
        name,
        "counter",
        "Endpoint requests by face and status.",
    );
    for ((face, status), count) in core.request_counts() {
        let _ = writeln!(out, "{name}{{face=\"{face}\",status=\"{status}\"}} {count}");
    }
    let name = "keyfed_identity_headers";
    family(
        &mut out,
        name,
        "gauge",
        "Identity-header pairs of keyfed exec and keyfed env live now: held by a running keyfed \
         exec, or valid until a deadline.",
    );
    let counts = core.pairs().counts();
    let _ = writeln!(out, "{name}{{kind=\"held\"}} {}", counts.held);
    let _ = writeln!(out, "{name}{{kind=\"deadline\"}} {}", counts.deadline);
    out
}
