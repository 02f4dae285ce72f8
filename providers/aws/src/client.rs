//! The STS client: AssumeRoleWithWebIdentity through `aws-sdk-sts`, unsigned. No AWS
//! credentials provider is configured and nothing of the AWS shared config is read (no
//! `~/.aws/config`, no credentials file, no `AWS_*` environment variables, no IMDS): the web
//! identity token is the only proof. SDK retries are off — the caller's engine decides, from
//! the error's advice ([`keyfed_core::exchange::Advise`]), whether and when to try again. One `StsClient` per STS endpoint; it is
//! cheap to share behind an `Arc` and safe to call concurrently.

use std::time::SystemTime;

use aws_sdk_sts::config::{AppName, BehaviorVersion, Region};
use aws_sdk_sts::error::{ProvideErrorMetadata as _, SdkError};
use aws_sdk_sts::operation::RequestId as _;
use aws_sdk_sts::operation::assume_role_with_web_identity::{
    AssumeRoleWithWebIdentityError, AssumeRoleWithWebIdentityOutput,
};
use aws_sdk_sts::types::PolicyDescriptorType;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use keyfed_core::http::{self, error_chain};
use keyfed_core::{ExposeSecret as _, SecretString};

use crate::credentials::AwsCredentials;
use crate::error::{AwsError, HintContext, hint};
use crate::settings::{AssumeRoleRequest, MAX_DURATION_SECS, MIN_DURATION_SECS, StsSettings};
use crate::{http_client, session_name};
use keyfed_core::token_facts::TokenFacts;

/// Trades web identity tokens for temporary AWS credentials at one STS endpoint.
#[derive(Debug, Clone)]
pub struct StsClient {
    sts: aws_sdk_sts::Client,
    region: String,
    /// The endpoint as error messages name it.
    endpoint: String,
    /// How long a call may take: also the bound on asking a refusing proxy what it says.
    timeout: std::time::Duration,
}

type StsSdkError = SdkError<AssumeRoleWithWebIdentityError, HttpResponse>;

impl StsClient {
    /// Checks the settings and builds the HTTP client; no request is made yet.
    pub fn new(settings: StsSettings) -> Result<Self, AwsError> {
        let region = settings.region.trim();
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(AwsError::InvalidSettings {
                detail: format!(
                    "region \"{}\" is not an AWS region name such as \"eu-west-1\"",
                    settings.region
                ),
            });
        }
        if settings.fips && settings.endpoint_url.is_some() {
            return Err(AwsError::InvalidSettings {
                detail: "fips = true selects AWS's FIPS endpoint and cannot be combined with endpoint_url; put the FIPS endpoint's URL into endpoint_url instead".to_owned(),
            });
        }
        let mut config = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .use_fips(settings.fips)
            .retry_config(RetryConfig::disabled())
            // issue 11: the SDK reads a document cut off mid-way as if whole.
            .interceptor(crate::whole_document::WholeDocument)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.http.connect_timeout)
                    .operation_attempt_timeout(settings.http.timeout)
                    .operation_timeout(settings.http.timeout)
                    .build(),
            )
            .http_client(
                http_client::build(
                    &settings.http,
                    settings
                        .endpoint_url
                        .as_ref()
                        .is_some_and(http::is_loopback),
                )
                .map_err(AwsError::Setup)?,
            );
        if let Ok(name) = AppName::new("keyfed") {
            config = config.app_name(name);
        }
        let endpoint = match &settings.endpoint_url {
            Some(url) => {
                http::check_url(url, settings.http.allow_insecure_http).map_err(AwsError::Setup)?;
                // `Url` always has a path; the SDK appends the operation's "/" to it.
                let text = url.as_str().trim_end_matches('/').to_owned();
                config = config.endpoint_url(text.clone());
                text
            }
            None => regional_endpoint(region, settings.fips),
        };
        Ok(Self {
            sts: aws_sdk_sts::Client::from_conf(config.build()),
            region: region.to_owned(),
            endpoint,
            timeout: settings.http.timeout,
        })
    }

    /// Calls AssumeRoleWithWebIdentity once. The token is sent to STS and nowhere else; it is
    /// never part of an error or a log line.
    pub async fn assume_role_with_web_identity(
        &self,
        request: &AssumeRoleRequest,
        web_identity_token: &SecretString,
    ) -> Result<AwsCredentials, AwsError> {
        let duration_secs = check_request(request)?;
        let policy_arns = (!request.policy_arns.is_empty()).then(|| {
            request
                .policy_arns
                .iter()
                .map(|arn| PolicyDescriptorType::builder().arn(arn).build())
                .collect::<Vec<_>>()
        });
        tracing::debug!(
            role_arn = %request.role_arn,
            session_name = %request.session_name,
            duration_secs,
            endpoint = %self.endpoint,
            "AssumeRoleWithWebIdentity"
        );
        let output = self
            .sts
            .assume_role_with_web_identity()
            .role_arn(&request.role_arn)
            .role_session_name(&request.session_name)
            .web_identity_token(web_identity_token.expose_secret())
            .duration_seconds(i32::try_from(duration_secs).unwrap_or(i32::MAX))
            .set_policy(request.policy.clone())
            .set_policy_arns(policy_arns)
            .send()
            .await;
        let output = match output {
            Ok(output) => output,
            Err(e) => {
                let mut error = self.failure(e, request, duration_secs, web_identity_token);
                // A proxy's refusal reaches here as "tunnel error: unsuccessful": name the
                // proxy and what it said (issue 11).
                if let AwsError::Transport { detail, .. } = &mut error
                    && let Ok(url) = url::Url::parse(&self.endpoint)
                    && let Some(proxy) =
                        keyfed_core::proxy::explain(&url, detail, self.timeout).await
                {
                    *detail = format!("{detail}: {proxy}");
                }
                return Err(error);
            }
        };
        self.credentials(output, &request.role_arn)
    }

    fn credentials(
        &self,
        output: AssumeRoleWithWebIdentityOutput,
        role_arn: &str,
    ) -> Result<AwsCredentials, AwsError> {
        let invalid = |detail: &str| AwsError::InvalidResponse {
            role_arn: role_arn.to_owned(),
            endpoint: self.endpoint.clone(),
            detail: detail.to_owned(),
        };
        let assumed_role_arn = output
            .assumed_role_user()
            .map(|user| user.arn().to_owned())
            .filter(|arn| !arn.is_empty())
            .ok_or_else(|| invalid("it has no AssumedRoleUser/Arn"))?;
        let Some(creds) = output.credentials else {
            return Err(invalid("it has no Credentials"));
        };
        if creds.access_key_id.is_empty()
            || creds.secret_access_key.is_empty()
            || creds.session_token.is_empty()
        {
            return Err(invalid(
                "its AccessKeyId, SecretAccessKey or SessionToken is empty",
            ));
        }
        let expiration = SystemTime::try_from(creds.expiration)
            .map_err(|e| invalid(&format!("its Expiration is out of range: {e}")))?;
        tracing::debug!(
            %assumed_role_arn,
            access_key_id = %creds.access_key_id,
            expiration = %keyfed_core::clock::rfc3339(expiration),
            "STS credentials received"
        );
        Ok(AwsCredentials {
            access_key_id: creds.access_key_id,
            secret_access_key: SecretString::from(creds.secret_access_key),
            session_token: SecretString::from(creds.session_token),
            expiration,
            assumed_role_arn,
        })
    }

    /// Turns the SDK's error into an [`AwsError`]: STS's own code and message with a hint, or
    /// what went wrong on the way there.
    fn failure(
        &self,
        error: StsSdkError,
        request: &AssumeRoleRequest,
        duration_secs: u64,
        token: &SecretString,
    ) -> AwsError {
        let role_arn = request.role_arn.clone();
        let endpoint = self.endpoint.clone();
        // STS's words, or an echo of the request in them (a gateway's error page), must not
        // carry the token into keyfed's (issue 11).
        let redact = |text: &str| keyfed_core::secret::redact_sent(text, &[token.expose_secret()]);
        let transport = |detail: String, timed_out: bool| AwsError::Transport {
            role_arn: role_arn.clone(),
            endpoint: endpoint.clone(),
            detail,
            timed_out,
        };
        match &error {
            SdkError::ServiceError(context) => {
                let status = context.raw().status().as_u16();
                let err = context.err();
                match err.code() {
                    Some(code) => {
                        let message = redact(err.message().unwrap_or_default());
                        let facts = TokenFacts::read(token);
                        let cx = HintContext {
                            role_arn: &request.role_arn,
                            region: &self.region,
                            duration_secs,
                            token: &facts,
                        };
                        AwsError::Refused {
                            hint: hint(code, &message, &cx),
                            role_arn,
                            status,
                            code: redact(code),
                            message,
                            request_id: err.request_id().map(str::to_owned),
                        }
                    }
                    // A success status whose body could not be read: never quote that body,
                    // it may hold a secret key.
                    None if (200..300).contains(&status) => AwsError::InvalidResponse {
                        role_arn,
                        endpoint,
                        detail: format!(
                            "HTTP {status} with a body that is not an AssumeRoleWithWebIdentityResponse ({})",
                            redact(&error_chain(&error))
                        ),
                    },
                    None => AwsError::Http {
                        role_arn,
                        endpoint,
                        status,
                        body: http::trim_body(&redact(&String::from_utf8_lossy(
                            context.raw().body().bytes().unwrap_or_default(),
                        ))),
                    },
                }
            }
            SdkError::TimeoutError(_) => transport(
                format!(
                    "no answer within the timeout ({})",
                    redact(&error_chain(&error))
                ),
                true,
            ),
            SdkError::DispatchFailure(failure) if failure.is_user() => AwsError::InvalidSettings {
                detail: format!(
                    "cannot send AssumeRoleWithWebIdentity to {endpoint} for role {role_arn}: {}",
                    redact(&error_chain(&error))
                ),
            },
            SdkError::DispatchFailure(failure) => {
                transport(redact(&error_chain(&error)), failure.is_timeout())
            }
            SdkError::ResponseError(context) if has_source::<http_client::BodyTooLarge>(&error) => {
                AwsError::InvalidResponse {
                    role_arn,
                    endpoint,
                    detail: format!(
                        "{} (HTTP {}); keyfed reads at most 1 MiB",
                        http_client::BodyTooLarge,
                        context.raw().status().as_u16()
                    ),
                }
            }
            SdkError::ResponseError(context) => AwsError::InvalidResponse {
                role_arn,
                endpoint,
                detail: format!(
                    "HTTP {}: {}",
                    context.raw().status().as_u16(),
                    redact(&error_chain(&error))
                ),
            },
            SdkError::ConstructionFailure(_) => AwsError::InvalidSettings {
                detail: format!(
                    "cannot build AssumeRoleWithWebIdentity for role {role_arn} at {endpoint}: {}",
                    redact(&error_chain(&error))
                ),
            },
            _ => transport(redact(&error_chain(&error)), false),
        }
    }
}

/// True when `E` is somewhere in `error`'s chain of sources.
fn has_source<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<E>())
}

/// Refuses what STS would refuse anyway, before a token is spent on it; returns the duration
/// in whole seconds.
fn check_request(request: &AssumeRoleRequest) -> Result<u64, AwsError> {
    let invalid = |detail: String| AwsError::InvalidSettings {
        detail: format!("role {}: {detail}", request.role_arn),
    };
    if !request.role_arn.starts_with("arn:") || !request.role_arn.contains(":role/") {
        return Err(invalid(
            "the role ARN must look like arn:aws:iam::<account>:role/<name>".to_owned(),
        ));
    }
    let name = &request.session_name;
    if !(session_name::MIN_LEN..=session_name::MAX_LEN).contains(&name.chars().count())
        || !name.chars().all(session_name::is_allowed)
    {
        return Err(invalid(format!(
            "session name \"{name}\" must be 2–64 characters of A–Z a–z 0–9 _ + = , . @ -"
        )));
    }
    let secs = request.duration.as_secs();
    if request.duration.subsec_nanos() != 0
        || !(MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(&secs)
    {
        return Err(invalid(format!(
            "duration {} s is outside what STS allows (whole seconds, {MIN_DURATION_SECS}–{MAX_DURATION_SECS})",
            request.duration.as_secs_f64()
        )));
    }
    Ok(secs)
}

/// The endpoint the SDK resolves for a region, for error messages.
fn regional_endpoint(region: &str, fips: bool) -> String {
    let host = if fips { "sts-fips" } else { "sts" };
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://{host}.{region}.{suffix}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_sdk_sts::config::endpoint::{DefaultResolver, Params, ResolveEndpoint as _};
    use keyfed_core::http::HttpSettings;
    use url::Url;

    use super::*;

    fn settings(region: &str, endpoint: Option<&str>, fips: bool) -> StsSettings {
        StsSettings {
            region: region.to_owned(),
            endpoint_url: endpoint.map(|u| Url::parse(u).unwrap_or_else(|e| panic!("{e}"))),
            fips,
            http: HttpSettings::default(),
        }
    }

    fn setup_error(settings: StsSettings) -> String {
        match StsClient::new(settings) {
            Ok(_) => panic!("expected a refusal"),
            Err(e) => {
                assert_eq!(
                    keyfed_core::exchange::Advise::advice(&e),
                    keyfed_core::exchange::Advice::Stop {
                        side: keyfed_core::exchange::Side::Config
                    }
                );
                e.to_string()
            }
        }
    }

    #[test]
    fn settings_are_checked_up_front() {
        assert!(StsClient::new(settings("eu-west-1", None, false)).is_ok());
        assert!(
            StsClient::new(settings("eu-west-1", Some("http://127.0.0.1:4566/"), false)).is_ok()
        );
        assert!(StsClient::new(settings("eu-west-1", None, true)).is_ok());
        let text = setup_error(settings(
            "eu-west-1",
            Some("http://sts.internal.example/"),
            false,
        ));
        assert!(
            text.contains("http://sts.internal.example/") && text.contains("https://"),
            "{text}"
        );
        let text = setup_error(settings("eu-west-1", Some("https://vpce.example/"), true));
        assert!(text.contains("fips"), "{text}");
        let text = setup_error(settings("Europe (Ireland)", None, false));
        assert!(text.contains("\"Europe (Ireland)\""), "{text}");
        let mut with_ca = settings("eu-west-1", None, false);
        with_ca.http.ca_file = Some("/nonexistent/corp-ca.pem".into());
        let text = setup_error(with_ca);
        assert!(text.contains("/nonexistent/corp-ca.pem"), "{text}");
    }

    #[tokio::test]
    async fn the_sdk_picks_regional_and_fips_endpoints() {
        for (fips, region, expected) in [
            (false, "eu-west-1", "https://sts.eu-west-1.amazonaws.com"),
            (false, "us-east-1", "https://sts.us-east-1.amazonaws.com"),
            (
                true,
                "us-gov-west-1",
                "https://sts.us-gov-west-1.amazonaws.com",
            ),
            (
                true,
                "eu-west-1",
                "https://sts-fips.eu-west-1.amazonaws.com",
            ),
        ] {
            let client =
                StsClient::new(settings(region, None, fips)).unwrap_or_else(|e| panic!("{e}"));
            let config = client.sts.config();
            let params = Params::builder()
                .set_region(config.region().map(|r| r.as_ref().to_owned()))
                .use_fips(fips)
                .use_dual_stack(false)
                .use_global_endpoint(false)
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
            let endpoint = DefaultResolver::new()
                .resolve_endpoint(&params)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(endpoint.url(), expected, "{region} fips={fips}");
            if !region.starts_with("us-gov") {
                assert_eq!(
                    client.endpoint, expected,
                    "error messages name the same endpoint"
                );
            }
        }
    }

    #[test]
    fn requests_sts_would_refuse_are_refused_before_spending_a_token() {
        let ok = AssumeRoleRequest {
            role_arn: "arn:aws:iam::123456789012:role/onprem-web".to_owned(),
            session_name: "web-01".to_owned(),
            duration: Duration::from_secs(3600),
            policy: None,
            policy_arns: Vec::new(),
        };
        assert_eq!(check_request(&ok).ok(), Some(3600));
        let with = |f: &dyn Fn(&mut AssumeRoleRequest)| {
            let mut r = ok.clone();
            f(&mut r);
            check_request(&r).err().map(|e| e.to_string())
        };
        assert!(
            with(&|r| r.duration = Duration::from_secs(899))
                .is_some_and(|e| e.contains("900–43200"))
        );
        assert!(with(&|r| r.duration = Duration::from_secs(43_201)).is_some());
        assert!(with(&|r| r.duration = Duration::from_millis(3_600_500)).is_some());
        assert!(
            with(&|r| r.session_name = "web 01".to_owned())
                .is_some_and(|e| e.contains("\"web 01\""))
        );
        assert!(with(&|r| r.session_name = "w".to_owned()).is_some());
        assert!(
            with(&|r| r.role_arn = "onprem-web".to_owned())
                .is_some_and(|e| e.contains("arn:aws:iam::"))
        );
    }
}
