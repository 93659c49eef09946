//! Caller credentials: the tokens in the `Authorization` header, and the
//! fingerprints that name a token in logs and errors without revealing it.

use axum::http::{header::AUTHORIZATION, HeaderMap};
use rand::seq::SliceRandom;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// A short, stable, non-reversible name for a secret: the first 8 hex of its SHA-256.
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The tokens of `Authorization: Bearer T1,T2,...` (trimmed, empties dropped).
pub fn bearer_tokens(headers: &HeaderMap) -> Result<Vec<String>, ApiError> {
    let missing = || {
        ApiError::Unauthorized(
            "Missing Hailuo token. Send `Authorization: Bearer <token>` (several accounts: `Bearer T1,T2,T3`), \
             where <token> is the `_token` value from hailuoai.com's localStorage."
                .into(),
        )
    };
    let value = headers.get(AUTHORIZATION).ok_or_else(missing)?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("The Authorization header is not valid text.".into()))?
        .trim();
    let rest = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest,
        _ => return Err(ApiError::Unauthorized(
            "The Authorization header must use the Bearer scheme: `Authorization: Bearer <token>`."
                .into(),
        )),
    };
    let tokens: Vec<String> = rest
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    if tokens.is_empty() {
        return Err(missing());
    }
    Ok(tokens)
}

/// The order in which to try tokens: random, so load spreads over accounts.
pub fn shuffled(tokens: &[String]) -> Vec<String> {
    let mut order = tokens.to_vec();
    order.shuffle(&mut rand::rng());
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn splits_trims_and_drops_empties() {
        assert_eq!(
            bearer_tokens(&headers("Bearer a, b ,,c")).unwrap(),
            vec!["a", "b", "c"]
        );
        assert_eq!(bearer_tokens(&headers("bearer  x")).unwrap(), vec!["x"]);
    }

    #[test]
    fn missing_or_empty_is_401() {
        for h in [
            HeaderMap::new(),
            headers("Bearer"),
            headers("Bearer  , ,"),
            headers("Basic abc"),
        ] {
            let e = bearer_tokens(&h).unwrap_err();
            assert_eq!(e.status(), 401);
        }
    }

    #[test]
    fn fingerprint_is_short_and_does_not_contain_the_token() {
        let f = fingerprint("secret-token-value");
        assert_eq!(f.len(), 8);
        assert!(!f.contains("secret"));
        assert_eq!(f, fingerprint("secret-token-value"));
        assert_ne!(f, fingerprint("other"));
    }

    #[test]
    fn shuffle_keeps_every_token() {
        let t: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        let mut s = shuffled(&t);
        s.sort();
        assert_eq!(s, t);
    }
}
