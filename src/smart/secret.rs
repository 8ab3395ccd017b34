//! A string that must never reach a log, an event or a panic message.

use std::fmt;

use sha2::{Digest, Sha256};

/// Holds an access token or a signed assertion. `Debug` and `Display` print
/// a short SHA-256 fingerprint, so the value can be correlated in a debugger
/// without being disclosed; only [`SecretString::expose`] gives it out.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must send or store it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// First 8 bytes of the SHA-256 of the value, hex: enough to tell two
    /// values apart, useless for recovering either.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.0.as_bytes())
    }
}

/// Hex of the first 8 bytes of SHA-256 over `bytes`.
pub fn fingerprint(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretString(sha256:{}…)", self.fingerprint())
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[redacted sha256:{}…]", self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = SecretString::new("eyJhbGciOiJFUzM4NCJ9.very-secret");
        for shown in [format!("{secret:?}"), format!("{secret}")] {
            assert!(!shown.contains("very-secret"), "{shown}");
            assert!(shown.contains(&secret.fingerprint()), "{shown}");
        }
        assert_eq!(secret.expose(), "eyJhbGciOiJFUzM4NCJ9.very-secret");
    }
}
