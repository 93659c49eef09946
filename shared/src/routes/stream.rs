//! One streamed answer, whatever the door: the task that owns the reply
//! and feeds the response body, in the one order every door keeps.
//!
//! 1. The door's opening (chat's role chunk, `message_start`,
//!    `response.created`).
//! 2. Each piece as the door says it, with a keep-alive every `KEEPALIVE`
//!    the answer is silent (never cancelling the read it waits on).
//! 3. The end of the answer (or the failure, in the door's words), which
//!    reaches the caller before the cleanup: the deletion can take seconds
//!    on the agent upstream.
//! 4. The cleanup (the upstream conversation deleted, the account given
//!    back), inside the invocation: Lambda freezes the environment once the
//!    body ends, and it ends only when this task has finished.
//! 5. The door's close (chat's usage chunk and `[DONE]`, `message_stop`),
//!    and the body marked whole.
//!
//! A caller who goes away or stops reading ends the stream at once, and
//! the cleanup still happens. A bug that panics while the stream is made
//! (where panics unwind: the server; Lambda's build aborts) still ends it
//! as an upstream failure does, and the cleanup still happens: the task
//! keeps the reply, the dialect and the sender, and only lends them.

use bytes::Bytes;
use futures_util::FutureExt;

use std::time::Duration;

use super::Outgoing;
use crate::config::Config;
use crate::conversation::{StopReason, TokenUsage, ToolCall};
use crate::error::ApiError;
use crate::reply::{Piece, Reply};

/// What a door says at each step of a stream. An empty `Bytes` says
/// nothing.
pub(crate) trait Dialect: Send + 'static {
    /// What opens the stream.
    fn start(&mut self, reply: &Reply) -> Bytes;
    /// A piece before the end (never `Piece::Done`).
    fn piece(&mut self, piece: Piece) -> Bytes;
    /// The end of the answer: the last text and whole calls (the
    /// emulation's), how it stopped, what it cost.
    fn end(&mut self, text: &str, calls: &[ToolCall], stop: StopReason, usage: TokenUsage)
        -> Bytes;
    /// A failure after the first byte.
    fn failed(&mut self, e: &ApiError) -> Bytes;
    /// What closes the stream once the answer is cleaned up.
    fn close(&mut self, failed: bool, usage: TokenUsage) -> Bytes;
    /// Sent while the answer is silent.
    fn keepalive() -> Bytes;
}

/// How long a stream may be silent before a keep-alive is sent: well
/// under CloudFront's 60-second origin read timeout and the idle timeouts
/// of proxies, so a model that thinks (or queues) for minutes is not cut.
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(15);

/// What waiting for a reply's next piece came to.
enum Waited {
    Piece(Option<Result<crate::reply::Piece, ApiError>>),
    /// The caller went away, or stopped reading.
    CallerGone,
}

/// The reply's next piece, with `keepalive()` sent each `KEEPALIVE` the
/// reply is silent (the piece's future is kept across keep-alives, never
/// cancelled half-read).
async fn next_piece(
    reply: &mut crate::reply::Reply,
    config: &Config,
    out: &Outgoing,
    keepalive: fn() -> bytes::Bytes,
) -> Waited {
    let next = reply.next(config);
    tokio::pin!(next);
    loop {
        tokio::select! {
            biased;
            _ = out.caller_gone() => return Waited::CallerGone,
            piece = &mut next => return Waited::Piece(piece),
            _ = tokio::time::sleep(KEEPALIVE) => {
                if !out.deliver(keepalive()).await {
                    return Waited::CallerGone;
                }
            }
        }
    }
}

/// A reply read whole (a request without `stream`): every piece, in order,
/// to `take`; then the cleanup, before the response, whatever happened. A
/// bug that panics while the reply is read (where panics unwind: the
/// server) costs the request a 500, as in `in_own_task`, after the cleanup:
/// the reply is only lent to the reading. An error piece, or a reply that
/// ends without its `Done`, is the request's error.
pub(crate) async fn whole(
    reply: &mut Reply,
    config: &Config,
    mut take: impl FnMut(Piece) + Send,
) -> Result<(), ApiError> {
    let read = std::panic::AssertUnwindSafe(async {
        let mut ended = false;
        while let Some(piece) = reply.next(config).await {
            let piece = piece?;
            ended |= matches!(piece, Piece::Done { .. });
            take(piece);
        }
        if ended {
            Ok(())
        } else {
            Err(ApiError::Internal(
                "the reply ended without an outcome".into(),
            ))
        }
    })
    .catch_unwind()
    .await;
    reply.cleanup().await;
    read.unwrap_or_else(|_| {
        tracing::error!(
            chat_id = reply.chat_id().unwrap_or_default(),
            "collecting the answer panicked"
        );
        Err(ApiError::bug())
    })
}

/// The streamed response for `reply`, said in `dialect`.
pub(crate) fn answer<D: Dialect>(
    reply: Reply,
    dialect: D,
    config: std::sync::Arc<Config>,
) -> axum::response::Response {
    let (out, body) = Outgoing::new(32);
    super::spawn(async move {
        let (mut reply, mut dialect) = (reply, dialect);
        let produced =
            std::panic::AssertUnwindSafe(produce(&mut reply, &mut dialect, &config, &out))
                .catch_unwind()
                .await;
        if produced.is_err() {
            tracing::error!(
                chat_id = reply.chat_id().unwrap_or_default(),
                "the stream's producer panicked"
            );
            let told = deliver(&out, dialect.failed(&ApiError::bug())).await;
            reply.cleanup().await;
            if told && deliver(&out, dialect.close(true, reply.usage())).await {
                out.finish();
            }
        }
    });
    super::event_stream(body)
}

/// `bytes` to the caller, unless there are none: false once the caller
/// has gone.
async fn deliver(out: &Outgoing, bytes: Bytes) -> bool {
    bytes.is_empty() || out.deliver(bytes).await
}

async fn produce<D: Dialect>(reply: &mut Reply, dialect: &mut D, config: &Config, out: &Outgoing) {
    let mut client_gone = !deliver(out, dialect.start(reply)).await;
    let mut ending = None;
    let mut failed = false;
    while !client_gone {
        let piece = match next_piece(reply, config, out, D::keepalive).await {
            Waited::CallerGone => {
                client_gone = true;
                break;
            }
            Waited::Piece(piece) => piece,
        };
        let frame = match piece {
            None => break,
            Some(Ok(Piece::Done { text, calls, stop })) => {
                ending = Some(dialect.end(&text, &calls, stop, reply.usage()));
                break;
            }
            Some(Ok(piece)) => dialect.piece(piece),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "upstream failed mid-stream");
                ending = Some(dialect.failed(&e));
                failed = true;
                break;
            }
        };
        client_gone = !deliver(out, frame).await;
    }
    if client_gone {
        tracing::info!(
            chat_id = reply.chat_id().unwrap_or_default(),
            "client went away mid-stream"
        );
        reply.cleanup().await;
        return;
    }
    let ending = ending.unwrap_or_else(|| {
        failed = true;
        dialect.failed(&ApiError::Internal(
            "the reply ended without an outcome".into(),
        ))
    });
    let caller_there = deliver(out, ending).await;
    reply.cleanup().await;
    if caller_there && deliver(out, dialect.close(failed, reply.usage())).await {
        out.finish();
    }
}
