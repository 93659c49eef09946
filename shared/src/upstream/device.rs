//! Device identities (both upstreams): one registration per token, cached for 3 hours, with
//! concurrent callers for the same token sharing one registration in flight.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use crate::upstream::UpstreamError;

/// What the upstream knows this browser as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub uuid: String,
    pub device_id: String,
}

pub const DEVICE_TTL: Duration = Duration::from_secs(10_800);

/// Cache keyed by token. moka's `try_get_with` coalesces concurrent loads of
/// one key, which is the single-flight the protocol asks for.
#[derive(Clone)]
pub struct DeviceCache {
    cache: Cache<String, DeviceIdentity>,
}

impl Default for DeviceCache {
    fn default() -> Self {
        Self::new(DEVICE_TTL)
    }
}

impl DeviceCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
        }
    }

    pub async fn get_or_register<F, Fut>(
        &self,
        token: &str,
        register: F,
    ) -> Result<DeviceIdentity, UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<DeviceIdentity, UpstreamError>>,
    {
        self.cache
            .try_get_with(token.to_string(), register())
            .await
            .map_err(|e: Arc<UpstreamError>| (*e).clone())
    }

    pub async fn forget(&self, token: &str) {
        self.cache.invalidate(token).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_registration() {
        let cache = DeviceCache::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let cache = cache.clone();
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_register("tok", || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(DeviceIdentity {
                            uuid: "u".into(),
                            device_id: "1".into(),
                        })
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().device_id, "1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Other tokens register on their own.
        cache
            .get_or_register("other", || async {
                Ok(DeviceIdentity {
                    uuid: "v".into(),
                    device_id: "2".into(),
                })
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn failures_are_not_cached_and_forget_re_registers() {
        let cache = DeviceCache::default();
        let err = cache
            .get_or_register("t", || async {
                Err(UpstreamError::Transport("down".into()))
            })
            .await
            .unwrap_err();
        assert_eq!(err, UpstreamError::Transport("down".into()));
        let ok = cache
            .get_or_register("t", || async {
                Ok(DeviceIdentity {
                    uuid: "u".into(),
                    device_id: "9".into(),
                })
            })
            .await
            .unwrap();
        assert_eq!(ok.device_id, "9");
        cache.forget("t").await;
        let again = cache
            .get_or_register("t", || async {
                Ok(DeviceIdentity {
                    uuid: "u".into(),
                    device_id: "10".into(),
                })
            })
            .await
            .unwrap();
        assert_eq!(again.device_id, "10");
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl() {
        let cache = DeviceCache::new(Duration::from_millis(50));
        cache
            .get_or_register("t", || async {
                Ok(DeviceIdentity {
                    uuid: "u".into(),
                    device_id: "1".into(),
                })
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        let again = cache
            .get_or_register("t", || async {
                Ok(DeviceIdentity {
                    uuid: "u".into(),
                    device_id: "2".into(),
                })
            })
            .await
            .unwrap();
        assert_eq!(again.device_id, "2");
    }
}
