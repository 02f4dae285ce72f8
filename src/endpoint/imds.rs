//! The AWS IMDSv2 face, as the SDKs use it (`AWS_EC2_METADATA_SERVICE_ENDPOINT`):
//! `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` (1–21600, echoed back)
//! returns a session token; `GET /latest/meta-data/iam/security-credentials/` lists the role and
//! `…/<role>` returns the credentials, both with `X-aws-ec2-metadata-token`. IMDSv1 (no token)
//! only when `endpoint.imds_v1 = true`. One target per listen address (`imds_target`), its role
//! name the target's name. A missing or invalid session token is 401, as on EC2.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use keyfed_core::ExposeSecret as _;
use keyfed_core::clock::rfc3339;
use serde_json::json;

use super::Core;
use super::face::Face;
use super::refusal::Refusal;
use super::server::Peer;
use crate::config::FaceSpec;
use crate::credential::Credential;

/// The face's name, as its `FaceSpec` declares it.
const NAME: &str = "imds";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const MAX_TTL: u64 = 21_600;
/// Session tokens kept at most. Anyone local may ask for tokens (no secret is needed), so a user
/// flooding token requests must push out only their own sessions, never another user's: each
/// user holds at most [`MAX_TOKENS_PER_USER`], and when the store is full anyway (several users
/// at their cap) expired tokens go first, then the issuing user's oldest, and only a user
/// holding none evicts the oldest of the user holding the most.
const MAX_TOKENS: usize = 4096;
/// Session tokens one local user keeps at most; issuing one more drops their own oldest. A
/// quarter of the store: a user at the cap can never crowd out the others, and a host's few
/// SDK processes per user need far fewer.
const MAX_TOKENS_PER_USER: usize = MAX_TOKENS / 4;

/// Issued session tokens: each one's expiry, and each local user's tokens, oldest first.
/// Callers whose uid is unknown (`None`) share one bucket and its cap, so they can push out
/// each other's sessions, but never more than one user's share of the store. Issuing costs a
/// step per user at most (plus the expired tokens it drops), not one per token: a flood of token
/// requests holds the lock the credential reads need only briefly.
#[derive(Default)]
struct Tokens {
    expiry: HashMap<String, Instant>,
    by_user: HashMap<Option<u32>, VecDeque<String>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} session tokens ({})",
            self.expiry.len(),
            keyfed_core::REDACTED
        )
    }
}

impl Tokens {
    /// A new token living `ttl` for `uid`.
    fn issue(&mut self, ttl: Duration, uid: Option<u32>) -> String {
        let now = Instant::now();
        self.drop_expired(uid, now);
        if self.held_by(uid) >= MAX_TOKENS_PER_USER {
            self.drop_oldest(uid, |_| true);
        }
        if self.expiry.len() >= MAX_TOKENS {
            let users: Vec<Option<u32>> = self.by_user.keys().copied().collect();
            for user in users {
                self.drop_expired(user, now);
            }
        }
        if self.expiry.len() >= MAX_TOKENS {
            // The issuing user pays for their own token when they hold any.
            let evicted = if self.held_by(uid) > 0 {
                Some(uid)
            } else {
                self.by_user
                    .iter()
                    .max_by_key(|(_, tokens)| tokens.len())
                    .map(|(user, _)| *user)
            };
            if let Some(user) = evicted {
                self.drop_oldest(user, |_| true);
            }
        }
        let token = super::random_token();
        self.expiry.insert(token.clone(), now + ttl);
        self.by_user
            .entry(uid)
            .or_default()
            .push_back(token.clone());
        token
    }

    fn held_by(&self, uid: Option<u32>) -> usize {
        self.by_user.get(&uid).map_or(0, VecDeque::len)
    }

    /// Drops `uid`'s expired tokens from the front of its queue: a user's tokens mostly share
    /// one TTL, so they expire in the order they were issued.
    fn drop_expired(&mut self, uid: Option<u32>, now: Instant) {
        while self.drop_oldest(uid, |expiry| expiry <= now) {}
    }

    /// Drops `uid`'s oldest token if `when` says so of its expiry; whether it did.
    fn drop_oldest(&mut self, uid: Option<u32>, when: impl Fn(Instant) -> bool) -> bool {
        let Some(queue) = self.by_user.get_mut(&uid) else {
            return false;
        };
        let dropped = match queue.front() {
            Some(oldest) if self.expiry.get(oldest).is_none_or(|e| when(*e)) => {
                if let Some(oldest) = queue.pop_front() {
                    self.expiry.remove(&oldest);
                }
                true
            }
            _ => false,
        };
        if queue.is_empty() {
            self.by_user.remove(&uid);
        }
        dropped
    }

    fn valid(&self, token: &str) -> bool {
        self.expiry
            .get(token)
            .is_some_and(|expiry| *expiry > Instant::now())
    }
}

/// The IMDSv2 face: its session tokens.
pub struct Imds {
    spec: &'static FaceSpec,
    core: Arc<Core>,
    tokens: Mutex<Tokens>,
}

pub fn start(core: &Arc<Core>) -> anyhow::Result<Arc<dyn Face>> {
    Ok(Arc::new(Imds {
        spec: super::declared(NAME)?,
        core: Arc::clone(core),
        tokens: Mutex::new(Tokens::default()),
    }))
}

/// The AWS SDKs' statuses, for IMDSv2 and the container face: a missing or invalid token is
/// 401.
#[deny(
    clippy::wildcard_enum_match_arm,
    clippy::match_wildcard_for_single_variants
)]
pub(super) fn status(refusal: &Refusal) -> StatusCode {
    match refusal {
        Refusal::Forwarded => StatusCode::FORBIDDEN,
        Refusal::ForeignHost(_) => StatusCode::FORBIDDEN,
        Refusal::FromBrowser => StatusCode::FORBIDDEN,
        Refusal::MissingHeader(_) => StatusCode::UNAUTHORIZED,
        Refusal::BadToken => StatusCode::UNAUTHORIZED,
        Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
        Refusal::Forbidden { .. } => StatusCode::FORBIDDEN,
        Refusal::NotFound => StatusCode::NOT_FOUND,
        Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl Face for Imds {
    fn spec(&self) -> &'static FaceSpec {
        self.spec
    }

    fn routes(self: Arc<Self>) -> Router {
        let credentials = "/latest/meta-data/iam/security-credentials";
        Router::new()
            .route("/latest/api/token", put(token))
            .route(credentials, get(roles))
            .route(&format!("{credentials}/"), get(roles))
            .route(&format!("{credentials}/{{role}}"), get(role))
            .with_state(self)
    }

    fn status(&self, refusal: &Refusal) -> StatusCode {
        status(refusal)
    }
}

impl Imds {
    fn lock_tokens(&self) -> MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn issue(&self, peer: &Peer, headers: &HeaderMap) -> Result<Response, Refusal> {
        let ttl = headers.get(TTL_HEADER).ok_or(Refusal::BadRequest(format!(
            "the {TTL_HEADER} header is required"
        )))?;
        let seconds = ttl
            .to_str()
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|s| (1..=MAX_TTL).contains(s))
            .ok_or_else(|| {
                Refusal::BadRequest(format!(
                    "{TTL_HEADER} must be a number of seconds from 1 to {MAX_TTL}"
                ))
            })?;
        let token = self
            .lock_tokens()
            .issue(Duration::from_secs(seconds), peer.uid);
        let mut response = token.into_response();
        let echo = HeaderValue::from_str(&seconds.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("21600"));
        response.headers_mut().insert(TTL_HEADER, echo);
        Ok(response)
    }

    /// The session token check every metadata read passes.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        match headers.get(TOKEN_HEADER).and_then(|t| t.to_str().ok()) {
            Some(token) if self.lock_tokens().valid(token) => Ok(()),
            Some(_) => Err(Refusal::BadToken),
            None if self.core.settings().imds_v1 => Ok(()),
            None => Err(Refusal::MissingHeader("X-aws-ec2-metadata-token")),
        }
    }

    fn roles(&self, peer: &Peer, headers: &HeaderMap) -> Result<Response, Refusal> {
        self.authorize(headers)?;
        let target = self.core.target_at(NAME, peer)?;
        // The role's name is the target's: listed only to whoever may have its credentials.
        self.core.allowed(&self.core.served(), target, peer.uid)?;
        Ok(target.to_owned().into_response())
    }

    async fn credentials(
        &self,
        role: &str,
        peer: Peer,
        headers: &HeaderMap,
    ) -> Result<Response, Refusal> {
        self.authorize(headers)?;
        let served = self.core.served();
        if self.core.target_at(NAME, &peer)? != role {
            return Err(Refusal::NotFound);
        }
        let issued = self.core.credential(&served, role, peer).await?;
        let Credential::Aws(c) = &issued.credential else {
            return Err(Refusal::NotFound);
        };
        Ok(axum::Json(json!({
            "Code": "Success",
            "LastUpdated": rfc3339(self.core.now()),
            "Type": "AWS-HMAC",
            "AccessKeyId": c.access_key_id,
            "SecretAccessKey": c.secret_access_key.expose_secret(),
            "Token": c.session_token.expose_secret(),
            "Expiration": rfc3339(c.expiration),
        }))
        .into_response())
    }
}

async fn token(
    State(imds): State<Arc<Imds>>,
    peer: axum::Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    imds.core.answer(&*imds, imds.issue(&peer.0, &headers))
}

async fn roles(
    State(imds): State<Arc<Imds>>,
    peer: axum::Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    imds.core.answer(&*imds, imds.roles(&peer.0, &headers))
}

async fn role(
    State(imds): State<Arc<Imds>>,
    Path(role): Path<String>,
    peer: axum::Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let result = imds.credentials(&role, peer.0, &headers).await;
    imds.core.answer(&*imds, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// issue 9: IMDSv2's statuses, one per refusal (the match in `status` names every one).
    #[test]
    fn statuses() {
        let statuses: Vec<u16> = super::super::refusal::every()
            .iter()
            .map(|r| status(r).as_u16())
            .collect();
        assert_eq!(statuses, [403, 403, 403, 401, 401, 400, 403, 404, 503]);
    }

    #[test]
    fn tokens_expire_and_the_store_is_bounded() {
        let mut tokens = Tokens::default();
        let a = tokens.issue(Duration::from_secs(60), Some(1000));
        assert!(tokens.valid(&a));
        assert!(!tokens.valid("forged"));
        let short = tokens.issue(Duration::ZERO, Some(1000));
        assert!(!tokens.valid(&short));
        for _ in 0..MAX_TOKENS + 10 {
            tokens.issue(Duration::from_secs(60), Some(1000));
        }
        assert!(tokens.expiry.len() <= MAX_TOKENS);
    }

    /// Issue 11, defect 1: a user asking for more tokens than the store holds, each with the
    /// longest TTL, pushes out only their own: the sessions other users (and callers whose uid
    /// is unknown) took earlier stay valid, and the flooder's newest token is valid too.
    #[test]
    fn a_token_flood_evicts_only_the_flooders_tokens() {
        let mut tokens = Tokens::default();
        let mine = tokens.issue(Duration::from_secs(60), Some(1000));
        let unknown = tokens.issue(Duration::from_secs(60), None);
        let mut last = String::new();
        for _ in 0..MAX_TOKENS + 100 {
            last = tokens.issue(Duration::from_secs(MAX_TTL), Some(65534));
        }
        assert!(tokens.valid(&mine), "another user's session was evicted");
        assert!(
            tokens.valid(&unknown),
            "an unknown caller's session was evicted"
        );
        assert!(tokens.valid(&last));
        assert_eq!(tokens.expiry.len(), MAX_TOKENS_PER_USER + 2);
    }

    /// Issue 11 (review D6): a user holding most of the store keeps every session when another
    /// floods. Before the per-user cap the flooder evicted the larger holder's sessions until
    /// both held equally; now each holds at most its cap, evicting only its own.
    #[test]
    fn a_flood_spares_a_user_holding_many_sessions() {
        let mut tokens = Tokens::default();
        let held: Vec<String> = (0..3000)
            .map(|_| tokens.issue(Duration::from_secs(60), Some(1000)))
            .collect();
        let kept: Vec<&String> = held.iter().filter(|t| tokens.valid(t)).collect();
        assert!(kept.len() >= MAX_TOKENS_PER_USER, "{}", kept.len());
        assert!(held.last().is_some_and(|t| tokens.valid(t)));
        let mut last = String::new();
        for _ in 0..5000 {
            last = tokens.issue(Duration::from_secs(MAX_TTL), Some(65534));
        }
        let evicted = kept.iter().filter(|t| !tokens.valid(t)).count();
        assert_eq!(evicted, 0, "the flood evicted another user's sessions");
        assert!(tokens.valid(&last));
        assert!(tokens.expiry.len() <= MAX_TOKENS);
    }

    /// Issue 11 (review D6): with the store full of users at their cap, a user holding tokens
    /// pays for a new one with their own oldest; one holding none takes the oldest of the
    /// largest holder, and the store stays bounded.
    #[test]
    fn a_full_store_evicts_the_issuers_own_tokens_first() {
        let mut tokens = Tokens::default();
        let users: Vec<Vec<String>> = (0..4)
            .map(|uid| {
                (0..MAX_TOKENS_PER_USER)
                    .map(|_| tokens.issue(Duration::from_secs(60), Some(uid)))
                    .collect()
            })
            .collect();
        assert_eq!(tokens.expiry.len(), MAX_TOKENS);
        let new = tokens.issue(Duration::from_secs(60), Some(0));
        assert!(tokens.valid(&new));
        assert!(!tokens.valid(&users[0][0]), "the issuer's oldest stayed");
        assert!(users[1..].iter().flatten().all(|t| tokens.valid(t)));
        let stranger = tokens.issue(Duration::from_secs(60), Some(9));
        assert!(tokens.valid(&stranger));
        assert_eq!(tokens.expiry.len(), MAX_TOKENS);
    }
}
