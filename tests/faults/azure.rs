//! How Entra ID suffers a fault: its token endpoint, with Entra's own answers when failing
//! (AADSTS90033, a transient error, HTTP 503) and when throttling (AADSTS90055, HTTP 429).

use keyfed_core::emulator::Fault;

use super::kinds::Struck;
use super::upstreams::Upstreams;

fn entra_error(status: u16, error: &str, code: u32, description: &str) -> Fault {
    Fault::Status {
        status,
        body: format!(
            "{{\"error\":\"{error}\",\"error_description\":\"AADSTS{code}: {description} \
             Trace ID: 0f5a4d2c-0000-4000-8000-000000000011 Correlation ID: \
             5e1c0b7a-0000-4000-8000-000000000011 Timestamp: 2026-01-01 00:00:00Z\",\
             \"error_codes\":[{code}],\"timestamp\":\"2026-01-01 00:00:00Z\",\
             \"trace_id\":\"0f5a4d2c-0000-4000-8000-000000000011\",\
             \"correlation_id\":\"5e1c0b7a-0000-4000-8000-000000000011\"}}"
        ),
    }
}

pub fn struck(up: &Upstreams) -> Struck {
    Struck {
        name: "Entra",
        control: up.entra.control().clone(),
        path: "/oauth2/v2.0/token",
        server_error: entra_error(
            503,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        ),
        throttled: entra_error(
            429,
            "temporarily_unavailable",
            90055,
            "TenantThrottlingError - There are too many incoming requests. This exception is thrown for blocked tenants.",
        ),
    }
}
