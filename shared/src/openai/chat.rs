//! `POST /v1/chat/completions` requests, validated field by field so every
//! mistake gets a 400 that names the field.

use serde::de::{Deserializer as _, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::conversation::{
    Attachment, Conversation, Message, ResponseFormat, Role, ThinkingWanted, Tool, ToolCall,
    ToolChoice,
};
use crate::error::ApiError;

/// A chat completions request: the conversation, and how the caller wants
/// the answer delivered.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    pub conversation: Conversation,
    pub stream: bool,
    pub include_usage: bool,
}

/// The most messages one request may carry: far more than any conversation,
/// far fewer than a hostile body can hold (each costs memory to parse).
pub const MAX_MESSAGES: usize = 4096;
/// The most content parts one message may carry.
pub const MAX_PARTS: usize = 256;
/// OpenAI's limit on `tools`.
pub const MAX_TOOLS: usize = 128;
/// The most tool calls one assistant message may carry.
pub const MAX_TOOL_CALLS: usize = 128;
/// The most JSON text `tools` (or a `response_format` schema) may take: each
/// schema is compiled into a validator that lives for the request (and is a
/// JSON tree while it is compiled), which costs several times its text; real
/// tool lists are a few KB, the largest agent toolsets around a hundred. At
/// this cap the costliest schemas (enums of one-digit numbers) take about
/// 22 MB while the request lives (`scripts/bench.sh memory`).
pub const MAX_SCHEMA_BYTES: usize = 512 << 10;

/// The request as sent: every field borrowed from the body, unread. Fields
/// this service does not know are skipped without being built (serde's
/// `IgnoredAny`), so a body's cost in memory is the body itself plus the text
/// of its messages, whatever else it holds.
#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    stream: Option<&'a RawValue>,
    #[serde(borrow)]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow)]
    keep_conversation: Option<&'a RawValue>,
    #[serde(borrow)]
    conversation_id: Option<&'a RawValue>,
    #[serde(borrow)]
    n: Option<&'a RawValue>,
    #[serde(borrow)]
    temperature: Option<&'a RawValue>,
    #[serde(borrow)]
    top_p: Option<&'a RawValue>,
    #[serde(borrow)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    reasoning_effort: Option<&'a RawValue>,
    #[serde(borrow)]
    presence_penalty: Option<&'a RawValue>,
    #[serde(borrow)]
    frequency_penalty: Option<&'a RawValue>,
    #[serde(borrow)]
    seed: Option<&'a RawValue>,
    #[serde(borrow)]
    stop: Option<&'a RawValue>,
    #[serde(borrow)]
    user: Option<&'a RawValue>,
    #[serde(borrow)]
    logprobs: Option<&'a RawValue>,
    #[serde(borrow)]
    top_logprobs: Option<&'a RawValue>,
    #[serde(borrow)]
    logit_bias: Option<&'a RawValue>,
    #[serde(borrow)]
    parallel_tool_calls: Option<&'a RawValue>,
    #[serde(borrow)]
    tools: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_choice: Option<&'a RawValue>,
    #[serde(borrow)]
    response_format: Option<&'a RawValue>,
    #[serde(borrow)]
    functions: Option<&'a RawValue>,
    #[serde(borrow)]
    function_call: Option<&'a RawValue>,
    #[serde(borrow)]
    modalities: Option<&'a RawValue>,
    #[serde(borrow)]
    audio: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawTool<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    function: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawFunction<'a> {
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    description: Option<&'a RawValue>,
    #[serde(borrow)]
    parameters: Option<&'a RawValue>,
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawToolCall<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    function: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawResponseFormat<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    json_schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawJsonSchema<'a> {
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(borrow)]
    role: Option<&'a RawValue>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_calls: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_call_id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawPart<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    image_url: Option<&'a RawValue>,
    #[serde(borrow)]
    file: Option<&'a RawValue>,
    #[serde(borrow)]
    file_url: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawImageUrl<'a> {
    #[serde(borrow)]
    url: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawFile<'a> {
    #[serde(borrow)]
    file_data: Option<&'a RawValue>,
    #[serde(borrow)]
    url: Option<&'a RawValue>,
    #[serde(borrow)]
    filename: Option<&'a RawValue>,
    #[serde(borrow)]
    file_id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawStreamOptions<'a> {
    #[serde(borrow)]
    include_usage: Option<&'a RawValue>,
}

impl ChatRequest {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let body = super::body::normalized(body);
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_body(
                "The request body is empty. Send a JSON object with `model` and `messages`.",
            ));
        }
        let text = std::str::from_utf8(&body).map_err(|e| {
            ApiError::bad_body(format!("The request body is not valid UTF-8: {e}."))
        })?;
        let first = text.trim_start().as_bytes().first().copied();
        if first != Some(b'{') {
            // Syntax first: a broken body is "not valid JSON" whatever it starts with.
            serde_json::from_str::<IgnoredAny>(text).map_err(not_json)?;
            return Err(ApiError::bad_body(
                "The request body must be a JSON object.",
            ));
        }
        let raw: RawRequest = serde_json::from_str(text).map_err(not_json)?;
        let model = match raw.model {
            None => return Err(ApiError::missing("model")),
            Some(v) => string(v, "model")?,
        };
        if model.trim().is_empty() {
            return Err(ApiError::invalid("model", "`model` must not be empty."));
        }
        let messages = match raw.messages {
            None => return Err(ApiError::missing("messages")),
            Some(v) => {
                let items = array(v, "messages", MAX_MESSAGES)?;
                if items.is_empty() {
                    return Err(ApiError::invalid(
                        "messages",
                        "`messages` must contain at least one message.",
                    ));
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, m)| parse_message(i, m))
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        let stream = optional(raw.stream, "stream", boolean)?.unwrap_or(false);
        let include_usage = match raw.stream_options {
            None => false,
            Some(v) => {
                let o: RawStreamOptions = object(v, "stream_options")?;
                optional(o.include_usage, "stream_options.include_usage", boolean)?.unwrap_or(false)
            }
        };
        let keep_conversation =
            optional(raw.keep_conversation, "keep_conversation", boolean)?.unwrap_or(false);
        let conversation_id = match raw.conversation_id {
            None => None,
            Some(v) if kind(v) == "a number" => Some(parse_conversation_id(v.get())?),
            Some(v) => Some(parse_conversation_id(&string(v, "conversation_id")?)?),
        };
        validate_ignored(&raw)?;
        if raw.functions.is_some() || raw.function_call.is_some() {
            let param = if raw.functions.is_some() {
                "functions"
            } else {
                "function_call"
            };
            return Err(ApiError::invalid(
                param,
                "The deprecated `functions` and `function_call` fields are not supported: send `tools` \
                 (`[{\"type\": \"function\", \"function\": {...}}]`) and `tool_choice` instead.",
            ));
        }
        let tools = match raw.tools.filter(|v| kind(v) != "null") {
            None => vec![],
            Some(v) => parse_tools(v)?,
        };
        let tool_choice = match raw.tool_choice.filter(|v| kind(v) != "null") {
            None if tools.is_empty() => ToolChoice::None,
            None => ToolChoice::Auto,
            Some(v) => parse_tool_choice(v, &tools)?,
        };
        let parallel_tool_calls =
            optional(raw.parallel_tool_calls, "parallel_tool_calls", boolean)?.unwrap_or(true);
        let response_format = match raw.response_format.filter(|v| kind(v) != "null") {
            None => ResponseFormat::Text,
            Some(v) => parse_response_format(v)?,
        };
        let max_tokens = output_cap(&raw)?;
        let thinking = match optional(raw.reasoning_effort, "reasoning_effort", string)? {
            None => ThinkingWanted::Default,
            Some(e) => match e.as_str() {
                "none" | "minimal" => ThinkingWanted::Off,
                "low" | "medium" | "high" | "xhigh" => ThinkingWanted::On,
                other => {
                    return Err(ApiError::invalid(
                        "reasoning_effort",
                        format!(
                            "`reasoning_effort` must be one of none, minimal, low, medium, high, xhigh; got {other:?}."
                        ),
                    ))
                }
            },
        };
        Ok(Self {
            conversation: Conversation {
                model,
                messages,
                tools,
                tool_choice,
                parallel_tool_calls,
                response_format,
                thinking,
                max_tokens,
                sampling: crate::conversation::Sampling {
                    temperature: optional(raw.temperature, "temperature", number)?,
                    top_p: optional(raw.top_p, "top_p", number)?,
                },
                keep_conversation,
                conversation_id,
            },
            stream,
            include_usage,
        })
    }
}

/// The sampling and output fields: the upstream has no such knobs, so they
/// are ignored, but a value OpenAI would refuse is refused here too (a
/// client's bug should not pass silently).
fn validate_ignored(raw: &RawRequest) -> Result<(), ApiError> {
    // Spoken answers (gpt-4o-audio-preview's): a text answer in their place
    // would pass silently for what was asked.
    let no_audio = "Audio answers are not supported here: the upstream answers in text. \
                    Leave `modalities` at [\"text\"] and `audio` out, and send the answer \
                    to POST /v1/audio/speech to hear it.";
    optional(raw.modalities, "modalities", |v, p| {
        for (i, m) in array(v, p, 2)?.iter().enumerate() {
            if string(m, &format!("{p}[{i}]"))? != "text" {
                return Err(ApiError::invalid(p, no_audio));
            }
        }
        Ok(())
    })?;
    if raw.audio.is_some_and(|v| kind(v) != "null") {
        return Err(ApiError::invalid("audio", no_audio));
    }
    if let Some(n) = optional(raw.n, "n", integer)? {
        if n < 1 {
            return Err(ApiError::invalid(
                "n",
                format!("`n` must be at least 1, got {n}."),
            ));
        }
        if n > 1 {
            return Err(ApiError::invalid(
                "n",
                format!("`n` = {n} is not supported: the upstream gives one answer per request. Send n = 1 (or leave it out) and make {n} requests."),
            ));
        }
    }
    let ranges = [
        (raw.temperature, "temperature", 0.0, 2.0),
        (raw.top_p, "top_p", 0.0, 1.0),
        (raw.presence_penalty, "presence_penalty", -2.0, 2.0),
        (raw.frequency_penalty, "frequency_penalty", -2.0, 2.0),
    ];
    for (value, name, low, high) in ranges {
        if let Some(x) = optional(value, name, number)? {
            if !(low..=high).contains(&x) {
                return Err(ApiError::invalid(
                    name,
                    format!("`{name}` must be between {low} and {high}, got {x}."),
                ));
            }
        }
    }
    optional(raw.seed, "seed", integer)?;
    optional(raw.user, "user", string)?;
    optional(raw.logprobs, "logprobs", boolean)?;
    if let Some(x) = optional(raw.top_logprobs, "top_logprobs", integer)? {
        if !(0..=20).contains(&x) {
            return Err(ApiError::invalid(
                "top_logprobs",
                format!("`top_logprobs` must be between 0 and 20, got {x}."),
            ));
        }
    }
    if let Some(v) = raw.logit_bias {
        if kind(v) != "an object" {
            return Err(ApiError::invalid(
                "logit_bias",
                format!("`logit_bias` must be an object, got {}.", kind(v)),
            ));
        }
    }
    if let Some(v) = raw.stop {
        match kind(v) {
            "a string" => {}
            "an array" => {
                let stops = array(v, "stop", 4)?;
                for (i, s) in stops.iter().enumerate() {
                    string(s, &format!("stop[{i}]"))?;
                }
            }
            other => {
                return Err(ApiError::invalid(
                    "stop",
                    format!("`stop` must be a string or an array of up to 4 strings, got {other}."),
                ))
            }
        }
    }
    Ok(())
}

/// `max_completion_tokens` (the newer name) or `max_tokens`: the answer's cap.
fn output_cap(raw: &RawRequest) -> Result<Option<u32>, ApiError> {
    let mut cap = None;
    for (value, name) in [
        (raw.max_tokens, "max_tokens"),
        (raw.max_completion_tokens, "max_completion_tokens"),
    ] {
        if let Some(x) = optional(value, name, integer)? {
            if x < 1 {
                return Err(ApiError::invalid(
                    name,
                    format!("`{name}` must be at least 1, got {x}."),
                ));
            }
            cap = Some(u32::try_from(x).unwrap_or(u32::MAX));
        }
    }
    Ok(cap)
}

fn not_json(e: serde_json::Error) -> ApiError {
    ApiError::bad_body(format!("The request body is not valid JSON: {e}."))
}

/// What a raw value is, from its first character (it is valid JSON already).
fn kind(v: &RawValue) -> &'static str {
    match v.get().trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn wrong_type(param: &str, expected: &str, v: &RawValue) -> ApiError {
    ApiError::invalid(
        param,
        format!("`{param}` must be {expected}, got {}.", kind(v)),
    )
}

/// A field that may be absent or null.
fn optional<T>(
    v: Option<&RawValue>,
    param: &str,
    read: impl Fn(&RawValue, &str) -> Result<T, ApiError>,
) -> Result<Option<T>, ApiError> {
    v.filter(|v| kind(v) != "null")
        .map(|v| read(v, param))
        .transpose()
}

fn string(v: &RawValue, param: &str) -> Result<String, ApiError> {
    if kind(v) != "a string" {
        return Err(wrong_type(param, "a string", v));
    }
    serde_json::from_str(v.get()).map_err(|_| wrong_type(param, "a string", v))
}

fn boolean(v: &RawValue, param: &str) -> Result<bool, ApiError> {
    serde_json::from_str(v.get()).map_err(|_| wrong_type(param, "a boolean", v))
}

fn number(v: &RawValue, param: &str) -> Result<f64, ApiError> {
    if kind(v) != "a number" {
        return Err(wrong_type(param, "a number", v));
    }
    serde_json::from_str(v.get()).map_err(|_| wrong_type(param, "a number", v))
}

fn integer(v: &RawValue, param: &str) -> Result<i64, ApiError> {
    if kind(v) != "a number" {
        return Err(wrong_type(param, "an integer", v));
    }
    serde_json::from_str(v.get()).map_err(|_| {
        ApiError::invalid(
            param,
            format!("`{param}` must be an integer, got {}.", v.get()),
        )
    })
}

/// A typed object; `T`'s fields borrow from `v`, unknown keys are skipped.
fn object<'a, T: Deserialize<'a>>(v: &'a RawValue, param: &str) -> Result<T, ApiError> {
    if kind(v) != "an object" {
        return Err(wrong_type(param, "an object", v));
    }
    serde_json::from_str(v.get())
        .map_err(|e| ApiError::invalid(param, format!("`{param}` is malformed: {e}.")))
}

/// An array's items, unread; more than `max` items is a 400 (counted
/// without keeping them).
fn array<'a>(v: &'a RawValue, param: &str, max: usize) -> Result<Vec<&'a RawValue>, ApiError> {
    if kind(v) != "an array" {
        return Err(wrong_type(param, "an array", v));
    }
    struct Capped(usize);
    impl<'de> Visitor<'de> for Capped {
        type Value = (Vec<&'de RawValue>, usize);
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            let mut count = 0;
            while count < self.0 {
                match seq.next_element::<&'de RawValue>()? {
                    Some(item) => items.push(item),
                    None => return Ok((items, count)),
                }
                count += 1;
            }
            while seq.next_element::<IgnoredAny>()?.is_some() {
                count += 1;
            }
            Ok((items, count))
        }
    }
    let mut de = serde_json::Deserializer::from_str(v.get());
    let (items, count) = de
        .deserialize_seq(Capped(max))
        .map_err(|e| ApiError::invalid(param, format!("`{param}` is malformed: {e}.")))?;
    if count > max {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` holds {count} items; at most {max} are accepted."),
        ));
    }
    Ok(items)
}

/// Accepts the bare upstream id or the completion id that carries it (`chatcmpl-<id>`).
fn parse_conversation_id(raw: &str) -> Result<String, ApiError> {
    let id = raw.trim();
    let id = id.strip_prefix("chatcmpl-").unwrap_or(id);
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(ApiError::invalid(
            "conversation_id",
            "`conversation_id` must be an upstream chat id (digits, as returned in a response's `id` or `conversation_id`).",
        ));
    }
    Ok(id.to_string())
}

fn parse_message(i: usize, m: &RawValue) -> Result<Message, ApiError> {
    let at = format!("messages[{i}]");
    if kind(m) != "an object" {
        return Err(ApiError::invalid(
            &at,
            format!(
                "`{at}` must be an object with `role` and `content`, got {}.",
                kind(m)
            ),
        ));
    }
    let raw: RawMessage = object(m, &at)?;
    let role_param = format!("{at}.role");
    let role = match raw.role.filter(|v| kind(v) != "null") {
        None => return Err(ApiError::missing(&role_param)),
        Some(v) => {
            let s = string(v, &role_param)?;
            Role::parse(&s).ok_or_else(|| {
                ApiError::invalid(
                    &role_param,
                    format!("`{role_param}` must be one of system, developer, user, assistant, tool; got {s:?}."),
                )
            })?
        }
    };
    let content_param = format!("{at}.content");
    let (text, attachments) = match raw.content.filter(|v| kind(v) != "null") {
        // Assistant turns that only carried tool calls have no content.
        None => (String::new(), vec![]),
        Some(v) if kind(v) == "a string" => (string(v, &content_param)?, vec![]),
        Some(v) if kind(v) == "an array" => {
            parse_parts(&content_param, &array(v, &content_param, MAX_PARTS)?)?
        }
        Some(v) => {
            return Err(ApiError::invalid(
                &content_param,
                format!(
                    "`{content_param}` must be a string or an array of content parts, got {}.",
                    kind(v)
                ),
            ))
        }
    };
    let tool_calls = match raw.tool_calls.filter(|v| kind(v) != "null") {
        None => vec![],
        Some(v) => {
            let param = format!("{at}.tool_calls");
            if role != Role::Assistant {
                return Err(ApiError::invalid(
                    &param,
                    format!("`{param}` is only allowed on assistant messages."),
                ));
            }
            array(v, &param, MAX_TOOL_CALLS)?
                .iter()
                .enumerate()
                .map(|(j, c)| parse_tool_call(&format!("{param}[{j}]"), c))
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    let id_param = format!("{at}.tool_call_id");
    let tool_call_id = optional(raw.tool_call_id, &id_param, string)?;
    if role == Role::Tool && tool_call_id.is_none() {
        return Err(ApiError::invalid(
            &id_param,
            format!("`{id_param}` is required on tool messages: the id of the call this message answers."),
        ));
    }
    Ok(Message {
        role,
        text,
        attachments,
        tool_calls,
        tool_call_id,
        tool_error: false,
        thinking: vec![],
    })
}

fn parse_tool_call(at: &str, v: &RawValue) -> Result<ToolCall, ApiError> {
    let raw: RawToolCall = object(v, at)?;
    let id = required(raw.id, &format!("{at}.id"), string)?;
    if let Some(t) = optional(raw.kind, &format!("{at}.type"), string)? {
        if t != "function" {
            return Err(ApiError::invalid(
                format!("{at}.type"),
                format!("`{at}.type` must be \"function\", got {t:?}."),
            ));
        }
    }
    let fparam = format!("{at}.function");
    let f: RawFunction = object(required(raw.function, &fparam, |v, _| Ok(v))?, &fparam)?;
    let name = required(f.name, &format!("{fparam}.name"), string)?;
    // OpenAI carries arguments as JSON text; an object is taken too.
    let aparam = format!("{fparam}.arguments");
    let arguments = match f.arguments.filter(|v| kind(v) != "null") {
        None => "{}".to_string(),
        Some(v) if kind(v) == "a string" => string(v, &aparam)?,
        Some(v) if kind(v) == "an object" => v.get().to_string(),
        Some(v) => return Err(wrong_type(&aparam, "a string of JSON", v)),
    };
    Ok(ToolCall {
        id,
        name,
        arguments,
    })
}

/// A field that must be present (and not null).
fn required<'a, T>(
    v: Option<&'a RawValue>,
    param: &str,
    read: impl Fn(&'a RawValue, &str) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    match v.filter(|v| kind(v) != "null") {
        None => Err(ApiError::missing(param)),
        Some(v) => read(v, param),
    }
}

/// A JSON Schema: an object, kept as its text until it is compiled (a tree
/// of it costs several times the text).
fn schema(v: &RawValue, param: &str) -> Result<String, ApiError> {
    if kind(v) != "an object" {
        return Err(wrong_type(param, "a JSON Schema object", v));
    }
    Ok(v.get().to_string())
}

fn too_large(param: &str, v: &RawValue) -> Result<(), ApiError> {
    if v.get().len() > MAX_SCHEMA_BYTES {
        return Err(ApiError::invalid(
            param,
            format!(
                "`{param}` takes {} bytes; at most {MAX_SCHEMA_BYTES} are accepted.",
                v.get().len()
            ),
        ));
    }
    Ok(())
}

fn parse_tools(v: &RawValue) -> Result<Vec<Tool>, ApiError> {
    too_large("tools", v)?;
    let items = array(v, "tools", MAX_TOOLS)?;
    let mut tools: Vec<Tool> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("tools[{i}]");
        let raw: RawTool = object(item, &at)?;
        let t = required(raw.kind, &format!("{at}.type"), string)?;
        if t != "function" {
            return Err(ApiError::invalid(
                format!("{at}.type"),
                format!("`{at}.type` {t:?} is not supported; only \"function\" tools are."),
            ));
        }
        let fparam = format!("{at}.function");
        let f: RawFunction = object(required(raw.function, &fparam, |v, _| Ok(v))?, &fparam)?;
        let nparam = format!("{fparam}.name");
        let name = required(f.name, &nparam, string)?;
        let valid = (1..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(ApiError::invalid(
                &nparam,
                format!("`{nparam}` must be 1 to 64 letters, digits, underscores or dashes, got {name:?}."),
            ));
        }
        if tools.iter().any(|t| t.name == name) {
            return Err(ApiError::invalid(
                &nparam,
                format!("`{nparam}`: the tool name {name:?} is given twice."),
            ));
        }
        let description =
            optional(f.description, &format!("{fparam}.description"), string)?.unwrap_or_default();
        let parameters = optional(f.parameters, &format!("{fparam}.parameters"), schema)?;
        tools.push(Tool {
            name,
            description,
            parameters,
        });
    }
    Ok(tools)
}

fn parse_tool_choice(v: &RawValue, tools: &[Tool]) -> Result<ToolChoice, ApiError> {
    let choice = match kind(v) {
        "a string" => match string(v, "tool_choice")?.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!("`tool_choice` must be \"none\", \"auto\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got {other:?}."),
                ))
            }
        },
        "an object" => {
            let raw: RawTool = object(v, "tool_choice")?;
            let t = required(raw.kind, "tool_choice.type", string)?;
            if t != "function" {
                return Err(ApiError::invalid(
                    "tool_choice.type",
                    format!("`tool_choice.type` must be \"function\", got {t:?}."),
                ));
            }
            let f: RawFunction = object(
                required(raw.function, "tool_choice.function", |v, _| Ok(v))?,
                "tool_choice.function",
            )?;
            let name = required(f.name, "tool_choice.function.name", string)?;
            if !tools.iter().any(|t| t.name == name) {
                return Err(ApiError::invalid(
                    "tool_choice.function.name",
                    format!("`tool_choice` names the function {name:?}, which is not in `tools`."),
                ));
            }
            ToolChoice::Function(name)
        }
        _ => return Err(wrong_type("tool_choice", "a string or an object", v)),
    };
    if tools.is_empty() && matches!(choice, ToolChoice::Required | ToolChoice::Function(_)) {
        return Err(ApiError::invalid(
            "tool_choice",
            "`tool_choice` asks for a tool call, but `tools` is empty or missing.",
        ));
    }
    Ok(choice)
}

fn parse_response_format(v: &RawValue) -> Result<ResponseFormat, ApiError> {
    let raw: RawResponseFormat = object(v, "response_format")?;
    let t = required(raw.kind, "response_format.type", string)?;
    Ok(match t.as_str() {
        "text" => ResponseFormat::Text,
        "json_object" => ResponseFormat::JsonObject,
        "json_schema" => {
            let param = "response_format.json_schema";
            let js: RawJsonSchema = object(required(raw.json_schema, param, |v, _| Ok(v))?, param)?;
            let name = required(js.name, &format!("{param}.name"), string)?;
            let schema = match js.schema.filter(|v| kind(v) != "null") {
                None => None,
                Some(v) => {
                    let sparam = format!("{param}.schema");
                    too_large(&sparam, v)?;
                    Some(schema(v, &sparam)?)
                }
            };
            ResponseFormat::JsonSchema { name, schema }
        }
        other => {
            return Err(ApiError::invalid(
                "response_format.type",
                format!("`response_format.type` must be \"text\", \"json_object\" or \"json_schema\", got {other:?}."),
            ))
        }
    })
}

type Parts = (String, Vec<(usize, Attachment)>);

fn parse_parts(at: &str, parts: &[&RawValue]) -> Result<Parts, ApiError> {
    let mut texts = Vec::new();
    let mut attachments = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let p = format!("{at}[{j}]");
        if kind(part) != "an object" {
            return Err(ApiError::invalid(
                &p,
                format!("`{p}` must be a content part object, got {}.", kind(part)),
            ));
        }
        let raw: RawPart = object(part, &p)?;
        let type_param = format!("{p}.type");
        let part_type = match raw.kind.filter(|v| kind(v) != "null") {
            None => return Err(ApiError::missing(&type_param)),
            Some(v) => string(v, &type_param)?,
        };
        match part_type.as_str() {
            "text" | "input_text" => {
                let text_param = format!("{p}.text");
                match raw.text.filter(|v| kind(v) == "a string") {
                    Some(v) => texts.push(string(v, &text_param)?),
                    None => {
                        return Err(ApiError::invalid(
                            &text_param,
                            format!("`{text_param}` must be a string."),
                        ))
                    }
                }
            }
            "image_url" | "input_image" => {
                let url_param = format!("{p}.image_url");
                let url = match raw.image_url {
                    Some(v) if kind(v) == "a string" => Some(string(v, &url_param)?),
                    Some(v) if kind(v) == "an object" => {
                        let o: RawImageUrl = object(v, &url_param)?;
                        optional(o.url, &format!("{url_param}.url"), string)?
                    }
                    _ => None,
                }
                .filter(|u| !u.trim().is_empty())
                .ok_or_else(|| {
                    ApiError::invalid(
                        &url_param,
                        format!("`{p}.image_url.url` must be a URL or data: URL."),
                    )
                })?;
                attachments.push((j, Attachment::Image { url }));
            }
            "file" => {
                // OpenAI's `file` object (`file_data` or `file_id`), or the
                // free-api family's `file_url` object.
                let (file_param, raw_file) = match (raw.file, raw.file_url) {
                    (Some(v), _) => (format!("{p}.file"), v),
                    (None, Some(v)) => (format!("{p}.file_url"), v),
                    (None, None) => {
                        return Err(ApiError::invalid(
                            format!("{p}.file"),
                            format!("`{p}` needs `file` ({{\"file_data\": \"data:…;base64,…\", \"filename\": …}}) or `file_url` ({{\"url\": …}})."),
                        ))
                    }
                };
                let f: RawFile = object(raw_file, &file_param)?;
                if f.file_id.is_some_and(|v| kind(v) != "null") {
                    return Err(ApiError::invalid(
                        format!("{file_param}.file_id"),
                        format!("`{file_param}.file_id` refers to OpenAI's Files API, which this service does not have: send the file itself (`file_data`, a base64 data: URL) or a URL to it."),
                    ));
                }
                let url =
                    match optional(f.file_data, &format!("{file_param}.file_data"), string)? {
                        Some(u) => Some(u),
                        None => optional(f.url, &format!("{file_param}.url"), string)?,
                    }
                    .filter(|u| !u.trim().is_empty())
                    .ok_or_else(|| {
                        ApiError::invalid(
                            &file_param,
                            format!("`{file_param}` must hold `file_data` (a data: URL) or `url`."),
                        )
                    })?;
                let filename = optional(f.filename, &format!("{file_param}.filename"), string)?;
                attachments.push((j, Attachment::File { url, filename }));
            }
            other => {
                return Err(ApiError::invalid(
                    type_param,
                    format!("`{p}.type` {other:?} is not supported; use text, image_url or file."),
                ))
            }
        }
    }
    Ok((texts.join("\n"), attachments))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<ChatRequest, ApiError> {
        ChatRequest::parse(v.to_string().as_bytes())
    }

    fn param_of(e: ApiError) -> String {
        e.body()["error"]["param"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn half_an_emoji_or_a_byte_order_mark_is_read_not_refused() {
        // As JSON.stringify writes a JavaScript string cut inside an emoji:
        // in a message's text, in a text part, in a tool call's arguments.
        let body = r#"{"model":"hailuo","messages":[
            {"role":"user","content":"cut \ud83d"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function",
              "function":{"name":"f","arguments":"{\"q\":\"\ude00\"}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"ok"},
            {"role":"user","content":[{"type":"text","text":"whole \ud83d\ude00, \\ud83d"}]}]}"#;
        let r = ChatRequest::parse(body.as_bytes()).unwrap();
        assert_eq!(r.conversation.messages[0].text, "cut \u{FFFD}");
        assert_eq!(
            r.conversation.messages[1].tool_calls[0].arguments,
            "{\"q\":\"\u{FFFD}\"}"
        );
        assert_eq!(r.conversation.messages[3].text, r"whole 😀, \ud83d");
        // A file saved by a Windows editor, sent with `curl -d @file`.
        let with_bom = [&b"\xEF\xBB\xBF"[..], body.as_bytes()].concat();
        assert_eq!(ChatRequest::parse(&with_bom).unwrap(), r);
    }

    #[test]
    fn an_audio_answer_is_refused_and_a_text_one_is_not() {
        let base =
            serde_json::json!({"model": "hailuo", "messages": [{"role": "user", "content": "hi"}]});
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base.clone();
            b[k] = v;
            parse(b)
        };
        for (k, v, param) in [
            (
                "modalities",
                serde_json::json!(["text", "audio"]),
                "modalities",
            ),
            (
                "audio",
                serde_json::json!({"voice": "alloy", "format": "mp3"}),
                "audio",
            ),
            ("modalities", serde_json::json!("text"), "modalities"),
            ("modalities", serde_json::json!([1]), "modalities[0]"),
        ] {
            let e = with(k, v).unwrap_err();
            assert_eq!(param_of(e), param);
        }
        let e = with("modalities", serde_json::json!(["audio"])).unwrap_err();
        assert!(e.to_string().contains("/v1/audio/speech"), "{e}");
        with("modalities", serde_json::json!(["text"])).unwrap();
        with("modalities", serde_json::Value::Null).unwrap();
        with("audio", serde_json::Value::Null).unwrap();
    }

    #[test]
    fn minimal_request_and_defaults() {
        let r = parse(
            serde_json::json!({"model": "hailuo", "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.2, "top_p": 1}),
        )
        .unwrap();
        assert_eq!(r.conversation.model, "hailuo");
        assert_eq!(
            r.conversation.messages[0],
            Message {
                role: Role::User,
                text: "hi".into(),
                ..Message::default()
            }
        );
        assert!(!r.stream && !r.include_usage && !r.conversation.keeps_conversation());
    }

    #[test]
    fn stream_options_and_extensions() {
        let r = parse(serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "stream": true, "stream_options": {"include_usage": true}, "conversation_id": "chatcmpl-242830597915504644"}))
        .unwrap();
        assert!(r.stream && r.include_usage);
        assert_eq!(
            r.conversation.conversation_id.as_deref(),
            Some("242830597915504644")
        );
        assert!(r.conversation.keeps_conversation());
    }

    #[test]
    fn content_parts_text_and_attachments() {
        let r = parse(serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "here"}, {"type": "file", "file": {"file_data": "https://x.example/a.pdf", "filename": "a.pdf"}}]}]}))
        .unwrap();
        assert_eq!(r.conversation.messages[0].text, "look\nhere");
        assert_eq!(r.conversation.messages[0].attachments.len(), 2);
    }

    #[test]
    fn every_mistake_names_its_field() {
        let cases = [
            (
                serde_json::json!({"messages": [{"role": "user", "content": "x"}]}),
                "model",
            ),
            (
                serde_json::json!({"model": 5, "messages": [{"role": "user", "content": "x"}]}),
                "model",
            ),
            (serde_json::json!({"model": "m"}), "messages"),
            (
                serde_json::json!({"model": "m", "messages": []}),
                "messages",
            ),
            (
                serde_json::json!({"model": "m", "messages": "hi"}),
                "messages",
            ),
            (
                serde_json::json!({"model": "m", "messages": [{"content": "x"}]}),
                "messages[0].role",
            ),
            (
                serde_json::json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                serde_json::json!({"model": "m", "messages": [{"role": "user", "content": 3}]}),
                "messages[0].content",
            ),
            (
                serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "audio"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}),
                "stream",
            ),
            (
                serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": 1}}),
                "stream_options.include_usage",
            ),
            (
                serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "conversation_id": "a b"}),
                "conversation_id",
            ),
        ];
        for (body, param) in cases {
            let e = parse(body.clone()).unwrap_err();
            assert_eq!(e.status(), 400, "{body}");
            assert_eq!(param_of(e.clone()), param, "{body}");
            assert!(
                e.to_string().contains(param.split('[').next().unwrap()),
                "{e}"
            );
        }
    }

    #[test]
    fn values_openai_refuses_are_refused_with_their_field() {
        let base = |extra: serde_json::Value| {
            let mut b =
                serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            parse(b)
        };
        let refused = [
            (serde_json::json!({"temperature": "hot"}), "temperature"),
            (serde_json::json!({"temperature": 2.5}), "temperature"),
            (serde_json::json!({"top_p": -0.1}), "top_p"),
            (serde_json::json!({"max_tokens": -5}), "max_tokens"),
            (serde_json::json!({"max_tokens": 1.5}), "max_tokens"),
            (
                serde_json::json!({"max_completion_tokens": 0}),
                "max_completion_tokens",
            ),
            (serde_json::json!({"n": 0}), "n"),
            (serde_json::json!({"n": 1000}), "n"),
            (serde_json::json!({"n": "1"}), "n"),
            (
                serde_json::json!({"presence_penalty": 3}),
                "presence_penalty",
            ),
            (
                serde_json::json!({"frequency_penalty": [1]}),
                "frequency_penalty",
            ),
            (serde_json::json!({"seed": 1.5}), "seed"),
            (serde_json::json!({"stop": 5}), "stop"),
            (
                serde_json::json!({"stop": ["a", "b", "c", "d", "e"]}),
                "stop",
            ),
            (serde_json::json!({"stop": ["a", 1]}), "stop[1]"),
            (serde_json::json!({"user": 5}), "user"),
            (serde_json::json!({"logprobs": "yes"}), "logprobs"),
            (serde_json::json!({"top_logprobs": 21}), "top_logprobs"),
            (serde_json::json!({"logit_bias": []}), "logit_bias"),
        ];
        for (extra, param) in refused {
            let e = base(extra.clone()).unwrap_err();
            assert_eq!(e.status(), 400, "{extra}");
            assert_eq!(param_of(e), param, "{extra}");
        }
        let n_msg = base(serde_json::json!({"n": 3})).unwrap_err().to_string();
        assert!(n_msg.contains("not supported"), "{n_msg}");
        let accepted = serde_json::json!({"temperature": 0, "top_p": 1, "n": 1, "max_tokens": 100,
            "max_completion_tokens": null, "presence_penalty": -2, "frequency_penalty": 2.0, "seed": 42,
            "stop": ["\n"], "user": "u", "logprobs": false, "top_logprobs": 0, "logit_bias": {"1": 2},
            "parallel_tool_calls": true, "tools": [{"type": "function", "function": {"name": "f"}}], "metadata": {"a": "b"},
            "unknown_field": {"deep": [1, 2, {"x": null}]}});
        assert!(base(accepted).is_ok());
    }

    #[test]
    fn tools_choices_formats_and_tool_history() {
        let r = parse(serde_json::json!({"model": "m", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
                "parameters": {"type": "object"}, "strict": true}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": true}}}))
        .unwrap();
        assert_eq!(r.conversation.tools[0].name, "get_weather");
        assert_eq!(r.conversation.tool_choice, ToolChoice::Auto);
        assert!(r.conversation.parallel_tool_calls);
        assert_eq!(
            r.conversation.messages[1].tool_calls[0].arguments,
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(
            r.conversation.messages[2].tool_call_id.as_deref(),
            Some("call_1")
        );
        assert!(
            matches!(r.conversation.response_format, ResponseFormat::JsonSchema { ref name, .. } if name == "x")
        );
        let none = parse(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        )
        .unwrap();
        assert_eq!(none.conversation.tool_choice, ToolChoice::None);
        let named = parse(serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}}, "parallel_tool_calls": false}))
        .unwrap();
        assert_eq!(
            named.conversation.tool_choice,
            ToolChoice::Function("f".into())
        );
        assert!(!named.conversation.parallel_tool_calls);

        let base = |extra: serde_json::Value| {
            let mut b =
                serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            parse(b)
        };
        let f = serde_json::json!([{"type": "function", "function": {"name": "f"}}]);
        let refused = [
            (serde_json::json!({"tools": {}}), "tools"),
            (
                serde_json::json!({"tools": [{"type": "retrieval"}]}),
                "tools[0].type",
            ),
            (
                serde_json::json!({"tools": [{"type": "function"}]}),
                "tools[0].function",
            ),
            (
                serde_json::json!({"tools": [{"type": "function", "function": {"name": "a b"}}]}),
                "tools[0].function.name",
            ),
            (
                serde_json::json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}),
                "tools[0].function.parameters",
            ),
            (
                serde_json::json!({"tools": [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]}),
                "tools[1].function.name",
            ),
            (
                serde_json::json!({"tool_choice": "required"}),
                "tool_choice",
            ),
            (
                serde_json::json!({"tools": f, "tool_choice": "always"}),
                "tool_choice",
            ),
            (
                serde_json::json!({"tools": f, "tool_choice": {"type": "function", "function": {"name": "g"}}}),
                "tool_choice.function.name",
            ),
            (
                serde_json::json!({"parallel_tool_calls": "no"}),
                "parallel_tool_calls",
            ),
            (
                serde_json::json!({"response_format": {"type": "xml"}}),
                "response_format.type",
            ),
            (
                serde_json::json!({"response_format": {"type": "json_schema"}}),
                "response_format.json_schema",
            ),
            (
                serde_json::json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}),
                "response_format.json_schema.name",
            ),
            (serde_json::json!({"functions": []}), "functions"),
            (
                serde_json::json!({"function_call": "auto"}),
                "function_call",
            ),
            (
                serde_json::json!({"messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].tool_call_id",
            ),
            (
                serde_json::json!({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}),
                "messages[0].tool_calls",
            ),
            (
                serde_json::json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": 5}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                serde_json::json!({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]}),
                "messages[0].tool_calls[0].id",
            ),
        ];
        for (extra, param) in refused {
            let e = base(extra.clone()).unwrap_err();
            assert_eq!(e.status(), 400, "{extra}");
            assert_eq!(param_of(e), param, "{extra}");
        }
        let huge = vec![
            serde_json::json!({"type": "function", "function": {"name": "f", "description": "x".repeat(MAX_SCHEMA_BYTES)}}),
        ];
        assert_eq!(
            param_of(base(serde_json::json!({"tools": huge})).unwrap_err()),
            "tools"
        );
        let legacy = base(serde_json::json!({"functions": []}))
            .unwrap_err()
            .to_string();
        assert!(legacy.contains("`tools`"), "{legacy}");
    }

    #[test]
    fn messages_and_parts_are_capped() {
        let many: Vec<_> = (0..=MAX_MESSAGES)
            .map(|_| serde_json::json!({"role": "user", "content": "x"}))
            .collect();
        let e = parse(serde_json::json!({"model": "m", "messages": many})).unwrap_err();
        assert_eq!(param_of(e.clone()), "messages");
        assert!(
            e.to_string().contains(&format!("{}", MAX_MESSAGES + 1)),
            "{e}"
        );
        let parts: Vec<_> = (0..=MAX_PARTS)
            .map(|_| serde_json::json!({"type": "text", "text": "x"}))
            .collect();
        let e = parse(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": parts}]}),
        )
        .unwrap_err();
        assert_eq!(param_of(e), "messages[0].content");
        let exactly: Vec<_> = (0..MAX_MESSAGES)
            .map(|_| serde_json::json!({"role": "user", "content": "x"}))
            .collect();
        assert!(parse(serde_json::json!({"model": "m", "messages": exactly})).is_ok());
    }

    #[test]
    fn unknown_fields_and_escapes() {
        let body = r#"{"padding": [{"a": 0}, {"a": [0, {"b": "é"}]}], "model": "mé",
            "messages": [{"role": "user", "content": "say \"hi\" \u4f60\u597d", "name": "bob"}]}"#;
        let r = ChatRequest::parse(body.as_bytes()).unwrap();
        assert_eq!(r.conversation.model, "mé");
        assert_eq!(r.conversation.messages[0].text, "say \"hi\" 你好");
        let dup = r#"{"model": "a", "model": "b", "messages": []}"#;
        assert_eq!(
            ChatRequest::parse(dup.as_bytes()).unwrap_err().status(),
            400
        );
        assert_eq!(ChatRequest::parse(&[0xff, b'{']).unwrap_err().status(), 400);
    }

    #[test]
    fn malformed_json_and_non_objects() {
        for body in ["{", "", "[1]", "\"x\""] {
            let e = ChatRequest::parse(body.as_bytes()).unwrap_err();
            assert_eq!(e.status(), 400);
        }
    }
}
