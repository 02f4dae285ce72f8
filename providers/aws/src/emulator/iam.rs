//! What the emulated AWS account holds on the IAM side: OIDC identity providers (issuer URL and
//! audiences, IAM's "client ID list") and roles whose trust policy lets one provider's tokens
//! assume them under `StringEquals` / `StringLike` conditions on the token's claims.

use std::time::Duration;

/// An IAM OIDC identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcProvider {
    /// The issuer URL, e.g. `https://sso.example.com/realms/infra`; a token's `iss` must name
    /// the same host and path (IAM stores it without the scheme).
    pub url: String,
    /// The audiences ("client ID list"); a token's `aud` must hold one of them.
    pub client_ids: Vec<String>,
}

impl OidcProvider {
    pub fn new(url: &str, client_ids: &[&str]) -> Self {
        Self {
            url: url.to_owned(),
            client_ids: client_ids.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// IAM's name for the provider: the URL without scheme or trailing slash.
    pub fn name(&self) -> String {
        crate::provider_name::provider_name(&self.url)
    }
}

/// One condition of a role's trust policy on a claim of the token.
///
/// `claim` is the claim's name (`sub`, `aud`, `azp`, `amr`, …), optionally written the IAM way
/// with the provider in front (`sso.example.com/realms/infra:sub`). The condition holds when
/// the claim matches any of `values`; a missing claim never matches. As in IAM, `aud` is the
/// audience STS matched against the provider's client ID list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    StringEquals {
        claim: String,
        values: Vec<String>,
    },
    /// `*` matches any run of characters and `?` any single one.
    StringLike {
        claim: String,
        values: Vec<String>,
    },
}

impl Condition {
    pub fn string_equals(claim: &str, values: &[&str]) -> Self {
        Self::StringEquals {
            claim: claim.to_owned(),
            values: values.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    pub fn string_like(claim: &str, values: &[&str]) -> Self {
        Self::StringLike {
            claim: claim.to_owned(),
            values: values.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// The claim name without any `<provider>:` prefix.
    pub(crate) fn claim(&self) -> &str {
        let (Self::StringEquals { claim, .. } | Self::StringLike { claim, .. }) = self;
        claim.rsplit(':').next().unwrap_or(claim)
    }

    /// Whether `value` (the claim's value, if the token has it) satisfies this condition.
    pub(crate) fn holds(&self, value: Option<&str>) -> bool {
        let Some(value) = value else {
            return false;
        };
        match self {
            Self::StringEquals { values, .. } => values.iter().any(|v| v == value),
            Self::StringLike { values, .. } => values.iter().any(|p| wildcard_match(p, value)),
        }
    }
}

/// An IAM role that trusts one OIDC provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// The role's name, possibly with a path (`team/onprem-web`); the ARN is
    /// `arn:aws:iam::<account>:role/<name>`.
    pub name: String,
    /// The trusted provider's URL, as in [`OidcProvider::url`].
    pub provider: String,
    /// All must hold (IAM ANDs condition keys).
    pub conditions: Vec<Condition>,
    /// MaxSessionDuration: 1 h by default, at most 12 h.
    pub max_session: Duration,
}

impl Role {
    /// A role trusting `provider` without conditions, with a 1 h MaxSessionDuration.
    pub fn new(name: &str, provider: &str) -> Self {
        Self {
            name: name.to_owned(),
            provider: provider.to_owned(),
            conditions: Vec::new(),
            max_session: Duration::from_secs(3600),
        }
    }

    pub fn condition(mut self, condition: Condition) -> Self {
        self.conditions.push(condition);
        self
    }

    pub fn max_session(mut self, max: Duration) -> Self {
        self.max_session = max;
        self
    }

    /// The last segment of the name, as assumed-role ARNs show it.
    pub(crate) fn short_name(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }
}

/// IAM's `StringLike`: `*` for any run of characters, `?` for exactly one.
fn wildcard_match(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    // Classic greedy matcher with backtracking to the last `*`.
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, vi));
                pi += 1;
            }
            Some(&c) if c == '?' || c == v[vi] => {
                pi += 1;
                vi += 1;
            }
            _ => match star {
                Some((sp, sv)) => {
                    pi = sp + 1;
                    vi = sv + 1;
                    star = Some((sp, sv + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_iam() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match(
            "service-account-*",
            "service-account-host-1"
        ));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(wildcard_match("*-web-*", "host-web-01"));
        assert!(!wildcard_match("host-*", "web-host-1"));
        assert!(wildcard_match("exact", "exact"));
        assert!(!wildcard_match("exact", "exactly"));
    }

    #[test]
    fn conditions_strip_the_provider_prefix_and_need_the_claim() {
        let c = Condition::string_equals("sso.example.com/realms/infra:sub", &["u-1", "u-2"]);
        assert_eq!(c.claim(), "sub");
        assert!(c.holds(Some("u-2")));
        assert!(!c.holds(Some("u-3")));
        assert!(!c.holds(None));
        assert!(Condition::string_like("aud", &["sts.*"]).holds(Some("sts.amazonaws.com")));
    }
}
