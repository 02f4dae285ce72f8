//! The parts of an issuer's OIDC discovery document keyfed uses, checked before use: the
//! issuer must be the configured one and every endpoint must pass the same URL rules as the
//! configured URL (so a discovery document cannot downgrade keyfed to plain HTTP).

use serde::Deserialize;
use url::Url;

#[derive(Debug, Clone)]
pub(crate) struct Discovery {
    pub token_endpoint: Url,
    pub jwks_uri: Option<Url>,
}

#[derive(Deserialize)]
struct Document {
    issuer: String,
    token_endpoint: String,
    jwks_uri: Option<String>,
}

/// Parses a discovery document fetched for `issuer`.
pub(crate) fn parse(
    body: &[u8],
    issuer: &Url,
    allow_insecure_http: bool,
) -> Result<Discovery, String> {
    let doc: Document =
        serde_json::from_slice(body).map_err(|e| format!("not the expected JSON: {e}"))?;
    let configured = issuer.as_str().trim_end_matches('/');
    if doc.issuer.trim_end_matches('/') != configured {
        return Err(format!(
            "it names issuer \"{}\", not \"{configured}\"; set the issuer url to exactly the realm's issuer (check Keycloak's hostname/frontend URL settings)",
            doc.issuer
        ));
    }
    let endpoint = |name: &str, value: &str| -> Result<Url, String> {
        let url = Url::parse(value).map_err(|e| format!("{name} \"{value}\": {e}"))?;
        keyfed_core::http::check_url(&url, allow_insecure_http)
            .map_err(|e| format!("{name}: {e}"))?;
        Ok(url)
    };
    Ok(Discovery {
        token_endpoint: endpoint("token_endpoint", &doc.token_endpoint)?,
        jwks_uri: doc
            .jwks_uri
            .as_deref()
            .map(|u| endpoint("jwks_uri", u))
            .transpose()?,
    })
}

/// `{issuer}/.well-known/openid-configuration`.
pub(crate) fn url_for(issuer: &Url) -> Result<Url, url::ParseError> {
    Url::parse(&format!(
        "{}/.well-known/openid-configuration",
        issuer.as_str().trim_end_matches('/')
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> Url {
        Url::parse("https://sso.example.com/realms/infra").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn accepts_keycloaks_document() {
        let body = br#"{"issuer":"https://sso.example.com/realms/infra",
          "token_endpoint":"https://sso.example.com/realms/infra/protocol/openid-connect/token",
          "jwks_uri":"https://sso.example.com/realms/infra/protocol/openid-connect/certs"}"#;
        let d = parse(body, &issuer(), false).unwrap_or_else(|e| panic!("{e}"));
        assert!(d.token_endpoint.path().ends_with("/token"));
        assert_eq!(
            url_for(&issuer()).map(|u| u.to_string()).ok().as_deref(),
            Some("https://sso.example.com/realms/infra/.well-known/openid-configuration")
        );
    }

    #[test]
    fn refuses_another_issuer_or_a_downgrade() {
        let other = br#"{"issuer":"https://evil/realms/infra","token_endpoint":"https://evil/t"}"#;
        assert!(parse(other, &issuer(), false).is_err_and(|e| e.contains("evil")));
        let http = br#"{"issuer":"https://sso.example.com/realms/infra","token_endpoint":"http://sso.example.com/t"}"#;
        assert!(parse(http, &issuer(), false).is_err_and(|e| e.contains("token_endpoint")));
        assert!(parse(b"[]", &issuer(), false).is_err());
    }
}
