//! AWS as a cloud of keyfed's exchange contract ([`keyfed_core::exchange`]): one role assumed
//! at one STS endpoint with the subject token as the web identity, the credentials' expiry the
//! exact `Expiration` STS gave.

use std::time::SystemTime;

use keyfed_core::SecretString;
use keyfed_core::exchange::{Exchange, Expiring};

use crate::{AssumeRoleRequest, AwsCredentials, AwsError, StsClient};

/// AssumeRoleWithWebIdentity of one role, for one target.
#[derive(Debug, Clone)]
pub struct StsExchange {
    pub sts: StsClient,
    pub request: AssumeRoleRequest,
}

impl Exchange for StsExchange {
    type Credential = AwsCredentials;
    type Error = AwsError;

    async fn exchange(&self, subject_token: &SecretString) -> Result<AwsCredentials, AwsError> {
        self.sts
            .assume_role_with_web_identity(&self.request, subject_token)
            .await
    }
}

impl Expiring for AwsCredentials {
    fn expires_at(&self) -> SystemTime {
        self.expiration
    }
}
