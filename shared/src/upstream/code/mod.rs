//! MiniMax Code's managed model gateway (`minimax-code-protocol.md`): an
//! Anthropic Messages endpoint on MiniMax's agent hosts, reached with the
//! OAuth access tokens (`mmoat_…`, an hour each) of a device login.
//!
//! The one upstream that takes the conversation as it is: roles, tools and
//! `tool_choice`, tool history, images and text documents, thinking asked
//! for or not per model; its tool calls, signed thinking, stop reason and
//! real usage come back as they are. Nothing is left upstream to delete.
//!
//! - `config.rs`: `MINIMAX_CODE_*`, regions, the hosts a bearer may go to.
//! - `models.rs`: the catalogue and each model's rules (thinking, images,
//!   limits); other names map to the default model.
//! - `request.rs`: the conversation as a Messages body, from borrowed parts.
//! - `stream.rs`: the event stream decoded (sans I/O).
//! - `errors.rs`: section 6's classes (dead, cooling and why, the caller's
//!   400 or 413, the upstream's fault).
//! - `client.rs`: the HTTP calls of the messages route.
//! - `oauth.rs`: the account service (device flow, refresh grant).
//! - `quota.rs`: credits and plan windows, for the operator's view.

mod client;
pub(crate) mod config;
mod errors;
mod models;
pub mod oauth;
mod quota;
mod request;
mod stream;

pub use client::CodeClient;
pub use config::CodeConfig;
