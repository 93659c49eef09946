//! Everything configurable about the Hailuo upstream (`HAILUO_*` settings),
//! read from the settings reader: the base URL, the browser it poses as, and
//! the device profile the query describes.

use std::time::Duration;

use crate::settings::Lookup;
use crate::upstream::browser::{streams_per_connection, BrowserProfile};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HailuoConfig {
    /// `HAILUO_BASE_URL` (default `https://hailuoai.com`).
    pub base_url: String,
    /// `HAILUO_ORIGIN`, `HAILUO_USER_AGENT`, `HAILUO_SEC_CH_UA`, `HAILUO_SEC_CH_UA_PLATFORM`.
    pub browser: BrowserProfile,
    pub device: DeviceProfile,
    /// Timeout of a plain JSON call, `UPSTREAM_JSON_TIMEOUT_MS` (15 s).
    pub json_timeout: Duration,
    /// Requests one upstream connection carries before the next is opened,
    /// `UPSTREAM_STREAMS_PER_CONNECTION` (64; see `browser::Connections`).
    pub streams_per_connection: usize,
    pub speech: SpeechTiming,
}

/// How long speech is waited for (protocol sections 8 and 9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeechTiming {
    /// Longest wait for `msg_tts` to be ready, `HAILUO_TTS_TIMEOUT_MS` (30 s).
    pub tts_timeout: Duration,
    /// Pause between polls, `HAILUO_TTS_POLL_INTERVAL_MS` (1 s).
    pub tts_poll_interval: Duration,
    /// Longest voice call, to its transcript, `HAILUO_ASR_TIMEOUT_MS` (60 s).
    pub asr_timeout: Duration,
}

impl Default for HailuoConfig {
    fn default() -> Self {
        Self::from_lookup(&Lookup::new(&|_| None))
    }
}

impl HailuoConfig {
    pub fn from_lookup(env: &Lookup<'_>) -> Self {
        Self {
            base_url: env
                .text("HAILUO_BASE_URL", "https://hailuoai.com")
                .trim_end_matches('/')
                .to_string(),
            browser: BrowserProfile::from_lookup(
                env,
                "HAILUO",
                [
                    "https://hailuoai.com",
                    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/127.0.0.0 Safari/537.36",
                    "\"Not)A;Brand\";v=\"99\", \"Google Chrome\";v=\"127\", \"Chromium\";v=\"127\"",
                    "\"Windows\"",
                ],
            ),
            device: DeviceProfile::from_lookup(env),
            json_timeout: env.millis("UPSTREAM_JSON_TIMEOUT_MS", 15_000),
            streams_per_connection: streams_per_connection(env),
            speech: SpeechTiming {
                tts_timeout: env.millis("HAILUO_TTS_TIMEOUT_MS", 30_000),
                tts_poll_interval: env.millis("HAILUO_TTS_POLL_INTERVAL_MS", 1_000).max(Duration::from_millis(50)),
                asr_timeout: env.millis("HAILUO_ASR_TIMEOUT_MS", 60_000),
            },
        }
    }
}

/// The browser fingerprint the query describes. Every value may drift upstream,
/// so each is configuration (`HAILUO_*` variables) with the observed default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceProfile {
    pub device_platform: String,
    pub app_id: String,
    pub version_code: String,
    pub os_name: String,
    pub browser_name: String,
    pub device_memory: String,
    pub cpu_core_num: String,
    pub browser_language: String,
    pub browser_platform: String,
    pub screen_width: String,
    pub screen_height: String,
}

impl Default for DeviceProfile {
    fn default() -> Self {
        Self {
            device_platform: "web".into(),
            app_id: "3001".into(),
            version_code: "22200".into(),
            os_name: "Windows".into(),
            browser_name: "chrome".into(),
            device_memory: "8".into(),
            cpu_core_num: "12".into(),
            browser_language: "zh-CN".into(),
            browser_platform: "Win32".into(),
            screen_width: "1920".into(),
            screen_height: "1080".into(),
        }
    }
}

impl DeviceProfile {
    /// The defaults, each overridable by a `HAILUO_*` setting.
    pub fn from_lookup(env: &Lookup<'_>) -> Self {
        let d = Self::default();
        let pick = |key: &str, default: String| env.value(key).unwrap_or(default);
        Self {
            device_platform: pick("HAILUO_DEVICE_PLATFORM", d.device_platform),
            app_id: pick("HAILUO_APP_ID", d.app_id),
            version_code: pick("HAILUO_VERSION_CODE", d.version_code),
            os_name: pick("HAILUO_OS_NAME", d.os_name),
            browser_name: pick("HAILUO_BROWSER_NAME", d.browser_name),
            device_memory: pick("HAILUO_DEVICE_MEMORY", d.device_memory),
            cpu_core_num: pick("HAILUO_CPU_CORE_NUM", d.cpu_core_num),
            browser_language: pick("HAILUO_BROWSER_LANGUAGE", d.browser_language),
            browser_platform: pick("HAILUO_BROWSER_PLATFORM", d.browser_platform),
            screen_width: pick("HAILUO_SCREEN_WIDTH", d.screen_width),
            screen_height: pick("HAILUO_SCREEN_HEIGHT", d.screen_height),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = HailuoConfig::default();
        assert_eq!(c.base_url, "https://hailuoai.com");
        assert_eq!(c.browser.origin, "https://hailuoai.com");
        assert_eq!(c.browser.sec_ch_ua_platform, "\"Windows\"");
        let c = HailuoConfig::from_lookup(&Lookup::new(&|k| match k {
            "HAILUO_BASE_URL" => Some("http://127.0.0.1:1/".into()),
            "HAILUO_ORIGIN" => Some("https://mirror.example/".into()),
            _ => None,
        }));
        assert_eq!(c.base_url, "http://127.0.0.1:1");
        assert_eq!(c.browser.origin, "https://mirror.example");
    }

    #[test]
    fn profile_overrides_from_env() {
        let p = DeviceProfile::from_lookup(&Lookup::new(&|k| {
            (k == "HAILUO_VERSION_CODE").then(|| "23000".to_string())
        }));
        assert_eq!(p.version_code, "23000");
        assert_eq!(p.app_id, "3001");
    }
}
