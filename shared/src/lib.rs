//! MiniMax's models (MiniMax Code's model gateway, and the Hailuo AI and
//! MiniMax Agent web chats) behind an OpenAI-compatible API: the library
//! every Lambda function in this workspace is wired from. The functions'
//! `main.rs` files only build the state once per execution environment and
//! run one of the routers below.
//!
//! # The path of a chat request
//!
//! The request is checked at the door (CORS, body limit, who is calling and
//! with which tokens) and parsed into typed, borrowed fields: one internal
//! [`conversation::Conversation`], the same for every door. The
//! conversation layer (`reply.rs`) is the one place that looks at what the
//! upstream does natively: an upstream that understands conversations gets
//! it as it is; a text-only web chat gets it flattened into one prompt, with
//! tools and JSON answers emulated through the nonce contract. It tries the
//! deployment's upstreams in their order (`UPSTREAM=minimax-code,minimax-api`),
//! moving on only when no account of one can answer now. `answer`
//! then leases a free account of the request's pool and opens the upstream
//! answer, retrying elsewhere only while the upstream has not accepted the
//! turn (accounts cool by error class: throttled, out of credits, blocked).
//! The answer's pieces become OpenAI chunks in a task that owns the reply,
//! so a caller that goes away cannot cancel the cleanup; that task sends the
//! end of the answer, deletes what the answer left upstream and gives the
//! account back, and only then lets the response end (Lambda freezes the
//! environment once it has).
//!
//! ```text
//! function URL / server ── runtime.rs (Lambda loop, restarted if a response cannot be delivered)
//!   └─ routes/chat.rs, messages.rs, responses.rs ── CORS, limits   (the three doors)
//!        ├─ credentials/   caller → tokens (header mode, or a tokens document + API keys;
//!        │                 MiniMax Code accounts' current access tokens)
//!        ├─ openai/chat.rs, anthropic/request.rs, responses/request.rs
//!        │                 request → Conversation (typed, validated fields)
//!        └─ reply.rs       the conversation layer: native, or the text-chat layer
//!             ├─ (text chats) structured/ + prompt.rs: the contract, one prompt; Reader + correction turn
//!             ├─ files/    the last message's files → bytes (data URLs, safe fetching)
//!             └─ answer.rs lease an account → Upstream::chat(Turn) → first event (or retry elsewhere)
//!                  └─ upstream/ code/ (Anthropic Messages), api/ (the paid platform's
//!                     OpenAI chat), hailuo/ (SSE), agent/ (send, then poll)
//!   pieces (text, reasoning, tool calls, stop, usage) → the door's encoder (openai/encode.rs,
//!     anthropic/encode.rs, responses/encode.rs) → routes/stream.rs: keep-alives, the end
//!     → cleanup → the close (usage, [DONE]; message_stop) → end
//! ```
//!
//! Speech takes the same path to an account: `speech.rs` leases one with
//! `answer::on_an_account`, has the model repeat the text, sets the voice
//! and polls the synthesis, and the route streams the mp3 parts (or PCM
//! decoded from them by `audio/`) before deleting the repeat conversation.
//! A transcription is decoded and re-encoded by `audio/` on a blocking
//! thread, then sent as the voice call on a leased account.
//!
//! # Layout, and which way dependencies point
//!
//! routes (doors) → reply (the conversation layer) → answer (the pool) →
//! upstream; reply → prompt, structured (the text-chat layer), files;
//! routes → credentials; routes → speech → answer; routes → audio.
//! `conversation` is a leaf every layer reads. Adapters (`upstream/code`,
//! `upstream/hailuo`, `upstream/agent`) know nothing of any door, of
//! credentials or of the gateway's config: each owns its config type, built
//! from the settings reader with its prefix.
//!
//! - `conversation.rs`: the one internal conversation (messages, tools,
//!   answer format, thinking, the output cap), stop reasons, token usage.
//! - `reply.rs`: a conversation answered, as door-neutral pieces.
//! - `routes/`: one `Router` per function (`chat` with `chat_tests.rs` and
//!   `chat_native_tests.rs`, `messages`, `responses`, `models`,
//!   `token_check`, `speech`, `transcription`, `admin`: the operator's view
//!   of the pool, `prometheus`: the server's `/metrics`), with the
//!   fallbacks, limits, CORS and measurements (`measure.rs`) they share; `stream.rs`, one streamed answer in any door's
//!   dialect.
//! - `anthropic/`: the Messages door (request, message and events, errors
//!   in Anthropic's shape); `responses/`: the Responses door (request,
//!   items and events); `wire.rs`: what their typed parsers share.
//! - `openai/`: the OpenAI surface: request parsing (`chat.rs`), chunk and
//!   completion encoding, usage estimates, the model list.
//! - `structured/`: tool calls and JSON answers over chats that have neither:
//!   the instruction, the tag scanner (`scan.rs`), schema checks
//!   (`schema.rs`), JSON out of prose (`json_text.rs`). Sans I/O.
//! - `files/`: documents and images a message carries, as bytes: data URLs,
//!   safe URL fetching (`fetch.rs`), types sniffed from the bytes.
//! - `prompt.rs`: messages flattened into a web chat's one text.
//! - `speech.rs`: synthesis and recognition on an account of the pool: on
//!   the paid platform with a platform key (`Platform`), else Hailuo's
//!   repeat turn and voice call; OpenAI voices mapped to each one's.
//! - `metrics.rs`: requests, lease waits, refreshes, fallbacks, unanswerable
//!   requests and pool states, in one Prometheus registry (the server's
//!   `/metrics`) and as EMF lines on Lambda.
//! - `audio/`: codecs in-process (decode any accepted file, encode the
//!   voice call's mp3, mp3 parts to 24 kHz PCM). Sans I/O; imports nothing
//!   of ours.
//! - `credentials/`: header or secret mode, API keys, admin keys;
//!   `secret.rs` (Secrets Manager documents), `secrets_manager.rs` (its four
//!   calls), `renewal.rs` (MiniMax Code's rotating refresh tokens, spent by
//!   one writer under the table's refresh lock).
//! - `pool/`: the account pool: `local.rs` (this process's tokens seen dead,
//!   accounts cooling, accounts in use), `store.rs` (the shared store's
//!   trait), `table.rs` (DynamoDB's accounts table), `fake.rs` (tests), and
//!   `SharedPool` (`mod.rs`: leases renewed while an answer lasts, marks
//!   seen by every environment, named locks).
//! - `aws.rs`: the AWS SDK's configuration, one per process: credentials
//!   (the environment on Lambda, the default chain on the server), the
//!   SDK's requests over our reqwest, retries and timeouts.
//! - `answer.rs`: one upstream answer: lease, open with retries, timeouts,
//!   cleanup.
//! - `upstream/`: the `Upstream` trait (`Turn`, `Capabilities`) and its
//!   events, and `Voice` (speech, Hailuo's only, for the functions that ask
//!   for it); `sse.rs` (an SSE answer through a protocol's frame decoder);
//!   what both web protocols share (`browser.rs`: HTTP client, browser
//!   profile, signed calls, registration; `signing.rs`, `envelope.rs`,
//!   `query_string.rs`, `device.rs`, `cumulative.rs`); the adapters `code/`
//!   (MiniMax Code: config, models, request, stream, errors, oauth, client),
//!   `api/` (MiniMax's paid platform: chat, T2A, ASR), `hailuo/` and
//!   `agent/`.
//! - `liveness.rs`: the scheduled maintenance (renewals, then the token
//!   check) and its metric line; the server's state file.
//! - `login.rs`: `gateway login`, the device flow that adds an account.
//! - `config.rs`: the gateway's settings, holding each adapter's own.
//! - `error.rs`: `ApiError`, every failure as an OpenAI error and status.
//! - `runtime.rs`: Lambda (streamed or buffered) or a local server with a
//!   graceful shutdown; logs.
//! - `server.rs`: the self-hosted server: every route (`routes::all`) on one
//!   port, tokens from the header or `TOKENS_FILE` (`credentials/document.rs`),
//!   the maintenance on a timer in-process.
//! - `caller.rs`: whether a request's caller is still there (a server
//!   drops the handler), so that a request still waiting for an account stops.
//! - `settings.rs`, `redact.rs`, `text.rs`: leaves that import nothing of ours
//!   (the settings reader, fingerprints, character-safe cuts).
//! - `testing.rs` (tests only): a scripted upstream for in-process tests, as
//!   a web chat or (`native()`) as an upstream that takes conversations.

mod answer;
mod anthropic;
mod audio;
mod aws;
mod caller;
mod config;
pub mod conversation;
mod credentials;
mod error;
mod files;
mod liveness;
pub mod login;
mod metrics;
mod openai;
mod pool;
mod prompt;
mod redact;
mod reply;
mod responses;
pub mod routes;
mod runtime;
mod server;
pub mod settings;
mod speech;
mod structured;
#[cfg(test)]
mod testing;
mod text;
pub mod upstream;
mod wire;

use std::sync::Arc;

pub use config::Config;
pub use credentials::secrets_manager::SecretsManager;
pub use files::pdf::serve_child_if_asked as serve_pdf_child_if_asked;
pub use liveness::{check_all, emf_line};
pub use routes::AppState;
pub use runtime::{init_tracing, run, serve, Delivery};
pub use server::run_server;

/// How a function that speaks gets Hailuo's voice: a function pointer,
/// passed only by `voice_state_from_env`, so that the `Voice`
/// implementation is linked into the functions that speak and no other.
type WithVoice = fn(Arc<upstream::hailuo::HailuoClient>) -> Arc<dyn upstream::Voice>;

/// The chat upstreams in the order they are tried, the first one's voice
/// when it has one and it was asked for, and the chain's `minimax-api`
/// client when it lists one (the functions that speak reuse it for the
/// platform rather than opening a second connection pool).
type Upstreams = (
    Arc<[Arc<dyn upstream::Upstream>]>,
    Option<Arc<dyn upstream::Voice>>,
    Option<Arc<upstream::api::ApiClient>>,
);

/// The upstreams this deployment talks to (`UPSTREAM`, in order), and the
/// voice of the first if `with_voice` asks for it and it has one (Hailuo).
///
/// At most one of the free upstreams is listed: their tokens look alike
/// and a token one rejects would be counted dead for the other. Platform
/// keys are told apart (`credentials::is_platform_key`, the document's own
/// list), so `minimax-api` goes before or after any of them.
fn upstreams(
    config: &Config,
    with_voice: Option<WithVoice>,
) -> Result<Upstreams, lambda_http::Error> {
    let mut chain: Vec<Arc<dyn upstream::Upstream>> = Vec::new();
    let mut voice = None;
    let mut api = None;
    for name in &config.upstreams {
        let next: Arc<dyn upstream::Upstream> = match name.as_str() {
            "hailuo" => {
                let client = Arc::new(upstream::hailuo::HailuoClient::new(config.hailuo.clone())?);
                if chain.is_empty() {
                    voice = with_voice.map(|voice| voice(client.clone()));
                }
                client
            }
            "minimax-agent" | "agent" => {
                Arc::new(upstream::agent::AgentClient::new(config.agent.clone())?)
            }
            "minimax-code" | "code" => {
                Arc::new(upstream::code::CodeClient::new(config.code.clone())?)
            }
            "minimax-api" | "api" => {
                let client = Arc::new(upstream::api::ApiClient::new(config.api.clone())?);
                api = Some(client.clone());
                client
            }
            other => {
                return Err(format!(
                    "UPSTREAM lists `minimax-code`, `minimax-api`, `hailuo` or `minimax-agent` \
                     (comma-separated, in the order to try them), not {other:?}"
                )
                .into())
            }
        };
        if chain.iter().any(|u| u.id() == next.id()) {
            return Err(format!("UPSTREAM lists {} twice", next.id()).into());
        }
        chain.push(next);
    }
    let free = chain.iter().filter(|u| u.id() != "minimax-api").count();
    if free > 1 {
        return Err(
            "UPSTREAM lists more than one of minimax-code, hailuo and minimax-agent: \
                    their tokens cannot be told apart, so a deployment uses one of them, with \
                    minimax-api before or after it"
                .into(),
        );
    }
    if chain.is_empty() {
        return Err(
            "UPSTREAM is empty: name minimax-code, minimax-api, hailuo or minimax-agent".into(),
        );
    }
    Ok((chain.into(), voice, api))
}

/// The first upstream this deployment talks to (`UPSTREAM`), without its voice.
pub fn upstream_from_config(
    config: &Config,
) -> Result<Arc<dyn upstream::Upstream>, lambda_http::Error> {
    Ok(upstreams(config, None)?.0[0].clone())
}

/// State built from the environment, once per execution environment, for
/// the functions that do not speak. `function` names the function in the
/// user agent of its Secrets Manager calls.
pub async fn state_from_env(function: &str) -> Result<AppState, lambda_http::Error> {
    state_with(function, None).await
}

/// `state_from_env` with the upstream's voice: the speech and transcription
/// functions and the server.
pub async fn voice_state_from_env(function: &str) -> Result<AppState, lambda_http::Error> {
    state_with(function, Some(|client| client)).await
}

async fn state_with(
    function: &str,
    with_voice: Option<WithVoice>,
) -> Result<AppState, lambda_http::Error> {
    let config = Arc::new(Config::from_env());
    let (upstreams, voice, api) = upstreams(&config, with_voice)?;
    let mut credentials = credentials::Credentials::from_env(&config, function).await?;
    if with_voice.is_some() {
        credentials = credentials.taking_platform_keys();
    }
    let credentials = Arc::new(credentials);
    let fetcher = files::fetch::Fetcher::from_config(&config)?;
    // The functions that speak reach the platform whenever a request has a
    // key for it, whatever the chat upstreams are: through the chain's
    // client when it has one.
    let platform = match (with_voice, api) {
        (Some(_), Some(api)) => Some(api),
        (Some(_), None) => Some(Arc::new(upstream::api::ApiClient::new(config.api.clone())?)),
        (None, _) => None,
    };
    Ok(AppState {
        config,
        upstreams,
        voice,
        platform,
        credentials,
        fetcher,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(upstream: &str) -> Config {
        Config::from_lookup(|k| (k == "UPSTREAM").then(|| upstream.to_string()))
    }

    fn error(upstream: &str) -> String {
        match upstreams(&config(upstream), None) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("UPSTREAM={upstream} was taken"),
        }
    }

    #[test]
    fn the_chains_platform_client_is_the_one_handed_back() {
        let (chain, voice, api) = upstreams(&config("minimax-code,minimax-api"), None).unwrap();
        let ids: Vec<_> = chain.iter().map(|u| u.id()).collect();
        assert_eq!(ids, ["minimax-code", "minimax-api"]);
        assert!(voice.is_none(), "not asked for");
        let api = api.expect("the chain lists minimax-api");
        assert_eq!(
            Arc::as_ptr(&chain[1]) as *const (),
            Arc::as_ptr(&api) as *const (),
            "one client, not two"
        );
        let (_, _, none) = upstreams(&config("minimax-code"), None).unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn a_chain_that_cannot_work_is_refused_saying_why() {
        assert!(error("minimax-code,minimax-code").contains("lists minimax-code twice"));
        assert!(error("hailuo,minimax-code").contains("more than one of"));
        assert!(error("openai").contains("not \"openai\""));
    }
}
