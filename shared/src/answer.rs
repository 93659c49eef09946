//! One answer from the upstream, from opening (with retries) to cleanup.
//!
//! Opening pulls upstream events until the first one that is part of the
//! answer, so a failure before the first byte reaches the caller can still be
//! retried on another token. Cleanup deletes the conversation the answer created
//! unless the caller keeps it; callers run it before their response ends,
//! because Lambda freezes the environment once the invocation completes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::{timeout_at, Instant};

use crate::config::Config;
use crate::credentials::pool::DeadTokens;
use crate::credentials::{fingerprint, TokenSet};
use crate::error::ApiError;
use crate::upstream::{ChatTurn, EventStream, Upstream, UpstreamError, UpstreamEvent};

pub struct Answer {
    upstream: Arc<dyn Upstream>,
    token: String,
    chat_id: Option<String>,
    message_id: Option<String>,
    keep: bool,
    buffered: VecDeque<UpstreamEvent>,
    stream: EventStream,
    idle_timeout: Duration,
    deadline: Instant,
    cleaned: bool,
}

impl Answer {
    /// Open an answer. A failure that is the token's (dead, busy) moves on to
    /// the next token; other failures are retried up to `config.retries` times,
    /// on a different token when there are several (a continued conversation
    /// may try every token once, since only its owner can answer); a request
    /// the upstream refuses is not retried.
    pub async fn open(
        upstream: Arc<dyn Upstream>,
        config: &Config,
        set: &TokenSet,
        dead: &DeadTokens,
        turn: &ChatTurn,
        keep: bool,
    ) -> Result<Answer, ApiError> {
        let mut candidates = set.tokens.clone();
        let mut transient_budget = 1 + config.retries as usize;
        if turn.conversation_id.is_some() {
            transient_budget = transient_budget.max(candidates.len());
        }
        let (mut rejected, mut busy, mut transient) = (Vec::new(), 0usize, 0usize);
        let mut last_error: Option<UpstreamError> = None;
        let mut next = 0;
        while !candidates.is_empty() && transient < transient_budget {
            if transient > 0 && last_error.as_ref().is_some_and(|e| !e.is_tokens_fault()) {
                tokio::time::sleep(config.retry_backoff * transient as u32).await;
            }
            let index = next % candidates.len();
            let token = candidates[index].clone();
            let error = match Self::open_once(upstream.clone(), config, &token, turn, keep).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            tracing::warn!(
                upstream = upstream.name(),
                token = %fingerprint(&token),
                error = %error,
                "upstream failed before the first byte"
            );
            match &error {
                UpstreamError::TokenRejected { fingerprint, .. }
                | UpstreamError::InvalidToken { fingerprint, .. } => {
                    dead.remember(fingerprint);
                    rejected.push(fingerprint.clone());
                    candidates.remove(index);
                }
                UpstreamError::Busy { .. } => {
                    busy += 1;
                    candidates.remove(index);
                }
                e if !e.is_retryable() => return Err(error.into()),
                _ => {
                    transient += 1;
                    next = index + 1;
                }
            }
            last_error = Some(error);
        }
        let error =
            last_error.unwrap_or_else(|| UpstreamError::Transport("no token to try".into()));
        if !error.is_tokens_fault() {
            return Err(error.into());
        }
        // Every token was dead or busy.
        let total = set.tokens.len();
        if set.from_secret || busy > 0 {
            return Err(ApiError::Unavailable(format!(
                "No {} account could answer: of {total} tokens tried, {} were rejected upstream (dead) \
                 and {busy} busy with another answer.{}",
                upstream.name(),
                rejected.len(),
                if busy > 0 { " Retry shortly, or add tokens." } else { " Refresh the tokens." }
            )));
        }
        if rejected.len() > 1 {
            return Err(ApiError::Unauthorized(format!(
                "Every {} token was rejected upstream ({}). Log in to the web app again and send fresh tokens.",
                upstream.name(),
                rejected.join(", ")
            )));
        }
        Err(error.into())
    }

    async fn open_once(
        upstream: Arc<dyn Upstream>,
        config: &Config,
        token: &str,
        turn: &ChatTurn,
        keep: bool,
    ) -> Result<Answer, UpstreamError> {
        let first_byte_deadline = Instant::now() + config.first_byte_timeout;
        let timed_out = || {
            UpstreamError::Timeout(format!(
                "no answer within {} s",
                config.first_byte_timeout.as_secs_f32()
            ))
        };
        let stream = match timeout_at(first_byte_deadline, upstream.chat(token, turn)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(timed_out()),
        };
        let mut answer = Answer {
            upstream: upstream.clone(),
            token: token.to_string(),
            chat_id: turn.conversation_id.clone(),
            message_id: None,
            keep: keep || turn.conversation_id.is_some(),
            buffered: VecDeque::new(),
            stream,
            idle_timeout: config.idle_timeout,
            deadline: Instant::now() + config.total_timeout,
            cleaned: false,
        };
        // Prime: read until the first event that belongs to the answer itself.
        loop {
            let failure = match timeout_at(first_byte_deadline, answer.stream.next()).await {
                Err(_) => timed_out(),
                Ok(None) => {
                    answer.buffered.push_back(UpstreamEvent::End);
                    return Ok(answer);
                }
                Ok(Some(Ok(UpstreamEvent::Conversation {
                    chat_id,
                    message_id,
                }))) => {
                    answer.chat_id = Some(chat_id);
                    answer.message_id = message_id;
                    continue;
                }
                Ok(Some(Ok(event))) => {
                    answer.buffered.push_back(event);
                    return Ok(answer);
                }
                Ok(Some(Err(e))) => e,
            };
            answer.cleanup().await;
            return Err(upstream.explain_failure(token, failure).await);
        }
    }

    pub fn chat_id(&self) -> Option<&str> {
        self.chat_id.as_deref()
    }

    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    pub fn token_fingerprint(&self) -> String {
        fingerprint(&self.token)
    }

    /// Whether the conversation outlives this answer.
    pub fn is_kept(&self) -> bool {
        self.keep
    }

    /// The next event; `None` after the end. Silences longer than the idle
    /// timeout, and answers longer than the total timeout, are errors.
    pub async fn next(&mut self) -> Option<Result<UpstreamEvent, UpstreamError>> {
        if let Some(event) = self.buffered.pop_front() {
            return Some(Ok(event));
        }
        loop {
            let deadline = self.deadline.min(Instant::now() + self.idle_timeout);
            return match timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(UpstreamEvent::Conversation { .. }))) => continue,
                Ok(other) => other,
                Err(_) => Some(Err(UpstreamError::Timeout(format!(
                    "the answer stalled for {} s",
                    self.idle_timeout.as_secs_f32()
                )))),
            };
        }
    }

    /// Delete the upstream conversation unless it is kept. Idempotent; failures
    /// are logged, since the caller's answer is already complete.
    pub async fn cleanup(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        // Stop reading upstream first: dropping the stream closes the connection.
        self.stream = futures_util::stream::empty().boxed();
        if self.keep {
            return;
        }
        let Some(chat_id) = self.chat_id.clone() else {
            return;
        };
        match self
            .upstream
            .delete_conversation(&self.token, &chat_id)
            .await
        {
            Ok(()) => {
                tracing::info!(token = %fingerprint(&self.token), chat_id, "deleted upstream conversation")
            }
            Err(e) => tracing::warn!(
                token = %fingerprint(&self.token),
                chat_id,
                error = %e,
                "could not delete upstream conversation"
            ),
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if !self.cleaned && !self.keep && self.chat_id.is_some() {
            tracing::error!(
                chat_id = self.chat_id.as_deref().unwrap_or_default(),
                "answer dropped without cleanup; the upstream conversation is left behind"
            );
        }
    }
}
