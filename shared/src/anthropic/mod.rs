//! The Anthropic Messages surface (`POST /v1/messages`, `count_tokens`):
//! requests into the one internal conversation (`request.rs`), the reply's
//! pieces out as Anthropic's message object and event stream
//! (`encode.rs`), every failure in Anthropic's error shape (`error.rs`).
//! Nothing here knows which upstream answers.

pub(crate) mod encode;
pub(crate) mod error;
pub(crate) mod request;
