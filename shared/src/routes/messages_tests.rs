//! The Anthropic door in-process, on tokio's paused clock: over the
//! scripted fake as a native upstream (tool calls in pieces, signed
//! thinking, real usage) and as a web chat (the emulated tools), its
//! errors in Anthropic's shape, `count_tokens` against `message_start`,
//! and the keep-alive.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::router;
use crate::config::Config;
use crate::conversation::StopReason;
use crate::testing::{config_of, json, state, FakeUpstream, Script, Step};
use crate::upstream::{UpstreamError, UpstreamEvent};

fn native() -> FakeUpstream {
    FakeUpstream::answering("unused", Duration::from_millis(10)).native()
}

async fn post(app: &axum::Router, path: &str, body: Value) -> Response<Body> {
    app.clone()
        .oneshot(
            Request::post(path)
                .header("x-api-key", "tok-a")
                .header("anthropic-version", "2023-06-01")
                .header("anthropic-beta", "claude-code-20250219")
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap()
}

/// The stream's events: (name, payload), and SSE comments as ("", text).
async fn events(response: Response<Body>) -> Vec<(String, Value)> {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    text.split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| {
            let (name, data) = f
                .strip_prefix("event: ")
                .and_then(|f| f.split_once("\ndata: "))
                .unwrap_or_else(|| panic!("not an event: {f:?}"));
            (name.to_string(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

use crate::testing::NATIVE_USAGE as USAGE;

fn tool_answer() -> Script {
    use UpstreamEvent::*;
    let e = Step::Event;
    Script::steps(vec![
        e(ReasoningDelta("The user wants a file.".into())),
        e(ReasoningSignature("sig-1".into())),
        e(Delta("Reading it.".into())),
        e(ToolCallStart {
            index: 0,
            id: "toolu_1".into(),
            name: "Read".into(),
        }),
        e(ToolCallArguments {
            index: 0,
            json: "{\"file_pa".into(),
        }),
        e(ToolCallArguments {
            index: 0,
            json: "th\":\"/tmp/n.txt\"}".into(),
        }),
        e(Stop(StopReason::ToolUse)),
        e(Usage(USAGE)),
        e(End),
    ])
}

fn read_request(stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": stream,
        "system": "be brief",
        "thinking": {"type": "adaptive", "display": "omitted"},
        "messages": [{"role": "user", "content": "What is in /tmp/n.txt?"}],
        "tools": [{"name": "Read", "description": "Reads a file",
            "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}}}]})
}

#[tokio::test(start_paused = true)]
async fn a_native_tool_call_streams_in_anthropics_order_with_real_usage() {
    let fake = native();
    fake.script(tool_answer());
    let app = router(state(
        &fake,
        config_of(&[("MODEL_MAP", "claude-*=MiniMax-M3")]),
    ));
    let response = post(&app, "/v1/messages?beta=true", read_request(true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_"));
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = events(response).await;
    assert_eq!(
        names(&events),
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let start = &events[0].1["message"];
    assert_eq!(
        start["model"], "claude-sonnet-4-5",
        "the name sent is echoed"
    );
    assert!(start["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        events[4].1["delta"],
        json!({"type": "signature_delta", "signature": "sig-1"})
    );
    assert_eq!(
        events[9].1["content_block"],
        json!({"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}})
    );
    let delta = &events[13].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 85);
    assert_eq!(
        delta["usage"]["input_tokens"], 41,
        "169 less the 128 cached"
    );
    assert_eq!(delta["usage"]["cache_read_input_tokens"], 128);
    // The upstream was asked for the mapped model, with the conversation
    // as it is.
    let sent = fake.record(|r| r.conversations[0].clone());
    assert_eq!(sent.model, "MiniMax-M3");
    assert_eq!(sent.tools[0].name, "Read");
}

#[tokio::test(start_paused = true)]
async fn a_whole_message_has_thinking_text_and_tool_use_blocks() {
    let fake = native();
    fake.script(tool_answer());
    let app = router(state(&fake, Config::default()));
    let response = post(&app, "/v1/messages", read_request(false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let m = json(response).await;
    assert!(m["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    assert_eq!(
        m["content"],
        json!([
            {"type": "thinking", "thinking": "The user wants a file.", "signature": "sig-1"},
            {"type": "text", "text": "Reading it."},
            {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/tmp/n.txt"}}
        ])
    );
    assert_eq!(m["stop_reason"], "tool_use");
    assert_eq!(m["stop_sequence"], Value::Null);
    assert_eq!(
        m["usage"],
        json!({"input_tokens": 41, "output_tokens": 85,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 128})
    );
}

/// The signed thinking block and the call a client sends back reach a
/// native upstream as they were given, the result tied to its call.
#[tokio::test(start_paused = true)]
async fn the_next_turn_gives_the_upstream_its_own_signed_thinking_back() {
    let fake = native();
    let app = router(state(&fake, Config::default()));
    let mut body = read_request(false);
    body["messages"] = json!([
        {"role": "user", "content": "What is in /tmp/n.txt?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "The user wants a file.", "signature": "sig-1"},
            {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/tmp/n.txt"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
            "content": "1\tstubword42\n", "cache_control": {"type": "ephemeral"}}]}
    ]);
    let response = post(&app, "/v1/messages", body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let sent = fake.record(|r| r.conversations[0].clone());
    let assistant = &sent.messages[2];
    assert_eq!(assistant.thinking[0].signature, "sig-1");
    assert_eq!(assistant.tool_calls[0].id, "toolu_1");
    let result = &sent.messages[3];
    assert_eq!(result.tool_call_id.as_deref(), Some("toolu_1"));
    assert_eq!(result.text, "1\tstubword42\n");
}

/// A web chat has no tools: the emulation's call comes whole at the end,
/// as a `tool_use` block with its input as an object.
#[tokio::test(start_paused = true)]
async fn a_web_chat_answers_with_emulated_tool_use() {
    let fake = FakeUpstream::answering("unused", Duration::from_millis(5));
    let call = format!(
        "<tool_call id=\"{{nonce}}\">{}</tool_call>",
        json!({"name": "Read", "arguments": {"file_path": "/tmp/n.txt"}})
    );
    fake.script(Script::answer("c1", &call, 20, Duration::from_millis(5)));
    let app = router(state(&fake, Config::default()));
    let response = post(&app, "/v1/messages", read_request(true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let events = events(response).await;
    let starts: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, d)| &d["content_block"])
        .collect();
    let tool = starts.iter().find(|b| b["type"] == "tool_use").unwrap();
    assert_eq!(tool["name"], "Read");
    let json_delta: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&json_delta).unwrap(),
        json!({"file_path": "/tmp/n.txt"})
    );
    let stop = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(stop.1["delta"]["stop_reason"], "tool_use");
    assert_eq!(names(&events).last(), Some(&"message_stop"));
    // The conversation the web chat kept is deleted before the end.
    assert_eq!(fake.record(|r| r.deleted.len()), 1);
}

/// `count_tokens` gives the figure `message_start` carries for the same
/// request, on both kinds of upstream, and takes no account.
#[tokio::test(start_paused = true)]
async fn count_tokens_is_what_message_start_says() {
    for fake in [
        native(),
        FakeUpstream::answering("fine", Duration::from_millis(5)),
    ] {
        let app = router(state(&fake, Config::default()));
        let mut body = read_request(true);
        let response = post(&app, "/v1/messages", body.clone()).await;
        let events = events(response).await;
        let started = events[0].1["message"]["usage"]["input_tokens"].clone();
        body.as_object_mut().unwrap().remove("max_tokens");
        body.as_object_mut().unwrap().remove("stream");
        let chats = fake.record(|r| r.chats.len());
        let response = post(&app, "/v1/messages/count_tokens", body).await;
        assert_eq!(response.status(), StatusCode::OK);
        let counted = json(response).await;
        assert_eq!(counted, json!({"input_tokens": started}));
        assert!(started.as_u64().unwrap() > 10);
        assert_eq!(fake.record(|r| r.chats.len()), chats, "no upstream call");
    }
}

async fn error_of(response: Response<Body>) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    assert!(response.headers().contains_key("request-id"));
    let body = json(response).await;
    assert_eq!(body["type"], "error", "{body}");
    assert!(body["request_id"].as_str().unwrap().starts_with("req_"));
    (status, retry, body["error"].clone())
}

#[tokio::test(start_paused = true)]
async fn every_failure_is_in_anthropics_shape() {
    let fake = native();
    let app = router(state(&fake, config_of(&[("POOL_WAIT_MS", "2000")])));

    let (status, _, e) = error_of(
        post(
            &app,
            "/v1/messages",
            json!({"model": "m",
        "messages": [{"role": "user", "content": "x"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, e["type"].as_str()),
        (400, Some("invalid_request_error"))
    );
    assert!(e["message"].as_str().unwrap().contains("max_tokens"));

    let no_key = app
        .clone()
        .oneshot(
            Request::post("/v1/messages")
                .header("content-type", "application/json")
                .body(Body::from(read_request(false).to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    let (status, _, e) = error_of(no_key).await;
    assert_eq!(
        (status, e["type"].as_str()),
        (401, Some("authentication_error"))
    );

    fake.script(Script::refuse(UpstreamError::TokenRejected {
        fingerprint: "ab12cd34".into(),
        message: "expired".into(),
    }));
    let (status, _, e) = error_of(post(&app, "/v1/messages", read_request(true)).await).await;
    assert_eq!(
        (status, e["type"].as_str()),
        (401, Some("authentication_error"))
    );

    fake.busy_elsewhere(
        "tok-a",
        tokio::time::Instant::now() + Duration::from_secs(600),
    );
    let (status, retry, e) = error_of(post(&app, "/v1/messages", read_request(true)).await).await;
    assert_eq!(
        (status, e["type"].as_str()),
        (529, Some("overloaded_error"))
    );
    assert_eq!(retry.as_deref(), Some("2"));

    let (status, _, e) = error_of(post(&app, "/v1/messages/batches", json!({})).await).await;
    assert_eq!((status, e["type"].as_str()), (404, Some("not_found_error")));
    let get = app
        .clone()
        .oneshot(Request::get("/v1/messages").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (status, _, _) = error_of(get).await;
    assert_eq!(status, 405);
}

#[tokio::test(start_paused = true)]
async fn a_failure_mid_stream_is_an_error_event_and_no_message_stop() {
    let fake = native();
    fake.script(Script::steps(vec![
        Step::Event(UpstreamEvent::Delta("Half an".into())),
        Step::Fail(UpstreamError::Http {
            status: 500,
            message: "boom".into(),
        }),
    ]));
    let app = router(state(&fake, Config::default()));
    let response = post(&app, "/v1/messages", read_request(true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let events = events(response).await;
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "error");
    assert_eq!(data["error"]["type"], "api_error");
    assert!(!names(&events).contains(&"message_stop"));
}

/// A model silent for 40 s (thinking, or queued) gets a `ping` every 15 s,
/// and the answer still arrives whole; chat completions get an SSE comment.
#[tokio::test(start_paused = true)]
async fn a_silent_upstream_gets_keepalives_every_15_seconds() {
    let silent = || {
        Script::steps(vec![
            Step::Event(UpstreamEvent::Delta("thinking done: ".into())),
            Step::Sleep(Duration::from_secs(40)),
            Step::Event(UpstreamEvent::Delta("answer".into())),
            Step::Event(UpstreamEvent::End),
        ])
    };
    let fake = native();
    fake.script(silent());
    let app = router(state(&fake, Config::default()));
    let events = events(post(&app, "/v1/messages", read_request(true)).await).await;
    let pings = names(&events).iter().filter(|n| **n == "ping").count();
    assert_eq!(
        pings,
        1 + 2,
        "the first ping, then one at 15 s and one at 30 s"
    );
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "thinking done: answer");

    fake.script(silent());
    let chat = super::super::chat::router(state(&fake, Config::default()));
    let response = crate::testing::send(
        &chat,
        "tok-a",
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(body.matches(": keep-alive\n\n").count(), 2, "{body}");
    assert_eq!(
        crate::testing::streamed_content(&body),
        "thinking done: answer"
    );
}
