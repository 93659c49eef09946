//! The pool of upstream accounts: which may answer now, and which is
//! answering.
//!
//! Two layers, one meaning:
//! - `local`: what this process knows (dead tokens, accounts cooling, the
//!   leases of the answers it is giving). Alone, it is the whole pool: the
//!   self-hosted server, header mode, the tests.
//! - `store`: a shared table (`ACCOUNTS_TABLE`, DynamoDB) that every Lambda
//!   environment and server replica of a deployment reads and writes, so
//!   that one answer per account at a time, a dead token skipped and an
//!   account left to cool hold across processes, not only within one. The
//!   table sits behind a small trait (`AccountStore`) with a fake on tokio's
//!   clock for the in-process tests.
//!
//! The local layer is always asked first (it is free, and it wakes waiters
//! of this process at once); the shared one confirms with a conditional
//! write, which DynamoDB makes atomic: two environments never both hold an
//! account. A lease is renewed while its answer lasts and expires by itself
//! when its environment is frozen or dies, so an account is never lost.
//! Reads are cached for half a second, so a mark made anywhere is seen
//! everywhere within a second.
//!
//! When the table cannot be reached, the pool answers with the local layer
//! alone and says so in the log: an outage of the table costs the guarantee
//! across processes (the upstream then refuses a busy account, as before),
//! never the answers.

pub mod local;
pub mod store;
pub mod table;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use crate::upstream::Unavailability;
use local::{Cooling, DeadTokens};
use store::{AccountStore, Mark, Record, State};

/// How long a read of the table is trusted.
const READ_CACHE: Duration = Duration::from_millis(500);
/// The longest a pool call to the table may take on the request path.
const STORE_CALL_LIMIT: Duration = Duration::from_secs(2);

/// The deployment's shared pool: the table, and who this process is in it.
pub struct SharedPool {
    store: Arc<dyn AccountStore>,
    /// This environment's id in the table (never a request's).
    holder: String,
    /// How long a lease lasts unless renewed (`POOL_LEASE_TTL_MS`).
    lease_ttl: Duration,
    records: Cache<String, Option<Record>>,
}

impl SharedPool {
    pub fn new(store: Arc<dyn AccountStore>, lease_ttl: Duration) -> Self {
        Self {
            store,
            holder: environment_id(),
            lease_ttl,
            records: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(READ_CACHE)
                .build(),
        }
    }

    /// This environment's id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn store(&self) -> &Arc<dyn AccountStore> {
        &self.store
    }

    /// Bring what the table knows of these accounts (dead, cooling) into
    /// the local layer, from a read at most `READ_CACHE` old.
    pub async fn sync(&self, fingerprints: &[String], dead: &DeadTokens, cooling: &Cooling) {
        let missing: Vec<String> = fingerprints
            .iter()
            .filter(|fp| !self.records.contains_key(*fp))
            .cloned()
            .collect();
        if !missing.is_empty() {
            match tokio::time::timeout(STORE_CALL_LIMIT, self.store.read(&missing)).await {
                Ok(Ok(records)) => {
                    for fp in &missing {
                        let record = records.iter().find(|r| &r.account == fp).cloned();
                        self.records.insert(fp.clone(), record);
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "accounts table unreadable: using this process's view of the pool");
                    return;
                }
                Err(_) => {
                    tracing::warn!(
                        "accounts table too slow: using this process's view of the pool"
                    );
                    return;
                }
            }
        }
        let now = self.store.now_ms();
        for fp in fingerprints {
            let Some(Some(record)) = self.records.get(fp) else {
                continue;
            };
            let Some(state) = record.current_state(now) else {
                continue;
            };
            let left = Duration::from_millis(record.state_until_ms.saturating_sub(now));
            match state {
                State::Dead => {
                    if !dead.contains(fp) {
                        dead.remember(fp);
                    }
                }
                State::Cooling(class) => {
                    if cooling.remaining(fp).is_none() {
                        cooling.cool(fp, class, left);
                    }
                }
            }
        }
    }

    /// Take the account in the table for this environment. `Ok(false)` when
    /// another environment holds it; `Err` when the table cannot say.
    pub async fn lease(
        self: &Arc<Self>,
        fingerprint: &str,
        upstream: &str,
    ) -> Result<Option<SharedLease>, String> {
        // The environment's id and this lease's own: a release from a
        // dropped lease's task can never give back the next one.
        let holder = format!(
            "{}#{}",
            self.holder,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let taken = tokio::time::timeout(
            STORE_CALL_LIMIT,
            self.store
                .lease(fingerprint, upstream, &holder, self.lease_ttl),
        )
        .await
        .map_err(|_| "the accounts table took too long to lease".to_string())?
        .map_err(|e| e.to_string())?;
        if !taken {
            return Ok(None);
        }
        let renewer = {
            let pool = self.clone();
            let fp = fingerprint.to_string();
            let holder = holder.clone();
            tokio::spawn(async move {
                // Renewed at a third of its life, so two missed renewals
                // still leave it held.
                let every = pool.lease_ttl / 3;
                loop {
                    tokio::time::sleep(every).await;
                    match pool.store.renew(&fp, &holder, pool.lease_ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::error!(token = %fp, "the account's lease was lost (it expired and was taken): \
                                another environment may now answer on it too");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(token = %fp, error = %e, "could not renew the account's lease")
                        }
                    }
                }
            })
        };
        Ok(Some(SharedLease {
            pool: self.clone(),
            fingerprint: fingerprint.to_string(),
            holder,
            renewer: Some(renewer),
        }))
    }

    /// Hold the lock `name` (an item of the table that is no account),
    /// waiting up to `wait` for another holder to let go; `Ok(None)` when it
    /// did not. Renewed while held, like an account's lease.
    pub async fn lock(
        self: &Arc<Self>,
        name: &str,
        wait: Duration,
    ) -> Result<Option<SharedLease>, String> {
        let until = tokio::time::Instant::now() + wait;
        let mut refusals = 0u32;
        loop {
            if let Some(held) = self.lease(name, "lock").await? {
                return Ok(Some(held));
            }
            if tokio::time::Instant::now() >= until {
                return Ok(None);
            }
            refusals += 1;
            tokio::time::sleep(held_pause(refusals)).await;
        }
    }

    /// Tell every environment that the account cannot answer until `left`
    /// from now (dead, or cooling by class). Bounded; a failure is logged.
    pub async fn mark(
        &self,
        fingerprint: &str,
        upstream: &str,
        state: State,
        left: Duration,
        reason: &str,
    ) {
        let mark = Mark {
            upstream: upstream.to_string(),
            state,
            for_ms: left.as_millis() as u64,
            reason: crate::text::clip(reason, 200),
            holder: self.holder.clone(),
        };
        self.records.invalidate(fingerprint);
        match tokio::time::timeout(STORE_CALL_LIMIT, self.store.mark(fingerprint, &mark)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(token = %fingerprint, error = %e, "could not mark the account in the accounts table")
            }
            Err(_) => {
                tracing::warn!(token = %fingerprint, "the accounts table took too long to mark the account")
            }
        }
    }
}

/// An account held in the table; renewed until it is released.
pub struct SharedLease {
    pool: Arc<SharedPool>,
    fingerprint: String,
    /// `<environment>#<lease>`.
    holder: String,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl SharedLease {
    /// Give the account back now (before the response ends: Lambda freezes
    /// the environment after it).
    pub async fn release(mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        let fp = std::mem::take(&mut self.fingerprint);
        release(&self.pool, &fp, &self.holder).await;
    }
}

async fn release(pool: &SharedPool, fingerprint: &str, holder: &str) {
    match tokio::time::timeout(STORE_CALL_LIMIT, pool.store.release(fingerprint, holder)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(token = %fingerprint, error = %e,
            "could not release the account's lease; it expires by itself"),
        Err(_) => tracing::warn!(token = %fingerprint,
            "the accounts table took too long to release the lease; it expires by itself"),
    }
}

impl Drop for SharedLease {
    /// A lease dropped without `release` (a path that could not await) is
    /// given back from a task: on Lambda that may wait for the next thaw,
    /// and the lease's expiry bounds it either way.
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        if self.fingerprint.is_empty() {
            return;
        }
        let pool = self.pool.clone();
        let fp = std::mem::take(&mut self.fingerprint);
        let holder = std::mem::take(&mut self.holder);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { release(&pool, &fp, &holder).await });
        }
    }
}

/// The pause before asking again for an item another environment holds (an
/// account's lease, a lock): 100 ms doubling per refusal, at most 800 ms,
/// times a random factor in [0.5, 1.5), so the environments waiting spread.
pub(crate) fn held_pause(refusals: u32) -> Duration {
    let base = Duration::from_millis(100) * 2u32.pow(refusals.saturating_sub(1).min(3));
    base.mul_f64(rand::random_range(0.5..1.5))
}

/// This process's id in the table: the function (or `server`) and a random
/// part, never anything of a request or a token.
fn environment_id() -> String {
    let kind = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "server".into());
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{kind}:{}", &id[..12])
}

/// Wall-clock milliseconds since the epoch: the table's clock.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl From<Unavailability> for State {
    fn from(class: Unavailability) -> Self {
        State::Cooling(class)
    }
}
