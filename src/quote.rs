//! Quoting values for the text keyfed prints for people to paste or shells to evaluate
//! (`keyfed trust`, `keyfed env`): POSIX sh, fish and HCL (Terraform). One place, so every
//! printed command quotes the same way.

/// Characters that need no quoting in any of the shells keyfed prints for.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_./:@%+=,-".contains(c)
}

/// `value` as one POSIX sh word: unchanged when it is plain, else in single quotes with each
/// `'` written as `'\''`.
pub fn sh(value: &str) -> String {
    if !value.is_empty() && value.chars().all(is_plain) {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// `value` as one fish word: unchanged when it is plain, else in single quotes, where fish
/// takes `\\` and `\'` as escapes.
pub fn fish(value: &str) -> String {
    if !value.is_empty() && value.chars().all(is_plain) {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\\', r"\\").replace('\'', r"\'"))
}

/// `value` as an HCL quoted string: JSON's escapes, plus `${` and `%{` doubled so Terraform
/// takes them literally instead of as interpolation or a directive.
pub fn hcl(value: &str) -> String {
    let json = serde_json::Value::String(value.to_owned()).to_string();
    json.replace("${", "$${").replace("%{", "%%{")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `shell -c 'printf %s <quoted>'` and returns what the shell made of the word.
    fn through(shell: &str, quoted: &str) -> Option<String> {
        let out = std::process::Command::new(shell)
            .arg("-c")
            .arg(format!("printf %s {quoted}"))
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    const AWKWARD: &[&str] = &[
        "",
        "plain-value_1.2/x:y@z",
        "it's",
        "a b",
        "$(id) `id` ${HOME} $HOME",
        "back\\slash \\' end\\",
        "new\nline\ttab",
        "'\"'\"'",
        "*?[a]~!#;&|<>",
    ];

    #[test]
    fn sh_words_come_back_unchanged() {
        for value in AWKWARD {
            assert_eq!(
                through("sh", &sh(value)).as_deref(),
                Some(*value),
                "{value:?}"
            );
        }
    }

    #[test]
    fn fish_words_come_back_unchanged_when_fish_is_here() {
        // fish is not a test dependency; the rules are checked by hand below when it is absent.
        if through("fish", "x").is_none() {
            assert_eq!(fish("it's \\"), r"'it\'s \\'");
            assert_eq!(fish("plain"), "plain");
            return;
        }
        for value in AWKWARD {
            assert_eq!(
                through("fish", &fish(value)).as_deref(),
                Some(*value),
                "{value:?}"
            );
        }
    }

    #[test]
    fn hcl_strings_escape_interpolation() {
        assert_eq!(hcl("a\"b"), r#""a\"b""#);
        assert_eq!(hcl("${var.x} %{if}"), r#""$${var.x} %%{if}""#);
        assert_eq!(hcl("line\n"), r#""line\n""#);
    }
}
