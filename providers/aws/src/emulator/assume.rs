//! AssumeRoleWithWebIdentity: the parameter checks of STS's model, the token checks of an IAM
//! OIDC provider (`verify.rs`), the role's trust policy and MaxSessionDuration, and fresh
//! credentials that expire `DurationSeconds` after now by the emulator's clock.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use keyfed_core::clock::rfc3339;
use keyfed_core::{ExposeSecret as _, SecretString};
use rand::Rng as _;

use super::routes::{Params, StsFault};
use super::verify::VerifiedToken;
use super::xml::{self, parent, text};
use super::{Issued, IssuedCredentials, RoleEntry, SeenAssumeRole, State};

/// STS's limits on AssumeRoleWithWebIdentity parameters.
const MAX_TOKEN_LEN: usize = 20_000;
const MIN_DURATION: u64 = 900;
const MAX_DURATION: u64 = 43_200;
const MAX_POLICY_LEN: usize = 2048;

pub(crate) async fn assume_role(
    state: &State,
    params: &Params,
    request_id: &str,
) -> Result<String, StsFault> {
    state.assume_role_calls.fetch_add(1, Ordering::Relaxed);
    let policy_arns = policy_arns(params);
    *state
        .last_assume_role
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(SeenAssumeRole {
        role_arn: params.get("RoleArn").map(str::to_owned),
        session_name: params.get("RoleSessionName").map(str::to_owned),
        duration_seconds: params.get("DurationSeconds").map(str::to_owned),
        policy: params.get("Policy").map(str::to_owned),
        policy_arns: policy_arns.clone(),
        version: params.get("Version").map(str::to_owned),
    });

    let role_arn = params.required("RoleArn", "roleArn")?;
    let session_name = params.required("RoleSessionName", "roleSessionName")?;
    let token = params.required("WebIdentityToken", "webIdentityToken")?;
    check_parameters(params, role_arn, session_name, token, &policy_arns)?;
    let duration = match params.get("DurationSeconds") {
        None => 3600,
        Some(text) => text.parse::<u64>().map_err(|_| {
            StsFault::validation(format!(
                "Value '{text}' for parameter DurationSeconds is invalid. It must be an integer."
            ))
        })?,
    };
    if duration < MIN_DURATION {
        return Err(StsFault::constraint(
            &duration.to_string(),
            "durationSeconds",
            &format!("Member must have value greater than or equal to {MIN_DURATION}"),
        ));
    }
    if duration > MAX_DURATION {
        return Err(StsFault::constraint(
            &duration.to_string(),
            "durationSeconds",
            &format!("Member must have value less than or equal to {MAX_DURATION}"),
        ));
    }
    let (partition, account, role_name) =
        parse_role_arn(role_arn).ok_or_else(|| StsFault::validation("Request ARN is invalid"))?;

    let now = state.clock.now();
    let token = super::verify::verify(&state.verifier, token, &state.providers, now).await?;

    let entry = state
        .roles
        .iter()
        .find(|r| account == state.account && r.role.name == role_name)
        .ok_or_else(StsFault::access_denied)?;
    let trusted = crate::provider_name::provider_name(&entry.role.provider) == token.provider;
    let conditions_hold = entry.role.conditions.iter().all(|c| {
        let value = match c.claim() {
            "aud" => Some(token.audience.as_str()),
            claim => token.claims.string(claim),
        };
        c.holds(value)
    });
    if !trusted || !conditions_hold {
        return Err(StsFault::access_denied());
    }
    if Duration::from_secs(duration) > entry.role.max_session {
        return Err(StsFault::validation(
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
        ));
    }

    let issued = issue(state, entry, partition, session_name, &token, now, duration);
    let body = xml::response(
        "AssumeRoleWithWebIdentity",
        vec![
            text("SubjectFromWebIdentityToken", token.subject.as_str()),
            text("Audience", token.audience.as_str()),
            parent(
                "AssumedRoleUser",
                vec![
                    text("Arn", issued.public.assumed_role_arn.as_str()),
                    text("AssumedRoleId", issued.public.assumed_role_id.as_str()),
                ],
            ),
            parent(
                "Credentials",
                vec![
                    text("AccessKeyId", issued.public.access_key_id.as_str()),
                    text("SecretAccessKey", issued.secret_access_key.expose_secret()),
                    text("SessionToken", issued.session_token.expose_secret()),
                    text("Expiration", rfc3339(issued.public.expiration)),
                ],
            ),
            text("Provider", token.issuer.as_str()),
        ],
        request_id,
    );
    state
        .issued
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(issued);
    Ok(body)
}

/// `PolicyArns.member.N.arn`, in N order.
fn policy_arns(params: &Params) -> Vec<String> {
    let mut arns: Vec<(u32, String)> = params
        .0
        .iter()
        .filter_map(|(k, v)| {
            let n = k.strip_prefix("PolicyArns.member.")?.strip_suffix(".arn")?;
            Some((n.parse().ok()?, v.clone()))
        })
        .collect();
    arns.sort();
    arns.into_iter().map(|(_, arn)| arn).collect()
}

/// The model's constraints on the parameters, checked before anything else as STS does.
fn check_parameters(
    params: &Params,
    role_arn: &str,
    session_name: &str,
    token: &str,
    policy_arns: &[String],
) -> Result<(), StsFault> {
    if !(20..=2048).contains(&role_arn.len()) {
        return Err(StsFault::constraint(
            role_arn,
            "roleArn",
            "Member must have length greater than or equal to 20",
        ));
    }
    let name_len = session_name.chars().count();
    if name_len < 2 {
        return Err(StsFault::constraint(
            session_name,
            "roleSessionName",
            "Member must have length greater than or equal to 2",
        ));
    }
    if name_len > 64 {
        return Err(StsFault::constraint(
            session_name,
            "roleSessionName",
            "Member must have length less than or equal to 64",
        ));
    }
    if !session_name.chars().all(crate::session_name::is_allowed) {
        return Err(StsFault::constraint(
            session_name,
            "roleSessionName",
            r"Member must satisfy regular expression pattern: [\w+=,.@-]*",
        ));
    }
    if token.len() > MAX_TOKEN_LEN {
        // STS does not echo the token back; neither does the emulator.
        return Err(StsFault::validation(format!(
            "1 validation error detected: Value at 'webIdentityToken' failed to satisfy constraint: Member must have length less than or equal to {MAX_TOKEN_LEN}"
        )));
    }
    if token.len() < 4 {
        return Err(StsFault::validation(
            "1 validation error detected: Value at 'webIdentityToken' failed to satisfy constraint: Member must have length greater than or equal to 4",
        ));
    }
    if let Some(policy) = params.get("Policy") {
        if policy.len() > MAX_POLICY_LEN {
            return Err(StsFault::validation(format!(
                "1 validation error detected: Value at 'policy' failed to satisfy constraint: Member must have length less than or equal to {MAX_POLICY_LEN}"
            )));
        }
        if serde_json::from_str::<serde_json::Value>(policy)
            .ok()
            .and_then(|v| v.as_object().map(|_| ()))
            .is_none()
        {
            return Err(StsFault::new(
                400,
                "MalformedPolicyDocument",
                "Syntax errors in policy.",
            ));
        }
    }
    if policy_arns.len() > 10 {
        return Err(StsFault::constraint(
            "[…]",
            "policyArns",
            "Member must have length less than or equal to 10",
        ));
    }
    if let Some(bad) = policy_arns
        .iter()
        .find(|a| !a.starts_with("arn:") || a.len() < 20)
    {
        return Err(StsFault::validation(format!("Invalid ARN: {bad}")));
    }
    Ok(())
}

/// `arn:<partition>:iam::<account>:role/<path/name>` → (partition, account, path/name).
fn parse_role_arn(arn: &str) -> Option<(&str, &str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let name = resource.strip_prefix("role/")?;
    (!partition.is_empty() && account.len() == 12 && !name.is_empty())
        .then_some((partition, account, name))
}

fn issue(
    state: &State,
    entry: &RoleEntry,
    partition: &str,
    session_name: &str,
    token: &VerifiedToken,
    now: SystemTime,
    duration: u64,
) -> Issued {
    let mut secret = [0u8; 30];
    rand::rng().fill(&mut secret[..]);
    let mut session = [0u8; 256];
    rand::rng().fill(&mut session[..]);
    let standard = base64::engine::general_purpose::STANDARD;
    let public = IssuedCredentials {
        access_key_id: random_id("ASIA", 16),
        role_arn: state.role_arn(&entry.role.name),
        assumed_role_arn: format!(
            "arn:{partition}:sts::{}:assumed-role/{}/{session_name}",
            state.account,
            entry.role.short_name()
        ),
        assumed_role_id: format!("{}:{session_name}", entry.role_id),
        session_name: session_name.to_owned(),
        subject: token.subject.clone(),
        audience: token.audience.clone(),
        expiration: now + Duration::from_secs(duration),
    };
    Issued {
        public,
        secret_access_key: SecretString::from(standard.encode(secret)),
        // Real session tokens start with the base64 of a fixed header; look alike.
        session_token: SecretString::from(format!("IQoJb3JpZ2luX2Vj{}", standard.encode(session))),
    }
}

/// `prefix` followed by `len` characters of `A–Z 2–7`, the alphabet of AWS key and role ids.
pub(crate) fn random_id(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::rng();
    let mut id = prefix.to_owned();
    for _ in 0..len {
        let i = rng.random_range(0..ALPHABET.len());
        id.push(char::from(ALPHABET[i]));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_parse_like_iam() {
        assert_eq!(
            parse_role_arn("arn:aws:iam::123456789012:role/team/web"),
            Some(("aws", "123456789012", "team/web"))
        );
        assert_eq!(parse_role_arn("arn:aws:iam::123456789012:user/web"), None);
        assert_eq!(parse_role_arn("arn:aws:iam::1234:role/web"), None);
        assert_eq!(parse_role_arn("onprem-web"), None);
    }

    #[test]
    fn ids_look_like_aws_ids() {
        let id = random_id("ASIA", 16);
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("ASIA"));
        assert!(
            id.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        );
    }

    #[test]
    fn policy_arns_come_in_member_order() {
        let params = Params(vec![
            ("PolicyArns.member.2.arn".to_owned(), "b".to_owned()),
            ("PolicyArns.member.1.arn".to_owned(), "a".to_owned()),
            ("Other".to_owned(), "x".to_owned()),
        ]);
        assert_eq!(policy_arns(&params), ["a", "b"]);
    }
}
