//! One answer from the upstream, from opening (with retries) to cleanup.
//!
//! Opening picks an account of the request's pool, sends the turn, and pulls
//! upstream events until the first one that is part of the answer, so a
//! failure before the first byte reaches the caller can still be retried on
//! another account. Two rules keep retries honest:
//! - a turn the upstream has accepted (it named the conversation) is never
//!   sent again elsewhere: what fails after that is the caller's answer;
//! - an account answers one chat at a time, so a busy account is not asked
//!   again at once: the request waits (up to `POOL_WAIT_MS`) for an account
//!   this process gives back, or retries a busy one after a jittered pause.
//!
//! Cleanup deletes the conversation the answer created unless the caller
//! keeps it, then gives the account back; callers run it before their
//! response ends, because Lambda freezes the environment once the invocation
//! completes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::config::Config;
use crate::credentials::TokenSet;
use crate::error::ApiError;
use crate::pool::local::{Cooling, DeadTokens, Lease, Leases};
use crate::pool::store::State;
use crate::pool::SharedPool;
use crate::redact::fingerprint;
use crate::upstream::{
    ChatTurn, EventStream, Turn, Unavailability, Upstream, UpstreamError, UpstreamEvent,
};

/// What the pool of one request is made of, besides its tokens.
pub struct Pool<'a> {
    pub dead: &'a DeadTokens,
    pub cooling: &'a Cooling,
    pub leases: &'a Arc<Leases>,
    /// The deployment's shared pool (`ACCOUNTS_TABLE`), when it has one.
    pub shared: Option<&'a Arc<SharedPool>>,
}

impl<'a> Pool<'a> {
    /// The pool these credentials keep.
    pub fn of(credentials: &'a crate::credentials::Credentials) -> Self {
        Self {
            dead: credentials.dead_tokens(),
            cooling: credentials.cooling(),
            leases: credentials.leases(),
            shared: credentials.shared_pool(),
        }
    }
}

pub struct Answer {
    upstream: Arc<dyn Upstream>,
    token: String,
    chat_id: Option<String>,
    /// The assistant message the answer is (what speech synthesis reads).
    message_id: Option<String>,
    keep: bool,
    buffered: VecDeque<UpstreamEvent>,
    stream: EventStream,
    /// Longest silence between events; `None` when the adapter watches progress.
    idle_timeout: Option<Duration>,
    deadline: Instant,
    cleaned: bool,
    /// The account, held until the cleanup is done.
    lease: Option<Lease>,
    /// The pool's cool-downs: an account limited mid-answer cools too.
    cooling: Option<Cooling>,
    /// The shared pool, told of that too.
    shared: Option<Arc<SharedPool>>,
}

/// Why one attempt failed, and whether the upstream had taken the turn.
pub(crate) struct Failed {
    pub error: UpstreamError,
    pub accepted: bool,
}

/// The pause before asking a busy account again: 0.5 s doubling per refusal,
/// at most 4 s, times a random factor in [0.5, 1.5) so waiting requests spread.
fn busy_pause(refusals: u32) -> Duration {
    let base = Duration::from_millis(500) * 2u32.pow(refusals.saturating_sub(1).min(3));
    base.mul_f64(rand::rng().random_range(0.5..1.5))
}

/// Run `attempt` on an account of the request's pool, and hand back its
/// result with the account still held. A failure that is the token's moves
/// on: a dead token to the next one, a busy account to the next free one
/// (waiting for one up to `config.pool_wait`). Other failures are retried up
/// to `config.retries` times, on a different token when there are several (a
/// continued conversation may try every token once, since only its owner can
/// answer); a request the upstream refuses, or a turn it accepted, is not
/// retried.
pub(crate) async fn on_an_account<T, F, Fut>(
    upstream: &Arc<dyn Upstream>,
    config: &Config,
    set: &TokenSet,
    pool: Pool<'_>,
    continuing: bool,
    mut attempt: F,
) -> Result<(T, Lease), ApiError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, Failed>>,
{
    let describe =
        |e: UpstreamError| ApiError::from_upstream(e, upstream.name(), upstream.login_hint());
    // Accounts cooling (throttled, out of credits, ...) are not asked at
    // all: the upstream would refuse them again.
    let mut cooled: Vec<(String, Duration, Unavailability)> = Vec::new();
    let mut candidates: Vec<(String, String)> = set
        .tokens
        .iter()
        .map(|t| (fingerprint(t), t.clone()))
        .collect();
    let (mut rejected, mut transient): (Vec<String>, usize) = (Vec::new(), 0);
    // What the other environments found (dead, cooling) counts here too.
    if let Some(shared) = pool.shared {
        let fps: Vec<String> = candidates.iter().map(|(fp, _)| fp.clone()).collect();
        shared.sync(&fps, pool.dead, pool.cooling).await;
        candidates.retain(|(fp, _)| {
            let dead = pool.dead.contains(fp);
            if dead {
                rejected.push(fp.clone());
            }
            !dead
        });
    }
    candidates.retain(|(fp, _)| match pool.cooling.remaining(fp) {
        Some((left, class)) => {
            cooled.push((fp.clone(), left, class));
            false
        }
        None => true,
    });
    let mut transient_budget = 1 + config.retries as usize;
    if continuing {
        transient_budget = transient_budget.max(candidates.len());
    }
    let started = Instant::now();
    let wait_until = started + config.pool_wait;
    // Accounts the upstream called busy, or another environment holds: when
    // to ask again, and how often refused.
    let mut busy: HashMap<String, (Instant, u32)> = HashMap::new();
    let mut last_error: Option<UpstreamError> = None;
    let mut next = 0usize;
    while !candidates.is_empty() {
        if crate::caller::is_gone() {
            tracing::info!(
                "the caller went away while waiting for an account: nothing sent upstream"
            );
            return Err(ApiError::Unavailable(
                "The caller went away before an account was free.".into(),
            ));
        }
        let returned = pool.leases.returned();
        tokio::pin!(returned);
        returned.as_mut().enable();
        let now = Instant::now();
        let free = (0..candidates.len())
            .map(|i| (next + i) % candidates.len())
            .find_map(|i| {
                let fp = &candidates[i].0;
                if busy.get(fp).is_some_and(|(at, _)| *at > now) {
                    return None;
                }
                if upstream.answers_concurrently() {
                    return Some((i, Lease::unheld()));
                }
                pool.leases.try_take(fp).map(|lease| (i, lease))
            });
        let Some((index, mut lease)) = free else {
            // Every account is answering (here or elsewhere): wait for one.
            if now >= wait_until {
                break;
            }
            let retry_busy = busy
                .values()
                .map(|(at, _)| *at)
                .filter(|at| *at > now)
                .min();
            let wake = retry_busy.map_or(wait_until, |at| at.min(wait_until));
            tokio::select! {
                _ = returned => {}
                _ = sleep_until(wake) => {}
                _ = crate::caller::gone() => {}
            }
            continue;
        };
        if let (Some(shared), false) = (pool.shared, upstream.answers_concurrently()) {
            let fp = candidates[index].0.clone();
            match shared.lease(&fp, upstream.id()).await {
                Ok(Some(held)) => lease = lease.with_shared(held),
                Ok(None) => {
                    // Answering in another environment: asked again soon.
                    drop(lease);
                    let refusals = busy.get(&fp).map_or(0, |(_, n)| *n) + 1;
                    busy.insert(
                        fp,
                        (Instant::now() + crate::pool::held_pause(refusals), refusals),
                    );
                    next = index + 1;
                    continue;
                }
                Err(e) => tracing::warn!(
                    token = %fp,
                    error = %e,
                    "the accounts table cannot lease: answering with this process's lease alone"
                ),
            }
        }
        // Held: how long this request waited for it.
        crate::metrics::lease_waited(started.elapsed());
        let (fp, token) = candidates[index].clone();
        let failed = match attempt(token).await {
            Ok(done) => return Ok((done, lease)),
            Err(failed) => failed,
        };
        lease.release().await;
        let error = failed.error;
        tracing::warn!(
            upstream = upstream.name(),
            token = %fp,
            error = %error,
            accepted = failed.accepted,
            "upstream failed before the first byte"
        );
        if failed.accepted || !error.is_retryable() {
            return Err(describe(error));
        }
        match &error {
            UpstreamError::TokenRejected { fingerprint, .. }
            | UpstreamError::InvalidToken { fingerprint, .. } => {
                pool.dead.remember(fingerprint);
                if let Some(shared) = pool.shared {
                    shared
                        .mark(
                            fingerprint,
                            upstream.id(),
                            State::Dead,
                            pool.dead.memory(),
                            &error.to_string(),
                        )
                        .await;
                }
                rejected.push(fingerprint.clone());
                candidates.remove(index);
                busy.remove(&fp);
            }
            UpstreamError::Cooling {
                fingerprint,
                class,
                retry_after,
                ..
            } => {
                if *class == Unavailability::EgressRefused {
                    tracing::error!(
                        upstream = upstream.name(),
                        token = %fingerprint,
                        "the account's region refused this deployment's network: run the gateway \
                         where that region answers, or through a proxy; the token is not dead"
                    );
                }
                pool.cooling.cool(fingerprint, *class, *retry_after);
                if let Some(shared) = pool.shared {
                    shared
                        .mark(
                            fingerprint,
                            upstream.id(),
                            State::Cooling(*class),
                            *retry_after,
                            &error.to_string(),
                        )
                        .await;
                }
                cooled.push((fingerprint.clone(), *retry_after, *class));
                candidates.remove(index);
                busy.remove(&fp);
            }
            UpstreamError::Busy { .. } => {
                let refusals = busy.get(&fp).map_or(0, |(_, n)| *n) + 1;
                busy.insert(fp, (Instant::now() + busy_pause(refusals), refusals));
                next = index + 1;
            }
            _ => {
                transient += 1;
                next = index + 1;
                if transient >= transient_budget {
                    return Err(describe(error));
                }
                tokio::time::sleep(config.retry_backoff * transient as u32).await;
            }
        }
        last_error = Some(error);
    }
    let total = set.tokens.len();
    crate::metrics::lease_waited(started.elapsed());
    crate::metrics::unanswerable(
        upstream.id(),
        if !candidates.is_empty() {
            "busy"
        } else if !cooled.is_empty() {
            "cooling"
        } else {
            "dead"
        },
    );
    if !candidates.is_empty() {
        // Waited as long as allowed, and every live account stayed busy.
        let retry_after = config.pool_wait.as_secs().clamp(1, 30);
        return Err(ApiError::PoolBusy {
                message: format!(
                    "Every {} account of this request ({} of {total} tokens; {} rejected) stayed busy with \
                     another answer for {} s. Each account answers one request at a time: retry after \
                     {retry_after} s, or add tokens.",
                    upstream.name(),
                    candidates.len(),
                    rejected.len(),
                    config.pool_wait.as_secs_f32(),
                ),
                retry_after,
            });
    }
    if !cooled.is_empty() {
        return Err(all_cooling(upstream.name(), &cooled, rejected.len(), total));
    }
    // Every token was dead.
    if set.from_secret {
        return Err(ApiError::Unavailable(format!(
            "No {} account could answer: all {total} tokens tried were rejected upstream (dead). \
                 Refresh the tokens.",
            upstream.name(),
        )));
    }
    if rejected.len() > 1 {
        return Err(ApiError::Unauthorized(format!(
            "Every {} token was rejected upstream ({}). {}",
            upstream.name(),
            rejected.join(", "),
            upstream.login_hint()
        )));
    }
    match last_error {
        Some(error) => Err(describe(error)),
        // Known dead by the pool before any was asked.
        None if !rejected.is_empty() => Err(ApiError::Unauthorized(format!(
            "Every {} token of this request was rejected upstream in the last {} minutes ({}). {}",
            upstream.name(),
            pool.dead.memory().as_secs() / 60,
            rejected.join(", "),
            upstream.login_hint()
        ))),
        None => Err(describe(UpstreamError::Transport("no token to try".into()))),
    }
}

/// Every account left is cooling: a 429 with the soonest `Retry-After` when
/// some are only rate limited or at their plan's limit (they come back by
/// themselves), else a 503 that says why.
fn all_cooling(
    name: &str,
    cooled: &[(String, Duration, Unavailability)],
    dead: usize,
    total: usize,
) -> ApiError {
    let mut classes: Vec<&str> = cooled.iter().map(|(_, _, c)| c.as_str()).collect();
    classes.sort_unstable();
    classes.dedup();
    let why = classes.join(", ");
    let waiting = cooled
        .iter()
        .filter(|(_, _, c)| matches!(c, Unavailability::Throttled | Unavailability::PlanWindow))
        .map(|(_, left, _)| left.as_secs().max(1))
        .min();
    let message = format!(
        "No {name} account can answer now: {} of {total} are {why}{}.",
        cooled.len(),
        if dead > 0 {
            format!(", {dead} rejected")
        } else {
            String::new()
        }
    );
    match waiting {
        Some(retry_after) => ApiError::RateLimited {
            message: format!("{message} Retry after {retry_after} s, or add accounts."),
            retry_after,
        },
        None => ApiError::Unavailable(format!(
            "{message} Top up or replace those accounts, or add others."
        )),
    }
}

impl Answer {
    /// Open an answer on an account of the pool (`on_an_account`).
    pub async fn open(
        upstream: Arc<dyn Upstream>,
        config: &Config,
        set: &TokenSet,
        pool: Pool<'_>,
        turn: &Turn<'_>,
        keep: bool,
    ) -> Result<Answer, ApiError> {
        let cooling = pool.cooling.clone();
        let shared = pool.shared.cloned();
        let (mut answer, lease) = on_an_account(
            &upstream,
            config,
            set,
            pool,
            turn.continues().is_some(),
            |token| Self::open_once(upstream.clone(), config, token, turn, keep),
        )
        .await?;
        answer.hold(lease);
        answer.cooling = Some(cooling);
        answer.shared = shared;
        Ok(answer)
    }

    pub(crate) async fn open_once(
        upstream: Arc<dyn Upstream>,
        config: &Config,
        token: String,
        turn: &Turn<'_>,
        keep: bool,
    ) -> Result<Answer, Failed> {
        let total_deadline = Instant::now() + config.total_timeout;
        let first_byte_deadline = Instant::now() + config.first_byte_timeout;
        // Refused before any stream: the turn was not accepted.
        let refused = |error| Failed {
            error,
            accepted: false,
        };
        let stream = match timeout_at(first_byte_deadline, upstream.chat(&token, turn)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(refused(error)),
            Err(_) => {
                return Err(refused(UpstreamError::Timeout(format!(
                    "no answer within {} s",
                    config.first_byte_timeout.as_secs_f32()
                ))))
            }
        };
        let watches = upstream.watches_progress();
        let mut answer = Answer {
            upstream: upstream.clone(),
            token: token.clone(),
            chat_id: turn.continues().map(str::to_string),
            message_id: None,
            keep: keep || turn.continues().is_some(),
            buffered: VecDeque::new(),
            stream,
            idle_timeout: (!watches).then_some(config.idle_timeout),
            deadline: total_deadline,
            cleaned: false,
            lease: None,
            cooling: None,
            shared: None,
        };
        match answer.prime(first_byte_deadline, config).await {
            Ok(()) => Ok(answer),
            Err(failed) => {
                answer.cleanup().await;
                Err(Failed {
                    error: upstream.explain_failure(&token, failed.error).await,
                    accepted: failed.accepted,
                })
            }
        }
    }

    /// Read until the first event that belongs to the answer itself (it is
    /// kept for `next`), noting the conversation on the way.
    async fn prime(&mut self, first_byte_deadline: Instant, config: &Config) -> Result<(), Failed> {
        // An adapter that watches progress says itself when the wait is over.
        let deadline = if self.idle_timeout.is_none() {
            self.deadline
        } else {
            first_byte_deadline.min(self.deadline)
        };
        let mut accepted = false;
        loop {
            let error = match timeout_at(deadline, self.stream.next()).await {
                Err(_) => UpstreamError::Timeout(format!(
                    "no answer within {} s",
                    config.first_byte_timeout.as_secs_f32()
                )),
                Ok(None) => {
                    self.buffered.push_back(UpstreamEvent::End);
                    return Ok(());
                }
                Ok(Some(Ok(UpstreamEvent::Conversation {
                    chat_id,
                    message_id,
                }))) => {
                    self.chat_id = Some(chat_id);
                    self.message_id = message_id.or(self.message_id.take());
                    accepted = true;
                    continue;
                }
                // A keep-alive is not the first byte of the answer.
                Ok(Some(Ok(UpstreamEvent::Alive))) => continue,
                Ok(Some(Ok(event))) => {
                    self.buffered.push_back(event);
                    return Ok(());
                }
                Ok(Some(Err(e))) => e,
            };
            return Err(Failed { error, accepted });
        }
    }

    /// Send another turn in this answer's conversation, on the same account
    /// (still leased), and read its answer next: the correction turn of a
    /// tool call or JSON answer that did not hold. The previous turn must
    /// have ended. Not retried elsewhere: only this account has the
    /// conversation.
    pub async fn follow_up(
        &mut self,
        config: &Config,
        prompt: String,
    ) -> Result<(), UpstreamError> {
        let Some(chat_id) = self.chat_id.clone() else {
            return Err(UpstreamError::Protocol(
                "the upstream named no conversation to continue".into(),
            ));
        };
        // A correction refers to the files the conversation already has.
        let turn = ChatTurn {
            prompt,
            conversation_id: Some(chat_id),
            ..ChatTurn::default()
        };
        // The previous turn is over: let go of its connection first, so the
        // upstream sees the account free.
        self.buffered.clear();
        self.stream = futures_util::stream::empty().boxed();
        let mut refusals = 0;
        loop {
            let first_byte_deadline =
                (Instant::now() + config.first_byte_timeout).min(self.deadline);
            let text = Turn::Text(&turn);
            let result =
                match timeout_at(first_byte_deadline, self.upstream.chat(&self.token, &text)).await
                {
                    Ok(Ok(stream)) => {
                        self.stream = stream;
                        self.prime(first_byte_deadline, config)
                            .await
                            .map_err(|f| f.error)
                    }
                    Ok(Err(error)) => Err(error),
                    Err(_) => Err(UpstreamError::Timeout(format!(
                        "no answer to the correction within {} s",
                        config.first_byte_timeout.as_secs_f32()
                    ))),
                };
            // The account may still count the previous turn as running for a
            // moment after its end: a busy refusal is asked again, briefly.
            let busy = match &result {
                Err(UpstreamError::Busy { .. }) => true,
                Err(UpstreamError::Api { message, .. }) => {
                    crate::upstream::is_busy_message(message)
                }
                _ => false,
            };
            if !busy || refusals >= 3 {
                return result;
            }
            refusals += 1;
            tokio::time::sleep(busy_pause(refusals)).await;
        }
    }

    pub fn chat_id(&self) -> Option<&str> {
        self.chat_id.as_deref()
    }

    pub(crate) fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    /// The account's token, for further calls on the same account.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Hold the account until the cleanup.
    pub(crate) fn hold(&mut self, lease: Lease) {
        self.lease = Some(lease);
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
            let deadline = match self.idle_timeout {
                Some(idle) => self.deadline.min(Instant::now() + idle),
                None => self.deadline,
            };
            return match timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(UpstreamEvent::Conversation { message_id, .. }))) => {
                    self.message_id = message_id.or(self.message_id.take());
                    continue;
                }
                // Still there: the idle timer starts again.
                Ok(Some(Ok(UpstreamEvent::Alive))) => continue,
                // Throttled or out of its plan mid-answer: the account is
                // not asked again until its time is up, as if it had said so
                // before the first byte.
                Ok(Some(Err(error))) => {
                    if let (
                        UpstreamError::Cooling {
                            fingerprint,
                            class,
                            retry_after,
                            ..
                        },
                        Some(cooling),
                    ) = (&error, &self.cooling)
                    {
                        tracing::info!(token = %fingerprint, class = ?class, "account limited mid-answer: cooling it");
                        cooling.cool(fingerprint, *class, *retry_after);
                        if let Some(shared) = &self.shared {
                            shared
                                .mark(
                                    fingerprint,
                                    self.upstream.id(),
                                    State::Cooling(*class),
                                    *retry_after,
                                    &error.to_string(),
                                )
                                .await;
                        }
                    }
                    Some(Err(error))
                }
                Ok(other) => other,
                Err(_) if Instant::now() >= self.deadline => Some(Err(UpstreamError::Timeout(
                    "the answer took longer than the longest allowed (UPSTREAM_TOTAL_TIMEOUT_MS)"
                        .into(),
                ))),
                Err(_) => Some(Err(UpstreamError::Timeout(format!(
                    "the answer stalled for {} s",
                    self.idle_timeout.unwrap_or_default().as_secs_f32()
                )))),
            };
        }
    }

    /// Delete the upstream conversation unless it is kept, then give the
    /// account back. Idempotent; failures are logged, since the caller's answer
    /// is already complete.
    pub async fn cleanup(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        // Stop reading upstream first: dropping the stream closes the connection.
        self.stream = futures_util::stream::empty().boxed();
        let lease = self.lease.take();
        if let (false, Some(chat_id)) = (self.keep, self.chat_id.clone()) {
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
        if let Some(lease) = lease {
            lease.release().await;
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
