//! Tool calls and JSON answers through the chat route, in-process: the
//! scripted upstream plays a model that writes `{nonce}` where the contract's
//! nonce goes, its answers split into many small deltas so tags straddle them.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::router;
use crate::config::Config;
use crate::testing::{frames, json, send, state, FakeUpstream, Script, Step};
use crate::upstream::UpstreamError;

const PACE: Duration = Duration::from_millis(5);

fn call(name: &str, arguments: Value) -> String {
    format!(
        "<tool_call id=\"{{nonce}}\">{}</tool_call>",
        json!({"name": name, "arguments": arguments})
    )
}

fn ask(stream: bool, extra: Value) -> Value {
    let mut body = json!({"model": "hailuo", "stream": stream, "stream_options": {"include_usage": stream},
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// A fake whose next answers are `answers`, each in pieces of about 3 characters.
fn fake_answering(answers: &[String]) -> FakeUpstream {
    let fake = FakeUpstream::answering("unused", PACE);
    for a in answers {
        let parts = a.chars().count().div_ceil(3);
        fake.script(Script::answer("", a, parts, PACE));
    }
    fake
}

fn deltas(frames: &[(String, tokio::time::Instant)]) -> Vec<Value> {
    frames
        .iter()
        .filter_map(|(f, _)| serde_json::from_str::<Value>(f).ok())
        .collect()
}

/// The streamed content, put together.
fn content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn finish_reasons(chunks: &[Value]) -> Vec<&str> {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_streamed_call_after_text_becomes_tool_call_deltas() {
    let fake = fake_answering(&[format!(
        "Let me check < the sky. {} That is all.",
        call("get_weather", json!({"city": "巴黎"}))
    )]);
    let app = router(state(&fake, Config::default()));
    let response = send(&app, "tok-a", ask(true, json!({}))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let chunks = deltas(&frames(response).await);
    assert_eq!(
        content(&chunks),
        "Let me check < the sky. ",
        "no tag, nothing after it"
    );
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0][0]["function"]["name"], "get_weather");
    assert!(calls[0][0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(calls[1][0]["function"]["arguments"], r#"{"city":"巴黎"}"#);
    assert_eq!(finish_reasons(&chunks), ["tool_calls"]);
    let usage = chunks.iter().find(|c| c.get("usage").is_some()).unwrap();
    // The prompt counted includes the injected instruction (hundreds of tokens).
    assert!(
        usage["usage"]["prompt_tokens"].as_u64().unwrap() > 60,
        "{usage}"
    );
    let prompt = fake.record(|r| r.chats[0].1.clone());
    assert!(
        prompt.starts_with("user:What is the weather in Paris?\nsystem:You can call these tools"),
        "{prompt}"
    );
    assert_eq!(fake.record(|r| r.deleted.len()), 1);
}

#[tokio::test(start_paused = true)]
async fn an_invalid_call_is_corrected_in_the_same_conversation() {
    let fake = fake_answering(&[
        call("get_weather", json!({"town": "Paris"})),
        call("get_weather", json!({"city": "Paris"})),
    ]);
    let app = router(state(&fake, Config::default()));
    let response = send(&app, "tok-a,tok-b", ask(false, json!({}))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        r#"{"city":"Paris"}"#
    );
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let chats = fake.record(|r| r.chats.clone());
    assert_eq!(chats.len(), 2);
    assert_eq!(
        chats[0].0, chats[1].0,
        "the correction goes to the same account"
    );
    assert!(
        chats[1].1.starts_with("Your last answer could not be used"),
        "{}",
        chats[1].1
    );
    assert!(
        chats[1].1.contains("\"city\""),
        "it says what was wrong: {}",
        chats[1].1
    );
    let deleted = fake.record(|r| r.deleted.iter().map(|d| d.0.clone()).collect::<Vec<_>>());
    assert_eq!(deleted, ["chat1"], "one conversation, deleted once");
}

#[tokio::test(start_paused = true)]
async fn a_call_invalid_twice_is_the_first_answer_as_text() {
    let first = format!("Checking. {}", call("launch", json!({})));
    let fake = fake_answering(&[first.clone(), call("launch", json!({}))]);
    let app = router(state(&fake, Config::default()));
    let response = send(&app, "tok-a", ask(true, json!({}))).await;
    let chunks = deltas(&frames(response).await);
    let prompt = fake.record(|r| r.chats[0].1.clone());
    let nonce = prompt
        .rsplit("<tool_call id=\"")
        .next()
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(content(&chunks), first.replace("{nonce}", nonce));
    assert!(chunks
        .iter()
        .all(|c| c["choices"][0]["delta"].get("tool_calls").is_none()));
    assert_eq!(finish_reasons(&chunks), ["stop"]);
    assert_eq!(fake.record(|r| r.deleted.len()), 1);
}

#[tokio::test(start_paused = true)]
async fn a_correction_the_upstream_fails_is_an_error_and_still_cleaned_up() {
    let fake = fake_answering(&[call("nope", json!({}))]);
    fake.script(Script::steps(vec![Step::Fail(UpstreamError::Api {
        code: 1_000_003,
        message: "服务繁忙".into(),
    })]));
    let app = router(state(&fake, Config::default()));
    let response = send(&app, "tok-a", ask(false, json!({}))).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(fake.record(|r| r.deleted.len()), 1);
}

#[tokio::test(start_paused = true)]
async fn json_schema_answers_come_back_bare_and_valid() {
    let schema = json!({"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object",
        "properties": {"name": {"type": "string"}}, "required": ["name"], "additionalProperties": false}}});
    let fake = fake_answering(&[
        "Sure:\n```json\n{\"city\": \"Paris\"}\n```".to_string(),
        "```json\n{\"name\": \"Paris\"}\n```".to_string(),
    ]);
    let app = router(state(&fake, Config::default()));
    let response = send(
        &app,
        "tok-a",
        ask(true, json!({"tools": null, "response_format": schema})),
    )
    .await;
    let chunks = deltas(&frames(response).await);
    assert_eq!(content(&chunks), "{\"name\": \"Paris\"}");
    assert_eq!(fake.record(|r| r.chats.len()), 2);
}

#[tokio::test(start_paused = true)]
async fn a_correction_refused_as_busy_is_asked_again_on_the_same_account() {
    let fake = fake_answering(&[call("get_weather", json!({}))]);
    fake.script(Script::refuse(UpstreamError::Api {
        code: 1_000_102,
        message: "当前有对话正在进行，请稍后再试".into(),
    }));
    fake.script(Script::answer(
        "",
        &call("get_weather", json!({"city": "Paris"})),
        20,
        PACE,
    ));
    let app = router(state(&fake, Config::default()));
    let response = send(&app, "tok-a,tok-b", ask(false, json!({}))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let chats = fake.record(|r| r.chats.clone());
    assert_eq!(chats.len(), 3);
    assert!(chats.iter().all(|c| c.0 == chats[0].0), "one account");
    assert_eq!(fake.record(|r| r.deleted.len()), 1);
}

/// Files reach the adapter typed and whole; the caller's mistakes and
/// forbidden URLs are 400s before any upstream call.
#[tokio::test]
async fn files_are_gathered_before_the_chat_and_mistakes_refused_before_it() {
    let fake = FakeUpstream::answering("seen", PACE);
    let app = router(state(&fake, Config::default()));
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let parts = |part: Value| json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "look"}, part]}]});
    let ok = send(&app, "tok-a",
            parts(json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}}))).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        fake.record(|r| r.files.clone()),
        vec![vec![("image/png".to_string(), true, 70)]]
    );
    let refused = [
        json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}),
        json!({"type": "file", "file_url": {"url": "http://169.254.169.254/latest/meta-data/"}}),
        json!({"type": "file", "file_url": {"url": "http://[::ffff:7f00:1]:9001/"}}),
        json!({"type": "file", "file": {"file_id": "file-1"}}),
        json!({"type": "file", "file": {"file_data": "data:text/plain;base64,"}}),
    ];
    for part in refused {
        let response = send(&app, "tok-a", parts(part.clone())).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{part}");
        let body = json(response).await;
        assert!(
            body["error"]["param"]
                .as_str()
                .unwrap()
                .starts_with("messages[0].content[1]"),
            "{body}"
        );
    }
    assert_eq!(
        fake.record(|r| r.chats.len()),
        1,
        "no chat for a refused file"
    );
}
