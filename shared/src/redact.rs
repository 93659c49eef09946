//! Naming secrets without revealing them. Imports nothing of ours, so every
//! layer (the adapters included) may use it.

use sha2::{Digest, Sha256};

/// A short, stable, non-reversible name for a secret: the first 8 hex of its SHA-256.
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_short_and_does_not_contain_the_secret() {
        let f = fingerprint("secret-token-value");
        assert_eq!(f.len(), 8);
        assert!(!f.contains("secret"));
        assert_eq!(f, fingerprint("secret-token-value"));
        assert_ne!(f, fingerprint("other"));
    }
}
