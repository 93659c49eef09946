//! Every failure a caller can see, as an OpenAI error object with the right status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::upstream::UpstreamError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
        code: &'static str,
    },
    #[error("{0}")]
    Unauthorized(String),
    /// A known key without the right to this route (a caller's key on the
    /// admin view).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The caller stopped sending its request's body.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    Unavailable(String),
    /// Every account of the pool stayed busy for as long as the request may
    /// wait: 503 with `Retry-After` (seconds).
    #[error("{message}")]
    PoolBusy { message: String, retry_after: u64 },
    /// Every account of the pool is rate limited or at its plan's limit:
    /// 429 with `Retry-After` (seconds), as OpenAI answers a rate limit.
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    #[error("{0}")]
    GatewayTimeout(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            param: Some(param.into()),
            code: "invalid_value",
        }
    }

    pub fn missing(param: &str) -> Self {
        ApiError::BadRequest {
            message: format!("Missing required parameter: '{param}'."),
            param: Some(param.into()),
            code: "missing_required_parameter",
        }
    }

    pub fn bad_body(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            param: None,
            code: "invalid_request_body",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) | ApiError::PoolBusy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> (&'static str, Option<&str>, Option<&'static str>) {
        match self {
            ApiError::BadRequest { param, code, .. } => {
                ("invalid_request_error", param.as_deref(), Some(code))
            }
            ApiError::Unauthorized(_) => ("invalid_request_error", None, Some("invalid_api_key")),
            ApiError::Forbidden(_) => ("invalid_request_error", None, Some("forbidden")),
            ApiError::NotFound(_) => ("invalid_request_error", None, Some("unknown_url")),
            ApiError::MethodNotAllowed(_) => {
                ("invalid_request_error", None, Some("method_not_allowed"))
            }
            ApiError::RequestTimeout(_) => ("invalid_request_error", None, Some("request_timeout")),
            ApiError::PayloadTooLarge(_) => {
                ("invalid_request_error", None, Some("request_too_large"))
            }
            ApiError::UnsupportedMediaType(_) => (
                "invalid_request_error",
                None,
                Some("unsupported_content_type"),
            ),
            ApiError::BadGateway(_) => ("upstream_error", None, Some("upstream_error")),
            ApiError::Unavailable(_) => ("service_unavailable", None, Some("service_unavailable")),
            ApiError::PoolBusy { .. } => ("service_unavailable", None, Some("accounts_busy")),
            ApiError::RateLimited { .. } => ("requests", None, Some("rate_limit_exceeded")),
            ApiError::GatewayTimeout(_) => ("timeout_error", None, Some("upstream_timeout")),
            ApiError::Internal(_) => ("server_error", None, Some("internal_error")),
        }
    }

    /// A bug that panicked, where panics unwind (the server; tests): the
    /// caller learns that much. What the panic said is logged (by the panic
    /// hook, `runtime::log_panics`), not sent: it could quote data that is
    /// not the caller's.
    pub(crate) fn bug() -> Self {
        ApiError::Internal(
            "the gateway failed on this request (a bug, logged on its side); retry, \
             and report it if it happens again"
                .into(),
        )
    }

    /// The OpenAI error object: `{"error":{"message","type","param","code"}}`.
    ///
    /// A 401's message begins as OpenAI's own does (`Incorrect API key
    /// provided:`): clients classify errors by their words before their
    /// status, and LiteLLM (1.106) takes any error whose text holds
    /// `invalid_request_error` (the type OpenAI gives a 401 too) for a bad
    /// request unless that phrase is there.
    pub fn body(&self) -> serde_json::Value {
        let (kind, param, code) = self.kind();
        let message = match self {
            ApiError::Unauthorized(m) => format!("Incorrect API key provided: {m}"),
            _ => self.to_string(),
        };
        json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
    }
}

impl ApiError {
    /// An upstream failure, in the words of the upstream that failed: `name`
    /// is the adapter's, `login` what to do about a rejected token.
    pub fn from_upstream(e: UpstreamError, name: &str, login: &str) -> Self {
        match &e {
            UpstreamError::TokenRejected { .. } => {
                ApiError::Unauthorized(format!("{name}: {e}. {login}"))
            }
            UpstreamError::InvalidToken { .. } => ApiError::Unauthorized(format!("{name}: {e}.")),
            UpstreamError::Busy { .. } => ApiError::Unavailable(format!(
                "{name}: {e}. Each account answers one request at a time: retry shortly, or add tokens."
            )),
            _ => e.into(),
        }
    }
}

/// Without the upstream's name (failures mid-answer, which are never the token's).
impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        match &e {
            UpstreamError::TokenRejected { .. } | UpstreamError::InvalidToken { .. } => {
                ApiError::Unauthorized(format!("{e}."))
            }
            UpstreamError::Timeout(_) => ApiError::GatewayTimeout(e.to_string()),
            UpstreamError::Busy { .. } => ApiError::Unavailable(format!(
                "{e}. Each account answers one request at a time: retry shortly, or add tokens."
            )),
            UpstreamError::Unsupported(m) => ApiError::BadRequest {
                message: m.clone(),
                param: None,
                code: "unsupported_by_upstream",
            },
            // In OpenAI's words, which clients (LiteLLM's context window
            // fallbacks, Codex) recognise.
            UpstreamError::InvalidRequest {
                message,
                code: code @ "context_length_exceeded",
            } => ApiError::BadRequest {
                message: format!(
                    "This model's maximum context length is smaller than this request: the upstream \
                     refused it ({message}). Send a shorter history."
                ),
                param: Some("messages".into()),
                code,
            },
            UpstreamError::InvalidRequest { message, code } => ApiError::BadRequest {
                message: format!("The upstream refused the request: {message}"),
                param: None,
                code,
            },
            UpstreamError::TooLarge(m) => ApiError::PayloadTooLarge(format!(
                "The upstream refused the request as too large: {m}. Send less (fewer or smaller files, a shorter history)."
            )),
            UpstreamError::Cooling {
                class, retry_after, ..
            } => {
                let retry_after = retry_after.as_secs().max(1);
                match class {
                    crate::upstream::Unavailability::Throttled
                    | crate::upstream::Unavailability::PlanWindow => ApiError::RateLimited {
                        message: format!("{e}. Retry after {retry_after} s."),
                        retry_after,
                    },
                    _ => ApiError::Unavailable(format!("{e}.")),
                }
            }
            _ => ApiError::BadGateway(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), error = %self, "request refused");
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if let ApiError::PoolBusy { retry_after, .. } | ApiError::RateLimited { retry_after, .. } =
            &self
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, (*retry_after).into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_openai_shape() {
        let b = ApiError::invalid("messages", "`messages` must be a non-empty array").body();
        assert_eq!(b["error"]["type"], "invalid_request_error");
        assert_eq!(b["error"]["param"], "messages");
        assert_eq!(b["error"]["code"], "invalid_value");
        assert!(b["error"]["message"].as_str().unwrap().contains("messages"));
    }

    #[test]
    fn upstream_errors_map_to_statuses() {
        let rejected = UpstreamError::TokenRejected {
            fingerprint: "ab12cd34".into(),
            message: "expired".into(),
        };
        assert_eq!(ApiError::from(rejected).status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            ApiError::from(UpstreamError::Timeout("x".into())).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            ApiError::from(UpstreamError::Http {
                status: 500,
                message: "boom".into()
            })
            .status(),
            StatusCode::BAD_GATEWAY
        );
        let api = ApiError::from(UpstreamError::Api {
            code: 3,
            message: "服务繁忙".into(),
        });
        assert_eq!(api.status(), StatusCode::BAD_GATEWAY);
        assert!(
            api.to_string().contains("服务繁忙"),
            "keeps the upstream's message"
        );
        assert_eq!(
            ApiError::from(UpstreamError::Unsupported("no".into())).status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn token_rejection_names_fingerprint_only() {
        let e = ApiError::from(UpstreamError::TokenRejected {
            fingerprint: "ab12cd34".into(),
            message: "expired".into(),
        });
        assert!(e.to_string().contains("ab12cd34"));
    }
}
