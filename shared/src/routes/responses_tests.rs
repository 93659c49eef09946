//! The Responses door in-process, on tokio's paused clock: a native
//! upstream's call streamed as Codex and the SDK read it, a web chat's
//! emulated call, the whole response object, what a stateless gateway
//! refuses, a failure after the first byte, and the keep-alive.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::router;
use crate::config::Config;
use crate::conversation::StopReason;
use crate::responses::encode::tests::replay;
use crate::testing::{json, state, FakeUpstream, Script, Step, NATIVE_USAGE};
use crate::upstream::{UpstreamError, UpstreamEvent};

fn native() -> FakeUpstream {
    FakeUpstream::answering("unused", Duration::from_millis(10)).native()
}

async fn post(app: &axum::Router, body: Value) -> Response<Body> {
    app.clone()
        .oneshot(
            Request::post("/v1/responses")
                .header("authorization", "Bearer tok-a")
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap()
}

async fn text(response: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn exec_request(stream: bool) -> Value {
    json!({"model": "gpt-5-codex", "stream": stream, "store": false,
        "input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
                  {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "cat notes.txt"}]}],
        "tools": [{"type": "function", "name": "exec_command", "parameters": {"type": "object",
                   "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}},
                  {"type": "web_search", "external_web_access": true}]})
}

fn call_answer() -> Script {
    use UpstreamEvent::*;
    let e = Step::Event;
    Script::steps(vec![
        e(ReasoningDelta("Run cat.".into())),
        e(ReasoningSignature("sig-1".into())),
        e(ToolCallStart {
            index: 0,
            id: "toolu_1".into(),
            name: "exec_command".into(),
        }),
        e(ToolCallArguments {
            index: 0,
            json: "{\"cmd\":".into(),
        }),
        e(ToolCallArguments {
            index: 0,
            json: "\"cat notes.txt\"}".into(),
        }),
        e(Stop(StopReason::ToolUse)),
        e(Usage(NATIVE_USAGE)),
        e(End),
    ])
}

#[tokio::test(start_paused = true)]
async fn a_native_call_streams_as_items_codex_runs() {
    let fake = native();
    fake.script(call_answer());
    let app = router(state(&fake, Config::default()));
    let response = post(&app, exec_request(true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let r = replay(&text(response).await);
    assert_eq!(r["status"], "completed");
    assert_eq!(r["model"], "gpt-5-codex");
    let output = r["output"].as_array().unwrap();
    assert_eq!(output[0]["encrypted_content"], "sig-1");
    assert_eq!(output[1]["type"], "function_call");
    assert_eq!(output[1]["arguments"], r#"{"cmd":"cat notes.txt"}"#);
    assert_eq!(r["usage"]["input_tokens"], 169);
    assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 128);
    assert_eq!(
        r["tools"].as_array().unwrap().len(),
        1,
        "the hosted tool was not offered"
    );
    let sent = fake.record(|r| r.conversations[0].clone());
    assert_eq!(sent.tools.len(), 1);
    assert_eq!(sent.messages[0].text, "You are Codex.");
}

#[tokio::test(start_paused = true)]
async fn a_whole_response_has_every_key_and_the_web_chat_emulates_the_call() {
    let fake = FakeUpstream::answering("unused", Duration::from_millis(5));
    let call = format!(
        "<tool_call id=\"{{nonce}}\">{}</tool_call>",
        json!({"name": "exec_command", "arguments": {"cmd": "cat notes.txt"}})
    );
    fake.script(Script::answer("c1", &call, 10, Duration::from_millis(5)));
    let app = router(state(&fake, Config::default()));
    let response = post(&app, exec_request(false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let r = json(response).await;
    for key in [
        "id",
        "object",
        "created_at",
        "completed_at",
        "status",
        "incomplete_details",
        "model",
        "previous_response_id",
        "instructions",
        "output",
        "error",
        "tools",
        "tool_choice",
        "truncation",
        "parallel_tool_calls",
        "text",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "top_logprobs",
        "temperature",
        "reasoning",
        "user",
        "usage",
        "max_output_tokens",
        "max_tool_calls",
        "store",
        "background",
        "service_tier",
        "metadata",
        "safety_identifier",
        "prompt_cache_key",
    ] {
        assert!(r.get(key).is_some(), "{key} missing from {r}");
    }
    let call = &r["output"][0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap(),
        json!({"cmd": "cat notes.txt"})
    );
    assert_eq!(
        fake.record(|r| r.deleted.len()),
        1,
        "the web chat's conversation is deleted"
    );
}

#[tokio::test(start_paused = true)]
async fn what_a_stateless_gateway_cannot_do_is_an_openai_4xx() {
    let fake = native();
    let app = router(state(&fake, Config::default()));
    let mut body = exec_request(true);
    body["previous_response_id"] = json!("resp_abc");
    let response = post(&app, body).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let e = json(response).await;
    assert_eq!(e["error"]["code"], "previous_response_not_found");
    assert_eq!(e["error"]["param"], "previous_response_id");
    let mut body = exec_request(true);
    body["tool_choice"] = json!({"type": "web_search"});
    assert_eq!(post(&app, body).await.status(), StatusCode::BAD_REQUEST);
    for (method, path) in [
        ("GET", "/v1/responses/resp_abc"),
        ("DELETE", "/v1/responses/resp_abc"),
        ("GET", "/v1/responses/resp_abc/input_items"),
        ("POST", "/v1/responses/compact"),
    ] {
        let response = app
            .clone()
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
        let e = json(response).await;
        assert_eq!(e["error"]["type"], "invalid_request_error");
    }
    assert!(
        fake.record(|r| r.conversations.is_empty()),
        "nothing reached the upstream"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_after_the_first_byte_is_error_then_response_failed() {
    let fake = native();
    fake.script(Script::steps(vec![
        Step::Event(UpstreamEvent::Delta("Half".into())),
        Step::Fail(UpstreamError::Http {
            status: 500,
            message: "boom".into(),
        }),
    ]));
    let app = router(state(&fake, Config::default()));
    let s = text(post(&app, exec_request(true)).await).await;
    let r = replay(&s);
    assert_eq!(r["status"], "failed");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("500"),
        "{r}"
    );
    assert!(s.find("event: error\n").unwrap() < s.find("event: response.failed\n").unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_silent_upstream_gets_sse_comments() {
    let fake = native();
    fake.script(Script::steps(vec![
        Step::Event(UpstreamEvent::Delta("early, ".into())),
        Step::Sleep(Duration::from_secs(31)),
        Step::Event(UpstreamEvent::Delta("late".into())),
        Step::Event(UpstreamEvent::End),
    ]));
    let app = router(state(&fake, Config::default()));
    let s = text(post(&app, exec_request(true)).await).await;
    assert_eq!(s.matches(": keep-alive\n\n").count(), 2, "{s}");
    let r = replay(&s);
    assert_eq!(r["output"][0]["content"][0]["text"], "early, late");
}
