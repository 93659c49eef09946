//! `POST /v1/responses` (OpenAI Responses, streamed or not, stateless):
//! Codex's, the Agents SDK's and the AI SDK's door onto the same
//! conversation layer as chat completions.
//!
//! Failures before the first byte are OpenAI errors with real statuses
//! (Codex retries 5xx and never 4xx, so what cannot succeed is a 4xx);
//! after it, `error` then `response.failed`. While the answer is silent an
//! SSE comment goes out every `KEEPALIVE`. Nothing is stored, so the routes
//! that read a stored response answer 404 in OpenAI's words.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::AppState;
use crate::config::Config;
use crate::conversation::{StopReason, TokenUsage, ToolCall};
use crate::error::ApiError;
use crate::openai::encode::ChunkEncoder;
use crate::reply::{Piece, Reply};
use crate::responses::encode::Builder;
use crate::responses::request::ResponsesRequest;

/// The responses function (the server mounts the same routes).
pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    super::finish(routes(state), &config)
}

pub(super) fn routes(state: AppState) -> Router {
    let max_body = state.config.max_request_bytes;
    super::limited(
        Router::new()
            .route("/v1/responses", post(responses))
            .route("/responses", post(responses))
            .route("/v1/responses/compact", post(not_stored_compact))
            .route("/responses/compact", post(not_stored_compact))
            .route("/v1/responses/{id}", get(not_stored).delete(not_stored))
            .route("/responses/{id}", get(not_stored).delete(not_stored))
            .route("/v1/responses/{id}/input_items", get(not_stored))
            .route("/responses/{id}/input_items", get(not_stored))
            .route("/v1/responses/{id}/cancel", post(not_stored))
            .route("/responses/{id}/cancel", post(not_stored))
            .with_state(state),
        max_body,
    )
}

/// Nothing is stored: every stored response is one this gateway never had.
async fn not_stored(Path(id): Path<String>) -> ApiError {
    ApiError::NotFound(format!(
        "Response with id '{}' not found. This gateway is stateless and stores no responses.",
        crate::text::clip(&id, 100)
    ))
}

async fn not_stored_compact() -> ApiError {
    ApiError::NotFound(
        "Remote compaction is not available: this gateway is stateless and stores no responses."
            .into(),
    )
}

async fn responses(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    super::in_own_task(answer_request(state, headers, body)).await
}

async fn answer_request(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tokens = state.credentials.tokens_for(&headers).await?;
    super::require_json(&headers)?;
    let body = body.map_err(|r| super::body_error(r, state.config.max_request_bytes))?;
    let ResponsesRequest {
        conversation,
        stream,
        custom_tools,
        echo,
    } = ResponsesRequest::parse(&body)?;
    let builder = Builder::new(conversation.model.clone(), echo, custom_tools);
    let reply = Reply::open(state.deployment(), &tokens, conversation).await?;
    let served = reply.served_by();
    tracing::info!(
        token = %reply.token_fingerprint(),
        chat_id = reply.chat_id().unwrap_or_default(),
        stream,
        door = "responses",
        upstream = served,
        "answer opened"
    );
    let config = state.config.clone();
    let response = if stream {
        super::stream::answer(reply, builder, config)
    } else {
        collect_answer(reply, builder, &config).await?
    };
    Ok(super::served_by(response, served))
}

/// The whole response in one body (`stream::whole`).
async fn collect_answer(
    mut reply: Reply,
    mut builder: Builder,
    config: &Config,
) -> Result<Response, ApiError> {
    let mut ending = None;
    super::stream::whole(&mut reply, config, |piece| match piece {
        Piece::Done { text, calls, stop } => ending = Some((text, calls, stop)),
        piece => {
            builder.piece(piece);
        }
    })
    .await?;
    let (text, calls, stop) = ending.expect("`whole` saw the reply's Done");
    builder.end(&text, &calls, stop, reply.usage());
    let response = builder
        .into_terminal()
        .ok_or_else(|| ApiError::Internal("the response did not end".into()))?;
    Ok(Json(response).into_response())
}

/// The Responses words for a stream (`stream::Dialect`).
impl super::stream::Dialect for Builder {
    fn start(&mut self, _: &Reply) -> Bytes {
        Builder::start(self).into()
    }

    fn piece(&mut self, piece: Piece) -> Bytes {
        Builder::piece(self, piece).into()
    }

    fn end(
        &mut self,
        text: &str,
        calls: &[ToolCall],
        stop: StopReason,
        usage: TokenUsage,
    ) -> Bytes {
        Builder::end(self, text, calls, stop, usage).into()
    }

    fn failed(&mut self, e: &ApiError) -> Bytes {
        Builder::failed(self, e).into()
    }

    /// The terminal event (`response.completed`, `.incomplete`, `.failed`)
    /// is the last word.
    fn close(&mut self, _: bool, _: TokenUsage) -> Bytes {
        Bytes::new()
    }

    fn keepalive() -> Bytes {
        ChunkEncoder::keepalive()
    }
}

#[cfg(test)]
#[path = "responses_tests.rs"]
mod tests;
