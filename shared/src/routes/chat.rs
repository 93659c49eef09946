//! `POST /v1/chat/completions`, streamed or not.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::FutureExt;

use super::AppState;
use crate::answer::{Answer, Pool};
use crate::config::Config;
use crate::error::ApiError;
use crate::files;
use crate::openai::chat::ChatRequest;
use crate::openai::encode::{completion_id, sources_block, unix_seconds, ChunkEncoder, Completion};
use crate::openai::usage::Usage;
use crate::prompt::flatten;
use crate::structured::{Ending, Outcome, Plan, Reader};
use crate::upstream::{ChatTurn, Citation, UpstreamEvent};

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
    let mut request = ChatRequest::parse(&body)?;
    // Only the last message's files are sent (protocol section 6); earlier
    // ones count by their text alone.
    let last = request.messages.len() - 1;
    let attachments = std::mem::take(&mut request.messages[last].attachments);
    if !attachments.is_empty() && !state.upstream.takes_files() {
        return Err(ApiError::invalid(
            format!("messages[{last}].content"),
            format!(
                "Files and images are not supported by this deployment's {} upstream; send text parts only.",
                state.upstream.name()
            ),
        ));
    }
    let plan = Plan::new(&mut request)?;
    let prompt = flatten(
        &request.messages,
        request.conversation_id.is_some(),
        &plan,
        !attachments.is_empty(),
    );
    if prompt.trim().is_empty() && attachments.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "The messages contain no text to send.",
        ));
    }
    // Every file is fetched before any account is taken: a bad URL is the
    // caller's 400, and no chat starts with a file missing.
    let files = files::gather(
        &format!("messages[{last}].content"),
        &attachments,
        &state.fetcher,
    )
    .await?;
    let file_tokens = files.iter().map(|f| files::token_estimate(f)).sum();
    let turn = ChatTurn {
        prompt,
        conversation_id: request.conversation_id.clone(),
        files,
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
    let config = state.config.clone();
    let reply = (turn.prompt, file_tokens);
    if request.stream {
        Ok(stream_answer(answer, request, plan, config, reply))
    } else {
        collect_answer(answer, request, &plan, &config, reply).await
    }
}

/// What the caller is shown of a reply, in order.
enum Piece {
    Content(String),
    Reasoning(String),
    /// The end: content still to show, tool calls, the finish reason.
    Done(Outcome),
}

/// One reply to a request: the answer's events read through the plan's
/// `Reader`, with the correction turn it may ask for sent on the same
/// account and conversation. Counts what usage is estimated from.
struct Reply<'p> {
    reader: Reader<'p>,
    wants_json: bool,
    citations: Vec<Citation>,
    /// Every prompt sent upstream (a correction re-reads the first answer).
    prompt: String,
    /// Every answer and reasoning text received.
    completion: String,
    /// What the turn's files add to the prompt (`files::token_estimate`).
    file_tokens: u32,
    done: bool,
}

impl<'p> Reply<'p> {
    fn new(plan: &'p Plan, (prompt, file_tokens): (String, u32)) -> Self {
        Self {
            reader: plan.reader(),
            wants_json: plan.wants_json(),
            citations: Vec::new(),
            prompt,
            completion: String::new(),
            file_tokens,
            done: false,
        }
    }

    fn usage(&self) -> Usage {
        let mut usage = Usage::estimate(&self.prompt, &self.completion);
        usage.prompt_tokens += self.file_tokens;
        usage.total_tokens += self.file_tokens;
        usage
    }

    /// The next piece; `None` after `Done` or an error.
    async fn next(
        &mut self,
        answer: &mut Answer,
        config: &Config,
    ) -> Option<Result<Piece, ApiError>> {
        while !self.done {
            let event = answer.next().await;
            match event {
                None | Some(Ok(UpstreamEvent::End)) => match self.reader.end() {
                    Ending::Done(mut outcome) => {
                        self.done = true;
                        if outcome.calls.is_empty() && !self.wants_json {
                            outcome.text.push_str(&sources_block(&self.citations));
                        }
                        return Some(Ok(Piece::Done(outcome)));
                    }
                    Ending::Correct(prompt) => {
                        self.prompt.push_str(&self.completion);
                        self.prompt.push_str(&prompt);
                        if let Err(e) = answer.follow_up(config, prompt).await {
                            self.done = true;
                            return Some(Err(e.into()));
                        }
                    }
                },
                Some(Ok(UpstreamEvent::Delta(d))) => {
                    self.completion.push_str(&d);
                    let shown = self.reader.text(&d);
                    if !shown.is_empty() {
                        return Some(Ok(Piece::Content(shown)));
                    }
                }
                Some(Ok(UpstreamEvent::ReasoningDelta(d))) => {
                    self.completion.push_str(&d);
                    return Some(Ok(Piece::Reasoning(d)));
                }
                Some(Ok(UpstreamEvent::Citations(c))) => self.citations = c,
                Some(Ok(UpstreamEvent::Conversation { .. })) => {}
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e.into()));
                }
            }
        }
        None
    }
}

/// The whole answer in one body. A bug that panics while it is collected
/// (where panics unwind: the server) costs the request a 500, as in
/// `in_own_task`, but here the conversation is still deleted first: the
/// answer is only lent to `collect`.
async fn collect_answer(
    mut answer: Answer,
    request: ChatRequest,
    plan: &Plan,
    config: &Config,
    prompt: (String, u32),
) -> Result<Response, ApiError> {
    let collected = std::panic::AssertUnwindSafe(collect(&mut answer, plan, config, prompt))
        .catch_unwind()
        .await;
    answer.cleanup().await;
    let Ok(collected) = collected else {
        tracing::error!(
            chat_id = answer.chat_id().unwrap_or_default(),
            "collecting the answer panicked"
        );
        return Err(ApiError::bug());
    };
    let (reply, mut content, reasoning, outcome) = collected?;
    content.push_str(&outcome.text);
    let id = completion_id(answer.chat_id());
    let body = Completion {
        id: &id,
        model: &request.model,
        created: unix_seconds(),
        content: &content,
        reasoning: &reasoning,
        tool_calls: &outcome.calls,
        finish_reason: outcome.finish.as_str(),
        usage: reply.usage(),
        conversation_id: answer.is_kept().then_some(answer.chat_id()).flatten(),
    }
    .to_json();
    Ok(Json(body).into_response())
}

/// Read the reply to its end: the reply (for usage), the content, the
/// reasoning and how it ended.
async fn collect<'p>(
    answer: &mut Answer,
    plan: &'p Plan,
    config: &Config,
    prompt: (String, u32),
) -> Result<(Reply<'p>, String, String, Outcome), ApiError> {
    let mut reply = Reply::new(plan, prompt);
    let (mut content, mut reasoning) = (String::new(), String::new());
    let mut ending = None;
    while let Some(piece) = reply.next(answer, config).await {
        match piece? {
            Piece::Content(text) => content.push_str(&text),
            Piece::Reasoning(text) => reasoning.push_str(&text),
            Piece::Done(outcome) => ending = Some(outcome),
        }
    }
    let outcome =
        ending.ok_or_else(|| ApiError::Internal("the reply ended without an outcome".into()))?;
    Ok((reply, content, reasoning, outcome))
}

/// The stream is fed by a task that owns the answer; the response body ends
/// only when that task has finished, cleanup included.
///
/// A bug that panics while the stream is produced (where panics unwind: the
/// server; Lambda's build aborts) still ends the stream as an upstream
/// failure does, with an error chunk and `[DONE]`, and the conversation is
/// still deleted: the task keeps the answer, the encoder and the sender, and
/// only lends them to `produce`.
fn stream_answer(
    answer: Answer,
    request: ChatRequest,
    plan: Plan,
    config: std::sync::Arc<Config>,
    prompt: (String, u32),
) -> Response {
    let (out, body) = super::Outgoing::new(32);
    let encoder = ChunkEncoder::new(
        completion_id(answer.chat_id()),
        request.model.clone(),
        answer
            .is_kept()
            .then(|| answer.chat_id().map(str::to_string))
            .flatten(),
    );
    let include_usage = request.include_usage;
    super::spawn(async move {
        let mut answer = answer;
        let reply = Reply::new(&plan, prompt);
        let produced = std::panic::AssertUnwindSafe(produce(
            &mut answer,
            reply,
            &config,
            &encoder,
            include_usage,
            &out,
        ))
        .catch_unwind()
        .await;
        if produced.is_err() {
            tracing::error!(
                chat_id = answer.chat_id().unwrap_or_default(),
                "the stream's producer panicked"
            );
            out.deliver(encoder.error(&ApiError::bug())).await;
            answer.cleanup().await;
            if out.deliver(ChunkEncoder::done()).await {
                out.finish();
            }
        }
    });
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
    answer: &mut Answer,
    mut reply: Reply<'_>,
    config: &Config,
    enc: &ChunkEncoder,
    include_usage: bool,
    out: &super::Outgoing,
) {
    let mut failure = None;
    let mut ending = Vec::new();
    let mut client_gone = !out.deliver(enc.role()).await;
    while !client_gone {
        let piece = tokio::select! {
            biased;
            _ = out.caller_gone() => { client_gone = true; break; }
            piece = reply.next(answer, config) => piece,
        };
        let frame = match piece {
            None => break,
            Some(Ok(Piece::Content(text))) => enc.content(&text),
            Some(Ok(Piece::Reasoning(text))) => enc.reasoning(&text),
            Some(Ok(Piece::Done(outcome))) => {
                // The end of the answer reaches the caller before the deletion
                // (which can take seconds on the agent upstream).
                if !outcome.text.is_empty() {
                    ending.push(enc.content(&outcome.text));
                }
                ending.extend(enc.tool_calls(&outcome.calls));
                ending.push(enc.finish(outcome.finish.as_str()));
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
            chat_id = answer.chat_id().unwrap_or_default(),
            "client went away mid-stream"
        );
        answer.cleanup().await;
        return;
    }
    // The deletion still happens inside the invocation, before the usage
    // chunk and `[DONE]` (the invocation lasts until `out` is dropped).
    let caller_there = out.deliver_all(ending).await;
    answer.cleanup().await;
    if !caller_there {
        return;
    }
    let mut tail = Vec::new();
    if failure.is_none() && include_usage {
        tail.push(enc.usage(reply.usage()));
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
