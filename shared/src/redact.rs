//! Naming secrets without revealing them. Imports nothing of ours, so every
//! layer (the adapters included) may use it.

use sha2::{Digest, Sha256};

/// A short, stable, non-reversible name for a secret: the first 8 hex of its SHA-256.
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// A secret carried where it must not be shown: only `expose` gives it,
/// and `Debug` prints its fingerprint.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", fingerprint(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_debugs_as_its_fingerprint() {
        let s = Secret::new("mmoat_secret");
        assert_eq!(
            format!("{s:?}"),
            format!("Secret({})", fingerprint("mmoat_secret"))
        );
        assert_eq!(s.expose(), "mmoat_secret");
    }

    #[test]
    fn fingerprint_is_short_and_does_not_contain_the_secret() {
        let f = fingerprint("secret-token-value");
        assert_eq!(f.len(), 8);
        assert!(!f.contains("secret"));
        assert_eq!(f, fingerprint("secret-token-value"));
        assert_ne!(f, fingerprint("other"));
    }
}
