//! Human durations in configuration (`"90s"`, `"5m"`, `"1h 30m"`), parsed by `humantime`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written the way people write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map(Self).map_err(|e| {
            serde::de::Error::custom(format!(
                "expected a duration such as \"90s\", \"5m\" or \"1h\", found \"{text}\" ({e})"
            ))
        })
    }
}

/// Formats a duration the way the configuration accepts it.
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        d: HumanDuration,
    }

    #[test]
    fn parses_human_forms_and_refuses_bare_numbers() {
        let t: Result<T, _> = toml::from_str("d = \"1h 30m\"");
        assert_eq!(t.map(|t| t.d.0).ok(), Some(Duration::from_secs(5400)));
        let bad: Result<T, _> = toml::from_str("d = \"soon\"");
        assert!(bad.is_err_and(|e| e.message().contains("expected a duration")));
        let number: Result<T, _> = toml::from_str("d = 90");
        assert!(number.is_err());
        assert_eq!(format(Duration::from_secs(90)), "1m 30s");
    }
}
