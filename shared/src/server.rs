//! The self-hosted server: every route on one port, with the behaviour and
//! the settings of the functions. Tokens come from the `Authorization` header
//! (as the functions' header mode) or from `TOKENS_FILE`, the tokens secret's
//! JSON in a file; with a file, the liveness check runs on a timer in this
//! process (`LIVENESS_INTERVAL_SECONDS`) and its verdicts stay in memory,
//! where the credentials read them as the functions read the status secret.
//! `TOKENS_SECRET_ID` works too (a server on AWS without Lambda).

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::credentials::Credentials;
use crate::liveness::check_local;
use crate::routes;
use crate::upstream::Upstream;

/// Build the state from the environment, start the liveness timer if there
/// is a tokens file, and serve until SIGTERM (graceful, see `runtime::serve`).
pub async fn run_server() -> Result<(), lambda_http::Error> {
    let state = crate::voice_state_from_env("server").await?;
    if let Some(every) = liveness_interval(&state.config, &state.credentials) {
        let (config, upstream, credentials) = (
            state.config.clone(),
            state.upstream.clone(),
            state.credentials.clone(),
        );
        tokio::spawn(check_on_a_timer(config, upstream, credentials, every));
    }
    crate::runtime::serve(routes::all(state)).await
}

/// The timer's period, when the credentials keep a local status to write
/// (which settings make that is `Credentials::from_env`'s choice alone).
fn liveness_interval(config: &Config, credentials: &Credentials) -> Option<Duration> {
    let period = config.liveness_interval;
    (credentials.local_liveness().is_some() && !period.is_zero()).then_some(period)
}

/// Check every token of the file now, then every `every` (nothing, and at
/// once, for credentials without a local tokens file). A failed run is
/// logged and tried again at the next tick; a run is never skipped for a
/// slow one (ticks that fall during a run are dropped, not queued).
pub(crate) async fn check_on_a_timer(
    config: Arc<Config>,
    upstream: Arc<dyn Upstream>,
    credentials: Arc<Credentials>,
    every: Duration,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some((tokens, status)) = credentials.local_liveness() else {
            return;
        };
        match check_local(&config, upstream.clone(), tokens, status).await {
            Ok(report) => tracing::info!(
                live = report.document.live,
                dead = report.document.dead,
                "liveness check done"
            ),
            Err(e) => tracing::error!(error = %e, "liveness check failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::json;
    use tower::ServiceExt;

    use super::*;
    use crate::credentials::document::{Document, FileDocument, Latest};
    use crate::credentials::{Mode, SecretMode};
    use crate::redact::fingerprint;
    use crate::routes::AppState;
    use crate::testing::{json, FakeUpstream};

    fn config(pairs: &[(&str, &str)]) -> Config {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    fn file_state(fake: &FakeUpstream, path: &std::path::Path) -> AppState {
        let config = config(&[]);
        let credentials = Credentials::new(
            Mode::Secret(Box::new(SecretMode {
                tokens: Document::File(FileDocument::new(path)),
                status: Some(Document::Memory(Arc::new(Latest::new("status")))),
                allow_header_tokens: false,
            })),
            Duration::from_secs(600),
            "sk-",
        );
        AppState {
            fetcher: crate::files::fetch::Fetcher::from_config(&config).unwrap(),
            config: Arc::new(config),
            upstream: Arc::new(fake.clone()),
            voice: fake.voice(),
            credentials: Arc::new(credentials),
        }
    }

    fn post(path: &str, key: &str, body: serde_json::Value) -> Request<Body> {
        Request::post(path)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    }

    #[tokio::test]
    async fn one_router_serves_every_route_with_each_routes_own_limit() {
        let fake = FakeUpstream::answering("你好", Duration::ZERO);
        let app = routes::all(crate::testing::state(&fake, config(&[])));
        let send = |request: Request<Body>| app.clone().oneshot(request);
        let chat = json!({"model": "hailuo", "messages": [{"role": "user", "content": "hi"}]});
        for path in ["/v1/chat/completions", "/chat/completions"] {
            let r = send(post(path, "tok-a", chat.clone())).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(json(r).await["choices"][0]["message"]["content"], "你好");
        }
        for path in ["/v1/models", "/models", "/v1/models/hailuo"] {
            let r = send(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
        }
        for path in ["/token/check", "/v1/token/check"] {
            let r = send(post(path, "", json!({"token": "tok-b"})))
                .await
                .unwrap();
            assert_eq!(json(r).await["live"], true, "{path}");
        }
        // Speech and transcription are mounted: their own validation answers.
        let r = send(post("/v1/audio/speech", "tok-a", json!({"model": "tts-1"})))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(json(r).await["error"]["param"], "input");
        let r = send(post("/v1/audio/transcriptions", "tok-a", json!({})))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        // The token check keeps its 64 KiB limit beside chat's larger one.
        let big = json!({"token": "x".repeat(100 * 1024)});
        let r = send(post("/token/check", "", big)).await.unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let r = send(Request::get("/v1/nothing").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(json(r).await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/audio/speech"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_checks_the_files_tokens_and_dead_ones_are_skipped() {
        let dir = std::env::temp_dir().join(format!("gw-server-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens.json");
        std::fs::write(
            &path,
            r#"{"tokens":["tok-live","tok-dead"],"api_keys":["sk-k"]}"#,
        )
        .unwrap();
        let fake = FakeUpstream::answering("ok", Duration::ZERO);
        fake.kill("tok-dead");
        let state = file_state(&fake, &path);
        let every = Duration::from_secs(3600);
        let timer = tokio::spawn(check_on_a_timer(
            state.config.clone(),
            state.upstream.clone(),
            state.credentials.clone(),
            every,
        ));
        let (_, status) = state.credentials.local_liveness().unwrap();
        let status = status.clone();
        // The first run is at start.
        while status.get().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let first = status.get().unwrap();
        assert_eq!((first.live, first.dead), (1, 1));
        assert!(first.is_dead(&fingerprint("tok-dead")));

        // With the key, every answer comes from the live token, the dead one
        // never tried (the status is read as the functions read the secret).
        let app = routes::all(state.clone());
        let chat = json!({"model": "hailuo", "messages": [{"role": "user", "content": "hi"}]});
        for _ in 0..4 {
            let r = app
                .clone()
                .oneshot(post("/v1/chat/completions", "sk-k", chat.clone()))
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        let owners = fake.record(|r| r.chats.iter().map(|(fp, _)| fp.clone()).collect::<Vec<_>>());
        assert_eq!(owners, vec![fingerprint("tok-live"); 4]);

        // The file gains a token; the next tick checks it.
        std::fs::write(
            &path,
            r#"{"tokens":["tok-live","tok-dead","tok-new"],"api_keys":["sk-k"]}"#,
        )
        .unwrap();
        tokio::time::sleep(every).await;
        while status.get().unwrap().tokens.len() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(status.get().unwrap().live, 2);
        timer.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_timer_runs_only_for_a_tokens_file() {
        async fn on(pairs: &[(&str, &str)]) -> Option<Duration> {
            let config = config(pairs);
            let credentials = Credentials::from_env(&config, "test").await.unwrap();
            liveness_interval(&config, &credentials)
        }
        assert_eq!(on(&[]).await, None);
        assert_eq!(
            on(&[("TOKENS_FILE", "/t.json")]).await,
            Some(Duration::from_secs(6 * 3600))
        );
        assert_eq!(
            on(&[
                ("TOKENS_FILE", "/t.json"),
                ("LIVENESS_INTERVAL_SECONDS", "0")
            ])
            .await,
            None
        );
        assert_eq!(
            on(&[("TOKENS_FILE", "/t.json"), ("TOKENS_SECRET_ID", "s")]).await,
            None
        );
    }
}
