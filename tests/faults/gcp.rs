//! How Google suffers a fault: its Security Token Service (`/v1/token`) or IAM Credentials
//! (`/v1/projects/…:generateAccessToken`) — one emulator serves both, so a fault on the whole
//! server (down, a bad certificate) strikes both — with Google's own answers when failing
//! (`UNAVAILABLE`, HTTP 503) and when over quota (`RESOURCE_EXHAUSTED`, HTTP 429).

use keyfed_core::emulator::Fault;

use super::kinds::Struck;
use super::upstreams::Upstreams;

/// Which of Google's two APIs a request-level fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Sts,
    Iam,
}

fn google_error(status: u16, code: &str, message: &str) -> Fault {
    Fault::Status {
        status,
        body: format!(
            "{{\"error\":{{\"code\":{status},\"message\":\"{message}\",\"status\":\"{code}\"}}}}"
        ),
    }
}

pub fn struck(up: &Upstreams, api: Api) -> Struck {
    let (name, path) = match api {
        Api::Sts => ("Google STS", "/v1/token"),
        Api::Iam => ("Google IAM", "/v1/projects/"),
    };
    Struck {
        name,
        control: up.gcp.control().clone(),
        path,
        server_error: google_error(503, "UNAVAILABLE", "The service is currently unavailable."),
        throttled: google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute' of service.",
        ),
    }
}
