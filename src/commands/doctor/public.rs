//! A reminder doctor cannot check from the host: the cloud fetches the issuer's discovery
//! document and JWKS itself, from the internet, so both URLs must be public (or, for Google, the
//! JWKS uploaded to the provider instead).

use keyfed_core::token_rules::SubjectTokenRules;
use url::Url;

use super::report::Check;

/// The URLs `rules.cloud` fetches: the discovery document of `iss` (the token's, else the
/// configured issuer) and the JWKS it names.
pub fn remind(
    rules: &SubjectTokenRules,
    iss: &str,
    jwks_uri: Option<&Url>,
    local_cloud: Option<&Url>,
) -> Check {
    let discovery = format!(
        "{}/.well-known/openid-configuration",
        iss.trim_end_matches('/')
    );
    let jwks = jwks_uri.map_or("the jwks_uri it names".to_owned(), Url::to_string);
    let mut detail = format!(
        "{} fetches {discovery} and {jwks} from the internet: both must answer it over https with a publicly trusted certificate",
        rules.cloud
    );
    if let Some(upload) = rules.uploaded_jwks {
        detail.push_str("; ");
        detail.push_str(upload);
    }
    if let Some(endpoint) = local_cloud {
        detail.push_str(&format!(
            " (here the stand-in at {endpoint} on this host fetches them)"
        ));
    }
    Check::info("public-urls", detail)
}
