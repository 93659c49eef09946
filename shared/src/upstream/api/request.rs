//! The conversation as a chat completions body (protocol sections 2.2 and
//! 2.3), serialized from borrowed parts. What the platform would refuse
//! with a 2013 after the account was taken (an unknown `tool_call_id`,
//! arguments that are not JSON, a function without parameters) is checked
//! or filled in here, so the caller gets a 400 that names the field.

use std::borrow::Cow;
use std::collections::HashSet;

use base64::Engine;
use serde::Serialize;
use serde_json::value::RawValue;

use super::models;
use crate::conversation::{Conversation, ResponseFormat, Role, ThinkingWanted, ToolChoice};
use crate::upstream::{FileUpload, UpstreamError};

/// The largest body the platform takes (64 MB), and each image (10 MB).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
pub const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    reasoning_split: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<WireThinking>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct WireThinking {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: Content<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<Part<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part<'a> {
    Text { text: Cow<'a, str> },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Serialize)]
struct ImageUrl {
    url: String,
}

#[derive(Serialize)]
struct WireCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    parameters: &'a RawValue,
}

fn invalid(message: String) -> UpstreamError {
    UpstreamError::InvalidRequest {
        message,
        code: "invalid_value",
    }
}

/// What a function with no `parameters` is given (the platform refuses none).
fn empty_schema() -> &'static RawValue {
    static EMPTY: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| {
        RawValue::from_string(r#"{"type":"object","properties":{}}"#.into())
            .unwrap_or_else(|_| unreachable!("a constant schema"))
    })
}

/// Whether a document goes in as text: UTF-8 of a text type (PDFs arrive
/// here as their text already, `Capabilities::pdf_as_text`).
fn is_text_document(file: &FileUpload) -> bool {
    (file.mime.starts_with("text/")
        || file.mime.starts_with("application/json")
        || file.mime.contains("xml")
        || file.mime.contains("yaml"))
        && std::str::from_utf8(&file.bytes).is_ok()
}

/// The last message's files as parts.
fn file_parts<'a>(
    files: &'a [std::sync::Arc<FileUpload>],
    model: &str,
) -> Result<Vec<Part<'a>>, UpstreamError> {
    let mut parts = Vec::new();
    for file in files {
        if file.image {
            if !models::takes_images(model) {
                return Err(invalid(format!(
                    "the model {model} takes text only, not images: set MINIMAX_API_VISION_MODEL \
                     to an M3 model, or send no image"
                )));
            }
            if file.bytes.len() > MAX_IMAGE_BYTES {
                return Err(UpstreamError::TooLarge(format!(
                    "the image {} is {} bytes; the platform takes at most {MAX_IMAGE_BYTES}",
                    file.original_name,
                    file.bytes.len()
                )));
            }
            parts.push(Part::ImageUrl {
                image_url: ImageUrl {
                    url: format!(
                        "data:{};base64,{}",
                        file.mime,
                        base64::engine::general_purpose::STANDARD.encode(&file.bytes)
                    ),
                },
            });
        } else if is_text_document(file) {
            let text = std::str::from_utf8(&file.bytes).unwrap_or_default();
            parts.push(Part::Text {
                text: Cow::Owned(format!(
                    "<file name=\"{}\">\n{text}\n</file>",
                    file.original_name
                )),
            });
        } else {
            return Err(UpstreamError::InvalidRequest {
                message: format!(
                    "the file {} ({}) cannot be sent to MiniMax's platform: it takes images (png, \
                     jpeg, gif, webp) on M3, PDFs and text documents",
                    file.original_name, file.mime
                ),
                code: "unsupported_file",
            });
        }
    }
    Ok(parts)
}

/// The instruction that asks for a JSON answer: the platform documents
/// `response_format` for a retired model only, so it is asked in words.
fn json_instruction(format: &ResponseFormat) -> Option<String> {
    match format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => {
            Some("Answer with one JSON object and nothing else: no prose, no code fence.".into())
        }
        ResponseFormat::JsonSchema { name, schema } => Some(format!(
            "Answer with one JSON object and nothing else (no prose, no code fence), valid \
             against the JSON Schema `{name}`: {}",
            schema.as_deref().unwrap_or("{}")
        )),
    }
}

/// The body for `conversation`; `model` is the name to send (`models.rs`),
/// `reasoning_split` and `thinking` as configured and asked.
pub fn body(
    conversation: &Conversation,
    files: &[std::sync::Arc<FileUpload>],
    model: &str,
    reasoning_split: bool,
    send_thinking: bool,
) -> Result<Vec<u8>, UpstreamError> {
    let mut system = String::new();
    let mut messages: Vec<WireMessage> = Vec::new();
    let mut calls_seen: HashSet<&str> = HashSet::new();
    let last = conversation.messages.len().saturating_sub(1);
    for (i, m) in conversation.messages.iter().enumerate() {
        if m.role.is_instruction() {
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str(&m.text);
            continue;
        }
        let message = match m.role {
            Role::Assistant => {
                let mut tool_calls = Vec::with_capacity(m.tool_calls.len());
                for (j, call) in m.tool_calls.iter().enumerate() {
                    let arguments = if call.arguments.trim().is_empty() {
                        "{}"
                    } else {
                        call.arguments.as_str()
                    };
                    if serde_json::from_str::<&RawValue>(arguments).is_err() {
                        return Err(invalid(format!(
                            "messages[{i}].tool_calls[{j}].function.arguments is not valid JSON"
                        )));
                    }
                    calls_seen.insert(&call.id);
                    tool_calls.push(WireCall {
                        id: &call.id,
                        kind: "function",
                        function: WireFunctionCall {
                            name: &call.name,
                            arguments,
                        },
                    });
                }
                if m.text.is_empty() && tool_calls.is_empty() {
                    continue;
                }
                WireMessage {
                    role: "assistant",
                    content: Content::Text(Cow::Borrowed(&m.text)),
                    tool_calls,
                    tool_call_id: None,
                }
            }
            Role::Tool => {
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                if !calls_seen.contains(id) {
                    return Err(invalid(format!(
                        "messages[{i}].tool_call_id {id:?} answers no tool call of an earlier \
                         assistant message"
                    )));
                }
                WireMessage {
                    role: "tool",
                    content: Content::Text(if m.tool_error {
                        Cow::Owned(format!("Error: {}", m.text))
                    } else {
                        Cow::Borrowed(&m.text)
                    }),
                    tool_calls: Vec::new(),
                    tool_call_id: Some(id),
                }
            }
            _ => {
                let content = if i == last && !files.is_empty() {
                    let mut parts = Vec::new();
                    if !m.text.is_empty() {
                        parts.push(Part::Text {
                            text: Cow::Borrowed(&m.text),
                        });
                    }
                    parts.extend(file_parts(files, model)?);
                    Content::Parts(parts)
                } else {
                    Content::Text(Cow::Borrowed(&m.text))
                };
                WireMessage {
                    role: "user",
                    content,
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                }
            }
        };
        messages.push(message);
    }
    if messages.is_empty() {
        return Err(invalid(
            "the messages hold nothing but instructions: send a user message".into(),
        ));
    }
    if let Some(instruction) = json_instruction(&conversation.response_format) {
        if !system.is_empty() {
            system.push_str("\n\n");
        }
        system.push_str(&instruction);
    }
    if !system.is_empty() {
        messages.insert(
            0,
            WireMessage {
                role: "system",
                content: Content::Text(Cow::Owned(system)),
                tool_calls: Vec::new(),
                tool_call_id: None,
            },
        );
    }
    // Only `auto` and `none` exist upstream: a forced function is the one
    // function offered; `required` is `auto` (the model is not made to call).
    let offered: Vec<_> = match &conversation.tool_choice {
        ToolChoice::Function(name) => conversation
            .tools
            .iter()
            .filter(|t| &t.name == name)
            .collect(),
        _ => conversation.tools.iter().collect(),
    };
    let mut tools = Vec::with_capacity(offered.len());
    for (i, tool) in offered.into_iter().enumerate() {
        let parameters = match &tool.parameters {
            Some(schema) => {
                let raw: &RawValue = serde_json::from_str(schema).map_err(|e| {
                    invalid(format!(
                        "tools[{i}].function.parameters is not valid JSON ({e})"
                    ))
                })?;
                raw
            }
            None => empty_schema(),
        };
        tools.push(WireTool {
            kind: "function",
            function: WireFunction {
                name: &tool.name,
                description: &tool.description,
                parameters,
            },
        });
    }
    let tool_choice = (!tools.is_empty()).then_some(match conversation.tool_choice {
        ToolChoice::None => "none",
        _ => "auto",
    });
    let thinking = (send_thinking
        && conversation.thinking == ThinkingWanted::Off
        && models::can_stop_thinking(model))
    .then_some(WireThinking { kind: "disabled" });
    let body = Body {
        model,
        messages,
        stream: true,
        stream_options: StreamOptions {
            include_usage: true,
        },
        max_completion_tokens: conversation.max_tokens,
        temperature: conversation
            .sampling
            .temperature
            .map(|t| models::temperature(model, t)),
        top_p: conversation.sampling.top_p,
        tools,
        tool_choice,
        reasoning_split,
        thinking,
    };
    let bytes = serde_json::to_vec(&body)
        .map_err(|e| UpstreamError::Protocol(format!("the request could not be written: {e}")))?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(UpstreamError::TooLarge(format!(
            "the request is {} bytes, above the {MAX_BODY_BYTES} the platform takes",
            bytes.len()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{Message, Tool, ToolCall};
    use serde_json::{json, Value};

    fn conversation(messages: Vec<Message>) -> Conversation {
        Conversation {
            model: "MiniMax-M3".into(),
            messages,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
            response_format: ResponseFormat::Text,
            thinking: ThinkingWanted::Default,
            max_tokens: None,
            sampling: Default::default(),
            keep_conversation: false,
            conversation_id: None,
        }
    }

    fn m(role: Role, text: &str) -> Message {
        Message {
            role,
            text: text.into(),
            ..Message::default()
        }
    }

    fn built(c: &Conversation, thinking: bool) -> Value {
        serde_json::from_slice(&body(c, &[], "MiniMax-M3", true, thinking).unwrap()).unwrap()
    }

    #[test]
    fn a_tool_loop_goes_as_openai_messages_with_one_leading_system() {
        let mut c = conversation(vec![
            m(Role::System, "Be brief."),
            m(Role::Developer, "Use tools."),
            m(Role::User, "Weather in Paris?"),
            Message {
                role: Role::Assistant,
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "get_weather".into(),
                    arguments: String::new(),
                }],
                ..Message::default()
            },
            Message {
                role: Role::Tool,
                text: "boom".into(),
                tool_call_id: Some("call_1".into()),
                tool_error: true,
                ..Message::default()
            },
        ]);
        c.tools = vec![Tool {
            name: "get_weather".into(),
            description: "Current weather".into(),
            parameters: None,
        }];
        c.max_tokens = Some(2048);
        let b = built(&c, true);
        assert_eq!(b["model"], "MiniMax-M3");
        assert_eq!(b["stream_options"], json!({"include_usage": true}));
        assert_eq!(b["reasoning_split"], true);
        assert_eq!(b["max_completion_tokens"], 2048);
        assert_eq!(
            b["messages"][0],
            json!({"role": "system", "content": "Be brief.\n\nUse tools."})
        );
        assert_eq!(
            b["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{}"
        );
        assert_eq!(
            b["messages"][3],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "Error: boom"})
        );
        assert_eq!(
            b["tools"][0]["function"]["parameters"],
            json!({"type": "object", "properties": {}})
        );
        assert_eq!(b["tool_choice"], "auto");
        assert!(b.get("thinking").is_none() && b.get("n").is_none() && b.get("GroupId").is_none());
    }

    #[test]
    fn tool_choice_and_thinking_as_the_platform_takes_them() {
        let mut c = conversation(vec![m(Role::User, "hi")]);
        c.tools = ["a", "b"]
            .map(|n| Tool {
                name: n.into(),
                description: String::new(),
                parameters: Some(r#"{"type":"object"}"#.into()),
            })
            .to_vec();
        c.tool_choice = ToolChoice::Function("b".into());
        let b = built(&c, true);
        assert_eq!(b["tools"].as_array().unwrap().len(), 1);
        assert_eq!(b["tools"][0]["function"]["name"], "b");
        assert_eq!(b["tool_choice"], "auto");
        c.tool_choice = ToolChoice::None;
        assert_eq!(built(&c, true)["tool_choice"], "none");
        c.thinking = ThinkingWanted::Off;
        assert_eq!(built(&c, true)["thinking"], json!({"type": "disabled"}));
        // Not after the platform asked for adaptive thinking, nor on another model.
        assert!(built(&c, false).get("thinking").is_none());
        let other: Value =
            serde_json::from_slice(&body(&c, &[], "MiniMax-M2.7", false, true).unwrap()).unwrap();
        assert!(other.get("thinking").is_none() && other.get("reasoning_split").is_none());
        c.response_format = ResponseFormat::JsonObject;
        assert!(built(&c, true)["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("JSON object"));
    }

    #[test]
    fn what_the_platform_would_refuse_is_the_callers_400_first() {
        let c = conversation(vec![
            m(Role::User, "hi"),
            Message {
                role: Role::Tool,
                text: "x".into(),
                tool_call_id: Some("nope".into()),
                ..Message::default()
            },
        ]);
        let e = body(&c, &[], "MiniMax-M3", true, true).unwrap_err();
        assert!(e.to_string().contains("messages[1].tool_call_id"), "{e}");
        let c = conversation(vec![Message {
            role: Role::Assistant,
            tool_calls: vec![ToolCall {
                id: "c".into(),
                name: "f".into(),
                arguments: "{bad".into(),
            }],
            ..Message::default()
        }]);
        let e = body(&c, &[], "MiniMax-M3", true, true).unwrap_err();
        assert!(
            e.to_string()
                .contains("messages[0].tool_calls[0].function.arguments"),
            "{e}"
        );
        let e = body(
            &conversation(vec![m(Role::System, "x")]),
            &[],
            "MiniMax-M3",
            true,
            true,
        )
        .unwrap_err();
        assert!(e.to_string().contains("user message"));
        let image = std::sync::Arc::new(FileUpload {
            original_name: "a.png".into(),
            extension: "png".into(),
            mime: "image/png".into(),
            image: true,
            bytes: bytes::Bytes::from_static(b"\x89PNG"),
        });
        let c = conversation(vec![m(Role::User, "what is this")]);
        assert!(body(&c, std::slice::from_ref(&image), "MiniMax-M2.7", true, true).is_err());
        let b: Value =
            serde_json::from_slice(&body(&c, &[image], "MiniMax-M3", true, true).unwrap()).unwrap();
        assert!(b["messages"][0]["content"][1]["image_url"]["url"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,"));
    }
}
