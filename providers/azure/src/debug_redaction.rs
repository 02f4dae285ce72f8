//! issue 11: an Entra ID access token shows no token under `{:?}` or `{:#?}`.

use std::time::SystemTime;

use keyfed_core::SecretString;

use crate::AzureToken;

#[test]
fn issue_11_no_entra_token_shows_under_debug() {
    let jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL21hbmFnZW1lbnQifQ.c2lnbmF0dXJlLWVudHJh";
    let token = AzureToken {
        token: SecretString::from(jwt),
        scope: "https://management.azure.com/.default".to_owned(),
        tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".to_owned(),
        client_id: "af3110ba-0ba9-4412-b1a0-59f50b7e9273".to_owned(),
        expires_at: SystemTime::UNIX_EPOCH,
    };
    for shown in [format!("{token:?}"), format!("{token:#?}")] {
        assert!(shown.contains("management.azure.com"), "{shown}");
        for secret in [jwt, "c2lnbmF0dXJlLWVudHJh"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
