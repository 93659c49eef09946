//! The `minimax-api` upstream's settings (`MINIMAX_API_*`, protocol section
//! 1.3). The keys themselves are credentials, not settings: the gateway's
//! config reads `MINIMAX_API_KEY`, and the tokens document may hold more.

use std::time::Duration;

use crate::settings::Lookup;
use crate::upstream::code::config::Region;

/// The chat names passed through unchanged by default (section 6).
pub const DEFAULT_CHAT_MODELS: [&str; 8] = [
    "MiniMax-M3",
    "MiniMax-M2.7",
    "MiniMax-M2.7-highspeed",
    "MiniMax-M2.5",
    "MiniMax-M2.5-highspeed",
    "MiniMax-M2.1",
    "MiniMax-M2.1-highspeed",
    "MiniMax-M2",
];

#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// `MINIMAX_API_REGION`: `intl` (default) or `cn`. Keys exist in one.
    pub region: Region,
    /// `MINIMAX_API_BASE_URL` (by region; no trailing slash).
    pub base_url: String,
    /// `MINIMAX_API_TTS_BASE_URL`: the base for `/v1/t2a_v2` only (= base).
    pub tts_base_url: String,
    /// `MINIMAX_API_CHAT_MODEL` (`MiniMax-M3`): for every name not passed through.
    pub chat_model: String,
    /// `MINIMAX_API_CHAT_MODELS`: the names sent unchanged.
    pub chat_models: Vec<String>,
    /// `MINIMAX_API_VISION_MODEL` (`MiniMax-M3`): for images on a text-only model.
    pub vision_model: String,
    /// `MINIMAX_API_REASONING_SPLIT` (true): thinking comes back in its own field.
    pub reasoning_split: bool,
    /// `MINIMAX_API_TTS_MODEL`, `MINIMAX_API_TTS_MODEL_HD`.
    pub tts_model: String,
    pub tts_model_hd: String,
    /// `MINIMAX_API_VOICE_MAP`: `alloy=voice,…`, over the default table.
    pub voice_map: Vec<(String, String)>,
    /// `MINIMAX_API_ASR_MODEL` (`asr-1.0`).
    pub asr_model: String,
    /// `MINIMAX_API_TIMEOUT_S` (120): the longest wait to connect.
    pub timeout: Duration,
    /// `MINIMAX_API_COOLDOWN_S` (30) a rate-limited key is skipped;
    /// `MINIMAX_API_EXHAUSTED_S` (3600) an out-of-quota one.
    pub cooldown: Duration,
    pub exhausted: Duration,
    /// Streams per upstream connection (`UPSTREAM_STREAMS_PER_CONNECTION`).
    pub streams_per_connection: usize,
}

fn default_base_url(region: Region) -> &'static str {
    match region {
        Region::Intl => "https://api.minimax.io",
        Region::Cn => "https://api.minimaxi.com",
    }
}

/// The hosts a key may be sent to: the platform's (and its low-latency
/// speech hosts) or loopback (the simulator).
const HOSTS: [&str; 4] = [
    "api.minimax.io",
    "api.minimaxi.com",
    "api-uw.minimax.io",
    "api-bj.minimaxi.com",
];

impl ApiConfig {
    pub fn from_lookup(env: &Lookup) -> Self {
        let region = env
            .value("MINIMAX_API_REGION")
            .and_then(|r| Region::parse(&r))
            .unwrap_or_default();
        let url =
            |key: &str, default: &str| env.text(key, default).trim_end_matches('/').to_string();
        let base_url = url("MINIMAX_API_BASE_URL", default_base_url(region));
        let list = |key: &str| -> Vec<String> {
            env.text(key, "")
                .split(',')
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect()
        };
        let mut chat_models = list("MINIMAX_API_CHAT_MODELS");
        if chat_models.is_empty() {
            chat_models = DEFAULT_CHAT_MODELS.map(str::to_string).to_vec();
        }
        let chat_model = env.text("MINIMAX_API_CHAT_MODEL", "MiniMax-M3");
        if !chat_models.contains(&chat_model) {
            chat_models.insert(0, chat_model.clone());
        }
        let secs = |key: &str, default: u64| Duration::from_secs(env.number(key, default).max(1));
        Self {
            region,
            tts_base_url: url("MINIMAX_API_TTS_BASE_URL", &base_url),
            base_url,
            chat_model,
            chat_models,
            vision_model: env.text("MINIMAX_API_VISION_MODEL", "MiniMax-M3"),
            reasoning_split: env
                .value("MINIMAX_API_REASONING_SPLIT")
                .is_none_or(|v| !matches!(v.trim(), "false" | "0" | "no" | "off")),
            tts_model: env.text("MINIMAX_API_TTS_MODEL", "speech-2.8-turbo"),
            tts_model_hd: env.text("MINIMAX_API_TTS_MODEL_HD", "speech-2.8-hd"),
            voice_map: list("MINIMAX_API_VOICE_MAP")
                .into_iter()
                .filter_map(|pair| {
                    let (from, to) = pair.split_once('=')?;
                    Some((from.trim().to_ascii_lowercase(), to.trim().to_string()))
                })
                .collect(),
            asr_model: env.text("MINIMAX_API_ASR_MODEL", "asr-1.0"),
            timeout: secs("MINIMAX_API_TIMEOUT_S", 120),
            cooldown: secs("MINIMAX_API_COOLDOWN_S", 30),
            exhausted: secs("MINIMAX_API_EXHAUSTED_S", 3600),
            streams_per_connection: crate::upstream::browser::streams_per_connection(env),
        }
    }

    /// A key goes only to the platform's hosts or to loopback: any other
    /// base URL is refused at startup.
    pub fn check_hosts(&self) -> Result<(), String> {
        for (key, value) in [
            ("MINIMAX_API_BASE_URL", &self.base_url),
            ("MINIMAX_API_TTS_BASE_URL", &self.tts_base_url),
        ] {
            let parsed = url::Url::parse(value).map_err(|e| format!("{key} is not a URL: {e}"))?;
            let host = parsed.host_str().unwrap_or_default();
            let loopback =
                matches!(host, "localhost" | "[::1]" | "::1") || host.starts_with("127.");
            if !(loopback || (parsed.scheme() == "https" && HOSTS.contains(&host))) {
                return Err(format!(
                    "{key} must be https on {} or a loopback address (the simulator), not {value:?}: \
                     the platform's API keys are sent there",
                    HOSTS.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The host keys of this region are valid on, for messages.
    pub fn host(&self) -> &str {
        self.base_url
            .split_once("://")
            .map_or(self.base_url.as_str(), |(_, rest)| rest)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn config(pairs: &[(&str, &str)]) -> ApiConfig {
        crate::settings::from_pairs(pairs, ApiConfig::from_lookup)
    }

    #[test]
    fn regions_pick_their_hosts_and_a_key_goes_nowhere_else() {
        let c = config(&[]);
        assert_eq!(c.base_url, "https://api.minimax.io");
        assert_eq!(c.tts_base_url, c.base_url);
        assert!(c.reasoning_split && c.check_hosts().is_ok());
        assert_eq!(c.chat_models.len(), 8);
        let c = config(&[
            ("MINIMAX_API_REGION", "cn"),
            ("MINIMAX_API_REASONING_SPLIT", "false"),
        ]);
        assert_eq!(c.base_url, "https://api.minimaxi.com");
        assert!(!c.reasoning_split);
        let c = config(&[
            ("MINIMAX_API_BASE_URL", "http://127.0.0.1:18083/"),
            ("MINIMAX_API_TTS_BASE_URL", "https://api-uw.minimax.io"),
        ]);
        assert_eq!(c.base_url, "http://127.0.0.1:18083");
        assert!(c.check_hosts().is_ok());
        for bad in [
            "https://api.minimax.chat",
            "http://api.minimax.io",
            "https://evil.example",
        ] {
            let e = config(&[("MINIMAX_API_BASE_URL", bad)])
                .check_hosts()
                .unwrap_err();
            assert!(e.contains("MINIMAX_API_BASE_URL"), "{e}");
        }
    }

    #[test]
    fn the_voice_map_and_model_lists_are_read() {
        let c = config(&[
            ("MINIMAX_API_VOICE_MAP", "Alloy=Wise_Woman, bad, echo = x"),
            ("MINIMAX_API_CHAT_MODELS", "MiniMax-M2.7"),
            ("MINIMAX_API_CHAT_MODEL", "MiniMax-M3"),
        ]);
        assert_eq!(
            c.voice_map,
            vec![
                ("alloy".into(), "Wise_Woman".into()),
                ("echo".into(), "x".into())
            ]
        );
        assert_eq!(c.chat_models, vec!["MiniMax-M3", "MiniMax-M2.7"]);
    }
}
