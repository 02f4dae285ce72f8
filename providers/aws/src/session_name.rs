//! `RoleSessionName` from the target's `session_name` template. STS accepts 2–64 characters of
//! `[A-Za-z0-9_+=,.@-]`; the session name shows in CloudTrail and in the assumed-role ARN, so it
//! should say which host asked (`{hostname}`) and for what (`{target}`).

/// STS's limits on `RoleSessionName`.
pub(crate) const MIN_LEN: usize = 2;
pub(crate) const MAX_LEN: usize = 64;

/// True for the characters STS allows in a session name (`[\w+=,.@-]`, ASCII only).
pub(crate) fn is_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-')
}

/// Expands `{hostname}` and `{target}` in `template`, replaces every character STS would
/// refuse with `-`, cuts the result to 64 characters and pads it with `-` to at least 2, so that
/// any template and any hostname give a name STS accepts.
pub fn session_name(template: &str, hostname: &str, target: &str) -> String {
    let expanded = template
        .replace("{hostname}", hostname)
        .replace("{target}", target);
    let mut name: String = expanded
        .chars()
        .map(|c| if is_allowed(c) { c } else { '-' })
        .take(MAX_LEN)
        .collect();
    while name.len() < MIN_LEN {
        name.push('-');
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn expands_placeholders() {
        assert_eq!(
            session_name("{hostname}", "web-01.example.com", "aws-prod"),
            "web-01.example.com"
        );
        assert_eq!(
            session_name("keyfed@{hostname}+{target}", "web-01", "aws-prod"),
            "keyfed@web-01+aws-prod"
        );
        assert_eq!(
            session_name("{target}-{target}", "h", "t"),
            "t-t",
            "every occurrence is expanded"
        );
    }

    #[test]
    fn replaces_truncates_and_pads() {
        assert_eq!(session_name("host name/ü", "", ""), "host-name--");
        assert_eq!(session_name("", "", ""), "--");
        assert_eq!(session_name("{hostname}", "a", ""), "a-");
        assert_eq!(session_name(&"x".repeat(100), "", "").len(), 64);
        assert_eq!(
            session_name("{unknown}", "h", "t"),
            "-unknown-",
            "unknown placeholders are not expanded"
        );
    }

    fn sts_accepts(name: &str) -> bool {
        (MIN_LEN..=MAX_LEN).contains(&name.chars().count()) && name.chars().all(is_allowed)
    }

    proptest! {
        #[test]
        fn always_acceptable_to_sts(template in ".{0,100}", host in ".{0,80}", target in ".{0,80}") {
            let name = session_name(&template, &host, &target);
            prop_assert!(sts_accepts(&name), "{name:?}");
        }

        #[test]
        fn valid_short_names_pass_unchanged(name in "[A-Za-z0-9_+=,.@-]{2,64}") {
            prop_assert_eq!(session_name(&name, "h", "t"), name);
        }

        #[test]
        fn hostname_is_kept_when_it_fits(host in "[a-z0-9][a-z0-9.-]{1,40}") {
            let name = session_name("keyfed-{hostname}", &host, "t");
            prop_assert_eq!(name, format!("keyfed-{host}"));
        }

        #[test]
        fn long_names_are_prefixes(template in "[a-z]{65,200}") {
            let name = session_name(&template, "", "");
            prop_assert_eq!(name.len(), 64);
            prop_assert!(template.starts_with(&name));
        }
    }
}
