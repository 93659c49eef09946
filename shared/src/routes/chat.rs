//! `POST /v1/chat/completions`, streamed or not.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::AppState;
use crate::config::Config;
use crate::conversation::{StopReason, TokenUsage, ToolCall};
use crate::error::ApiError;
use crate::openai::chat::ChatRequest;
use crate::openai::encode::{completion_id, unix_seconds, ChunkEncoder, Completion};
use crate::openai::usage::Usage;
use crate::reply::{Piece, Reply};

/// The chat function. It answers the (static) models routes too, so that one
/// function URL is a complete base URL for clients that list models first.
pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    super::finish(routes(state), &config)
}

/// Chat and the model list (so the chat function's URL alone serves chat
/// clients), without the fallbacks.
pub(super) fn routes(state: AppState) -> Router {
    let max_body = state.config.max_request_bytes;
    super::limited(
        Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/chat/completions", post(chat_completions))
            .merge(
                super::models::routes().route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    super::require_caller,
                )),
            )
            .with_state(state),
        max_body,
    )
}

async fn chat_completions(
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
    let ChatRequest {
        conversation,
        stream,
        include_usage,
    } = ChatRequest::parse(&body)?;
    let model = conversation.model.clone();
    let reply = Reply::open(state.deployment(), &tokens, conversation).await?;
    let served = reply.served_by();
    tracing::info!(
        token = %reply.token_fingerprint(),
        chat_id = reply.chat_id().unwrap_or_default(),
        stream,
        upstream = served,
        "answer opened"
    );
    let config = state.config.clone();
    let response = if stream {
        stream_answer(reply, model, include_usage, config)
    } else {
        collect_answer(reply, &model, &config).await?
    };
    Ok(super::served_by(response, served))
}

/// OpenAI's words for why an answer ended.
fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::EndTurn => "stop",
        StopReason::ToolUse => "tool_calls",
        StopReason::MaxTokens => "length",
        StopReason::Refusal => "content_filter",
    }
}

/// A reply read to its end: the content, the reasoning, the tool calls
/// (native ones put together from their pieces) and how it ended.
#[derive(Default)]
struct Collected {
    content: String,
    reasoning: String,
    calls: Vec<ToolCall>,
    stop: StopReason,
}

impl Collected {
    fn add(&mut self, piece: Piece) {
        match piece {
            Piece::Content(text) => self.content.push_str(&text),
            Piece::Reasoning(text) => self.reasoning.push_str(&text),
            Piece::ReasoningSignature(_) => {}
            Piece::ToolCallStart { index, id, name } => {
                if self.calls.len() <= index {
                    self.calls.resize_with(index + 1, || ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                }
                self.calls[index].id = id;
                self.calls[index].name = name;
            }
            Piece::ToolCallArguments { index, json } => {
                if let Some(call) = self.calls.get_mut(index) {
                    call.arguments.push_str(&json);
                }
            }
            Piece::Done { text, calls, stop } => {
                self.content.push_str(&text);
                self.calls.extend(calls);
                self.stop = stop;
            }
        }
    }
}

/// The whole answer in one body (`stream::whole`).
async fn collect_answer(
    mut reply: Reply,
    model: &str,
    config: &Config,
) -> Result<Response, ApiError> {
    let mut collected = Collected::default();
    super::stream::whole(&mut reply, config, |piece| collected.add(piece)).await?;
    for call in &mut collected.calls {
        if call.arguments.trim().is_empty() {
            call.arguments = "{}".into();
        }
    }
    let id = completion_id(reply.chat_id());
    let body = Completion {
        id: &id,
        model,
        created: unix_seconds(),
        content: &collected.content,
        reasoning: &collected.reasoning,
        tool_calls: &collected.calls,
        finish_reason: finish_reason(collected.stop),
        usage: Usage::from(reply.usage()),
        conversation_id: reply.is_kept().then_some(reply.chat_id()).flatten(),
    }
    .to_json();
    Ok(Json(body).into_response())
}

/// Chat completions' words for a stream (`stream::Dialect`): chunks, the
/// finish chunk, the usage chunk when asked for, `[DONE]`.
struct ChatStream {
    enc: ChunkEncoder,
    include_usage: bool,
}

fn joined(frames: impl IntoIterator<Item = Bytes>) -> Bytes {
    frames.into_iter().flatten().collect::<Vec<u8>>().into()
}

impl super::stream::Dialect for ChatStream {
    fn start(&mut self, _: &Reply) -> Bytes {
        self.enc.role()
    }

    fn piece(&mut self, piece: Piece) -> Bytes {
        match piece {
            Piece::Content(text) => self.enc.content(&text),
            Piece::Reasoning(text) => self.enc.reasoning(&text),
            // A chat caller cannot send a signature back.
            Piece::ReasoningSignature(_) => Bytes::new(),
            Piece::ToolCallStart { index, id, name } => self.enc.tool_call_start(index, &id, &name),
            Piece::ToolCallArguments { index, json } => self.enc.tool_call_arguments(index, &json),
            Piece::Done { .. } => unreachable!("the end of the answer goes to end"),
        }
    }

    fn end(&mut self, text: &str, calls: &[ToolCall], stop: StopReason, _: TokenUsage) -> Bytes {
        let text = (!text.is_empty()).then(|| self.enc.content(text));
        joined(
            text.into_iter()
                .chain(self.enc.tool_calls(calls))
                .chain([self.enc.finish(finish_reason(stop))]),
        )
    }

    fn failed(&mut self, e: &ApiError) -> Bytes {
        self.enc.error(e)
    }

    fn close(&mut self, failed: bool, usage: TokenUsage) -> Bytes {
        let usage = (!failed && self.include_usage).then(|| self.enc.usage(Usage::from(usage)));
        joined(usage.into_iter().chain([ChunkEncoder::done()]))
    }

    fn keepalive() -> Bytes {
        ChunkEncoder::keepalive()
    }
}

/// The stream, fed by a task that owns the reply (`stream.rs`).
fn stream_answer(
    reply: Reply,
    model: String,
    include_usage: bool,
    config: std::sync::Arc<Config>,
) -> Response {
    let enc = ChunkEncoder::new(
        completion_id(reply.chat_id()),
        model,
        reply
            .is_kept()
            .then(|| reply.chat_id().map(str::to_string))
            .flatten(),
    );
    super::stream::answer(reply, ChatStream { enc, include_usage }, config)
}

#[cfg(test)]
#[path = "chat_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "chat_tools_tests.rs"]
mod tools_tests;

#[cfg(test)]
#[path = "chat_native_tests.rs"]
mod native_tests;

#[cfg(test)]
#[path = "fallback_tests.rs"]
mod fallback_tests;
