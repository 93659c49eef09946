//! The agent's browser profile, settings and query string (protocol section 2).

use std::time::Duration;

use crate::config::Lookup;
use crate::upstream::query::join_query;

/// Everything configurable about the agent upstream (`AGENT_*` variables).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    pub base_url: String,
    pub origin: String,
    pub user_agent: String,
    pub sec_ch_ua: String,
    pub sec_ch_ua_platform: String,
    pub version_code: String,
    pub poll_interval: Duration,
    /// Give up when the answer has not grown for this long.
    pub poll_timeout: Duration,
    pub delete_tries: u32,
    pub delete_retry: Duration,
}

impl AgentConfig {
    pub fn from_lookup(env: &Lookup<'_>) -> Self {
        let (text, ms) = (|k, d| env.text(k, d), |k, d| env.millis(k, d));
        Self {
            base_url: text("AGENT_BASE_URL", "https://agent.minimaxi.com").trim_end_matches('/').to_string(),
            origin: text("AGENT_ORIGIN", "https://agent.minimaxi.com").trim_end_matches('/').to_string(),
            user_agent: text(
                "AGENT_USER_AGENT",
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/145.0.0.0 Safari/537.36",
            ),
            sec_ch_ua: text(
                "AGENT_SEC_CH_UA",
                "\"Not:A-Brand\";v=\"99\", \"Google Chrome\";v=\"145\", \"Chromium\";v=\"145\"",
            ),
            sec_ch_ua_platform: text("AGENT_SEC_CH_UA_PLATFORM", "\"macOS\""),
            version_code: text("AGENT_VERSION_CODE", "22201"),
            poll_interval: ms("AGENT_POLL_INTERVAL_MS", 500),
            poll_timeout: ms("AGENT_POLL_TIMEOUT_MS", 60_000),
            delete_tries: env.number("AGENT_DELETE_TRIES", 3).clamp(1, 10) as u32,
            delete_retry: ms("AGENT_DELETE_RETRY_MS", 2_000),
        }
    }
}

/// The query every call carries, keys in protocol order.
pub fn agent_query(
    version_code: &str,
    uuid: &str,
    device_id: Option<&str>,
    user_id: &str,
    unix: &str,
    jwt: &str,
) -> String {
    join_query(&[
        ("device_platform", Some("web")),
        ("biz_id", Some("3")),
        ("app_id", Some("3001")),
        ("version_code", Some(version_code)),
        ("uuid", Some(uuid)),
        ("device_id", device_id),
        ("os_name", Some("Mac")),
        ("browser_name", Some("chrome")),
        ("device_memory", Some("8")),
        ("cpu_core_num", Some("11")),
        ("browser_language", Some("zh-CN")),
        ("browser_platform", Some("MacIntel")),
        ("user_id", Some(user_id)),
        ("screen_width", Some("1920")),
        ("screen_height", Some("1080")),
        ("unix", Some(unix)),
        ("lang", Some("zh")),
        ("token", Some(jwt)),
        ("timezone_offset", Some("28800")),
        ("sys_language", Some("zh")),
        ("client", Some("web")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::query::append_query;
    use crate::upstream::signing::{x_signature, yy_json};
    use serde_json::Value;

    /// Every vector in `agent-vectors.json`: the URI rebuilt by our query
    /// builder, then both signatures.
    #[test]
    fn reproduces_every_agent_vector() {
        let doc: Value =
            serde_json::from_str(include_str!("../../../testdata/agent-vectors.json")).unwrap();
        let vectors = doc["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 6);
        for v in vectors {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            let query = agent_query(
                "22201",
                &s("uuid"),
                v["device_id"].as_str(),
                &s("user_id"),
                &s("unix"),
                &s("token"),
            );
            let full_uri = append_query(&s("uri"), &query);
            assert_eq!(full_uri, s("full_uri"), "full_uri of {}", s("uri"));
            assert_eq!(
                yy_json(&full_uri, &s("body_json"), &s("unix")),
                s("yy"),
                "yy of {}",
                s("uri")
            );
            assert_eq!(
                s("timestamp"),
                (s("unix").parse::<u64>().unwrap() / 1000).to_string()
            );
            assert_eq!(
                x_signature(&s("timestamp"), &s("token"), &s("body_json")),
                s("x_signature"),
                "x-signature of {}",
                s("uri")
            );
        }
    }

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
