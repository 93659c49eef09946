//! MiniMax's paid platform (`minimax-api-protocol.md`, section 7): the
//! OpenAI-compatible chat completions endpoint, T2A v2 speech (real audio
//! as hex: tones in mp3, pcm and wav at the rate asked, the unit tests'
//! FLAC and Opus clips), `asr-1.0` recognition (the multipart upload
//! checked, the transcript a test sets), `get_voice` and the key checks,
//! one region per instance, with its own state and `/_sim/` controls.
//!
//! Keys: a key is valid in a region when a test added it (`/_sim/keys`) or
//! when it is shaped `sk-api-<region>-…` / `sk-cp-<region>-…`; any other
//! key (another region's included) gets 2049, a missing or non-Bearer
//! `Authorization` 1004, any `GroupId` 1008. Every code of the table is an
//! injectable fault, before the answer or after N frames. Every request is
//! recorded (headers lower-cased, the exact body) for tests to assert on.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub type SharedApi = Arc<Mutex<ApiState>>;

/// The chat models this instance knows (section 2.1).
pub const MODELS: [&str; 9] = [
    "MiniMax-M3",
    "MiniMax-M3.1-Flash-Preview",
    "MiniMax-M2.7",
    "MiniMax-M2.7-highspeed",
    "MiniMax-M2.5",
    "MiniMax-M2.5-highspeed",
    "MiniMax-M2.1",
    "MiniMax-M2.1-highspeed",
    "MiniMax-M2",
];

/// The stream quirks of section 2.6, each an option.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Settings {
    /// `delta.role` is `""` on the first chunk too.
    pub first_role_empty: bool,
    /// `usage: null` instead of the zero placeholder.
    pub usage_null: bool,
    /// The final `chat.completion` frame (default on).
    pub final_frame: bool,
    /// With `include_usage`, a `choices: []` chunk with the usage (default on).
    pub usage_chunk: bool,
    /// The chunk with `finish_reason` has `delta: null`.
    pub finish_delta_null: bool,
    /// `data: [DONE]` at the end.
    pub done: bool,
    /// Streamed `reasoning_details[].text` is cumulative.
    pub cumulative_reasoning: bool,
    /// Content chunks of this many characters (6 by default).
    pub chunk_chars: usize,
    /// A call's arguments over this many chunks (1: whole).
    pub split_arguments: usize,
    /// Pause between frames.
    pub pace_ms: u64,
    /// Streamed T2A: this many `status: 1` events (3).
    pub t2a_events: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            first_role_empty: false,
            usage_null: false,
            final_frame: true,
            usage_chunk: true,
            finish_delta_null: false,
            done: false,
            cumulative_reasoning: false,
            chunk_chars: 6,
            split_arguments: 1,
            pace_ms: 2,
            t2a_events: 3,
        }
    }
}

/// One scripted answer.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Script {
    pub reasoning: Option<String>,
    pub content: Option<String>,
    pub tool_calls: Vec<ScriptedCall>,
    pub finish_reason: Option<String>,
    /// Explicit content chunk texts (raw: `<think>` included as written).
    pub chunks: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ScriptedCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

/// An injected failure.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Fault {
    /// `chat`, `check` (the key checks) or `any`.
    #[serde(default = "any")]
    pub endpoint: String,
    pub code: i64,
    /// `A` (200 with base_resp), `B1`, `B2`, `B3` (a real status).
    #[serde(default)]
    pub style: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub message: Option<String>,
    /// Only for this key.
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default = "one")]
    pub times: u32,
    /// Mid-stream: after this many frames.
    #[serde(default)]
    pub after_frames: Option<usize>,
}

fn any() -> String {
    "any".into()
}

fn one() -> u32 {
    1
}

#[derive(Debug)]
pub struct ApiState {
    /// `intl` or `cn`.
    pub region: String,
    /// Keys added by tests, by region.
    pub keys: HashMap<String, String>,
    pub settings: Settings,
    pub scripts: VecDeque<Script>,
    pub faults: Vec<Fault>,
    pub log: Vec<Value>,
    pub violations: Vec<Value>,
    pub counts: HashMap<String, u64>,
    /// Answers streaming now, by key (overlaps are recorded, not refused).
    pub answering: HashMap<String, u32>,
    /// Voices a test added (cloned ones), besides the system list.
    pub voices: Vec<String>,
    /// What the recognizer hears next.
    pub transcript: Transcript,
    /// The audio the last synthesis sent: its SHA-256, size and format.
    pub last_audio: Value,
}

/// The recognizer's answer, as a test sets it.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Transcript {
    pub text: String,
    pub duration: f64,
    pub segments: Vec<TimedText>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct TimedText {
    pub start: f64,
    pub end: f64,
    pub text: String,
    #[serde(default)]
    pub speaker: Value,
}

impl Default for Transcript {
    fn default() -> Self {
        Self {
            text: "Good morning, everyone.".into(),
            duration: 2.5,
            segments: vec![
                TimedText {
                    start: 0.0,
                    end: 1.2,
                    text: "Good morning,".into(),
                    speaker: json!(0),
                },
                TimedText {
                    start: 1.2,
                    end: 2.5,
                    text: "everyone.".into(),
                    speaker: json!("0"),
                },
            ],
        }
    }
}

/// The system voices (protocol section 4.5), the simulator's default list.
pub const VOICES: [&str; 34] = [
    "male-qn-qingse",
    "male-qn-jingying",
    "male-qn-badao",
    "male-qn-daxuesheng",
    "female-shaonv",
    "female-yujie",
    "female-chengshu",
    "female-tianmei",
    "male-qn-qingse-jingpin",
    "female-shaonv-jingpin",
    "Chinese (Mandarin)_Reliable_Executive",
    "Chinese (Mandarin)_News_Anchor",
    "clever_boy",
    "cute_boy",
    "lovely_girl",
    "cartoon_pig",
    "bingjiao_didi",
    "junlang_nanyou",
    "wumei_yujie",
    "Cantonese_GentleLady",
    "Cantonese_ProfessionalHost（F)",
    "English_expressive_narrator",
    "English_Graceful_Lady",
    "English_CalmWoman",
    "Wise_Woman",
    "Calm_Woman",
    "Deep_Voice_Man",
    "Friendly_Person",
    "Japanese_IntellectualSenior",
    "Korean_SweetGirl",
    "Spanish_SereneWoman",
    "Portuguese_SentimentalLady",
    "male-qn-jingying-jingpin",
    "female-yujie-jingpin",
];

impl ApiState {
    pub fn with_region(region: &str) -> Self {
        Self {
            region: region.into(),
            keys: HashMap::new(),
            settings: Settings::default(),
            scripts: VecDeque::new(),
            faults: Vec::new(),
            log: Vec::new(),
            violations: Vec::new(),
            counts: HashMap::new(),
            answering: HashMap::new(),
            voices: Vec::new(),
            transcript: Transcript::default(),
            last_audio: Value::Null,
        }
    }

    fn region_of(&self, key: &str) -> Option<String> {
        if let Some(r) = self.keys.get(key) {
            return Some(r.clone());
        }
        for region in ["intl", "cn"] {
            if key.starts_with(&format!("sk-api-{region}-"))
                || key.starts_with(&format!("sk-cp-{region}-"))
            {
                return Some(region.into());
            }
        }
        None
    }

    fn take_fault(&mut self, endpoint: &str, key: &str) -> Option<Fault> {
        let at = self.faults.iter().position(|f| {
            (f.endpoint == endpoint || f.endpoint == "any")
                && f.key.as_deref().is_none_or(|k| k == key)
        })?;
        let fault = self.faults[at].clone();
        self.faults[at].times -= 1;
        if self.faults[at].times == 0 {
            self.faults.remove(at);
        }
        Some(fault)
    }
}

pub fn router(state: SharedApi) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/t2a_v2", post(t2a))
        .route("/v1/speech_to_text", post(asr))
        .route("/v1/get_voice", post(get_voice))
        .route("/v1/token_plan/remains", get(check))
        .route("/account/query_balance", get(check))
        .route("/_sim/state", get(control::state))
        .route("/_sim/reset", post(control::reset))
        .route("/_sim/settings", post(control::settings))
        .route("/_sim/script", post(control::script))
        .route("/_sim/fault", post(control::fault))
        .route("/_sim/keys", post(control::keys))
        .route("/_sim/voices", post(control::voices))
        .route("/_sim/transcript", post(control::transcript))
        .route("/_sim/log", get(control::log))
        .route("/_sim/violations", get(control::violations))
        .fallback(unknown)
        // Room for the recognizer's own 50 MB limit to be the one that refuses.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
        .with_state(state)
}

pub async fn serve(listener: tokio::net::TcpListener, state: SharedApi) -> std::io::Result<()> {
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state)).await
}

fn trace_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn with_trace(mut response: Response) -> Response {
    if let Ok(v) = trace_id().parse() {
        response.headers_mut().insert("trace-id", v);
    }
    response
}

async fn unknown(AxState(st): AxState<SharedApi>, method: Method, uri: Uri) -> Response {
    record(
        &mut st.lock().unwrap(),
        &method,
        &uri,
        &HeaderMap::new(),
        "",
    );
    with_trace(
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"message": "404 page not found"}})),
        )
            .into_response(),
    )
}

fn record(s: &mut ApiState, method: &Method, uri: &Uri, headers: &HeaderMap, body: &str) {
    if s.log.len() >= 4096 {
        s.log.remove(0);
    }
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                Value::String(v.to_str().unwrap_or("").to_string()),
            )
        })
        .collect();
    let key = headers
        .get("authorization")
        .and_then(Value::as_str)
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    s.log.push(json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query().unwrap_or_default(),
        "headers": headers,
        "region": s.region,
        "key": key,
        "body": body,
    }));
}

/// The table's default status for a code on chat (style B).
fn default_status(code: i64) -> u16 {
    match code {
        1002 | 1039 | 1041 | 2045 | 2056 => 429,
        1004 | 2049 => 401,
        1026 | 1027 | 1042 | 2013 | 2061 | 1043 | 1044 | 2037 | 2038 | 2039 | 2048 => 400,
        _ => 500,
    }
}

fn default_message(code: i64) -> &'static str {
    match code {
        1000 => "unknown error",
        1001 => "request timeout",
        1002 => "rate limit exceeded(RPM)",
        1004 => "login fail: Please carry the API secret key in the 'Authorization' field of the request header",
        1008 => "insufficient balance",
        1013 => "internal server error",
        1026 => "input new_sensitive",
        1027 => "output new_sensitive",
        1039 => "rate limit exceeded(TPM)",
        1041 => "conn limit",
        1042 => "illegal characters exceed 10%",
        2013 => "invalid params",
        2045 => "rate growth limit",
        2049 => "invalid api key",
        2054 => "voice id not exist",
        2056 => "usage limit exceeded",
        2061 => "your current token plan not support model",
        _ => "error",
    }
}

/// A failure in the fault's (or the code's default) style.
fn failure(code: i64, style: Option<&str>, status: Option<u16>, message: Option<&str>) -> Response {
    let message = message.unwrap_or(default_message(code)).to_string();
    let response = match style.unwrap_or("B1") {
        "A" => {
            Json(json!({"data": null, "base_resp": {"status_code": code, "status_msg": message}}))
                .into_response()
        }
        style => {
            let status = StatusCode::from_u16(status.unwrap_or(default_status(code)))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let text = format!("{message} ({code})");
            let body = match style {
                "B2" => {
                    json!({"error": {"message": text, "type": "bad_request_error", "param": "", "code": null}})
                }
                "B3" => json!({"error": {"message": text, "code": "invalid_prompt"}}),
                _ => {
                    json!({"type": "error", "request_id": format!("req_{}", trace_id()), "error": {"type": "bad_request_error", "http_code": status.as_str(), "message": text}})
                }
            };
            (status, Json(body)).into_response()
        }
    };
    with_trace(response)
}

/// The caller's key, or the failure its absence, shape or region is.
fn authorize(
    s: &ApiState,
    headers: &HeaderMap,
    uri: &Uri,
    body: &str,
) -> Result<String, Box<Response>> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(key) = auth
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return Err(Box::new(failure(1004, None, Some(401), None)));
    };
    let group_in_body = serde_json::from_str::<Value>(body)
        .ok()
        .is_some_and(|b| b.get("GroupId").is_some() || b.get("group_id").is_some());
    if uri
        .query()
        .unwrap_or_default()
        .to_ascii_lowercase()
        .contains("groupid")
        || group_in_body
    {
        return Err(Box::new(failure(1008, None, None, None)));
    }
    if s.region_of(key).as_deref() != Some(s.region.as_str()) {
        return Err(Box::new(failure(2049, None, Some(401), None)));
    }
    Ok(key.to_string())
}

async fn check(
    AxState(st): AxState<SharedApi>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut s = st.lock().unwrap();
    record(&mut s, &method, &uri, &headers, "");
    let key = match authorize(&s, &headers, &uri, "") {
        Ok(k) => k,
        Err(r) => return *r,
    };
    if let Some(f) = s.take_fault("check", &key) {
        return failure(f.code, f.style.as_deref(), f.status, f.message.as_deref());
    }
    with_trace(
        Json(json!({"base_resp": {"status_code": 0, "status_msg": "success"}})).into_response(),
    )
}

fn invalid(message: &str) -> Response {
    failure(
        2013,
        Some("B1"),
        Some(400),
        Some(&format!("invalid params, {message}")),
    )
}

/// Section 7's chat validation, strict where the platform is.
fn validate(body: &Value) -> Result<(), Box<Response>> {
    let model = body["model"].as_str().unwrap_or_default();
    if !MODELS.contains(&model) {
        return Err(Box::new(invalid("unknown model")));
    }
    if let Some(t) = body.get("temperature").and_then(Value::as_f64) {
        let ok = if model.starts_with("MiniMax-M3") {
            (0.0..=2.0).contains(&t)
        } else {
            t > 0.0 && t <= 1.0
        };
        if !ok {
            return Err(Box::new(invalid("temperature out of range")));
        }
    }
    if body.get("n").is_some_and(|n| n.as_u64() != Some(1)) {
        return Err(Box::new(invalid("n must be 1")));
    }
    for tool in body["tools"].as_array().into_iter().flatten() {
        if tool["function"].get("parameters").is_none() {
            return Err(Box::new(invalid("function parameters required")));
        }
    }
    match body.get("tool_choice") {
        None => {}
        Some(Value::String(c)) if c == "auto" || c == "none" => {}
        Some(_) => return Err(Box::new(invalid("tool_choice must be auto or none"))),
    }
    if model == "MiniMax-M3.1-Flash-Preview" && body["thinking"]["type"] == "disabled" {
        return Err(Box::new(invalid("model requires adaptive thinking")));
    }
    if body.get("thinking").is_some() && !model.starts_with("MiniMax-M3") {
        return Err(Box::new(invalid("thinking is not supported by this model")));
    }
    let mut calls = HashSet::new();
    for m in body["messages"].as_array().into_iter().flatten() {
        for call in m["tool_calls"].as_array().into_iter().flatten() {
            let id = call["id"].as_str().unwrap_or_default();
            let args = call["function"]["arguments"].as_str().unwrap_or_default();
            if serde_json::from_str::<Value>(args).is_err() {
                return Err(Box::new(invalid(&format!(
                    "invalid function arguments json string, tool_call_id: {id}"
                ))));
            }
            calls.insert(id.to_string());
        }
        if m["role"] == "tool" {
            let id = m["tool_call_id"].as_str().unwrap_or_default();
            if !calls.contains(id) {
                return Err(Box::new(invalid(&format!(
                    "tool result's tool id({id}) not found"
                ))));
            }
        }
    }
    if body["messages"].as_array().is_none_or(|m| m.is_empty()) {
        return Err(Box::new(invalid("messages is empty")));
    }
    Ok(())
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// About four characters a token, at least one.
pub fn tokens_of(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .find(|m| m["role"] == "user" || m["role"] == "tool")
        .map(|m| text_of(&m["content"]))
        .unwrap_or_default()
}

/// What one answer holds.
struct Answer {
    reasoning: String,
    content: String,
    calls: Vec<(String, String, String)>,
    finish: String,
    chunks: Option<Vec<String>>,
    usage: Value,
}

fn compose(s: &mut ApiState, body: &Value) -> Answer {
    let script = s.scripts.pop_front().unwrap_or_default();
    let last = last_user_text(body);
    let reasoning = script
        .reasoning
        .unwrap_or_else(|| format!("Thinking about: {last}"));
    let content = script.content.unwrap_or_else(|| {
        if script.tool_calls.is_empty() {
            format!("OK: {last}")
        } else {
            String::new()
        }
    });
    let calls: Vec<(String, String, String)> = script
        .tool_calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let args = if c.arguments.is_empty() {
                "{}".to_string()
            } else {
                c.arguments.clone()
            };
            (
                format!("call_function_{:08x}_{}", rand::random::<u32>(), i + 1),
                c.name.clone(),
                args,
            )
        })
        .collect();
    let finish = script.finish_reason.unwrap_or_else(|| {
        if calls.is_empty() {
            "stop".into()
        } else {
            "tool_calls".into()
        }
    });
    let prompt: u64 = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| tokens_of(&text_of(&m["content"])) + 3)
        .sum::<u64>()
        + body["tools"]
            .as_array()
            .map_or(0, |t| tokens_of(&Value::Array(t.clone()).to_string()));
    let reasoning_tokens = tokens_of(&reasoning);
    let completion = reasoning_tokens
        + tokens_of(&content)
        + calls
            .iter()
            .map(|(_, n, a)| tokens_of(n) + tokens_of(a))
            .sum::<u64>();
    let usage = json!({
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "total_characters": 0, "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    });
    Answer {
        reasoning,
        content,
        calls,
        finish,
        chunks: script.chunks,
        usage,
    }
}

fn inline(a: &Answer) -> String {
    format!("<think>\n{}\n</think>\n\n{}", a.reasoning, a.content)
}

fn pieces(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
}

struct Answering {
    state: SharedApi,
    key: String,
}

impl Drop for Answering {
    fn drop(&mut self) {
        if let Some(n) = self.state.lock().unwrap().answering.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

async fn chat(
    AxState(st): AxState<SharedApi>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = String::from_utf8_lossy(&body).into_owned();
    let (answer, settings, request, mid_fault, answering) = {
        let mut s = st.lock().unwrap();
        record(&mut s, &method, &uri, &headers, &text);
        if headers.contains_key("x-api-key") {
            s.violations.push(json!({"kind": "x_api_key_sent"}));
        }
        let key = match authorize(&s, &headers, &uri, &text) {
            Ok(k) => k,
            Err(r) => return *r,
        };
        *s.counts.entry("chat".into()).or_default() += 1;
        let mut mid_fault = None;
        if let Some(f) = s.take_fault("chat", &key) {
            if f.after_frames.is_none() {
                return failure(f.code, f.style.as_deref(), f.status, f.message.as_deref());
            }
            mid_fault = Some(f);
        }
        let Ok(request) = serde_json::from_str::<Value>(&text) else {
            return invalid("body is not JSON");
        };
        if let Err(r) = validate(&request) {
            return *r;
        }
        let n = s.answering.entry(key.clone()).or_default();
        *n += 1;
        if *n > 1 {
            s.violations
                .push(json!({"kind": "concurrent_answers", "key": key}));
        }
        let answer = compose(&mut s, &request);
        (
            answer,
            s.settings.clone(),
            request,
            mid_fault,
            Answering {
                state: st.clone(),
                key,
            },
        )
    };
    let model = request["model"].as_str().unwrap_or_default().to_string();
    let split = request["reasoning_split"] == true;
    let stream = request["stream"] == true;
    let id = format!("{:032x}", rand::random::<u128>());
    if !stream {
        drop(answering);
        let mut message = json!({"role": "assistant", "name": "MiniMax AI", "audio_content": ""});
        if split {
            message["content"] = json!(answer.content);
            message["reasoning_details"] = json!([{"type": "reasoning.text", "id": "reasoning-text-1", "format": "MiniMax-response-v1", "index": 0, "text": answer.reasoning}]);
            message["reasoning_content"] = json!(answer.reasoning);
        } else {
            message["content"] = json!(inline(&answer));
        }
        if !answer.calls.is_empty() {
            message["tool_calls"] = json!(answer.calls.iter().enumerate().map(|(i, (cid, name, args))| json!({"id": cid, "type": "function", "index": i, "function": {"name": name, "arguments": args}})).collect::<Vec<_>>());
        }
        return with_trace(
            Json(json!({
                "id": id, "object": "chat.completion", "created": 1_780_300_000, "model": model,
                "choices": [{"index": 0, "finish_reason": answer.finish, "message": message}],
                "usage": answer.usage, "input_sensitive": false, "output_sensitive": false,
                "base_resp": {"status_code": 0, "status_msg": ""},
            }))
            .into_response(),
        );
    }
    let include_usage = request["stream_options"]["include_usage"] == true;
    let frames = stream_frames(
        &answer,
        &settings,
        &id,
        &model,
        split,
        include_usage,
        mid_fault.as_ref(),
    );
    let pace = Duration::from_millis(settings.pace_ms);
    let body = futures_util::stream::unfold(
        (frames.into_iter(), answering, true),
        move |(mut frames, answering, first)| async move {
            let frame = frames.next()?;
            if !first && !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
            Some((
                Ok::<_, std::io::Error>(Bytes::from(frame)),
                (frames, answering, false),
            ))
        },
    );
    let mut response = Response::new(Body::from_stream(body));
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    with_trace(response)
}

fn stream_frames(
    a: &Answer,
    st: &Settings,
    id: &str,
    model: &str,
    split: bool,
    include_usage: bool,
    fault: Option<&Fault>,
) -> Vec<String> {
    let placeholder = if st.usage_null {
        Value::Null
    } else {
        json!({"total_tokens": 0, "total_characters": 0})
    };
    let chunk = |delta: Value, finish: Option<&str>| {
        let mut choice = json!({"index": 0, "delta": delta});
        if let Some(f) = finish {
            choice["finish_reason"] = json!(f);
        }
        json!({"id": id, "object": "chat.completion.chunk", "created": 1_780_300_000, "model": model,
               "choices": [choice], "usage": placeholder, "input_sensitive": false, "output_sensitive": false,
               "input_sensitive_type": 0, "output_sensitive_type": 0, "output_sensitive_int": 0})
    };
    let mut deltas: Vec<Value> = Vec::new();
    if split {
        let mut so_far = String::new();
        for piece in pieces(&a.reasoning, st.chunk_chars.max(1) * 2) {
            so_far.push_str(&piece);
            let text = if st.cumulative_reasoning {
                so_far.clone()
            } else {
                piece
            };
            deltas.push(json!({"reasoning_details": [{"type": "reasoning.text", "id": "reasoning-text-1", "format": "MiniMax-response-v1", "index": 0, "text": text}]}));
        }
        let contents = a
            .chunks
            .clone()
            .unwrap_or_else(|| pieces(&a.content, st.chunk_chars));
        deltas.extend(contents.into_iter().map(|c| json!({"content": c})));
    } else {
        let contents = a
            .chunks
            .clone()
            .unwrap_or_else(|| pieces(&inline(a), st.chunk_chars));
        deltas.extend(contents.into_iter().map(|c| json!({"content": c})));
    }
    for (i, (cid, name, args)) in a.calls.iter().enumerate() {
        let parts = pieces(
            args,
            args.chars()
                .count()
                .div_ceil(st.split_arguments.max(1))
                .max(1),
        );
        for (j, part) in parts.iter().enumerate() {
            let call = if j == 0 {
                json!({"index": i, "id": cid, "type": "function", "function": {"name": name, "arguments": part}})
            } else {
                json!({"index": i, "function": {"arguments": part}})
            };
            deltas.push(json!({"tool_calls": [call]}));
        }
    }
    let mut frames: Vec<Value> = Vec::new();
    for (i, mut delta) in deltas.into_iter().enumerate() {
        delta["role"] = json!(if i == 0 && !st.first_role_empty {
            "assistant"
        } else {
            ""
        });
        if i == 0 {
            delta["name"] = json!("MiniMax AI");
            delta["audio_content"] = json!("");
        }
        frames.push(chunk(delta, None));
    }
    frames.push(chunk(
        if st.finish_delta_null {
            Value::Null
        } else {
            json!({"role": "", "content": ""})
        },
        Some(&a.finish),
    ));
    if include_usage && st.usage_chunk {
        frames.push(json!({"id": id, "object": "chat.completion.chunk", "created": 1_780_300_000, "model": model, "choices": [], "usage": a.usage}));
    }
    if st.final_frame {
        let mut message = json!({"role": "assistant", "content": if split { a.content.clone() } else { inline(a) }});
        if !a.calls.is_empty() {
            message["tool_calls"] = json!(a.calls.iter().map(|(cid, name, args)| json!({"id": cid, "type": "function", "function": {"name": name, "arguments": args}})).collect::<Vec<_>>());
        }
        frames.push(json!({"id": id, "object": "chat.completion", "created": 1_780_300_000, "model": model,
                           "choices": [{"index": 0, "finish_reason": a.finish, "message": message}], "usage": a.usage,
                           "base_resp": {"status_code": 0, "status_msg": ""}}));
    }
    let mut out: Vec<String> = frames
        .into_iter()
        .map(|f| format!("data: {f}\n\n"))
        .collect();
    if let Some(f) = fault {
        let n = f.after_frames.unwrap_or(0).min(out.len());
        out.truncate(n);
        let message = f
            .message
            .clone()
            .unwrap_or_else(|| default_message(f.code).into());
        out.push(format!("data: {}\n\n", json!({"id": id, "choices": [], "base_resp": {"status_code": f.code, "status_msg": message}})));
        return out;
    }
    if st.done {
        out.push("data: [DONE]\n\n".into());
    }
    out
}

// ---- T2A v2 (section 4) ----

const FLAC: &[u8] = include_bytes!("../../../shared/src/audio/fixtures/speech.flac");
const OPUS: &[u8] = include_bytes!("../../../shared/src/audio/fixtures/speech.opus");
const T2A_MODELS: [&str; 8] = [
    "speech-2.8-hd",
    "speech-2.8-turbo",
    "speech-2.6-hd",
    "speech-2.6-turbo",
    "speech-02-hd",
    "speech-02-turbo",
    "speech-01-hd",
    "speech-01-turbo",
];

/// About a second of tone as s16le samples at `rate`, on `channels`.
fn tone(rate: u32, channels: u32, seconds: f64) -> Vec<i16> {
    let frames = (seconds * f64::from(rate)) as usize;
    (0..frames)
        .flat_map(|i| {
            let t = i as f32 / rate as f32;
            let v = ((t * 330.0 * std::f32::consts::TAU).sin() * 8000.0) as i16;
            std::iter::repeat_n(v, channels as usize)
        })
        .collect()
}

fn wav(pcm: &[i16], rate: u32, channels: u32) -> Vec<u8> {
    let data = (pcm.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&(channels as u16).to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * channels * 2).to_le_bytes());
    out.extend_from_slice(&((channels * 2) as u16).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    for s in pcm {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

fn mp3(pcm: &[i16], rate: u32) -> Vec<u8> {
    use mp3lame_encoder::{Bitrate, Builder, FlushNoGap, MonoPcm, Quality};
    let mut builder = Builder::new().expect("LAME");
    builder.set_num_channels(1).expect("mono");
    builder.set_sample_rate(rate).expect("rate");
    builder.set_brate(Bitrate::Kbps64).expect("bitrate");
    builder.set_quality(Quality::Good).expect("quality");
    let mut lame = builder.build().expect("LAME");
    let mut out = Vec::with_capacity(mp3lame_encoder::max_required_buffer_size(pcm.len()) + 7200);
    lame.encode_to_vec(MonoPcm(pcm), &mut out).expect("encode");
    lame.flush_to_vec::<FlushNoGap>(&mut out).expect("flush");
    out
}

/// The audio of a synthesis: its bytes, length in ms and real sample rate.
fn synthesized(format: &str, rate: u32, channels: u32) -> (Vec<u8>, u64, u32) {
    let pcm = tone(rate, if format == "mp3" { 1 } else { channels }, 1.0);
    match format {
        "mp3" => (mp3(&pcm, rate), 1000, rate),
        "pcm" => (
            pcm.iter().flat_map(|s| s.to_le_bytes()).collect(),
            1000,
            rate,
        ),
        "wav" => (wav(&pcm, rate, channels), 1000, rate),
        "flac" => (FLAC.to_vec(), 1200, 16_000),
        _ => (OPUS.to_vec(), 1200, 48_000),
    }
}

/// Where an mp3's frames start (sync words after any ID3 tag), to cut a
/// stream on frame boundaries.
fn mp3_frame_starts(bytes: &[u8]) -> Vec<usize> {
    crate::voice::walk_mp3(bytes).map_or_else(|_| vec![0], |info| info.offsets)
}

fn style_a(code: i64, message: &str) -> Response {
    failure(code, Some("A"), None, Some(message))
}

fn t2a_invalid(message: &str) -> Response {
    style_a(2013, &format!("invalid params, {message}"))
}

fn check_t2a(s: &ApiState, body: &Value) -> Result<(), Box<Response>> {
    let bad = |m: &str| Err(Box::new(t2a_invalid(m)));
    let model = body["model"].as_str().unwrap_or_default();
    if !T2A_MODELS.contains(&model) {
        return bad("unknown model");
    }
    let text = body["text"].as_str().unwrap_or_default();
    if text.is_empty() || text.chars().count() >= 10_000 {
        return bad("text must be 1 to 9999 characters");
    }
    let voice = &body["voice_setting"];
    let id = voice["voice_id"].as_str().unwrap_or_default();
    if !VOICES.contains(&id) && !s.voices.iter().any(|v| v == id) {
        return Err(Box::new(style_a(2054, "voice id not exist")));
    }
    let speed = voice["speed"].as_f64().unwrap_or(1.0);
    let vol = voice["vol"].as_f64().unwrap_or(1.0);
    let pitch = voice["pitch"].as_i64().unwrap_or(0);
    let in_range =
        (0.5..=2.0).contains(&speed) && vol > 0.0 && vol <= 10.0 && (-12..=12).contains(&pitch);
    if !in_range {
        return bad("voice_setting out of range");
    }
    let audio = &body["audio_setting"];
    let rate = audio["sample_rate"].as_u64().unwrap_or(32_000);
    if ![8000, 16000, 22050, 24000, 32000, 44100].contains(&rate) {
        return bad("sample_rate");
    }
    if ![32000, 64000, 128000, 256000].contains(&audio["bitrate"].as_u64().unwrap_or(128_000)) {
        return bad("bitrate");
    }
    let format = audio["format"].as_str().unwrap_or("mp3");
    if !["mp3", "pcm", "flac", "wav", "pcmu_raw", "pcmu_wav", "opus"].contains(&format) {
        return bad("format");
    }
    if ![1, 2].contains(&audio["channel"].as_u64().unwrap_or(1)) {
        return bad("channel");
    }
    let stream = body["stream"] == true;
    if stream && (format == "wav" || body["output_format"] == "url") {
        return bad("wav and url cannot stream");
    }
    Ok(())
}

async fn t2a(
    AxState(st): AxState<SharedApi>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = String::from_utf8_lossy(&body).into_owned();
    let (request, fault) = {
        let mut s = st.lock().unwrap();
        record(&mut s, &method, &uri, &headers, &text);
        let key = match authorize(&s, &headers, &uri, &text) {
            Ok(k) => k,
            // T2A answers auth failures under HTTP 200 (style A).
            Err(r) => {
                let code = if r.status() == StatusCode::UNAUTHORIZED
                    && headers.contains_key("authorization")
                {
                    2049
                } else {
                    1004
                };
                return style_a(code, default_message(code));
            }
        };
        *s.counts.entry("t2a".into()).or_default() += 1;
        let fault = s.take_fault("t2a", &key);
        if let Some(f) = &fault {
            if f.after_frames.is_none() {
                return failure(
                    f.code,
                    Some(f.style.as_deref().unwrap_or("A")),
                    f.status,
                    f.message.as_deref(),
                );
            }
        }
        let Ok(request) = serde_json::from_str::<Value>(&text) else {
            return t2a_invalid("body is not JSON");
        };
        if let Err(r) = check_t2a(&s, &request) {
            return *r;
        }
        (request, fault)
    };
    let audio = &request["audio_setting"];
    let format = audio["format"].as_str().unwrap_or("mp3").to_string();
    let rate = audio["sample_rate"].as_u64().unwrap_or(32_000) as u32;
    let channels = audio["channel"].as_u64().unwrap_or(1) as u32;
    let (bytes, length_ms, real_rate) = synthesized(&format, rate, channels);
    {
        use sha2::Digest;
        st.lock().unwrap().last_audio = json!({"sha256": hex(&sha2::Sha256::digest(&bytes)), "size": bytes.len(), "format": format});
    }
    let trace = trace_id();
    let extra = json!({
        "audio_length": length_ms, "audio_sample_rate": real_rate, "audio_size": bytes.len(),
        "bitrate": audio["bitrate"].as_u64().unwrap_or(128_000), "audio_format": format,
        "audio_channel": if format == "mp3" { 1 } else { channels },
        "word_count": request["text"].as_str().unwrap_or_default().split_whitespace().count(),
        "usage_characters": request["text"].as_str().unwrap_or_default().chars().count(),
        "invisible_character_ratio": 0,
    });
    if request["stream"] != true {
        return with_trace(
            Json(json!({
                "data": {"audio": hex(&bytes), "status": 2}, "extra_info": extra, "trace_id": trace,
                "base_resp": {"status_code": 0, "status_msg": "success"},
            }))
            .into_response(),
        );
    }
    // N status-1 events (mp3 cut on frame boundaries), then the last one.
    let parts = st.lock().unwrap().settings.t2a_events.max(1);
    let cuts: Vec<usize> = if format == "mp3" {
        let starts = mp3_frame_starts(&bytes);
        (1..parts)
            .map(|i| starts[(starts.len() * i / parts).min(starts.len() - 1)])
            .collect()
    } else {
        (1..parts).map(|i| (bytes.len() * i / parts) & !1).collect()
    };
    let mut bounds = vec![0];
    bounds.extend(cuts);
    bounds.push(bytes.len());
    bounds.dedup();
    let mut events: Vec<String> = bounds
        .windows(2)
        .map(|w| {
            json!({"data": {"audio": hex(&bytes[w[0]..w[1]]), "status": 1}, "trace_id": trace,
                        "base_resp": {"status_code": 0, "status_msg": ""}})
            .to_string()
        })
        .collect();
    let excluded = request["stream_options"]["exclude_aggregated_audio"] == true;
    let aggregate = if excluded { String::new() } else { hex(&bytes) };
    events.push(
        json!({"data": {"audio": aggregate, "status": 2}, "extra_info": extra, "trace_id": trace,
                       "base_resp": {"status_code": 0, "status_msg": "success"}})
        .to_string(),
    );
    if let Some(f) = fault {
        events.truncate(f.after_frames.unwrap_or(0));
        let message = f
            .message
            .clone()
            .unwrap_or_else(|| default_message(f.code).into());
        events.push(
            json!({"data": {"audio": "", "status": 1}, "trace_id": trace,
                           "base_resp": {"status_code": f.code, "status_msg": message}})
            .to_string(),
        );
    } else if st.lock().unwrap().settings.done {
        events.push("[DONE]".into());
    }
    let pace = Duration::from_millis(st.lock().unwrap().settings.pace_ms);
    let body = futures_util::stream::unfold(
        (events.into_iter(), true),
        move |(mut events, first)| async move {
            let event = events.next()?;
            if !first && !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
            Some((
                Ok::<_, std::io::Error>(Bytes::from(format!("data: {event}\n\n"))),
                (events, false),
            ))
        },
    );
    let mut response = Response::new(Body::from_stream(body));
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    with_trace(response)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

async fn get_voice(
    AxState(st): AxState<SharedApi>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut s = st.lock().unwrap();
    record(&mut s, &method, &uri, &headers, &text);
    if authorize(&s, &headers, &uri, &text).is_err() {
        return style_a(1004, default_message(1004));
    }
    let system: Vec<Value> = VOICES
        .iter()
        .map(|v| json!({"voice_id": v, "voice_name": v, "description": []}))
        .collect();
    let cloned: Vec<Value> = s.voices.iter().map(|v| json!({"voice_id": v})).collect();
    with_trace(
        Json(
            json!({"system_voice": system, "voice_cloning": cloned, "voice_generation": [],
                           "base_resp": {"status_code": 0, "status_msg": "success"}}),
        )
        .into_response(),
    )
}

// ---- speech to text (section 5) ----

/// The container of an upload, by its bytes.
fn container(bytes: &[u8]) -> Option<&'static str> {
    let at = |o: usize, m: &[u8]| bytes.get(o..o + m.len()) == Some(m);
    Some(if at(0, b"RIFF") && at(8, b"WAVE") {
        "wav"
    } else if at(0, b"FORM") && (at(8, b"AIFF") || at(8, b"AIFC")) {
        "aiff"
    } else if at(0, b"fLaC") {
        "flac"
    } else if at(4, b"ftyp") {
        "m4a"
    } else if at(0, b"ID3")
        || (bytes.len() > 1 && bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0 && bytes[1] & 0x06 != 0)
    {
        "mp3"
    } else if bytes.len() > 1 && bytes[0] == 0xFF && bytes[1] & 0xF6 == 0xF0 {
        "aac"
    } else if at(0, b"OggS") {
        "ogg"
    } else {
        return None;
    })
}

fn asr_error(status: StatusCode, message: &str) -> Response {
    with_trace((status, Json(json!({"error": {"message": message}}))).into_response())
}

fn wav_seconds(bytes: &[u8]) -> Option<f64> {
    let rate = u32::from_le_bytes(bytes.get(24..28)?.try_into().ok()?);
    let block = u16::from_le_bytes(bytes.get(32..34)?.try_into().ok()?);
    (rate > 0 && block > 0)
        .then(|| (bytes.len().saturating_sub(44)) as f64 / f64::from(rate) / f64::from(block))
}

fn srt_time(t: f64, sep: char) -> String {
    let ms = (t * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

async fn asr(
    AxState(st): AxState<SharedApi>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    mut form: axum::extract::Multipart,
) -> Response {
    let (mut fields, mut file) = (serde_json::Map::new(), None::<(String, String, Bytes)>);
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_string();
                if name == "file" {
                    let file_name = field.file_name().unwrap_or_default().to_string();
                    let mime = field.content_type().unwrap_or_default().to_string();
                    match field.bytes().await {
                        Ok(bytes) => file = Some((file_name, mime, bytes)),
                        Err(_) => {
                            return asr_error(StatusCode::PAYLOAD_TOO_LARGE, "file too large")
                        }
                    }
                } else {
                    fields.insert(name, json!(field.text().await.unwrap_or_default()));
                }
            }
            Ok(None) => break,
            Err(e) => {
                return asr_error(
                    StatusCode::BAD_REQUEST,
                    &format!("unreadable multipart body: {e}"),
                )
            }
        }
    }
    let mut s = st.lock().unwrap();
    let detail = json!({"fields": fields, "file": file.as_ref().map(|(n, m, b)| {
        use sha2::Digest;
        json!({"name": n, "content_type": m, "size": b.len(), "sha256": hex(&sha2::Sha256::digest(b))})
    })});
    record(&mut s, &method, &uri, &headers, &detail.to_string());
    let key = match authorize(&s, &headers, &uri, "") {
        Ok(k) => k,
        Err(_) => return asr_error(StatusCode::UNAUTHORIZED, "invalid api key"),
    };
    if let Some(f) = s.take_fault("asr", &key) {
        let status = StatusCode::from_u16(f.status.unwrap_or(default_status(f.code)))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return asr_error(
            status,
            &format!(
                "{} ({})",
                f.message.as_deref().unwrap_or(default_message(f.code)),
                f.code
            ),
        );
    }
    let Some((_, _, bytes)) = file else {
        return asr_error(StatusCode::BAD_REQUEST, "file is required");
    };
    if fields.get("model").and_then(Value::as_str) != Some("asr-1.0") {
        return asr_error(StatusCode::BAD_REQUEST, "unknown model");
    }
    if bytes.len() > 50 * 1024 * 1024 {
        return asr_error(StatusCode::PAYLOAD_TOO_LARGE, "file larger than 50 MB");
    }
    let Some(kind) = container(&bytes) else {
        return asr_error(StatusCode::BAD_REQUEST, "unsupported audio format");
    };
    if kind == "wav" && wav_seconds(&bytes).is_some_and(|sec| sec > 500.0) {
        return asr_error(StatusCode::BAD_REQUEST, "audio longer than 500 s");
    }
    let format = fields
        .get("response_format")
        .and_then(Value::as_str)
        .unwrap_or("json")
        .to_string();
    if fields.get("stream").and_then(Value::as_str) == Some("true") && format != "json" {
        return asr_error(StatusCode::BAD_REQUEST, "stream needs json");
    }
    if fields.contains_key("timestamp_level") && format == "json" {
        return asr_error(
            StatusCode::BAD_REQUEST,
            "timestamp_level needs verbose_json, srt or vtt",
        );
    }
    let t = s.transcript.clone();
    drop(s);
    let text_doc = |vtt: bool| {
        let sep = if vtt { '.' } else { ',' };
        let mut out = if vtt {
            "WEBVTT\n\n".to_string()
        } else {
            String::new()
        };
        for (i, seg) in t.segments.iter().enumerate() {
            if !vtt {
                out.push_str(&format!("{}\n", i + 1));
            }
            out.push_str(&format!(
                "{} --> {}\n{}\n\n",
                srt_time(seg.start, sep),
                srt_time(seg.end, sep),
                seg.text
            ));
        }
        out
    };
    let response = match format.as_str() {
        "json" => Json(json!({"text": t.text, "duration": t.duration})).into_response(),
        "verbose_json" => Json(
            json!({"text": t.text, "duration": t.duration, "n_speakers": 1,
                                      "trace_id": trace_id(), "segments": t.segments}),
        )
        .into_response(),
        "srt" | "vtt" => {
            let mut r = text_doc(format == "vtt").into_response();
            r.headers_mut()
                .insert("content-type", "text/plain; charset=utf-8".parse().unwrap());
            r
        }
        _ => return asr_error(StatusCode::BAD_REQUEST, "unknown response_format"),
    };
    with_trace(response)
}

mod control {
    use super::*;

    pub async fn state(AxState(st): AxState<SharedApi>) -> Json<Value> {
        let s = st.lock().unwrap();
        Json(
            json!({"region": s.region, "settings": s.settings, "counts": s.counts, "scripts": s.scripts.len(),
                   "faults": s.faults, "last_audio": s.last_audio}),
        )
    }

    pub async fn reset(AxState(st): AxState<SharedApi>) -> Json<Value> {
        let mut s = st.lock().unwrap();
        let region = s.region.clone();
        *s = ApiState::with_region(&region);
        Json(json!({"ok": true}))
    }

    pub async fn settings(AxState(st): AxState<SharedApi>, Json(patch): Json<Value>) -> Response {
        let mut s = st.lock().unwrap();
        let mut current = serde_json::to_value(&s.settings).unwrap_or_default();
        if let (Some(c), Some(p)) = (current.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                c.insert(k.clone(), v.clone());
            }
        }
        match serde_json::from_value(current) {
            Ok(settings) => {
                s.settings = settings;
                Json(json!({"ok": true})).into_response()
            }
            Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        }
    }

    pub async fn script(
        AxState(st): AxState<SharedApi>,
        Json(script): Json<Script>,
    ) -> Json<Value> {
        st.lock().unwrap().scripts.push_back(script);
        Json(json!({"ok": true}))
    }

    pub async fn fault(AxState(st): AxState<SharedApi>, Json(fault): Json<Fault>) -> Json<Value> {
        st.lock().unwrap().faults.push(fault);
        Json(json!({"ok": true}))
    }

    /// `{"intl": ["key", …], "cn": [...]}`: keys valid in each region.
    pub async fn keys(
        AxState(st): AxState<SharedApi>,
        Json(keys): Json<HashMap<String, Vec<String>>>,
    ) -> Json<Value> {
        let mut s = st.lock().unwrap();
        for (region, list) in keys {
            for key in list {
                s.keys.insert(key, region.clone());
            }
        }
        Json(json!({"ok": true}))
    }

    /// `["voice_id", …]`: voices (cloned ones) the platform knows besides its own.
    pub async fn voices(
        AxState(st): AxState<SharedApi>,
        Json(voices): Json<Vec<String>>,
    ) -> Json<Value> {
        st.lock().unwrap().voices.extend(voices);
        Json(json!({"ok": true}))
    }

    pub async fn transcript(
        AxState(st): AxState<SharedApi>,
        Json(t): Json<Transcript>,
    ) -> Json<Value> {
        st.lock().unwrap().transcript = t;
        Json(json!({"ok": true}))
    }

    pub async fn log(AxState(st): AxState<SharedApi>) -> Json<Value> {
        Json(json!(st.lock().unwrap().log))
    }

    pub async fn violations(AxState(st): AxState<SharedApi>) -> Json<Value> {
        Json(json!(st.lock().unwrap().violations))
    }
}
