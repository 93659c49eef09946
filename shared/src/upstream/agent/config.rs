//! Everything configurable about the MiniMax Agent upstream (`AGENT_*`
//! settings), read from the settings reader: the base URL, the browser it
//! poses as, and the polling and deletion rhythm.

use std::time::Duration;

use crate::settings::Lookup;
use crate::upstream::browser::{streams_per_connection, BrowserProfile};

/// Everything configurable about the agent upstream (`AGENT_*` variables).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// `AGENT_BASE_URL` (default `https://agent.minimaxi.com`).
    pub base_url: String,
    /// `AGENT_ORIGIN`, `AGENT_USER_AGENT`, `AGENT_SEC_CH_UA`, `AGENT_SEC_CH_UA_PLATFORM`.
    pub browser: BrowserProfile,
    pub version_code: String,
    pub poll_interval: Duration,
    /// Give up when the answer has not grown for this long.
    pub poll_timeout: Duration,
    pub delete_tries: u32,
    pub delete_retry: Duration,
    /// Timeout of a plain JSON call, `UPSTREAM_JSON_TIMEOUT_MS` (15 s).
    pub json_timeout: Duration,
    /// `UPSTREAM_STREAMS_PER_CONNECTION`, as for Hailuo.
    pub streams_per_connection: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self::from_lookup(&Lookup::new(&|_| None))
    }
}

impl AgentConfig {
    pub fn from_lookup(env: &Lookup<'_>) -> Self {
        let (text, ms) = (|k, d| env.text(k, d), |k, d| env.millis(k, d));
        Self {
            base_url: text("AGENT_BASE_URL", "https://agent.minimaxi.com").trim_end_matches('/').to_string(),
            browser: BrowserProfile::from_lookup(
                env,
                "AGENT",
                [
                    "https://agent.minimaxi.com",
                    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/145.0.0.0 Safari/537.36",
                    "\"Not:A-Brand\";v=\"99\", \"Google Chrome\";v=\"145\", \"Chromium\";v=\"145\"",
                    "\"macOS\"",
                ],
            ),
            version_code: text("AGENT_VERSION_CODE", "22201"),
            poll_interval: ms("AGENT_POLL_INTERVAL_MS", 500),
            poll_timeout: ms("AGENT_POLL_TIMEOUT_MS", 60_000),
            delete_tries: env.number("AGENT_DELETE_TRIES", 3).clamp(1, 10) as u32,
            delete_retry: ms("AGENT_DELETE_RETRY_MS", 2_000),
            json_timeout: ms("UPSTREAM_JSON_TIMEOUT_MS", 15_000),
            streams_per_connection: streams_per_connection(env),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_override() {
        let c = AgentConfig::from_lookup(&Lookup::new(&|_| None));
        assert_eq!(c.base_url, "https://agent.minimaxi.com");
        assert_eq!(c.poll_interval, Duration::from_millis(500));
        assert_eq!(c.poll_timeout, Duration::from_secs(60));
        let c = AgentConfig::from_lookup(&Lookup::new(&|k| {
            (k == "AGENT_POLL_INTERVAL_MS").then(|| "200".to_string())
        }));
        assert_eq!(c.poll_interval, Duration::from_millis(200));
    }
}
