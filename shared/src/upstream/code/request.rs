//! The conversation as an Anthropic Messages body (protocol sections 4.3 to
//! 4.5): serialized from borrowed parts, so a megabyte of history is copied
//! once, into the body, and never held as a JSON tree.

use std::borrow::Cow;

use base64::Engine;
use serde::Serialize;
use serde_json::value::RawValue;

use super::models::{Model, Thinks};
use crate::conversation::{Conversation, ResponseFormat, Role, ThinkingWanted, ToolChoice};
use crate::upstream::{FileUpload, UpstreamError};

/// The largest body the route takes (section 4.9); the gateway answers 413
/// itself above it.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Images: each at most this, and at most `MAX_IMAGES` per request.
pub const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;
pub const MAX_IMAGES: usize = 20;

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<[Block<'a>; 1]>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<WireThinking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<OutputConfig<'a>>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: Cow<'a, str>,
    },
    Image {
        source: ImageSource<'a>,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a RawValue,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: Cow<'a, str>,
    },
}

#[derive(Serialize)]
struct ImageSource<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    media_type: &'a str,
    data: String,
}

#[derive(Serialize)]
struct WireTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    input_schema: &'a RawValue,
}

#[derive(Serialize)]
struct WireToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_parallel_tool_use: bool,
}

#[derive(Serialize)]
struct WireThinking {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct OutputConfig<'a> {
    format: OutputFormat<'a>,
}

#[derive(Serialize)]
struct OutputFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    schema: &'a RawValue,
}

/// What a call with no `parameters` takes: an object with anything in it.
fn empty_schema() -> &'static RawValue {
    static EMPTY: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| {
        RawValue::from_string(r#"{"type":"object","properties":{}}"#.into())
            .unwrap_or_else(|_| unreachable!("a constant schema"))
    })
}

fn invalid(message: String) -> UpstreamError {
    UpstreamError::InvalidRequest {
        message,
        code: "invalid_value",
    }
}

/// JSON text that must be an object (a call's arguments, a schema).
fn object<'a>(text: &'a str, what: &str) -> Result<&'a RawValue, UpstreamError> {
    let raw: &RawValue = serde_json::from_str(text)
        .map_err(|e| invalid(format!("{what} is not valid JSON ({e})")))?;
    if !raw.get().trim_start().starts_with('{') {
        return Err(invalid(format!("{what} must be a JSON object")));
    }
    Ok(raw)
}

/// Text documents go in as text blocks: these types, and UTF-8 bytes.
fn is_text_document(file: &FileUpload) -> bool {
    let mime = file.mime.as_str();
    let texty = mime.starts_with("text/")
        || matches!(
            mime,
            "application/json"
                | "application/xml"
                | "application/x-yaml"
                | "application/yaml"
                | "application/toml"
                | "application/javascript"
                | "application/x-sh"
        )
        || matches!(
            file.extension.as_str(),
            "txt"
                | "md"
                | "markdown"
                | "csv"
                | "tsv"
                | "json"
                | "jsonl"
                | "xml"
                | "yaml"
                | "yml"
                | "toml"
                | "ini"
                | "log"
                | "rs"
                | "py"
                | "js"
                | "ts"
                | "tsx"
                | "jsx"
                | "go"
                | "java"
                | "c"
                | "h"
                | "cpp"
                | "hpp"
                | "cs"
                | "rb"
                | "php"
                | "sh"
                | "sql"
                | "html"
                | "css"
                | "swift"
                | "kt"
        );
    texty && std::str::from_utf8(&file.bytes).is_ok()
}

/// The files of the last message as blocks: images as base64, text
/// documents as text with their name; anything else is the caller's 400.
fn file_blocks<'a>(
    files: &'a [std::sync::Arc<FileUpload>],
    model: &Model,
) -> Result<Vec<Block<'a>>, UpstreamError> {
    let mut blocks = Vec::with_capacity(files.len());
    let images = files.iter().filter(|f| f.image).count();
    if images > MAX_IMAGES {
        return Err(invalid(format!(
            "{images} images were sent; at most {MAX_IMAGES} go in one request"
        )));
    }
    for file in files {
        if file.image {
            if !model.images {
                return Err(invalid(format!(
                    "the model {} takes text only, not images: ask for MiniMax-M3 or \
                     MiniMax-M3.1-Flash-Preview, or send no image",
                    model.id
                )));
            }
            if file.bytes.len() > MAX_IMAGE_BYTES {
                return Err(UpstreamError::TooLarge(format!(
                    "the image {} is {} bytes; at most {MAX_IMAGE_BYTES} are taken",
                    file.original_name,
                    file.bytes.len()
                )));
            }
            blocks.push(Block::Image {
                source: ImageSource {
                    kind: "base64",
                    media_type: &file.mime,
                    data: base64::engine::general_purpose::STANDARD.encode(&file.bytes),
                },
            });
        } else if is_text_document(file) {
            let text = std::str::from_utf8(&file.bytes).unwrap_or_default();
            blocks.push(Block::Text {
                text: Cow::Owned(format!(
                    "<file name=\"{}\">\n{text}\n</file>",
                    file.original_name
                )),
            });
        } else {
            return Err(UpstreamError::InvalidRequest {
                message: format!(
                    "the file {} ({}) cannot be sent to MiniMax Code: it takes images (png, jpeg, \
                     gif, webp) and text documents (plain text, markdown, CSV, JSON, source code)",
                    file.original_name, file.mime
                ),
                code: "unsupported_file",
            });
        }
    }
    Ok(blocks)
}

/// The Messages body for `conversation` on `model`.
pub fn body(
    conversation: &Conversation,
    files: &[std::sync::Arc<FileUpload>],
    model: &Model,
    max_tokens: u32,
) -> Result<Vec<u8>, UpstreamError> {
    let mut system = String::new();
    let mut messages: Vec<WireMessage> = Vec::new();
    let last = conversation.messages.len().saturating_sub(1);
    for (i, m) in conversation.messages.iter().enumerate() {
        if m.role.is_instruction() {
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str(&m.text);
            continue;
        }
        let (role, mut blocks) = match m.role {
            Role::Assistant => {
                let mut blocks = Vec::new();
                // Reasoning goes back only with the signature the upstream gave it.
                for t in m.thinking.iter().filter(|t| !t.signature.is_empty()) {
                    blocks.push(Block::Thinking {
                        thinking: &t.text,
                        signature: &t.signature,
                    });
                }
                if !m.text.trim().is_empty() {
                    blocks.push(Block::Text {
                        text: Cow::Borrowed(&m.text),
                    });
                }
                for (j, call) in m.tool_calls.iter().enumerate() {
                    let input = if call.arguments.trim().is_empty() {
                        empty_schema_args()
                    } else {
                        object(
                            &call.arguments,
                            &format!("messages[{i}].tool_calls[{j}].function.arguments"),
                        )?
                    };
                    blocks.push(Block::ToolUse {
                        id: &call.id,
                        name: &call.name,
                        input,
                    });
                }
                ("assistant", blocks)
            }
            Role::Tool => (
                "user",
                vec![Block::ToolResult {
                    tool_use_id: m.tool_call_id.as_deref().unwrap_or_default(),
                    // The protocol records no `is_error` field: a failed
                    // tool says so in its words.
                    content: if m.tool_error {
                        Cow::Owned(format!("Error: {}", m.text))
                    } else {
                        Cow::Borrowed(&m.text)
                    },
                }],
            ),
            _ => {
                let mut blocks = Vec::new();
                if !m.text.is_empty() {
                    blocks.push(Block::Text {
                        text: Cow::Borrowed(&m.text),
                    });
                }
                ("user", blocks)
            }
        };
        if i == last {
            blocks.extend(file_blocks(files, model)?);
        }
        // An empty turn (`{"role":"assistant","content":""}`) says nothing.
        if blocks.is_empty() {
            continue;
        }
        // Turns alternate: a tool's results and the next user text are one
        // user turn, results first.
        match messages.last_mut() {
            Some(prev) if prev.role == role => prev.content.extend(blocks),
            _ => messages.push(WireMessage {
                role,
                content: blocks,
            }),
        }
    }
    if messages.is_empty() {
        return Err(invalid(
            "the messages hold nothing but instructions: send a user message".into(),
        ));
    }
    let offered = !matches!(conversation.tool_choice, ToolChoice::None);
    let mut tools = Vec::new();
    if offered {
        for (i, tool) in conversation.tools.iter().enumerate() {
            let input_schema = match &tool.parameters {
                Some(schema) => object(schema, &format!("tools[{i}].function.parameters"))?,
                None => empty_schema(),
            };
            tools.push(WireTool {
                name: &tool.name,
                description: &tool.description,
                input_schema,
            });
        }
    }
    let disable_parallel_tool_use = !conversation.parallel_tool_calls;
    let tool_choice = (offered && !tools.is_empty()).then(|| match &conversation.tool_choice {
        ToolChoice::Function(name) => WireToolChoice {
            kind: "tool",
            name: Some(name),
            disable_parallel_tool_use,
        },
        ToolChoice::Required => WireToolChoice {
            kind: "any",
            name: None,
            disable_parallel_tool_use,
        },
        _ => WireToolChoice {
            kind: "auto",
            name: None,
            disable_parallel_tool_use,
        },
    });
    let output_config = match &conversation.response_format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(OutputConfig {
            format: OutputFormat {
                kind: "json_schema",
                schema: empty_schema(),
            },
        }),
        ResponseFormat::JsonSchema { schema, .. } => Some(OutputConfig {
            format: OutputFormat {
                kind: "json_schema",
                schema: match schema {
                    Some(s) => object(s, "response_format.json_schema.schema")?,
                    None => empty_schema(),
                },
            },
        }),
    };
    let body = Body {
        model: &model.id,
        max_tokens,
        stream: true,
        system: (!system.is_empty()).then_some([Block::Text {
            text: Cow::Owned(system),
        }]),
        messages,
        tools,
        tool_choice,
        thinking: thinking(conversation.thinking, model.thinks),
        output_config,
    };
    let bytes = serde_json::to_vec(&body)
        .map_err(|e| UpstreamError::Protocol(format!("the request could not be written: {e}")))?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(UpstreamError::TooLarge(format!(
            "the request is {} bytes, above the {MAX_BODY_BYTES} MiniMax Code takes",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// The arguments of a call made with none.
fn empty_schema_args() -> &'static RawValue {
    static EMPTY: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| {
        RawValue::from_string("{}".into()).unwrap_or_else(|_| unreachable!("a constant object"))
    })
}

/// `thinking` per model (section 4.4): never `disabled` where it is a 400
/// or ignored; `adaptive` to ask for it; left out for the model's default.
fn thinking(wanted: ThinkingWanted, thinks: Thinks) -> Option<WireThinking> {
    match (wanted, thinks) {
        (ThinkingWanted::On, _) => Some(WireThinking { kind: "adaptive" }),
        (ThinkingWanted::Off, Thinks::Switchable) => Some(WireThinking { kind: "disabled" }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{Message, Thinking, Tool, ToolCall};
    use serde_json::{json, Value};

    fn conversation(messages: Vec<Message>) -> Conversation {
        Conversation {
            model: "gpt-4o".into(),
            messages,
            tools: vec![],
            tool_choice: ToolChoice::None,
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

    fn built(c: &Conversation, model: &str) -> Value {
        serde_json::from_slice(&body(c, &[], &Model::known(model), 1000).unwrap()).unwrap()
    }

    #[test]
    fn a_tool_loop_becomes_alternating_turns_with_paired_blocks() {
        let mut c = conversation(vec![
            m(Role::System, "be brief"),
            m(Role::Developer, "use tools"),
            m(Role::User, "weather in Paris and Rome?"),
            Message {
                role: Role::Assistant,
                tool_calls: vec![
                    ToolCall {
                        id: "call_1".into(),
                        name: "get_weather".into(),
                        arguments: r#"{"city":"Paris"}"#.into(),
                    },
                    ToolCall {
                        id: "call_2".into(),
                        name: "get_weather".into(),
                        arguments: String::new(),
                    },
                ],
                thinking: vec![
                    Thinking {
                        text: "signed".into(),
                        signature: "sig".into(),
                    },
                    Thinking {
                        text: "unsigned, dropped".into(),
                        signature: String::new(),
                    },
                ],
                ..Message::default()
            },
            Message {
                role: Role::Tool,
                text: "sunny".into(),
                tool_call_id: Some("call_1".into()),
                ..Message::default()
            },
            Message {
                role: Role::Tool,
                text: "rain".into(),
                tool_call_id: Some("call_2".into()),
                ..Message::default()
            },
            m(Role::User, "and so?"),
            m(Role::Assistant, ""),
        ]);
        c.tools = vec![Tool {
            name: "get_weather".into(),
            description: "Weather now".into(),
            parameters: Some(r#"{"type":"object","properties":{"city":{"type":"string"}}}"#.into()),
        }];
        c.tool_choice = ToolChoice::Auto;
        c.parallel_tool_calls = false;
        let b = built(&c, "MiniMax-M3");
        assert_eq!(
            b["system"],
            json!([{"type": "text", "text": "be brief\n\nuse tools"}])
        );
        assert_eq!(b["stream"], true);
        assert_eq!(b["max_tokens"], 1000);
        let msgs = b["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert_eq!(msgs[1]["role"], "assistant");
        assert_eq!(
            msgs[1]["content"],
            json!([{"type": "thinking", "thinking": "signed", "signature": "sig"},
                   {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                   {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}}])
        );
        assert_eq!(
            msgs[2]["content"],
            json!([{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                   {"type": "tool_result", "tool_use_id": "call_2", "content": "rain"},
                   {"type": "text", "text": "and so?"}])
        );
        assert_eq!(
            b["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(
            b["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        assert!(b.get("thinking").is_none() && b.get("output_config").is_none());
    }

    #[test]
    fn tool_choice_thinking_and_formats_follow_the_model() {
        let mut c = conversation(vec![m(Role::User, "hi")]);
        c.tools = vec![Tool {
            name: "f".into(),
            description: String::new(),
            parameters: None,
        }];
        c.tool_choice = ToolChoice::Function("f".into());
        c.response_format = ResponseFormat::JsonObject;
        c.thinking = ThinkingWanted::Off;
        let b = built(&c, "MiniMax-M3");
        assert_eq!(b["tool_choice"], json!({"type": "tool", "name": "f"}));
        assert_eq!(
            b["tools"][0],
            json!({"name": "f", "input_schema": {"type": "object", "properties": {}}})
        );
        assert_eq!(b["thinking"], json!({"type": "disabled"}));
        assert_eq!(b["output_config"]["format"]["type"], "json_schema");
        // M3.1 refuses `disabled`: it is left out.
        assert!(built(&c, "MiniMax-M3.1-Flash-Preview")
            .get("thinking")
            .is_none());
        c.thinking = ThinkingWanted::On;
        assert_eq!(
            built(&c, "MiniMax-M2.7")["thinking"],
            json!({"type": "adaptive"})
        );
        c.tool_choice = ToolChoice::None;
        let b = built(&c, "MiniMax-M3");
        assert!(b.get("tools").is_none() && b.get("tool_choice").is_none());
        c.tool_choice = ToolChoice::Required;
        assert_eq!(built(&c, "MiniMax-M3")["tool_choice"]["type"], "any");
    }

    #[test]
    fn what_the_upstream_cannot_take_is_refused_before_it_is_sent() {
        let mut c = conversation(vec![Message {
            role: Role::Assistant,
            tool_calls: vec![ToolCall {
                id: "c".into(),
                name: "f".into(),
                arguments: "[1]".into(),
            }],
            ..Message::default()
        }]);
        let e = body(&c, &[], &Model::known("MiniMax-M3"), 10).unwrap_err();
        assert!(
            matches!(&e, UpstreamError::InvalidRequest { message, .. } if message.contains("messages[0].tool_calls[0]")),
            "{e:?}"
        );
        c.messages = vec![m(Role::System, "only this")];
        assert!(body(&c, &[], &Model::known("MiniMax-M3"), 10).is_err());
        let image = std::sync::Arc::new(FileUpload {
            original_name: "a.png".into(),
            extension: "png".into(),
            mime: "image/png".into(),
            image: true,
            bytes: bytes::Bytes::from_static(b"\x89PNG"),
        });
        c.messages = vec![m(Role::User, "what is it?")];
        let e = body(
            &c,
            std::slice::from_ref(&image),
            &Model::known("MiniMax-M2.7"),
            10,
        )
        .unwrap_err();
        assert!(e.to_string().contains("takes text only"), "{e}");
        let b: Value =
            serde_json::from_slice(&body(&c, &[image], &Model::known("MiniMax-M3"), 10).unwrap())
                .unwrap();
        assert_eq!(
            b["messages"][0]["content"][1],
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw=="}})
        );
        let pdf = std::sync::Arc::new(FileUpload {
            original_name: "a.pdf".into(),
            extension: "pdf".into(),
            mime: "application/pdf".into(),
            image: false,
            bytes: bytes::Bytes::from_static(b"%PDF-1.4"),
        });
        let e = body(&c, &[pdf], &Model::known("MiniMax-M3"), 10).unwrap_err();
        assert!(matches!(
            e,
            UpstreamError::InvalidRequest {
                code: "unsupported_file",
                ..
            }
        ));
        let notes = std::sync::Arc::new(FileUpload {
            original_name: "notes.md".into(),
            extension: "md".into(),
            mime: "text/markdown".into(),
            image: false,
            bytes: bytes::Bytes::from_static(b"# Notes"),
        });
        let b: Value =
            serde_json::from_slice(&body(&c, &[notes], &Model::known("MiniMax-M2.7"), 10).unwrap())
                .unwrap();
        assert_eq!(
            b["messages"][0]["content"][1]["text"],
            "<file name=\"notes.md\">\n# Notes\n</file>"
        );
    }
}
