//! The self-hosted server: every route on one port, with the behaviour and
//! the settings of the functions. Tokens come from the `Authorization` header
//! (as the functions' header mode) or from `TOKENS_FILE`, the tokens secret's
//! JSON in a file; with a file, the maintenance runs on a timer in this
//! process: MiniMax Code accounts renewed when due (the one writer, its
//! lineages in a state file beside the tokens file), the liveness check every
//! `LIVENESS_INTERVAL_SECONDS`; its verdicts stay in memory, where the
//! credentials read them as the functions read the status secret.
//! `TOKENS_SECRET_ID` works too (a server on AWS without Lambda).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;
use crate::credentials::renewal::unix_now;
use crate::credentials::Credentials;
use crate::liveness::{check_local, StateFile};
use crate::routes;
use crate::upstream::Upstream;

/// Build the state from the environment, start the maintenance timer if
/// there is a tokens file, and serve until SIGTERM (graceful, see
/// `runtime::serve`).
pub async fn run_server() -> Result<(), lambda_http::Error> {
    let state = crate::voice_state_from_env("server").await?;
    if let Some(name) = &state.config.accounts_table {
        // A self-hoster names the table; the server makes it.
        crate::pool::table::AccountsTable::new(&crate::aws::Setup::Env, name, "server")
            .await
            .create_unless_there()
            .await
            .map_err(|e| format!("the accounts table (ACCOUNTS_TABLE) cannot be used: {e}"))?;
    }
    if let Some(plan) = maintenance(&state.config, &state.credentials) {
        // The lineages are read before the first request: a refresh token
        // the file names may be spent already, its successor is in here.
        let lineages = plan.state.read().await?;
        if !lineages.is_empty() {
            let mut status = plan
                .state
                .status
                .get()
                .map(|d| (*d).clone())
                .unwrap_or_default();
            status.accounts = lineages;
            plan.state.status.set(status);
        }
        tracing::info!(state_file = %plan.state.path.display(), "MiniMax Code lineages kept in the state file");
        let (config, upstream) = (state.config.clone(), state.upstream().clone());
        tokio::spawn(maintain_on_a_timer(
            config,
            upstream,
            state.credentials.clone(),
            plan,
        ));
    }
    if let Some(addr) = state.config.metrics_listen_addr.clone() {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| format!("METRICS_LISTEN_ADDR {addr} cannot be bound: {e}"))?;
        tracing::info!(addr = %addr, "/metrics without a key on its own listener");
        let metrics = routes::prometheus::open_router(state.clone());
        tokio::spawn(async move { axum::serve(listener, metrics).await });
    }
    crate::runtime::serve(routes::all(state)).await
}

/// What the server's timer does: where it keeps the lineages, and how often
/// it checks the tokens (never for `LIVENESS_INTERVAL_SECONDS=0`; renewals
/// still run then).
pub(crate) struct Maintenance {
    pub state: StateFile,
    pub check_every: Option<Duration>,
}

/// The timer's plan, when the credentials keep a local status to write
/// (which settings make that is `Credentials::from_env`'s choice alone).
fn maintenance(config: &Config, credentials: &Credentials) -> Option<Maintenance> {
    let (_, status) = credentials.local_liveness()?;
    let period = config.liveness_interval;
    Some(Maintenance {
        state: StateFile {
            path: config.tokens_state_file()?.into(),
            status: status.clone(),
        },
        check_every: (!period.is_zero()).then_some(period),
    })
}

/// The longest the timer sleeps: a login added to the tokens file (whose
/// access token lasts an hour) is renewed in time, and the file is read
/// again (one `stat`) at least this often.
const LONGEST_NAP: Duration = Duration::from_secs(30);

/// Renew what is due and check every token of the file now; then wake for
/// the earliest renewal due, the next check, or `LONGEST_NAP`, whichever
/// comes first. A failed run is logged and tried again at the next wake.
pub(crate) async fn maintain_on_a_timer(
    config: Arc<Config>,
    upstream: Arc<dyn Upstream>,
    credentials: Arc<Credentials>,
    plan: Maintenance,
) {
    let mut next_check = Instant::now();
    loop {
        let Some((tokens, _)) = credentials.local_liveness() else {
            return;
        };
        let check = plan.check_every.is_some() && Instant::now() >= next_check;
        let mut next_due = None;
        match check_local(&config, upstream.clone(), tokens, &plan.state, check).await {
            Ok(report) => {
                next_due = report.renewed.next_due;
                if check {
                    tracing::info!(
                        live = report.document.live,
                        dead = report.document.dead,
                        "liveness check done"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "maintenance failed"),
        }
        if let (true, Some(every)) = (check, plan.check_every) {
            next_check = Instant::now() + every;
        }
        let mut wake = Instant::now() + LONGEST_NAP;
        if plan.check_every.is_some() {
            wake = wake.min(next_check);
        }
        if let Some(due) = next_due {
            let left = Duration::from_secs(due.saturating_sub(unix_now()));
            wake = wake.min(Instant::now() + left);
        }
        tokio::time::sleep_until(wake).await;
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
            upstreams: Arc::from([Arc::new(fake.clone()) as Arc<dyn crate::upstream::Upstream>]),
            voice: fake.voice(),
            platform: None,
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
        let (_, status) = state.credentials.local_liveness().unwrap();
        let status = status.clone();
        let plan = Maintenance {
            state: StateFile {
                path: dir.join("tokens.json.state.json"),
                status: status.clone(),
            },
            check_every: Some(every),
        };
        let timer = tokio::spawn(maintain_on_a_timer(
            state.config.clone(),
            state.upstream().clone(),
            state.credentials.clone(),
            plan,
        ));
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
        async fn on(pairs: &[(&str, &str)]) -> Option<(Option<Duration>, String)> {
            let config = config(pairs);
            let credentials = Credentials::from_env(&config, "test").await.unwrap();
            maintenance(&config, &credentials)
                .map(|m| (m.check_every, m.state.path.display().to_string()))
        }
        assert_eq!(on(&[]).await, None);
        assert_eq!(
            on(&[("TOKENS_FILE", "/t.json")]).await,
            Some((
                Some(Duration::from_secs(6 * 3600)),
                "/t.json.state.json".into()
            ))
        );
        // Renewals still run when the check never does.
        assert_eq!(
            on(&[
                ("TOKENS_FILE", "/t.json"),
                ("LIVENESS_INTERVAL_SECONDS", "0"),
                ("TOKENS_STATE_FILE", "/var/lib/gw/state.json")
            ])
            .await,
            Some((None, "/var/lib/gw/state.json".into()))
        );
        assert_eq!(
            on(&[("TOKENS_FILE", "/t.json"), ("TOKENS_SECRET_ID", "s")]).await,
            None
        );
    }
}
