//! MiniMax's paid platform (`minimax-api-protocol.md`): the OpenAI-compatible
//! chat completions endpoint, reached with an API key (`sk-api-…`
//! pay-as-you-go or `sk-cp-…` Token Plan) bound to one region.
//!
//! The fallback a deployment reaches when its free accounts cannot answer,
//! or a paid-only gateway on its own. It takes the conversation as it is:
//! roles, native tools (only `auto` and `none` exist upstream, so a forced
//! tool is the one tool offered), images on M3, tool history; thinking comes
//! back inline (`<think>…</think>` at the start of the content) or split
//! out (`reasoning_split`), and both are read, so `<think>` text never
//! reaches a caller's content. Nothing is left upstream to delete.
//!
//! - `config.rs`: `MINIMAX_API_*`, regions, the hosts a key may go to.
//! - `models.rs`: which names pass through, which are rewritten (2.1).
//! - `request.rs`: the conversation as a chat completions body (2.2, 2.3).
//! - `stream.rs`: the stream's frames decoded, quirks absorbed (2.4, 2.6).
//! - `errors.rs`: the code table (3.3) as the pool's classes.
//! - `client.rs`: the HTTP calls of chat and the key check.
//! - `speech.rs`: T2A v2 synthesis and `asr-1.0` recognition.

mod client;
pub(crate) mod config;
mod errors;
mod models;
mod request;
pub(crate) mod speech;
mod stream;

pub use client::ApiClient;
pub use config::ApiConfig;
