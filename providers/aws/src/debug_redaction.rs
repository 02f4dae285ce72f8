//! issue 11: AWS credentials show neither their secret key nor their session token under
//! `{:?}` or `{:#?}`, alone or inside whatever holds them.

use std::time::SystemTime;

use keyfed_core::SecretString;

use crate::AwsCredentials;

#[test]
fn issue_11_no_secret_of_aws_credentials_shows_under_debug() {
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";
    let session = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD6EXAMPLE";
    let credentials = AwsCredentials {
        access_key_id: "ASIAEXAMPLEEXAMPLE12".to_owned(),
        secret_access_key: SecretString::from(secret),
        session_token: SecretString::from(session),
        expiration: SystemTime::UNIX_EPOCH,
        assumed_role_arn: "arn:aws:sts::123456789012:assumed-role/app/web-01".to_owned(),
    };
    let held = (Some(credentials.clone()), vec![credentials.clone()]);
    for shown in [
        format!("{credentials:?}"),
        format!("{credentials:#?}"),
        format!("{held:?}"),
        format!("{held:#?}"),
    ] {
        assert!(shown.contains("ASIAEXAMPLEEXAMPLE12"), "{shown}");
        assert!(shown.contains(keyfed_core::REDACTED), "{shown}");
        assert!(
            !shown.contains(secret) && !shown.contains(session),
            "{shown}"
        );
    }
}
