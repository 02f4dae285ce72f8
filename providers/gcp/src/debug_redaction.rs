//! issue 11: Google Cloud tokens — federated, a service account's access token, an ID token —
//! show no token under `{:?}` or `{:#?}`.

use std::time::SystemTime;

use keyfed_core::SecretString;

use crate::{GcpToken, GcpTokenKind};

#[test]
fn issue_11_no_google_token_shows_under_debug() {
    let access = "ya29.c.b0AXv0zTOuQ3yUo1KqJc7n1dL2-EXAMPLE-access-token";
    let id = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2FwaSJ9.c2lnbmF0dXJlLWV4YW1wbGU";
    let tokens = [
        GcpToken {
            kind: GcpTokenKind::Access {
                scopes: vec!["https://www.googleapis.com/auth/cloud-platform".to_owned()],
                service_account: None,
            },
            token: SecretString::from(access),
            expires_at: SystemTime::UNIX_EPOCH,
        },
        GcpToken {
            kind: GcpTokenKind::Access {
                scopes: vec!["https://www.googleapis.com/auth/cloud-platform".to_owned()],
                service_account: Some("app@p.iam.gserviceaccount.com".to_owned()),
            },
            token: SecretString::from(access),
            expires_at: SystemTime::UNIX_EPOCH,
        },
        GcpToken {
            kind: GcpTokenKind::Id {
                audience: "https://api".to_owned(),
                full: true,
                service_account: "app@p.iam.gserviceaccount.com".to_owned(),
            },
            token: SecretString::from(id),
            expires_at: SystemTime::UNIX_EPOCH,
        },
    ];
    for shown in [format!("{tokens:?}"), format!("{tokens:#?}")] {
        assert!(shown.contains("app@p.iam.gserviceaccount.com"), "{shown}");
        for secret in [access, id, "c2lnbmF0dXJlLWV4YW1wbGU"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
