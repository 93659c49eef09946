//! MiniMax Code's accounts: refresh tokens that rotate on every use, and the
//! one writer that spends them.
//!
//! A refresh token is single-use: presenting a spent one answers
//! `invalid_grant`, and the account is lost until a new login. So exactly
//! one writer per deployment refreshes (on Lambda the scheduled maintenance
//! function, on the server its in-process timer), and it stores each rotated
//! refresh token before anything can use the new access token. The chat
//! paths only read access tokens.
//!
//! Where things live:
//! - `gateway login` adds a [`CodeLogin`] to the tokens document
//!   (`minimax_code_accounts`): the user's own document, written by the
//!   user's own command and never by the gateway afterwards;
//! - the writer keeps each account's [`Lineage`] (the current refresh and
//!   access tokens, their generation) in the status document it already
//!   owns, keyed by the fingerprint of the login's refresh token. On Lambda
//!   that is the status secret; on the server, a state file beside
//!   `TOKENS_FILE` (mode 600, replaced atomically), so a restart continues
//!   from the latest rotation, never from a spent token.
//!
//! When to renew follows each token's own lifetime: once three quarters of
//! it have passed (an hour-long token about 15 minutes early, a 20-second
//! test token 5 seconds early), never on every tick. A schedule delivered
//! twice could still make two writers meet (EventBridge delivers at least
//! once); until the shared account store's lease closes that, a writer
//! refreshes only a lineage whose last refresh is older than half its
//! token's lifetime, and an `invalid_grant` is checked against a fresh read
//! of the store before the account is called dead: the other writer may
//! have rotated it a moment before.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::pool::{SharedLease, SharedPool};
use crate::redact::fingerprint;
use crate::upstream::code::oauth::{Grant, RefreshError};

/// One `gateway login`: what the tokens document holds of the account.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct CodeLogin {
    #[serde(default)]
    pub region: String,
    pub refresh_token: String,
    #[serde(default)]
    pub access_token: String,
    /// Unix seconds.
    #[serde(default)]
    pub expires_at: u64,
    #[serde(default)]
    pub expires_in: u64,
    #[serde(default)]
    pub login_at: u64,
}

impl std::fmt::Debug for CodeLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeLogin")
            .field("account", &self.account())
            .field("region", &self.region)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl CodeLogin {
    /// The account's name everywhere: the fingerprint of the login's
    /// refresh token (which never changes, unlike the lineage's).
    pub fn account(&self) -> String {
        fingerprint(&self.refresh_token)
    }
}

/// The writer's record of one account: the tokens it holds now.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Lineage {
    #[serde(default)]
    pub region: String,
    pub refresh_token: String,
    pub access_token: String,
    /// Unix seconds.
    pub expires_at: u64,
    pub expires_in: u64,
    /// Rotations since the login.
    pub generation: u64,
    /// Unix seconds of the last refresh (or of the login).
    pub refreshed_at: u64,
    /// Why the account is dead (a spent or revoked refresh token); it stays
    /// so until a new login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead: Option<String>,
    /// The last refresh that failed without a verdict, for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl std::fmt::Debug for Lineage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lineage")
            .field("generation", &self.generation)
            .field("expires_at", &self.expires_at)
            .field("dead", &self.dead)
            .finish_non_exhaustive()
    }
}

impl Lineage {
    pub fn from_login(login: &CodeLogin) -> Self {
        let expires_in = login.expires_in.max(1);
        Self {
            region: login.region.clone(),
            refresh_token: login.refresh_token.clone(),
            access_token: login.access_token.clone(),
            expires_at: login.expires_at,
            expires_in,
            generation: 0,
            refreshed_at: login.expires_at.saturating_sub(expires_in),
            dead: None,
            last_error: None,
        }
    }

    /// When the access token is renewed: three quarters into its life.
    pub fn renewal_at(&self) -> u64 {
        self.refreshed_at + self.expires_in * 3 / 4
    }

    /// Whether a writer may refresh it now: due, and (the guard against a
    /// second writer that read the same lineage) not refreshed within half
    /// of the token's lifetime.
    pub fn is_due(&self, now: u64) -> bool {
        self.dead.is_none()
            && now >= self.renewal_at()
            && now.saturating_sub(self.refreshed_at) >= self.expires_in / 2
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Each account's lineage: the one in `lineages` when the writer has one,
/// else the login's own.
pub fn lineage_of(login: &CodeLogin, lineages: &HashMap<String, Lineage>) -> Lineage {
    lineages
        .get(&login.account())
        .filter(|l| l.generation > 0 || l.dead.is_some())
        .cloned()
        .unwrap_or_else(|| Lineage::from_login(login))
}

/// The access tokens a chat may use now: live accounts' tokens that have at
/// least `margin` seconds left.
pub fn usable_access_tokens(
    logins: &[CodeLogin],
    lineages: &HashMap<String, Lineage>,
    now: u64,
    margin: u64,
) -> Vec<String> {
    logins
        .iter()
        .map(|l| lineage_of(l, lineages))
        .filter(|l| l.dead.is_none() && l.expires_at > now + margin && !l.access_token.is_empty())
        .map(|l| l.access_token)
        .collect()
}

/// Spends a refresh token (the account service; a fake in tests).
#[async_trait]
pub trait Refresher: Send + Sync {
    async fn refresh(&self, refresh_token: &str) -> Result<Grant, RefreshError>;
}

#[async_trait]
impl Refresher for crate::upstream::code::oauth::AccountService {
    async fn refresh(&self, refresh_token: &str) -> Result<Grant, RefreshError> {
        crate::upstream::code::oauth::AccountService::refresh(self, refresh_token).await
    }
}

/// Where the writer keeps the lineages.
#[async_trait]
pub trait LineageStore: Send + Sync {
    /// The lineages as stored now (read fresh, not from a cache).
    async fn load(&self) -> Result<HashMap<String, Lineage>, String>;
    /// Store them; `Ok` only once they are durable.
    async fn save(&self, lineages: &HashMap<String, Lineage>) -> Result<(), String>;
}

/// What one renewal run did, by account.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Renewed {
    pub renewed: Vec<String>,
    pub dead: Vec<String>,
    /// Refreshes that failed without a verdict (tried again later).
    pub failed: Vec<String>,
    /// Rotations that could not be stored: the new tokens are held in
    /// memory only (an alarm: losing them loses the account).
    pub unsaved: Vec<String>,
    /// When the next renewal is due (unix seconds), if any account lives.
    pub next_due: Option<u64>,
}

/// How long a maintainer waits for another's refresh lock.
const LOCK_WAIT: Duration = Duration::from_secs(20);

/// Keep, for every account, the newer of two generations (`stored` wins
/// only when it is newer).
pub fn merge_newer(ours: &mut HashMap<String, Lineage>, stored: HashMap<String, Lineage>) {
    for (account, theirs) in stored {
        match ours.get(&account) {
            Some(mine) if mine.generation >= theirs.generation => {}
            _ => {
                ours.insert(account, theirs);
            }
        }
    }
}

/// Store the lineages; with `locks`, under the lineages' lock, merged with
/// what is stored (another maintainer's rotations of other accounts stay).
pub async fn save_merged(
    store: &dyn LineageStore,
    lineages: &mut HashMap<String, Lineage>,
    locks: Option<&Arc<SharedPool>>,
) -> Result<(), String> {
    let held = merge_stored(store, lineages, locks).await?;
    let saved = store.save(lineages).await;
    if let Some(held) = held {
        held.release().await;
    }
    saved
}

/// Before a writer stores `lineages` whole (with `locks`: the deployment's
/// table): take the lineages' lock and merge what is stored, the newer
/// generation of each account winning. The caller writes, then releases
/// what this returns. Without `locks` there is one writer and nothing to
/// merge. If the table is down the merge still happens, without the lock
/// (logged); if another writer holds the lock past its wait, nothing may be
/// written (a write now could put back a spent refresh token).
pub async fn merge_stored(
    store: &dyn LineageStore,
    lineages: &mut HashMap<String, Lineage>,
    locks: Option<&Arc<SharedPool>>,
) -> Result<Option<SharedLease>, String> {
    let Some(pool) = locks else {
        return Ok(None);
    };
    let held = match pool.lock("lock:lineages", LOCK_WAIT).await {
        Ok(Some(held)) => Some(held),
        Ok(None) => return Err("another maintainer held the lineages' lock too long".into()),
        Err(e) => {
            tracing::error!(error = %e, "the lineages' lock cannot be taken (the accounts table); saving without it");
            None
        }
    };
    match store.load().await {
        Ok(stored) => {
            merge_newer(lineages, stored);
            Ok(held)
        }
        Err(e) => {
            if let Some(held) = held {
                held.release().await;
            }
            Err(e)
        }
    }
}

/// Renew every account whose renewal is due, storing each rotation before
/// the next refresh is made. `lineages` is the writer's current view; it is
/// updated in place (also with rotations that could not be stored).
///
/// With `locks` (the deployment's shared table), several maintainers may
/// run at once (a duplicated schedule, a retried invocation): each account
/// is renewed under its refresh lock, by the one writer that holds it, from
/// the lineage as stored once the lock is held (another may have just
/// rotated it); and every save merges what is stored, keeping the newer
/// generation of each account, under the lineages' own lock.
pub async fn renew_due(
    logins: &[CodeLogin],
    lineages: &mut HashMap<String, Lineage>,
    now: u64,
    refresher: &dyn Refresher,
    store: &dyn LineageStore,
    locks: Option<&Arc<SharedPool>>,
) -> Renewed {
    let mut report = Renewed::default();
    for login in logins {
        let account = login.account();
        let mut lineage = lineage_of(login, lineages);
        if !lineage.is_due(now) {
            continue;
        }
        let mut guard = None;
        if let Some(pool) = locks {
            match pool
                .lock(&format!("lock:refresh:{account}"), LOCK_WAIT)
                .await
            {
                Ok(Some(held)) => guard = Some(held),
                Ok(None) => {
                    tracing::warn!(account = %account, "another maintainer holds the account's refresh lock; left to it");
                    report.failed.push(account);
                    continue;
                }
                Err(e) => tracing::error!(account = %account, error = %e,
                    "the refresh lock cannot be taken (the accounts table); renewing without it"),
            }
            // What another writer stored since this one read wins.
            if let Ok(stored) = store.load().await {
                merge_newer(lineages, stored);
            }
            lineage = lineage_of(login, lineages);
            if !lineage.is_due(now) {
                tracing::info!(account = %account, generation = lineage.generation,
                    "renewed by another maintainer meanwhile; its rotation is kept");
                if let Some(guard) = guard {
                    guard.release().await;
                }
                continue;
            }
        }
        // Rule 5: after a timeout (outcome unknown) the token is presented
        // once more; `invalid_grant` then means it is gone.
        let mut outcome = refresher.refresh(&lineage.refresh_token).await;
        if let Err(RefreshError::Timeout(e)) = &outcome {
            tracing::warn!(account = %account, error = %e, "refresh timed out; presenting it once more");
            outcome = refresher.refresh(&lineage.refresh_token).await;
        }
        match outcome {
            Ok(grant) => {
                lineage = Lineage {
                    region: lineage.region.clone(),
                    refresh_token: grant
                        .refresh_token
                        .unwrap_or_else(|| lineage.refresh_token.clone()),
                    access_token: grant.access_token,
                    expires_at: now + grant.expires_in,
                    expires_in: grant.expires_in,
                    generation: lineage.generation + 1,
                    refreshed_at: now,
                    dead: None,
                    last_error: None,
                };
                lineages.insert(account.clone(), lineage.clone());
                match save_merged(store, lineages, locks).await {
                    Ok(()) => {
                        tracing::info!(account = %account, generation = lineage.generation, "access token renewed and stored");
                        report.renewed.push(account);
                    }
                    Err(e) => {
                        tracing::error!(account = %account, error = %e,
                            "ALARM: a rotated refresh token could not be stored; it is held in memory \
                             only, and losing it loses the account");
                        report.unsaved.push(account);
                    }
                }
            }
            Err(RefreshError::InvalidGrant(reason)) => {
                // Another writer may have rotated it since this one read.
                let stored = store
                    .load()
                    .await
                    .ok()
                    .and_then(|all| all.get(&account).cloned());
                if let Some(newer) = stored.filter(|s| s.generation > lineage.generation) {
                    tracing::warn!(account = %account, generation = newer.generation,
                        "the refresh token was spent by another writer; its rotation is kept");
                    lineages.insert(account.clone(), newer);
                    continue;
                }
                tracing::error!(account = %account, reason = %reason,
                    "the account's refresh token is dead: run `gateway login` again for it");
                lineage.dead = Some(format!("{reason}; run `gateway login` again"));
                lineages.insert(account.clone(), lineage);
                if let Err(e) = save_merged(store, lineages, locks).await {
                    tracing::error!(account = %account, error = %e, "the dead mark could not be stored");
                }
                report.dead.push(account);
            }
            Err(e) => {
                tracing::warn!(account = %account, error = %e, "refresh failed; the grant is kept and tried again");
                lineage.last_error = Some(crate::text::clip(&e.to_string(), 200));
                lineages.insert(account.clone(), lineage);
                report.failed.push(account);
            }
        }
        if let Some(guard) = guard {
            guard.release().await;
        }
    }
    report.next_due = logins
        .iter()
        .map(|l| lineage_of(l, lineages))
        .filter(|l| l.dead.is_none())
        .map(|l| l.renewal_at())
        .min();
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An account service that rotates as the real one does: each refresh
    /// token works once.
    #[derive(Default)]
    struct Service {
        live: Mutex<HashMap<String, u32>>,
        spent: Mutex<Vec<String>>,
        calls: Mutex<Vec<String>>,
        next: Mutex<u32>,
        fail_with: Mutex<Vec<RefreshError>>,
        /// How long a refresh takes (so that two writers overlap).
        latency: Duration,
        /// Refreshes of one account in flight at once, at most.
        in_flight: Mutex<(u32, u32)>,
    }

    impl Service {
        fn issue(&self) -> String {
            let mut n = self.next.lock().unwrap();
            *n += 1;
            let token = format!("mmort_{n}");
            self.live.lock().unwrap().insert(token.clone(), *n);
            token
        }
    }

    #[async_trait]
    impl Refresher for Service {
        async fn refresh(&self, refresh_token: &str) -> Result<Grant, RefreshError> {
            self.calls.lock().unwrap().push(refresh_token.into());
            if !self.latency.is_zero() {
                {
                    let mut f = self.in_flight.lock().unwrap();
                    f.0 += 1;
                    f.1 = f.1.max(f.0);
                }
                tokio::time::sleep(self.latency).await;
                self.in_flight.lock().unwrap().0 -= 1;
            }
            if let Some(e) = self.fail_with.lock().unwrap().pop() {
                return Err(e);
            }
            if self.live.lock().unwrap().remove(refresh_token).is_none() {
                self.spent.lock().unwrap().push(refresh_token.into());
                return Err(RefreshError::InvalidGrant("spent".into()));
            }
            let next = self.issue();
            Ok(Grant {
                access_token: format!("mmoat_for_{next}"),
                refresh_token: Some(next),
                expires_in: 20,
            })
        }
    }

    #[derive(Default)]
    struct Store {
        saved: Mutex<Option<HashMap<String, Lineage>>>,
        saves: Mutex<u32>,
        broken: bool,
    }

    #[async_trait]
    impl LineageStore for Store {
        async fn load(&self) -> Result<HashMap<String, Lineage>, String> {
            Ok(self.saved.lock().unwrap().clone().unwrap_or_default())
        }
        async fn save(&self, lineages: &HashMap<String, Lineage>) -> Result<(), String> {
            if self.broken {
                return Err("the store is down".into());
            }
            *self.saves.lock().unwrap() += 1;
            *self.saved.lock().unwrap() = Some(lineages.clone());
            Ok(())
        }
    }

    fn login(service: &Service, at: u64) -> CodeLogin {
        CodeLogin {
            region: "intl".into(),
            refresh_token: service.issue(),
            access_token: "mmoat_login".into(),
            expires_at: at + 20,
            expires_in: 20,
            login_at: at,
        }
    }

    #[tokio::test]
    async fn renewal_follows_the_tokens_lifetime_and_each_token_is_spent_once() {
        let service = Service::default();
        let store = Store::default();
        let logins = vec![login(&service, 1000)];
        let mut lineages = HashMap::new();
        // Not before three quarters of 20 s.
        let r = renew_due(&logins, &mut lineages, 1014, &service, &store, None).await;
        assert!(r.renewed.is_empty() && service.calls.lock().unwrap().is_empty());
        assert_eq!(r.next_due, Some(1015));
        assert_eq!(
            usable_access_tokens(&logins, &lineages, 1014, 2),
            ["mmoat_login"],
            "the login's own token serves until the first renewal"
        );
        // Hours of 20-second tokens, a tick every second.
        for now in 1015..1015 + 3600 {
            renew_due(&logins, &mut lineages, now, &service, &store, None).await;
            assert_eq!(
                usable_access_tokens(&logins, &lineages, now, 2).len(),
                1,
                "an access token with time left at {now}"
            );
        }
        assert!(
            service.spent.lock().unwrap().is_empty(),
            "no refresh token spent twice"
        );
        let l = &lineages[&logins[0].account()];
        assert_eq!(l.generation, *store.saves.lock().unwrap() as u64);
        assert!(l.generation >= 3600 / 15 - 1, "{}", l.generation);
        assert_eq!(
            store.saved.lock().unwrap().as_ref().unwrap(),
            &lineages,
            "stored as held"
        );
    }

    #[tokio::test]
    async fn a_second_writer_that_read_the_same_lineage_does_not_kill_the_account() {
        let service = Service::default();
        let store = Store::default();
        let logins = vec![login(&service, 1000)];
        // Both writers read the store before either wrote.
        let (mut first, mut second) = (HashMap::new(), HashMap::new());
        let r1 = renew_due(&logins, &mut first, 1016, &service, &store, None).await;
        assert_eq!(r1.renewed.len(), 1);
        let r2 = renew_due(&logins, &mut second, 1016, &service, &store, None).await;
        assert!(r2.dead.is_empty(), "{r2:?}");
        assert_eq!(
            second, first,
            "the second writer adopts the first's rotation"
        );
        // One refresh token was presented twice (what the lease will close),
        // and the account lives on.
        assert_eq!(service.spent.lock().unwrap().len(), 1);
        let r3 = renew_due(&logins, &mut second, 1016, &service, &store, None).await;
        assert!(
            r3.renewed.is_empty(),
            "not due again: refreshed within half a life"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn two_maintainers_at_once_spend_each_refresh_token_once_under_the_shared_lock() {
        let service = Service {
            latency: Duration::from_millis(800),
            ..Service::default()
        };
        let store = Store::default();
        let logins = vec![login(&service, 1000), login(&service, 1000)];
        let table = Arc::new(crate::pool::fake::FakeStore::default());
        let locks = |_| {
            Arc::new(SharedPool::new(
                table.clone() as Arc<dyn crate::pool::store::AccountStore>,
                Duration::from_secs(15),
            ))
        };
        let (a, b) = (locks(1), locks(2));
        // Both read the store before either wrote (the schedule fired twice).
        let (mut first, mut second) = (HashMap::new(), HashMap::new());
        let (r1, r2) = tokio::join!(
            renew_due(&logins, &mut first, 1016, &service, &store, Some(&a)),
            renew_due(&logins, &mut second, 1016, &service, &store, Some(&b)),
        );
        assert!(r1.dead.is_empty() && r2.dead.is_empty(), "{r1:?} {r2:?}");
        assert!(
            service.spent.lock().unwrap().is_empty(),
            "no refresh token presented twice"
        );
        assert_eq!(
            service.calls.lock().unwrap().len(),
            2,
            "one refresh per account"
        );
        assert_eq!(
            service.in_flight.lock().unwrap().1,
            1,
            "never two refreshes at once"
        );
        assert_eq!(r1.renewed.len() + r2.renewed.len(), 2);
        // Both writers end with every rotation, and so does the store.
        let stored = store.saved.lock().unwrap().clone().unwrap();
        for login in &logins {
            let account = login.account();
            assert_eq!(stored[&account].generation, 1);
            assert_eq!(first[&account], stored[&account]);
            assert_eq!(second[&account], stored[&account]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_the_lock_the_same_two_maintainers_present_a_token_twice() {
        // The control: the account service is what catches a reuse.
        let service = Service {
            latency: Duration::from_millis(800),
            ..Service::default()
        };
        let store = Store::default();
        let logins = vec![login(&service, 1000)];
        let (mut first, mut second) = (HashMap::new(), HashMap::new());
        tokio::join!(
            renew_due(&logins, &mut first, 1016, &service, &store, None),
            renew_due(&logins, &mut second, 1016, &service, &store, None),
        );
        assert_eq!(service.spent.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn verdicts_timeouts_and_a_store_that_is_down() {
        let service = Service::default();
        let logins = vec![login(&service, 1000)];
        // A timeout: presented once more, once.
        service
            .fail_with
            .lock()
            .unwrap()
            .push(RefreshError::Timeout("slow".into()));
        let store = Store::default();
        let mut lineages = HashMap::new();
        let r = renew_due(&logins, &mut lineages, 1016, &service, &store, None).await;
        assert_eq!(r.renewed.len(), 1);
        assert_eq!(service.calls.lock().unwrap().len(), 2);
        // A 5xx: kept, tried again at the next run.
        service
            .fail_with
            .lock()
            .unwrap()
            .push(RefreshError::Retryable("HTTP 502".into()));
        let r = renew_due(&logins, &mut lineages, 1031, &service, &store, None).await;
        assert_eq!(r.failed.len(), 1);
        assert!(lineages[&logins[0].account()].last_error.is_some());
        let r = renew_due(&logins, &mut lineages, 1032, &service, &store, None).await;
        assert_eq!(r.renewed.len(), 1);
        // The store down: the rotation is held in memory and used.
        let broken = Store {
            broken: true,
            ..Store::default()
        };
        let r = renew_due(&logins, &mut lineages, 1050, &service, &broken, None).await;
        assert_eq!(r.unsaved.len(), 1);
        assert_eq!(lineages[&logins[0].account()].refreshed_at, 1050);
        // A refresh token revoked: dead, with what to do, and not tried again.
        let account = logins[0].account();
        service.live.lock().unwrap().clear();
        let r = renew_due(&logins, &mut lineages, 1070, &service, &store, None).await;
        assert_eq!(r.dead, std::slice::from_ref(&account));
        assert!(lineages[&account]
            .dead
            .as_ref()
            .unwrap()
            .contains("gateway login"));
        assert!(usable_access_tokens(&logins, &lineages, 1070, 0).is_empty());
        let calls = service.calls.lock().unwrap().len();
        let r = renew_due(&logins, &mut lineages, 2000, &service, &store, None).await;
        assert_eq!(service.calls.lock().unwrap().len(), calls);
        assert_eq!(r.next_due, None);
    }

    #[test]
    fn no_token_in_debug() {
        let l = CodeLogin {
            refresh_token: "mmort_secret".into(),
            access_token: "mmoat_secret".into(),
            ..CodeLogin::default()
        };
        let shown = format!("{l:?} {:?}", Lineage::from_login(&l));
        assert!(!shown.contains("secret"), "{shown}");
    }
}
