//! Everything read from the environment, once per execution environment.

use std::time::Duration;

use crate::settings::Lookup;

use crate::upstream::agent::AgentConfig;
use crate::upstream::api::ApiConfig;
use crate::upstream::code::CodeConfig;
use crate::upstream::hailuo::HailuoConfig;

#[derive(Clone, Debug)]
pub struct Config {
    /// The chat upstreams of this deployment in the order they are tried,
    /// `UPSTREAM`: a comma-separated list of `minimax-code` (default: the
    /// one that answers today), `hailuo`, `minimax-agent` and
    /// `minimax-api` (MiniMax's paid platform), e.g.
    /// `minimax-code,minimax-api`. Checked by `crate::upstreams`.
    pub upstreams: Vec<String>,
    /// The paid platform's settings (`MINIMAX_API_*`), owned by its adapter.
    pub api: ApiConfig,
    /// The deployment's platform keys, `MINIMAX_API_KEY` (comma-separated):
    /// used for callers let in by an API key of the tokens document, never
    /// in header mode (every caller would spend them there).
    pub minimax_api_keys: Vec<String>,
    /// The MiniMax Code upstream's settings (`MINIMAX_CODE_*`), owned by its adapter.
    pub code: CodeConfig,
    /// The Hailuo upstream's settings (`HAILUO_*`), owned by its adapter.
    pub hailuo: HailuoConfig,
    /// The MiniMax Agent upstream's settings (`AGENT_*`), owned by its adapter.
    pub agent: AgentConfig,
    /// Model names mapped to the upstream's, `MODEL_MAP`: `pattern=model`
    /// pairs, comma-separated, first match wins (see `ModelMap`).
    pub model_map: ModelMap,
    /// Time to the first upstream event, `UPSTREAM_FIRST_BYTE_TIMEOUT_MS` (30 s).
    pub first_byte_timeout: Duration,
    /// Longest silence between upstream events, `UPSTREAM_IDLE_TIMEOUT_MS` (60 s).
    pub idle_timeout: Duration,
    /// Longest whole answer, `UPSTREAM_TOTAL_TIMEOUT_MS` (840 s, under Lambda's 900 s cap).
    pub total_timeout: Duration,
    /// Extra tries when the upstream fails before the first byte, `UPSTREAM_RETRIES` (2).
    pub retries: u32,
    /// Pause before a retry (multiplied by the try number), `UPSTREAM_RETRY_BACKOFF_MS` (250 ms).
    pub retry_backoff: Duration,
    /// How long a request may wait for an account of its pool to be free
    /// (each account answers one chat at a time), `POOL_WAIT_MS` (30 s).
    pub pool_wait: Duration,
    /// The DynamoDB table of the pool shared by every environment of the
    /// deployment, `ACCOUNTS_TABLE` (none: each process keeps its own).
    pub accounts_table: Option<String>,
    /// The self-hosted server's second listener for `/metrics` without a
    /// key (a scraper on a private network), `METRICS_LISTEN_ADDR` (none:
    /// `/metrics` on the main listener, for admin keys only).
    pub metrics_listen_addr: Option<String>,
    /// How long an account's lease in that table lasts unless its answer
    /// renews it (every third of it), `POOL_LEASE_TTL_MS` (15 s): how long
    /// an account stays taken after its environment died mid-answer.
    pub lease_ttl: Duration,
    /// Largest request body accepted, `MAX_REQUEST_BYTES` (6 MiB, the function URL cap).
    pub max_request_bytes: usize,
    /// Secret mode: the tokens secret (name or ARN), `TOKENS_SECRET_ID`.
    pub tokens_secret_id: Option<String>,
    /// The self-hosted server's tokens document, `TOKENS_FILE`: the tokens
    /// secret's JSON in a file (used when `TOKENS_SECRET_ID` is not set).
    pub tokens_file: Option<String>,
    /// Where the server keeps MiniMax Code's rotated tokens, `TOKENS_STATE_FILE`
    /// (default: `TOKENS_FILE` with `.state.json` appended); see `tokens_state_file`.
    pub tokens_state_file_setting: Option<String>,
    /// How often the server checks the tokens of `TOKENS_FILE`,
    /// `LIVENESS_INTERVAL_SECONDS` (6 hours, as the Lambda schedule; 0: never).
    pub liveness_interval: Duration,
    /// The token status document the liveness function writes, `TOKEN_STATUS_SECRET_ID`.
    pub token_status_secret_id: Option<String>,
    /// In secret mode, let callers without a valid key bring tokens, `ALLOW_HEADER_TOKENS`.
    pub allow_header_tokens: bool,
    /// How long the tokens secret is cached, `SECRET_CACHE_TTL_SECONDS` (300).
    pub secret_cache_ttl: Duration,
    /// How long the status document is cached, `STATUS_CACHE_TTL_SECONDS` (as the tokens).
    pub status_cache_ttl: Duration,
    /// How long a token rejected upstream is skipped, `DEAD_TOKEN_MEMORY_SECONDS` (600).
    pub dead_token_memory: Duration,
    /// Tokens checked at once by the liveness function, `LIVENESS_CONCURRENCY` (4).
    pub liveness_concurrency: usize,
    /// What the gateway's API keys start with, `API_KEY_PREFIX` (`sk-`): a bearer
    /// with this prefix is never forwarded upstream as a token.
    pub api_key_prefix: String,
    /// Origins browsers may call from, `CORS_ALLOW_ORIGINS`: `*` (default), a
    /// comma-separated list, or `none` (empty here) to answer no CORS at all.
    pub cors_allow_origins: Vec<String>,
    /// Largest file a message may bring by URL, `FILE_MAX_BYTES` (100 MB).
    pub file_max_bytes: u64,
    /// Connecting to a file's URL, `FILE_FETCH_CONNECT_TIMEOUT_MS` (10 s).
    pub file_connect_timeout: Duration,
    /// Downloading one file, `FILE_FETCH_TIMEOUT_MS` (60 s).
    pub file_fetch_timeout: Duration,
    /// Let file URLs reach private, loopback and link-local addresses,
    /// `FILE_URL_ALLOW_PRIVATE`: for local testing only, never in AWS.
    pub file_url_allow_private: bool,
    /// Hailuo voices for OpenAI's alloy, echo, fable, onyx, nova and shimmer,
    /// in that order, `REPLACE_AUDIO_MODEL` (comma-separated; fewer than six
    /// replace the first ones).
    pub replace_audio_model: Vec<String>,
    /// Longest audio transcribed, `TRANSCRIPTION_MAX_SECONDS` (1200): the
    /// mp3 sent upstream is 1.44 MB per minute.
    pub transcription_max_seconds: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self::from_lookup(|_| None)
    }
}

impl Config {
    /// The server's state file: `TOKENS_STATE_FILE`, else beside `TOKENS_FILE`.
    pub fn tokens_state_file(&self) -> Option<String> {
        self.tokens_state_file_setting.clone().or_else(|| {
            self.tokens_file
                .as_ref()
                .map(|file| format!("{file}.state.json"))
        })
    }

    pub fn from_env() -> Self {
        Self::from_settings(&Lookup::env())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        Self::from_settings(&Lookup::new(&get))
    }

    fn from_settings(env: &Lookup) -> Self {
        let (text, num, ms) = (
            |k, d| env.text(k, d),
            |k, d| env.number(k, d),
            |k, d| env.millis(k, d),
        );
        Self {
            upstreams: text("UPSTREAM", "minimax-code")
                .split(',')
                .map(|u| u.trim().to_ascii_lowercase())
                .filter(|u| !u.is_empty())
                .collect(),
            api: ApiConfig::from_lookup(env),
            minimax_api_keys: text("MINIMAX_API_KEY", "")
                .split(',')
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect(),
            hailuo: HailuoConfig::from_lookup(env),
            code: CodeConfig::from_lookup(env),
            agent: AgentConfig::from_lookup(env),
            first_byte_timeout: ms("UPSTREAM_FIRST_BYTE_TIMEOUT_MS", 30_000),
            model_map: ModelMap::parse(&text("MODEL_MAP", "")),
            idle_timeout: ms("UPSTREAM_IDLE_TIMEOUT_MS", 60_000),
            total_timeout: ms("UPSTREAM_TOTAL_TIMEOUT_MS", 840_000),
            retries: num("UPSTREAM_RETRIES", 2).min(5) as u32,
            retry_backoff: ms("UPSTREAM_RETRY_BACKOFF_MS", 250),
            pool_wait: ms("POOL_WAIT_MS", 30_000),
            accounts_table: env.value("ACCOUNTS_TABLE"),
            metrics_listen_addr: env.value("METRICS_LISTEN_ADDR"),
            lease_ttl: ms("POOL_LEASE_TTL_MS", 15_000).max(Duration::from_secs(1)),
            max_request_bytes: num("MAX_REQUEST_BYTES", 6 * 1024 * 1024) as usize,
            tokens_secret_id: env.value("TOKENS_SECRET_ID"),
            tokens_file: env.value("TOKENS_FILE"),
            tokens_state_file_setting: env.value("TOKENS_STATE_FILE"),
            liveness_interval: Duration::from_secs(num("LIVENESS_INTERVAL_SECONDS", 6 * 3600)),
            token_status_secret_id: env.value("TOKEN_STATUS_SECRET_ID"),
            allow_header_tokens: env.flag("ALLOW_HEADER_TOKENS"),
            secret_cache_ttl: Duration::from_secs(num("SECRET_CACHE_TTL_SECONDS", 300).max(1)),
            status_cache_ttl: Duration::from_secs(
                num(
                    "STATUS_CACHE_TTL_SECONDS",
                    num("SECRET_CACHE_TTL_SECONDS", 300),
                )
                .max(1),
            ),
            dead_token_memory: Duration::from_secs(num("DEAD_TOKEN_MEMORY_SECONDS", 600)),
            liveness_concurrency: num("LIVENESS_CONCURRENCY", 4).clamp(1, 32) as usize,
            api_key_prefix: text("API_KEY_PREFIX", "sk-"),
            cors_allow_origins: text("CORS_ALLOW_ORIGINS", "*")
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .filter(|o| !o.is_empty() && !o.eq_ignore_ascii_case("none"))
                .collect(),
            file_max_bytes: num("FILE_MAX_BYTES", 100 * 1024 * 1024),
            file_connect_timeout: ms("FILE_FETCH_CONNECT_TIMEOUT_MS", 10_000),
            file_fetch_timeout: ms("FILE_FETCH_TIMEOUT_MS", 60_000),
            file_url_allow_private: env.flag("FILE_URL_ALLOW_PRIVATE"),
            replace_audio_model: text("REPLACE_AUDIO_MODEL", "")
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .take(6)
                .collect(),
            transcription_max_seconds: num("TRANSCRIPTION_MAX_SECONDS", 1200).clamp(1, 7200) as u32,
        }
    }
}

/// The names clients send (`claude-sonnet-4-5`, `gpt-5-codex`, a small fast
/// model for background calls) mapped to the upstream's models: `MODEL_MAP`
/// is `pattern=model` pairs separated by commas, each pattern a shell glob
/// matched without regard to case (`*haiku*=MiniMax-M2.7-highspeed,
/// claude-*=MiniMax-M3`). The first pattern that matches wins; a name none
/// matches goes to the upstream as sent, and the upstream takes every name
/// it does not serve as its default model. Answers echo the name the caller
/// sent, whichever model served it.
#[derive(Clone, Debug, Default)]
pub struct ModelMap(Vec<(glob::Pattern, String)>);

impl ModelMap {
    /// Entries that are not `pattern=model`, or whose pattern is not a glob,
    /// are left out with a warning (the others still apply).
    pub fn parse(setting: &str) -> Self {
        let mut entries = Vec::new();
        for entry in setting.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = entry
                .split_once('=')
                .map(|(p, m)| (p.trim(), m.trim()))
                .filter(|(p, m)| !p.is_empty() && !m.is_empty())
                .and_then(|(p, m)| Some((glob::Pattern::new(p).ok()?, m.to_string())));
            match parsed {
                Some(pair) => entries.push(pair),
                None => tracing::warn!(
                    entry,
                    "MODEL_MAP entry left out: write pattern=model, the pattern a glob such as claude-*"
                ),
            }
        }
        Self(entries)
    }

    /// The upstream model for `name`, when a pattern matches it.
    pub fn resolve(&self, name: &str) -> Option<&str> {
        let options = glob::MatchOptions {
            case_sensitive: false,
            require_literal_separator: false,
            require_literal_leading_dot: false,
        };
        self.0
            .iter()
            .find(|(pattern, _)| pattern.matches_with(name, options))
            .map(|(_, model)| model.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_map_takes_the_first_glob_that_matches_in_any_case() {
        let map = ModelMap::parse(
            " *haiku*=MiniMax-M2.7-highspeed, claude-*=MiniMax-M3 ,gpt-5?codex=MiniMax-M3.1-Flash-Preview, nonsense, [=x",
        );
        assert_eq!(map.0.len(), 3, "the broken entries are left out");
        assert_eq!(
            map.resolve("claude-3-5-HAIKU-latest"),
            Some("MiniMax-M2.7-highspeed")
        );
        assert_eq!(map.resolve("Claude-Sonnet-4-5"), Some("MiniMax-M3"));
        assert_eq!(
            map.resolve("gpt-5-codex"),
            Some("MiniMax-M3.1-Flash-Preview")
        );
        assert_eq!(map.resolve("gpt-4o"), None);
        assert_eq!(ModelMap::parse("").resolve("claude-x"), None);
    }

    #[test]
    fn defaults_and_overrides() {
        let c = Config::default();
        assert_eq!(c.hailuo.base_url, "https://hailuoai.com");
        assert_eq!(c.retries, 2);
        let c = Config::from_lookup(|k| match k {
            "HAILUO_BASE_URL" => Some("http://127.0.0.1:1/".into()),
            "UPSTREAM_RETRIES" => Some("nonsense".into()),
            "UPSTREAM_IDLE_TIMEOUT_MS" => Some("1500".into()),
            _ => None,
        });
        assert_eq!(c.hailuo.base_url, "http://127.0.0.1:1");
        assert_eq!(c.retries, 2, "unparsable values fall back to the default");
        assert_eq!(c.idle_timeout, Duration::from_millis(1500));
        assert!(c.tokens_secret_id.is_none() && !c.allow_header_tokens);
        let c = Config::from_lookup(|k| match k {
            "TOKENS_SECRET_ID" => Some("gw/tokens".into()),
            "ALLOW_HEADER_TOKENS" => Some("TRUE".into()),
            "SECRET_CACHE_TTL_SECONDS" => Some("60".into()),
            _ => None,
        });
        assert_eq!(c.tokens_secret_id.as_deref(), Some("gw/tokens"));
        assert!(c.allow_header_tokens);
        assert_eq!(
            c.status_cache_ttl,
            Duration::from_secs(60),
            "status follows the tokens TTL"
        );
    }

    /// Every setting a deployment can be given is a row of
    /// docs/configuration.md, and every row is a setting: the names are
    /// those the code looks up (recorded by running each reader with a
    /// lookup that answers nothing, then everything), and the few read
    /// around the reader, each checked to be in its source.
    #[test]
    fn the_configuration_table_is_what_the_code_reads() {
        use std::cell::RefCell;
        use std::collections::BTreeSet;
        let read = RefCell::new(BTreeSet::new());
        // Every reader, with a lookup that answers `unset` for the names in
        // it and "1" for every other.
        let run = |unset: &dyn Fn(&str) -> bool| {
            let record = |k: &str| {
                read.borrow_mut().insert(k.to_string());
                (!unset(k)).then(|| "1".to_string())
            };
            Config::from_lookup(record);
            let env = Lookup::new(&record);
            crate::runtime::ServerSettings::from_lookup(&env);
            crate::credentials::secrets_manager::SecretsManager::from_lookup(&env, "test");
        };
        run(&|_| true);
        run(&|_| false);
        // A name read only when another is unset (a fallback) shows up
        // when that one alone is.
        let seen: Vec<String> = read.borrow().iter().cloned().collect();
        for name in &seen {
            run(&|k| k == name);
        }
        let around = [
            ("RUST_LOG", include_str!("runtime.rs")),
            ("SSL_CERT_FILE", include_str!("upstream/browser.rs")),
        ];
        for (name, source) in around {
            assert!(
                source.contains(&format!("\"{name}\"")),
                "{name} is no longer read"
            );
            read.borrow_mut().insert(name.to_string());
        }
        // reqwest reads these itself, for the upstream calls.
        for name in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"] {
            read.borrow_mut().insert(name.to_string());
        }
        let table = include_str!("../../docs/configuration.md");
        let mut documented = BTreeSet::new();
        for row in table.lines().filter(|l| l.starts_with("| `")) {
            let first = row.split('|').nth(1).unwrap_or_default();
            for name in first.split('`').skip(1).step_by(2) {
                let setting = name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                if setting && !name.is_empty() {
                    documented.insert(name.to_string());
                }
            }
        }
        let read = read.into_inner();
        let missing: Vec<_> = read.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&read).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "docs/configuration.md lacks {missing:?} and names {stale:?}, which nothing reads"
        );
    }
}
