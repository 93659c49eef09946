//! MiniMax Code's managed gateway (`minimax-code-protocol.md`, section 8):
//! the account service (the device flow with PKCE, refresh with rotation)
//! and the agent host's routes (the Messages endpoint, its count_tokens, the
//! models catalogue, credits) on one port, for one region per instance.
//!
//! It checks what it is sent as the protocol says the real service does,
//! fails as the real service fails (every row of section 6 as a fault), and
//! records what the client must never do as violations: a refresh token
//! spent twice, two refreshes of one account at once, a wrong path, a
//! missing bearer, `x-api-key`, a token it never issued, `app_id` at the
//! token endpoint, polling too fast, an unlisted field, an image to a
//! text-only model, `disabled` thinking on M3.1, and (for the shared pool's
//! tests) two answers on one account at once.
//!
//! Control calls under `/_sim/`: `state`, `reset`, `settings`, `clock`,
//! `device/pending`, `device/approve`, `device/deny`, `script`, `fault`,
//! `accounts`, `violations`, `log`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub type SharedCode = Arc<Mutex<CodeState>>;

/// One streamed answer's text as it was sent: when, and the length then.
pub type SentLog = Arc<Mutex<Vec<(std::time::Instant, usize)>>>;

/// A refusal, answered as it is (boxed: a response is large, and these are
/// the rare path).
type Refused = Box<Response>;

pub const LLM_PATH: &str = "/mavis/api/v1/llm/v1";

/// The catalogue (section 5), in its order: (id, context, images, thinking mode).
pub const MODELS: [(&str, u32, bool, &str); 4] = [
    ("MiniMax-M3.1-Flash-Preview", 512_000, true, "forced_on"),
    ("MiniMax-M3", 512_000, true, "switchable"),
    ("MiniMax-M2.7-highspeed", 200_000, false, "forced_on"),
    ("MiniMax-M2.7", 200_000, false, "forced_on"),
];

/// The top-level fields a client may send (section 4.3).
const LISTED_FIELDS: [&str; 12] = [
    "model",
    "messages",
    "system",
    "max_tokens",
    "stream",
    "thinking",
    "output_config",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "stop_sequences",
];

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Settings {
    /// The catalogue `region` value this instance answers (`en` or `cn`).
    pub region: String,
    /// `rfc` (400 `authorization_pending`) or `status` (200 `{"status":…}`).
    pub pending_shape: String,
    /// `standard`, or `legacy` (section 2.5).
    pub device_shape: String,
    pub device_expires_in: u64,
    pub interval: u64,
    pub access_ttl_s: u64,
    pub chain_revocation: bool,
    pub old_access_valid: bool,
    pub refresh_ttl_s: Option<u64>,
    pub refresh_latency_ms: u64,
    /// Deltas carry at most this many characters.
    pub chunk_chars: usize,
    /// Pause between frames of a stream.
    pub pace_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            region: "en".into(),
            pending_shape: "rfc".into(),
            device_shape: "standard".into(),
            device_expires_in: 300,
            interval: 3,
            access_ttl_s: 3600,
            chain_revocation: false,
            old_access_valid: true,
            refresh_ttl_s: None,
            refresh_latency_ms: 0,
            chunk_chars: 7,
            pace_ms: 5,
        }
    }
}

#[derive(Clone, Debug)]
struct Device {
    user_code: String,
    challenge: String,
    issued_at: f64,
    expires_at: f64,
    interval: f64,
    last_poll: Option<f64>,
    approved: Option<String>,
    denied: bool,
    used: bool,
}

#[derive(Clone, Debug)]
struct Refresh {
    account: String,
    chain: u64,
    issued_at: f64,
    spent: bool,
    /// Spent by a refresh that timed out: one retry is allowed (rule 5).
    timed_out: bool,
}

#[derive(Clone, Debug)]
struct Access {
    account: String,
    chain: u64,
    expires_at: f64,
    revoked: bool,
}

/// A scripted answer: blocks and a stop reason, for an account or model.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Script {
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    pub blocks: Vec<Value>,
    #[serde(default)]
    pub stop_reason: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Fault {
    /// `messages`, `token` or `catalogue`.
    pub target: String,
    #[serde(default)]
    pub account: Option<String>,
    pub kind: String,
    #[serde(default = "one")]
    pub times: u32,
    /// For `error_event_after_n`: content deltas sent first, and the kind
    /// whose error object the event carries.
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub error_kind: Option<String>,
}

fn one() -> u32 {
    1
}

/// What an account holds, for the credits and plan routes (section 7).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct AccountInfo {
    /// The unexpired grant's `remaining_amount` (`"800.00"` by default).
    #[serde(default)]
    pub credits: Option<String>,
    /// A second grant, already expired: it must not count in the balance.
    #[serde(default)]
    pub expired_credits: Option<String>,
    /// The Token Plan: `active` (default), `none` (the 2062 answer) or
    /// `login_fail` (the 1004 answer an mcode token got).
    #[serde(default)]
    pub plan: Option<String>,
    /// The 5-hour window's `remaining_percent` (100 by default).
    #[serde(default)]
    pub plan_remaining_percent: Option<f64>,
    /// `current_interval_status` 3: unlimited.
    #[serde(default)]
    pub plan_unlimited: bool,
}

#[derive(Default)]
pub struct CodeState {
    pub settings: Settings,
    clock_offset: f64,
    devices: HashMap<String, Device>,
    refresh: HashMap<String, Refresh>,
    access: HashMap<String, Access>,
    chains: u64,
    accounts: HashMap<String, AccountInfo>,
    refreshing: HashMap<String, u32>,
    answering: HashMap<String, u32>,
    signatures: HashSet<String>,
    scripts: VecDeque<Script>,
    faults: Vec<Fault>,
    violations: Vec<Value>,
    log: Vec<Value>,
    counts: HashMap<String, u64>,
    /// The newest streamed answers (64 at most): when each piece of text
    /// was sent, with the answer's length in bytes then.
    pub answers_sent: Vec<SentLog>,
}

fn real_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl CodeState {
    pub fn with_region(region: &str) -> Self {
        let mut s = Self::default();
        s.settings.region = region.into();
        if region == "cn" {
            s.settings.pending_shape = "status".into();
        }
        s
    }

    /// Queue a scripted answer (what `POST /_sim/script` does), for a
    /// simulator run in-process (the benchmarks).
    pub fn script(&mut self, script: Script) {
        self.scripts.push_back(script);
    }

    /// The simulator's clock: real time plus what `/_sim/clock` added.
    fn now(&self) -> f64 {
        real_now() + self.clock_offset
    }

    fn violation(&mut self, kind: &str, detail: Value) {
        tracing::warn!(kind, %detail, "violation");
        self.violations
            .push(json!({"kind": kind, "detail": detail}));
    }

    fn count(&mut self, what: &str) {
        *self.counts.entry(what.to_string()).or_default() += 1;
    }

    /// A fault for this target and account, spent by one.
    fn take_fault(&mut self, target: &str, account: Option<&str>) -> Option<Fault> {
        let i = self.faults.iter().position(|f| {
            f.target == target
                && f.times > 0
                && f.account.as_deref().is_none_or(|a| Some(a) == account)
        })?;
        self.faults[i].times -= 1;
        let fault = self.faults[i].clone();
        if self.faults[i].times == 0 {
            self.faults.remove(i);
        }
        Some(fault)
    }

    /// New tokens for `account` on `chain`.
    fn issue(&mut self, account: &str, chain: u64) -> Value {
        let now = self.now();
        let access = format!("mmoat_{}", Alphanumeric.sample_string(&mut rand::rng(), 54));
        let refresh = format!("mmort_{}", Alphanumeric.sample_string(&mut rand::rng(), 48));
        let ttl = self.settings.access_ttl_s;
        self.access.insert(
            access.clone(),
            Access {
                account: account.into(),
                chain,
                expires_at: now + ttl as f64,
                revoked: false,
            },
        );
        self.refresh.insert(
            refresh.clone(),
            Refresh {
                account: account.into(),
                chain,
                issued_at: now,
                spent: false,
                timed_out: false,
            },
        );
        self.accounts.entry(account.into()).or_default();
        json!({"access_token": access, "refresh_token": refresh, "token_type": "Bearer",
               "expires_in": ttl, "scope": "agent.default", "audience": "agent-backend"})
    }
}

pub fn router(state: SharedCode) -> Router {
    Router::new()
        .route("/oauth2/device/code", post(device_code))
        .route("/oauth2/token", post(token))
        .route("/oauth2/revoke", post(revoke))
        .route(&format!("{LLM_PATH}/messages"), post(messages))
        .route(
            &format!("{LLM_PATH}/messages/count_tokens"),
            post(count_tokens),
        )
        .route("/mavis/api/v1/models", get(catalogue))
        .route("/minimax-cloud/api/v1/credit/details", get(credits))
        .route(
            "/v1/api/openplatform/coding_plan/remains",
            get(plan_remains),
        )
        .route("/_sim/state", get(control::state))
        .route("/_sim/reset", post(control::reset))
        .route("/_sim/settings", post(control::settings))
        .route("/_sim/clock", post(control::clock))
        .route("/_sim/device/pending", get(control::pending))
        .route("/_sim/device/approve", post(control::approve))
        .route("/_sim/device/deny", post(control::deny))
        .route("/_sim/script", post(control::script))
        .route("/_sim/fault", post(control::fault))
        .route("/_sim/accounts", post(control::accounts))
        .route("/_sim/violations", get(control::violations))
        .route("/_sim/log", get(control::log))
        .fallback(unknown)
        .with_state(state)
}

/// Serve on `listener` until the process ends; with `TCP_NODELAY`, as the
/// web chats' simulator and real SSE servers write (without it each small
/// frame after the first waits for the reader's delayed ACK, about 40 ms).
pub async fn serve(listener: tokio::net::TcpListener, state: SharedCode) -> std::io::Result<()> {
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state)).await
}

async fn unknown(AxState(st): AxState<SharedCode>, method: Method, uri: Uri) -> Response {
    let path = uri.path().to_string();
    let mut s = st.lock().unwrap();
    s.violation(
        "wrong_path",
        json!({"method": method.as_str(), "path": path}),
    );
    if path.starts_with("/mavis/api/v1/llm") {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"errorCode": 50115, "errorReason": "direct_route_not_configured"})),
        )
            .into_response();
    }
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// A form or JSON body as string fields.
fn fields(headers: &HeaderMap, body: &Bytes) -> HashMap<String, String> {
    let json_body = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json_body {
        let v: Value = serde_json::from_slice(body).unwrap_or_default();
        return v
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_string)))
                    .collect()
            })
            .unwrap_or_default();
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

fn oauth_error(status: StatusCode, error: &str, description: Option<&str>) -> Response {
    let mut body = json!({"error": error});
    if let Some(d) = description {
        body["error_description"] = json!(d);
    }
    (status, Json(body)).into_response()
}

/// The most requests `/_sim/log` keeps (the oldest go first): a long
/// benchmark or a load test must not grow the simulator without bound.
const MAX_LOG: usize = 4096;

fn log(s: &mut CodeState, path: &str, detail: Value) {
    let at = s.now();
    if s.log.len() >= MAX_LOG {
        s.log.drain(..MAX_LOG / 4);
    }
    s.log
        .push(json!({"path": path, "at": at, "detail": detail}));
}

async fn device_code(
    AxState(st): AxState<SharedCode>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = fields(&headers, &body);
    let mut s = st.lock().unwrap();
    log(
        &mut s,
        "/oauth2/device/code",
        json!({"fields": f.keys().collect::<Vec<_>>()}),
    );
    if f.get("client_id").map(String::as_str) != Some("mcode-public") {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_client", None);
    }
    if f.get("scope").is_some_and(|sc| sc != "agent.default") {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", None);
    }
    let challenge = f.get("code_challenge").cloned().unwrap_or_default();
    if f.get("code_challenge_method").map(String::as_str) != Some("S256") || challenge.len() != 43 {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("PKCE S256 is required"),
        );
    }
    let code = |n| {
        Alphanumeric
            .sample_string(&mut rand::rng(), n)
            .to_uppercase()
    };
    let user_code = format!("{}-{}", code(4), code(4));
    let device_code = Alphanumeric.sample_string(&mut rand::rng(), 40);
    let now = s.now();
    let (expires_in, interval) = (s.settings.device_expires_in, s.settings.interval);
    s.devices.insert(
        device_code.clone(),
        Device {
            user_code: user_code.clone(),
            challenge,
            issued_at: now,
            expires_at: now + expires_in as f64,
            interval: interval as f64,
            last_poll: None,
            approved: None,
            denied: false,
            used: false,
        },
    );
    let uri = "https://account.minimax.io/oauth-authorize";
    if s.settings.device_shape == "legacy" {
        return Json(json!({"user_code": user_code, "verification_uri": uri,
            "expired_in": ((now + expires_in as f64) * 1000.0) as u64, "interval": interval * 1000}))
        .into_response();
    }
    Json(json!({"device_code": device_code, "user_code": user_code,
        "verification_uri": uri, "verification_uri_complete": format!("{uri}?user_code={user_code}"),
        "expires_in": expires_in, "interval": interval}))
    .into_response()
}

fn pkce(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

async fn token(AxState(st): AxState<SharedCode>, headers: HeaderMap, body: Bytes) -> Response {
    let f = fields(&headers, &body);
    {
        let mut s = st.lock().unwrap();
        let grant = f.get("grant_type").cloned().unwrap_or_default();
        log(&mut s, "/oauth2/token", json!({"grant_type": grant}));
        if f.contains_key("app_id") {
            s.violation("app_id_on_token", json!({}));
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", None);
        }
        if f.get("client_id").map(String::as_str) != Some("mcode-public") {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_client", None);
        }
    }
    match f.get("grant_type").map(String::as_str) {
        Some("urn:ietf:params:oauth:grant-type:device_code") => device_grant(&st, &f),
        Some("refresh_token") => refresh_grant(&st, &f).await,
        _ => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", None),
    }
}

/// "Not yet", in this instance's shape.
fn not_yet(shape: &str, what: &str) -> Response {
    if shape == "status" {
        Json(json!({"status": what})).into_response()
    } else {
        oauth_error(StatusCode::BAD_REQUEST, what, None)
    }
}

fn device_grant(st: &SharedCode, f: &HashMap<String, String>) -> Response {
    let mut s = st.lock().unwrap();
    let now = s.now();
    let shape = s.settings.pending_shape.clone();
    let key = match (f.get("device_code"), f.get("user_code")) {
        (Some(code), _) => code.clone(),
        (None, Some(user)) => match s.devices.iter().find(|(_, d)| d.user_code == *user) {
            Some((k, _)) => k.clone(),
            None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", None),
        },
        _ => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", None),
    };
    let Some(device) = s.devices.get(&key).cloned() else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", None);
    };
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    if pkce(&verifier) != device.challenge {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("code_verifier does not match"),
        );
    }
    if now >= device.expires_at {
        return not_yet(&shape, "expired_token");
    }
    if device.denied {
        return not_yet(&shape, "access_denied");
    }
    let too_fast = device
        .last_poll
        .is_some_and(|last| now - last + 0.25 < device.interval);
    let first_too_fast =
        device.last_poll.is_none() && now - device.issued_at + 0.25 < device.interval;
    if let Some(d) = s.devices.get_mut(&key) {
        d.last_poll = Some(now);
    }
    if too_fast || first_too_fast {
        s.violation("poll_too_fast", json!({"user_code": device.user_code}));
        if let Some(d) = s.devices.get_mut(&key) {
            d.interval += 5.0;
        }
        return not_yet(&shape, "slow_down");
    }
    let Some(account) = device.approved.clone() else {
        return not_yet(
            &shape,
            if shape == "status" {
                "pending"
            } else {
                "authorization_pending"
            },
        );
    };
    if device.used {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", None);
    }
    if let Some(d) = s.devices.get_mut(&key) {
        d.used = true;
    }
    s.chains += 1;
    let chain = s.chains;
    s.count("logins");
    Json(s.issue(&account, chain)).into_response()
}

/// Leaves the in-flight count of an account's refreshes when dropped.
struct Refreshing {
    st: SharedCode,
    account: String,
}

impl Drop for Refreshing {
    fn drop(&mut self) {
        let mut s = self.st.lock().unwrap();
        if let Some(n) = s.refreshing.get_mut(&self.account) {
            *n = n.saturating_sub(1);
        }
    }
}

async fn refresh_grant(st: &SharedCode, f: &HashMap<String, String>) -> Response {
    let presented = f.get("refresh_token").cloned().unwrap_or_default();
    let (record, latency, fault) = {
        let mut s = st.lock().unwrap();
        s.count("refreshes");
        let Some(record) = s.refresh.get(&presented).cloned() else {
            s.violation("foreign_token", json!({"where": "refresh"}));
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", None);
        };
        let in_flight = s.refreshing.entry(record.account.clone()).or_default();
        *in_flight += 1;
        if *in_flight > 1 {
            s.violation("concurrent_refresh", json!({"account": record.account}));
        }
        let fault = s.take_fault("token", Some(&record.account));
        (record, s.settings.refresh_latency_ms, fault)
    };
    let _guard = Refreshing {
        st: st.clone(),
        account: record.account.clone(),
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let mut s = st.lock().unwrap();
    match fault.as_ref().map(|f| f.kind.as_str()) {
        Some("refresh_5xx") => {
            return (
                StatusCode::BAD_GATEWAY,
                Json(json!({"error": "server_error"})),
            )
                .into_response()
        }
        Some("refresh_invalid_grant") => {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", None)
        }
        _ => {}
    }
    let now = s.now();
    if record.spent {
        if record.timed_out {
            // The one retry a writer may make after a timeout (rule 5).
            if let Some(r) = s.refresh.get_mut(&presented) {
                r.timed_out = false;
            }
        } else {
            s.violation("refresh_token_reused", json!({"account": record.account}));
        }
        if s.settings.chain_revocation {
            let chain = record.chain;
            s.refresh
                .values_mut()
                .filter(|r| r.chain == chain)
                .for_each(|r| r.spent = true);
            s.access
                .values_mut()
                .filter(|a| a.chain == chain)
                .for_each(|a| a.revoked = true);
        }
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("this refresh token can no longer be used, start a new authorization"),
        );
    }
    if s.settings
        .refresh_ttl_s
        .is_some_and(|ttl| now - record.issued_at > ttl as f64)
    {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", Some("expired"));
    }
    if let Some(r) = s.refresh.get_mut(&presented) {
        r.spent = true;
        r.timed_out = fault.as_ref().is_some_and(|f| f.kind == "refresh_timeout");
    }
    if !s.settings.old_access_valid {
        let chain = record.chain;
        s.access
            .values_mut()
            .filter(|a| a.chain == chain)
            .for_each(|a| a.revoked = true);
    }
    let mut answer = s.issue(&record.account, record.chain);
    match fault.as_ref().map(|f| f.kind.as_str()) {
        // Spent, and the answer lost: the client sees a gateway timeout.
        Some("refresh_timeout") => {
            return (StatusCode::GATEWAY_TIMEOUT, "upstream timed out").into_response()
        }
        Some("refresh_without_rotation") => {
            // The old refresh token stays valid, and no new one is given.
            if let Some(new) = answer.get("refresh_token").and_then(Value::as_str) {
                let new = new.to_string();
                s.refresh.remove(&new);
            }
            if let Some(r) = s.refresh.get_mut(&presented) {
                r.spent = false;
            }
            if let Some(o) = answer.as_object_mut() {
                o.remove("refresh_token");
            }
        }
        _ => {}
    }
    Json(answer).into_response()
}

async fn revoke() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// The account of an access token, or the protocol's 401.
fn authorize(s: &mut CodeState, headers: &HeaderMap, path: &str) -> Result<String, Refused> {
    if headers.contains_key("x-api-key") {
        s.violation("x_api_key", json!({"path": path}));
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = bearer else {
        s.violation("missing_bearer", json!({"path": path}));
        return Err(Box::new(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"code": 401, "message": "token is required"})),
            )
                .into_response(),
        ));
    };
    let auth_error = |message: &str| {
        Box::new(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"type": "error", "error": {"type": "authentication_error", "message": message}})),
            )
                .into_response(),
        )
    };
    let now = s.now();
    match s.access.get(token).cloned() {
        None => {
            s.violation("foreign_token", json!({"path": path}));
            Err(auth_error("invalid access token"))
        }
        Some(a) if a.revoked || now >= a.expires_at => Err(auth_error("token expired")),
        Some(a) => Ok(a.account),
    }
}

fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// A section 6 fault as the answer it is.
fn fault_answer(kind: &str) -> Response {
    let (status, body) = match kind {
        "token_expired" => (401, error_body("authentication_error", "token expired")),
        "egress_refused" => return StatusCode::UNAUTHORIZED.into_response(),
        "forbidden_unusual_activity" => (
            403,
            error_body(
                "permission_error",
                "request has been blocked due to unusual activity (1006)",
            ),
        ),
        "credits_402" => (402, error_body("billing_error", "credits exhausted")),
        "credits_inner_1400010161" => (
            500,
            json!({"status_code": 1400010161, "status_msg": "credits exhausted"}),
        ),
        "plan_2056" => (
            429,
            error_body("rate_limit_error", "usage limit exceeded (2056)"),
        ),
        "plan_2067" => (
            429,
            error_body(
                "rate_limit_error",
                "Token Plan limit reached and automatic credit consumption disabled (2067)",
            ),
        ),
        "throttle_2045" | "throttle_2046" | "throttle_2047" | "throttle_1039" | "throttle_1041" => {
            let code = &kind["throttle_".len()..];
            (
                429,
                error_body("rate_limit_error", &format!("rate limit exceeded ({code})")),
            )
        }
        "throttle_plain" => (429, error_body("rate_limit_error", "rate limit exceeded")),
        "overloaded_529" => (529, error_body("overloaded_error", "cluster overload")),
        "context_overflow" => (
            400,
            error_body(
                "invalid_request_error",
                "invalid params, context window exceeds limit (2013)",
            ),
        ),
        "too_large_413" => (413, error_body("request_too_large", "request too large")),
        "base_resp_1006" => (
            200,
            json!({"base_resp": {"status_code": 1006, "status_msg": "request has been blocked due to unusual activity"}}),
        ),
        _ => (500, error_body("api_error", "internal error")),
    };
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(body),
    )
        .into_response()
}

fn invalid_params(message: &str) -> Refused {
    Box::new(
        (
            StatusCode::BAD_REQUEST,
            Json(error_body(
                "invalid_request_error",
                &format!("invalid params, {message} (2013)"),
            )),
        )
            .into_response(),
    )
}

/// `ceil(UTF-8 bytes / 4)`: the usage rule tests recompute (section 8.9).
pub fn tokens_of(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// What a request's input counts: texts, tool definitions, tool inputs, and
/// 100 per image.
fn input_tokens(body: &Value) -> u64 {
    let mut n = 0;
    match &body["system"] {
        Value::String(s) => n += tokens_of(s),
        Value::Array(blocks) => {
            for b in blocks {
                n += tokens_of(b["text"].as_str().unwrap_or_default());
            }
        }
        _ => {}
    }
    for m in body["messages"].as_array().into_iter().flatten() {
        match &m["content"] {
            Value::String(s) => n += tokens_of(s),
            Value::Array(blocks) => {
                for b in blocks {
                    n += match b["type"].as_str() {
                        Some("text") => tokens_of(b["text"].as_str().unwrap_or_default()),
                        Some("image") => 100,
                        Some("tool_use") => tokens_of(&b["input"].to_string()),
                        Some("tool_result") => match &b["content"] {
                            Value::String(s) => tokens_of(s),
                            other => tokens_of(&other.to_string()),
                        },
                        Some("thinking") => tokens_of(b["thinking"].as_str().unwrap_or_default()),
                        _ => 0,
                    };
                }
            }
            _ => {}
        }
    }
    for t in body["tools"].as_array().into_iter().flatten() {
        n += tokens_of(t["name"].as_str().unwrap_or_default())
            + tokens_of(t["description"].as_str().unwrap_or_default())
            + tokens_of(&t["input_schema"].to_string());
    }
    n
}

/// The request as the protocol's rules check it (sections 4.4 and 4.5).
fn check_request(s: &mut CodeState, body: &Value) -> Result<(), Refused> {
    if let Some(o) = body.as_object() {
        for k in o.keys() {
            if !LISTED_FIELDS.contains(&k.as_str()) {
                s.violation("unlisted_field", json!({"field": k}));
            }
        }
    }
    let model = body["model"].as_str().unwrap_or_default();
    let Some((_, _, images, _)) = MODELS.iter().find(|(id, ..)| *id == model) else {
        return Err(invalid_params(&format!("unknown model {model:?}")));
    };
    if model.starts_with("MiniMax-M3.1") && body["thinking"]["type"] == "disabled" {
        s.violation("disabled_thinking_m31", json!({"model": model}));
        return Err(invalid_params(&format!(
            "model \"{model}\" requires adaptive thinking; thinking.type=\"disabled\" (including reasoning.effort=none) is not allowed"
        )));
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let mut pending_calls: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let blocks = m["content"].as_array().cloned().unwrap_or_default();
        let mut results: Vec<String> = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            match b["type"].as_str() {
                Some("image") if !images => {
                    s.violation("image_to_text_model", json!({"model": model}));
                    return Err(invalid_params(&format!(
                        "messages.{i}.content.{j}: model {model} does not take images"
                    )));
                }
                Some("image") if b["source"]["type"] != "base64" => {
                    return Err(invalid_params(&format!(
                        "messages.{i}.content.{j}: unsupported image source"
                    )));
                }
                Some("image_url") => {
                    return Err(invalid_params(&format!(
                        "messages.{i}.content.{j}: unsupported content type 'image_url'"
                    )))
                }
                Some("tool_result") => {
                    results.push(b["tool_use_id"].as_str().unwrap_or_default().to_string())
                }
                Some("thinking") => {
                    let sig = b["signature"].as_str().unwrap_or_default();
                    if !s.signatures.contains(sig) {
                        return Err(invalid_params(&format!(
                            "messages.{i}.content.{j}: invalid thinking signature"
                        )));
                    }
                }
                Some("tool_use") if b["name"].as_str().unwrap_or_default().is_empty() => {
                    return Err(invalid_params("tool name must not be empty"));
                }
                _ => {}
            }
        }
        // Each batch of results answers exactly the calls of the turn before.
        let paired = if pending_calls.is_empty() {
            results.is_empty()
        } else {
            let mut a = pending_calls.clone();
            let mut b = results.clone();
            a.sort();
            b.sort();
            a == b
        };
        if !paired {
            return Err(invalid_params("tool call result does not follow tool call"));
        }
        pending_calls = if m["role"] == "assistant" {
            blocks
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .map(|b| b["id"].as_str().unwrap_or_default().to_string())
                .collect()
        } else {
            Vec::new()
        };
    }
    if !pending_calls.is_empty() {
        return Err(invalid_params("tool call result does not follow tool call"));
    }
    Ok(())
}

/// The text of the newest user turn (what an unscripted answer echoes): its
/// text blocks, and what its tool results say, as a model reads them.
fn last_user_text(body: &Value) -> String {
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .cloned()
        .unwrap_or_default();
    fn text_of(content: &Value) -> String {
        match content {
            Value::String(s) => s.clone(),
            Value::Array(blocks) => blocks
                .iter()
                .filter_map(|b| match b["type"].as_str() {
                    Some("text") => b["text"].as_str().map(str::to_string),
                    Some("tool_result") => Some(text_of(&b["content"])),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        }
    }
    text_of(&last["content"])
}

fn thinks(model: &str, thinking: &Value) -> bool {
    match MODELS.iter().find(|(id, ..)| *id == model) {
        Some((_, _, _, "switchable")) => thinking["type"] == "adaptive",
        Some(_) => true,
        None => false,
    }
}

/// The answer's blocks and stop reason: a script for this account or model,
/// else an echo of the last user text; a thinking block when the model
/// thinks; cut at `max_tokens`.
fn compose(s: &mut CodeState, account: &str, body: &Value) -> (Vec<Value>, String, u64, u64) {
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let script = s
        .scripts
        .iter()
        .position(|sc| {
            sc.account.as_deref().is_none_or(|a| a == account)
                && sc.model.as_deref().is_none_or(|m| m == model)
        })
        .and_then(|i| s.scripts.remove(i));
    let (mut blocks, mut stop) = match script {
        Some(sc) => {
            let has_calls = sc.blocks.iter().any(|b| b["type"] == "tool_use");
            let stop = sc
                .stop_reason
                .clone()
                .unwrap_or(if has_calls { "tool_use" } else { "end_turn" }.to_string());
            (sc.blocks, stop)
        }
        None => {
            let echo: String = last_user_text(body).chars().take(200).collect();
            (
                vec![
                    json!({"type": "text", "text": format!("MiniMax Code simulator: you said «{echo}».")}),
                ],
                "end_turn".to_string(),
            )
        }
    };
    let wants_thinking = thinks(&model, &body["thinking"]);
    blocks.retain(|b| wants_thinking || b["type"] != "thinking");
    if wants_thinking && !blocks.iter().any(|b| b["type"] == "thinking") {
        let about: String = last_user_text(body).chars().take(60).collect();
        blocks.insert(
            0,
            json!({"type": "thinking", "text": format!("Thinking about: {about}")}),
        );
    }
    let max_tokens = body["max_tokens"].as_u64().unwrap_or(u64::MAX);
    let (mut output, mut thinking) = (0u64, 0u64);
    let mut kept = Vec::new();
    for mut b in blocks {
        let budget = max_tokens.saturating_sub(output);
        if budget == 0 {
            stop = "max_tokens".into();
            break;
        }
        let n = match b["type"].as_str() {
            Some("text") | Some("thinking") => {
                let text = b["text"].as_str().unwrap_or_default().to_string();
                if tokens_of(&text) > budget {
                    let mut cut = (budget * 4) as usize;
                    while !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    b["text"] = json!(text[..cut]);
                    stop = "max_tokens".into();
                }
                tokens_of(b["text"].as_str().unwrap_or_default())
            }
            Some("tool_use") => tokens_of(&b["input"].to_string()),
            _ => 0,
        };
        output += n;
        if b["type"] == "thinking" {
            thinking += n;
        }
        let cut = stop == "max_tokens";
        kept.push(b);
        if cut {
            break;
        }
    }
    (kept, stop, output, thinking)
}

fn message_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Leaves the account's count of answers in flight when the answer ends.
struct Answering {
    st: SharedCode,
    account: String,
}

impl Drop for Answering {
    fn drop(&mut self) {
        let mut s = self.st.lock().unwrap();
        if let Some(n) = s.answering.get_mut(&self.account) {
            *n = n.saturating_sub(1);
        }
    }
}

async fn messages(AxState(st): AxState<SharedCode>, headers: HeaderMap, body: Bytes) -> Response {
    let path = format!("{LLM_PATH}/messages");
    let (account, request, fault) = {
        let mut s = st.lock().unwrap();
        let request: Value = serde_json::from_slice(&body).unwrap_or_default();
        log(
            &mut s,
            &path,
            json!({"headers": headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(), "body": request}),
        );
        let account = match authorize(&mut s, &headers, &path) {
            Ok(a) => a,
            Err(r) => return *r,
        };
        s.count("messages");
        if let Some(f) = s.take_fault("messages", Some(&account)) {
            if f.kind != "error_event_after_n" && f.kind != "cut_before_stop" {
                return fault_answer(&f.kind);
            }
            (account, request, Some(f))
        } else {
            (account, request, None)
        }
    };
    let (frames, answering) = {
        let mut s = st.lock().unwrap();
        if let Err(r) = check_request(&mut s, &request) {
            return *r;
        }
        let n = s.answering.entry(account.clone()).or_default();
        *n += 1;
        if *n > 1 {
            s.violation("concurrent_answers", json!({"account": account}));
        }
        let answering = Answering {
            st: st.clone(),
            account: account.clone(),
        };
        let input = input_tokens(&request);
        let (blocks, stop, output, thinking) = compose(&mut s, &account, &request);
        let model = request["model"].as_str().unwrap_or_default().to_string();
        let mut signed = Vec::new();
        for b in &blocks {
            if b["type"] == "thinking" {
                let sig = format!("sig_{}", Alphanumeric.sample_string(&mut rand::rng(), 24));
                s.signatures.insert(sig.clone());
                signed.push(sig);
            }
        }
        if request["stream"] != true {
            let mut signatures = signed.into_iter();
            let content: Vec<Value> = blocks
                .iter()
                .map(|b| match b["type"].as_str() {
                    Some("thinking") => json!({"type": "thinking", "thinking": b["text"],
                        "signature": signatures.next().unwrap_or_default()}),
                    Some("tool_use") => b.clone(),
                    _ => json!({"type": "text", "text": b["text"]}),
                })
                .collect();
            return Json(
                json!({"id": message_id(), "type": "message", "role": "assistant",
                "model": model, "content": content, "stop_reason": stop,
                "usage": {"input_tokens": input, "output_tokens": output,
                    "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                    "output_tokens_details": {"thinking_tokens": thinking}},
                "base_resp": {"status_code": 0, "status_msg": ""}}),
            )
            .into_response();
        }
        let chunk = s.settings.chunk_chars.max(1);
        let frames = stream_frames(
            &model,
            &blocks,
            signed,
            &stop,
            (input, output, thinking),
            chunk,
            fault.as_ref(),
        );
        (frames, answering)
    };
    let pace = Duration::from_millis(st.lock().unwrap().settings.pace_ms);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    // When each piece of text was sent, with the answer's length then
    // (what the benchmarks measure latency from): recorded before it is
    // sent, so a reader that has it finds it recorded.
    let sent: SentLog = Arc::default();
    {
        let mut s = st.lock().unwrap();
        if s.answers_sent.len() >= 64 {
            s.answers_sent.remove(0);
        }
        s.answers_sent.push(sent.clone());
    }
    tokio::spawn(async move {
        let _answering = answering;
        let mut text = 0usize;
        for (i, frame) in frames.into_iter().enumerate() {
            // The pace is between frames: once the last is sent the answer
            // is over, as upstream, and the account may answer again (a
            // pause after it would flag the caller's next turn as a
            // concurrent answer).
            if i > 0 {
                tokio::time::sleep(pace).await;
            }
            if let Some(n) = text_delta_len(&frame) {
                text += n;
                sent.lock().unwrap().push((std::time::Instant::now(), text));
            }
            if tx.send(Ok(Bytes::from(frame))).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap()
}

/// The bytes of text a frame carries, if it is a `text_delta`.
fn text_delta_len(frame: &str) -> Option<usize> {
    let data = frame.split("\ndata: ").nth(1)?.trim_end();
    let v: Value = serde_json::from_str(data).ok()?;
    (v["delta"]["type"] == "text_delta").then(|| v["delta"]["text"].as_str().map_or(0, str::len))
}

fn frame(data: Value) -> String {
    format!(
        "event: {}\ndata: {data}\n\n",
        data["type"].as_str().unwrap_or_default()
    )
}

/// Text cut into deltas of at most `n` characters.
fn pieces(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

/// The exact event order of section 4.6.
fn stream_frames(
    model: &str,
    blocks: &[Value],
    signatures: Vec<String>,
    stop: &str,
    (input, output, thinking): (u64, u64, u64),
    chunk: usize,
    fault: Option<&Fault>,
) -> Vec<String> {
    let mut out = vec![
        frame(
            json!({"type": "message_start", "message": {"id": message_id(), "type": "message",
            "role": "assistant", "model": model, "content": [],
            "usage": {"input_tokens": input, "output_tokens": 0,
                "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}}),
        ),
        frame(json!({"type": "ping"})),
    ];
    let mut deltas = 0u32;
    let error_after = fault
        .filter(|f| f.kind == "error_event_after_n")
        .map(|f| f.n.unwrap_or(1));
    let mut signatures = signatures.into_iter();
    for (index, b) in blocks.iter().enumerate() {
        let (start, delta_pieces): (Value, Vec<Value>) = match b["type"].as_str() {
            Some("thinking") => {
                let mut d: Vec<Value> = pieces(b["text"].as_str().unwrap_or_default(), chunk)
                    .into_iter()
                    .map(|p| json!({"type": "thinking_delta", "thinking": p}))
                    .collect();
                d.push(json!({"type": "signature_delta", "signature": signatures.next().unwrap_or_default()}));
                (json!({"type": "thinking", "thinking": ""}), d)
            }
            Some("tool_use") => {
                let input = b["input"].to_string();
                (
                    json!({"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}),
                    pieces(&input, chunk)
                        .into_iter()
                        .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                        .collect(),
                )
            }
            _ => (
                json!({"type": "text", "text": ""}),
                pieces(b["text"].as_str().unwrap_or_default(), chunk)
                    .into_iter()
                    .map(|p| json!({"type": "text_delta", "text": p}))
                    .collect(),
            ),
        };
        out.push(frame(
            json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        for d in delta_pieces {
            if error_after.is_some_and(|n| deltas >= n) {
                let kind = fault
                    .and_then(|f| f.error_kind.clone())
                    .unwrap_or_else(|| "server_500".into());
                let error = match fault_answer_error(&kind) {
                    Some(e) => e,
                    None => error_body("api_error", "internal error"),
                };
                out.push(frame(error));
                return out;
            }
            out.push(frame(
                json!({"type": "content_block_delta", "index": index, "delta": d}),
            ));
            deltas += 1;
        }
        out.push(frame(json!({"type": "content_block_stop", "index": index})));
    }
    out.push(frame(json!({"type": "message_delta", "delta": {"stop_reason": stop},
        "usage": {"output_tokens": output, "output_tokens_details": {"thinking_tokens": thinking}}})));
    if fault.is_some_and(|f| f.kind == "cut_before_stop") {
        return out;
    }
    out.push(frame(json!({"type": "message_stop"})));
    out
}

/// The error object of a fault kind, for a mid-stream `error` event.
fn fault_answer_error(kind: &str) -> Option<Value> {
    Some(match kind {
        "overloaded_529" => error_body("overloaded_error", "cluster overload"),
        "throttle_2045" => error_body("rate_limit_error", "rate limit exceeded (2045)"),
        "credits_402" => error_body("billing_error", "credits exhausted"),
        "server_500" => error_body("api_error", "internal error"),
        _ => return None,
    })
}

async fn count_tokens(
    AxState(st): AxState<SharedCode>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("{LLM_PATH}/messages/count_tokens");
    let mut s = st.lock().unwrap();
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    log(&mut s, &path, json!({"body": request}));
    if let Err(r) = authorize(&mut s, &headers, &path) {
        return *r;
    }
    Json(json!({"input_tokens": input_tokens(&request)})).into_response()
}

#[derive(Deserialize)]
struct CatalogueQuery {
    region: Option<String>,
    #[serde(rename = "buildEnv")]
    build_env: Option<String>,
}

async fn catalogue(
    AxState(st): AxState<SharedCode>,
    Query(q): Query<CatalogueQuery>,
    headers: HeaderMap,
) -> Response {
    let mut s = st.lock().unwrap();
    log(&mut s, "/mavis/api/v1/models", json!({"region": q.region}));
    if let Some(f) = s.take_fault("catalogue", None) {
        return fault_answer(&f.kind);
    }
    if headers.contains_key("authorization") {
        // The bearer is optional here; a known one is checked as elsewhere.
        if let Err(r) = authorize(&mut s, &headers, "/mavis/api/v1/models") {
            return *r;
        }
    }
    let region = s.settings.region.clone();
    if q.region.as_deref() != Some(&region) || q.build_env.as_deref() != Some("prod") {
        return Json(json!({"version": "0", "ttlSeconds": 300, "providers": []})).into_response();
    }
    let models: serde_json::Map<String, Value> = MODELS
        .iter()
        .map(|(id, context, images, mode)| {
            let input = if *images { json!(["text", "image", "video"]) } else { json!(["text"]) };
            (
                id.to_string(),
                json!({"name": id.trim_start_matches("MiniMax-"), "limit": {"context": context, "output": 128000},
                    "modalities": {"input": input, "output": ["text"]}, "thinking_config": {"mode": mode}}),
            )
        })
        .collect();
    let order: Vec<&str> = MODELS.iter().map(|(id, ..)| *id).collect();
    Json(json!({"version": "sim-1", "ttlSeconds": 300, "providers": [
        {"providerId": "minimax", "config": {"model_order": order, "models": models}}]}))
    .into_response()
}

async fn credits(AxState(st): AxState<SharedCode>, headers: HeaderMap) -> Response {
    let mut s = st.lock().unwrap();
    log(&mut s, "/minimax-cloud/api/v1/credit/details", json!({}));
    let account = match authorize(&mut s, &headers, "/minimax-cloud/api/v1/credit/details") {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let info = s.accounts.get(&account).cloned().unwrap_or_default();
    let credits = info.credits.unwrap_or_else(|| "800.00".into());
    let mut details = vec![
        json!({"remaining_amount": credits, "consumed_amount": "0.00",
        "granted_amount": credits, "credit_type": "grant", "granted_at_ms": 0, "expire_at_ms": 4102444800000u64}),
    ];
    if let Some(expired) = info.expired_credits {
        details.push(json!({"remaining_amount": expired, "consumed_amount": "0.00",
            "granted_amount": expired, "credit_type": "gift", "granted_at_ms": 0, "expire_at_ms": 1000}));
    }
    Json(json!({"details": details, "total_count": details.len(),
        "base_resp": {"status_code": 0, "status_msg": ""}}))
    .into_response()
}

/// The Token Plan's windows (section 7): the 5-hour window and the week,
/// on the simulator clock, in milliseconds.
async fn plan_remains(AxState(st): AxState<SharedCode>, headers: HeaderMap) -> Response {
    let mut s = st.lock().unwrap();
    let path = "/v1/api/openplatform/coding_plan/remains";
    log(&mut s, path, json!({}));
    let account = match authorize(&mut s, &headers, path) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let info = s.accounts.get(&account).cloned().unwrap_or_default();
    let failure = |code: u32, message: &str| {
        Json(json!({"base_resp": {"status_code": code, "status_msg": message}})).into_response()
    };
    match info.plan.as_deref().unwrap_or("active") {
        "none" => return failure(2062, "no active token plan subscription"),
        "login_fail" => return failure(1004, "login fail: Please carry the API secret key"),
        _ => {}
    }
    let now_ms = (s.now() * 1000.0) as u64;
    let (five_hours, week) = (5 * 3600 * 1000u64, 7 * 24 * 3600 * 1000u64);
    let (start, weekly_start) = (now_ms - now_ms % five_hours, now_ms - now_ms % week);
    let percent = info.plan_remaining_percent.unwrap_or(100.0);
    let status = if info.plan_unlimited { 3 } else { 1 };
    Json(json!({"model_remains": [{
        "model_name": "general",
        "start_time": start, "end_time": start + five_hours,
        "current_interval_total_count": 1500, "current_interval_usage_count": 0,
        "current_interval_remaining_percent": percent, "current_interval_status": status,
        "weekly_start_time": weekly_start, "weekly_end_time": weekly_start + week,
        "current_weekly_total_count": 15000, "current_weekly_usage_count": 0,
        "current_weekly_remaining_percent": 100, "current_weekly_status": status,
    }], "base_resp": {"status_code": 0, "status_msg": "success"}}))
    .into_response()
}

mod control {
    use super::*;

    pub async fn state(AxState(st): AxState<SharedCode>) -> Json<Value> {
        let s = st.lock().unwrap();
        let accounts: Vec<&String> = s.accounts.keys().collect();
        Json(
            json!({"protocol": "minimax-code", "settings": s.settings, "accounts": accounts,
            "counts": s.counts, "violations": s.violations.len(), "clock_offset_s": s.clock_offset}),
        )
    }

    pub async fn reset(AxState(st): AxState<SharedCode>) -> Json<Value> {
        let mut s = st.lock().unwrap();
        let region = s.settings.region.clone();
        *s = CodeState::with_region(&region);
        Json(json!({"ok": true}))
    }

    pub async fn settings(
        AxState(st): AxState<SharedCode>,
        Json(patch): Json<Value>,
    ) -> Json<Value> {
        Json(crate::patch_settings(
            &mut st.lock().unwrap().settings,
            &patch,
        ))
    }

    #[derive(Deserialize)]
    pub struct Clock {
        advance_s: f64,
    }

    pub async fn clock(AxState(st): AxState<SharedCode>, Json(c): Json<Clock>) -> Json<Value> {
        let mut s = st.lock().unwrap();
        s.clock_offset += c.advance_s;
        Json(json!({"clock_offset_s": s.clock_offset}))
    }

    pub async fn pending(AxState(st): AxState<SharedCode>) -> Json<Value> {
        let s = st.lock().unwrap();
        let now = s.now();
        let codes: Vec<&str> = s
            .devices
            .values()
            .filter(|d| d.approved.is_none() && !d.denied && now < d.expires_at)
            .map(|d| d.user_code.as_str())
            .collect();
        Json(json!({"user_codes": codes}))
    }

    #[derive(Deserialize)]
    pub struct Approve {
        user_code: String,
        #[serde(default)]
        account: Option<String>,
    }

    pub async fn approve(AxState(st): AxState<SharedCode>, Json(a): Json<Approve>) -> Response {
        let mut s = st.lock().unwrap();
        let account = a.account.unwrap_or_else(|| "default".into());
        match s.devices.values_mut().find(|d| d.user_code == a.user_code) {
            Some(d) => {
                d.approved = Some(account);
                Json(json!({"ok": true})).into_response()
            }
            None => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "no such user code"})),
            )
                .into_response(),
        }
    }

    pub async fn deny(AxState(st): AxState<SharedCode>, Json(a): Json<Approve>) -> Response {
        let mut s = st.lock().unwrap();
        match s.devices.values_mut().find(|d| d.user_code == a.user_code) {
            Some(d) => {
                d.denied = true;
                Json(json!({"ok": true})).into_response()
            }
            None => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "no such user code"})),
            )
                .into_response(),
        }
    }

    pub async fn script(AxState(st): AxState<SharedCode>, Json(sc): Json<Script>) -> Json<Value> {
        st.lock().unwrap().scripts.push_back(sc);
        Json(json!({"ok": true}))
    }

    pub async fn fault(AxState(st): AxState<SharedCode>, Json(f): Json<Fault>) -> Json<Value> {
        st.lock().unwrap().faults.push(f);
        Json(json!({"ok": true}))
    }

    #[derive(Deserialize)]
    pub struct SetAccount {
        account: String,
        #[serde(flatten)]
        info: AccountInfo,
    }

    pub async fn accounts(
        AxState(st): AxState<SharedCode>,
        Json(a): Json<SetAccount>,
    ) -> Json<Value> {
        st.lock().unwrap().accounts.insert(a.account, a.info);
        Json(json!({"ok": true}))
    }

    pub async fn violations(AxState(st): AxState<SharedCode>) -> Json<Value> {
        Json(json!({"violations": st.lock().unwrap().violations}))
    }

    pub async fn log(AxState(st): AxState<SharedCode>) -> Json<Value> {
        Json(json!({"requests": st.lock().unwrap().log}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_the_protocols_check() {
        let bytes: Vec<u8> = (0u8..32).collect();
        let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(verifier, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
        assert_eq!(
            pkce(&verifier),
            "6oZqdX5MOLq_qBJ8vppAnT4fk6AP8UiP9zX8-Rev_9A"
        );
    }

    #[test]
    fn usage_follows_the_rule_and_answers_are_cut_at_max_tokens() {
        let body = json!({"model": "MiniMax-M3", "max_tokens": 2,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "12345678"}, {"type": "image"}]}]});
        assert_eq!(input_tokens(&body), 2 + 100);
        let mut s = CodeState::default();
        let (blocks, stop, output, thinking) = compose(&mut s, "a", &body);
        assert_eq!(stop, "max_tokens");
        assert_eq!(output, 2);
        assert_eq!(thinking, 0, "M3 thinks only when asked");
        assert_eq!(blocks[0]["text"].as_str().unwrap().len(), 8);
    }

    #[test]
    fn text_deltas_are_measured_by_their_bytes() {
        let f = frame(json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "héllo"}}));
        assert_eq!(text_delta_len(&f), Some(6));
        assert_eq!(text_delta_len(&frame(json!({"type": "ping"}))), None);
    }

    #[test]
    fn tool_results_must_follow_their_calls() {
        let mut s = CodeState::default();
        let ok = json!({"model": "MiniMax-M3", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": "x"}]}]});
        assert!(check_request(&mut s, &ok).is_ok());
        let orphan = json!({"model": "MiniMax-M3", "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": "x"}]}]});
        assert!(check_request(&mut s, &orphan).is_err());
        let unanswered = json!({"model": "MiniMax-M3", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}]}]});
        assert!(check_request(&mut s, &unanswered).is_err());
        let m31 = json!({"model": "MiniMax-M3.1-Flash-Preview", "thinking": {"type": "disabled"},
            "messages": [{"role": "user", "content": "hi"}]});
        assert!(check_request(&mut s, &m31).is_err());
        assert_eq!(s.violations.len(), 1);
    }
}
