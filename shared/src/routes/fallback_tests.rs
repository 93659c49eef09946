//! The chain of upstreams (`UPSTREAM=minimax-code,minimax-api`) through the
//! chat route, on tokio's paused clock: a request moves to the next upstream
//! only when no account of this one can answer now (dead, cooling, busy
//! past the pool's wait), says which served, and comes back to the first
//! once it can; a caller's mistake or an upstream's own failure never moves.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use super::router;
use crate::testing::{chain_state, config_of, json, send, FakeUpstream, Script};
use crate::upstream::{Unavailability, UpstreamError};

fn free() -> FakeUpstream {
    FakeUpstream::answering("free answer", Duration::from_millis(5))
        .native()
        .with_id("minimax-code")
}

fn paid() -> FakeUpstream {
    FakeUpstream::answering("paid answer", Duration::from_millis(5))
        .native()
        .with_id("minimax-api")
}

fn ask() -> serde_json::Value {
    json!({"model": "MiniMax-M3", "messages": [{"role": "user", "content": "hi"}]})
}

async fn served(
    app: &axum::Router,
    tokens: &str,
) -> (StatusCode, Option<String>, serde_json::Value) {
    let response = send(app, tokens, ask()).await;
    let status = response.status();
    let header = response
        .headers()
        .get("x-gateway-upstream")
        .map(|v| v.to_str().unwrap().to_string());
    (status, header, json(response).await)
}

fn throttled(token: &str) -> UpstreamError {
    UpstreamError::Cooling {
        fingerprint: crate::redact::fingerprint(token),
        class: Unavailability::Throttled,
        message: "rate limit".into(),
        retry_after: Duration::from_secs(60),
    }
}

#[tokio::test(start_paused = true)]
async fn free_first_paid_while_free_cannot_answer_then_free_again() {
    let (code, api) = (free(), paid());
    let app = router(chain_state(&[&code, &api], config_of(&[])));
    let (status, header, body) = served(&app, "tok-a,sk-api-k1").await;
    assert_eq!(
        (status, header.as_deref()),
        (StatusCode::OK, Some("minimax-code"))
    );
    assert_eq!(body["choices"][0]["message"]["content"], "free answer");
    assert_eq!(api.record(|r| r.chats.len()), 0);

    code.script(Script::refuse(throttled("tok-a")));
    let (status, header, body) = served(&app, "tok-a,sk-api-k1").await;
    assert_eq!(
        (status, header.as_deref()),
        (StatusCode::OK, Some("minimax-api"))
    );
    assert_eq!(body["choices"][0]["message"]["content"], "paid answer");
    // The platform got the key, never the web token; MiniMax Code the reverse.
    assert_eq!(
        api.record(|r| r.chats[0].0.clone()),
        crate::redact::fingerprint("sk-api-k1")
    );
    assert!(code.record(|r| r
        .chats
        .iter()
        .all(|(fp, _)| *fp == crate::redact::fingerprint("tok-a"))));

    // While the account cools, the platform answers without asking it.
    let asked = code.record(|r| r.chats.len());
    assert_eq!(
        served(&app, "tok-a,sk-api-k1").await.1.as_deref(),
        Some("minimax-api")
    );
    assert_eq!(code.record(|r| r.chats.len()), asked);
    // Cooled down: free again.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(
        served(&app, "tok-a,sk-api-k1").await.1.as_deref(),
        Some("minimax-code")
    );
}

#[tokio::test(start_paused = true)]
async fn dead_and_busy_past_the_wait_fall_back_too() {
    let (code, api) = (free(), paid());
    let app = router(chain_state(
        &[&code, &api],
        config_of(&[("POOL_WAIT_MS", "2000")]),
    ));
    code.kill("tok-dead");
    assert_eq!(
        served(&app, "tok-dead,sk-api-k1").await.1.as_deref(),
        Some("minimax-api")
    );
    code.busy_elsewhere(
        "tok-busy",
        tokio::time::Instant::now() + Duration::from_secs(600),
    );
    let started = tokio::time::Instant::now();
    let (status, header, _) = served(&app, "tok-busy,sk-api-k1").await;
    assert_eq!(
        (status, header.as_deref()),
        (StatusCode::OK, Some("minimax-api"))
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited for the pool first"
    );
}

#[tokio::test(start_paused = true)]
async fn a_callers_mistake_or_an_upstream_failure_does_not_move() {
    let (code, api) = (free(), paid());
    let app = router(chain_state(
        &[&code, &api],
        config_of(&[("UPSTREAM_RETRIES", "0")]),
    ));
    code.script(Script::refuse(UpstreamError::InvalidRequest {
        message: "context window exceeded".into(),
        code: "context_length_exceeded",
    }));
    let (status, header, _) = served(&app, "tok-a,sk-api-k1").await;
    assert_eq!((status, header), (StatusCode::BAD_REQUEST, None));
    code.script(Script::refuse(UpstreamError::Http {
        status: 500,
        message: "boom".into(),
    }));
    assert_eq!(
        served(&app, "tok-a,sk-api-k1").await.0,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(api.record(|r| r.chats.len()), 0);
}

#[tokio::test(start_paused = true)]
async fn the_platform_first_or_alone_and_the_last_error_when_none_can() {
    let (code, api) = (free(), paid());
    // The operator's order: the platform first.
    let app = router(chain_state(&[&api, &code], config_of(&[])));
    assert_eq!(
        served(&app, "tok-a,sk-api-k1").await.1.as_deref(),
        Some("minimax-api")
    );
    // A caller with web tokens only skips the platform (it has no key for it).
    assert_eq!(
        served(&app, "tok-a").await.1.as_deref(),
        Some("minimax-code")
    );
    // Neither can answer: the last upstream's error, with its Retry-After.
    api.script(Script::refuse(throttled("sk-api-k1")));
    code.script(Script::refuse(throttled("tok-b")));
    let response = send(&app, "tok-b,sk-api-k1", ask()).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
}

#[tokio::test(start_paused = true)]
async fn a_paid_key_answers_many_requests_at_once_where_an_account_takes_turns() {
    let api = FakeUpstream::answering("paid answer", Duration::from_millis(200))
        .native()
        .with_id("minimax-api")
        .concurrent();
    let app = router(chain_state(&[&api], config_of(&[])));
    let started = tokio::time::Instant::now();
    let requests = (0..4).map(|_| {
        let app = app.clone();
        async move { send(&app, "sk-api-k1", ask()).await.status() }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    // Four answers of 800 ms each (4 parts, 200 ms apart) overlapped: no
    // request waited for another's lease.
    assert!(
        started.elapsed() < Duration::from_millis(1600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(api.record(|r| (r.chats.len(), r.refused_busy)), (4, 0));
}
