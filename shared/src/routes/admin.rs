//! The operator's view of the pool: `GET /admin/pool` (JSON) and `GET
//! /admin` (a page that shows the same table and refreshes itself).
//!
//! Only the tokens document's `admin_api_keys` may read it (never a caller's
//! key). Every account is named by its fingerprint; no token, refresh token
//! or key is in it, nor any upstream's raw answer. With `ACCOUNTS_TABLE` the
//! states and leases are the deployment's (every environment's); without it,
//! this process's. The fallback counts are this process's.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::AppState;

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/admin/pool", get(pool))
        .route("/admin", get(page))
        .with_state(state)
}

async fn pool(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    state.credentials.authorize_admin(&headers).await?;
    Ok(Json(view(&state).await))
}

/// The pool as JSON (see the module comment).
pub(crate) async fn view(state: &AppState) -> Value {
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
    use crate::upstream::Unavailability;

    const DOCUMENT: &str = r#"{"tokens": ["tok-secret-1", "tok-secret-2"],
        "api_keys": ["sk-caller"], "admin_api_keys": ["sk-admin"],
        "minimax_api_keys": ["sk-api-paid-key"]}"#;

    fn app(shared: Option<Arc<FakeStore>>) -> (axum::Router, std::path::PathBuf) {
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
        (crate::routes::token_check::router(app), file)
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
