//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};

use super::AppState;
use crate::error::ApiError;
use crate::openai::models::{model, model_list};

/// The chat models of every upstream of the chain, in its order, each once.
fn served(state: &AppState) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for upstream in state.upstreams.iter() {
        for name in upstream.models() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    // Speech: on the platform wherever it is reached, and on Hailuo.
    let ids: Vec<&str> = state.upstreams.iter().map(|u| u.id()).collect();
    let platform = ids.contains(&"minimax-api") || !state.config.minimax_api_keys.is_empty();
    if platform || ids.contains(&"hailuo") {
        names.extend(["tts-1", "tts-1-hd", "gpt-4o-mini-tts", "whisper-1"].map(str::to_string));
    }
    if platform {
        names.extend(crate::upstream::api::speech::MODELS.map(str::to_string));
    }
    names
}

/// The models routes, without the shared fallbacks (see `super::finish`):
/// what the deployment's upstream serves.
pub(crate) fn routes() -> Router<AppState> {
    let list =
        get(|State(state): State<AppState>| async move { Json(model_list(&served(&state))) });
    let one = get(
        |State(state): State<AppState>, Path(id): Path<String>| async move {
            model(&served(&state), &id)
                .map(Json)
                .ok_or_else(|| ApiError::NotFound(format!("The model '{id}' does not exist.")))
        },
    );
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
