//! The chat route in-process: the router called with `oneshot` over the
//! scripted upstream, on tokio's paused clock (every timeout, retry and pause
//! is virtual time, so these tests take milliseconds and never flake).

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::time::Instant;
use tower::ServiceExt;

use super::router;
use crate::config::Config;
use crate::testing::{
    chat_request, error_message, frames, json, send, state, FakeUpstream, Script, Step,
};
use crate::upstream::{UpstreamError, UpstreamEvent};

const ANSWER: &str = "海螺的回答：one two three four";

use crate::testing::config_of as config;

fn ask(stream: bool) -> Value {
    json!({"model": "hailuo", "stream": stream, "stream_options": {"include_usage": stream},
           "messages": [{"role": "user", "content": "你好"}]})
}

fn content_of(frames: &[(String, Instant)]) -> String {
    frames
        .iter()
        .filter_map(|(f, _)| serde_json::from_str::<Value>(f).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_streamed_answer_finishes_before_the_deletion_and_ends_after_it() {
    let fake = FakeUpstream::answering(ANSWER, Duration::from_millis(100))
        .with_delete_taking(Duration::from_secs(4));
    let app = router(state(&fake, Config::default()));
    let response = send(&app, "tok-a", ask(true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let frames = frames(response).await;
    assert_eq!(content_of(&frames), ANSWER);
    let finish = frames
        .iter()
        .find(|(f, _)| f.contains("\"finish_reason\":\"stop\""))
        .expect("a finish chunk");
    let usage = frames
        .iter()
        .find(|(f, _)| f.contains("\"usage\":{"))
        .expect("a usage chunk");
    let (done, done_at) = frames.last().unwrap();
    assert_eq!(done, "[DONE]");
    let deleted_at = fake.record(|r| r.deleted[0].1);
    assert!(
        finish.1 < deleted_at,
        "finish_reason reaches the caller before the deletion"
    );
    assert!(
        deleted_at <= usage.1 && deleted_at <= *done_at,
        "the deletion is inside the response"
    );
}

#[tokio::test(start_paused = true)]
async fn a_non_streamed_answer_is_whole_and_deleted() {
    let fake = FakeUpstream::answering(ANSWER, Duration::from_millis(10));
    let app = router(state(&fake, Config::default()));
    let response = send(&app, "tok-a", ask(false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
    assert_eq!(body["id"], "chatcmpl-chat1");
    assert_eq!(fake.record(|r| r.deleted.len()), 1);
}

#[tokio::test(start_paused = true)]
async fn more_requests_than_accounts_are_all_answered_without_a_refused_turn() {
    // Each answer takes 2 s; 9 requests share 3 accounts; the pool hands an
    // account back to a waiting request instead of sending a turn to a busy one.
    let fake = FakeUpstream::answering(ANSWER, Duration::from_millis(500));
    let app = router(state(&fake, Config::default()));
    let requests = (0..9).map(|i| {
        let app = app.clone();
        tokio::spawn(async move {
            let response = send(&app, "tok-a,tok-b,tok-c", ask(i % 2 == 0)).await;
            let status = response.status();
            let text = if i % 2 == 0 {
                content_of(&frames(response).await)
            } else {
                json(response).await["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            };
            (status, text)
        })
    });
    for request in requests.collect::<Vec<_>>() {
        let (status, text) = request.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(text, ANSWER);
    }
    assert_eq!(
        fake.record(|r| r.refused_busy),
        0,
        "no turn was sent to a busy account"
    );
    assert_eq!(fake.record(|r| r.chats.len()), 9);
    assert_eq!(fake.record(|r| r.deleted.len()), 9);
}

#[tokio::test(start_paused = true)]
async fn a_caller_gone_while_waiting_for_an_account_never_takes_it() {
    // One account, answering for 2 s; a second request waits for it, and its
    // caller goes (a server drops the handler) before the account is free.
    let fake = FakeUpstream::answering(ANSWER, Duration::from_millis(500));
    let app = router(state(&fake, Config::default()));
    let first = tokio::spawn({
        let app = app.clone();
        async move { content_of(&frames(send(&app, "tok-a", ask(true)).await).await) }
    });
    while fake.record(|r| r.chats.len()) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = tokio::spawn({
        let app = app.clone();
        async move { send(&app, "tok-a", ask(false)).await.status() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second request waits for the account"
    );
    second.abort();
    assert_eq!(first.await.unwrap(), ANSWER);
    // Long after the account is free again, the second turn was never sent.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(fake.record(|r| r.chats.len()), 1);
    assert_eq!(fake.record(|r| r.deleted.len()), 1);
}

#[tokio::test(start_paused = true)]
async fn an_account_busy_elsewhere_is_asked_again_after_pauses_not_hammered() {
    let fake = FakeUpstream::answering(ANSWER, Duration::from_millis(10));
    let start = Instant::now();
    fake.busy_elsewhere("tok-a", start + Duration::from_secs(6));
    let app = router(state(&fake, Config::default()));
    let response = send(&app, "tok-a", ask(false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let waited = Instant::now() - start;
    assert!(waited >= Duration::from_secs(6), "{waited:?}");
    let refused = fake.record(|r| r.refused_busy);
    // Pauses of 0.5, 1, 2, 4 s (±50%) fit at most 6 refusals into 6 s.
    assert!((2..=7).contains(&refused), "{refused} refusals");
}

#[tokio::test(start_paused = true)]
async fn a_pool_busy_past_the_wait_is_503_with_retry_after() {
    let fake = FakeUpstream::answering(ANSWER, Duration::from_millis(10));
    fake.busy_elsewhere("tok-a", Instant::now() + Duration::from_secs(600));
    fake.busy_elsewhere("tok-b", Instant::now() + Duration::from_secs(600));
    let app = router(state(&fake, config(&[("POOL_WAIT_MS", "5000")])));
    let started = Instant::now();
    let response = send(&app, "tok-a,tok-b", ask(true)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "5");
    let waited = Instant::now() - started;
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(7),
        "{waited:?}"
    );
    let body = json(response).await;
    assert_eq!(body["error"]["code"], "accounts_busy");
    assert!(body["error"]["message"].as_str().unwrap().contains("Fake"));
}

#[tokio::test(start_paused = true)]
async fn a_turn_the_upstream_accepted_is_never_sent_again() {
    let fake = FakeUpstream::answering(ANSWER, Duration::from_millis(10));
    fake.script(Script::steps(vec![
        Step::conversation("accepted"),
        Step::Hang,
    ]));
    let app = router(state(&fake, Config::default()));
    let response = send(&app, "tok-a,tok-b,tok-c", ask(false)).await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        fake.record(|r| r.chats.len()),
        1,
        "not re-sent on another token"
    );
    assert_eq!(fake.record(|r| r.deleted[0].0.clone()), "accepted");
}

#[tokio::test(start_paused = true)]
async fn an_adapter_that_watches_progress_owns_the_wait() {
    // The agent's polling decides when an answer has stalled: a first event
    // after 45 s (past the 30 s first-byte timeout) is still an answer.
    let fake = FakeUpstream::answering(ANSWER, Duration::from_millis(10)).watching_progress();
    fake.script(Script::steps(vec![
        Step::conversation("slow"),
        Step::Sleep(Duration::from_secs(45)),
        Step::Event(UpstreamEvent::ReasoningDelta("想".into())),
        Step::Sleep(Duration::from_secs(70)),
        Step::Event(UpstreamEvent::Delta("好".into())),
        Step::Event(UpstreamEvent::End),
    ]));
    let app = router(state(&fake, Config::default()));
    let response = send(&app, "tok-a,tok-b", ask(false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    assert_eq!(body["choices"][0]["message"]["content"], "好");
    assert_eq!(body["choices"][0]["message"]["reasoning_content"], "想");
    assert_eq!(fake.record(|r| r.chats.len()), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failure_before_acceptance_is_retried_on_another_token() {
    let fake = FakeUpstream::answering(ANSWER, Duration::from_millis(10));
    fake.script(Script::refuse(UpstreamError::Http {
        status: 500,
        message: "an HTML page".into(),
    }));
    let app = router(state(&fake, Config::default()));
    let response = send(&app, "tok-a,tok-b", ask(false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let chats = fake.record(|r| r.chats.clone());
    assert_eq!(chats.len(), 2);
    assert_ne!(chats[0].0, chats[1].0, "the retry went to the other token");
}

#[tokio::test(start_paused = true)]
async fn a_dead_token_fails_over_and_a_lone_dead_token_is_401_in_the_adapters_words() {
    let fake = FakeUpstream::answering(ANSWER, Duration::from_millis(10));
    fake.kill("tok-dead");
    let app = router(state(&fake, Config::default()));
    let response = send(&app, "tok-dead,tok-live", ask(false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = send(&app, "tok-dead", ask(false)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let message = error_message(response).await;
    assert!(
        message.contains("Fake") && message.contains("Log in to the fake again"),
        "{message}"
    );
    assert!(!message.contains("hailuoai.com"), "{message}");
}

/// A streamed answer whose upstream sends "半", then does `last`.
async fn half_a_stream_then(last: Step) -> (FakeUpstream, axum::Router, Vec<(String, Instant)>) {
    let fake = FakeUpstream::answering(ANSWER, Duration::from_millis(10));
    fake.script(Script::steps(vec![
        Step::conversation("cut"),
        Step::Event(UpstreamEvent::Delta("半".into())),
        last,
    ]));
    let app = router(state(&fake, Config::default()));
    let response = send(&app, "tok-a", ask(true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let frames = frames(response).await;
    assert_eq!(content_of(&frames), "半");
    (fake, app, frames)
}

/// The error chunk a stream ends with, checked to be followed by `[DONE]`
/// and nothing else.
fn error_then_done(frames: &[(String, Instant)]) -> Value {
    let n = frames.len();
    assert_eq!(frames[n - 1].0, "[DONE]");
    serde_json::from_str(&frames[n - 2].0).unwrap()
}

/// Where panics unwind (the server), a bug mid-stream ends the stream as an
/// upstream failure does, and the conversation is still deleted.
#[tokio::test(start_paused = true)]
async fn a_bug_that_panics_mid_stream_ends_with_an_error_chunk_then_done() {
    let (fake, app, frames) = half_a_stream_then(Step::Panic).await;
    let error = error_then_done(&frames);
    assert_eq!(error["error"]["type"], "server_error");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("a bug"), "{message}");
    assert!(!message.contains("tok-not-for-callers"), "{message}");
    assert_eq!(fake.record(|r| r.deleted.len()), 1);
    // The account is free again: the next request is answered.
    let response = send(&app, "tok-a", ask(false)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// The same bug without streaming: a 500 that does not quote the panic,
/// and the conversation is still deleted before it is sent.
#[tokio::test(start_paused = true)]
async fn a_bug_that_panics_while_an_answer_is_collected_is_a_500_and_leaves_nothing_behind() {
    let (fake, app, response) = half_an_answer_then(Step::Panic).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let message = error_message(response).await;
    assert!(message.contains("a bug"), "{message}");
    assert_eq!(fake.record(|r| r.deleted.len()), 1);
    let response = send(&app, "tok-a", ask(false)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_stall_mid_stream_ends_with_an_error_chunk_then_done() {
    let (fake, _, frames) = half_a_stream_then(Step::Hang).await;
    let error = error_then_done(&frames);
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("stalled"));
    assert!(!frames
        .iter()
        .any(|(f, _)| f.contains("finish_reason\":\"stop")));
    assert_eq!(fake.record(|r| r.deleted.len()), 1);
}

#[tokio::test(start_paused = true)]
async fn a_client_gone_mid_stream_gets_the_conversation_deleted_and_the_account_back() {
    let fake = FakeUpstream::answering(ANSWER, Duration::from_secs(1));
    let app = router(state(&fake, Config::default()));
    let response = send(&app, "tok-a", ask(true)).await;
    let mut body = response.into_body().into_data_stream();
    use futures_util::StreamExt;
    body.next().await.unwrap().unwrap();
    drop(body);
    // The next request on the same (only) account is answered, not refused.
    let response = send(&app, "tok-a", ask(false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(fake.record(|r| r.deleted.len()), 2);
    assert_eq!(fake.record(|r| r.refused_busy), 0);
}

#[tokio::test(start_paused = true)]
async fn requests_abandoned_at_every_phase_leave_nothing_behind() {
    let fake = FakeUpstream::answering(ANSWER, Duration::from_millis(300));
    let app = router(state(&fake, Config::default()));
    for round in 0..30u64 {
        let stream = round % 2 == 0;
        let call = app
            .clone()
            .oneshot(chat_request("tok-a,tok-b", ask(stream)));
        // Give up after 0 to 1.4 s: before the headers, mid-answer, or while a
        // non-streamed answer is pending.
        let patience = Duration::from_millis(round * 47 % 1400);
        if let Ok(Ok(response)) = tokio::time::timeout(patience, call).await {
            let mut body = response.into_body().into_data_stream();
            use futures_util::StreamExt;
            let _ = tokio::time::timeout(patience, body.next()).await;
        }
    }
    let response = send(&app, "tok-a", ask(false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    // Let the detached work finish, then every conversation must be gone.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (chats, deleted) = fake.record(|r| (r.chats.len(), r.deleted.len()));
    assert_eq!(chats, deleted, "every conversation opened was deleted");
    assert_eq!(fake.record(|r| r.refused_busy), 0);
}

#[tokio::test]
async fn callers_mistakes_are_refused_before_the_upstream() {
    let fake = FakeUpstream::answering(ANSWER, Duration::from_millis(10));
    let app = router(state(&fake, Config::default()));
    let send = |request: Request<Body>| app.clone().oneshot(request);
    let r = send(chat_request("sk-revoked-gateway-key", ask(false)))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(error_message(r).await.contains("Invalid API key"));
    let mut body = ask(false);
    body["n"] = json!(3);
    assert_eq!(
        send(chat_request("tok-a", body)).await.unwrap().status(),
        400
    );
    let text_plain = Request::post("/v1/chat/completions")
        .header("authorization", "Bearer tok-a")
        .header("content-type", "text/plain;charset=UTF-8")
        .body(Body::from(ask(false).to_string()))
        .unwrap();
    let r = send(text_plain).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(json(r).await["error"]["code"], "unsupported_content_type");
    let huge_bearer = chat_request(&"t".repeat(100_000), ask(false));
    let r = send(huge_bearer).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(error_message(r).await.contains("malformed"));
    assert!(
        fake.record(|r| r.chats.is_empty()),
        "nothing reached the upstream"
    );
    let x_api_key = Request::post("/chat/completions")
        .header("x-api-key", "tok-k")
        .body(Body::from(ask(false).to_string()))
        .unwrap();
    assert_eq!(send(x_api_key).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn browsers_get_cors_on_preflights_answers_and_errors() {
    let fake = FakeUpstream::answering(ANSWER, Duration::from_millis(10));
    let app = router(state(&fake, Config::default()));
    let preflight = Request::options("/v1/chat/completions")
        .header("origin", "https://chat.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-api-key,x-stainless-os,x-stainless-retry-count",
        )
        .body(Body::empty())
        .unwrap();
    let r = app.clone().oneshot(preflight).await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    for name in [
        "authorization",
        "content-type",
        "x-api-key",
        "x-stainless-os",
    ] {
        assert!(allowed.contains(name), "{allowed}");
    }
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    let error = Request::post("/v1/chat/completions")
        .header("origin", "https://chat.example")
        .body(Body::from("{}"))
        .unwrap();
    let r = app.clone().oneshot(error).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        r.headers()
            .get_all("access-control-allow-origin")
            .iter()
            .count(),
        1
    );
    // Restricted origins, or none at all.
    let app = router(state(
        &fake,
        config(&[(
            "CORS_ALLOW_ORIGINS",
            "https://a.example, https://b.example/",
        )]),
    ));
    let from = |origin: &str| {
        Request::get("/v1/models")
            .header("origin", origin)
            .body(Body::empty())
            .unwrap()
    };
    let r = app
        .clone()
        .oneshot(from("https://b.example"))
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://b.example"
    );
    let r = app.oneshot(from("https://evil.example")).await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let app = router(state(&fake, config(&[("CORS_ALLOW_ORIGINS", "none")])));
    let r = app.oneshot(from("https://a.example")).await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

/// A request, not streamed, whose answer has begun when `last` happens.
async fn half_an_answer_then(last: Step) -> (FakeUpstream, axum::Router, Response<Body>) {
    let fake = FakeUpstream::answering(ANSWER, Duration::from_millis(10));
    fake.script(Script::steps(vec![
        Step::conversation("cut"),
        Step::Event(UpstreamEvent::Delta("一半".into())),
        last,
    ]));
    let app = router(state(&fake, Config::default()));
    let response = send(&app, "tok-a", ask(false)).await;
    (fake, app, response)
}

#[tokio::test(start_paused = true)]
async fn an_upstream_failure_mid_answer_is_502_not_a_cut_answer() {
    let (fake, _, response) = half_an_answer_then(Step::Fail(UpstreamError::Transport(
        "the upstream closed the answer before its end".into(),
    )))
    .await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let message = error_message(response).await;
    assert!(message.contains("before its end"), "{message}");
    assert_eq!(fake.record(|r| r.deleted.len()), 1);
}

/// A caller who keeps the connection and stops reading: once the stream has
/// waited `CALLER_STALL_TIMEOUT` for it to take a chunk, the conversation is
/// deleted and the account given back, where both were held for as long as
/// the connection lived; and the body, read later, ends in an error, not as
/// a whole answer.
#[tokio::test(start_paused = true)]
async fn a_caller_who_stops_reading_costs_a_minute_then_the_stream_is_cleaned_up() {
    use futures_util::StreamExt;
    let fake = FakeUpstream::answering("unused", Duration::ZERO);
    // More chunks than the stream queues.
    fake.script(Script::answer(
        "c-unread",
        &"word ".repeat(200),
        200,
        Duration::from_millis(10),
    ));
    let app = router(state(&fake, Config::default()));
    let started = Instant::now();
    let response = send(&app, "tok-a", ask(true)).await;
    assert_eq!(response.status(), StatusCode::OK);

    tokio::time::sleep(super::super::CALLER_STALL_TIMEOUT / 2).await;
    fake.record(|r| assert!(r.deleted.is_empty(), "a caller who may still read"));
    let mut deleted = None;
    for _ in 0..3 * super::super::CALLER_STALL_TIMEOUT.as_secs() {
        deleted = fake.record(|r| r.deleted.first().map(|(_, at)| *at));
        if deleted.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let deleted = deleted.expect("the conversation of a caller who stopped reading is kept");
    let waited = deleted - started;
    assert!(
        waited >= super::super::CALLER_STALL_TIMEOUT
            && waited < super::super::CALLER_STALL_TIMEOUT + Duration::from_secs(5),
        "{waited:?}"
    );

    let mut body = response.into_body().into_data_stream();
    let (mut read, mut ended_in) = (String::new(), None);
    while let Some(piece) = body.next().await {
        match piece {
            Ok(bytes) => read.push_str(&String::from_utf8_lossy(&bytes)),
            Err(e) => ended_in = Some(e.to_string()),
        }
    }
    assert!(!read.contains("[DONE]"), "{read}");
    assert!(
        ended_in.is_some_and(|e| e.contains("before it was whole")),
        "the body must end in an error"
    );
}
