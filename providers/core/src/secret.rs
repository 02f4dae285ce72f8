//! Secrets are types. [`SecretString`] (from the `secrecy` crate) zeroizes its memory on drop and
//! prints as redacted under `Debug`; it has no `Display`, so a secret cannot reach a log line or
//! an error message by accident — reading it takes an explicit `expose_secret()`.

pub use secrecy::{ExposeSecret, SecretString};

/// What keyfed prints wherever a secret would otherwise appear.
pub const REDACTED: &str = "** redacted **";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let s = SecretString::from("hunter2-very-secret");
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(s.expose_secret(), "hunter2-very-secret");
    }
}
