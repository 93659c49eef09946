//! The caller's MiniMax Agent token: `JWT`, or `REALUSERID+JWT`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use crate::redact::fingerprint;
use crate::upstream::envelope::id_of;
use crate::upstream::UpstreamError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentCredential {
    pub user_id: String,
    pub jwt: String,
}

impl AgentCredential {
    /// The user id is explicit (`REALUSERID+JWT`) or the JWT payload's `user.id`
    /// (no signature check is possible or needed). A token without one is the
    /// caller's mistake, reported without calling upstream.
    pub fn parse(token: &str) -> Result<Self, UpstreamError> {
        let invalid = |why: &str| {
            UpstreamError::InvalidToken {
            fingerprint: fingerprint(token),
            message: format!(
                "{why}. A MiniMax Agent token is the web app's JWT, or `REALUSERID+JWT` when the JWT does not carry `user.id`"
            ),
        }
        };
        if let Some((user_id, jwt)) = token.split_once('+') {
            let user_id = user_id.trim();
            if user_id.is_empty()
                || !user_id.chars().all(|c| c.is_ascii_alphanumeric())
                || jwt.trim().is_empty()
            {
                return Err(invalid("the part before `+` is not a user id"));
            }
            return Ok(Self {
                user_id: user_id.to_string(),
                jwt: jwt.trim().to_string(),
            });
        }
        let payload = token
            .split('.')
            .nth(1)
            .ok_or_else(|| invalid("the token is not a JWT"))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| invalid("the JWT payload is not base64url"))?;
        let claims: Value =
            serde_json::from_slice(&bytes).map_err(|_| invalid("the JWT payload is not JSON"))?;
        let user_id = id_of(claims.get("user").and_then(|u| u.get("id")))
            .ok_or_else(|| invalid("the JWT has no `user.id`"))?;
        Ok(Self {
            user_id,
            jwt: token.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        format!(
            "eyJhbGciOiJIUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn user_id_from_the_payload() {
        let vectors: Value =
            serde_json::from_str(include_str!("../../../testdata/agent-vectors.json")).unwrap();
        let c = AgentCredential::parse(vectors["jwt"].as_str().unwrap()).unwrap();
        assert_eq!(c.user_id, vectors["user_id"].as_str().unwrap());
        let c = AgentCredential::parse(&jwt(r#"{"user":{"id":42}}"#)).unwrap();
        assert_eq!(c.user_id, "42");
    }

    #[test]
    fn explicit_user_id() {
        let token = jwt(r#"{"sub":"x"}"#);
        let c = AgentCredential::parse(&format!("3000001+{token}")).unwrap();
        assert_eq!(
            c,
            AgentCredential {
                user_id: "3000001".into(),
                jwt: token
            }
        );
    }

    #[test]
    fn tokens_without_a_user_id_are_refused_without_echoing_them() {
        for t in [
            "not-a-jwt",
            "a.!!!.c",
            &jwt(r#"{"sub":"x"}"#),
            &jwt("[1]"),
            "+abc",
            "12 3+x.y.z",
        ] {
            let e = AgentCredential::parse(t).unwrap_err();
            assert!(matches!(e, UpstreamError::InvalidToken { .. }), "{t}");
            assert!(!e.to_string().contains(t), "never echoes the token");
        }
    }
}
