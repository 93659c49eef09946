//! The MiniMax Agent web protocol (`minimax-agent-protocol.md`): every call's
//! query (order and values), `x-timestamp`, `x-signature`, `yy`, the user id
//! against the JWT, a registered device; `send_msg`, a paced `get_chat_detail`
//! whose content and thinking grow with time, `delete_chat` that refuses with
//! "chat is running" while generating, user info and membership info.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{RawQuery, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::checks::{fingerprint, jwt_user_id, md5_hex, parse_query, yy, ParsedQuery, AGENT_QUERY};
use crate::state::{Conversation, FaultKind, Reveal, State, Turn};
use crate::{
    body_text, envelope, failure, now_ms, user_info_answer, Shared, CODE_NO_CONVERSATION,
    CODE_OVERLOADED, CODE_SIGNATURE, CODE_TOKEN_EXPIRED, EXPIRED,
};

const ORIGIN: &str = "https://agent.minimaxi.com";
/// Polls closer together than this are hammering the service.
const MIN_POLL_GAP: Duration = Duration::from_millis(100);

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/api/user/device/register", post(register))
        .route("/v1/api/user/info", get(user_info))
        .route("/matrix/api/v1/chat/send_msg", post(send_msg))
        .route("/matrix/api/v1/chat/get_chat_detail", post(get_chat_detail))
        .route("/matrix/api/v1/chat/delete_chat", post(delete_chat))
        .route("/matrix/api/v1/chat/list_chat", post(list_chat))
        .route(
            "/matrix/api/v1/commerce/get_membership_info",
            post(membership_info),
        )
}

fn matrix_ok(mut body: Value) -> Response {
    body["base_resp"] = json!({"status_code": 0, "status_msg": "success"});
    Json(body).into_response()
}

fn matrix_failure(code: i64, message: &str) -> Response {
    Json(json!({"base_resp": {"status_code": code, "status_msg": message}})).into_response()
}

/// A call refused for breaking the protocol (already recorded as a violation),
/// in the envelope of the path it came to.
struct Refused {
    matrix: bool,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        if self.matrix {
            matrix_failure(CODE_SIGNATURE, "signature verification failed")
        } else {
            failure(CODE_SIGNATURE, "请求签名校验失败")
        }
    }
}

struct Verified {
    token: String,
    body: Value,
}

fn is_dashed_uuid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// The checks every call gets.
fn verify(
    st: &Shared,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    raw_query: Option<&str>,
    body: &str,
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
    let matrix = path.starts_with("/matrix/");
    let mut s = st.lock().unwrap();
    s.calls.push(crate::state::Call {
        method: method.to_string(),
        path: path.into(),
        token_fp: fingerprint(&token),
    });
    let refuse = |s: &mut State, problem: String| {
        s.violation(method.as_str(), path, &token, problem);
        Err(Refused { matrix })
    };
    if token.is_empty() {
        return refuse(&mut s, "no `token` header".into());
    }
    let query: ParsedQuery = match parse_query(raw_query.unwrap_or(""), &AGENT_QUERY, now_ms()) {
        Ok(q) => q,
        Err(problem) => return refuse(&mut s, problem),
    };
    let q = |k: &str| query.get(k).unwrap_or("").to_string();
    if q("token") != token {
        return refuse(
            &mut s,
            "query `token` differs from the `token` header".into(),
        );
    }
    let unix = q("unix");
    let timestamp = unix
        .parse::<u128>()
        .map(|ms| (ms / 1000).to_string())
        .unwrap_or_default();
    if header("x-timestamp") != timestamp {
        return refuse(
            &mut s,
            format!(
                "`x-timestamp` is {:?}, expected floor(unix / 1000) = {timestamp}",
                header("x-timestamp")
            ),
        );
    }
    let signature = md5_hex(format!("{timestamp}{token}{body}"));
    if header("x-signature") != signature {
        return refuse(
            &mut s,
            format!(
                "`x-signature` is {:?}, expected {signature}",
                header("x-signature")
            ),
        );
    }
    let expected_yy = yy(&query.signed_uri(path), body, &unix);
    if header("yy") != expected_yy {
        return refuse(
            &mut s,
            format!("`yy` is {:?}, expected {expected_yy}", header("yy")),
        );
    }
    if header("origin") != ORIGIN || header("referer") != format!("{ORIGIN}/") {
        return refuse(
            &mut s,
            format!(
                "`Origin`/`Referer` are {:?}/{:?}",
                header("origin"),
                header("referer")
            ),
        );
    }
    if !header("user-agent").contains("Chrome/") {
        return refuse(&mut s, "`User-Agent` is not a desktop Chrome".into());
    }
    if *method == Method::POST && !header("content-type").starts_with("application/json") {
        return refuse(
            &mut s,
            "POST without `Content-Type: application/json`".into(),
        );
    }
    // The user id: the JWT's own, or the one the token registered with.
    let user_id = q("user_id");
    match jwt_user_id(&token) {
        Some(id) if id != user_id => {
            return refuse(
                &mut s,
                format!("query `user_id` {user_id} is not the JWT's user.id"),
            )
        }
        Some(_) => {}
        None => match s.agent_users.get(&token) {
            Some(id) if *id != user_id => {
                return refuse(&mut s, "query `user_id` changed for this token".into())
            }
            Some(_) => {}
            None if registering => {}
            None => {
                return refuse(
                    &mut s,
                    "a token without user.id was used before registering".into(),
                )
            }
        },
    }
    if registering {
        if !is_dashed_uuid(&q("uuid")) || query.get("device_id").is_some() {
            return refuse(
                &mut s,
                "registration needs a fresh dashed uuid and no device_id".into(),
            );
        }
    } else {
        if q("uuid") != user_id {
            return refuse(
                &mut s,
                "query `uuid` must be the real user id after registration".into(),
            );
        }
        let known = s.devices.get(&token).is_some_and(|list| {
            list.iter()
                .any(|(u, d)| *u == user_id && Some(d.as_str()) == query.get("device_id"))
        });
        if !known {
            return refuse(
                &mut s,
                "user id/device_id were not registered for this token".into(),
            );
        }
    }
    let body: Value = if body == "{}" && *method == Method::GET {
        json!({})
    } else {
        match serde_json::from_str(body) {
            Ok(v) => v,
            Err(_) => return refuse(&mut s, "body is not JSON".into()),
        }
    };
    if registering {
        s.agent_users.insert(token.clone(), user_id);
    }
    Ok(Verified { token, body })
}

macro_rules! verified {
    ($st:expr, $method:expr, $path:expr, $headers:expr, $q:expr, $body:expr, $registering:expr) => {
        match verify(
            &$st,
            &$method,
            $path,
            &$headers,
            $q.as_deref(),
            &body_text(&$body),
            $registering,
        ) {
            Ok(v) => v,
            Err(r) => return r.into_response(),
        }
    };
}

async fn register(
    AxState(st): AxState<Shared>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let v = verified!(
        st,
        method,
        "/v1/api/user/device/register",
        headers,
        q,
        body,
        true
    );
    let mut s = st.lock().unwrap();
    if s.expired.contains(&v.token) {
        return failure(CODE_TOKEN_EXPIRED, EXPIRED);
    }
    let user_id = s.agent_users.get(&v.token).cloned().unwrap_or_default();
    let device_id = format!("4000000000{:08}", s.next_id + 1);
    s.next_id += 1;
    s.devices
        .entry(v.token)
        .or_default()
        .push((user_id.clone(), device_id.clone()));
    envelope(
        0,
        "成功",
        json!({"deviceIDStr": device_id, "realUserID": user_id}),
    )
}

async fn user_info(
    AxState(st): AxState<Shared>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let v = verified!(st, method, "/v1/api/user/info", headers, q, body, false);
    if st.lock().unwrap().expired.contains(&v.token) {
        return failure(CODE_TOKEN_EXPIRED, EXPIRED);
    }
    user_info_answer(&v.token)
}

async fn membership_info(
    AxState(st): AxState<Shared>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let v = verified!(
        st,
        method,
        "/matrix/api/v1/commerce/get_membership_info",
        headers,
        q,
        body,
        false
    );
    if st.lock().unwrap().expired.contains(&v.token) {
        return matrix_failure(CODE_TOKEN_EXPIRED, "登录已过期");
    }
    matrix_ok(json!({"daily_login_gift_credit_remaining": 1000}))
}

/// The newest answer's progress: characters of thinking and of text shown,
/// and whether it is finished.
fn progress(turn: &Turn, reveal: &Reveal, pace_ms: u64, now: Instant) -> (usize, usize, bool) {
    let elapsed = now.duration_since(reveal.started).as_millis() as u64;
    let rate = |ms: u64| (ms * 2 / pace_ms.max(1)) as usize;
    let mut shown = rate(elapsed);
    if let Some(stall_at) = reveal.stall_at {
        if shown > stall_at {
            shown = if elapsed < reveal.stall_ms {
                stall_at
            } else {
                stall_at + rate(elapsed - reveal.stall_ms)
            };
        }
    }
    let thinking = turn.thinking.chars().count();
    let answer = turn.answer.chars().count();
    (
        shown.min(thinking),
        shown.saturating_sub(thinking).min(answer),
        shown >= thinking + answer,
    )
}

fn prefix(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

fn running(s: &State, c: &Conversation, now: Instant) -> bool {
    match (&c.reveal, c.turns.last()) {
        (Some(r), Some(t)) => !progress(t, r, s.settings.pace_ms, now).2,
        _ => false,
    }
}

async fn send_msg(
    AxState(st): AxState<Shared>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let path = "/matrix/api/v1/chat/send_msg";
    let v = verified!(st, method, path, headers, q, body, false);
    let b = &v.body;
    let shape_ok = b["msg_type"] == 1
        && b["chat_type"] == 1
        && b["text"].as_str().is_some_and(|t| !t.is_empty())
        && b["attachments"] == json!([])
        && b["selected_mcp_tools"] == json!([])
        && b["backend_config"] == json!({})
        && b["sub_agent_ids"] == json!([])
        && (b.get("chat_id").is_none() || b["chat_id"].is_string());
    let mut s = st.lock().unwrap();
    if !shape_ok {
        s.violation(
            "POST",
            path,
            &v.token,
            format!("send_msg body does not follow the protocol: {b}"),
        );
        return matrix_failure(CODE_SIGNATURE, "invalid params");
    }
    if s.expired.contains(&v.token) {
        return matrix_failure(CODE_TOKEN_EXPIRED, "登录已过期");
    }
    let fault = s.take_fault(&v.token);
    if fault.as_ref().is_some_and(|f| f.kind == FaultKind::Http500) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response();
    }
    let now = Instant::now();
    let chat_id = match b["chat_id"].as_str() {
        Some(id) => {
            let Some(c) = s
                .conversations
                .iter()
                .find(|c| c.chat_id == id && c.token == v.token && !c.deleted)
            else {
                return matrix_failure(CODE_NO_CONVERSATION, "chat not found");
            };
            if running(&s, c, now) {
                return matrix_failure(1, "chat is running");
            }
            id.to_string()
        }
        None => {
            let id = (358_861_733_337_088u64 + s.next_id).to_string();
            s.next_id += 1;
            s.add_conversation(Conversation::new(&id, &v.token));
            id
        }
    };
    let prompt = b["text"].as_str().unwrap_or_default().to_string();
    let msg_id = (558_861_733_337_000u64 + s.next_id).to_string();
    s.next_id += 1;
    let turn = s.conversation_mut(&chat_id).map_or(0, |c| c.turns.len()) + 1;
    let answer = s.answer(&prompt, turn);
    let c = s.conversation_mut(&chat_id).expect("conversation exists");
    let thinking = format!("用户在第{turn}轮发来消息，我先想一想该怎么回答。");
    c.turns.push(Turn {
        prompt,
        answer,
        thinking,
        files: vec![],
    });
    c.completed = false;
    let stall = fault.as_ref().filter(|f| f.kind == FaultKind::Stall);
    let errors = fault.as_ref().filter(|f| f.kind == FaultKind::ErrorEvent);
    c.reveal = Some(Reveal {
        started: now,
        stall_at: stall.map(|f| f.after_events as usize),
        stall_ms: stall.map_or(0, |f| f.delay_ms),
        error_after: errors.map(|f| f.after_events),
        polls: 0,
        last_poll: None,
        seen_finished: false,
    });
    matrix_ok(json!({"chat_id": chat_id, "msg_id": msg_id}))
}

async fn get_chat_detail(
    AxState(st): AxState<Shared>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let path = "/matrix/api/v1/chat/get_chat_detail";
    let v = verified!(st, method, path, headers, q, body, false);
    let mut s = st.lock().unwrap();
    let Some(chat_id) = v.body["chat_id"].as_str().map(str::to_string) else {
        s.violation(
            "POST",
            path,
            &v.token,
            "get_chat_detail needs {\"chat_id\": \"<id as a string>\"}",
        );
        return matrix_failure(CODE_SIGNATURE, "invalid params");
    };
    if s.expired.contains(&v.token) {
        return matrix_failure(CODE_TOKEN_EXPIRED, "登录已过期");
    }
    let now = Instant::now();
    let pace = s.settings.pace_ms;
    let Some(i) = s
        .conversations
        .iter()
        .position(|c| c.chat_id == chat_id && c.token == v.token && !c.deleted)
    else {
        return matrix_failure(CODE_NO_CONVERSATION, "chat not found");
    };
    let mut hammering = false;
    let mut failing = false;
    let mut messages = Vec::new();
    let mut finished = true;
    {
        let c = &mut s.conversations[i];
        let last = c.turns.len();
        for (n, turn) in c.turns.iter().enumerate() {
            messages.push(json!({"msg_id": format!("{chat_id}{n:02}1"), "msg_type": 1, "msg_content": turn.prompt}));
            let (thinking, text, done) = match (&c.reveal, n + 1 == last) {
                (Some(r), true) => progress(turn, r, pace, now),
                _ => (
                    turn.thinking.chars().count(),
                    turn.answer.chars().count(),
                    true,
                ),
            };
            if n + 1 == last {
                finished = done;
            }
            if thinking + text > 0 {
                messages.push(json!({
                    "msg_id": format!("{chat_id}{n:02}2"),
                    "msg_type": 2,
                    "msg_content": prefix(&turn.answer, text),
                    "extra_info": {"thinking_content": prefix(&turn.thinking, thinking)},
                }));
            }
        }
        if let Some(r) = c.reveal.as_mut() {
            hammering = r
                .last_poll
                .is_some_and(|t| now.duration_since(t) < MIN_POLL_GAP);
            r.last_poll = Some(now);
            r.polls += 1;
            failing = r.error_after.is_some_and(|n| r.polls > n);
            r.seen_finished |= finished;
        }
        c.completed = finished;
    }
    if hammering {
        s.violation(
            "POST",
            path,
            &v.token,
            format!("polled again within {} ms", MIN_POLL_GAP.as_millis()),
        );
    }
    if failing {
        return matrix_failure(CODE_OVERLOADED, "服务繁忙，请稍后再试");
    }
    matrix_ok(
        json!({"chat": {"chat_id": chat_id, "chat_status": if finished { 2 } else { 1 }}, "messages": messages}),
    )
}

async fn delete_chat(
    AxState(st): AxState<Shared>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let path = "/matrix/api/v1/chat/delete_chat";
    let v = verified!(st, method, path, headers, q, body, false);
    let mut s = st.lock().unwrap();
    let Some(chat_id) = v.body["chat_id"].as_u64().map(|n| n.to_string()) else {
        s.violation(
            "POST",
            path,
            &v.token,
            format!("delete_chat needs the chat id as a number, got {}", v.body),
        );
        return matrix_failure(CODE_SIGNATURE, "invalid params");
    };
    if s.expired.contains(&v.token) {
        return matrix_failure(CODE_TOKEN_EXPIRED, "登录已过期");
    }
    let now = Instant::now();
    let Some(i) = s
        .conversations
        .iter()
        .position(|c| c.chat_id == chat_id && c.token == v.token && !c.deleted)
    else {
        return matrix_failure(CODE_NO_CONVERSATION, "chat not found");
    };
    if running(&s, &s.conversations[i], now) {
        return matrix_failure(1, "chat is running");
    }
    let c = &mut s.conversations[i];
    c.deleted = true;
    c.completed = true;
    // Polling stopped before any poll saw the answer finished: the caller went away.
    c.client_went_away = c.reveal.as_ref().is_some_and(|r| !r.seen_finished);
    matrix_ok(json!({}))
}

async fn list_chat(
    AxState(st): AxState<Shared>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let v = verified!(
        st,
        method,
        "/matrix/api/v1/chat/list_chat",
        headers,
        q,
        body,
        false
    );
    let s = st.lock().unwrap();
    let chats: Vec<Value> = s
        .conversations
        .iter()
        .filter(|c| c.token == v.token && !c.deleted)
        .map(|c| json!({"chat_id": c.chat_id, "chat_title": c.turns.first().map(|t| prefix(&t.prompt, 20))}))
        .collect();
    matrix_ok(json!({"chats": chats}))
}
