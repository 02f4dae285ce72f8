//! `${VAR}` expansion in file paths and URLs, e.g. `${CREDENTIALS_DIRECTORY}/keycloak-secret`
//! for systemd's `LoadCredential=`. `$$` is a literal `$`; an unset variable is an error, never
//! an empty string.

/// Expands `${NAME}` using `env`; the error says what is wrong with the text.
pub fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("unclosed \"${{\" in \"{text}\""))?;
            let name = &inner[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("\"${{{name}}}\" is not a variable name"));
            }
            let value = env(name).ok_or_else(|| {
                format!("environment variable {name} is not set (used as ${{{name}}}; write $$ for a literal $)")
            })?;
            out.push_str(&value);
            rest = &inner[end + 1..];
        } else {
            return Err(format!(
                "a lone \"$\" in \"{text}\"; write ${{NAME}} for a variable or $$ for a literal $"
            ));
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "CREDENTIALS_DIRECTORY").then(|| "/run/credentials/keyfed.service".to_owned())
    }

    #[test]
    fn expands_escapes_and_refuses() {
        assert_eq!(
            expand("${CREDENTIALS_DIRECTORY}/secret", &env).as_deref(),
            Ok("/run/credentials/keyfed.service/secret")
        );
        assert_eq!(expand("a$$b", &env).as_deref(), Ok("a$b"));
        assert_eq!(expand("plain", &env).as_deref(), Ok("plain"));
        assert!(expand("${UNSET_ONE}/x", &env).is_err_and(|e| e.contains("UNSET_ONE")));
        assert!(expand("${OPEN", &env).is_err());
        assert!(expand("$HOME", &env).is_err());
        assert!(expand("${a-b}", &env).is_err());
    }
}
