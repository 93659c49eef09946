//! The account service (protocol sections 2 and 3): the device flow with
//! PKCE that `gateway login` runs, and the refresh grant the one writer
//! spends. Every call is a form POST answering JSON. Tokens are returned,
//! never logged: callers name them by fingerprint.

use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::config::CodeConfig;

/// A PKCE pair (S256): one fresh verifier per login, in memory only.
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let verifier = b64.encode(bytes);
        let challenge = b64.encode(Sha256::digest(verifier.as_bytes()));
        Self {
            verifier,
            challenge,
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Self::new()
    }
}

/// What a token answer (device or refresh grant) gives.
#[derive(Clone, PartialEq, Eq)]
pub struct Grant {
    pub access_token: String,
    /// `None`: the answer kept the old refresh token (never captured, but
    /// every client handles it).
    pub refresh_token: Option<String>,
    pub expires_in: u64,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// Why a refresh failed, by what it means for the account (section 6).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// `invalid_grant`: the refresh token is spent or revoked.
    #[error("the refresh token was refused (invalid_grant): {0}")]
    InvalidGrant(String),
    /// No answer in time: whether it was spent is unknown (rule 5).
    #[error("the refresh timed out: {0}")]
    Timeout(String),
    /// A 401, a 5xx, another 400, a transport error: the grant stays as it
    /// was, and the refresh is tried again later.
    #[error("the refresh failed: {0}")]
    Retryable(String),
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

impl TokenAnswer {
    /// The grant, if this is one (section 3.1's checks).
    fn grant(&self) -> Result<Option<Grant>, String> {
        let Some(access) = self.access_token.clone().filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        if self
            .token_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err("the token answer is not a bearer token".into());
        }
        if self
            .scope
            .as_deref()
            .is_some_and(|s| !s.split_whitespace().any(|s| s == "agent.default"))
        {
            return Err("the token answer lacks the agent.default scope".into());
        }
        Ok(Some(Grant {
            access_token: access,
            refresh_token: self.refresh_token.clone().filter(|t| !t.is_empty()),
            expires_in: self.expires_in.unwrap_or(3600).max(1),
        }))
    }
}

/// Step 1's answer.
#[derive(Clone, Debug)]
pub struct DeviceStart {
    /// What the poll presents: the device code, or (legacy) the user code.
    code: String,
    legacy: bool,
    pub user_code: String,
    /// Where the human approves, with the code in it when the service says.
    pub verification: String,
    pub expires_in: Duration,
    pub interval: Duration,
}

/// One poll's outcome (section 2.4, both shapes).
#[derive(Debug)]
pub enum Poll {
    Pending,
    SlowDown,
    Expired,
    Denied,
    Approved(Grant),
    Failed(String),
}

#[derive(Deserialize)]
struct DeviceAnswer {
    #[serde(default)]
    device_code: Option<String>,
    #[serde(default)]
    user_code: Option<String>,
    #[serde(default)]
    verification_uri: Option<String>,
    #[serde(default)]
    verification_url: Option<String>,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    expired_in: Option<u64>,
    #[serde(default)]
    interval: Option<u64>,
}

/// The account service of one region.
pub struct AccountService {
    http: reqwest::Client,
    timeout: Duration,
    account_url: String,
    client_id: String,
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k, v);
    }
    out.finish()
}

impl AccountService {
    pub fn new(config: &CodeConfig, timeout: Duration) -> Result<Self, String> {
        config.check_hosts()?;
        let http = crate::upstream::browser::http_client().map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            timeout,
            account_url: config.account_url.clone(),
            client_id: config.client_id.clone(),
        })
    }

    async fn post(&self, path: &str, body: String) -> Result<(u16, String), reqwest::Error> {
        let response = self
            .http
            .post(format!("{}{path}", self.account_url))
            .timeout(self.timeout)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.unwrap_or_default()))
    }

    /// Step 1: a device code for `pkce`'s challenge.
    pub async fn start(&self, pkce: &Pkce) -> Result<DeviceStart, String> {
        let body = form(&[
            ("client_id", &self.client_id),
            ("scope", "agent.default"),
            ("audience", "agent-backend"),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ]);
        let (status, text) = self.post("/oauth2/device/code", body).await.map_err(|e| {
            format!(
                "the account service could not be reached: {}",
                e.without_url()
            )
        })?;
        if status != 200 {
            return Err(format!(
                "the account service refused the login (HTTP {status}: {})",
                oauth_error(&text)
            ));
        }
        let a: DeviceAnswer = serde_json::from_str(&text)
            .map_err(|e| format!("the device code answer is not the expected JSON ({e})"))?;
        let user_code = a.user_code.unwrap_or_default();
        let uri = a
            .verification_uri
            .or(a.verification_url)
            .unwrap_or_default();
        let verification = a.verification_uri_complete.unwrap_or(uri);
        if user_code.is_empty() || verification.is_empty() {
            return Err("the device code answer has no user code or verification URL".into());
        }
        let (code, legacy, expires_in, interval) = match a.device_code {
            Some(code) => (
                code,
                false,
                Duration::from_secs(a.expires_in.unwrap_or(300)),
                Duration::from_secs(a.interval.unwrap_or(5).max(1)),
            ),
            // Section 2.5: no device code, `expired_in` and `interval` in ms.
            None => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let expires = match a.expired_in.unwrap_or(300) {
                    ms if ms > 10_000_000_000 => Duration::from_millis(ms).saturating_sub(now),
                    s => Duration::from_secs(s),
                };
                (
                    user_code.clone(),
                    true,
                    expires,
                    Duration::from_millis(a.interval.unwrap_or(5000).max(1000)),
                )
            }
        };
        Ok(DeviceStart {
            code,
            legacy,
            user_code,
            verification,
            expires_in,
            interval,
        })
    }

    /// Step 3: one poll.
    pub async fn poll(&self, start: &DeviceStart, pkce: &Pkce) -> Poll {
        let key = if start.legacy {
            "user_code"
        } else {
            "device_code"
        };
        let body = form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            (key, &start.code),
            ("client_id", &self.client_id),
            ("code_verifier", &pkce.verifier),
        ]);
        let (status, text) = match self.post("/oauth2/token", body).await {
            Ok(answer) => answer,
            // A transport failure: poll again at the next interval.
            Err(_) => return Poll::Pending,
        };
        let a: TokenAnswer = match serde_json::from_str(&text) {
            Ok(a) => a,
            Err(_) if status >= 500 => return Poll::Pending,
            Err(e) => return Poll::Failed(format!("the token answer is not JSON ({e})")),
        };
        let word = a
            .error
            .clone()
            .or_else(|| a.status.clone())
            .unwrap_or_default();
        match (status, word.as_str()) {
            (_, "authorization_pending" | "pending") => Poll::Pending,
            (_, "slow_down") => Poll::SlowDown,
            (_, "expired_token" | "expired") => Poll::Expired,
            (_, "access_denied" | "denied") => Poll::Denied,
            (200, _) => match a.grant() {
                Ok(Some(grant)) => Poll::Approved(grant),
                // A 200 without a token and an unlisted status: pending.
                Ok(None) => Poll::Pending,
                Err(e) => Poll::Failed(e),
            },
            (s, _) if s >= 500 => Poll::Pending,
            _ => Poll::Failed(format!("HTTP {status}: {}", oauth_error(&text))),
        }
    }

    /// The refresh grant: exactly the three fields the official client sends.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Grant, RefreshError> {
        let body = form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", &self.client_id),
        ]);
        let (status, text) = match self.post("/oauth2/token", body).await {
            Ok(answer) => answer,
            Err(e) if e.is_timeout() => {
                return Err(RefreshError::Timeout(e.without_url().to_string()))
            }
            Err(e) => return Err(RefreshError::Retryable(e.without_url().to_string())),
        };
        if status == 504 || status == 408 {
            return Err(RefreshError::Timeout(format!("HTTP {status}")));
        }
        let answer: Option<TokenAnswer> = serde_json::from_str(&text).ok();
        if status == 200 {
            return match answer.as_ref().map(TokenAnswer::grant) {
                Some(Ok(Some(grant))) => Ok(grant),
                Some(Err(e)) => Err(RefreshError::Retryable(e)),
                _ => Err(RefreshError::Retryable(
                    "the refresh answered 200 without an access token".into(),
                )),
            };
        }
        let error = answer
            .as_ref()
            .and_then(|a| a.error.clone())
            .unwrap_or_default();
        if status == 400 && error == "invalid_grant" {
            return Err(RefreshError::InvalidGrant(oauth_error(&text)));
        }
        Err(RefreshError::Retryable(format!(
            "HTTP {status}: {}",
            oauth_error(&text)
        )))
    }
}

/// `error` and `error_description` of an OAuth answer (never the raw body).
fn oauth_error(text: &str) -> String {
    #[derive(Deserialize, Default)]
    struct E {
        #[serde(default)]
        error: String,
        #[serde(default)]
        error_description: String,
    }
    let e: E = serde_json::from_str(text).unwrap_or_default();
    match (e.error.is_empty(), e.error_description.is_empty()) {
        (true, _) => "no error code".into(),
        (false, true) => e.error,
        (false, false) => format!(
            "{}: {}",
            e.error,
            crate::text::clip(&e.error_description, 200)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_follows_the_protocols_worked_example() {
        let bytes: Vec<u8> = (0u8..32).collect();
        let p = Pkce::from_bytes(&bytes);
        assert_eq!(p.verifier, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
        assert_eq!(p.challenge, "6oZqdX5MOLq_qBJ8vppAnT4fk6AP8UiP9zX8-Rev_9A");
        let fresh = Pkce::new();
        assert_eq!(fresh.verifier.len(), 43);
        assert_ne!(fresh.verifier, Pkce::new().verifier);
    }

    #[test]
    fn token_answers_are_checked() {
        let parse = |s: &str| serde_json::from_str::<TokenAnswer>(s).unwrap().grant();
        let g = parse(r#"{"access_token":"mmoat_a","refresh_token":"mmort_b","token_type":"bearer","scope":"agent.default"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(g.expires_in, 3600, "the default lifetime");
        assert_eq!(g.refresh_token.as_deref(), Some("mmort_b"));
        assert!(parse(r#"{"access_token":"a","scope":"other"}"#).is_err());
        assert!(parse(r#"{"access_token":"a","token_type":"mac"}"#).is_err());
        assert_eq!(parse(r#"{"status":"pending"}"#).unwrap(), None);
        assert!(!format!("{g:?}").contains("mmoat_a"), "no token in Debug");
    }

    #[test]
    fn oauth_errors_keep_only_code_and_description() {
        assert_eq!(
            oauth_error(r#"{"error":"invalid_grant","error_description":"spent"}"#),
            "invalid_grant: spent"
        );
        assert_eq!(oauth_error("<html>"), "no error code");
    }
}
