//! The upstream side: a small trait every chat backend implements, and the
//! events it produces. Adapters know nothing of OpenAI, or of any door: they
//! take the internal conversation (`crate::conversation`), as it is when
//! they understand it ([`Capabilities::conversation`]), else flattened by
//! the text-chat layer into a [`ChatTurn`].

pub(crate) mod agent;
pub mod api;
pub(crate) mod browser;
pub mod code;
pub(crate) mod cumulative;
pub(crate) mod device;
pub(crate) mod envelope;
pub mod hailuo;
pub(crate) mod query_string;
pub(crate) mod signing;
pub(crate) mod sse;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;

use crate::conversation::{Conversation, StopReason, TokenUsage};

/// A web-search source reported by the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Citation {
    pub title: String,
    pub url: String,
}

/// What an upstream chat produces, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum UpstreamEvent {
    /// The upstream conversation (and assistant message) this answer lives in.
    Conversation {
        chat_id: String,
        message_id: Option<String>,
    },
    /// New answer text.
    Delta(String),
    /// New reasoning ("thinking") text.
    ReasoningDelta(String),
    /// The signature of the reasoning just given (a native upstream signs
    /// its thinking; the caller may send it back with the thinking).
    ReasoningSignature(String),
    /// A tool call begins: `index` counts this answer's calls from 0.
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// More of a tool call's arguments (JSON text, in pieces).
    ToolCallArguments { index: usize, json: String },
    /// The web-search sources so far (replaces any earlier list).
    Citations(Vec<Citation>),
    /// Why the answer ended, from an upstream that says (before `End`).
    Stop(StopReason),
    /// What the answer cost, from an upstream that counts (before `End`).
    Usage(TokenUsage),
    /// The upstream is still there (a keep-alive): no content, but the
    /// answer's idle timer starts again. Never passed on to a reader.
    Alive,
    /// The answer is complete.
    End,
}

pub type EventStream = BoxStream<'static, Result<UpstreamEvent, UpstreamError>>;

/// What an upstream does natively. A text-only web chat does none of it:
/// the text-chat layer flattens the conversation for it and emulates tools
/// and JSON answers in the prompt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Takes the conversation as it is ([`Turn::Conversation`]): roles,
    /// tools and `tool_choice`, tool calls and results, and answers with
    /// native tool calls, a stop reason and its own usage count.
    pub conversation: bool,
    /// Takes images.
    pub images: bool,
    /// Takes documents (as files; a native upstream gets their text).
    pub documents: bool,
    /// Takes text documents but not PDFs: a PDF goes as its text, extracted
    /// by the gateway (`files/pdf.rs`).
    pub pdf_as_text: bool,
    /// Whether thinking can be asked for or turned off.
    pub thinking_control: bool,
    /// Leaves a conversation upstream that must be deleted after the answer
    /// (and can be kept and continued).
    pub conversations_to_delete: bool,
}

impl Capabilities {
    /// An upstream that takes the conversation as it is (MiniMax Code, the
    /// paid platform): tools, images, text documents and PDFs as their
    /// text, thinking control; nothing left upstream.
    pub const NATIVE: Capabilities = Capabilities {
        conversation: true,
        images: true,
        documents: true,
        pdf_as_text: true,
        thinking_control: true,
        conversations_to_delete: false,
    };
}

/// One turn to send upstream, in the form the upstream takes.
#[derive(Clone, Copy, Debug)]
pub enum Turn<'a> {
    /// For a text-only web chat: the conversation flattened into one prompt.
    Text(&'a ChatTurn),
    /// For an upstream that understands conversations: as it is, with the
    /// files of its last message fetched.
    Conversation {
        conversation: &'a Conversation,
        files: &'a [Arc<FileUpload>],
    },
}

impl Turn<'_> {
    /// The upstream conversation this turn continues, if any.
    pub fn continues(&self) -> Option<&str> {
        match self {
            Turn::Text(turn) => turn.conversation_id.as_deref(),
            Turn::Conversation { .. } => None,
        }
    }
}

/// The flattened turn a text-only web chat takes; a conversation sent to
/// one is a bug of the text-chat layer, not the caller's.
pub(crate) fn text_turn<'a>(turn: &Turn<'a>) -> Result<&'a ChatTurn, UpstreamError> {
    match turn {
        Turn::Text(turn) => Ok(turn),
        Turn::Conversation { .. } => Err(UpstreamError::Protocol(
            "a text-only upstream was sent a conversation, not its flattened turn".into(),
        )),
    }
}

/// The conversation a native upstream takes, and its files; a flattened
/// turn sent to one is a bug of the conversation layer, not the caller's.
pub(crate) fn conversation_turn<'a>(
    turn: &Turn<'a>,
    upstream: &str,
) -> Result<(&'a Conversation, &'a [Arc<FileUpload>]), UpstreamError> {
    match turn {
        Turn::Conversation {
            conversation,
            files,
        } => Ok((conversation, files)),
        Turn::Text(_) => Err(UpstreamError::Protocol(format!(
            "{upstream} takes the conversation as it is, not a flattened prompt"
        ))),
    }
}

/// One flattened turn, for a text-only web chat.
#[derive(Clone, Debug, Default)]
pub struct ChatTurn {
    /// The flattened prompt.
    pub prompt: String,
    /// Continue this upstream conversation instead of starting one.
    pub conversation_id: Option<String>,
    /// Files the turn carries; the adapter sends them as its protocol says
    /// (again for every account it is tried on: an upload is the account's).
    pub files: Vec<std::sync::Arc<FileUpload>>,
}

/// A file's bytes, typed, ready to send.
pub struct FileUpload {
    /// The name the caller gave it (or one made up from its type).
    pub original_name: String,
    /// The extension for its type, without a dot.
    pub extension: String,
    pub mime: String,
    /// An image (the chat form's type 2), else a document (6).
    pub image: bool,
    pub bytes: bytes::Bytes,
}

impl std::fmt::Debug for FileUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileUpload")
            .field("original_name", &self.original_name)
            .field("mime", &self.mime)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// Why an upstream call failed. Messages never contain a token.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum UpstreamError {
    /// The upstream rejected the account's token (expired, logged out).
    #[error("the token {fingerprint} was rejected upstream: {message}")]
    TokenRejected {
        fingerprint: String,
        message: String,
    },
    /// The token cannot be used at all (malformed), found without calling upstream.
    #[error("the token {fingerprint} cannot be used: {message}")]
    InvalidToken {
        fingerprint: String,
        message: String,
    },
    /// The account is busy with another answer (one answer per account at a time).
    #[error("the account {fingerprint} is busy with another answer: {message}")]
    Busy {
        fingerprint: String,
        message: String,
    },
    /// The account cannot answer for a while (throttled, out of credits,
    /// its plan's window used up, blocked, or its region refusing this
    /// network): it cools for `retry_after`, and another account is tried.
    #[error("the account {fingerprint} is {class}: {message}")]
    Cooling {
        fingerprint: String,
        class: Unavailability,
        message: String,
        retry_after: Duration,
    },
    /// The upstream refused the request itself (not the token's fault): no retry helps.
    #[error("upstream refused the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    /// The caller's request is invalid for this upstream (a parameter, the
    /// context window): the caller's 400, never retried. `code` is the
    /// error code the caller sees.
    #[error("{message}")]
    InvalidRequest { message: String, code: &'static str },
    /// The request is larger than the upstream takes: the caller's 413.
    #[error("{0}")]
    TooLarge(String),
    /// The upstream answered with a failure code.
    #[error("upstream error {code}: {message}")]
    Api { code: i64, message: String },
    /// The upstream answered with a failing HTTP status.
    #[error("upstream HTTP {status}: {message}")]
    Http { status: u16, message: String },
    /// The upstream did not answer in time.
    #[error("upstream timed out: {0}")]
    Timeout(String),
    /// The connection failed or broke.
    #[error("upstream connection failed: {0}")]
    Transport(String),
    /// The upstream sent something that does not follow the protocol.
    #[error("upstream sent a malformed answer: {0}")]
    Protocol(String),
    /// This upstream cannot do what was asked.
    #[error("{0}")]
    Unsupported(String),
}

/// Why an account cannot answer for a while (`UpstreamError::Cooling`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailability {
    /// A short rate limit (requests or tokens per minute).
    Throttled,
    /// Out of credits until they are topped up.
    NoCredits,
    /// The plan's usage window is used up until it resets.
    PlanWindow,
    /// Blocked for unusual activity.
    Blocked,
    /// The account's region refuses this deployment's network.
    EgressRefused,
}

impl Unavailability {
    pub fn as_str(self) -> &'static str {
        match self {
            Unavailability::Throttled => "throttled",
            Unavailability::NoCredits => "out of credits",
            Unavailability::PlanWindow => "at its plan's usage limit",
            Unavailability::Blocked => "blocked for unusual activity",
            Unavailability::EgressRefused => "refused for this network (egress)",
        }
    }
}

impl std::fmt::Display for Unavailability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl UpstreamError {
    /// Whether trying again (on another token, after a pause) could help.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            UpstreamError::Unsupported(_)
                | UpstreamError::Rejected { .. }
                | UpstreamError::InvalidRequest { .. }
                | UpstreamError::TooLarge(_)
        )
    }

    /// An HTTP failure status, classified: 4xx other than auth, timeout and
    /// rate limiting means the request itself was refused.
    pub fn from_status(status: u16, message: String) -> Self {
        match status {
            400..=499 if !matches!(status, 401 | 403 | 408 | 429) => {
                UpstreamError::Rejected { status, message }
            }
            _ => UpstreamError::Http { status, message },
        }
    }
}

impl From<reqwest::Error> for UpstreamError {
    fn from(e: reqwest::Error) -> Self {
        // reqwest errors carry the URL, never headers; the URL is dropped anyway.
        let e = e.without_url();
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        let mut broken_connection = false;
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            broken_connection |=
                cause.is::<std::io::Error>() || cause.to_string().contains("connection");
            source = cause.source();
        }
        if e.is_timeout() {
            UpstreamError::Timeout(message)
        } else if e.is_decode() && !broken_connection {
            UpstreamError::Protocol(message)
        } else {
            UpstreamError::Transport(message)
        }
    }
}

/// A chat backend.
#[async_trait]
pub trait Upstream: Send + Sync + 'static {
    /// Short name for logs and errors.
    fn name(&self) -> &'static str;

    /// Its `UPSTREAM` name (`minimax-code`, `minimax-api`, `hailuo`,
    /// `minimax-agent`): the `x-gateway-upstream` header, metrics.
    fn id(&self) -> &'static str;

    /// What a caller whose token was rejected should do (where to get a new one).
    fn login_hint(&self) -> &'static str;

    /// Whether the adapter itself decides when an answer has stopped making
    /// progress (the agent's polling gives up when the answer stops growing).
    /// Then the caller's first-byte and idle timeouts stay out of the way, so
    /// one component owns "no progress" and a turn is not abandoned (and
    /// re-sent elsewhere) while the adapter still waits for it.
    fn watches_progress(&self) -> bool {
        false
    }

    /// Whether an account answers any number of requests at once (a paid
    /// key, limited by rate, not by one answer at a time): then the pool
    /// holds no lease on it, and requests never wait for each other.
    fn answers_concurrently(&self) -> bool {
        false
    }

    /// The model names it serves, for the model list (any other name is
    /// still answered, by its default model). The web chats pick no model:
    /// the names their clients have used are listed.
    fn models(&self) -> Vec<String> {
        [
            "hailuo",
            "MiniMax-Text-01",
            "MiniMax-VL-01",
            "MiniMax-M1",
            "MiniMax-M2.5",
            "MiniMax-M2.7",
        ]
        .map(str::to_string)
        .to_vec()
    }

    /// What it does natively; a text-only web chat by default.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            conversations_to_delete: true,
            ..Capabilities::default()
        }
    }

    /// Send one turn (in the form `capabilities` asks for); the stream
    /// yields the answer.
    async fn chat(&self, token: &str, turn: &Turn<'_>) -> Result<EventStream, UpstreamError>;

    /// Delete a conversation this service created.
    async fn delete_conversation(&self, token: &str, chat_id: &str) -> Result<(), UpstreamError>;

    /// Whether the token still works upstream.
    async fn is_live(&self, token: &str) -> Result<bool, UpstreamError>;

    /// Called on a failure before any answer text. An upstream failure code is
    /// diagnosed with a liveness check: a dead token becomes `TokenRejected`, a
    /// live account answering another question becomes `Busy`.
    async fn explain_failure(&self, token: &str, error: UpstreamError) -> UpstreamError {
        let UpstreamError::Api { message, .. } = &error else {
            return error;
        };
        let (fingerprint, message) = (crate::redact::fingerprint(token), message.clone());
        match self.is_live(token).await {
            Ok(false) => UpstreamError::TokenRejected {
                fingerprint,
                message,
            },
            Ok(true) if is_busy_message(&message) => UpstreamError::Busy {
                fingerprint,
                message,
            },
            _ => error,
        }
    }
}

/// Speech, on an upstream that has it (Hailuo's voices and voice calls).
///
/// Its own trait rather than optional methods of `Upstream`: a function gets
/// a `Voice` only by asking for one (`voice_state_from_env`), so that the
/// functions that never speak (chat, models, the token checks) link none of
/// the synthesis or voice-call code, where a method of `Upstream` would be
/// in every function through the trait object's vtable.
#[async_trait]
pub trait Voice: Send + Sync + 'static {
    /// Read the assistant message `message_id` aloud in `voice`: the URLs of
    /// the audio's mp3 parts, in order. The voice is the account's setting
    /// upstream, so callers hold the account for the whole call.
    async fn synthesize(
        &self,
        token: &str,
        message_id: &str,
        voice: &str,
    ) -> Result<Vec<String>, UpstreamError>;

    /// One part of a synthesis (a URL `synthesize` gave).
    async fn download_part(&self, url: &str) -> Result<bytes::Bytes, UpstreamError>;

    /// Recognize the speech in an mp3 (empty text when there is none). The
    /// conversation the voice call starts upstream is deleted before this
    /// returns, whatever happened.
    async fn transcribe(&self, token: &str, mp3: bytes::Bytes) -> Result<String, UpstreamError>;
}

/// What an account may still spend, where its upstream reports it (MiniMax
/// Code's account service, section 7): for the operator's view, never on a
/// request's path.
///
/// Its own trait, as `Voice` is: only the routes that show the pool (the
/// token-check function and the server) make one, so the chat functions
/// link none of it.
#[async_trait]
pub trait Quotas: Send + Sync + 'static {
    /// The account's credits and plan windows, read with its access token.
    /// Each half says on its own whether it was read, not readable, or failed.
    async fn quota(&self, token: &str) -> Quota;
}

/// An account's credits and Token Plan windows.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Quota {
    pub credits: Reading<Credits>,
    pub plan: Reading<Plan>,
}

/// One half of a [`Quota`], as the upstream answered.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Reading<T> {
    Read(T),
    /// The upstream says there is nothing to read for this account (no
    /// plan, or a token that may not read it): not an account fault.
    NotReadable {
        readable: bool,
        reason: String,
    },
    /// The call failed: what happened, in our words (no upstream body).
    Failed {
        error: String,
    },
}

impl<T> Reading<T> {
    pub(crate) fn not_readable(reason: impl Into<String>) -> Self {
        Reading::NotReadable {
            readable: false,
            reason: reason.into(),
        }
    }

    pub(crate) fn failed(error: impl Into<String>) -> Self {
        Reading::Failed {
            error: error.into(),
        }
    }
}

/// The credits balance: the unexpired grants' remaining amounts, summed.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Credits {
    /// In the account's credit units (a display figure: the upstream sends
    /// decimal strings, summed here as `f64` and rounded to hundredths).
    pub balance: f64,
    /// How many unexpired grants make it up.
    pub grants: usize,
}

/// The Token Plan's two windows (`None` where the upstream sent none).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Plan {
    /// The rolling 5-hour window.
    pub interval: Option<PlanWindow>,
    pub weekly: Option<PlanWindow>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PlanWindow {
    /// What is left of the window, 0 to 100.
    pub remaining_percent: f64,
    /// The window has no limit (status 3).
    pub unlimited: bool,
    /// Unix seconds.
    pub starts_at: Option<u64>,
    pub ends_at: Option<u64>,
}

/// Whether an answer is an event stream (`Content-Type: text/event-stream`).
pub(crate) fn is_event_stream(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// At most `max` bytes of a failing answer's body, as text: enough for any
/// error object, never a hostile upstream's whole body.
pub(crate) async fn read_capped(response: reqwest::Response, max: usize) -> String {
    use futures_util::StreamExt;
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= max {
            body.truncate(max);
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Neither protocol names a code for "this account is already answering"; the
/// web apps' message says a conversation is in progress (正在进行 / 进行中 / 未结束).
pub fn is_busy_message(message: &str) -> bool {
    ["正在进行", "进行中", "未结束"]
        .iter()
        .any(|m| message.contains(m))
}

/// What `GET /v1/api/user/info` (the same on both upstreams) says of a token:
/// alive when `data.userInfo` is an object, dead on a failure code; other
/// failures are not a verdict. A dead token's device is forgotten, so it
/// registers afresh should the token come back.
pub async fn user_info_verdict(
    answer: Result<serde_json::Value, UpstreamError>,
    devices: &device::DeviceCache,
    token: &str,
) -> Result<bool, UpstreamError> {
    let verdict = match answer {
        Ok(data) => Ok(data
            .get("userInfo")
            .is_some_and(serde_json::Value::is_object)),
        Err(UpstreamError::Api { .. }) | Err(UpstreamError::TokenRejected { .. }) => Ok(false),
        Err(e) => Err(e),
    };
    if verdict == Ok(false) {
        devices.forget(token).await;
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_messages() {
        assert!(is_busy_message("当前有对话正在进行，请稍后再试"));
        assert!(!is_busy_message("服务繁忙，请稍后再试"));
    }

    #[tokio::test]
    async fn user_info_verdicts() {
        let devices = device::DeviceCache::default();
        let verdict = |answer| user_info_verdict(answer, &devices, "t");
        assert_eq!(
            verdict(Ok(serde_json::json!({"userInfo": {"id": 1}}))).await,
            Ok(true)
        );
        assert_eq!(verdict(Ok(serde_json::json!({}))).await, Ok(false));
        assert_eq!(
            verdict(Err(UpstreamError::Api {
                code: 1004,
                message: "x".into()
            }))
            .await,
            Ok(false)
        );
        assert!(verdict(Err(UpstreamError::Timeout("t".into())))
            .await
            .is_err());
    }
}
