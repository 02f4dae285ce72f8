//! The temporary credentials STS hands back, with the two secret parts kept as
//! [`SecretString`] so they never reach a log line through `Debug`.

use std::fmt;
use std::time::SystemTime;

use keyfed_core::{REDACTED, SecretString};

/// An access key, its secret and session token, and when they stop working.
#[derive(Clone)]
pub struct AwsCredentials {
    /// `ASIA…`: temporary keys always start so.
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: SecretString,
    pub expiration: SystemTime,
    /// `arn:aws:sts::<account>:assumed-role/<role>/<session>`: who AWS sees calling.
    pub assumed_role_arn: String,
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &REDACTED)
            .field("session_token", &REDACTED)
            .field("expiration", &keyfed_core::clock::rfc3339(self.expiration))
            .field("assumed_role_arn", &self.assumed_role_arn)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_both_secrets() {
        let creds = AwsCredentials {
            access_key_id: "ASIAEXAMPLEEXAMPLE12".to_owned(),
            secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRET"),
            session_token: SecretString::from("IQoJb3JpZ2luX2VjSESSIONTOKEN"),
            expiration: keyfed_core::clock::from_unix_seconds(1_700_000_000),
            assumed_role_arn: "arn:aws:sts::123456789012:assumed-role/r/s".to_owned(),
        };
        let shown = format!("{creds:?} {:?}", creds.clone());
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(!shown.contains("SESSIONTOKEN"), "{shown}");
        assert!(shown.contains(REDACTED), "{shown}");
        assert!(shown.contains("ASIAEXAMPLEEXAMPLE12"), "{shown}");
        assert!(shown.contains("2023-11-14T22:13:20Z"), "{shown}");
    }
}
