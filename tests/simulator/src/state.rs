//! What the simulator remembers, and what it shows tests.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::checks::fingerprint;

/// A fault to inject into upcoming chats.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    /// Only chats with this token (any token when absent).
    #[serde(default)]
    pub token: Option<String>,
    /// How many chats it hits (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// Content events sent before it strikes, for mid-stream faults (default 3).
    #[serde(default = "three")]
    pub after_events: u32,
    /// For `slow_first_byte` and `stall`: how long (default 5000 ms).
    #[serde(default = "five_seconds")]
    pub delay_ms: u64,
}

fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}
fn five_seconds() -> u64 {
    5000
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 500 on the chat call.
    Http500,
    /// The connection is cut after some events.
    Disconnect,
    /// Nothing is sent for `delay_ms` before the answer starts.
    SlowFirstByte,
    /// A `data:` line that is not JSON, after some events.
    MalformedSse,
    /// An error event (`statusInfo.code != 0`) after some events.
    ErrorEvent,
    /// The stream goes silent for `delay_ms` after some events.
    Stall,
    /// The stream closes cleanly after some events, with neither an
    /// `isEnd == 0` event nor the type 8 marker: a cut-off answer.
    Truncate,
    /// The file store refuses an upload (HTTP 403, an OSS error document).
    UploadRefused,
    /// `msg_tts` never says the speech is ready.
    TtsNeverReady,
    /// A speech part's URL answers 404, as a CDN that lost the file does:
    /// the parts from index `after_events` on (0-based).
    TtsPartMissing,
}

#[derive(Clone, Debug, Serialize)]
pub struct Turn {
    pub prompt: String,
    pub answer: String,
    /// The agent's reasoning text (agent protocol only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub thinking: String,
    /// The files the turn's form referenced (name, type, size, SHA-256).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<serde_json::Value>,
}

/// How far the newest agent answer has been revealed, which depends on time.
#[derive(Clone, Debug)]
pub struct Reveal {
    pub started: std::time::Instant,
    /// Stop at this many characters ...
    pub stall_at: Option<usize>,
    /// ... until this long after the start.
    pub stall_ms: u64,
    /// Polls answered with an error from this poll on.
    pub error_after: Option<u32>,
    pub polls: u32,
    pub last_poll: Option<std::time::Instant>,
    /// A poll has seen the answer finished.
    pub seen_finished: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Conversation {
    pub chat_id: String,
    pub token_fp: String,
    #[serde(skip)]
    pub token: String,
    pub turns: Vec<Turn>,
    pub deleted: bool,
    /// The last answer was streamed to its end.
    pub completed: bool,
    /// The client went away before the last answer ended.
    pub client_went_away: bool,
    /// When each content event of the last answer was sent, with how many bytes
    /// of whole characters it made available (for benchmarks).
    #[serde(skip)]
    pub sent: Vec<(std::time::Instant, usize)>,
    /// Agent protocol: how the newest answer is revealed.
    #[serde(skip)]
    pub reveal: Option<Reveal>,
}

impl Conversation {
    pub fn new(chat_id: &str, token: &str) -> Self {
        Self {
            chat_id: chat_id.to_string(),
            token_fp: fingerprint(token),
            token: token.to_string(),
            turns: vec![],
            deleted: false,
            completed: false,
            client_went_away: false,
            sent: vec![],
            reveal: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    pub method: String,
    pub path: String,
    pub token_fp: String,
    pub problem: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub token_fp: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Settings {
    /// Pause between content events.
    pub pace_ms: u64,
    /// Bytes of answer added per event (cut anywhere, so multi-byte characters
    /// split and show as U+FFFD, as the real service does).
    pub chunk_bytes: usize,
    /// A heartbeat (type 3, non-zero code) every this many events.
    pub heartbeat_every: usize,
    /// `msg_tts` polls answered "not ready" before the speech is.
    #[serde(default = "two")]
    pub tts_polls_before_ready: u32,
}

fn two() -> u32 {
    2
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            pace_ms: 15,
            chunk_bytes: 7,
            heartbeat_every: 4,
            tts_polls_before_ready: 2,
        }
    }
}

#[derive(Default)]
pub struct State {
    pub settings: Settings,
    /// token → registered (uuid, device_id)
    pub devices: HashMap<String, Vec<(String, String)>>,
    pub expired: HashSet<String>,
    pub busy: HashSet<String>,
    /// In the order they were opened; add through `add_conversation`.
    pub conversations: Vec<Conversation>,
    /// chat id → position in `conversations`: every streamed event looks its
    /// conversation up under the one lock, so a scan would make the
    /// simulator the bottleneck of a load test with thousands of them.
    pub(crate) conversation_index: HashMap<String, usize>,
    pub violations: Vec<Violation>,
    pub calls: Vec<Call>,
    pub faults: VecDeque<Fault>,
    pub next_id: u64,
    /// Agent protocol: the user id each token registered with.
    pub agent_users: HashMap<String, String>,
    /// Scripted answers for the next turns (`/__sim/replies`), in order.
    pub replies: VecDeque<String>,
    /// Hailuo uploads: policies handed out, objects stored, files registered.
    pub uploads: crate::upload::Uploads,
    /// Hailuo chat answers: message id → conversation id.
    pub messages: HashMap<String, String>,
    /// Hailuo speech: voices set, syntheses, voice calls.
    pub voice: crate::voice::Voice,
}

impl State {
    pub fn new_id(&mut self) -> String {
        self.next_id += 1;
        (242_830_597_915_504_644u64 + self.next_id * 2).to_string()
    }

    pub fn violation(&mut self, method: &str, path: &str, token: &str, problem: impl Into<String>) {
        let problem = problem.into();
        tracing::warn!(method, path, problem, "protocol violation");
        self.violations.push(Violation {
            method: method.into(),
            path: path.into(),
            token_fp: fingerprint(token),
            problem,
        });
    }

    /// Take the first fault that applies to a chat on `token`.
    pub fn take_fault(&mut self, token: &str) -> Option<Fault> {
        self.take_fault_where(token, |k| {
            !matches!(
                k,
                FaultKind::UploadRefused | FaultKind::TtsNeverReady | FaultKind::TtsPartMissing
            )
        })
    }

    /// Take the first fault of `kind` that applies to `token`.
    pub fn take_fault_of(&mut self, token: &str, kind: FaultKind) -> Option<Fault> {
        self.take_fault_where(token, |k| k == kind)
    }

    /// Take the first upload fault that applies to `token`.
    pub fn take_upload_fault(&mut self, token: &str) -> Option<Fault> {
        self.take_fault_where(token, |k| k == FaultKind::UploadRefused)
    }

    fn take_fault_where(&mut self, token: &str, kind: impl Fn(FaultKind) -> bool) -> Option<Fault> {
        let i = self
            .faults
            .iter()
            .position(|f| kind(f.kind) && f.token.as_deref().is_none_or(|t| t == token))?;
        let fault = self.faults[i].clone();
        self.faults[i].count -= 1;
        if self.faults[i].count == 0 {
            self.faults.remove(i);
        }
        Some(fault)
    }

    /// The answer to a turn: the next scripted reply if there is one, with
    /// `{nonce}` replaced by the prompt's tool-call nonce (playing a model
    /// that follows the gateway's tool contract), else the echo answer.
    pub fn answer(&mut self, prompt: &str, turn: usize) -> String {
        // Asked to repeat a text (the speech route's turn), the model does.
        if let Some(text) = crate::repeated_text(prompt) {
            return text;
        }
        match self.replies.pop_front() {
            Some(reply) => reply.replace("{nonce}", &crate::tool_nonce(prompt).unwrap_or_default()),
            None => crate::compose_answer(prompt, turn),
        }
    }

    pub fn conversation(&self, chat_id: &str) -> Option<&Conversation> {
        self.conversations
            .get(*self.conversation_index.get(chat_id)?)
    }

    pub fn conversation_mut(&mut self, chat_id: &str) -> Option<&mut Conversation> {
        let i = *self.conversation_index.get(chat_id)?;
        self.conversations.get_mut(i)
    }

    pub fn add_conversation(&mut self, conversation: Conversation) {
        self.conversation_index
            .insert(conversation.chat_id.clone(), self.conversations.len());
        self.conversations.push(conversation);
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let registrations: HashMap<String, usize> = self
            .devices
            .iter()
            .map(|(t, d)| (fingerprint(t), d.len()))
            .collect();
        serde_json::json!({
            "settings": self.settings,
            "conversations": self.conversations,
            "violations": self.violations,
            "calls": self.calls,
            "registrations": registrations,
            "busy": self.busy.iter().map(|t| fingerprint(t)).collect::<Vec<_>>(),
            "pending_faults": self.faults.len(),
            "pending_replies": self.replies.len(),
            "files": self.uploads.files.values().collect::<Vec<_>>(),
            "voices": self.voice.voices.iter().map(|(t, v)| (fingerprint(t), v.clone())).collect::<HashMap<_, _>>(),
            "syntheses": self.voice.syntheses,
            "transcriptions": self.voice.transcriptions,
        })
    }
}
