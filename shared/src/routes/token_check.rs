//! `POST /token/check` `{"token": "..."}` → `{"live": bool}`.
//!
//! Answers are cached per token for 10 minutes: the upstream asks callers not
//! to check more often. The cache is keyed by the token's SHA-256, not the token.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use moka::future::Cache;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::AppState;
use crate::error::ApiError;

pub(crate) const CHECK_TTL: Duration = Duration::from_secs(600);

#[derive(Clone)]
struct CheckState {
    app: AppState,
    verdicts: Cache<[u8; 32], bool>,
}

/// The token check and, beside it, the operator's view (`admin.rs`): the
/// function that serves both is the small one every deployment has.
pub fn router(app: AppState) -> Router {
    let config = app.config.clone();
    super::finish(
        routes(app.clone()).merge(super::admin::routes(app)),
        &config,
    )
}

pub(super) fn routes(app: AppState) -> Router {
    let state = CheckState {
        app,
        verdicts: Cache::builder()
            .max_capacity(10_000)
            .time_to_live(CHECK_TTL)
            .build(),
    };
    super::limited(
        Router::new()
            .route("/token/check", post(check))
            .route("/v1/token/check", post(check))
            .with_state(state),
        64 * 1024,
    )
}

fn token_from(body: &[u8]) -> Result<String, ApiError> {
    let value: Value =
        serde_json::from_slice(&crate::openai::body::normalized(body)).map_err(|e| {
            ApiError::bad_body(format!(
                "The request body is not valid JSON: {e}. Send {{\"token\": \"...\"}}."
            ))
        })?;
    match value.get("token") {
        None | Some(Value::Null) => Err(ApiError::missing("token")),
        Some(Value::String(t)) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        Some(Value::String(_)) => Err(ApiError::invalid("token", "`token` must not be empty.")),
        Some(_) => Err(ApiError::invalid("token", "`token` must be a string.")),
    }
}

async fn check(
    State(state): State<CheckState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    state.app.credentials.authorize(&headers).await?;
    super::require_json(&headers)?;
    let body = body.map_err(|r| super::body_error(r, 64 * 1024))?;
    let token = token_from(&body)?;
    let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let upstream = state.app.upstream().clone();
    let live = state
        .verdicts
        .try_get_with(key, async move { upstream.is_live(&token).await })
        .await
        .map_err(|e| ApiError::from((*e).clone()))?;
    Ok(Json(json!({"live": live})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_must_hold_a_token_string() {
        assert_eq!(token_from(br#"{"token":" abc "}"#).unwrap(), "abc");
        for bad in [&b"{}"[..], br#"{"token":""}"#, br#"{"token":5}"#, b"nope"] {
            let e = token_from(bad).unwrap_err();
            assert_eq!(e.status(), 400);
        }
        assert_eq!(
            token_from(b"{}").unwrap_err().body()["error"]["param"],
            "token"
        );
    }
}
