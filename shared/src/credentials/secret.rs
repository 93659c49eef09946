//! Documents kept in AWS Secrets Manager: the tokens secret (tokens and the
//! gateway's API keys) and the token status document the liveness function
//! writes.
//!
//! Reads follow what AWS's caching client does: within a TTL the held value
//! is served; after it, `DescribeSecret` checks the version and
//! `GetSecretValue` runs only when the secret changed, so an execution
//! environment makes at most one `GetSecretValue` per secret per TTL unless
//! the secret changes. `CachedDocument` also keeps the parsed value, serves the
//! last good value when a refresh fails (logged), runs one refresh at a time,
//! and remembers for a TTL that a secret does not exist.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::renewal::{CodeLogin, Lineage};
use super::secrets_manager::{AwsError, SecretsManager};

/// `{"tokens": [...], "api_keys": [...], "minimax_code_accounts": [...]}`,
/// cleaned as it is read: each list trimmed, without empty entries or
/// duplicates. A single `"api_key": "..."` is one more key: it is the one
/// key a secret the stack creates holds (CloudFormation's
/// `GenerateSecretString` can add only one string field). MiniMax Code
/// accounts are what `gateway login` added (`renewal.rs`);
/// `minimax_api_keys` are keys of MiniMax's paid platform (`minimax-api`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "RawTokensDocument")]
pub struct TokensDocument {
    pub tokens: Vec<String>,
    pub api_keys: Vec<String>,
    pub code_accounts: Vec<CodeLogin>,
    pub minimax_api_keys: Vec<String>,
    /// Keys for the operator's view (`/admin`), never a caller's.
    pub admin_api_keys: Vec<String>,
}

#[derive(Deserialize)]
struct RawTokensDocument {
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default)]
    api_keys: Vec<String>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    minimax_code_accounts: Vec<CodeLogin>,
    #[serde(default)]
    minimax_api_keys: Vec<String>,
    #[serde(default)]
    admin_api_keys: Vec<String>,
}

impl From<RawTokensDocument> for TokensDocument {
    fn from(raw: RawTokensDocument) -> Self {
        let clean = |list: Vec<String>| {
            let mut seen = std::collections::HashSet::new();
            list.iter()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty() && seen.insert(t.clone()))
                .collect()
        };
        let mut api_keys = raw.api_keys;
        api_keys.extend(raw.api_key);
        let mut seen = std::collections::HashSet::new();
        let code_accounts = raw
            .minimax_code_accounts
            .into_iter()
            .filter(|a| !a.refresh_token.trim().is_empty() && seen.insert(a.account()))
            .collect();
        Self {
            tokens: clean(raw.tokens),
            api_keys: clean(api_keys),
            code_accounts,
            minimax_api_keys: clean(raw.minimax_api_keys),
            admin_api_keys: clean(raw.admin_api_keys),
        }
    }
}

/// What the liveness check found for one token (named by fingerprint only).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct TokenStatus {
    pub live: bool,
    /// RFC 3339 time of the check.
    pub checked_at: String,
    pub reason: String,
}

/// The status document: fingerprint → status; and MiniMax Code's lineages,
/// by account (`renewal.rs`), which only the one writer changes.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct StatusDocument {
    #[serde(default)]
    pub tokens: HashMap<String, TokenStatus>,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub accounts: HashMap<String, Lineage>,
    #[serde(default)]
    pub checked_at: String,
    #[serde(default)]
    pub live: usize,
    #[serde(default)]
    pub dead: usize,
}

impl StatusDocument {
    pub fn is_dead(&self, fingerprint: &str) -> bool {
        self.tokens.get(fingerprint).is_some_and(|s| !s.live)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret {0} does not exist")]
    NotFound(String),
    #[error("the secret {id} could not be read: {message}")]
    Unreadable { id: String, message: String },
    #[error("the secret {id} is not the expected JSON: {message}")]
    Malformed { id: String, message: String },
}

struct Held<T> {
    version: Option<String>,
    value: Arc<T>,
    /// When the version was last confirmed with Secrets Manager.
    checked: Instant,
}

pub struct CachedDocument<T> {
    client: SecretsManager,
    id: String,
    ttl: Duration,
    held: Mutex<(Option<Held<T>>, Option<Instant>)>,
    /// The last good value, for requests that arrive while a refresh runs:
    /// they are served at once instead of queueing behind it.
    last_good: std::sync::RwLock<Option<Arc<T>>>,
}

impl<T: DeserializeOwned + Send + Sync + 'static> CachedDocument<T> {
    pub fn new(client: SecretsManager, id: impl Into<String>, ttl: Duration) -> Self {
        Self {
            client,
            id: id.into(),
            ttl,
            held: Mutex::new((None, None)),
            last_good: std::sync::RwLock::new(None),
        }
    }

    fn remember(&self, value: Option<Arc<T>>) {
        *self.last_good.write().unwrap_or_else(|e| e.into_inner()) = value;
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Let the next `get` check with Secrets Manager whatever the TTL (it
    /// still reads the value only if its version changed).
    pub async fn expire(&self) {
        let mut guard = self.held.lock().await;
        let (held, missing_until) = &mut *guard;
        if let Some(h) = held.as_mut() {
            h.checked = Instant::now().checked_sub(self.ttl).unwrap_or(h.checked);
        }
        *missing_until = None;
    }

    /// The current document; `Err(NotFound)` when the secret does not exist.
    pub async fn get(&self) -> Result<Arc<T>, SecretError> {
        let mut guard = match self.held.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                // One refresh at a time; the others take the last good value.
                let last = self
                    .last_good
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if let Some(value) = last {
                    return Ok(value);
                }
                self.held.lock().await
            }
        };
        let (held, missing_until) = &mut *guard;
        if missing_until.is_some_and(|t| Instant::now() < t) {
            return Err(SecretError::NotFound(self.id.clone()));
        }
        if let Some(h) = held.as_ref().filter(|h| h.checked.elapsed() < self.ttl) {
            return Ok(h.value.clone());
        }
        let fetched = self.fetch(held.as_mut()).await;
        let output = match fetched {
            Ok(Fetched::Unchanged(value)) => return Ok(value),
            Ok(Fetched::New(output)) => output,
            Err(e) => {
                let message = e.to_string();
                if e.is_not_found() {
                    *missing_until = Some(Instant::now() + self.ttl);
                    *held = None;
                    self.remember(None);
                    return Err(SecretError::NotFound(self.id.clone()));
                }
                return match held {
                    Some(h) => {
                        // Tried again after a TTL, not by every request.
                        tracing::warn!(secret = %self.id, error = %message, "secret refresh failed; serving the cached value");
                        h.checked = Instant::now();
                        Ok(h.value.clone())
                    }
                    None => Err(SecretError::Unreadable {
                        id: self.id.clone(),
                        message,
                    }),
                };
            }
        };
        *missing_until = None;
        let text = output.secret_string.unwrap_or_default();
        match serde_json::from_str::<T>(&text) {
            Ok(value) => {
                let value = Arc::new(value);
                *held = Some(Held {
                    version: output.version_id,
                    value: value.clone(),
                    checked: Instant::now(),
                });
                self.remember(Some(value.clone()));
                Ok(value)
            }
            Err(e) => {
                // Never echo the text: it holds secrets.
                let error = SecretError::Malformed {
                    id: self.id.clone(),
                    message: format!("line {}, column {}", e.line(), e.column()),
                };
                match held {
                    Some(h) => {
                        tracing::warn!(secret = %self.id, error = %error, "new secret version is malformed; serving the cached value");
                        h.checked = Instant::now();
                        Ok(h.value.clone())
                    }
                    None => Err(error),
                }
            }
        }
    }
}

enum Fetched<T> {
    /// The held version is still the current one (now marked as checked).
    Unchanged(Arc<T>),
    New(super::secrets_manager::SecretValue),
}

impl<T> CachedDocument<T> {
    /// With a value held, `DescribeSecret` first: the value is read again
    /// only when its version changed.
    async fn fetch(&self, held: Option<&mut Held<T>>) -> Result<Fetched<T>, AwsError> {
        if let Some(h) = held.filter(|h| h.version.is_some()) {
            if self.client.current_version(&self.id).await? == h.version {
                h.checked = Instant::now();
                return Ok(Fetched::Unchanged(h.value.clone()));
            }
        }
        self.client
            .get_secret_value(&self.id)
            .await
            .map(Fetched::New)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake of the Secrets Manager JSON API, counting calls.
    mod fake {
        use std::sync::{Arc, Mutex};

        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse;
        use serde_json::{json, Value};

        #[derive(Default)]
        pub struct Secret {
            pub value: String,
            pub version: String,
            pub denied: bool,
            pub gets: usize,
            pub describes: usize,
            /// How long each answer takes, and how many are being answered.
            pub delay: std::time::Duration,
            pub in_flight: usize,
            /// The next this many calls are throttled.
            pub throttle: usize,
        }

        pub type Shared = Arc<Mutex<Secret>>;

        async fn answer(
            axum::extract::State(st): axum::extract::State<Shared>,
            headers: HeaderMap,
            body: String,
        ) -> axum::response::Response {
            let target = headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let id = serde_json::from_str::<Value>(&body).unwrap_or_default()["SecretId"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let delay = {
                let mut s = st.lock().unwrap();
                s.in_flight += 1;
                s.delay
            };
            tokio::time::sleep(delay).await;
            let mut s = st.lock().unwrap();
            s.in_flight -= 1;
            let reply = |status: StatusCode, body: Value| {
                (
                    status,
                    [("content-type", "application/x-amz-json-1.1")],
                    body.to_string(),
                )
                    .into_response()
            };
            if s.throttle > 0 {
                s.throttle -= 1;
                return reply(
                    StatusCode::BAD_REQUEST,
                    json!({"__type": "ThrottlingException", "message": "Rate exceeded"}),
                );
            }
            if id == "missing" {
                return reply(
                    StatusCode::BAD_REQUEST,
                    json!({"__type": "ResourceNotFoundException", "message": "no such secret"}),
                );
            }
            if s.denied {
                return reply(
                    StatusCode::BAD_REQUEST,
                    json!({"__type": "AccessDeniedException", "message": "denied"}),
                );
            }
            let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tokens-AbCdEf";
            match target {
                "secretsmanager.GetSecretValue" => {
                    s.gets += 1;
                    reply(
                        StatusCode::OK,
                        json!({"ARN": arn, "Name": "tokens", "VersionId": s.version,
                        "SecretString": s.value, "VersionStages": ["AWSCURRENT"], "CreatedDate": 1.7e9}),
                    )
                }
                "secretsmanager.DescribeSecret" => {
                    s.describes += 1;
                    reply(
                        StatusCode::OK,
                        json!({"ARN": arn, "Name": "tokens",
                        "VersionIdsToStages": {s.version.clone(): ["AWSCURRENT"]}}),
                    )
                }
                other => reply(
                    StatusCode::BAD_REQUEST,
                    json!({"__type": "InvalidRequestException", "message": other}),
                ),
            }
        }

        pub async fn start(secret: Secret) -> (String, Shared) {
            let st: Shared = Arc::new(Mutex::new(secret));
            let app = axum::Router::new()
                .route("/", axum::routing::post(answer))
                .with_state(st.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await });
            (url, st)
        }
    }

    fn client(url: &str) -> SecretsManager {
        let url = url.to_string();
        let get = move |k: &str| match k {
            "AWS_REGION" => Some("us-east-1".to_string()),
            "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("testing".to_string()),
            "AWS_ENDPOINT_URL" => Some(url.clone()),
            _ => None,
        };
        SecretsManager::from_lookup(&crate::settings::Lookup::new(&get), "unit-test")
    }

    #[tokio::test]
    async fn cached_document_reads_once_per_ttl_follows_versions_and_serves_stale_on_failure() {
        let (url, fake) = fake::start(fake::Secret {
            value: r#"{"tokens":["t1"],"api_keys":["k"]}"#.into(),
            version: "v1".into(),
            ..Default::default()
        })
        .await;
        let ttl = Duration::from_millis(300);
        let doc: CachedDocument<TokensDocument> = CachedDocument::new(client(&url), "tokens", ttl);
        let counts = || {
            let s = fake.lock().unwrap();
            (s.gets, s.describes)
        };
        assert_eq!(doc.get().await.unwrap().tokens, vec!["t1"]);
        for _ in 0..5 {
            doc.get().await.unwrap();
        }
        assert_eq!(counts(), (1, 0), "one GetSecretValue within the TTL");

        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        doc.get().await.unwrap();
        assert_eq!(
            counts(),
            (1, 1),
            "after the TTL, an unchanged version is only described"
        );

        {
            let mut s = fake.lock().unwrap();
            s.value = r#"{"tokens":["t2"],"api_keys":["k"]}"#.into();
            s.version = "v2".into();
        }
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        assert_eq!(
            doc.get().await.unwrap().tokens,
            vec!["t2"],
            "a new version is read"
        );
        assert_eq!(counts().0, 2);

        fake.lock().unwrap().denied = true;
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        assert_eq!(
            doc.get().await.unwrap().tokens,
            vec!["t2"],
            "a failed refresh serves the last good value"
        );

        fake.lock().unwrap().denied = false;
        fake.lock().unwrap().value = "not json".into();
        fake.lock().unwrap().version = "v3".into();
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        assert_eq!(
            doc.get().await.unwrap().tokens,
            vec!["t2"],
            "a malformed new version keeps the last good value"
        );
    }

    #[tokio::test]
    async fn requests_during_a_slow_refresh_get_the_last_good_value_at_once() {
        let (url, fake) = fake::start(fake::Secret {
            value: r#"{"tokens":["t1"],"api_keys":["k"]}"#.into(),
            version: "v1".into(),
            ..Default::default()
        })
        .await;
        let ttl = Duration::from_millis(100);
        let doc: Arc<CachedDocument<TokensDocument>> =
            Arc::new(CachedDocument::new(client(&url), "tokens", ttl));
        doc.get().await.unwrap();
        fake.lock().unwrap().delay = Duration::from_secs(2);
        tokio::time::sleep(ttl * 2).await;
        let refresh = tokio::spawn({
            let doc = doc.clone();
            async move { doc.get().await.map(|d| d.tokens.clone()) }
        });
        while fake.lock().unwrap().in_flight == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(doc.get().await.unwrap().tokens, vec!["t1"]);
        assert_eq!(
            fake.lock().unwrap().in_flight,
            1,
            "served while the refresh is still waiting on Secrets Manager"
        );
        assert_eq!(refresh.await.unwrap().unwrap(), vec!["t1"]);
    }

    #[tokio::test]
    async fn missing_and_unreadable_secrets() {
        let (url, fake) = fake::start(fake::Secret {
            denied: true,
            ..Default::default()
        })
        .await;
        let ttl = Duration::from_secs(60);
        let cache = client(&url);
        let missing: CachedDocument<StatusDocument> =
            CachedDocument::new(cache.clone(), "missing", ttl);
        assert!(matches!(missing.get().await, Err(SecretError::NotFound(_))));
        assert!(
            matches!(missing.get().await, Err(SecretError::NotFound(_))),
            "remembered for the TTL"
        );
        let denied: CachedDocument<TokensDocument> = CachedDocument::new(cache, "tokens", ttl);
        let e = denied.get().await.unwrap_err();
        assert!(matches!(e, SecretError::Unreadable { .. }), "{e}");
        assert_eq!(fake.lock().unwrap().gets, 0);
    }

    #[tokio::test]
    async fn throttled_calls_are_retried_twice_then_reported() {
        let (url, fake) = fake::start(fake::Secret {
            value: r#"{"tokens":["t1"]}"#.into(),
            version: "v1".into(),
            throttle: 2,
            ..Default::default()
        })
        .await;
        let ttl = Duration::from_secs(60);
        let doc: CachedDocument<TokensDocument> = CachedDocument::new(client(&url), "tokens", ttl);
        assert_eq!(doc.get().await.unwrap().tokens, vec!["t1"], "third attempt");
        assert_eq!(fake.lock().unwrap().gets, 1);

        fake.lock().unwrap().throttle = 3;
        let other: CachedDocument<TokensDocument> =
            CachedDocument::new(client(&url), "tokens", ttl);
        let e = other.get().await.unwrap_err();
        assert!(
            matches!(&e, SecretError::Unreadable { message, .. } if message.contains("ThrottlingException")),
            "{e}"
        );
        assert_eq!(fake.lock().unwrap().throttle, 0, "three attempts in all");
        assert_eq!(fake.lock().unwrap().gets, 1);
    }

    #[test]
    fn tokens_document_is_cleaned() {
        let d: TokensDocument =
            serde_json::from_str(r#"{"tokens":[" a ","","a","b"],"api_keys":["sk-1"," sk-1"]}"#)
                .unwrap();
        assert_eq!(d.tokens, vec!["a", "b"]);
        assert_eq!(d.api_keys, vec!["sk-1"]);
        let empty: TokensDocument = serde_json::from_str("{}").unwrap();
        assert!(empty.tokens.is_empty() && empty.api_keys.is_empty());
        // The shape of a secret the stack creates: one generated `api_key`.
        let created: TokensDocument =
            serde_json::from_str(r#"{"tokens":[],"api_key":"Gen3rated"}"#).unwrap();
        assert_eq!(created.api_keys, vec!["Gen3rated"]);
        let both: TokensDocument =
            serde_json::from_str(r#"{"api_keys":["sk-1"],"api_key":"sk-1"}"#).unwrap();
        assert_eq!(both.api_keys, vec!["sk-1"]);
    }

    #[test]
    fn status_document_marks_dead_fingerprints() {
        let s: StatusDocument = serde_json::from_str(
            r#"{"tokens":{"aaaa0000":{"live":false,"checked_at":"t","reason":"rejected"},"bbbb1111":{"live":true,"checked_at":"t","reason":"ok"}}}"#,
        )
        .unwrap();
        assert!(s.is_dead("aaaa0000"));
        assert!(!s.is_dead("bbbb1111"));
        assert!(!s.is_dead("unknown0"));
    }
}
