//! What this execution environment knows of the pool of upstream accounts:
//! tokens it has seen rejected recently (skipped for `memory`), accounts
//! cooling after a throttle, an exhausted plan or credits (skipped until
//! their time is up), and the tokens it is answering with right now (leases).
//!
//! Each upstream account answers one chat at a time. Within one process (the
//! self-hosted server, a local server, a Lambda environment with concurrency)
//! a request that finds every account of its pool answering waits for a lease
//! to come back instead of sending a turn the upstream would refuse as busy.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::sync::Cache;
use tokio::sync::Notify;

use crate::upstream::Unavailability;

pub struct DeadTokens {
    seen: Cache<String, ()>,
    memory: Duration,
}

impl DeadTokens {
    pub fn new(memory: Duration) -> Self {
        Self {
            seen: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(memory)
                .build(),
            memory,
        }
    }

    pub fn memory(&self) -> Duration {
        self.memory
    }

    pub fn remember(&self, fingerprint: &str) {
        self.seen.insert(fingerprint.to_string(), ());
    }

    pub fn contains(&self, fingerprint: &str) -> bool {
        self.seen.contains_key(fingerprint)
    }
}

/// Accounts (by token fingerprint) that cannot answer until a time: a rate
/// limit, an exhausted plan window or credits, a block, a refused network.
/// On tokio's clock, so tests can pass the time. A clone is a handle on the
/// same accounts (an answer keeps one, to cool its account if it is limited
/// mid-answer).
#[derive(Clone, Default)]
pub struct Cooling {
    until: std::sync::Arc<Mutex<HashMap<String, (tokio::time::Instant, Unavailability)>>>,
}

impl Cooling {
    /// Most accounts remembered; past it, the ones whose time is up go first.
    const MAX: usize = 10_000;

    pub fn cool(&self, fingerprint: &str, class: Unavailability, duration: Duration) {
        let now = tokio::time::Instant::now();
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if until.len() >= Self::MAX {
            until.retain(|_, (at, _)| *at > now);
        }
        if until.len() < Self::MAX {
            until.insert(fingerprint.to_string(), (now + duration, class));
        }
    }

    /// How long the account still cools, and why; `None` when it may answer.
    pub fn remaining(&self, fingerprint: &str) -> Option<(Duration, Unavailability)> {
        let now = tokio::time::Instant::now();
        let until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        until
            .get(fingerprint)
            .filter(|(at, _)| *at > now)
            .map(|(at, class)| (*at - now, *class))
    }
}

/// The accounts (by token fingerprint) answering in this process right now.
#[derive(Default)]
pub struct Leases {
    held: Mutex<HashSet<String>>,
    returned: Notify,
}

impl Leases {
    /// The account, if no answer in this process is using it.
    pub fn try_take(self: &Arc<Self>, fingerprint: &str) -> Option<Lease> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.insert(fingerprint.to_string()).then(|| Lease {
            leases: Some(self.clone()),
            fingerprint: fingerprint.to_string(),
            shared: None,
        })
    }

    /// Resolves when a lease comes back. Create it (and `enable` it) before
    /// looking for a free account, so a return in between is not missed.
    pub fn returned(&self) -> tokio::sync::futures::Notified<'_> {
        self.returned.notified()
    }

    /// Whether an answer in this process holds the account.
    pub fn is_held(&self, fingerprint: &str) -> bool {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.contains(fingerprint)
    }
}

/// One account in use; given back when dropped (after the answer's cleanup).
pub struct Lease {
    /// `None` for a key that answers any number of requests at once (the
    /// paid platform's): nothing is held.
    leases: Option<Arc<Leases>>,
    fingerprint: String,
    /// The account's lease in the shared table, when there is one.
    shared: Option<super::SharedLease>,
}

impl Lease {
    /// A lease that holds nothing, for an upstream whose accounts answer
    /// concurrently (`Upstream::answers_concurrently`).
    pub fn unheld() -> Self {
        Self {
            leases: None,
            fingerprint: String::new(),
            shared: None,
        }
    }

    /// Held in the shared table too.
    pub fn with_shared(mut self, shared: super::SharedLease) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Give the account back: in the table first (awaited, so it is done
    /// before the response ends), then in this process.
    pub async fn release(mut self) {
        if let Some(shared) = self.shared.take() {
            shared.release().await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(leases) = &self.leases else {
            return;
        };
        let mut held = leases.held.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.fingerprint);
        drop(held);
        leases.returned.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_for_a_while() {
        let d = DeadTokens::new(Duration::from_millis(50));
        d.remember("ab12cd34");
        assert!(d.contains("ab12cd34") && !d.contains("other000"));
        std::thread::sleep(Duration::from_millis(120));
        assert!(!d.contains("ab12cd34"));
    }

    #[tokio::test]
    async fn a_lease_is_exclusive_and_its_return_wakes_waiters() {
        let leases = Arc::new(Leases::default());
        let lease = leases.try_take("a").unwrap();
        assert!(leases.try_take("a").is_none() && leases.is_held("a"));
        let other = leases.try_take("b");
        assert!(other.is_some());
        let waiter = {
            let leases = leases.clone();
            tokio::spawn(async move {
                loop {
                    let returned = leases.returned();
                    tokio::pin!(returned);
                    returned.as_mut().enable();
                    if let Some(l) = leases.try_take("a") {
                        return l.fingerprint.clone();
                    }
                    returned.await;
                }
            })
        };
        tokio::task::yield_now().await;
        drop(lease);
        assert_eq!(waiter.await.unwrap(), "a");
        assert!(
            !leases.is_held("a"),
            "the waiter's lease was dropped in turn"
        );
    }
}
