//! The store's rules in memory, on tokio's clock (paused in the tests), with
//! a switch that makes every call fail (a table that is down) and a count
//! of the calls made.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::store::{AccountStore, Mark, Record, StoreError};

pub struct FakeStore {
    start: tokio::time::Instant,
    records: Mutex<HashMap<String, Record>>,
    pub down: AtomicBool,
    pub calls: AtomicUsize,
}

impl Default for FakeStore {
    fn default() -> Self {
        Self {
            start: tokio::time::Instant::now(),
            records: Mutex::default(),
            down: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
        }
    }
}

impl FakeStore {
    fn check(&self) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError("the fake table is down".into()));
        }
        Ok(())
    }

    pub fn record(&self, account: &str) -> Option<Record> {
        self.records.lock().unwrap().get(account).cloned()
    }
}

fn entry<'a>(all: &'a mut HashMap<String, Record>, account: &str) -> &'a mut Record {
    all.entry(account.to_string()).or_insert_with(|| Record {
        account: account.to_string(),
        ..Record::default()
    })
}

#[async_trait]
impl AccountStore for FakeStore {
    fn now_ms(&self) -> u64 {
        // Far from zero, as the wall clock is.
        1_700_000_000_000 + self.start.elapsed().as_millis() as u64
    }

    async fn lease(
        &self,
        account: &str,
        upstream: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.check()?;
        let now = self.now_ms();
        let mut all = self.records.lock().unwrap();
        let r = entry(&mut all, account);
        if r.current_holder(now).is_some_and(|h| h != holder) {
            return Ok(false);
        }
        r.holder = Some(holder.to_string());
        r.lease_until_ms = now + ttl.as_millis() as u64;
        r.upstream = upstream.to_string();
        Ok(true)
    }

    async fn renew(&self, account: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.check()?;
        let now = self.now_ms();
        let mut all = self.records.lock().unwrap();
        match all.get_mut(account) {
            Some(r) if r.holder.as_deref() == Some(holder) => {
                r.lease_until_ms = now + ttl.as_millis() as u64;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, account: &str, holder: &str) -> Result<(), StoreError> {
        self.check()?;
        let mut all = self.records.lock().unwrap();
        if let Some(r) = all.get_mut(account) {
            if r.holder.as_deref() == Some(holder) {
                r.holder = None;
                r.lease_until_ms = 0;
            }
        }
        Ok(())
    }

    async fn mark(&self, account: &str, mark: &Mark) -> Result<(), StoreError> {
        self.check()?;
        let now = self.now_ms();
        let mut all = self.records.lock().unwrap();
        let r = entry(&mut all, account);
        r.upstream = mark.upstream.clone();
        r.state = Some(mark.state.as_str().to_string());
        r.state_until_ms = now + mark.for_ms;
        r.since_ms = now;
        r.reason = mark.reason.clone();
        Ok(())
    }

    async fn read(&self, accounts: &[String]) -> Result<Vec<Record>, StoreError> {
        self.check()?;
        let all = self.records.lock().unwrap();
        Ok(accounts
            .iter()
            .filter_map(|a| all.get(a).cloned())
            .collect())
    }

    async fn all(&self) -> Result<Vec<Record>, StoreError> {
        self.check()?;
        Ok(self.records.lock().unwrap().values().cloned().collect())
    }
}
