//! Whether the caller of the request a task serves is still there.
//!
//! A request runs in its own task (`routes::in_own_task`) so that a caller
//! who leaves cannot cancel an upstream cleanup. But a request still waiting
//! for a free account has nothing upstream yet: if its caller has gone, it
//! should not take an account and have a turn answered for nobody. A server
//! drops the handler when the connection closes, which cancels the scope's
//! token; the account loop (`answer::on_an_account`) checks it before every
//! attempt and while it waits. On Lambda the handler is never dropped, so
//! nothing changes there. Leaf module: imports nothing of ours.

use std::future::Future;

use tokio_util::sync::CancellationToken;

tokio::task_local! {
    static GONE: CancellationToken;
}

/// Run `work` with `gone` as its caller's token.
pub(crate) fn scope<F: Future>(
    gone: CancellationToken,
    work: F,
) -> impl Future<Output = F::Output> {
    GONE.scope(gone, work)
}

/// Whether this task's caller has gone (never, outside a scope).
pub(crate) fn is_gone() -> bool {
    GONE.try_with(CancellationToken::is_cancelled)
        .unwrap_or(false)
}

/// Resolves when this task's caller goes (never, outside a scope).
pub(crate) async fn gone() {
    match GONE.try_with(CancellationToken::clone) {
        Ok(token) => token.cancelled_owned().await,
        Err(_) => std::future::pending().await,
    }
}
