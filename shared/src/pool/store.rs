//! The shared pool's store: one record per account (by token fingerprint),
//! with its lease and its state, and the operations the pool needs, each a
//! single conditional write or a read. `table.rs` is DynamoDB; `fake.rs` the
//! same rules in memory on tokio's clock.
//!
//! The rules every store keeps (DynamoDB's conditional writes make them
//! atomic):
//! - `lease` succeeds only if no other holder's lease is current (absent,
//!   expired, or already this holder's);
//! - `renew` and `release` act only on a lease the holder still has;
//! - `mark` always writes (the latest verdict wins) and never touches the
//!   lease;
//! - a lock is a lease on an item named for what it guards, not for an
//!   account (`lock:refresh:<account>`): the maintainer's, held while it
//!   spends a refresh token and stores the successor.

use std::time::Duration;

use async_trait::async_trait;

use crate::upstream::Unavailability;

/// Why an account cannot answer for a while.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Rejected upstream: skipped for `DEAD_TOKEN_MEMORY_SECONDS`.
    Dead,
    /// Throttled, out of credits, at its plan's limit, blocked, or refused
    /// for this network, until its time is up.
    Cooling(Unavailability),
}

impl State {
    /// The stored name (and the admin view's).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Dead => "dead",
            State::Cooling(Unavailability::Throttled) => "throttled",
            State::Cooling(Unavailability::NoCredits) => "exhausted",
            State::Cooling(Unavailability::PlanWindow) => "plan_window",
            State::Cooling(Unavailability::Blocked) => "blocked",
            State::Cooling(Unavailability::EgressRefused) => "egress_refused",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "dead" => State::Dead,
            "throttled" => State::Cooling(Unavailability::Throttled),
            "exhausted" => State::Cooling(Unavailability::NoCredits),
            "plan_window" => State::Cooling(Unavailability::PlanWindow),
            "blocked" => State::Cooling(Unavailability::Blocked),
            "egress_refused" => State::Cooling(Unavailability::EgressRefused),
            _ => return None,
        })
    }
}

/// A verdict on an account.
#[derive(Clone, Debug)]
pub struct Mark {
    pub upstream: String,
    pub state: State,
    /// How long it holds from now.
    pub for_ms: u64,
    /// What the upstream said, in words (never a token).
    pub reason: String,
    /// Who marked it.
    pub holder: String,
}

/// One account as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub account: String,
    pub upstream: String,
    pub holder: Option<String>,
    pub lease_until_ms: u64,
    pub state: Option<String>,
    pub state_until_ms: u64,
    /// When the state was set.
    pub since_ms: u64,
    pub reason: String,
}

impl Record {
    /// The state, while it lasts.
    pub fn current_state(&self, now_ms: u64) -> Option<State> {
        if self.state_until_ms <= now_ms {
            return None;
        }
        self.state.as_deref().and_then(State::parse)
    }

    /// The lease's holder, while it lasts.
    pub fn current_holder(&self, now_ms: u64) -> Option<&str> {
        (self.lease_until_ms > now_ms)
            .then_some(self.holder.as_deref())
            .flatten()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

#[async_trait]
pub trait AccountStore: Send + Sync {
    /// The store's clock (unix milliseconds; tokio's in the fake).
    fn now_ms(&self) -> u64;
    /// Take `account` for `holder` for `ttl`, unless another holder's lease
    /// is current: `Ok(false)` then.
    async fn lease(
        &self,
        account: &str,
        upstream: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Extend the lease for another `ttl`; `Ok(false)` when it is no longer
    /// `holder`'s.
    async fn renew(&self, account: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Give the lease back, if it is still `holder`'s.
    async fn release(&self, account: &str, holder: &str) -> Result<(), StoreError>;
    async fn mark(&self, account: &str, mark: &Mark) -> Result<(), StoreError>;
    /// The records of these accounts (the ones never written are absent).
    async fn read(&self, accounts: &[String]) -> Result<Vec<Record>, StoreError>;
    /// Every account record (the admin view).
    async fn all(&self) -> Result<Vec<Record>, StoreError>;
}
