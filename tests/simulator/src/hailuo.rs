//! The Hailuo AI web protocol (`hailuo-web-protocol.md`, sections 1–6; uploads
//! in `upload.rs`, speech in `voice.rs`): device
//! registration, user info, the multipart chat call streaming cumulative
//! content (heartbeats, U+FFFD partial characters, `isEnd`, the `type 8`
//! marker), deletion; one answer per token at a time.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Multipart, Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::checks::{fingerprint, md5_hex, parse_query, yy, ParsedQuery, HAILUO_QUERY};
use crate::state::{Conversation, Fault, FaultKind, Settings, State, Turn};
use crate::upload;
use crate::voice;
use crate::{
    body_text, envelope, failure, now_ms, user_info_answer, Shared, CODE_BUSY, CODE_HEARTBEAT,
    CODE_NO_CONVERSATION, CODE_OVERLOADED, CODE_SIGNATURE, CODE_TOKEN_EXPIRED, EXPIRED,
};

const ORIGIN: &str = "https://hailuoai.com";

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/api/user/device/register", post(register))
        .route("/v1/api/user/info", get(user_info))
        .route("/v4/api/chat/msg", post(chat))
        .route("/v1/api/chat/history/{chat_id}", delete(delete_chat))
        .route("/v1/api/files/request_policy", get(upload::request_policy))
        .route(
            "/v1/api/chat/update_robot_custom_config",
            post(voice::set_voice),
        )
        .route("/v1/api/chat/msg_tts", get(voice::msg_tts))
        .route("/cdn/tts/{msg_id}/{part}", get(voice::part))
        .route(
            "/v1/api/chat/phone_msg",
            post(voice::phone_msg).layer(DefaultBodyLimit::max(64 << 20)),
        )
        .route(
            "/v1/api/files/policy_callback",
            post(upload::policy_callback),
        )
        // OSS takes objects of gigabytes; axum's default body cap is 2 MB.
        .route(
            &format!("/{}/{{*key}}", upload::BUCKET),
            put(upload::put_object).layer(DefaultBodyLimit::max(512 << 20)),
        )
}

/// A signed JSON call checked as `verify` does; the caller's token.
pub(crate) fn verify_json(
    st: &Shared,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    raw_query: Option<&str>,
    body: &Bytes,
) -> Result<String, Refused> {
    let text = body_text(body);
    verify(
        st,
        method,
        path,
        headers,
        raw_query,
        Signed::Json(&text),
        false,
    )
    .map(|v| v.token)
}

/// A multipart call signed over `data` (section 3), checked as `verify`
/// does; the caller's token.
pub(crate) fn verify_form(
    st: &Shared,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    raw_query: Option<&str>,
    data: String,
) -> Result<String, Refused> {
    verify(
        st,
        method,
        path,
        headers,
        raw_query,
        Signed::ChatForm(data),
        false,
    )
    .map(|v| v.token)
}

enum Signed<'a> {
    Json(&'a str),
    ChatForm(String),
}

/// A call refused for breaking the protocol (already recorded as a violation).
pub(crate) struct Refused;

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        failure(CODE_SIGNATURE, "请求签名校验失败")
    }
}

struct Verified {
    token: String,
    device: ParsedQuery,
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
    s.calls.push(crate::state::Call {
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
    let device = match parse_query(raw_query.unwrap_or(""), &HAILUO_QUERY, now_ms()) {
        Ok(d) => d,
        Err(problem) => return refuse(&mut s, problem),
    };
    let data = match &signed {
        Signed::Json(body) => body.to_string(),
        Signed::ChatForm(data) => data.clone(),
    };
    let expected = yy(
        &device.signed_uri(path),
        &data,
        device.get("unix").unwrap_or_default(),
    );
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
        if device.get("device_id").is_some() {
            return refuse(&mut s, "device registration carries a device_id".into());
        }
    } else {
        let known = s.devices.get(&token).is_some_and(|list| {
            list.iter().any(|(u, d)| {
                Some(u.as_str()) == device.get("uuid")
                    && Some(d.as_str()) == device.get("device_id")
            })
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
    if body_uuid.as_deref() != v.device.get("uuid") {
        s.violation(
            "POST",
            path,
            &v.token,
            "body `uuid` differs from the query's uuid",
        );
        return failure(CODE_SIGNATURE, "参数错误");
    }
    if s.expired.contains(&v.token) {
        return failure(CODE_TOKEN_EXPIRED, EXPIRED);
    }
    let device_id = format!("2451131908126{:06}", s.next_id + 100_000);
    s.next_id += 1;
    s.devices.entry(v.token).or_default().push((
        v.device.get("uuid").unwrap_or_default().to_string(),
        device_id.clone(),
    ));
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
        return failure(CODE_TOKEN_EXPIRED, EXPIRED);
    }
    user_info_answer(&v.token)
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
        return failure(CODE_TOKEN_EXPIRED, EXPIRED);
    }
    match s.conversation_mut(&chat_id) {
        Some(c) if c.token == v.token && !c.deleted => {
            c.deleted = true;
            envelope(0, "成功", json!({}))
        }
        _ => failure(CODE_NO_CONVERSATION, "对话不存在"),
    }
}

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
    let mut attached = Vec::new();
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
        let files = match &form_field {
            None => Ok(vec![]),
            Some(form) => upload::check_form(&s.uploads, form, &token, &content),
        };
        match files {
            Ok(found) => attached = found,
            Err(p) => problems.push(p),
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
                json!({"type": 2, "statusInfo": {"code": CODE_TOKEN_EXPIRED, "message": EXPIRED}}),
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
    let (chat_id, is_new, msg_id, settings, answer) = {
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
        let mut answer = s.answer(&content, turn);
        // Each file the model was given, by name and digest: what a test
        // checks to prove which bytes arrived.
        for f in &attached {
            answer.push_str(&format!(
                "\n[file {} {} {} bytes sha256={}]",
                f["originFileName"].as_str().unwrap_or_default(),
                f["mimeType"].as_str().unwrap_or_default(),
                f["size"],
                f["sha256"].as_str().unwrap_or_default()
            ));
        }
        let msg_id = s.new_id();
        s.messages.insert(msg_id.clone(), id.clone());
        (id, is_new, msg_id, s.settings.clone(), answer)
    };
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
        files: attached,
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
    files: Vec<Value>,
}

impl Opening {
    fn record(self, st: &Shared, chat_id: &str) {
        let mut s = st.lock().unwrap();
        if self.is_new {
            s.add_conversation(Conversation::new(chat_id, &self.token));
        }
        if let Some(c) = s.conversation_mut(chat_id) {
            c.completed = false;
            c.sent.clear();
            c.turns.push(Turn {
                prompt: self.prompt,
                answer: String::new(),
                thinking: String::new(),
                files: self.files,
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
                FaultKind::Truncate => return,
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
