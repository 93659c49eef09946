//! A loopback simulator of the Hailuo AI web backend (`hailuo-web-protocol.md`,
//! sections 1–6). It checks every call the way the real service would (token,
//! query keys and order, `unix`, `Yy`, a registered device), streams answers the
//! way the real service does (cumulative content, heartbeats, U+FFFD partial
//! characters, `isEnd`, the `type 8` marker), refuses a second concurrent chat on
//! one token, and records conversations, deletions and protocol violations.
//!
//! Tests drive it through `/__sim/*`: see `control` below.

pub mod checks;
pub mod state;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Multipart, Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use checks::{fingerprint, md5_hex, parse_device_query, yy, DeviceParams};
use state::{Conversation, Fault, FaultKind, Settings, State, Turn};

pub type Shared = Arc<Mutex<State>>;

const ORIGIN: &str = "https://hailuoai.com";
pub const CODE_SIGNATURE: i64 = 1_000_001;
pub const CODE_TOKEN_EXPIRED: i64 = 1004;
pub const CODE_BUSY: i64 = 1_000_102;
pub const CODE_NO_CONVERSATION: i64 = 1_000_404;
pub const CODE_OVERLOADED: i64 = 1_000_003;
pub const CODE_HEARTBEAT: i64 = 1_200_012;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/api/user/device/register", post(register))
        .route("/v1/api/user/info", get(user_info))
        .route("/v4/api/chat/msg", post(chat))
        .route("/v1/api/chat/history/{chat_id}", delete(delete_chat))
        .route("/__sim/state", get(control::state))
        .route("/__sim/reset", post(control::reset))
        .route("/__sim/settings", post(control::settings))
        .route("/__sim/faults", post(control::fault))
        .route("/__sim/expire", post(control::expire))
        .route("/__sim/revive", post(control::revive))
        .fallback(unknown)
        .with_state(state)
}

/// Serve on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: Shared) -> std::io::Result<()> {
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state)).await
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

fn envelope(code: i64, message: &str, data: Value) -> Response {
    Json(json!({"statusInfo": {"code": code, "message": message}, "data": data})).into_response()
}

fn failure(code: i64, message: &str) -> Response {
    Json(json!({"statusInfo": {"code": code, "message": message}})).into_response()
}

/// What the `Yy` of a call covers besides the URI.
enum Signed<'a> {
    Json(&'a str),
    ChatForm(String),
}

/// A call refused for breaking the protocol (already recorded as a violation).
struct Refused;

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        failure(CODE_SIGNATURE, "请求签名校验失败")
    }
}

struct Verified {
    token: String,
    device: DeviceParams,
}

/// The checks every protocol call gets. A violation is recorded and refused
/// with the envelope error the service gives for a bad signature.
fn verify(
    st: &Shared,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    raw_query: Option<&str>,
    signed: Signed<'_>,
    registering: bool,
) -> Result<Verified, Refused> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let token = header("token");
    let mut s = st.lock().unwrap();
    s.calls.push(state::Call {
        method: method.to_string(),
        path: path.into(),
        token_fp: fingerprint(&token),
    });
    let refuse = |s: &mut State, problem: String| {
        s.violation(method.as_str(), path, &token, problem);
        Err(Refused)
    };
    if token.is_empty() {
        return refuse(&mut s, "no `Token` header".into());
    }
    if !header("authorization").is_empty() {
        return refuse(
            &mut s,
            "the token belongs in `Token`, not `Authorization`".into(),
        );
    }
    let device = match parse_device_query(raw_query.unwrap_or(""), now_ms()) {
        Ok(d) => d,
        Err(problem) => return refuse(&mut s, problem),
    };
    let data = match &signed {
        Signed::Json(body) => body.to_string(),
        Signed::ChatForm(data) => data.clone(),
    };
    let expected = yy(&device.signed_uri(path), &data, &device.unix);
    if header("yy") != expected {
        return refuse(
            &mut s,
            format!("`Yy` is {:?}, expected {expected}", header("yy")),
        );
    }
    if header("origin") != ORIGIN {
        return refuse(&mut s, format!("`Origin` is {:?}", header("origin")));
    }
    if !header("referer").starts_with(&format!("{ORIGIN}/")) {
        return refuse(&mut s, format!("`Referer` is {:?}", header("referer")));
    }
    if !header("user-agent").contains("Chrome/") {
        return refuse(&mut s, "`User-Agent` is not a desktop Chrome".into());
    }
    for name in ["sentry-trace", "baggage", "sec-ch-ua", "sec-fetch-mode"] {
        if header(name).is_empty() {
            return refuse(&mut s, format!("no `{name}` header"));
        }
    }
    if registering {
        if device.device_id.is_some() {
            return refuse(&mut s, "device registration carries a device_id".into());
        }
    } else {
        let known = s.devices.get(&token).is_some_and(|list| {
            list.iter()
                .any(|(u, d)| *u == device.uuid && Some(d) == device.device_id.as_ref())
        });
        if !known {
            return refuse(
                &mut s,
                "uuid/device_id were not registered for this token".into(),
            );
        }
    }
    Ok(Verified { token, device })
}

fn body_text(body: &Bytes) -> String {
    if body.is_empty() {
        "{}".into()
    } else {
        String::from_utf8_lossy(body).into_owned()
    }
}

async fn register(
    AxState(st): AxState<Shared>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let path = "/v1/api/user/device/register";
    let text = body_text(&body);
    let v = match verify(
        &st,
        &method,
        path,
        &headers,
        q.as_deref(),
        Signed::Json(&text),
        true,
    ) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let mut s = st.lock().unwrap();
    let body_uuid = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|b| b["uuid"].as_str().map(str::to_string));
    if body_uuid.as_deref() != Some(v.device.uuid.as_str()) {
        s.violation(
            "POST",
            path,
            &v.token,
            "body `uuid` differs from the query's uuid",
        );
        return failure(CODE_SIGNATURE, "参数错误");
    }
    if s.expired.contains(&v.token) {
        return failure(CODE_TOKEN_EXPIRED, "登录已过期，请重新登录");
    }
    let device_id = format!("2451131908126{:06}", s.next_id + 100_000);
    s.next_id += 1;
    s.devices
        .entry(v.token)
        .or_default()
        .push((v.device.uuid, device_id.clone()));
    envelope(0, "成功", json!({"deviceIDStr": device_id}))
}

async fn user_info(
    AxState(st): AxState<Shared>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let text = body_text(&body);
    let v = match verify(
        &st,
        &method,
        "/v1/api/user/info",
        &headers,
        q.as_deref(),
        Signed::Json(&text),
        false,
    ) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if st.lock().unwrap().expired.contains(&v.token) {
        return failure(CODE_TOKEN_EXPIRED, "登录已过期，请重新登录");
    }
    envelope(
        0,
        "成功",
        json!({"userInfo": {"userID": fingerprint(&v.token), "nickName": "海螺模拟器"}}),
    )
}

async fn delete_chat(
    AxState(st): AxState<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(chat_id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let path = format!("/v1/api/chat/history/{chat_id}");
    let text = body_text(&body);
    let v = match verify(
        &st,
        &method,
        &path,
        &headers,
        q.as_deref(),
        Signed::Json(&text),
        false,
    ) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let mut s = st.lock().unwrap();
    if s.expired.contains(&v.token) {
        return failure(CODE_TOKEN_EXPIRED, "登录已过期，请重新登录");
    }
    match s.conversation_mut(&chat_id) {
        Some(c) if c.token == v.token && !c.deleted => {
            c.deleted = true;
            envelope(0, "成功", json!({}))
        }
        _ => failure(CODE_NO_CONVERSATION, "对话不存在"),
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

/// The multipart chat call.
async fn chat(
    AxState(st): AxState<Shared>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    mut form: Multipart,
) -> Response {
    let path = "/v4/api/chat/msg";
    let mut fields: Vec<(String, String)> = Vec::new();
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_string();
                let value = field.text().await.unwrap_or_default();
                fields.push((name, value));
            }
            Ok(None) => break,
            Err(e) => {
                st.lock().unwrap().violation(
                    "POST",
                    path,
                    "",
                    format!("unreadable multipart body: {e}"),
                );
                return failure(CODE_SIGNATURE, "参数错误");
            }
        }
    }
    let field = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let character_id = field("characterID").unwrap_or_default();
    let content = field("msgContent").unwrap_or_default();
    let chat_id = field("chatID").unwrap_or_default();
    let form_field = field("form");
    let flat: String = content
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .collect();
    let data = format!(
        "{}{}{}{}",
        md5_hex(&character_id),
        md5_hex(flat),
        md5_hex(&chat_id),
        md5_hex(form_field.as_deref().unwrap_or(""))
    );
    let v = match verify(
        &st,
        &method,
        path,
        &headers,
        q.as_deref(),
        Signed::ChatForm(data),
        false,
    ) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let token = v.token;
    {
        let mut s = st.lock().unwrap();
        let mut problems = Vec::new();
        if let Some((k, _)) = fields.iter().find(|(_, v)| v.is_empty()) {
            problems.push(format!("form field `{k}` is sent empty (leave it out)"));
        }
        if character_id != "1" || field("searchMode").as_deref() != Some("0") || chat_id.is_empty()
        {
            problems.push("form needs characterID=1, chatID and searchMode=0".to_string());
        }
        if content.is_empty() && form_field.is_none() {
            problems.push("chat without msgContent".to_string());
        }
        let accept = headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if accept != "text/event-stream" {
            problems.push(format!(
                "chat `Accept` is {accept:?}, expected text/event-stream"
            ));
        }
        let referer = headers
            .get("referer")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let expected = if chat_id == "0" {
            format!("{ORIGIN}/")
        } else {
            format!("{ORIGIN}/?chat={chat_id}")
        };
        if referer != expected {
            problems.push(format!(
                "chat `Referer` is {referer:?}, expected {expected:?}"
            ));
        }
        if !problems.is_empty() {
            for p in problems {
                s.violation("POST", path, &token, p);
            }
            return failure(CODE_SIGNATURE, "参数错误");
        }
        if s.expired.contains(&token) {
            return sse_once(
                json!({"type": 2, "statusInfo": {"code": CODE_TOKEN_EXPIRED, "message": "登录已过期，请重新登录"}}),
            );
        }
        if s.busy.contains(&token) {
            return failure(CODE_BUSY, "当前有对话正在进行，请稍后再试");
        }
        if chat_id != "0" {
            let owned = s
                .conversations
                .iter()
                .any(|c| c.chat_id == chat_id && c.token == token && !c.deleted);
            if !owned {
                return sse_once(
                    json!({"type": 2, "statusInfo": {"code": CODE_NO_CONVERSATION, "message": "对话不存在"}}),
                );
            }
        }
    }
    let fault = st.lock().unwrap().take_fault(&token);
    if let Some(f) = &fault {
        match f.kind {
            FaultKind::Http500 => {
                return (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response()
            }
            FaultKind::SlowFirstByte => tokio::time::sleep(Duration::from_millis(f.delay_ms)).await,
            _ => {}
        }
    }
    let (chat_id, turn, is_new, msg_id, settings) = {
        let mut s = st.lock().unwrap();
        if s.busy.contains(&token) {
            return failure(CODE_BUSY, "当前有对话正在进行，请稍后再试");
        }
        s.busy.insert(token.clone());
        let (id, turn, is_new) = if chat_id == "0" {
            (s.new_id(), 1, true)
        } else {
            let turns = s.conversation_mut(&chat_id).map_or(0, |c| c.turns.len());
            (chat_id, turns + 1, false)
        };
        (id, turn, is_new, s.new_id(), s.settings.clone())
    };
    let answer = compose_answer(&content, turn);
    let guard = Busy {
        st: st.clone(),
        token: token.clone(),
        chat_id: chat_id.clone(),
        done: false,
    };
    let opening = Opening {
        token,
        prompt: content.clone(),
        is_new,
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let fault = fault.filter(|f| f.kind != FaultKind::SlowFirstByte);
    tokio::spawn(stream_answer(
        guard,
        opening,
        chat_id,
        msg_id,
        answer,
        settings,
        fault,
        search_requested(&content),
        tx,
    ));
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap()
}

fn sse_once(event: Value) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .body(Body::from(format!(
            "event: message_result\ndata: {event}\n\n"
        )))
        .unwrap()
}

/// A turn not yet announced: the conversation exists (and the turn is recorded)
/// once the first event carrying its `chatID` has been sent.
struct Opening {
    token: String,
    prompt: String,
    is_new: bool,
}

impl Opening {
    fn record(self, st: &Shared, chat_id: &str) {
        let mut s = st.lock().unwrap();
        if self.is_new {
            s.conversations.push(Conversation {
                chat_id: chat_id.to_string(),
                token_fp: fingerprint(&self.token),
                token: self.token,
                turns: vec![],
                deleted: false,
                completed: false,
                client_went_away: false,
                sent: vec![],
            });
        }
        if let Some(c) = s.conversation_mut(chat_id) {
            c.completed = false;
            c.sent.clear();
            c.turns.push(Turn {
                prompt: self.prompt,
                answer: String::new(),
            });
        }
    }
}

/// Marks the token free again, and records how the answer ended.
struct Busy {
    st: Shared,
    token: String,
    chat_id: String,
    done: bool,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut s = self.st.lock().unwrap();
        s.busy.remove(&self.token);
        let done = self.done;
        if let Some(c) = s.conversation_mut(&self.chat_id) {
            c.completed = done;
            c.client_went_away = !done;
        }
    }
}

fn search_requested(prompt: &str) -> bool {
    prompt.contains("[sim:search]")
}

/// A deterministic answer: it names the turn and echoes the newest line, so
/// tests can tell continued conversations and prompts apart. `[sim:len=N]`
/// pads it to N bytes.
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

fn frame(event: &Value) -> Bytes {
    Bytes::from(format!("event: message_result\ndata: {event}\n\n"))
}

#[allow(clippy::too_many_arguments)]
async fn stream_answer(
    mut guard: Busy,
    opening: Opening,
    chat_id: String,
    msg_id: String,
    answer: String,
    settings: Settings,
    fault: Option<Fault>,
    search: bool,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let links = json!({"netSearchStatus": {"linkDetail": [
        {"url": "https://sim.hailuoai.invalid/source/1", "detail": "海螺模拟器来源一"},
        {"url": "https://sim.hailuoai.invalid/source/2", "detail": "Simulator source two"}]}});
    let message = |content: &str, is_end: i64, with_links: bool| {
        let mut result =
            json!({"chatID": chat_id, "msgID": msg_id, "isEnd": is_end, "content": content});
        if with_links {
            result["extra"] = links.clone();
        }
        json!({"type": 2, "statusInfo": {"code": 0, "message": "成功"}, "data": {"messageResult": result}})
    };
    let send = |b: Bytes| {
        let tx = tx.clone();
        async move { tx.send(Ok(b)).await.is_ok() }
    };
    let mut opening = Some(opening);
    let heartbeat =
        frame(&json!({"type": 3, "statusInfo": {"code": CODE_HEARTBEAT, "message": "心跳"}}));
    if !send(heartbeat.clone()).await {
        return;
    }
    let bytes = answer.as_bytes();
    let step = settings.chunk_bytes.max(1);
    let mut end = 0;
    let mut sent = 0u32;
    while end < bytes.len() {
        end = (end + step).min(bytes.len());
        if let Some(f) = fault.as_ref().filter(|f| sent == f.after_events) {
            match f.kind {
                FaultKind::Disconnect => {
                    let _ = tx
                        .send(Err(std::io::Error::other("simulated disconnect")))
                        .await;
                    return;
                }
                FaultKind::MalformedSse => {
                    let _ = send(Bytes::from_static(
                        b"event: message_result\ndata: {\"type\":2,\"statusInfo\":{\"code\n\n",
                    ))
                    .await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return;
                }
                FaultKind::ErrorEvent => {
                    let e = json!({"type": 2, "statusInfo": {"code": CODE_OVERLOADED, "message": "服务繁忙，请稍后再试"}});
                    let _ = send(frame(&e)).await;
                    return;
                }
                FaultKind::Stall => tokio::time::sleep(Duration::from_millis(f.delay_ms)).await,
                _ => {}
            }
        }
        // Cut anywhere: a split multi-byte character shows as U+FFFD.
        let partial = String::from_utf8_lossy(&bytes[..end]);
        let sent_at = std::time::Instant::now();
        if !send(frame(&message(
            &partial,
            1,
            search && end * 2 >= bytes.len(),
        )))
        .await
        {
            return;
        }
        if sent == 0 {
            if let Some(o) = opening.take() {
                o.record(&guard.st, &chat_id);
            }
        }
        let whole = (0..=end)
            .rev()
            .find(|i| answer.is_char_boundary(*i))
            .unwrap_or(0);
        if let Some(c) = guard.st.lock().unwrap().conversation_mut(&chat_id) {
            c.sent.push((sent_at, whole));
        }
        sent += 1;
        if settings.heartbeat_every > 0
            && (sent as usize).is_multiple_of(settings.heartbeat_every)
            && !send(heartbeat.clone()).await
        {
            return;
        }
        if settings.pace_ms > 0 {
            tokio::time::sleep(Duration::from_millis(settings.pace_ms)).await;
        }
    }
    // The final event repeats the whole text with isEnd 0, then the type 8 marker.
    if !send(frame(&message(&answer, 0, search))).await {
        return;
    }
    if let Some(o) = opening.take() {
        o.record(&guard.st, &chat_id);
    }
    if !send(frame(&json!({"type": 8}))).await {
        return;
    }
    {
        let mut s = guard.st.lock().unwrap();
        if let Some(c) = s.conversation_mut(&chat_id) {
            if let Some(t) = c.turns.last_mut() {
                t.answer = answer.clone();
            }
        }
    }
    guard.done = true;
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
        let mut s = st.lock().unwrap();
        let mut current = serde_json::to_value(&s.settings).unwrap();
        if let (Some(cur), Some(p)) = (current.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                cur.insert(k.clone(), v.clone());
            }
        }
        if let Ok(next) = serde_json::from_value(current) {
            s.settings = next;
        }
        Json(serde_json::to_value(&s.settings).unwrap())
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
