//! `Secret`: a string that never prints. Bot tokens, passwords, API tokens and webhook secrets
//! live in this type from the moment they are parsed, so `Debug`, `Display` and logs can only
//! ever show `[redacted]`.

use std::fmt;

use serde::{Deserialize, Deserializer};

#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value, for the one place that must send it. Grep for this to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Replaces every occurrence of each secret in `text` with `[redacted]`. Used on text that
/// came from outside (a provider's error body, a transport error that quotes a URL) before it
/// is stored or logged.
pub fn redact(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        // Very short values would redact ordinary words; real tokens are long.
        if s.0.len() >= 4 && out.contains(&s.0) {
            out = out.replace(&s.0, "[redacted]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("123456:ABC-DEF");
        assert_eq!(format!("{s}"), "[redacted]");
        assert!(!format!("{s:?}").contains("ABC"));
        assert_eq!(s.expose(), "123456:ABC-DEF");
    }

    #[test]
    fn redacts_inside_text() {
        let s = Secret::new("123456:ABC-DEF");
        let text = "error sending request for url (https://api.telegram.org/bot123456:ABC-DEF/sendMessage)";
        assert_eq!(
            redact(text, &[&s]),
            "error sending request for url (https://api.telegram.org/bot[redacted]/sendMessage)"
        );
    }
}
