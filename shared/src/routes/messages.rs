//! `POST /v1/messages` (Anthropic Messages, streamed or not) and
//! `POST /v1/messages/count_tokens`: Claude Code's and the anthropic SDKs'
//! door onto the same conversation layer as chat completions.
//!
//! Every answer carries `request-id`; every failure is Anthropic's error
//! shape (`anthropic/error.rs`), before the stream as a status, after its
//! first byte as an `error` event. The stream's order is the one the SDK
//! checks (`anthropic/encode.rs`), with a `ping` every `KEEPALIVE` of
//! silence so a model that thinks for minutes is not cut by CloudFront's
//! origin read timeout. The paths are taken with and without `/v1`, and a
//! query string (Claude Code's `?beta=true`) changes nothing.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::AppState;
use crate::anthropic::encode::{message_id, Collector, Events};
use crate::anthropic::error::{request_id, response as error_response, with_request_id};
use crate::anthropic::request::{MessagesRequest, Route};
use crate::config::Config;
use crate::conversation::{StopReason, TokenUsage, ToolCall};
use crate::error::ApiError;
use crate::reply::{Piece, Reply};

/// The messages function (the server mounts the same routes).
pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    super::finish(routes(state), &config)
}

pub(super) fn routes(state: AppState) -> Router {
    let max_body = state.config.max_request_bytes;
    super::limited(
        Router::new()
            .route("/v1/messages", post(messages))
            .route("/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .route("/messages/count_tokens", post(count_tokens))
            .with_state(state),
        max_body,
    )
}

async fn messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = request_id();
    let response = super::in_own_task(answer_request(state, headers, body))
        .await
        .unwrap_or_else(|e| error_response(e, &id));
    with_request_id(response, &id)
}

async fn count_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = request_id();
    let response = count(state, headers, body)
        .await
        .unwrap_or_else(|e| error_response(e, &id));
    with_request_id(response, &id)
}

/// The estimate `message_start` would carry for the same request, from the
/// same checks and prompt, without an account (Claude Code's editors call
/// this dozens of times at start).
async fn count(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    state.credentials.authorize(&headers).await?;
    super::require_json(&headers)?;
    let body = body.map_err(|r| super::body_error(r, state.config.max_request_bytes))?;
    let request = MessagesRequest::parse(&body, Route::CountTokens)?;
    let input_tokens = Reply::count(state.deployment(), request.conversation).await?;
    Ok(Json(serde_json::json!({ "input_tokens": input_tokens })).into_response())
}

async fn answer_request(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tokens = state.credentials.tokens_for(&headers).await?;
    super::require_json(&headers)?;
    let body = body.map_err(|r| super::body_error(r, state.config.max_request_bytes))?;
    let MessagesRequest {
        conversation,
        stream,
    } = MessagesRequest::parse(&body, Route::Messages)?;
    let model = conversation.model.clone();
    let reply = Reply::open(state.deployment(), &tokens, conversation).await?;
    let served = reply.served_by();
    tracing::info!(
        token = %reply.token_fingerprint(),
        chat_id = reply.chat_id().unwrap_or_default(),
        stream,
        door = "messages",
        upstream = served,
        "answer opened"
    );
    let config = state.config.clone();
    let response = if stream {
        super::stream::answer(reply, Events::new(message_id(), model), config)
    } else {
        collect_answer(reply, &model, &config).await?
    };
    Ok(super::served_by(response, served))
}

/// The whole message in one body (`stream::whole`).
async fn collect_answer(
    mut reply: Reply,
    model: &str,
    config: &Config,
) -> Result<Response, ApiError> {
    let mut collector = Collector::default();
    super::stream::whole(&mut reply, config, |piece| collector.add(piece)).await?;
    let message = collector.message(&message_id(), model, reply.usage());
    Ok(Json(message).into_response())
}

/// Anthropic's words for a stream (`stream::Dialect`).
impl super::stream::Dialect for Events {
    fn start(&mut self, reply: &Reply) -> Bytes {
        Events::start(self, reply.input_estimate())
    }

    fn piece(&mut self, piece: Piece) -> Bytes {
        Events::piece(self, piece)
    }

    fn end(
        &mut self,
        text: &str,
        calls: &[ToolCall],
        stop: StopReason,
        usage: TokenUsage,
    ) -> Bytes {
        Events::end(self, text, calls, stop, usage)
    }

    fn failed(&mut self, e: &ApiError) -> Bytes {
        Events::error(e)
    }

    /// `message_stop` after a whole answer; after an `error` event, nothing.
    fn close(&mut self, failed: bool, _: TokenUsage) -> Bytes {
        if failed {
            Bytes::new()
        } else {
            Events::stop()
        }
    }

    fn keepalive() -> Bytes {
        Events::ping()
    }
}

#[cfg(test)]
#[path = "messages_tests.rs"]
mod tests;
