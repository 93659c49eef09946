//! The chat route over an upstream that takes the conversation as it is
//! (as MiniMax Code does): the scripted fake in its native mode, on tokio's
//! paused clock. What the web chats' tests check of the emulation, these
//! check of the pass-through: native tool calls streamed as argument deltas,
//! signed reasoning, stop reasons and the upstream's own usage; and the
//! pool's cool-downs by error class.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::router;
use crate::config::Config;
use crate::conversation::{Role, StopReason, ToolChoice};
use crate::testing::{error_message, frames, json, send, state, FakeUpstream, Script, Step};
use crate::upstream::{Unavailability, UpstreamError, UpstreamEvent};

fn native() -> FakeUpstream {
    FakeUpstream::answering("unused", Duration::from_millis(10)).native()
}

use crate::testing::NATIVE_USAGE as USAGE;

/// Thinking (signed), a sentence, then a call whose arguments come in three
/// pieces: the protocol's own example answer.
fn tool_answer() -> Script {
    use UpstreamEvent::*;
    let e = Step::Event;
    Script::steps(vec![
        e(ReasoningDelta("The user wants the weather.".into())),
        e(ReasoningSignature("sig-1".into())),
        e(Delta("Let me check.".into())),
        e(ToolCallStart {
            index: 0,
            id: "toolu_1".into(),
            name: "get_weather".into(),
        }),
        e(ToolCallArguments {
            index: 0,
            json: "{\"ci".into(),
        }),
        e(ToolCallArguments {
            index: 0,
            json: "ty\":".into(),
        }),
        e(ToolCallArguments {
            index: 0,
            json: "\"北京\"}".into(),
        }),
        e(Stop(StopReason::ToolUse)),
        e(Usage(USAGE)),
        e(End),
    ])
}

fn weather_request(stream: bool) -> Value {
    json!({"model": "gpt-4o", "stream": stream, "stream_options": {"include_usage": true},
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "weather in Beijing?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]})
}

#[tokio::test(start_paused = true)]
async fn native_tool_calls_stream_as_argument_deltas_with_real_usage() {
    let fake = native();
    fake.script(tool_answer());
    let app = router(state(&fake, Config::default()));
    let response = send(&app, "tok-a", weather_request(true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let chunks: Vec<Value> = frames(response)
        .await
        .into_iter()
        .filter_map(|(f, _)| serde_json::from_str(&f).ok())
        .collect();
    let delta = |c: &Value| c["choices"][0]["delta"].clone();
    let reasoning: String = chunks
        .iter()
        .filter_map(|c| delta(c)["reasoning_content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(reasoning, "The user wants the weather.");
    let content: String = chunks
        .iter()
        .filter_map(|c| delta(c)["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(content, "Let me check.");
    let calls: Vec<Value> = chunks
        .iter()
        .filter_map(|c| delta(c)["tool_calls"].get(0).cloned())
        .collect();
    assert_eq!(
        calls.len(),
        4,
        "a head and three argument pieces: {calls:?}"
    );
    assert_eq!(calls[0]["id"], "toolu_1");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let arguments: String = calls
        .iter()
        .map(|c| c["function"]["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(arguments, "{\"city\":\"北京\"}");
    assert!(calls.iter().all(|c| c["index"] == 0));
    let finishes: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, [&json!("tool_calls")]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        *usage,
        json!({"prompt_tokens": 169, "completion_tokens": 85, "total_tokens": 254,
            "prompt_tokens_details": {"cached_tokens": 128},
            "completion_tokens_details": {"reasoning_tokens": 57}}),
        "the upstream's own count, not an estimate"
    );
    // The conversation went as it is: no prompt, no nonce, the tools offered.
    let sent = fake.record(|r| r.conversations.clone());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].messages[0].role, Role::System);
    assert_eq!(sent[0].tools[0].name, "get_weather");
    assert_eq!(sent[0].tool_choice, ToolChoice::Auto);
    assert!(
        fake.record(|r| r.deleted.is_empty()),
        "nothing to delete upstream"
    );
}

#[tokio::test(start_paused = true)]
async fn a_whole_native_answer_puts_its_calls_together() {
    let fake = native();
    fake.script(tool_answer());
    let app = router(state(&fake, Config::default()));
    let body = json(send(&app, "tok-a", weather_request(false)).await).await;
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], "Let me check.");
    assert_eq!(message["reasoning_content"], "The user wants the weather.");
    assert_eq!(
        message["tool_calls"],
        json!([{"id": "toolu_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"北京\"}"}}])
    );
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["usage"]["prompt_tokens"], 169);
    assert_eq!(body["model"], "gpt-4o", "the caller's model name is echoed");
}

#[tokio::test(start_paused = true)]
async fn stop_reasons_map_to_openais_and_the_history_goes_back_as_it_was() {
    let fake = native();
    use UpstreamEvent::*;
    fake.script(Script::steps(vec![
        Step::Event(Delta("cut he".into())),
        Step::Event(Stop(StopReason::MaxTokens)),
        Step::Event(End),
    ]));
    let app = router(state(&fake, Config::default()));
    let body = json(
        send(
            &app,
            "tok-a",
            json!({"model": "m", "max_completion_tokens": 3, "reasoning_effort": "high", "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["choices"][0]["message"]["content"], "cut he");
    let sent = fake.record(|r| r.conversations[0].clone());
    assert_eq!(sent.max_tokens, Some(3));
    assert_eq!(sent.thinking, crate::conversation::ThinkingWanted::On);
    assert_eq!(sent.messages[1].tool_calls[0].id, "call_1");
    assert_eq!(sent.messages[2].tool_call_id.as_deref(), Some("call_1"));
    assert!(
        !fake.record(|r| r.chats[0].1.contains("<tool_call")),
        "no contract in a native turn"
    );
}

#[tokio::test(start_paused = true)]
async fn kept_conversations_are_refused_on_a_stateless_upstream() {
    let fake = native();
    let app = router(state(&fake, Config::default()));
    for (field, value) in [
        ("keep_conversation", json!(true)),
        ("conversation_id", json!("123")),
    ] {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        body[field] = value;
        let response = send(&app, "tok-a", body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = json(response).await;
        assert_eq!(body["error"]["param"], field);
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Send the whole history"));
    }
    assert!(fake.record(|r| r.chats.is_empty()), "nothing was sent");
}

fn cooling(token: &str, class: Unavailability, secs: u64) -> Script {
    Script::refuse(UpstreamError::Cooling {
        fingerprint: crate::redact::fingerprint(token),
        class,
        message: "limit".into(),
        retry_after: Duration::from_secs(secs),
    })
}

fn plain_answer(text: &str) -> Script {
    Script::steps(vec![
        Step::Event(UpstreamEvent::Delta(text.into())),
        Step::Event(UpstreamEvent::End),
    ])
}

#[tokio::test(start_paused = true)]
async fn a_throttled_account_cools_and_the_request_moves_on_then_all_cooling_is_a_429() {
    let fake = native();
    let app = router(state(&fake, Config::default()));
    let ask = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    // One account only: throttled → a 429 with the cool-down as Retry-After.
    fake.script(cooling("tok-a", Unavailability::Throttled, 42));
    let response = send(&app, "tok-a", ask.clone()).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "42");
    let message = error_message(response).await;
    assert!(message.contains("throttled"), "{message}");
    // While it cools it is not asked at all.
    let before = fake.record(|r| r.chats.len());
    let response = send(&app, "tok-a", ask.clone()).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(fake.record(|r| r.chats.len()), before);
    // With a second account the request is answered there.
    fake.script(plain_answer("from b"));
    let body = json(send(&app, "tok-a,tok-b", ask.clone()).await).await;
    assert_eq!(body["choices"][0]["message"]["content"], "from b");
    // Its time up, the first account answers again.
    tokio::time::advance(Duration::from_secs(43)).await;
    fake.script(plain_answer("a again"));
    let body = json(send(&app, "tok-a", ask).await).await;
    assert_eq!(body["choices"][0]["message"]["content"], "a again");
}

/// A limit that arrives mid-answer (an error event after the first byte)
/// ends that answer in an error, and cools the account as a refusal
/// before the first byte would: the next request is not sent to it.
#[tokio::test(start_paused = true)]
async fn an_account_throttled_mid_answer_cools_too() {
    let fake = native();
    let app = router(state(&fake, Config::default()));
    fake.script(Script::steps(vec![
        Step::Event(UpstreamEvent::Delta("Half an".into())),
        Step::Fail(UpstreamError::Cooling {
            fingerprint: crate::redact::fingerprint("tok-a"),
            class: Unavailability::Throttled,
            message: "rate limit exceeded (2045)".into(),
            retry_after: Duration::from_secs(30),
        }),
    ]));
    let ask =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let response = send(&app, "tok-a", ask.clone()).await;
    assert_eq!(response.status(), StatusCode::OK, "the answer had begun");
    let body = frames(response).await;
    assert!(
        body.iter().any(|(f, _)| f.contains("\"error\"")),
        "{body:?}"
    );
    let chats = fake.record(|r| r.chats.len());
    let response = send(&app, "tok-a", ask.clone()).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "30");
    assert_eq!(
        fake.record(|r| r.chats.len()),
        chats,
        "not asked while it cools"
    );
    tokio::time::advance(Duration::from_secs(31)).await;
    fake.script(plain_answer("back"));
    assert_eq!(send(&app, "tok-a", ask).await.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn accounts_out_of_credits_are_a_503_that_says_so_and_a_dead_token_a_401() {
    let fake = native();
    let app = router(state(&fake, Config::default()));
    let ask = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    fake.script(cooling("tok-a", Unavailability::NoCredits, 3600));
    let response = send(&app, "tok-a", ask.clone()).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(error_message(response).await.contains("out of credits"));
    fake.kill("tok-c");
    let response = send(&app, "tok-c", ask).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(start_paused = true)]
async fn the_callers_mistakes_the_upstream_reports_are_400s_and_never_retried() {
    let fake = native();
    let app = router(state(&fake, Config::default()));
    fake.script(Script::refuse(UpstreamError::InvalidRequest {
        message: "invalid params, context window exceeds limit (2013)".into(),
        code: "context_length_exceeded",
    }));
    let response = send(
        &app,
        "tok-a,tok-b",
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = json(response).await;
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    assert_eq!(fake.record(|r| r.chats.len()), 1, "not retried elsewhere");
}

#[tokio::test(start_paused = true)]
async fn an_upstreams_keep_alive_holds_a_long_silence_open_and_without_it_the_answer_stalls() {
    use UpstreamEvent::*;
    let silence = |alive: bool| {
        let mut steps = vec![Step::Event(Delta("thinking hard".into()))];
        for _ in 0..3 {
            steps.push(Step::Sleep(Duration::from_secs(45)));
            if alive {
                steps.push(Step::Event(Alive));
            }
        }
        steps.extend([Step::Event(Delta(", done".into())), Step::Event(End)]);
        Script::steps(steps)
    };
    let fake = native();
    let app = router(state(&fake, Config::default()));
    let ask = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    // 135 s without content, a ping every 45 s: under the 60 s idle timeout.
    fake.script(silence(true));
    let body = json(send(&app, "tok-a", ask.clone()).await).await;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "thinking hard, done"
    );
    // The same silence with no ping: the idle timeout ends it.
    fake.script(silence(false));
    let response = send(&app, "tok-a", ask).await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(error_message(response).await.contains("stalled"));
}
