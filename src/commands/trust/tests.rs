//! The pieces every cloud's output is made of: comments no value can escape and the default
//! JWKS file name.

use super::*;

fn facts(subject: &str) -> Facts {
    Facts {
        target: "aws".to_owned(),
        issuer: "https://sso.example.com/realms/infra".to_owned(),
        subject: subject.to_owned(),
        audience: "sts.amazonaws.com".to_owned(),
        token_audiences: vec!["sts.amazonaws.com".to_owned()],
        client_id: "host-web-01".to_owned(),
    }
}

#[test]
fn no_value_ends_a_comment_line() {
    let evil = "x\nrm -rf /tmp/victim\r\n$(id)";
    let text = built_from(&facts(evil));
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("# ") && text.contains(r#""x\nrm -rf /tmp/victim\r\n$(id)""#));
    let multi = comment_at("  ", "one\ntwo");
    assert_eq!(multi, "  # one\n  # two\n");
}

#[test]
fn commands_indent_their_lines_but_not_their_values() {
    let value = quote::sh("a\nb");
    let text = command_at("  ", &["cmd".to_owned()], &[format!("--x {value}")]);
    assert_eq!(text, "  cmd \\\n    --x 'a\nb'\n");
}

#[test]
fn the_jwks_file_is_named_for_the_target() {
    assert_eq!(default_jwks_file("gcp"), PathBuf::from("./gcp-jwks.json"));
    assert_eq!(
        default_jwks_file("../etc/x y"),
        PathBuf::from("./.._etc_x_y-jwks.json")
    );
}

#[test]
fn a_list_audience_is_warned_about() {
    let mut f = facts("s");
    f.token_audiences.push("account".to_owned());
    let aws = keyfed_aws::config::resolve(
        &toml::from_str(
            "role_arn = \"arn:aws:iam::123456789012:role/app\"\nregion = \"eu-west-1\"",
        )
        .unwrap_or_else(|e| panic!("{e}")),
        "aws",
        &NoVars,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let said = warnings(&f, &Exchange::Aws(Box::new(aws)));
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("2 values") && said[0].contains("keyfed doctor aws"));
}

struct NoVars;

impl keyfed_core::config::Context for NoVars {
    fn expand(&self, value: &str) -> Result<String, String> {
        Ok(value.to_owned())
    }
    fn path(&self, value: &str) -> Result<PathBuf, String> {
        Ok(PathBuf::from(value))
    }
    fn hostname(&self) -> &str {
        "host"
    }
}
