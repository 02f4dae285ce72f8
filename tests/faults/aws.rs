//! How AWS STS suffers a fault: every STS action is a request to `/`; its own answers when
//! failing (`ServiceUnavailable`, HTTP 503) and when throttling (`Throttling`, "Rate exceeded":
//! HTTP 400 in the Query protocol, not 429). And the regression test of a defect the matrix
//! found: an STS answer cut off mid-way was taken as whole.

use keyfed_core::emulator::Fault;

use super::kinds::Struck;
use super::upstreams::Upstreams;

fn sts_error(status: u16, kind: &str, code: &str, message: &str) -> Fault {
    Fault::Status {
        status,
        body: format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>{kind}</Type>\
             <Code>{code}</Code><Message>{message}</Message></Error>\
             <RequestId>c0ffee00-0000-4000-8000-000000000011</RequestId></ErrorResponse>"
        ),
    }
}

pub fn struck(up: &Upstreams) -> Struck {
    Struck {
        name: "AWS STS",
        control: up.sts().control().clone(),
        path: "/",
        server_error: sts_error(
            503,
            "Receiver",
            "ServiceUnavailable",
            "Service is unable to handle request.",
        ),
        throttled: sts_error(400, "Sender", "Throttling", "Rate exceeded"),
    }
}

/// issue 11: the SDK's XML reader took an STS answer cut off inside its `SessionToken` as
/// whole, and keyfed wrote and served the truncated session token as a valid credential
/// (cut before `Expiration`, it said "expires at 1970-01-01T00:00:00Z … check the clocks"
/// instead). Such an answer is now refused as not valid, retried with backoff, and nothing is
/// written.
#[tokio::test]
async fn issue_11_an_sts_answer_cut_off_inside_its_session_token_is_refused() {
    let fx = crate::util::Fixture::aws().await;
    fx.daemon_config(&fx.aws_target(
        "aws",
        r#"{ kind = "credential-process-json", path = "aws.json" }"#,
    ));
    fx.known
        .add_file(fx.path("aws.json"), crate::util::SecretFile::AwsJson);
    let whole = |session_token: &str| {
        format!(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
             <AssumeRoleWithWebIdentityResult><AssumedRoleUser>\
             <Arn>arn:aws:sts::123456789012:assumed-role/app/vm</Arn>\
             <AssumedRoleId>AROAEXAMPLEEXAMPLE12:vm</AssumedRoleId></AssumedRoleUser>\
             <Credentials><AccessKeyId>ASIAEXAMPLEEXAMPLE12</AccessKeyId>\
             <SecretAccessKey>cut-off-secret-access-key-0123456789</SecretAccessKey>\
             <Expiration>2099-01-01T00:00:00Z</Expiration>\
             <SessionToken>{session_token}"
        )
    };
    for cut in [
        whole("IQoJb3JpZ2luX2VjEXAMPLE-cut-off-here"),
        whole("IQoJb3JpZ2luX2VjEXAMPLE</SessionToken></Credentials>"),
    ] {
        fx.sts().control().inject(
            "/",
            Fault::Status {
                status: 200,
                body: cut,
            },
            Some(1),
        );
        fx.keyfed(&["once"])
            .await
            .fails_with(1)
            .prints("FAILED  aws: the answer from STS")
            .prints("is not valid")
            .prints("ends before its root element does");
        assert!(
            !fx.path("aws.json").exists(),
            "a cut-off answer was written"
        );
    }
    fx.keyfed(&["once"]).await.ok();
    assert!(fx.path("aws.json").exists());
}
