//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};

use super::AppState;
use crate::error::ApiError;
use crate::openai::models::{model, model_list};

/// The models routes, without the shared fallbacks (see `super::finish`).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let list = get(|| async { Json(model_list()) });
    let one = get(|Path(id): Path<String>| async move {
        model(&id)
            .map(Json)
            .ok_or_else(|| ApiError::NotFound(format!("The model '{id}' does not exist.")))
    });
    Router::new()
        .route("/v1/models", list.clone())
        .route("/models", list)
        .route("/v1/models/{id}", one.clone())
        .route("/models/{id}", one)
}

/// The models function.
pub fn router(state: AppState) -> Router {
    super::finish(
        super::limited(
            routes()
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    super::require_caller,
                ))
                .with_state(state.clone()),
            64 * 1024,
        ),
        &state.config,
    )
}
