//! The shared pool through the chat route, on tokio's paused clock: two
//! "environments" (each with its own credentials and local pool, as two
//! Lambda environments or two server replicas have) over one fake table and
//! one fake upstream whose accounts refuse a second answer as busy.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use super::fake::FakeStore;
use super::store::AccountStore;
use super::SharedPool;
use crate::credentials::Credentials;
use crate::redact::fingerprint;
use crate::routes::chat::router;
use crate::testing::{capture_logs, config_of, send, state, FakeUpstream, Script};
use crate::upstream::{Unavailability, UpstreamError};

const TTL: Duration = Duration::from_secs(3);

fn settings() -> crate::Config {
    config_of(&[("POOL_LEASE_TTL_MS", "3000"), ("POOL_WAIT_MS", "120000")])
}

/// One environment of the deployment: its own process state, the shared table.
fn environment(fake: &FakeUpstream, store: Option<&Arc<FakeStore>>) -> axum::Router {
    let mut app = state(fake, settings());
    if let Some(store) = store {
        let pool = SharedPool::new(store.clone(), TTL);
        app.credentials = Arc::new(Credentials::header_mode().with_shared_pool(Arc::new(pool)));
    }
    router(app)
}

fn ask() -> serde_json::Value {
    json!({"model": "MiniMax-M3", "messages": [{"role": "user", "content": "hi"}]})
}

/// Six requests, three in each of two environments, on one account whose
/// answers last 8 s (longer than a lease lives unrenewed).
async fn six_on_one_account(store: Option<&Arc<FakeStore>>) -> (Vec<StatusCode>, usize) {
    let fake = FakeUpstream::answering("slow answer", Duration::from_secs(2));
    let (a, b) = (environment(&fake, store), environment(&fake, store));
    let mut asks = Vec::new();
    for i in 0..6 {
        let app = if i % 2 == 0 { a.clone() } else { b.clone() };
        asks.push(tokio::spawn(async move {
            send(&app, "tok-1", ask()).await.status()
        }));
    }
    let mut statuses = Vec::new();
    for ask in asks {
        statuses.push(ask.await.unwrap());
    }
    (statuses, fake.record(|r| r.refused_busy))
}

#[tokio::test(start_paused = true)]
async fn environments_sharing_the_table_take_turns_on_an_account() {
    let store = Arc::new(FakeStore::default());
    let (statuses, refused) = six_on_one_account(Some(&store)).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(
        refused, 0,
        "no answer was sent to an account answering another"
    );
    // Every lease was given back before its response ended.
    let record = store.record(&fingerprint("tok-1")).unwrap();
    assert_eq!(record.holder, None, "{record:?}");
}

#[tokio::test(start_paused = true)]
async fn without_the_table_the_same_requests_collide_upstream() {
    // The control: each environment alone sends while the other answers.
    let (_, refused) = six_on_one_account(None).await;
    assert!(refused > 0, "the fake refuses overlapping answers");
}

#[tokio::test(start_paused = true)]
async fn a_lease_is_renewed_while_its_answer_streams_and_waiters_wait_for_it() {
    let store = Arc::new(FakeStore::default());
    let fake = FakeUpstream::answering("slow answer", Duration::from_secs(2));
    let (a, b) = (
        environment(&fake, Some(&store)),
        environment(&fake, Some(&store)),
    );
    let first = tokio::spawn(async move { send(&a, "tok-1", ask()).await.status() });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fp = fingerprint("tok-1");
    let taken = store.record(&fp).unwrap();
    let holder = taken.holder.clone().expect("leased");
    let second = tokio::spawn(async move { send(&b, "tok-1", ask()).await.status() });
    // Past two lifetimes of an unrenewed lease, the first answer still holds it.
    tokio::time::sleep(2 * TTL).await;
    let later = store.record(&fp).unwrap();
    assert_eq!(later.holder.as_deref(), Some(holder.as_str()));
    assert!(
        later.lease_until_ms > taken.lease_until_ms + 3000,
        "renewed"
    );
    assert!(later.lease_until_ms > store.now_ms());
    assert_eq!(fake.record(|r| r.chats.len()), 1, "the second waits");
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert_eq!(second.await.unwrap(), StatusCode::OK);
    assert_eq!(fake.record(|r| (r.chats.len(), r.refused_busy)), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn the_lease_of_an_environment_that_died_expires_and_the_account_answers_again() {
    let store = Arc::new(FakeStore::default());
    let fake = FakeUpstream::answering("answer", Duration::from_millis(5));
    let app = environment(&fake, Some(&store));
    let fp = fingerprint("tok-1");
    // A lease taken by an environment that was then frozen for good.
    assert!(store.lease(&fp, "fake", "gone:0#0", TTL).await.unwrap());
    let started = tokio::time::Instant::now();
    assert_eq!(send(&app, "tok-1", ask()).await.status(), StatusCode::OK);
    let waited = started.elapsed();
    assert!(waited >= TTL, "waited for the lease to expire: {waited:?}");
    assert!(
        waited < TTL + Duration::from_secs(2),
        "and not much longer: {waited:?}"
    );
    assert_eq!(fake.record(|r| r.refused_busy), 0);
}

#[tokio::test(start_paused = true)]
async fn a_dead_token_found_in_one_environment_is_skipped_by_the_others() {
    let store = Arc::new(FakeStore::default());
    let fake = FakeUpstream::answering("answer", Duration::from_millis(5));
    let (a, b) = (
        environment(&fake, Some(&store)),
        environment(&fake, Some(&store)),
    );
    fake.kill("tok-dead");
    assert_eq!(
        send(&a, "tok-dead", ask()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let record = store.record(&fingerprint("tok-dead")).unwrap();
    assert_eq!(record.state.as_deref(), Some("dead"));
    assert!(!record.reason.contains("tok-dead"), "no token in the table");
    let asked = fake.record(|r| r.chats.len());
    let response = send(&b, "tok-dead", ask()).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let message = crate::testing::error_message(response).await;
    assert!(message.contains("rejected upstream"), "{message}");
    assert_eq!(fake.record(|r| r.chats.len()), asked, "never asked again");
    // The other tokens of the request still answer.
    assert_eq!(
        send(&b, "tok-dead,tok-ok", ask()).await.status(),
        StatusCode::OK
    );
    assert_eq!(fake.record(|r| r.chats.len()), asked + 1);
}

#[tokio::test(start_paused = true)]
async fn an_account_cooling_in_one_environment_cools_in_all_until_its_time_is_up() {
    let store = Arc::new(FakeStore::default());
    let fake = FakeUpstream::answering("answer", Duration::from_millis(5));
    let (a, b) = (
        environment(&fake, Some(&store)),
        environment(&fake, Some(&store)),
    );
    fake.script(Script::refuse(UpstreamError::Cooling {
        fingerprint: fingerprint("tok-1"),
        class: Unavailability::Throttled,
        message: "rate limit".into(),
        retry_after: Duration::from_secs(60),
    }));
    let response = send(&a, "tok-1", ask()).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let asked = fake.record(|r| r.chats.len());
    let response = send(&b, "tok-1", ask()).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((55..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        fake.record(|r| r.chats.len()),
        asked,
        "not asked while cooling"
    );
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(send(&b, "tok-1", ask()).await.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn with_the_table_down_answers_come_from_the_local_pool_and_the_log_says_so() {
    let store = Arc::new(FakeStore::default());
    store.down.store(true, Ordering::SeqCst);
    let fake = FakeUpstream::answering("answer", Duration::from_millis(5));
    let app = environment(&fake, Some(&store));
    let (logs, _guard) = capture_logs();
    assert_eq!(send(&app, "tok-1", ask()).await.status(), StatusCode::OK);
    let text = logs.text();
    assert!(text.contains("accounts table"), "{text}");
    assert!(store.calls.load(Ordering::SeqCst) >= 2, "it was asked");
}

#[tokio::test(start_paused = true)]
async fn paid_keys_take_no_lease_in_the_table() {
    let store = Arc::new(FakeStore::default());
    let fake = FakeUpstream::answering("answer", Duration::from_millis(5)).concurrent();
    let app = environment(&fake, Some(&store));
    assert_eq!(send(&app, "key-1", ask()).await.status(), StatusCode::OK);
    assert!(store.record(&fingerprint("key-1")).is_none());
}
