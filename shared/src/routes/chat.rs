//! `POST /v1/chat/completions`, streamed or not.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::FutureExt;

use super::AppState;
use crate::config::Config;
use crate::conversation::{StopReason, ToolCall};
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
    tracing::info!(
        token = %reply.token_fingerprint(),
        chat_id = reply.chat_id().unwrap_or_default(),
        stream,
        "answer opened"
    );
    let config = state.config.clone();
    if stream {
        Ok(stream_answer(reply, model, include_usage, config))
    } else {
        collect_answer(reply, &model, &config).await
    }
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

/// A reply read to its end.
struct Collected {
    content: String,
    reasoning: String,
    calls: Vec<ToolCall>,
    stop: StopReason,
}

/// The whole answer in one body. A bug that panics while it is collected
/// (where panics unwind: the server) costs the request a 500, as in
/// `in_own_task`, but here the conversation is still deleted first: the
/// reply is only lent to `collect`.
async fn collect_answer(
    mut reply: Reply,
    model: &str,
    config: &Config,
) -> Result<Response, ApiError> {
    let collected = std::panic::AssertUnwindSafe(collect(&mut reply, config))
        .catch_unwind()
        .await;
    reply.cleanup().await;
    let Ok(collected) = collected else {
        tracing::error!(
            chat_id = reply.chat_id().unwrap_or_default(),
            "collecting the answer panicked"
        );
        return Err(ApiError::bug());
    };
    let collected = collected?;
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

/// Read the reply to its end: the content, the reasoning, the tool calls
/// (native ones put together from their pieces) and how it ended.
async fn collect(reply: &mut Reply, config: &Config) -> Result<Collected, ApiError> {
    let (mut content, mut reasoning) = (String::new(), String::new());
    let mut calls: Vec<ToolCall> = Vec::new();
    let mut stop = None;
    while let Some(piece) = reply.next(config).await {
        match piece? {
            Piece::Content(text) => content.push_str(&text),
            Piece::Reasoning(text) => reasoning.push_str(&text),
            Piece::ReasoningSignature(_) => {}
            Piece::ToolCallStart { index, id, name } => {
                if calls.len() <= index {
                    calls.resize_with(index + 1, || ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                }
                calls[index].id = id;
                calls[index].name = name;
            }
            Piece::ToolCallArguments { index, json } => {
                if let Some(call) = calls.get_mut(index) {
                    call.arguments.push_str(&json);
                }
            }
            Piece::Done {
                text,
                calls: whole,
                stop: why,
            } => {
                content.push_str(&text);
                calls.extend(whole);
                stop = Some(why);
            }
        }
    }
    let stop =
        stop.ok_or_else(|| ApiError::Internal("the reply ended without an outcome".into()))?;
    for call in &mut calls {
        if call.arguments.trim().is_empty() {
            call.arguments = "{}".into();
        }
    }
    Ok(Collected {
        content,
        reasoning,
        calls,
        stop,
    })
}

/// The stream is fed by a task that owns the reply; the response body ends
/// only when that task has finished, cleanup included.
///
/// A bug that panics while the stream is produced (where panics unwind: the
/// server; Lambda's build aborts) still ends the stream as an upstream
/// failure does, with an error chunk and `[DONE]`, and the conversation is
/// still deleted: the task keeps the reply, the encoder and the sender, and
/// only lends them to `produce`.
fn stream_answer(
    reply: Reply,
    model: String,
    include_usage: bool,
    config: std::sync::Arc<Config>,
) -> Response {
    let (out, body) = super::Outgoing::new(32);
    let encoder = ChunkEncoder::new(
        completion_id(reply.chat_id()),
        model,
        reply
            .is_kept()
            .then(|| reply.chat_id().map(str::to_string))
            .flatten(),
    );
    super::spawn(async move {
        let mut reply = reply;
        let produced = std::panic::AssertUnwindSafe(produce(
            &mut reply,
            &config,
            &encoder,
            include_usage,
            &out,
        ))
        .catch_unwind()
        .await;
        if produced.is_err() {
            tracing::error!(
                chat_id = reply.chat_id().unwrap_or_default(),
                "the stream's producer panicked"
            );
            out.deliver(encoder.error(&ApiError::bug())).await;
            reply.cleanup().await;
            if out.deliver(ChunkEncoder::done()).await {
                out.finish();
            }
        }
    });
    super::event_stream(body)
}

async fn produce(
    reply: &mut Reply,
    config: &Config,
    enc: &ChunkEncoder,
    include_usage: bool,
    out: &super::Outgoing,
) {
    let mut failure = None;
    let mut ending = Vec::new();
    let mut client_gone = !out.deliver(enc.role()).await;
    while !client_gone {
        let piece = match super::next_piece(reply, config, out, ChunkEncoder::keepalive).await {
            super::Waited::CallerGone => {
                client_gone = true;
                break;
            }
            super::Waited::Piece(piece) => piece,
        };
        let frame = match piece {
            None => break,
            Some(Ok(Piece::Content(text))) => enc.content(&text),
            Some(Ok(Piece::Reasoning(text))) => enc.reasoning(&text),
            Some(Ok(Piece::ReasoningSignature(_))) => continue,
            Some(Ok(Piece::ToolCallStart { index, id, name })) => {
                enc.tool_call_start(index, &id, &name)
            }
            Some(Ok(Piece::ToolCallArguments { index, json })) => {
                enc.tool_call_arguments(index, &json)
            }
            Some(Ok(Piece::Done { text, calls, stop })) => {
                // The end of the answer reaches the caller before the deletion
                // (which can take seconds on the agent upstream).
                if !text.is_empty() {
                    ending.push(enc.content(&text));
                }
                ending.extend(enc.tool_calls(&calls));
                ending.push(enc.finish(finish_reason(stop)));
                break;
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "upstream failed mid-stream");
                ending.push(enc.error(&e));
                failure = Some(e);
                break;
            }
        };
        client_gone = !out.deliver(frame).await;
    }
    if client_gone {
        tracing::info!(
            chat_id = reply.chat_id().unwrap_or_default(),
            "client went away mid-stream"
        );
        reply.cleanup().await;
        return;
    }
    // The deletion still happens inside the invocation, before the usage
    // chunk and `[DONE]` (the invocation lasts until `out` is dropped).
    let caller_there = out.deliver_all(ending).await;
    reply.cleanup().await;
    if !caller_there {
        return;
    }
    let mut tail = Vec::new();
    if failure.is_none() && include_usage {
        tail.push(enc.usage(Usage::from(reply.usage())));
    }
    tail.push(ChunkEncoder::done());
    if out.deliver_all(tail).await {
        out.finish();
    }
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
