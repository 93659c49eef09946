//! Every failure on the Anthropic door in Anthropic's shape:
//! `{"type":"error","error":{"type","message"},"request_id"}` with the
//! status Anthropic gives that type (front-doors.md 1.7).
//!
//! The gateway's failures are the same [`ApiError`]s on every door; only
//! their words on the wire differ. Two choices are this door's own:
//! - every account busy is Anthropic's 529 `overloaded_error` (with
//!   `retry-after`), which the SDK and Claude Code retry by themselves;
//! - a dead or missing credential is 401 `authentication_error`, which the
//!   SDK raises as `AuthenticationError` and does not retry.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::ApiError;

/// Anthropic's "overloaded": not a standard HTTP status.
fn overloaded() -> StatusCode {
    StatusCode::from_u16(529).expect("529 is a valid status code")
}

/// The status and Anthropic error type of a failure.
pub(crate) fn status_and_type(e: &ApiError) -> (StatusCode, &'static str) {
    match e {
        ApiError::BadRequest { .. }
        | ApiError::MethodNotAllowed(_)
        | ApiError::RequestTimeout(_)
        | ApiError::UnsupportedMediaType(_) => (e.status(), "invalid_request_error"),
        ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "authentication_error"),
        ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "permission_error"),
        ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found_error"),
        ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"),
        ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
        ApiError::PoolBusy { .. } => (overloaded(), "overloaded_error"),
        ApiError::GatewayTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout_error"),
        ApiError::BadGateway(_) | ApiError::Unavailable(_) | ApiError::Internal(_) => {
            (e.status(), "api_error")
        }
    }
}

/// The error object alone (as a stream's `error` event carries it).
pub(crate) fn error_object(e: &ApiError) -> Value {
    let (_, kind) = status_and_type(e);
    json!({"type": kind, "message": e.to_string()})
}

/// The whole response for a failure before any byte of the answer.
pub(crate) fn response(e: ApiError, request_id: &str) -> Response {
    let (status, _) = status_and_type(&e);
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), error = %e, "request failed");
    } else {
        tracing::info!(status = status.as_u16(), error = %e, "request refused");
    }
    let body = json!({"type": "error", "error": error_object(&e), "request_id": request_id});
    let mut response = (status, axum::Json(body)).into_response();
    if let ApiError::PoolBusy { retry_after, .. } | ApiError::RateLimited { retry_after, .. } = &e {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, (*retry_after).into());
    }
    response
}

/// `request-id: req_…`, on every answer of the door.
pub(crate) fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("request-id", v);
    }
    response
}

/// A new request id.
pub(crate) fn request_id() -> String {
    format!("req_{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_anthropics_status_and_type() {
        let cases = [
            (
                ApiError::invalid("messages", "x"),
                400,
                "invalid_request_error",
            ),
            (
                ApiError::Unauthorized("x".into()),
                401,
                "authentication_error",
            ),
            (ApiError::NotFound("x".into()), 404, "not_found_error"),
            (
                ApiError::PayloadTooLarge("x".into()),
                413,
                "request_too_large",
            ),
            (
                ApiError::RateLimited {
                    message: "x".into(),
                    retry_after: 3,
                },
                429,
                "rate_limit_error",
            ),
            (ApiError::BadGateway("x".into()), 502, "api_error"),
            (ApiError::Unavailable("x".into()), 503, "api_error"),
            (
                ApiError::PoolBusy {
                    message: "x".into(),
                    retry_after: 2,
                },
                529,
                "overloaded_error",
            ),
            (ApiError::GatewayTimeout("x".into()), 504, "timeout_error"),
            (ApiError::Internal("x".into()), 500, "api_error"),
        ];
        for (e, status, kind) in cases {
            let (s, k) = status_and_type(&e);
            assert_eq!((s.as_u16(), k), (status, kind), "{e:?}");
            let r = response(e.clone(), "req_1");
            assert_eq!(r.status().as_u16(), status);
            let retry = r.headers().get("retry-after").is_some();
            assert_eq!(
                retry,
                matches!(e, ApiError::PoolBusy { .. } | ApiError::RateLimited { .. }),
                "{e:?}"
            );
        }
    }
}
