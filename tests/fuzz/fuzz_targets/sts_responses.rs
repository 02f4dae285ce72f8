//! What AWS STS answers to AssumeRoleWithWebIdentity (issue 11): its XML result and its XML
//! errors, read by the AWS SDK and turned into credentials or an `AwsError` by
//! `keyfed_aws::StsClient`, with STS's hints.
//!
//! Nothing may panic; credentials handed back are whole; no error shows the web identity token
//! keyfed sent or a secret key or session token a 2xx answer held.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use keyfed_aws::{AssumeRoleRequest, StsClient, StsSettings};
use keyfed_core::SecretString;
use keyfed_core::http::HttpSettings;
use keyfed_fuzz::{Script, Server, assert_hidden, xml_texts};
use libfuzzer_sys::fuzz_target;
use url::Url;

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/keyfed-fuzz";
/// The web identity token keyfed sends: claims a hint quotes, a signature no one checks.
const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImZ1enoifQ.eyJpc3MiOiJodHRwczovL3Nzby5leGFtcGxlLmNvbS9yZWFsbXMvaW5mcmEiLCJhdWQiOiJzdHMuYW1hem9uYXdzLmNvbSIsInN1YiI6Imhvc3QtZnV6eiIsImV4cCI6MTc2NzIyOTIwMH0.ZnV6ei1zaWduYXR1cmUtbm90LWNoZWNrZWQ";

/// One SDK client for the whole run: building one is the slow part.
fn client(server: &Server) -> &'static StsClient {
    static CLIENT: OnceLock<StsClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let endpoint = Url::parse(&server.base()).unwrap_or_else(|e| panic!("{e}"));
        let settings = StsSettings {
            region: "eu-west-1".to_owned(),
            endpoint_url: Some(endpoint),
            fips: false,
            http: HttpSettings {
                timeout: Duration::from_secs(10),
                ..HttpSettings::default()
            },
        };
        server
            .block_on(async { StsClient::new(settings) })
            .unwrap_or_else(|e| panic!("the STS client: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let script = Script::parse(data);
    let server = Server::get();
    let client = client(server);
    let request = AssumeRoleRequest {
        role_arn: ROLE_ARN.to_owned(),
        session_name: "keyfed-fuzz".to_owned(),
        duration: Duration::from_secs(3600),
        policy: None,
        policy_arns: Vec::new(),
    };
    let token = SecretString::from(TOKEN);
    let result = server.run(
        &script.answers,
        "text/xml",
        client.assume_role_with_web_identity(&request, &token),
    );
    match &result {
        Ok(_) => keyfed_fuzz::show(&"accepted"),
        Err(error) => keyfed_fuzz::show(error),
    }
    match result {
        Ok(credentials) => {
            assert!(
                !credentials.access_key_id.is_empty(),
                "an empty access key id"
            );
            assert!(!credentials.assumed_role_arn.is_empty(), "no assumed role");
            let shown = format!("{credentials:?}");
            for answer in &script.answers {
                for tag in ["SecretAccessKey", "SessionToken"] {
                    for secret in xml_texts(&answer.body, tag) {
                        assert_hidden(&shown, &secret, &answer.body, &[ROLE_ARN]);
                    }
                }
            }
        }
        Err(error) => {
            let shown = error.to_string();
            assert_hidden(&shown, TOKEN, b"", &[]);
            let debug = format!("{error:?}");
            assert_hidden(&debug, TOKEN, b"", &[]);
            for answer in script
                .answers
                .iter()
                .filter(|a| (200..300).contains(&a.status))
            {
                for tag in ["SecretAccessKey", "SessionToken"] {
                    for secret in xml_texts(&answer.body, tag) {
                        assert_hidden(&shown, &secret, &answer.body, &[ROLE_ARN]);
                    }
                }
            }
        }
    }
});
