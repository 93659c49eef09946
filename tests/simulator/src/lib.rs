//! A loopback simulator of MiniMax's chat backends, for tests and offline
//! use: MiniMax Code's managed gateway (`minimax-code-protocol.md`, section
//! 8; `code.rs`, with its own state and `/_sim/` controls), the Hailuo AI web
//! protocol (`hailuo-web-protocol.md`, sections 1–6; `hailuo.rs`) and the
//! MiniMax Agent web protocol (`minimax-agent-protocol.md`; `agent.rs`), one
//! per instance. It checks every
//! call the way the real service would (token, query keys and order, time,
//! signatures, a registered device), answers the way the real service does, and
//! records conversations, deletions and protocol violations.
//!
//! Tests drive it through `/__sim/*`: see `control` below.

pub mod agent;
pub mod api;
pub mod checks;
pub mod code;
pub mod hailuo;
pub mod state;
pub mod upload;
pub mod voice;

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use state::{Fault, State};

pub type Shared = Arc<Mutex<State>>;

/// Which protocol an instance speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Hailuo,
    Agent,
}

pub const CODE_SIGNATURE: i64 = 1_000_001;
pub const CODE_TOKEN_EXPIRED: i64 = 1004;
pub const CODE_BUSY: i64 = 1_000_102;
pub const CODE_NO_CONVERSATION: i64 = 1_000_404;
pub const CODE_OVERLOADED: i64 = 1_000_003;
pub const CODE_HEARTBEAT: i64 = 1_200_012;

pub fn router(state: Shared, protocol: Protocol) -> Router {
    let protocol_routes = match protocol {
        Protocol::Hailuo => hailuo::routes(),
        Protocol::Agent => agent::routes(),
    };
    protocol_routes
        .route("/__sim/state", get(control::state))
        .route("/__sim/reset", post(control::reset))
        .route("/__sim/settings", post(control::settings))
        .route("/__sim/faults", post(control::fault))
        .route("/__sim/replies", post(control::replies))
        .route("/__sim/expire", post(control::expire))
        .route("/__sim/revive", post(control::revive))
        .fallback(unknown)
        .with_state(state)
}

/// Serve on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    protocol: Protocol,
) -> std::io::Result<()> {
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state, protocol)).await
}

pub(crate) fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

pub(crate) fn envelope(code: i64, message: &str, data: Value) -> Response {
    Json(json!({"statusInfo": {"code": code, "message": message}, "data": data})).into_response()
}

/// What both services answer for an expired token.
pub(crate) const EXPIRED: &str = "登录已过期，请重新登录";

/// `/v1/api/user/info` for a live token (both protocols).
pub(crate) fn user_info_answer(token: &str) -> Response {
    envelope(
        0,
        "成功",
        json!({"userInfo": {"userID": checks::fingerprint(token), "nickName": "模拟器"}}),
    )
}

pub(crate) fn failure(code: i64, message: &str) -> Response {
    Json(json!({"statusInfo": {"code": code, "message": message}})).into_response()
}

/// What the `Yy` of a call covers besides the URI.
pub(crate) fn body_text(body: &Bytes) -> String {
    if body.is_empty() {
        "{}".into()
    } else {
        String::from_utf8_lossy(body).into_owned()
    }
}

async fn unknown(
    AxState(st): AxState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get("token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    st.lock()
        .unwrap()
        .violation(method.as_str(), uri.path(), token, "no such endpoint");
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// The nonce of the gateway's tool contract: the one in the prompt's last
/// `<tool_call id="…">` (the instruction comes last in the prompt; earlier
/// tags are history with the same nonce, or quotes with foreign ones).
pub fn tool_nonce(prompt: &str) -> Option<String> {
    const OPEN: &str = "<tool_call id=\"";
    let at = prompt.rfind(OPEN)?;
    let nonce = prompt[at + OPEN.len()..].split('"').next()?;
    (!nonce.is_empty()).then(|| nonce.to_string())
}

/// The text a repeat turn asks the model to say verbatim (protocol section
/// 8's reference prompt), if the prompt is one.
pub fn repeated_text(prompt: &str) -> Option<String> {
    let rest = prompt.strip_prefix("user:完整复述以下内容")?;
    let (_, rest) = rest.split_once('\n')?;
    let (text, _) = rest.rsplit_once("\nassistant:")?;
    Some(text.to_string())
}

/// The echo answer of a turn.
pub fn compose_answer(prompt: &str, turn: usize) -> String {
    let echo = prompt
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && *l != "assistant:")
        .unwrap_or("");
    let echo = echo
        .split_once(':')
        .filter(|(r, _)| ["user", "system", "assistant", "tool"].contains(r))
        .map_or(echo, |(_, t)| t);
    let echo: String = echo.chars().take(80).collect();
    let mut answer = format!("海螺模拟器第{turn}轮回答：你说的是「{echo}」。");
    let wanted = prompt
        .split("[sim:len=")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0)
        .min(2_000_000);
    const FILLER: &str = "The quick brown fox jumps over the lazy dog. 敏捷的棕色狐狸跳过了懒狗。";
    while answer.len() < wanted {
        answer.push_str(FILLER);
    }
    if wanted > 0 {
        let mut cut = wanted.min(answer.len());
        while !answer.is_char_boundary(cut) {
            cut -= 1;
        }
        answer.truncate(cut);
    }
    answer
}

/// `settings` with the fields of `patch` replaced (a patch that does not fit
/// leaves them as they were): what `/__sim/settings` and `/_sim/settings`
/// answer, the settings now.
pub(crate) fn patch_settings<T>(settings: &mut T, patch: &Value) -> Value
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut current = serde_json::to_value(&*settings).unwrap();
    if let (Some(cur), Some(p)) = (current.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            cur.insert(k.clone(), v.clone());
        }
    }
    if let Ok(next) = serde_json::from_value(current) {
        *settings = next;
    }
    serde_json::to_value(&*settings).unwrap()
}

mod control {
    use super::*;

    pub async fn state(AxState(st): AxState<Shared>) -> Json<Value> {
        Json(st.lock().unwrap().snapshot())
    }

    pub async fn reset(AxState(st): AxState<Shared>) -> Json<Value> {
        // Registered devices outlive a reset, as they do upstream.
        let mut s = st.lock().unwrap();
        let devices = std::mem::take(&mut s.devices);
        *s = State {
            devices,
            ..State::default()
        };
        Json(json!({"ok": true}))
    }

    pub async fn settings(AxState(st): AxState<Shared>, Json(patch): Json<Value>) -> Json<Value> {
        Json(patch_settings(&mut st.lock().unwrap().settings, &patch))
    }

    #[derive(serde::Deserialize)]
    pub struct Replies {
        replies: Vec<String>,
    }

    /// Queue answers for the next turns: the model's text, `{nonce}` where
    /// the tool contract's nonce goes (tool calls, invalid calls, foreign
    /// nonces, JSON in a fence: whatever the test needs the model to write).
    pub async fn replies(AxState(st): AxState<Shared>, Json(b): Json<Replies>) -> Json<Value> {
        st.lock().unwrap().replies.extend(b.replies);
        Json(json!({"ok": true}))
    }

    pub async fn fault(AxState(st): AxState<Shared>, Json(fault): Json<Fault>) -> Json<Value> {
        st.lock().unwrap().faults.push_back(fault);
        Json(json!({"ok": true}))
    }

    #[derive(serde::Deserialize)]
    pub struct TokenBody {
        token: String,
    }

    pub async fn expire(AxState(st): AxState<Shared>, Json(b): Json<TokenBody>) -> Json<Value> {
        st.lock().unwrap().expired.insert(b.token);
        Json(json!({"ok": true}))
    }

    pub async fn revive(AxState(st): AxState<Shared>, Json(b): Json<TokenBody>) -> Json<Value> {
        st.lock().unwrap().expired.remove(&b.token);
        Json(json!({"ok": true}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_echo_the_newest_line_and_pad_on_request() {
        let a = compose_answer("system:x\nuser:你好\nassistant:", 1);
        assert!(a.contains("第1轮") && a.contains("「你好」"), "{a}");
        let long = compose_answer("hi [sim:len=1000]", 2);
        assert!(long.len() <= 1000 && long.len() > 990, "{}", long.len());
    }
}
