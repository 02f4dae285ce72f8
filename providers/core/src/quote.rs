//! Quoting values for the text keyfed prints for people to paste or shells to evaluate
//! (`keyfed trust`, `keyfed env`, the commands in error hints): POSIX sh, fish, HCL (Terraform)
//! strings and labels, and gcloud's list flags. One place, so every printed command quotes the
//! same way.

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

/// `value` as an HCL quoted string: `\"`, `\\`, `\n`, `\r`, `\t` and `\uNNNN` for every other
/// control character (HCL has none of JSON's `\b` and `\f`), and `${` and `%{` doubled so
/// Terraform takes them literally instead of as interpolation or a directive.
pub fn hcl(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `text` as a Terraform block label (a resource's or variable's name): ASCII letters, digits,
/// `_` and `-`, each other character replaced by `_`, starting with a letter or `_` (an `_` is
/// put before a leading digit or `-`).
pub fn label(text: &str) -> String {
    let mut label: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !label.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        label.insert(0, '_');
    }
    label
}

/// `values` as the value of a gcloud list flag (`--allowed-audiences=…`), which gcloud splits on
/// commas: joined by commas when that reads them back, else in gcloud's alternate-delimiter form
/// `^DELIM^<values joined by DELIM>` (`gcloud topic escaping`), DELIM a character (or a run of
/// `:`) none of the values holds. A value starting with `^` takes that form too, since gcloud
/// could read its own `^…^` as one. Not quoted for a shell: pass the result to [`sh`].
pub fn gcloud_list(values: &[&str]) -> String {
    let plain = values
        .iter()
        .all(|v| !v.contains(',') && !v.starts_with('^'));
    if plain {
        return values.join(",");
    }
    let unused = |delimiter: &str| values.iter().all(|v| !v.contains(delimiter));
    let delimiter = [":", ";", "|", "~", "!", "@", "#", "+"]
        .into_iter()
        .find(|d| unused(d))
        .map(str::to_owned)
        // Every candidate is in some value: a run of `:` longer than any in them.
        .unwrap_or_else(|| {
            let mut run = ":".to_owned();
            while !unused(&run) {
                run.push(':');
            }
            run
        });
    format!("^{delimiter}^{}", values.join(&delimiter))
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
        assert_eq!(hcl("$$ %% $x {y} $"), r#""$$ %% $x {y} $""#);
        assert_eq!(hcl("line\n"), r#""line\n""#);
        assert_eq!(hcl("é ✓"), "\"é ✓\"");
    }

    /// Issue 12: HCL has no `\b` or `\f` escape (Terraform refuses them), so every control
    /// character but `\n`, `\r` and `\t` is written `\uNNNN`.
    #[test]
    fn issue_12_hcl_control_characters_are_unicode_escapes() {
        assert_eq!(hcl("a\u{8}b\u{c}c"), r#""a\u0008b\u000cc""#);
        assert_eq!(
            hcl("\u{0}\u{1f}\u{7f}\u{85}"),
            r#""\u0000\u001f\u007f\u0085""#
        );
        assert_eq!(hcl("\t\r\n\\"), r#""\t\r\n\\""#);
    }

    /// Issue 12: one label rule for every Terraform block keyfed prints.
    #[test]
    fn issue_12_labels_are_terraform_identifiers() {
        assert_eq!(label("aws-prod"), "aws-prod");
        assert_eq!(label("host_web.01"), "host_web_01");
        assert_eq!(label("9 lives"), "_9_lives");
        assert_eq!(label("-x"), "_-x");
        assert_eq!(label("a.b/c"), "a_b_c");
        assert_eq!(label("ünï"), "_n_");
        assert_eq!(label(""), "_");
    }

    /// Issue 12: gcloud splits a list flag's value on commas, so a value holding one takes
    /// gcloud's alternate delimiter.
    #[test]
    fn issue_12_gcloud_lists_keep_a_comma_inside_a_value() {
        assert_eq!(gcloud_list(&["a", "b"]), "a,b");
        assert_eq!(
            gcloud_list(&["//iam.googleapis.com/x"]),
            "//iam.googleapis.com/x"
        );
        assert_eq!(gcloud_list(&["a,b"]), "^:^a,b");
        assert_eq!(gcloud_list(&["a,b:c", "d"]), "^;^a,b:c;d");
        assert_eq!(gcloud_list(&["^x^y"]), "^:^^x^y");
        let every = "a,:;|~!@#+ :: b";
        assert_eq!(gcloud_list(&[every]), format!("^:::^{every}"));
    }
}
