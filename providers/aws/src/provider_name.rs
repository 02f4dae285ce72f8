//! How IAM names an OIDC identity provider: the issuer URL without its scheme or trailing slash.
//! STS's hints name the provider a token's `iss` needs, and the emulator keys its providers and
//! condition keys the same way.

/// `https://sso.example.com/realms/infra/` → `sso.example.com/realms/infra`, the way IAM names
/// OIDC providers and the prefix of their condition keys.
pub(crate) fn provider_name(issuer: &str) -> String {
    let rest = issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://"))
        .unwrap_or(issuer);
    rest.trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_and_trailing_slash_go() {
        assert_eq!(
            provider_name("https://sso.example.com/realms/infra/"),
            "sso.example.com/realms/infra"
        );
        assert_eq!(
            provider_name("http://127.0.0.1:8080/realms/r"),
            "127.0.0.1:8080/realms/r"
        );
    }
}
