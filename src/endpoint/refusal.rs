//! Every way the endpoint says no. Which status each refusal gets is the face's to say (each
//! face maps every refusal in one exhaustive `match`: an SDK family expects its own statuses
//! for the same trouble — a missing header is 401 to one and 403 or 400 to others); requests
//! no face answers (health, unknown paths) get the endpoint's own mapping here. Bodies carry the
//! reason as plain text unless a face's SDKs expect another shape; never a stack trace, never
//! a secret.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Why a request gets no credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `X-Forwarded-For` marks a request relayed by a proxy: an SSRF, never an SDK.
    Forwarded,
    /// `Host` names neither a listen address, `localhost` nor an allowed name: DNS rebinding.
    ForeignHost(String),
    /// `Origin` or `Sec-Fetch-*`: a web page's request, never an SDK's.
    FromBrowser,
    /// The face's required header is missing (named).
    MissingHeader(&'static str),
    /// The face's session token or shared secret is wrong or expired.
    BadToken,
    /// A value the face needs is missing or malformed: the reason says which.
    BadRequest(String),
    /// The connecting user may not have this target's credentials.
    Forbidden {
        target: String,
        uid: Option<u32>,
    },
    NotFound,
    /// No usable credential (none yet, or the last one expired): the reason says why.
    Unavailable(String),
}

impl Refusal {
    /// The endpoint's own status for a refusal of a request no face answers.
    #[deny(
        clippy::wildcard_enum_match_arm,
        clippy::match_wildcard_for_single_variants
    )]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Forwarded => StatusCode::FORBIDDEN,
            Self::ForeignHost(_) => StatusCode::FORBIDDEN,
            Self::FromBrowser => StatusCode::FORBIDDEN,
            Self::MissingHeader(_) => StatusCode::UNAUTHORIZED,
            Self::BadToken => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What went wrong, in words for the caller.
    pub fn reason(&self) -> String {
        match self {
            Self::Forwarded => "requests carrying X-Forwarded-For are refused".to_owned(),
            Self::ForeignHost(host) => format!(
                "the Host header {host:?} names no address of this endpoint (add the name to endpoint.allowed_hosts if it is yours)"
            ),
            Self::FromBrowser => {
                "requests carrying Origin or Sec-Fetch-* (made by a web page) are refused"
                    .to_owned()
            }
            Self::MissingHeader(name) => format!("the {name} header is required"),
            Self::BadToken => "the token is invalid or expired".to_owned(),
            Self::BadRequest(why) => why.clone(),
            Self::Forbidden { target, uid } => match uid {
                Some(uid) => format!("uid {uid} may not have the credentials of target {target}"),
                None => {
                    format!("the caller's uid cannot be determined; target {target} is restricted")
                }
            },
            Self::NotFound => "not found".to_owned(),
            Self::Unavailable(why) => why.clone(),
        }
    }

    /// The refusal answered with `status` and its reason as plain text.
    pub fn response(&self, status: StatusCode) -> Response {
        let mut response = (status, format!("{}\n", self.reason())).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

impl IntoResponse for Refusal {
    /// With the endpoint's own status: for requests no face answers.
    fn into_response(self) -> Response {
        self.response(self.status())
    }
}

/// One of each refusal, for the faces' status tables.
#[cfg(test)]
pub fn every() -> Vec<Refusal> {
    vec![
        Refusal::Forwarded,
        Refusal::ForeignHost("evil.example".to_owned()),
        Refusal::FromBrowser,
        Refusal::MissingHeader("X-Header"),
        Refusal::BadToken,
        Refusal::BadRequest("why".to_owned()),
        Refusal::Forbidden {
            target: "t".to_owned(),
            uid: Some(1000),
        },
        Refusal::NotFound,
        Refusal::Unavailable("why".to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request no face answers (health, an unknown path) is refused with these.
    #[test]
    fn statuses() {
        let statuses: Vec<u16> = every().iter().map(|r| r.status().as_u16()).collect();
        assert_eq!(statuses, [403, 403, 403, 401, 401, 400, 403, 404, 503]);
    }

    #[test]
    fn bodies_are_the_reason_as_text() {
        let response = Refusal::MissingHeader("X-Header").response(StatusCode::BAD_REQUEST);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE),
            Some(&HeaderValue::from_static("text/plain; charset=utf-8"))
        );
    }
}
