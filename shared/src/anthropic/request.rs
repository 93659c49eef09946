//! An Anthropic Messages request (`POST /v1/messages`, and the same fields
//! for `count_tokens`) parsed into the one internal [`Conversation`].
//!
//! The body is read once into typed structs that borrow from it (strings
//! without escapes are not copied; a tool's `input_schema` stays the raw
//! JSON text it was sent as) and `serde_path_to_error` names the field a
//! wrong type sits in (`messages[1].content[0].text`). The structs are flat
//! (a block is one struct with every field any block type has, checked by
//! its `type` afterwards) rather than internally tagged enums: serde buffers
//! a tagged enum into a tree of its own before it reads it, which costs a
//! copy and loses the path of a wrong field inside.
//!
//! What the clients send is taken, not refused (front-doors.md, and what
//! Claude Code was seen sending in agents-observed.md): unknown fields, a
//! `role: "system"` message inside `messages`, `thinking` with `display`,
//! `output_config`, `context_management`, `metadata.user_id` as a string,
//! server tools (left out of what the model is offered, with a log line),
//! the `x-anthropic-billing-header` block that opens Claude Code's system
//! prompt (dropped: it changes on every request). A 400 ends an agent's run,
//! so only what cannot be answered as asked is one.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::conversation::{
    Attachment, Conversation, Message, ResponseFormat, Role, Thinking, ThinkingWanted, Tool,
    ToolCall, ToolChoice,
};
use crate::error::ApiError;
use crate::openai::chat::MAX_SCHEMA_BYTES;
use crate::wire::{check_range, Counted, TextOr};

/// The largest `max_tokens` taken as it is (Anthropic's models stop far
/// below; an upstream refuses what it cannot give in its own words).
const MAX_TOKENS_CAP: u64 = u32::MAX as u64;

/// What a `/v1/messages` request asks for.
#[derive(Debug)]
pub(crate) struct MessagesRequest {
    pub conversation: Conversation,
    pub stream: bool,
}

/// Which route is parsing: `count_tokens` needs no `max_tokens`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Messages,
    CountTokens,
}

impl MessagesRequest {
    pub(crate) fn parse(body: &[u8], route: Route) -> Result<Self, ApiError> {
        let body = crate::openai::body::normalized(body);
        let wire: Wire = crate::wire::parse(&body)?;
        wire.into_request(route)
    }
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    max_tokens: Option<i64>,
    #[serde(borrow)]
    system: Option<Content<'a>>,
    #[serde(borrow)]
    messages: Option<Counted<WireMessage<'a>>>,
    #[serde(borrow)]
    tools: Option<Counted<WireTool<'a>>>,
    #[serde(borrow)]
    tool_choice: Option<WireToolChoice<'a>>,
    #[serde(borrow)]
    stop_sequences: Option<Counted<Cow<'a, str>>>,
    stream: Option<bool>,
    #[serde(borrow)]
    thinking: Option<WireThinking<'a>>,
    #[serde(borrow)]
    output_config: Option<OutputConfig<'a>>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
}

#[derive(Deserialize)]
struct WireMessage<'a> {
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Content<'a>>,
}

/// A string, or a list of content blocks (each counted against the
/// request's budget).
type Content<'a> = TextOr<'a, Block<'a>>;

/// Every field any content block has; which ones must be there depends on
/// `type` (checked in `Turns::block`).
#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    source: Option<Box<Source<'a>>>,
    #[serde(borrow)]
    title: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_use_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Content<'a>>,
    is_error: Option<bool>,
    #[serde(borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow)]
    signature: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Source<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    media_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<Cow<'a, str>>,
    #[serde(borrow)]
    url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Content<'a>>,
}

#[derive(Deserialize)]
struct WireTool<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    description: Option<Cow<'a, str>>,
    #[serde(borrow)]
    input_schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireToolChoice<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Deserialize)]
struct WireThinking<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    budget_tokens: Option<i64>,
}

#[derive(Deserialize)]
struct OutputConfig<'a> {
    #[serde(borrow)]
    format: Option<OutputFormat<'a>>,
}

#[derive(Deserialize)]
struct OutputFormat<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    schema: Option<&'a RawValue>,
}

/// Anthropic's words for a missing field.
fn required(param: &str, what: &str) -> ApiError {
    ApiError::BadRequest {
        message: format!("{param}: Field required ({what})."),
        param: Some(param.to_string()),
        code: "missing_required_parameter",
    }
}

fn invalid(param: &str, message: String) -> ApiError {
    ApiError::invalid(param, format!("{param}: {message}"))
}

/// Server tools and Anthropic-defined tools the gateway cannot run: they
/// carry a dated type (`web_search_20250305`, `bash_20250124`, …).
fn is_server_tool(kind: Option<&str>) -> bool {
    !matches!(kind, None | Some("custom"))
}

/// Claude Code's first system block: a per-request billing line that would
/// make every system prompt different.
const BILLING_HEADER: &str = "x-anthropic-billing-header:";

impl Wire<'_> {
    fn into_request(self, route: Route) -> Result<MessagesRequest, ApiError> {
        let model = match self.model {
            Some(m) if !m.trim().is_empty() => m.into_owned(),
            Some(_) => return Err(invalid("model", "must name a model.".into())),
            None => return Err(required("model", "the model to answer with")),
        };
        let max_tokens = match (self.max_tokens, route) {
            (Some(n), _) if n >= 1 => Some(n.min(MAX_TOKENS_CAP as i64) as u32),
            (Some(n), _) => {
                return Err(invalid(
                    "max_tokens",
                    format!("must be at least 1, got {n}."),
                ))
            }
            (None, Route::Messages) => {
                return Err(required(
                    "max_tokens",
                    "the most tokens the answer may take",
                ))
            }
            (None, Route::CountTokens) => None,
        };
        check_range("temperature", self.temperature, 0.0, 1.0)?;
        check_range("top_p", self.top_p, 0.0, 1.0)?;
        if let Some(k) = self.top_k.filter(|k| *k < 0) {
            return Err(invalid("top_k", format!("must be 0 or more, got {k}.")));
        }
        if let Some(Counted(stops)) = &self.stop_sequences {
            if stops.iter().any(|s| s.is_empty()) {
                return Err(invalid(
                    "stop_sequences",
                    "each stop sequence must contain text.".into(),
                ));
            }
        }

        let mut turns = Turns::default();
        if let Some(system) = self.system {
            turns.system(system, "system")?;
        }
        let wire_messages = match self.messages.map(|m| m.0) {
            Some(m) if !m.is_empty() => m,
            Some(_) => {
                return Err(invalid(
                    "messages",
                    "must hold at least one message.".into(),
                ))
            }
            None => return Err(required("messages", "the conversation so far")),
        };
        for (i, m) in wire_messages.into_iter().enumerate() {
            turns.message(m, i)?;
        }
        if !turns.messages.iter().any(|m| !m.role.is_instruction()) {
            return Err(invalid(
                "messages",
                "must hold a user message, not only system text.".into(),
            ));
        }

        let mut tools = Vec::new();
        let mut dropped = Vec::new();
        let mut schema_bytes = 0;
        for (i, t) in self.tools.unwrap_or_default().0.into_iter().enumerate() {
            let param = format!("tools[{i}]");
            let Some(name) = t.name.filter(|n| !n.is_empty()) else {
                return Err(required(&format!("{param}.name"), "the tool's name"));
            };
            if is_server_tool(t.kind.as_deref()) {
                dropped.push((name.into_owned(), t.kind.unwrap_or_default().into_owned()));
                continue;
            }
            let Some(schema) = t.input_schema else {
                return Err(required(
                    &format!("{param}.input_schema"),
                    "the JSON Schema of the tool's input",
                ));
            };
            if !schema.get().trim_start().starts_with('{') {
                return Err(invalid(
                    &format!("{param}.input_schema"),
                    "must be a JSON Schema object.".into(),
                ));
            }
            schema_bytes += schema.get().len();
            if schema_bytes > MAX_SCHEMA_BYTES {
                return Err(invalid(
                    "tools",
                    format!("the tools' input schemas take more than {MAX_SCHEMA_BYTES} bytes in all; offer fewer or smaller tools."),
                ));
            }
            tools.push(Tool {
                name: name.into_owned(),
                description: t.description.map(Cow::into_owned).unwrap_or_default(),
                parameters: Some(schema.get().to_string()),
            });
        }
        if !dropped.is_empty() {
            let named: Vec<String> = dropped.iter().map(|(n, k)| format!("{n} ({k})")).collect();
            tracing::info!(
                tools = %named.join(", "),
                "server tools left out of what the model is offered: the gateway cannot run them"
            );
        }

        let mut parallel_tool_calls = true;
        let tool_choice = match self.tool_choice {
            None => {
                if tools.is_empty() {
                    ToolChoice::None
                } else {
                    ToolChoice::Auto
                }
            }
            Some(c) => {
                parallel_tool_calls = !c.disable_parallel_tool_use.unwrap_or(false);
                match c.kind.as_deref() {
                    Some("auto") => ToolChoice::Auto,
                    Some("any") => ToolChoice::Required,
                    Some("none") => ToolChoice::None,
                    Some("tool") => {
                        let Some(name) = c.name.filter(|n| !n.is_empty()) else {
                            return Err(required("tool_choice.name", "the tool to call"));
                        };
                        if let Some((_, kind)) = dropped.iter().find(|(n, _)| *n == name) {
                            return Err(invalid(
                                "tool_choice.name",
                                format!(
                                    "`{name}` is a server tool ({kind}) this gateway cannot run, so it cannot be forced; offer a custom tool instead."
                                ),
                            ));
                        }
                        if !tools.iter().any(|t| t.name == name) {
                            return Err(invalid(
                                "tool_choice.name",
                                format!("`{name}` is not one of the tools in `tools`."),
                            ));
                        }
                        ToolChoice::Function(name.into_owned())
                    }
                    Some(other) => {
                        return Err(invalid(
                            "tool_choice.type",
                            format!("`{other}` is not a tool choice; use auto, any, tool or none."),
                        ))
                    }
                    None => return Err(required("tool_choice.type", "auto, any, tool or none")),
                }
            }
        };
        if matches!(tool_choice, ToolChoice::Required | ToolChoice::Function(_)) && tools.is_empty()
        {
            return Err(invalid(
                "tool_choice",
                "asks for a tool call, but `tools` offers none the gateway can run.".into(),
            ));
        }

        let thinking = match self.thinking {
            None => ThinkingWanted::Default,
            Some(t) => match t.kind.as_deref() {
                Some("enabled") => {
                    if let Some(b) = t.budget_tokens.filter(|b| *b < 0) {
                        return Err(invalid(
                            "thinking.budget_tokens",
                            format!("must be 0 or more, got {b}."),
                        ));
                    }
                    ThinkingWanted::On
                }
                Some("adaptive") => ThinkingWanted::On,
                Some("disabled") => ThinkingWanted::Off,
                Some(other) => {
                    return Err(invalid(
                        "thinking.type",
                        format!(
                            "`{other}` is not a thinking mode; use enabled, adaptive or disabled."
                        ),
                    ))
                }
                None => return Err(required("thinking.type", "enabled, adaptive or disabled")),
            },
        };

        let response_format = match self.output_config.and_then(|c| c.format) {
            None => ResponseFormat::Text,
            Some(f) => match f.kind.as_deref() {
                Some("json_schema") => {
                    let Some(schema) = f.schema else {
                        return Err(required(
                            "output_config.format.schema",
                            "the JSON Schema the answer must follow",
                        ));
                    };
                    ResponseFormat::JsonSchema {
                        name: "output".into(),
                        schema: Some(schema.get().to_string()),
                    }
                }
                Some(other) => {
                    return Err(invalid(
                        "output_config.format.type",
                        format!("`{other}` is not an output format; use json_schema."),
                    ))
                }
                None => return Err(required("output_config.format.type", "json_schema")),
            },
        };

        Ok(MessagesRequest {
            conversation: Conversation {
                model,
                messages: turns.messages,
                tools,
                tool_choice,
                parallel_tool_calls,
                response_format,
                thinking,
                max_tokens,
                sampling: crate::conversation::Sampling {
                    temperature: self.temperature,
                    top_p: self.top_p,
                },
                keep_conversation: false,
                conversation_id: None,
            },
            stream: self.stream.unwrap_or(false),
        })
    }
}

/// The messages built so far.
#[derive(Default)]
struct Turns {
    messages: Vec<Message>,
}

impl Turns {
    /// The top-level `system`, or a `role: "system"` message: one system
    /// message, its text blocks joined by blank lines.
    fn system(&mut self, content: Content<'_>, param: &str) -> Result<(), ApiError> {
        let text = match content {
            TextOr::Text(t) => t.into_owned(),
            TextOr::List(blocks) => {
                let mut parts = Vec::new();
                for (j, b) in blocks.into_iter().enumerate() {
                    let p = format!("{param}[{j}]");
                    match b.kind.as_deref() {
                        Some("text") => {
                            let text = b
                                .text
                                .ok_or_else(|| required(&format!("{p}.text"), "the text"))?;
                            if !text.trim_start().starts_with(BILLING_HEADER) {
                                parts.push(text.into_owned());
                            }
                        }
                        Some(other) => {
                            return Err(invalid(
                                &format!("{p}.type"),
                                format!("a system prompt takes text blocks, not `{other}`."),
                            ))
                        }
                        None => return Err(required(&format!("{p}.type"), "text")),
                    }
                }
                parts.join("\n\n")
            }
        };
        if !text.trim().is_empty() {
            self.messages.push(Message {
                role: Role::System,
                text,
                ..Message::default()
            });
        }
        Ok(())
    }

    fn message(&mut self, m: WireMessage<'_>, i: usize) -> Result<(), ApiError> {
        let param = format!("messages[{i}]");
        let role = match m.role.as_deref() {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            // Claude Code sends its environment block this way whenever the
            // model name is not a `claude-*` one.
            Some("system") => Role::System,
            Some(other) => {
                return Err(invalid(
                    &format!("{param}.role"),
                    format!("`{other}` is not a role; use user or assistant."),
                ))
            }
            None => return Err(required(&format!("{param}.role"), "user or assistant")),
        };
        let content_param = format!("{param}.content");
        let Some(content) = m.content else {
            return Err(required(&content_param, "the message's text or blocks"));
        };
        if role == Role::System {
            return self.system(content, &content_param);
        }
        let blocks = match content {
            TextOr::Text(t) => {
                self.push(Message {
                    role,
                    text: t.into_owned(),
                    ..Message::default()
                });
                return Ok(());
            }
            TextOr::List(b) => b,
        };
        let mut texts: Vec<String> = Vec::new();
        let mut turn = Message {
            role,
            ..Message::default()
        };
        let mut results = Vec::new();
        for (j, b) in blocks.into_iter().enumerate() {
            let p = format!("{content_param}[{j}]");
            match (b.kind.as_deref(), role) {
                (Some("text"), _) => {
                    let text = b
                        .text
                        .ok_or_else(|| required(&format!("{p}.text"), "the text"))?;
                    texts.push(text.into_owned());
                }
                (Some("image"), Role::User) => {
                    let source = b
                        .source
                        .ok_or_else(|| required(&format!("{p}.source"), "the image"))?;
                    let url = image_url(*source, &format!("{p}.source"))?;
                    turn.attachments.push((j, Attachment::Image { url }));
                }
                (Some("document"), Role::User) => {
                    let source = b
                        .source
                        .ok_or_else(|| required(&format!("{p}.source"), "the document"))?;
                    match document(*source, b.title.as_deref(), &format!("{p}.source"))? {
                        Document::Text(text) => texts.push(text),
                        Document::File(attachment) => turn.attachments.push((j, attachment)),
                    }
                }
                (Some("tool_result"), Role::User) => {
                    let id = b.tool_use_id.filter(|id| !id.is_empty()).ok_or_else(|| {
                        required(&format!("{p}.tool_use_id"), "the tool_use block it answers")
                    })?;
                    let (text, images) = result_content(b.content, &format!("{p}.content"))?;
                    results.push(Message {
                        role: Role::Tool,
                        text,
                        tool_call_id: Some(id.into_owned()),
                        tool_error: b.is_error.unwrap_or(false),
                        ..Message::default()
                    });
                    turn.attachments
                        .extend(images.into_iter().map(|url| (j, Attachment::Image { url })));
                }
                (Some("tool_use"), Role::Assistant) => {
                    let id =
                        b.id.filter(|id| !id.is_empty())
                            .ok_or_else(|| required(&format!("{p}.id"), "the call's id"))?;
                    let name = b
                        .name
                        .filter(|n| !n.is_empty())
                        .ok_or_else(|| required(&format!("{p}.name"), "the tool called"))?;
                    let input = b.input.ok_or_else(|| {
                        required(&format!("{p}.input"), "the call's input object")
                    })?;
                    if !input.get().trim_start().starts_with('{') {
                        return Err(invalid(&format!("{p}.input"), "must be an object.".into()));
                    }
                    turn.tool_calls.push(ToolCall {
                        id: id.into_owned(),
                        name: name.into_owned(),
                        arguments: input.get().to_string(),
                    });
                }
                (Some("thinking"), Role::Assistant) => {
                    turn.thinking.push(Thinking {
                        text: b.thinking.map(Cow::into_owned).unwrap_or_default(),
                        signature: b.signature.map(Cow::into_owned).unwrap_or_default(),
                    });
                }
                // An encrypted block only Anthropic can read: no upstream here
                // wrote it, so none can take it back.
                (Some("redacted_thinking"), Role::Assistant) => {}
                (Some(kind @ ("image" | "document" | "tool_result")), Role::Assistant) => {
                    return Err(invalid(
                        &format!("{p}.type"),
                        format!("`{kind}` blocks belong in user messages."),
                    ))
                }
                (Some(kind @ ("tool_use" | "thinking" | "redacted_thinking")), _) => {
                    return Err(invalid(
                        &format!("{p}.type"),
                        format!("`{kind}` blocks belong in assistant messages."),
                    ))
                }
                (Some(other), _) => {
                    // Blocks of server tools and newer kinds: what they hold
                    // was never ours to answer.
                    tracing::info!(
                        block = other,
                        "content block left out: not one the gateway reads"
                    );
                }
                (None, _) => return Err(required(&format!("{p}.type"), "the block's type")),
            }
        }
        turn.text = texts.join("\n");
        // A user turn mixing results and text: the results first, as the
        // calls they answer came first.
        for r in results {
            self.push(r);
        }
        if !turn.text.is_empty()
            || !turn.attachments.is_empty()
            || !turn.tool_calls.is_empty()
            || !turn.thinking.is_empty()
        {
            self.push(turn);
        }
        Ok(())
    }

    /// Consecutive turns of one role are one turn (Anthropic merges them).
    fn push(&mut self, m: Message) {
        match self.messages.last_mut() {
            Some(prev)
                if prev.role == m.role
                    && matches!(m.role, Role::User | Role::Assistant)
                    && prev.tool_calls.is_empty() =>
            {
                let offset = prev.attachments.len();
                if !m.text.is_empty() {
                    if !prev.text.is_empty() {
                        prev.text.push('\n');
                    }
                    prev.text.push_str(&m.text);
                }
                prev.attachments
                    .extend(m.attachments.into_iter().map(|(j, a)| (j + offset, a)));
                prev.tool_calls.extend(m.tool_calls);
                prev.thinking.extend(m.thinking);
            }
            _ => self.messages.push(m),
        }
    }
}

/// An image source as the URL the file path fetches: base64 as a data URL.
fn image_url(source: Source<'_>, param: &str) -> Result<String, ApiError> {
    match source.kind.as_deref() {
        Some("base64") => {
            let media = source
                .media_type
                .ok_or_else(|| required(&format!("{param}.media_type"), "the image's type"))?;
            let data = source
                .data
                .ok_or_else(|| required(&format!("{param}.data"), "the image's base64 bytes"))?;
            Ok(format!("data:{media};base64,{data}"))
        }
        Some("url") => Ok(source
            .url
            .ok_or_else(|| required(&format!("{param}.url"), "the image's URL"))?
            .into_owned()),
        Some(other) => Err(invalid(
            &format!("{param}.type"),
            format!("`{other}` is not an image source; use base64 or url."),
        )),
        None => Err(required(&format!("{param}.type"), "base64 or url")),
    }
}

enum Document {
    Text(String),
    File(Attachment),
}

/// A document: plain text inline (with its title), a PDF or other file
/// through the file path.
fn document(source: Source<'_>, title: Option<&str>, param: &str) -> Result<Document, ApiError> {
    let titled = |text: String| match title {
        Some(t) if !t.is_empty() => format!("{t}\n\n{text}"),
        _ => text,
    };
    match source.kind.as_deref() {
        Some("text") => Ok(Document::Text(titled(
            source
                .data
                .ok_or_else(|| required(&format!("{param}.data"), "the document's text"))?
                .into_owned(),
        ))),
        Some("content") => {
            let (text, _) = result_content(source.content, &format!("{param}.content"))?;
            Ok(Document::Text(titled(text)))
        }
        Some("base64") => {
            let media = source
                .media_type
                .ok_or_else(|| required(&format!("{param}.media_type"), "the document's type"))?;
            let data = source
                .data
                .ok_or_else(|| required(&format!("{param}.data"), "the document's base64 bytes"))?;
            Ok(Document::File(Attachment::File {
                url: format!("data:{media};base64,{data}"),
                filename: title.map(str::to_string),
            }))
        }
        Some("url") => Ok(Document::File(Attachment::File {
            url: source
                .url
                .ok_or_else(|| required(&format!("{param}.url"), "the document's URL"))?
                .into_owned(),
            filename: title.map(str::to_string),
        })),
        Some(other) => Err(invalid(
            &format!("{param}.type"),
            format!("`{other}` is not a document source; use text, content, base64 or url."),
        )),
        None => Err(required(
            &format!("{param}.type"),
            "text, content, base64 or url",
        )),
    }
}

/// A tool result's (or a content document's) text, and the image URLs it
/// holds.
fn result_content(
    content: Option<Content<'_>>,
    param: &str,
) -> Result<(String, Vec<String>), ApiError> {
    match content {
        None => Ok((String::new(), Vec::new())),
        Some(TextOr::Text(t)) => Ok((t.into_owned(), Vec::new())),
        Some(TextOr::List(blocks)) => {
            let (mut texts, mut images) = (Vec::new(), Vec::new());
            for (j, b) in blocks.into_iter().enumerate() {
                let p = format!("{param}[{j}]");
                match b.kind.as_deref() {
                    Some("text") => texts.push(
                        b.text
                            .ok_or_else(|| required(&format!("{p}.text"), "the text"))?
                            .into_owned(),
                    ),
                    Some("image") => images.push(image_url(
                        *b.source
                            .ok_or_else(|| required(&format!("{p}.source"), "the image"))?,
                        &format!("{p}.source"),
                    )?),
                    Some(other) => {
                        tracing::info!(
                            block = other,
                            "tool result block left out: not text or an image"
                        )
                    }
                    None => return Err(required(&format!("{p}.type"), "text or image")),
                }
            }
            Ok((texts.join("\n"), images))
        }
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
