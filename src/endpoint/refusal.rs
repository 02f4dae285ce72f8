//! Every way the endpoint says no, mapped to an HTTP status in one exhaustive place. Bodies
//! carry the reason as plain text; never a stack trace, never a secret.

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
    /// The IMDS session token or container token is wrong or expired.
    BadToken,
    /// The IMDS token TTL is missing or outside 1–21600.
    BadTtl(String),
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
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Forwarded => StatusCode::FORBIDDEN,
            Self::ForeignHost(_) => StatusCode::FORBIDDEN,
            Self::FromBrowser => StatusCode::FORBIDDEN,
            Self::MissingHeader(_) => StatusCode::UNAUTHORIZED,
            Self::BadToken => StatusCode::UNAUTHORIZED,
            Self::BadTtl(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn reason(&self) -> String {
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
            Self::BadTtl(why) => why.clone(),
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
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status(), format!("{}\n", self.reason())).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(Refusal::Forwarded.status(), 403);
        assert_eq!(Refusal::ForeignHost(String::new()).status(), 403);
        assert_eq!(Refusal::FromBrowser.status(), 403);
        assert_eq!(Refusal::MissingHeader("X").status(), 401);
        assert_eq!(Refusal::BadToken.status(), 401);
        assert_eq!(Refusal::BadTtl(String::new()).status(), 400);
        assert_eq!(Refusal::NotFound.status(), 404);
        assert_eq!(Refusal::Unavailable(String::new()).status(), 503);
    }
}
