//! The AWS shared credentials file: a profile of its own, or one profile merged into an
//! existing file with every other byte — other profiles, comments, blank lines, key order —
//! left as it was.

/// A file holding just `[profile]` and its three keys.
pub fn render(profile: &str, keys: &[(&str, String)]) -> String {
    let mut out = format!("[{profile}]\n");
    for (k, v) in keys {
        out.push_str(&format!("{k} = {v}\n"));
    }
    out
}

fn section_name(line: &str) -> Option<&str> {
    let t = line.trim();
    t.strip_prefix('[')?.strip_suffix(']').map(str::trim)
}

fn key_of(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if t.starts_with('#') || t.starts_with(';') {
        return None;
    }
    t.split_once('=').map(|(k, _)| k.trim())
}

/// `existing` with `profile`'s keys set to `keys`: lines of those keys inside the profile are
/// replaced in place, missing ones are added after the profile's last key, and a missing
/// profile is appended. Nothing else changes.
pub fn merge(existing: &str, profile: &str, keys: &[(&str, String)]) -> String {
    let lines: Vec<&str> = existing.split_inclusive('\n').collect();
    let Some(start) = lines.iter().position(|l| section_name(l) == Some(profile)) else {
        let mut out = existing.to_owned();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str(&render(profile, keys));
        return out;
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| section_name(l).is_some())
        .map_or(lines.len(), |i| start + 1 + i);
    let mut out = String::with_capacity(existing.len() + 512);
    let mut written = vec![false; keys.len()];
    let mut last_key_line = start;
    let mut body: Vec<String> = Vec::new();
    for (offset, line) in lines[start + 1..end].iter().enumerate() {
        match key_of(line).and_then(|k| keys.iter().position(|(name, _)| *name == k)) {
            Some(i) if written[i] => {} // a duplicate of a key keyfed owns: dropped
            Some(i) => {
                written[i] = true;
                body.push(format!("{} = {}\n", keys[i].0, keys[i].1));
                last_key_line = start + 1 + offset;
            }
            None => {
                if key_of(line).is_some() {
                    last_key_line = start + 1 + offset;
                }
                body.push((*line).to_owned());
            }
        }
    }
    for line in &lines[..=start] {
        out.push_str(line);
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    let missing: String = keys
        .iter()
        .zip(&written)
        .filter(|(_, done)| !**done)
        .map(|((k, v), _)| format!("{k} = {v}\n"))
        .collect();
    let insert_after = last_key_line - start; // lines of body before the insertion point
    for (i, line) in body.iter().enumerate() {
        if i == insert_after {
            out.push_str(&missing);
        }
        out.push_str(line);
    }
    if insert_after >= body.len() {
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&missing);
    }
    for line in &lines[end..] {
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: &str) -> Vec<(&'static str, String)> {
        vec![
            ("aws_access_key_id", format!("AKID{n}")),
            ("aws_secret_access_key", format!("SECRET{n}")),
            ("aws_session_token", format!("TOKEN{n}")),
        ]
    }

    const EXISTING: &str = "# my credentials\n[default]\naws_access_key_id = OLD\n; note\naws_secret_access_key=OLDSECRET\nregion = eu-west-1\n\n[other]\n# keep me\naws_access_key_id = OTHER\naws_secret_access_key = OTHERSECRET\n";

    #[test]
    fn replaces_in_place_and_adds_missing_keys_after_the_last_key() {
        let merged = merge(EXISTING, "default", &keys("1"));
        assert_eq!(
            merged,
            "# my credentials\n[default]\naws_access_key_id = AKID1\n; note\naws_secret_access_key = SECRET1\nregion = eu-west-1\naws_session_token = TOKEN1\n\n[other]\n# keep me\naws_access_key_id = OTHER\naws_secret_access_key = OTHERSECRET\n"
        );
        // Merging again only changes the values.
        let again = merge(&merged, "default", &keys("2"));
        assert_eq!(
            again,
            merged
                .replace("AKID1", "AKID2")
                .replace("SECRET1", "SECRET2")
                .replace("TOKEN1", "TOKEN2")
        );
    }

    #[test]
    fn appends_a_missing_profile_and_keeps_everything_else() {
        let merged = merge(EXISTING, "keyfed", &keys("1"));
        assert!(merged.starts_with(EXISTING), "{merged}");
        assert!(merged.ends_with("\n\n[keyfed]\naws_access_key_id = AKID1\naws_secret_access_key = SECRET1\naws_session_token = TOKEN1\n"));
        assert_eq!(merge("", "p", &keys("1")), render("p", &keys("1")));
        let no_newline = merge("[a]\nx = 1", "p", &keys("1"));
        assert!(
            no_newline.starts_with("[a]\nx = 1\n\n[p]\n"),
            "{no_newline}"
        );
    }

    #[test]
    fn profile_at_the_end_without_newline() {
        let merged = merge(
            "[other]\na = 1\n[default]\nregion = x",
            "default",
            &keys("1"),
        );
        assert_eq!(
            merged,
            "[other]\na = 1\n[default]\nregion = x\naws_access_key_id = AKID1\naws_secret_access_key = SECRET1\naws_session_token = TOKEN1\n"
        );
        let empty_section = merge("[default]\n[x]\n", "default", &keys("1"));
        assert!(
            empty_section.starts_with("[default]\naws_access_key_id = AKID1\n"),
            "{empty_section}"
        );
        assert!(empty_section.ends_with("[x]\n"));
    }
}
