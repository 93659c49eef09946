//! The self-hosted server's `/metrics` in Prometheus's (OpenMetrics) text:
//! for admin keys on the main listener, or without a key on
//! `METRICS_LISTEN_ADDR` alone. Only `routes::all` (the server) mounts it;
//! the functions emit the same figures as EMF lines (`metrics.rs`).

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::AppState;

/// The self-hosted server's `/metrics` (Prometheus), for admin keys.
pub(crate) fn routes(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(with_key))
        .with_state(state)
}

/// `/metrics` with no key, for the server's `METRICS_LISTEN_ADDR` alone.
pub(crate) fn open_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(state): State<AppState>| async move { prometheus(&state).await }),
        )
        .with_state(state)
}

async fn with_key(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    state.credentials.authorize_admin(&headers).await?;
    Ok(prometheus(&state).await)
}

/// Every figure (`metrics::encode`) with the pool's states as the admin
/// view reads them now, in the OpenMetrics text Prometheus scrapes.
async fn prometheus(state: &AppState) -> Response {
    let view = super::admin::view(state, None).await;
    let mut counts = std::collections::BTreeMap::<(String, String), u64>::new();
    for account in view["accounts"].as_array().into_iter().flatten() {
        let key = (
            account["upstream"].as_str().unwrap_or_default().to_string(),
            account["state"].as_str().unwrap_or_default().to_string(),
        );
        *counts.entry(key).or_default() += 1;
    }
    let counts: Vec<(String, String, u64)> =
        counts.into_iter().map(|((u, s), n)| (u, s, n)).collect();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::encode(&counts),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::StatusCode;

    use crate::testing::{config_of, get, send, state, FakeUpstream};

    #[tokio::test]
    async fn answers_are_counted_and_metrics_need_an_admin_key_or_their_own_listener() {
        let fake = FakeUpstream::answering("counted", Duration::from_millis(1));
        let app = state(&fake, config_of(&[]));
        let all = crate::routes::all(app.clone());
        let body =
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(
            send(&all, "tok-metrics", body).await.status(),
            StatusCode::OK
        );
        // Header mode has no admin key: the main listener refuses.
        let (status, text) = get(&all, "/metrics", Some("tok-metrics")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
        let (status, text) = get(&super::open_router(app), "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains(r#"gateway_requests_total{route="/v1/chat/completions",status="200",upstream="fake"}"#),
            "{text}"
        );
        assert!(
            text.contains("gateway_response_seconds_count{route=\"/v1/chat/completions\"}"),
            "{text}"
        );
        assert!(!text.contains("tok-metrics"));
    }
}
