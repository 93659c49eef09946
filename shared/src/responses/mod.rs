//! The OpenAI Responses surface (`POST /v1/responses`, stateless): Codex's
//! and the Agents SDK's door. Requests into the one internal conversation
//! (`request.rs`), the reply's pieces out as a response object and its
//! event stream (`encode.rs`). Errors are OpenAI's (`error.rs` at the crate
//! root), as on chat completions. Nothing here knows which upstream answers.

pub(crate) mod encode;
pub(crate) mod request;
