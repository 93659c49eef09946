//! Caller credentials and the Hailuo tokens a request may use.
//!
//! Header mode (the default): the caller's bearer is a comma-separated list of
//! Hailuo tokens. Secret mode (`TOKENS_SECRET_ID`): the bearer must be one of
//! the secret's `api_keys`, and the secret's tokens are used (minus the ones
//! known dead); `ALLOW_HEADER_TOKENS=true` also lets callers bring their own
//! tokens. Tokens and keys are only ever named by `fingerprint`.

pub mod document;

pub mod renewal;
pub mod secret;
pub mod secrets_manager;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header::AUTHORIZATION, HeaderMap};
use rand::seq::SliceRandom;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::pool::local::{Cooling, DeadTokens, Leases};
use crate::redact::fingerprint;
use document::{Document, FileDocument, Latest};
use secret::{CachedDocument, SecretError, StatusDocument, TokensDocument};

/// The longest `Authorization` (or `x-api-key`) value read: room for a few
/// dozen tokens. Anything longer is refused before it costs anything.
pub const MAX_CREDENTIAL_HEADER_BYTES: usize = 16 * 1024;
/// The longest single token or key: web session JWTs are about 1 KB.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// What the caller presented: the value of `Authorization: Bearer …`, or of
/// `x-api-key` when there is no `Authorization` header (Anthropic-style
/// clients, Cherry Studio). `None` when neither header is there.
fn presented(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let (value, from_api_key) = match (headers.get(AUTHORIZATION), headers.get("x-api-key")) {
        (Some(v), _) => (v, false),
        (None, Some(v)) => (v, true),
        (None, None) => return Ok(None),
    };
    if value.len() > MAX_CREDENTIAL_HEADER_BYTES {
        return Err(ApiError::Unauthorized(format!(
            "The credential header is malformed: it is {} bytes long, and at most {MAX_CREDENTIAL_HEADER_BYTES} are accepted.",
            value.len()
        )));
    }
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("The credential header is not valid text.".into()))?
        .trim();
    if from_api_key {
        return Ok(Some(value));
    }
    match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(rest.trim())),
        _ if value.eq_ignore_ascii_case("bearer") => Ok(Some("")),
        _ => Err(ApiError::Unauthorized(
            "The Authorization header must use the Bearer scheme: `Authorization: Bearer <token>`."
                .into(),
        )),
    }
}

/// The upstream tokens of `Authorization: Bearer T1,T2,...` (trimmed, empties
/// dropped). A value shaped like one of this gateway's API keys (it starts
/// with `key_prefix`) is never taken for a token: it would be handed to a third
/// party. It is refused as an invalid API key instead.
pub fn bearer_tokens(headers: &HeaderMap, key_prefix: &str) -> Result<Vec<String>, ApiError> {
    let missing = || {
        ApiError::Unauthorized(
            "Missing upstream token. Send `Authorization: Bearer <token>` (several accounts: `Bearer T1,T2,T3`), \
             where <token> is the web app's session token from the browser's localStorage."
                .into(),
        )
    };
    let rest = presented(headers)?.ok_or_else(missing)?;
    let tokens: Vec<String> = rest
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    if tokens.is_empty() {
        return Err(missing());
    }
    for token in &tokens {
        if !key_prefix.is_empty() && token.starts_with(key_prefix) && !is_platform_key(token) {
            return Err(ApiError::Unauthorized(format!(
                "Invalid API key (fingerprint {}). Keys starting with `{key_prefix}` are this gateway's API keys, \
                 never forwarded upstream; use a current one, or send an upstream session token.",
                fingerprint(token)
            )));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ApiError::Unauthorized(format!(
                "The token {} is malformed: it is {} bytes long, and a session token is at most {MAX_TOKEN_BYTES}.",
                fingerprint(token),
                token.len()
            )));
        }
    }
    Ok(tokens)
}

/// Whether a bearer is shaped like a key of MiniMax's paid platform
/// (`sk-api-…` pay-as-you-go, `sk-cp-…` Token Plan): in header mode it goes
/// to the `minimax-api` upstream and nowhere else.
pub fn is_platform_key(token: &str) -> bool {
    token.starts_with("sk-api-") || token.starts_with("sk-cp-")
}

/// Header mode: the caller's bearers split into web tokens and platform
/// keys; keys alone are refused where no upstream of the chain takes them
/// (the functions that speak take them on any chain: `for_speech`).
fn header_set(tokens: Vec<String>, serves_api: bool) -> Result<TokenSet, ApiError> {
    let (keys, tokens): (Vec<String>, Vec<String>) =
        tokens.into_iter().partition(|t| is_platform_key(t));
    if !keys.is_empty() && tokens.is_empty() && !serves_api {
        return Err(ApiError::Unauthorized(format!(
            "{} is a key of MiniMax's paid platform, and this deployment does not use the platform              (its UPSTREAM has no minimax-api): send the upstream's own tokens.",
            fingerprint(&keys[0])
        )));
    }
    Ok(TokenSet {
        tokens: shuffled(&tokens),
        keys: shuffled(&keys),
        from_secret: false,
    })
}

/// Whether `presented` is one of `keys`, in time independent of where (or
/// whether) they differ: digests are compared with `subtle`, and every key is
/// compared.
pub fn is_api_key(presented: &str, keys: &[String]) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    keys.iter()
        .fold(subtle::Choice::from(0), |found, key| {
            found
                | Sha256::digest(key.as_bytes())
                    .as_slice()
                    .ct_eq(presented.as_slice())
        })
        .into()
}

/// Where the tokens of a request come from.
pub enum Mode {
    Header,
    Secret(Box<SecretMode>),
}

/// Secret mode: the tokens secret, the optional status document, and whether
/// callers without a key may bring their own tokens.
pub struct SecretMode {
    pub tokens: Document<TokensDocument>,
    pub status: Option<Document<StatusDocument>>,
    pub allow_header_tokens: bool,
}

/// The tokens one request may use, in the order to try them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSet {
    /// For the web and MiniMax Code upstreams.
    pub tokens: Vec<String>,
    /// For `minimax-api`: keys of MiniMax's paid platform.
    pub keys: Vec<String>,
    /// True when they are the deployment's own (secret mode with an API key).
    pub from_secret: bool,
}

impl TokenSet {
    /// The accounts of one upstream of the chain (by its `Upstream::id`).
    pub fn of(&self, upstream: &str) -> TokenSet {
        TokenSet {
            tokens: if upstream == "minimax-api" {
                self.keys.clone()
            } else {
                self.tokens.clone()
            },
            keys: Vec::new(),
            from_secret: self.from_secret,
        }
    }
}

/// One account of the deployment, for the operator (never a token).
#[derive(Clone, Debug, Default)]
pub struct AccountInfo {
    pub fingerprint: String,
    pub upstream: String,
    pub region: Option<String>,
    /// A MiniMax Code login's account name (its fingerprinted refresh lineage).
    pub account: Option<String>,
    /// Unix seconds.
    pub access_expires_at: Option<u64>,
    /// Why its refresh token is dead.
    pub refresh_dead: Option<String>,
    pub last_error: Option<String>,
    /// The last liveness check: live, reason, when.
    pub checked: Option<(bool, String, String)>,
    /// The token the account answers with now, for the readings the view
    /// makes with it (credits, plan windows); never shown.
    pub token: crate::redact::Secret,
}

/// Who may call, and with which tokens. Built once per execution environment.
pub struct Credentials {
    mode: Mode,
    dead: DeadTokens,
    cooling: Cooling,
    leases: Arc<Leases>,
    /// What this gateway's API keys start with (`API_KEY_PREFIX`, `sk-`).
    key_prefix: String,
    /// The platform keys of `MINIMAX_API_KEY` (secret mode only).
    env_keys: Vec<String>,
    /// Whether the chain has `minimax-api` (header mode takes platform keys).
    serves_api: bool,
    /// The pool every environment of the deployment shares (`ACCOUNTS_TABLE`).
    shared: Option<Arc<crate::pool::SharedPool>>,
}

impl Credentials {
    /// Header mode with the defaults (tests).
    #[cfg(test)]
    pub fn header_mode() -> Self {
        Self::new(Mode::Header, Duration::from_secs(600), "sk-")
    }

    pub fn new(mode: Mode, dead_memory: Duration, key_prefix: &str) -> Self {
        Self {
            mode,
            dead: DeadTokens::new(dead_memory),
            cooling: Cooling::default(),
            leases: Arc::default(),
            key_prefix: key_prefix.to_string(),
            env_keys: Vec::new(),
            serves_api: false,
            shared: None,
        }
    }

    /// With the deployment's shared pool.
    pub fn with_shared_pool(mut self, pool: Arc<crate::pool::SharedPool>) -> Self {
        self.shared = Some(pool);
        self
    }

    /// The deployment's shared pool, when it has one.
    pub fn shared_pool(&self) -> Option<&Arc<crate::pool::SharedPool>> {
        self.shared.as_ref()
    }

    /// In the functions that speak: a caller's platform keys alone are
    /// taken whatever the chain (speech goes to the platform on any).
    pub fn taking_platform_keys(mut self) -> Self {
        self.serves_api = true;
        self
    }

    /// With the platform's keys: `MINIMAX_API_KEY`'s, and whether the chain
    /// serves `minimax-api` at all.
    pub fn with_platform(mut self, env_keys: Vec<String>, serves_api: bool) -> Self {
        self.env_keys = env_keys;
        self.serves_api = serves_api;
        self
    }

    /// From the environment: secret mode when `TOKENS_SECRET_ID` is set, or
    /// (the self-hosted server) `TOKENS_FILE`, whose status document is
    /// held in memory for the server's liveness timer to write; header mode
    /// otherwise. The choice is made here alone, and logged once.
    pub async fn from_env(config: &crate::Config, app_name: &str) -> Result<Self, ApiError> {
        let mode = match (&config.tokens_secret_id, &config.tokens_file) {
            (None, None) => {
                tracing::info!("header mode: callers send their tokens");
                Mode::Header
            }
            (None, Some(path)) => {
                tracing::info!(file = %path, "secret mode: tokens and API keys from a file");
                Mode::Secret(Box::new(SecretMode {
                    tokens: Document::File(FileDocument::new(path)),
                    status: Some(Document::Memory(Arc::new(Latest::new(
                        "the status of the last liveness check",
                    )))),
                    allow_header_tokens: config.allow_header_tokens,
                }))
            }
            (Some(tokens_id), file) => {
                if file.is_some() {
                    tracing::warn!("TOKENS_FILE is ignored: TOKENS_SECRET_ID is set too");
                }
                tracing::info!(secret = %tokens_id, "secret mode: tokens and API keys from Secrets Manager");
                let client = secrets_manager::SecretsManager::from_env(app_name);
                let tokens = Document::Secret(Box::new(CachedDocument::new(
                    client.clone(),
                    tokens_id.clone(),
                    config.secret_cache_ttl,
                )));
                let status = config.token_status_secret_id.as_ref().map(|id| {
                    Document::Secret(Box::new(CachedDocument::new(
                        client,
                        id.clone(),
                        config.status_cache_ttl,
                    )))
                });
                Mode::Secret(Box::new(SecretMode {
                    tokens,
                    status,
                    allow_header_tokens: config.allow_header_tokens,
                }))
            }
        };
        let serves_api = config.upstreams.iter().any(|u| u == "minimax-api");
        let env_keys = if matches!(mode, Mode::Header) {
            if !config.minimax_api_keys.is_empty() {
                tracing::error!(
                    "MINIMAX_API_KEY is not used in header mode, where every caller would spend it:                      set TOKENS_SECRET_ID (or TOKENS_FILE) with `api_keys` to let callers in by key"
                );
            }
            Vec::new()
        } else {
            config.minimax_api_keys.clone()
        };
        let mut credentials = Self::new(mode, config.dead_token_memory, &config.api_key_prefix)
            .with_platform(env_keys, serves_api);
        if let Some(table) = &config.accounts_table {
            tracing::info!(table = %table, "shared pool: accounts leased in DynamoDB");
            let store =
                crate::pool::table::AccountsTable::new(&crate::aws::Setup::Env, table, app_name)
                    .await;
            credentials = credentials.with_shared_pool(Arc::new(crate::pool::SharedPool::new(
                Arc::new(store),
                config.lease_ttl,
            )));
        }
        Ok(credentials)
    }

    /// The tokens document and the in-memory status a local liveness timer
    /// keeps (the server with `TOKENS_FILE`); `None` elsewhere.
    pub fn local_liveness(
        &self,
    ) -> Option<(&Document<TokensDocument>, &Arc<Latest<StatusDocument>>)> {
        match &self.mode {
            Mode::Secret(secret) => match &secret.status {
                Some(Document::Memory(status)) => Some((&secret.tokens, status)),
                _ => None,
            },
            Mode::Header => None,
        }
    }

    pub fn dead_tokens(&self) -> &DeadTokens {
        &self.dead
    }

    /// The accounts cooling after a throttle, an exhausted plan or credits.
    pub fn cooling(&self) -> &Cooling {
        &self.cooling
    }

    /// The accounts answering in this process right now.
    pub fn leases(&self) -> &Arc<Leases> {
        &self.leases
    }

    /// Check the caller without choosing tokens (routes that use none, such as
    /// the model list). Header mode lets everyone in.
    pub async fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match &self.mode {
            Mode::Header => Ok(()),
            Mode::Secret(_) => self.tokens_for(headers).await.map(|_| ()),
        }
    }

    /// The tokens this request may use, in a random order.
    pub async fn tokens_for(&self, headers: &HeaderMap) -> Result<TokenSet, ApiError> {
        let Mode::Secret(secret) = &self.mode else {
            return header_set(bearer_tokens(headers, &self.key_prefix)?, self.serves_api);
        };
        let SecretMode {
            tokens,
            status,
            allow_header_tokens,
        } = secret.as_ref();
        let presented = presented(headers)?.unwrap_or("");
        let document = tokens.get().await.map_err(secret_unavailable)?;
        if !presented.is_empty()
            && !document.api_keys.is_empty()
            && is_api_key(presented, &document.api_keys)
        {
            let status = match status {
                Some(s) => match s.get().await {
                    Ok(doc) => Some(doc),
                    Err(SecretError::NotFound(_)) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "token status unavailable; using every token");
                        None
                    }
                },
                None => None,
            };
            return self.usable(&document, status.as_deref());
        }
        if *allow_header_tokens {
            return header_set(bearer_tokens(headers, &self.key_prefix)?, self.serves_api);
        }
        if document.api_keys.is_empty() {
            return Err(ApiError::Unavailable(format!(
                "This deployment is misconfigured: the secret {} has no `api_keys`, so no caller can be let in. \
                 Add {{\"api_keys\": [\"sk-...\"]}} to it.",
                tokens.id()
            )));
        }
        Err(ApiError::Unauthorized(if presented.is_empty() {
            "Missing API key. Send `Authorization: Bearer <api key>` with one of this deployment's API keys.".into()
        } else {
            format!(
                "Invalid API key (fingerprint {}). Use one of this deployment's API keys.",
                fingerprint(presented)
            )
        }))
    }

    /// Let in the operator: one of the tokens document's `admin_api_keys`.
    /// A caller's key is a 403, anything else a 401; header mode has no
    /// operator (a 403 that says what to set).
    pub async fn authorize_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Mode::Secret(secret) = &self.mode else {
            return Err(ApiError::Forbidden(
                "The admin view needs secret mode: set TOKENS_SECRET_ID (or TOKENS_FILE) and put \
                 `admin_api_keys` in the tokens document."
                    .into(),
            ));
        };
        let presented = presented(headers)?.unwrap_or("");
        let document = secret.tokens.get().await.map_err(secret_unavailable)?;
        if document.admin_api_keys.is_empty() {
            return Err(ApiError::Forbidden(format!(
                "This deployment has no admin keys: add {{\"admin_api_keys\": [\"sk-admin-...\"]}} to {}.",
                secret.tokens.id()
            )));
        }
        if presented.is_empty() {
            return Err(ApiError::Unauthorized(
                "Missing admin key. Send `Authorization: Bearer <admin key>` with one of the tokens \
                 document's `admin_api_keys`."
                    .into(),
            ));
        }
        if is_api_key(presented, &document.admin_api_keys) {
            return Ok(());
        }
        if is_api_key(presented, &document.api_keys) {
            return Err(ApiError::Forbidden(
                "This is a caller's API key; the admin view takes only the tokens document's `admin_api_keys`."
                    .into(),
            ));
        }
        Err(ApiError::Unauthorized(format!(
            "Invalid admin key (fingerprint {}).",
            fingerprint(presented)
        )))
    }

    /// The deployment's accounts as the operator sees them (secret mode; an
    /// empty list in header mode, whose accounts are the callers'): by
    /// fingerprint only, with what the documents say of each.
    pub async fn accounts(&self, free_upstream: &str) -> Vec<AccountInfo> {
        let Mode::Secret(secret) = &self.mode else {
            return Vec::new();
        };
        let Ok(document) = secret.tokens.get().await else {
            return Vec::new();
        };
        let status = match &secret.status {
            Some(s) => s.get().await.ok(),
            None => None,
        };
        let checked = |fp: &str| {
            status
                .as_ref()
                .and_then(|s| s.tokens.get(fp))
                .map(|t| (t.live, t.reason.clone(), t.checked_at.clone()))
        };
        let mut out = Vec::new();
        for token in &document.tokens {
            let fp = fingerprint(token);
            out.push(AccountInfo {
                checked: checked(&fp),
                fingerprint: fp,
                upstream: free_upstream.to_string(),
                token: crate::redact::Secret::new(token.as_str()),
                ..AccountInfo::default()
            });
        }
        let none = Default::default();
        let lineages = status.as_ref().map_or(&none, |s| &s.accounts);
        for login in &document.code_accounts {
            let lineage = renewal::lineage_of(login, lineages);
            let fp = fingerprint(&lineage.access_token);
            out.push(AccountInfo {
                checked: checked(&fp),
                fingerprint: fp,
                upstream: "minimax-code".into(),
                region: Some(lineage.region.clone()).filter(|r| !r.is_empty()),
                account: Some(login.account()),
                access_expires_at: Some(lineage.expires_at),
                refresh_dead: lineage.dead.clone(),
                last_error: lineage.last_error.clone(),
                token: crate::redact::Secret::new(lineage.access_token.as_str()),
            });
        }
        for key in document.minimax_api_keys.iter().chain(&self.env_keys) {
            let fp = fingerprint(key);
            if out.iter().any(|a| a.fingerprint == fp) {
                continue;
            }
            out.push(AccountInfo {
                checked: checked(&fp),
                fingerprint: fp,
                upstream: "minimax-api".into(),
                token: crate::redact::Secret::new(key.as_str()),
                ..AccountInfo::default()
            });
        }
        out
    }

    /// After the upstream rejected tokens of `set`: the deployment's tokens
    /// read again, the status document afresh, when that gives MiniMax Code
    /// access tokens `set` did not have (the maintainer may have just
    /// rotated them; a chat never refreshes itself). `None` otherwise, and
    /// in header mode.
    pub async fn reread(&self, set: &TokenSet) -> Option<TokenSet> {
        let Mode::Secret(secret) = &self.mode else {
            return None;
        };
        if !set.from_secret {
            return None;
        }
        let document = secret.tokens.get().await.ok()?;
        if document.code_accounts.is_empty() {
            return None;
        }
        let status = secret.status.as_ref()?;
        status.expire().await;
        let status = status.get().await.ok()?;
        let fresh = self.usable(&document, Some(&status)).ok()?;
        fresh
            .tokens
            .iter()
            .any(|t| !set.tokens.contains(t))
            .then_some(fresh)
    }

    /// The deployment's tokens minus the dead ones, shuffled: the plain
    /// tokens, and the current access token of each MiniMax Code account
    /// (its lineage's, from the status document, else its login's).
    fn usable(
        &self,
        document: &TokensDocument,
        status: Option<&StatusDocument>,
    ) -> Result<TokenSet, ApiError> {
        let mut all = document.tokens.clone();
        let mut keys: Vec<String> = Vec::new();
        // The platform's keys serve speech on any chain, and chat where
        // the chain has minimax-api.
        for key in document.minimax_api_keys.iter().chain(&self.env_keys) {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        if !document.code_accounts.is_empty() {
            let now = renewal::unix_now();
            let none = Default::default();
            let lineages = status.map_or(&none, |s| &s.accounts);
            let access = renewal::usable_access_tokens(&document.code_accounts, lineages, now, 2);
            if access.is_empty() && keys.is_empty() {
                return Err(ApiError::Unavailable(format!(
                    "No MiniMax Code account has a usable access token: {} accounts, each dead \
                     or expired. The maintainer renews them (the token-liveness schedule, or the \
                     server's timer); a dead one needs `gateway login` again.",
                    document.code_accounts.len()
                )));
            }
            all.extend(access);
        }
        if all.is_empty() && keys.is_empty() {
            return Err(ApiError::Unavailable(
                "This deployment has no upstream tokens: add some to the tokens secret's `tokens` list \
                 (or platform keys to `minimax_api_keys`, with minimax-api in UPSTREAM)."
                    .into(),
            ));
        }
        let total = all.len() + keys.len();
        let (mut by_check, mut by_failure) = (0, 0);
        let mut live = |list: &[String]| -> Vec<String> {
            list.iter()
                .filter(|t| {
                    let fp = fingerprint(t);
                    if status.is_some_and(|s| s.is_dead(&fp)) {
                        by_check += 1;
                        false
                    } else if self.dead.contains(&fp) {
                        by_failure += 1;
                        false
                    } else {
                        true
                    }
                })
                .cloned()
                .collect()
        };
        let (live_tokens, live_keys) = (live(&all), live(&keys));
        if live_tokens.is_empty() && live_keys.is_empty() {
            return Err(ApiError::Unavailable(format!(
                "No usable upstream account: all {total} tokens are dead ({by_check} by the last liveness check, \
                 {by_failure} rejected upstream in the last {} minutes). Refresh the tokens secret.",
                self.dead.memory().as_secs() / 60
            )));
        }
        Ok(TokenSet {
            tokens: shuffled(&live_tokens),
            keys: shuffled(&live_keys),
            from_secret: true,
        })
    }
}

fn secret_unavailable(e: SecretError) -> ApiError {
    tracing::error!(error = %e, "tokens secret unavailable");
    ApiError::Unavailable(format!("The tokens document cannot be used: {e}."))
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
            bearer_tokens(&headers("Bearer a, b ,,c"), "sk-").unwrap(),
            vec!["a", "b", "c"]
        );
        assert_eq!(
            bearer_tokens(&headers("bearer  x"), "sk-").unwrap(),
            vec!["x"]
        );
    }

    #[test]
    fn missing_or_empty_is_401() {
        for h in [
            HeaderMap::new(),
            headers("Bearer"),
            headers("Bearer  , ,"),
            headers("Basic abc"),
        ] {
            let e = bearer_tokens(&h, "sk-").unwrap_err();
            assert_eq!(e.status(), 401);
        }
    }

    #[test]
    fn gateway_keys_and_oversized_tokens_are_never_forwarded() {
        let e = bearer_tokens(&headers("Bearer tok-a, sk-revoked-key"), "sk-").unwrap_err();
        assert_eq!(e.status(), 401);
        let m = e.to_string();
        assert!(
            m.contains("Invalid API key") && m.contains(&fingerprint("sk-revoked-key")),
            "{m}"
        );
        assert!(!m.contains("revoked"), "the key is never echoed: {m}");
        assert_eq!(
            bearer_tokens(&headers("Bearer gw_x"), "gw_")
                .unwrap_err()
                .status(),
            401,
            "the prefix is a setting"
        );
        assert_eq!(
            bearer_tokens(&headers("Bearer sk-x"), "gw_").unwrap(),
            vec!["sk-x"]
        );
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        let e = bearer_tokens(&headers(&format!("Bearer {long}")), "sk-").unwrap_err();
        assert!(e.to_string().contains("malformed") && !e.to_string().contains(&long));
        let huge = "a,".repeat(MAX_CREDENTIAL_HEADER_BYTES);
        let e = bearer_tokens(&headers(&format!("Bearer {huge}")), "sk-").unwrap_err();
        assert!(e.to_string().contains("malformed"), "{e}");
    }

    #[test]
    fn x_api_key_is_read_when_authorization_is_absent() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "tok-k".parse().unwrap());
        assert_eq!(bearer_tokens(&h, "sk-").unwrap(), vec!["tok-k"]);
        h.insert(AUTHORIZATION, "Bearer tok-a".parse().unwrap());
        assert_eq!(
            bearer_tokens(&h, "sk-").unwrap(),
            vec!["tok-a"],
            "Authorization wins"
        );
    }

    #[test]
    fn api_keys_compare_whole_values() {
        let keys = vec!["sk-one".to_string(), "sk-two".to_string()];
        assert!(is_api_key("sk-two", &keys));
        assert!(!is_api_key("sk-tw", &keys));
        assert!(!is_api_key("sk-two ", &keys));
        assert!(!is_api_key("", &keys));
        assert!(!is_api_key("sk-one", &[]));
    }

    #[tokio::test]
    async fn header_mode_hands_out_the_callers_tokens() {
        let c = Credentials::header_mode();
        let set = c.tokens_for(&headers("Bearer a,b")).await.unwrap();
        assert!(!set.from_secret);
        assert_eq!(set.tokens.len(), 2);
        assert!(
            c.authorize(&HeaderMap::new()).await.is_ok(),
            "header mode lets everyone list models"
        );
        assert_eq!(
            c.tokens_for(&HeaderMap::new()).await.unwrap_err().status(),
            401
        );
    }

    #[test]
    fn usable_skips_dead_tokens_and_says_how_many() {
        let c = Credentials::header_mode();
        let status: StatusDocument = serde_json::from_value(serde_json::json!({"tokens": {
            fingerprint("a"): {"live": false, "checked_at": "t", "reason": "rejected"}}}))
        .unwrap();
        c.dead.remember(&fingerprint("b"));
        let doc = |tokens: &[&str]| TokensDocument {
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            ..TokensDocument::default()
        };
        let set = c.usable(&doc(&["a", "b", "c"]), Some(&status)).unwrap();
        assert_eq!(set.tokens, vec!["c"]);
        let e = c.usable(&doc(&["a", "b"]), Some(&status)).unwrap_err();
        assert_eq!(e.status(), 503);
        let m = e.to_string();
        assert!(
            m.contains("all 2 tokens")
                && m.contains("1 by the last liveness check")
                && m.contains("1 rejected"),
            "{m}"
        );
        assert_eq!(c.usable(&doc(&[]), None).unwrap_err().status(), 503);
    }

    #[tokio::test]
    async fn platform_keys_go_to_the_platform_alone_and_never_from_the_environment_in_header_mode()
    {
        // Header mode: the caller's platform keys are split out (not taken
        // for this gateway's `sk-` keys), and refused where no upstream takes them.
        let serving = Credentials::header_mode().with_platform(Vec::new(), true);
        let set = serving
            .tokens_for(&headers("Bearer tok-a, sk-api-intl-1,sk-cp-2"))
            .await
            .unwrap();
        assert_eq!(set.tokens, ["tok-a"]);
        let mut keys = set.keys.clone();
        keys.sort();
        assert_eq!(keys, ["sk-api-intl-1", "sk-cp-2"]);
        assert_eq!(set.of("minimax-api").tokens.len(), 2);
        assert_eq!(set.of("minimax-code").tokens, ["tok-a"]);
        let e = Credentials::header_mode()
            .tokens_for(&headers("Bearer sk-api-intl-1"))
            .await
            .unwrap_err();
        assert_eq!(e.status(), 401);
        let m = e.to_string();
        assert!(
            m.contains("minimax-api") && !m.contains("sk-api-intl-1"),
            "{m}"
        );
        // Secret mode: the document's keys and MINIMAX_API_KEY's, each once,
        // minus the dead; keys alone are a usable set.
        let c = Credentials::header_mode()
            .with_platform(vec!["sk-api-env".into(), "sk-api-doc".into()], true);
        c.dead.remember(&fingerprint("sk-api-dead"));
        let doc = TokensDocument {
            minimax_api_keys: vec!["sk-api-doc".into(), "sk-api-dead".into()],
            ..TokensDocument::default()
        };
        let mut set = c.usable(&doc, None).unwrap();
        set.keys.sort();
        assert_eq!(
            (set.tokens.len(), set.keys),
            (0, vec!["sk-api-doc".to_string(), "sk-api-env".to_string()])
        );
        // On any chain (the functions that speak use them), minus the dead.
        let fresh = Credentials::header_mode();
        fresh.dead.remember(&fingerprint("sk-api-dead"));
        assert_eq!(fresh.usable(&doc, None).unwrap().keys, ["sk-api-doc"]);
        // A caller's keys alone, on a chain without the platform, are taken
        // only where speech is served.
        let speaking = Credentials::header_mode().taking_platform_keys();
        let set = speaking
            .tokens_for(&headers("Bearer sk-api-intl-1"))
            .await
            .unwrap();
        assert_eq!((set.tokens.len(), set.keys.len()), (0, 1));
        let parsed: TokensDocument =
            serde_json::from_str(r#"{"minimax_api_keys": [" sk-api-a ", "", "sk-api-a"]}"#)
                .unwrap();
        assert_eq!(parsed.minimax_api_keys, ["sk-api-a"]);
    }

    #[tokio::test]
    async fn a_rejected_access_token_is_looked_up_again_once_the_status_moved() {
        use renewal::{CodeLogin, Lineage};
        let dir = std::env::temp_dir().join(format!("gw-reread-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens.json");
        let now = renewal::unix_now();
        let login = CodeLogin {
            region: "intl".into(),
            refresh_token: "mmort_login".into(),
            access_token: "mmoat_login".into(),
            expires_at: now + 3600,
            expires_in: 3600,
            login_at: now,
        };
        let doc = serde_json::json!({"api_keys": ["sk-k"], "minimax_code_accounts": [login]});
        std::fs::write(&path, doc.to_string()).unwrap();
        let status = Arc::new(Latest::new("status"));
        let c = Credentials::new(
            Mode::Secret(Box::new(SecretMode {
                tokens: Document::File(FileDocument::new(&path)),
                status: Some(Document::Memory(status.clone())),
                allow_header_tokens: false,
            })),
            Duration::from_secs(600),
            "sk-",
        );
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "Bearer sk-k".parse().unwrap());
        let first = c.tokens_for(&headers).await.unwrap();
        assert_eq!(first.tokens, ["mmoat_login"]);
        // Nothing moved: nothing new to try.
        assert_eq!(c.reread(&first).await, None);
        // The maintainer rotated it meanwhile.
        let mut rotated = Lineage::from_login(&login);
        rotated.generation = 1;
        rotated.access_token = "mmoat_gen1".into();
        let mut doc = StatusDocument::default();
        doc.accounts.insert(login.account(), rotated);
        status.set(doc);
        let fresh = c.reread(&first).await.unwrap();
        assert_eq!(fresh.tokens, ["mmoat_gen1"]);
        // Header mode never rereads.
        assert_eq!(Credentials::header_mode().reread(&first).await, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn code_accounts_serve_their_current_access_token() {
        use renewal::{CodeLogin, Lineage};
        let c = Credentials::header_mode();
        let now = renewal::unix_now();
        let login = |n: u32| CodeLogin {
            region: "intl".into(),
            refresh_token: format!("mmort_login{n}"),
            access_token: format!("mmoat_login{n}"),
            expires_at: now + 3600,
            expires_in: 3600,
            login_at: now,
        };
        let document = TokensDocument {
            tokens: vec!["mmoat_plain".into()],
            code_accounts: vec![login(1), login(2), login(3)],
            ..TokensDocument::default()
        };
        let mut status = StatusDocument::default();
        // Account 2 was renewed: its lineage's token, not the login's.
        let mut renewed = Lineage::from_login(&login(2));
        renewed.generation = 1;
        renewed.access_token = "mmoat_gen1".into();
        status.accounts.insert(login(2).account(), renewed);
        // Account 3 is dead.
        let mut dead = Lineage::from_login(&login(3));
        dead.dead = Some("invalid_grant".into());
        status.accounts.insert(login(3).account(), dead);
        let mut set = c.usable(&document, Some(&status)).unwrap().tokens;
        set.sort();
        assert_eq!(set, ["mmoat_gen1", "mmoat_login1", "mmoat_plain"]);
        // Every account expired, none renewed: a 503 that says why.
        let stale = TokensDocument {
            code_accounts: vec![CodeLogin {
                expires_at: now - 1,
                ..login(4)
            }],
            ..TokensDocument::default()
        };
        let e = c.usable(&stale, None).unwrap_err();
        assert_eq!(e.status(), 503);
        assert!(e.to_string().contains("maintainer"), "{e}");
    }

    #[test]
    fn shuffle_keeps_every_token() {
        let t: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        let mut s = shuffled(&t);
        s.sort();
        assert_eq!(s, t);
    }
}
