//! One module per OpenAI route; each builds its `Router`.

pub mod chat;
pub mod models;
pub mod token_check;

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::http::{Method, StatusCode, Uri};
use axum::Router;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::config::Config;
use crate::credentials::Credentials;
use crate::error::ApiError;
use crate::upstream::Upstream;

/// What every handler borrows: built once per execution environment.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub upstream: Arc<dyn Upstream>,
    pub credentials: Arc<Credentials>,
}

/// Route layer for routes that use no token: in secret mode the caller still
/// needs a valid API key.
pub async fn require_caller(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    state.credentials.authorize(request.headers()).await?;
    Ok(next.run(request).await)
}

/// The fallbacks and limits every route shares.
pub fn finish(router: Router, max_body: usize) -> Router {
    router
        .fallback(|method: Method, uri: Uri| async move { not_found(&method, &uri) })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::MethodNotAllowed(format!("{method} is not allowed on {}.", uri.path()))
        })
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
}

fn not_found(method: &Method, uri: &Uri) -> ApiError {
    ApiError::NotFound(format!(
        "Unknown request URL: {method} {}. This service serves POST /v1/chat/completions and GET /v1/models.",
        uri.path()
    ))
}

/// A body that could not be read: too large (413) or broken (400).
pub fn body_error(rejection: BytesRejection, max_body: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!("The request body is larger than {max_body} bytes."))
    } else {
        ApiError::bad_body(format!("The request body could not be read: {rejection}."))
    }
}
