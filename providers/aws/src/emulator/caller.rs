//! GetCallerIdentity: the caller must sign with SigV4 (`sigv4.rs`) using credentials this
//! emulator issued, within 15 minutes of the emulator's clock and before they expire.

use std::sync::PoisonError;
use std::time::{Duration, SystemTime};

use axum::http::header;
use keyfed_core::ExposeSecret as _;
use keyfed_core::clock::rfc3339;

use super::State;
use super::routes::StsFault;
use super::sigv4::{self, Received};
use super::xml::{self, text};

/// How far a SigV4 `X-Amz-Date` may be from the emulator's clock.
const MAX_SIGNATURE_SKEW: Duration = Duration::from_secs(15 * 60);

/// GetCallerIdentity: who the SigV4-signed caller is.
pub(crate) fn caller_identity(
    state: &State,
    request: &Received<'_>,
    request_id: &str,
) -> Result<String, StsFault> {
    let authorization = request
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            StsFault::new(
                403,
                "MissingAuthenticationToken",
                "Request is missing Authentication Token",
            )
        })?;
    let auth = sigv4::parse_authorization(authorization)
        .map_err(|m| StsFault::new(403, "IncompleteSignature", m))?;
    let amz_date = request
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            StsFault::new(
                403,
                "IncompleteSignature",
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            )
        })?;
    let issued = state.issued.lock().unwrap_or_else(PoisonError::into_inner);
    let found = issued
        .iter()
        .find(|i| i.public.access_key_id == auth.access_key_id)
        .ok_or_else(StsFault::invalid_client_token)?;
    let session_token = request
        .headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok());
    if session_token != Some(found.session_token.expose_secret()) {
        return Err(StsFault::invalid_client_token());
    }
    let now = state.clock.now();
    if now >= found.public.expiration {
        return Err(StsFault::new(
            400,
            "ExpiredToken",
            "The security token included in the request is expired",
        ));
    }
    let signed_at = parse_amz_date(amz_date).ok_or_else(|| {
        StsFault::new(
            403,
            "IncompleteSignature",
            format!("Date must be in ISO-8601 'basic format'. Got '{amz_date}'."),
        )
    })?;
    let skew = now
        .duration_since(signed_at)
        .unwrap_or_else(|ahead| ahead.duration());
    if skew > MAX_SIGNATURE_SKEW {
        return Err(StsFault::signature_mismatch(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - 15 min.)",
            basic_date(now.checked_sub(MAX_SIGNATURE_SKEW).unwrap_or(now)),
            basic_date(now)
        )));
    }
    if !amz_date.starts_with(&auth.date)
        || !auth.verify(found.secret_access_key.expose_secret(), amz_date, request)
    {
        return Err(StsFault::signature_mismatch(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ));
    }
    Ok(xml::response(
        "GetCallerIdentity",
        vec![
            text("Arn", found.public.assumed_role_arn.as_str()),
            text("UserId", found.public.assumed_role_id.as_str()),
            text("Account", state.account.as_str()),
        ],
        request_id,
    ))
}

/// `20150830T123600Z` → the moment it names.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let parsed = time::PrimitiveDateTime::parse(text, &format).ok()?;
    let secs = u64::try_from(parsed.assume_utc().unix_timestamp()).ok()?;
    Some(keyfed_core::clock::from_unix_seconds(secs))
}

fn basic_date(t: SystemTime) -> String {
    rfc3339(t).replace(['-', ':'], "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyfed_core::clock::unix_seconds;

    #[test]
    fn amz_dates_parse() {
        let t = parse_amz_date("20150830T123600Z");
        assert_eq!(t.map(unix_seconds), Some(1_440_938_160));
        assert_eq!(t.map(basic_date).as_deref(), Some("20150830T123600Z"));
        assert_eq!(parse_amz_date("2015-08-30"), None);
    }
}
