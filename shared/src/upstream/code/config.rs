//! The `minimax-code` upstream's settings (`MINIMAX_CODE_*`), with the
//! protocol's defaults (`minimax-code-protocol.md`, sections 1, 4 and 6).

use std::time::Duration;

use crate::settings::Lookup;

/// An account system: accounts and their tokens exist in one region only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Region {
    #[default]
    Intl,
    Cn,
}

impl Region {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "intl" | "global" | "io" => Some(Region::Intl),
            "cn" | "china" => Some(Region::Cn),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Region::Intl => "intl",
            Region::Cn => "cn",
        }
    }

    fn default_base_url(self) -> &'static str {
        match self {
            Region::Intl => "https://agent.minimax.io",
            Region::Cn => "https://agent.minimax.cn",
        }
    }

    fn default_account_url(self) -> &'static str {
        match self {
            Region::Intl => "https://account.minimax.io",
            Region::Cn => "https://account.minimax.cn",
        }
    }

    fn default_platform_url(self) -> &'static str {
        match self {
            Region::Intl => "https://platform.minimax.io",
            Region::Cn => "https://www.minimaxi.com",
        }
    }
}

/// Whether the official client's optional headers are sent (section 4.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientHeaders {
    #[default]
    Official,
    Minimal,
}

#[derive(Clone, Debug)]
pub struct CodeConfig {
    /// `MINIMAX_CODE_REGION`: `intl` (default) or `cn`.
    pub region: Region,
    /// Messages host, `MINIMAX_CODE_BASE_URL` (by region; no trailing slash).
    pub base_url: String,
    /// OAuth host, `MINIMAX_CODE_ACCOUNT_URL` (by region).
    pub account_url: String,
    /// Token Plan host, `MINIMAX_CODE_PLATFORM_URL` (by region; section 7):
    /// read only for the operator's view.
    pub platform_url: String,
    /// `MINIMAX_CODE_LLM_PATH` (`/mavis/api/v1/llm/v1`): exactly one `/v1`
    /// follows `/llm`, and `/messages` is appended to it.
    pub llm_path: String,
    /// `MINIMAX_CODE_CLIENT_ID` (`mcode-public`).
    pub client_id: String,
    /// `MINIMAX_CODE_ANTHROPIC_VERSION` (`2023-06-01`).
    pub anthropic_version: String,
    /// `MINIMAX_CODE_CLIENT_HEADERS`: `official` (default) or `minimal`.
    pub client_headers: ClientHeaders,
    /// The model for names not in the catalogue, `MINIMAX_CODE_DEFAULT_MODEL`
    /// (`MiniMax-M3`: thinks only when asked, so an OpenAI caller that
    /// asks nothing gets a plain answer).
    pub default_model: String,
    /// `MINIMAX_CODE_MODELS`: the catalogue's ids, comma-separated, in place
    /// of the static list (section 5).
    pub models: Vec<String>,
    /// `max_tokens` when the caller sends none, `MINIMAX_CODE_DEFAULT_MAX_TOKENS`
    /// (the models' output limit, 128000, as the official client sends).
    pub default_max_tokens: u32,
    /// Cool-downs by error class (section 6), in seconds:
    /// `MINIMAX_CODE_THROTTLE_COOLDOWN_S` (60),
    /// `MINIMAX_CODE_PLAN_COOLDOWN_S` (3600, also for credits),
    /// `MINIMAX_CODE_BLOCK_COOLDOWN_S` (3600, also for a refused network).
    pub throttle_cooldown: Duration,
    pub plan_cooldown: Duration,
    pub block_cooldown: Duration,
    /// Streams per upstream connection before another is opened,
    /// `UPSTREAM_STREAMS_PER_CONNECTION` (64, as for the web chats).
    pub streams_per_connection: usize,
}

impl CodeConfig {
    pub fn from_lookup(env: &Lookup) -> Self {
        let region = env
            .value("MINIMAX_CODE_REGION")
            .and_then(|r| Region::parse(&r))
            .unwrap_or_default();
        let url =
            |key: &str, default: &str| env.text(key, default).trim_end_matches('/').to_string();
        let secs = |key: &str, default: u64| Duration::from_secs(env.number(key, default));
        Self {
            region,
            base_url: url("MINIMAX_CODE_BASE_URL", region.default_base_url()),
            account_url: url("MINIMAX_CODE_ACCOUNT_URL", region.default_account_url()),
            platform_url: url("MINIMAX_CODE_PLATFORM_URL", region.default_platform_url()),
            llm_path: url("MINIMAX_CODE_LLM_PATH", "/mavis/api/v1/llm/v1"),
            client_id: env.text("MINIMAX_CODE_CLIENT_ID", "mcode-public"),
            anthropic_version: env.text("MINIMAX_CODE_ANTHROPIC_VERSION", "2023-06-01"),
            client_headers: match env.text("MINIMAX_CODE_CLIENT_HEADERS", "official").as_str() {
                "minimal" => ClientHeaders::Minimal,
                _ => ClientHeaders::Official,
            },
            default_model: env.text("MINIMAX_CODE_DEFAULT_MODEL", "MiniMax-M3"),
            models: env
                .text("MINIMAX_CODE_MODELS", "")
                .split(',')
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect(),
            default_max_tokens: env
                .number("MINIMAX_CODE_DEFAULT_MAX_TOKENS", 128_000)
                .clamp(1, u32::MAX as u64) as u32,
            throttle_cooldown: secs("MINIMAX_CODE_THROTTLE_COOLDOWN_S", 60),
            plan_cooldown: secs("MINIMAX_CODE_PLAN_COOLDOWN_S", 3600),
            block_cooldown: secs("MINIMAX_CODE_BLOCK_COOLDOWN_S", 3600),
            streams_per_connection: crate::upstream::browser::streams_per_connection(env),
        }
    }

    /// A bearer goes only to MiniMax's agent hosts or to loopback (the
    /// simulator): any other base URL is refused at startup (section 1).
    pub fn check_hosts(&self) -> Result<(), String> {
        for (key, value, allowed) in [
            (
                "MINIMAX_CODE_BASE_URL",
                &self.base_url,
                &["agent.minimax.io", "agent.minimax.cn", "agent.minimaxi.com"][..],
            ),
            (
                "MINIMAX_CODE_ACCOUNT_URL",
                &self.account_url,
                &["account.minimax.io", "account.minimax.cn"][..],
            ),
            (
                "MINIMAX_CODE_PLATFORM_URL",
                &self.platform_url,
                &["platform.minimax.io", "www.minimaxi.com"][..],
            ),
        ] {
            let parsed = url::Url::parse(value).map_err(|e| format!("{key} is not a URL: {e}"))?;
            let host = parsed.host_str().unwrap_or_default();
            let loopback = matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1")
                || host.starts_with("127.");
            let https = parsed.scheme() == "https";
            if !(loopback || (https && allowed.contains(&host))) {
                return Err(format!(
                    "{key} must be https on {} or a loopback address (the simulator), not {value:?}: \
                     the account's tokens are sent there",
                    allowed.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Whether this is the international host (where an empty 401 means the
    /// network is refused, not the token; section 6).
    pub fn is_intl(&self) -> bool {
        self.region == Region::Intl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> CodeConfig {
        crate::settings::from_pairs(pairs, CodeConfig::from_lookup)
    }

    #[test]
    fn regions_pick_their_hosts_and_overrides_win() {
        let c = config(&[]);
        assert_eq!(c.base_url, "https://agent.minimax.io");
        assert_eq!(c.account_url, "https://account.minimax.io");
        assert_eq!(c.platform_url, "https://platform.minimax.io");
        assert_eq!(c.llm_path, "/mavis/api/v1/llm/v1");
        assert!(c.check_hosts().is_ok() && c.is_intl());
        let c = config(&[("MINIMAX_CODE_REGION", "cn")]);
        assert_eq!(c.base_url, "https://agent.minimax.cn");
        assert_eq!(c.platform_url, "https://www.minimaxi.com");
        assert!(c.check_hosts().is_ok() && !c.is_intl());
        // The older China host is accepted as a base URL.
        let c = config(&[
            ("MINIMAX_CODE_REGION", "cn"),
            ("MINIMAX_CODE_BASE_URL", "https://agent.minimaxi.com/"),
        ]);
        assert_eq!(c.base_url, "https://agent.minimaxi.com");
        assert!(c.check_hosts().is_ok());
        let c = config(&[
            ("MINIMAX_CODE_BASE_URL", "http://127.0.0.1:18090"),
            ("MINIMAX_CODE_ACCOUNT_URL", "http://127.0.0.1:18090"),
            ("MINIMAX_CODE_PLATFORM_URL", "http://127.0.0.1:18090"),
        ]);
        assert!(c.check_hosts().is_ok());
    }

    #[test]
    fn a_bearer_is_never_sent_to_another_host() {
        for url in [
            "https://evil.example.com",
            "http://agent.minimax.io",
            "https://agent.minimax.io.example.com",
        ] {
            let c = config(&[("MINIMAX_CODE_BASE_URL", url)]);
            let e = c.check_hosts().unwrap_err();
            assert!(e.contains("MINIMAX_CODE_BASE_URL"), "{e}");
        }
        let c = config(&[("MINIMAX_CODE_PLATFORM_URL", "https://platform.example.com")]);
        let e = c.check_hosts().unwrap_err();
        assert!(e.contains("MINIMAX_CODE_PLATFORM_URL"), "{e}");
    }
}
