//! `POST /v1/chat/completions`, streamed or not.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use super::AppState;
use crate::answer::{Answer, Pool};
use crate::error::ApiError;
use crate::openai::chat::ChatRequest;
use crate::openai::encode::{completion_id, sources_block, unix_seconds, ChunkEncoder, Completion};
use crate::openai::usage::Usage;
use crate::prompt::flatten;
use crate::upstream::{ChatTurn, Citation, UpstreamEvent};

/// The chat function. It answers the (static) models routes too, so that one
/// function URL is a complete base URL for clients that list models first.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_request_bytes;
    super::finish(
        Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/chat/completions", post(chat_completions))
            .merge(
                super::models::routes().route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    super::require_caller,
                )),
            )
            .with_state(state.clone()),
        max_body,
        &state.config,
    )
}

async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // The upstream work runs in its own task: if the caller's connection drops
    // (a local server cancels the handler then), the task still finishes and
    // deletes the upstream conversation. The task carries the invocation's span
    // (the Lambda request id) into its logs.
    tokio::spawn(answer_request(state, headers, body).in_current_span())
        .await
        .map_err(|e| ApiError::Internal(format!("the request handler failed: {e}")))?
}

async fn answer_request(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tokens = state.credentials.tokens_for(&headers).await?;
    super::require_json(&headers)?;
    let body = body.map_err(|r| super::body_error(r, state.config.max_request_bytes))?;
    let request = ChatRequest::parse(&body)?;
    let last = request.messages.len() - 1;
    if !request.messages[last].attachments.is_empty() {
        return Err(ApiError::invalid(
            format!("messages[{last}].content"),
            format!(
                "Files and images are not supported by this deployment's {} upstream yet; send text parts only.",
                state.upstream.name()
            ),
        ));
    }
    let prompt = flatten(&request.messages, request.conversation_id.is_some());
    if prompt.trim().is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "The messages contain no text to send.",
        ));
    }
    let turn = ChatTurn {
        prompt,
        conversation_id: request.conversation_id.clone(),
    };
    let pool = Pool {
        dead: state.credentials.dead_tokens(),
        leases: state.credentials.leases(),
    };
    let answer = Answer::open(
        state.upstream.clone(),
        &state.config,
        &tokens,
        pool,
        &turn,
        request.keeps_conversation(),
    )
    .await?;
    tracing::info!(
        token = %answer.token_fingerprint(),
        chat_id = answer.chat_id().unwrap_or_default(),
        stream = request.stream,
        "answer opened"
    );
    if request.stream {
        Ok(stream_answer(answer, request, turn.prompt))
    } else {
        collect_answer(answer, request, &turn.prompt).await
    }
}

/// What an answer adds up to.
#[derive(Default)]
struct Collected {
    content: String,
    reasoning: String,
    citations: Vec<Citation>,
}

impl Collected {
    fn usage(&self, prompt: &str) -> Usage {
        Usage::estimate(prompt, &format!("{}{}", self.reasoning, self.content))
    }
}

async fn collect_answer(
    mut answer: Answer,
    request: ChatRequest,
    prompt: &str,
) -> Result<Response, ApiError> {
    let mut out = Collected::default();
    let failure = loop {
        match answer.next().await {
            None | Some(Ok(UpstreamEvent::End)) => break None,
            Some(Ok(UpstreamEvent::Delta(d))) => out.content.push_str(&d),
            Some(Ok(UpstreamEvent::ReasoningDelta(d))) => out.reasoning.push_str(&d),
            Some(Ok(UpstreamEvent::Citations(c))) => out.citations = c,
            Some(Ok(UpstreamEvent::Conversation { .. })) => {}
            Some(Err(e)) => break Some(e),
        }
    };
    answer.cleanup().await;
    if let Some(e) = failure {
        return Err(e.into());
    }
    out.content.push_str(&sources_block(&out.citations));
    let id = completion_id(answer.chat_id());
    let body = Completion {
        id: &id,
        model: &request.model,
        created: unix_seconds(),
        content: &out.content,
        reasoning: &out.reasoning,
        usage: out.usage(prompt),
        conversation_id: answer.is_kept().then_some(answer.chat_id()).flatten(),
    }
    .to_json();
    Ok(Json(body).into_response())
}

/// The stream is fed by a task that owns the answer; the response body ends
/// only when that task has finished, cleanup included.
fn stream_answer(answer: Answer, request: ChatRequest, prompt: String) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    let encoder = ChunkEncoder::new(
        completion_id(answer.chat_id()),
        request.model.clone(),
        answer
            .is_kept()
            .then(|| answer.chat_id().map(str::to_string))
            .flatten(),
    );
    tokio::spawn(produce(answer, encoder, request.include_usage, prompt, tx).in_current_span());
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

async fn produce(
    mut answer: Answer,
    enc: ChunkEncoder,
    include_usage: bool,
    prompt: String,
    tx: mpsc::Sender<Bytes>,
) {
    let mut out = Collected::default();
    let mut failure = None;
    let mut client_gone = tx.send(enc.role()).await.is_err();
    while !client_gone {
        let event = tokio::select! {
            biased;
            _ = tx.closed() => { client_gone = true; break; }
            event = answer.next() => event,
        };
        let frame = match event {
            None | Some(Ok(UpstreamEvent::End)) => break,
            Some(Ok(UpstreamEvent::Delta(d))) => {
                out.content.push_str(&d);
                enc.content(&d)
            }
            Some(Ok(UpstreamEvent::ReasoningDelta(d))) => {
                out.reasoning.push_str(&d);
                enc.reasoning(&d)
            }
            Some(Ok(UpstreamEvent::Citations(c))) => {
                out.citations = c;
                continue;
            }
            Some(Ok(UpstreamEvent::Conversation { .. })) => continue,
            Some(Err(e)) => {
                failure = Some(ApiError::from(e));
                break;
            }
        };
        client_gone = tx.send(frame).await.is_err();
    }
    if client_gone {
        tracing::info!(
            chat_id = answer.chat_id().unwrap_or_default(),
            "client went away mid-stream"
        );
        answer.cleanup().await;
        return;
    }
    // The end of the answer reaches the caller first (the deletion can take
    // seconds on the agent upstream); the deletion still happens inside the
    // invocation, before the usage chunk and `[DONE]` (the invocation lasts
    // until `tx` is dropped).
    let mut ending = Vec::new();
    match &failure {
        Some(error) => {
            tracing::warn!(error = %error, "upstream failed mid-stream");
            ending.push(enc.error(error));
        }
        None => {
            let sources = sources_block(&out.citations);
            if !sources.is_empty() {
                out.content.push_str(&sources);
                ending.push(enc.content(&sources));
            }
            ending.push(enc.finish());
        }
    }
    send_all(&tx, ending).await;
    answer.cleanup().await;
    let mut tail = Vec::new();
    if failure.is_none() && include_usage {
        tail.push(enc.usage(out.usage(&prompt)));
    }
    tail.push(ChunkEncoder::done());
    send_all(&tx, tail).await;
}

/// Frames in order, until the caller is gone.
async fn send_all(tx: &mpsc::Sender<Bytes>, frames: Vec<Bytes>) {
    for frame in frames {
        if tx.send(frame).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[path = "chat_tests.rs"]
mod tests;
