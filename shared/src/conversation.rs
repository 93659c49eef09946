//! The one internal conversation: what every front door builds and what every
//! upstream receives, whatever the dialect on either side.
//!
//! A door (OpenAI chat completions, Anthropic Messages, OpenAI Responses)
//! parses and validates its own wire format, in its own
//! error shape, into a [`Conversation`]. An upstream that understands
//! conversations and tools natively (MiniMax Code's Messages gateway) gets it
//! as it is; a text-only web chat (Hailuo, MiniMax Agent) gets it through the
//! one text-chat layer (`reply.rs` with `prompt.rs` and `structured/`), which
//! flattens it into a prompt and emulates tools and JSON answers. What comes
//! back is the same for both: answer text, reasoning (with its signature),
//! tool calls streamed in pieces, a [`StopReason`] and usage.
//!
//! The types are the union of what the three doors carry, so no door loses a
//! field on the way in: roles including `developer` and `tool`, tool results
//! tied to their calls by id, thinking blocks with the signature an
//! Anthropic caller sends back, a JSON answer format, thinking wanted or not,
//! an output cap. A leaf: it imports nothing of ours, so adapters may read
//! it without knowing any door.

/// Who said a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    System,
    Developer,
    #[default]
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    /// The system prompt's roles (OpenAI's `system` and `developer`).
    pub fn is_instruction(self) -> bool {
        matches!(self, Role::System | Role::Developer)
    }
}

/// A file or image a message carries (by URL or `data:` URL), not yet fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attachment {
    Image {
        url: String,
    },
    File {
        url: String,
        filename: Option<String>,
    },
}

/// Reasoning an upstream gave with an earlier answer, with the signature it
/// signed it with: a native upstream takes a thinking block back only with
/// its own signature (an Anthropic caller looping over tools sends it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Thinking {
    pub text: String,
    pub signature: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    /// The text parts, joined.
    pub text: String,
    /// Files and images, each with the index of its content part.
    pub attachments: Vec<(usize, Attachment)>,
    /// An assistant turn's tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` message: the call it answers.
    pub tool_call_id: Option<String>,
    /// A `tool` message: the tool failed, and `text` says how (Anthropic's
    /// `is_error`).
    pub tool_error: bool,
    /// An assistant turn's signed reasoning, where the door carries it.
    pub thinking: Vec<Thinking>,
}

/// A function call: the arguments are JSON text (as OpenAI carries them;
/// a door whose calls are objects writes them as text once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A function the caller offers the model.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// The JSON Schema of the arguments, as JSON text of an object (`None`:
    /// no parameters). Parsed only when compiled, one at a time.
    pub parameters: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Function(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        /// JSON text of an object, as `Tool::parameters`.
        schema: Option<String>,
    },
}

/// Whether the caller wants the model to think before it answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ThinkingWanted {
    /// The caller did not say: the model's own default.
    #[default]
    Default,
    On,
    Off,
}

/// The caller's sampling settings, as the door checked them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sampling {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
}

/// One request's conversation, door-neutral.
#[derive(Clone, Debug, PartialEq)]
pub struct Conversation {
    /// The model name the caller sent (echoed in the answer; an upstream maps
    /// it to one of its own).
    pub model: String,
    /// In order; system and developer messages stay where they were sent
    /// (a native upstream gathers them into its system prompt).
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    /// `Auto` when tools are given, `None` otherwise, unless the caller says.
    pub tool_choice: ToolChoice,
    pub parallel_tool_calls: bool,
    pub response_format: ResponseFormat,
    pub thinking: ThinkingWanted,
    /// The most tokens the answer may take, when the caller says.
    pub max_tokens: Option<u32>,
    /// Sampling, when the caller says (in its door's range); an upstream
    /// that takes it sends it within its model's.
    pub sampling: Sampling,
    /// Extension of the web chats: keep the upstream conversation.
    pub keep_conversation: bool,
    /// Extension of the web chats: continue this upstream conversation.
    pub conversation_id: Option<String>,
}

impl Conversation {
    /// Whether the upstream conversation outlives this request.
    pub fn keeps_conversation(&self) -> bool {
        self.keep_conversation || self.conversation_id.is_some()
    }

    /// Whether earlier turns hold tool calls or results.
    pub fn has_tool_history(&self) -> bool {
        self.messages
            .iter()
            .any(|m| !m.tool_calls.is_empty() || m.tool_call_id.is_some())
    }
}

/// Why an answer ended, door-neutral (each door says it in its own words).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StopReason {
    /// The model finished its answer.
    #[default]
    EndTurn,
    /// The answer is a set of tool calls.
    ToolUse,
    /// Cut at the output cap.
    MaxTokens,
    /// The model declined (a policy outcome, not an error).
    Refusal,
}

/// Tokens an answer cost: the upstream's own count where it gives one, an
/// estimate where it does not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Input tokens, cached ones included.
    pub input: u32,
    /// Output tokens, reasoning included.
    pub output: u32,
    /// Of `input`, read from the upstream's prompt cache.
    pub cache_read: u32,
    /// Of `input`, written to the upstream's prompt cache.
    pub cache_creation: u32,
    /// Of `output`, spent thinking.
    pub reasoning: u32,
}
