//! The operator's view of the pool: `GET /admin/pool` (JSON) and `GET
//! /admin` (a page that shows the same table and refreshes itself).
//!
//! Only the tokens document's `admin_api_keys` may read it (never a caller's
//! key). Every account is named by its fingerprint; no token, refresh token
//! or key is in it, nor any upstream's raw answer. With `ACCOUNTS_TABLE` the
//! states and leases are the deployment's (every environment's); without it,
//! this process's. The fallback counts are this process's.
//!
//! A MiniMax Code account's credits and plan windows are read with its
//! access token when the view is asked for, and kept for a minute: the page
//! asks every five seconds, and the upstream need not be polled that often.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use moka::future::Cache;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::upstream::{Quota, Quotas};
use crate::AppState;

/// How long an account's credits and plan reading is shown before it is
/// read again.
const READING_TTL: Duration = Duration::from_secs(60);

/// Something that builds the reading source on first use.
type MakeSource = dyn Fn() -> Option<Arc<dyn Quotas>> + Send + Sync;

/// Where credits and plan windows are read from, and the last readings by
/// account fingerprint (a rotated token is another fingerprint, read anew).
/// The source is built on the first view asked for, not at start-up: its
/// HTTP client (TLS roots and all) costs start time in every process that
/// mounts these routes, and most never serve the view.
#[derive(Clone)]
pub(crate) struct Readings {
    source: Arc<std::sync::OnceLock<Option<Arc<dyn Quotas>>>>,
    make: Arc<MakeSource>,
    cache: Cache<String, Quota>,
}

impl Readings {
    #[cfg(test)]
    pub(crate) fn new(source: Arc<dyn Quotas>) -> Self {
        Self::lazy(move || Some(source.clone()))
    }

    pub(crate) fn lazy(make: impl Fn() -> Option<Arc<dyn Quotas>> + Send + Sync + 'static) -> Self {
        Self {
            source: Arc::default(),
            make: Arc::new(make),
            cache: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(READING_TTL)
                .build(),
        }
    }

    async fn read(&self, fingerprint: &str, token: &crate::redact::Secret) -> Quota {
        let Some(source) = self.source.get_or_init(|| (self.make)()).clone() else {
            let why = "the MiniMax Code client could not be built";
            return Quota {
                credits: crate::upstream::Reading::failed(why),
                plan: crate::upstream::Reading::failed(why),
            };
        };
        let token = token.clone();
        self.cache
            .get_with(fingerprint.to_string(), async move {
                source.quota(token.expose()).await
            })
            .await
    }
}

#[derive(Clone)]
struct AdminState {
    app: AppState,
    readings: Option<Readings>,
}

/// The view's routes; credits and plan windows are read where MiniMax Code
/// is in the chain.
pub fn routes(state: AppState) -> Router {
    let on_code = state.upstreams.iter().any(|u| u.id() == "minimax-code");
    let config = state.config.code.clone();
    let readings = on_code.then(|| {
        Readings::lazy(move || {
            let client = crate::upstream::code::CodeClient::new(config.clone()).ok()?;
            Some(Arc::new(client) as Arc<dyn Quotas>)
        })
    });
    routes_with(state, readings)
}

pub(crate) fn routes_with(state: AppState, readings: Option<Readings>) -> Router {
    Router::new()
        .route("/admin/pool", get(pool))
        .route("/admin", get(page))
        .with_state(AdminState {
            app: state,
            readings,
        })
}

async fn pool(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.app.credentials.authorize_admin(&headers).await?;
    Ok(Json(view(&state.app, state.readings.as_ref()).await))
}

/// The pool as JSON (see the module comment); with `readings`, each MiniMax
/// Code account's credits and plan windows where it has a live token.
pub(crate) async fn view(state: &AppState, readings: Option<&Readings>) -> Value {
    let free = state
        .config
        .upstreams
        .iter()
        .find(|u| *u != "minimax-api")
        .cloned()
        .unwrap_or_else(|| "minimax-api".into());
    let accounts = state.credentials.accounts(&free).await;
    let shared = state.credentials.shared_pool();
    let (records, table_error) = match shared {
        Some(pool) => match pool.store().all().await {
            Ok(records) => (records, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        },
        None => (Vec::new(), None),
    };
    let now_ms = shared.map_or_else(crate::pool::unix_ms, |p| p.store().now_ms());
    let (cooling, dead, leases) = (
        state.credentials.cooling(),
        state.credentials.dead_tokens(),
        state.credentials.leases(),
    );
    let mut totals = std::collections::BTreeMap::<String, u64>::new();
    let mut rows = Vec::new();
    for account in &accounts {
        let fp = &account.fingerprint;
        let record = records.iter().find(|r| &r.account == fp);
        let mut row = json!({
            "fingerprint": fp,
            "upstream": account.upstream,
            "region": account.region,
            "state": "ready",
            "since": Value::Null,
            "until": Value::Null,
            "holder": Value::Null,
            "last_error": Value::Null,
            "access_token_expires_at": account.access_expires_at,
            "credits": Value::Null,
            "plan": Value::Null,
        });
        if let Some(name) = &account.account {
            row["account"] = json!(name);
        }
        if let Some(record) = record {
            if let Some(state) = record.current_state(now_ms) {
                row["state"] = json!(state.as_str());
                row["since"] = json!(record.since_ms / 1000);
                row["until"] = json!(record.state_until_ms / 1000);
                row["last_error"] = json!({"class": state.as_str(), "message": record.reason});
            }
            if let Some(holder) = record.current_holder(now_ms) {
                // The environment, not the lease.
                row["holder"] = json!(holder.split('#').next().unwrap_or(holder));
            }
        } else if shared.is_none() {
            if let Some((left, class)) = cooling.remaining(fp) {
                let state = crate::pool::store::State::Cooling(class);
                row["state"] = json!(state.as_str());
                row["until"] = json!((now_ms + left.as_millis() as u64) / 1000);
                row["last_error"] = json!({"class": state.as_str(), "message": class.as_str()});
            } else if dead.contains(fp) {
                row["state"] = json!("dead");
                row["last_error"] = json!({"class": "dead", "message": "rejected upstream"});
            }
            if leases.is_held(fp) {
                row["holder"] = json!("this process");
            }
        }
        if row["state"] == "ready" {
            if let Some(reason) = &account.refresh_dead {
                row["state"] = json!("dead");
                row["last_error"] = json!({"class": "refresh", "message": reason});
            } else if let Some((false, reason, at)) = &account.checked {
                row["state"] = json!("dead");
                row["since"] = json!(at);
                row["last_error"] = json!({"class": "liveness", "message": reason});
            } else if let Some(message) = &account.last_error {
                row["last_error"] = json!({"class": "refresh", "message": message});
            }
        }
        if row["state"] == "ready" && !row["holder"].is_null() {
            row["state"] = json!("answering");
        }
        let state_name = row["state"].as_str().unwrap_or("ready").to_string();
        *totals.entry(state_name).or_default() += 1;
        rows.push(row);
    }
    if let Some(readings) = readings {
        read_quotas(readings, &state.config.code, &accounts, &mut rows, now_ms).await;
    }
    let fallbacks: Vec<Value> = crate::metrics::fallbacks()
        .into_iter()
        .map(|(from, to, count)| json!({"from": from, "to": to, "count": count}))
        .collect();
    json!({
        "object": "pool",
        "upstreams": state.config.upstreams,
        "shared": shared.map(|p| json!({
            "table": state.config.accounts_table,
            "environment": p.holder(),
            "error": table_error,
        })),
        "accounts": rows,
        "totals": totals,
        "fallbacks": fallbacks,
    })
}

/// Each MiniMax Code account's credits and plan windows, read at once
/// (each reading within its own timeout), into its row. A dead account, an
/// expired access token or another region's account is not asked.
async fn read_quotas(
    readings: &Readings,
    code: &crate::upstream::code::CodeConfig,
    accounts: &[crate::credentials::AccountInfo],
    rows: &mut [Value],
    now_ms: u64,
) {
    let region = code.region.as_str();
    let asked = accounts
        .iter()
        .zip(rows.iter())
        .map(|(account, row)| async move {
            let on_code = account.upstream == "minimax-code";
            let expired = account
                .access_expires_at
                .is_some_and(|at| at.saturating_mul(1000) <= now_ms);
            let elsewhere = account.region.as_deref().is_some_and(|r| r != region);
            if !on_code || expired || elsewhere || row["state"] == "dead" {
                return None;
            }
            Some(readings.read(&account.fingerprint, &account.token).await)
        });
    let quotas = futures_util::future::join_all(asked).await;
    for (row, quota) in rows.iter_mut().zip(quotas) {
        if let Some(quota) = quota {
            row["credits"] = serde_json::to_value(&quota.credits).unwrap_or_default();
            row["plan"] = serde_json::to_value(&quota.plan).unwrap_or_default();
        }
    }
}

/// The page: no data of its own; it asks for the admin key once (kept in
/// the tab's session storage) and reads `/admin/pool` every five seconds.
async fn page() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        ],
        Html(PAGE),
    )
        .into_response()
}

const PAGE: &str = include_str!("admin.html");

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::http::StatusCode;

    use crate::credentials::document::{Document, FileDocument};
    use crate::credentials::{Credentials, Mode, SecretMode};
    use crate::pool::fake::FakeStore;
    use crate::pool::store::{AccountStore, Mark, State};
    use crate::pool::SharedPool;
    use crate::redact::fingerprint;
    use crate::testing::{config_of, get, state, FakeUpstream};
    use crate::upstream::{Credits, Quota, Quotas, Reading, Unavailability};

    const DOCUMENT: &str = r#"{"tokens": ["tok-secret-1", "tok-secret-2"],
        "api_keys": ["sk-caller"], "admin_api_keys": ["sk-admin"],
        "minimax_api_keys": ["sk-api-paid-key"]}"#;

    fn app(shared: Option<Arc<FakeStore>>) -> (axum::Router, std::path::PathBuf) {
        let (app, file) = app_state(shared);
        (crate::routes::token_check::router(app), file)
    }

    fn app_state(shared: Option<Arc<FakeStore>>) -> (crate::AppState, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("gw-admin-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens.json");
        std::fs::write(&file, DOCUMENT).unwrap();
        let mut credentials = Credentials::new(
            Mode::Secret(Box::new(SecretMode {
                tokens: Document::File(FileDocument::new(file.to_str().unwrap())),
                status: None,
                allow_header_tokens: false,
            })),
            Duration::from_secs(600),
            "sk-",
        );
        if let Some(store) = shared {
            credentials = credentials
                .with_shared_pool(Arc::new(SharedPool::new(store, Duration::from_secs(15))));
        }
        let fake = FakeUpstream::answering("x", Duration::from_millis(1));
        let mut app = state(&fake, config_of(&[]));
        app.credentials = Arc::new(credentials);
        (app, file)
    }

    /// Readings by token: the first account has credits and no plan, the
    /// second's reading fails; every call is counted.
    #[derive(Default)]
    struct FakeQuotas {
        calls: std::sync::Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Quotas for FakeQuotas {
        async fn quota(&self, token: &str) -> Quota {
            self.calls.lock().unwrap().push(token.to_string());
            match token {
                "tok-secret-1" => Quota {
                    credits: Reading::Read(Credits {
                        balance: 812.5,
                        grants: 2,
                    }),
                    plan: Reading::not_readable("no Token Plan on this account (2062)"),
                },
                _ => Quota {
                    credits: Reading::failed("credit/details could not be reached"),
                    plan: Reading::failed("coding_plan/remains could not be reached"),
                },
            }
        }
    }

    #[tokio::test]
    async fn credits_and_plans_are_read_once_a_minute_for_live_code_accounts_only() {
        let store = Arc::new(FakeStore::default());
        let (state, _file) = app_state(Some(store.clone()));
        let quotas = Arc::new(FakeQuotas::default());
        let app = super::routes_with(state, Some(super::Readings::new(quotas.clone())));

        let (status, body) = get(&app, "/admin/pool", Some("sk-admin")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(!body.contains("tok-secret"), "{body}");
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        let row = |fp: &str| {
            view["accounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["fingerprint"] == fp)
                .unwrap()
                .clone()
        };
        let first = row(&fingerprint("tok-secret-1"));
        assert_eq!(
            first["credits"],
            serde_json::json!({"balance": 812.5, "grants": 2})
        );
        assert_eq!(first["plan"]["readable"], false);
        let second = row(&fingerprint("tok-secret-2"));
        assert_eq!(
            second["credits"]["error"],
            "credit/details could not be reached"
        );
        // The paid key is not MiniMax Code's: not asked, nothing shown.
        assert!(row(&fingerprint("sk-api-paid-key"))["credits"].is_null());
        let mut asked = quotas.calls.lock().unwrap().clone();
        asked.sort();
        assert_eq!(asked, ["tok-secret-1", "tok-secret-2"]);

        // Asked again within the minute: the readings are the last ones.
        let (_, again) = get(&app, "/admin/pool", Some("sk-admin")).await;
        assert!(again.contains("812.5"), "{again}");
        assert_eq!(quotas.calls.lock().unwrap().len(), 2, "read once a minute");

        // A dead account is not asked (a fresh cache: a new router).
        store
            .mark(
                &fingerprint("tok-secret-2"),
                &Mark {
                    upstream: "minimax-code".into(),
                    state: State::Dead,
                    for_ms: 60_000,
                    reason: "rejected".into(),
                    holder: "test".into(),
                },
            )
            .await
            .unwrap();
        let quotas = Arc::new(FakeQuotas::default());
        let (state, _file2) = app_state(Some(store.clone()));
        let app = super::routes_with(state, Some(super::Readings::new(quotas.clone())));
        let (_, body) = get(&app, "/admin/pool", Some("sk-admin")).await;
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        let dead = view["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["fingerprint"] == fingerprint("tok-secret-2"))
            .unwrap();
        assert_eq!(dead["state"], "dead");
        assert!(dead["credits"].is_null());
        assert_eq!(*quotas.calls.lock().unwrap(), ["tok-secret-1"]);
    }

    #[tokio::test]
    async fn only_an_admin_key_reads_the_pool_and_no_secret_is_in_it() {
        let store = Arc::new(FakeStore::default());
        let (app, _file) = app(Some(store.clone()));
        let fp = fingerprint("tok-secret-1");
        store
            .mark(
                &fp,
                &Mark {
                    upstream: "minimax-code".into(),
                    state: State::Cooling(Unavailability::Throttled),
                    for_ms: 60_000,
                    reason: "rate limit (2045)".into(),
                    holder: "test".into(),
                },
            )
            .await
            .unwrap();
        let other = fingerprint("tok-secret-2");
        assert!(store
            .lease(
                &other,
                "minimax-code",
                "lambda:chat:abc#1234",
                Duration::from_secs(15)
            )
            .await
            .unwrap());

        let (status, body) = get(&app, "/admin/pool", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let (status, body) = get(&app, "/admin/pool", Some("sk-caller")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("caller's API key"), "{body}");
        let (status, body) = get(&app, "/admin/pool", Some("sk-wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

        let (status, body) = get(&app, "/admin/pool", Some("sk-admin")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for secret in ["tok-secret", "sk-api-paid-key", "sk-admin", "sk-caller"] {
            assert!(!body.contains(secret), "{secret} in {body}");
        }
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        let accounts = view["accounts"].as_array().unwrap();
        assert_eq!(accounts.len(), 3);
        let row = |fp: &str| {
            accounts
                .iter()
                .find(|a| a["fingerprint"] == fp)
                .unwrap()
                .clone()
        };
        assert_eq!(row(&fp)["state"], "throttled");
        assert_eq!(row(&fp)["last_error"]["message"], "rate limit (2045)");
        assert_eq!(row(&other)["state"], "answering");
        assert_eq!(
            row(&other)["holder"],
            "lambda:chat:abc",
            "the environment, not the lease"
        );
        assert_eq!(
            row(&fingerprint("sk-api-paid-key"))["upstream"],
            "minimax-api"
        );
        assert_eq!(view["totals"]["throttled"], 1);
        assert_eq!(view["totals"]["answering"], 1);
        assert_eq!(view["totals"]["ready"], 1);
        assert!(view["shared"]["environment"].is_string());
    }

    #[tokio::test]
    async fn header_mode_has_no_operator_and_the_page_holds_no_data() {
        let fake = FakeUpstream::answering("x", Duration::from_millis(1));
        let app = crate::routes::token_check::router(state(&fake, config_of(&[])));
        let (status, body) = get(&app, "/admin/pool", Some("anything")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("admin_api_keys"), "{body}");
        let (status, page) = get(&app, "/admin", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("admin/pool") && page.contains("<table"));
    }
}
