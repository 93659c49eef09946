//! `POST /v1/chat/completions` requests, validated field by field so every
//! mistake gets a 400 that names the field.

use serde_json::{Map, Value};

use crate::error::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

impl Role {
    fn parse(s: &str) -> Option<Self> {
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
}

/// A file or image a message carries (by URL or `data:` URL).
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    /// The text parts, joined.
    pub text: String,
    pub attachments: Vec<Attachment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub stream: bool,
    pub include_usage: bool,
    /// Extension: keep the upstream conversation instead of deleting it.
    pub keep_conversation: bool,
    /// Extension: continue this upstream conversation (and keep it).
    pub conversation_id: Option<String>,
}

impl ChatRequest {
    /// Whether the upstream conversation outlives this request.
    pub fn keeps_conversation(&self) -> bool {
        self.keep_conversation || self.conversation_id.is_some()
    }

    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_body(
                "The request body is empty. Send a JSON object with `model` and `messages`.",
            ));
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_body(format!("The request body is not valid JSON: {e}.")))?;
        let Value::Object(obj) = value else {
            return Err(ApiError::bad_body(
                "The request body must be a JSON object.",
            ));
        };
        let model = match obj.get("model") {
            None | Some(Value::Null) => return Err(ApiError::missing("model")),
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::String(_)) => {
                return Err(ApiError::invalid("model", "`model` must not be empty."))
            }
            Some(other) => {
                return Err(ApiError::invalid(
                    "model",
                    format!("`model` must be a string, got {}.", kind(other)),
                ))
            }
        };
        let messages = match obj.get("messages") {
            None | Some(Value::Null) => return Err(ApiError::missing("messages")),
            Some(Value::Array(items)) if items.is_empty() => {
                return Err(ApiError::invalid(
                    "messages",
                    "`messages` must contain at least one message.",
                ))
            }
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, m)| parse_message(i, m))
                .collect::<Result<Vec<_>, _>>()?,
            Some(other) => {
                return Err(ApiError::invalid(
                    "messages",
                    format!("`messages` must be an array, got {}.", kind(other)),
                ))
            }
        };
        let stream = optional_bool(&obj, "stream")?.unwrap_or(false);
        let include_usage = match obj.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => optional_bool(o, "include_usage")
                .map_err(|_| {
                    ApiError::invalid(
                        "stream_options.include_usage",
                        "`stream_options.include_usage` must be a boolean.",
                    )
                })?
                .unwrap_or(false),
            Some(other) => {
                return Err(ApiError::invalid(
                    "stream_options",
                    format!("`stream_options` must be an object, got {}.", kind(other)),
                ))
            }
        };
        let keep_conversation = optional_bool(&obj, "keep_conversation")?.unwrap_or(false);
        let conversation_id = match obj.get("conversation_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(parse_conversation_id(s)?),
            Some(Value::Number(n)) => Some(parse_conversation_id(&n.to_string())?),
            Some(other) => {
                return Err(ApiError::invalid(
                    "conversation_id",
                    format!("`conversation_id` must be a string, got {}.", kind(other)),
                ))
            }
        };
        Ok(Self {
            model,
            messages,
            stream,
            include_usage,
            keep_conversation,
            conversation_id,
        })
    }
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

fn optional_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ApiError::invalid(
            key,
            format!("`{key}` must be a boolean, got {}.", kind(other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_message(i: usize, m: &Value) -> Result<Message, ApiError> {
    let at = format!("messages[{i}]");
    let Value::Object(obj) = m else {
        return Err(ApiError::invalid(
            &at,
            format!(
                "`{at}` must be an object with `role` and `content`, got {}.",
                kind(m)
            ),
        ));
    };
    let role_param = format!("{at}.role");
    let role = match obj.get("role") {
        None | Some(Value::Null) => return Err(ApiError::missing(&role_param)),
        Some(Value::String(s)) => Role::parse(s).ok_or_else(|| {
            ApiError::invalid(
                &role_param,
                format!("`{role_param}` must be one of system, developer, user, assistant, tool; got {s:?}."),
            )
        })?,
        Some(other) => {
            return Err(ApiError::invalid(&role_param, format!("`{role_param}` must be a string, got {}.", kind(other))))
        }
    };
    let content_param = format!("{at}.content");
    let (text, attachments) = match obj.get("content") {
        // Assistant turns that only carried tool calls have no content.
        None | Some(Value::Null) => (String::new(), vec![]),
        Some(Value::String(s)) => (s.clone(), vec![]),
        Some(Value::Array(parts)) => parse_parts(&content_param, parts)?,
        Some(other) => {
            return Err(ApiError::invalid(
                &content_param,
                format!(
                    "`{content_param}` must be a string or an array of content parts, got {}.",
                    kind(other)
                ),
            ))
        }
    };
    Ok(Message {
        role,
        text,
        attachments,
    })
}

fn parse_parts(at: &str, parts: &[Value]) -> Result<(String, Vec<Attachment>), ApiError> {
    let mut texts = Vec::new();
    let mut attachments = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let p = format!("{at}[{j}]");
        let Value::Object(obj) = part else {
            return Err(ApiError::invalid(
                &p,
                format!("`{p}` must be a content part object, got {}.", kind(part)),
            ));
        };
        let part_type = obj.get("type").and_then(Value::as_str).unwrap_or_default();
        match part_type {
            "text" | "input_text" => match obj.get("text") {
                Some(Value::String(s)) => texts.push(s.clone()),
                _ => {
                    return Err(ApiError::invalid(
                        format!("{p}.text"),
                        format!("`{p}.text` must be a string."),
                    ))
                }
            },
            "image_url" | "input_image" => {
                let url = match obj.get("image_url") {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Object(o)) => {
                        o.get("url").and_then(Value::as_str).map(str::to_string)
                    }
                    _ => None,
                }
                .filter(|u| !u.trim().is_empty())
                .ok_or_else(|| {
                    ApiError::invalid(
                        format!("{p}.image_url"),
                        format!("`{p}.image_url.url` must be a URL or data: URL."),
                    )
                })?;
                attachments.push(Attachment::Image { url });
            }
            "file" => {
                let file = obj.get("file").and_then(Value::as_object);
                let url = file
                    .and_then(|f| {
                        f.get("file_data")
                            .or_else(|| f.get("url"))
                            .and_then(Value::as_str)
                    })
                    .filter(|u| !u.trim().is_empty())
                    .ok_or_else(|| {
                        ApiError::invalid(
                            format!("{p}.file"),
                            format!("`{p}.file.file_data` must be a data: URL or a URL."),
                        )
                    })?;
                let filename = file
                    .and_then(|f| f.get("filename"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                attachments.push(Attachment::File {
                    url: url.to_string(),
                    filename,
                });
            }
            "" => return Err(ApiError::missing(&format!("{p}.type"))),
            other => {
                return Err(ApiError::invalid(
                    format!("{p}.type"),
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
    fn minimal_request_and_defaults() {
        let r = parse(
            serde_json::json!({"model": "hailuo", "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.2, "top_p": 1}),
        )
        .unwrap();
        assert_eq!(r.model, "hailuo");
        assert_eq!(
            r.messages[0],
            Message {
                role: Role::User,
                text: "hi".into(),
                attachments: vec![]
            }
        );
        assert!(!r.stream && !r.include_usage && !r.keeps_conversation());
    }

    #[test]
    fn stream_options_and_extensions() {
        let r = parse(serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "stream": true, "stream_options": {"include_usage": true}, "conversation_id": "chatcmpl-242830597915504644"}))
        .unwrap();
        assert!(r.stream && r.include_usage);
        assert_eq!(r.conversation_id.as_deref(), Some("242830597915504644"));
        assert!(r.keeps_conversation());
    }

    #[test]
    fn content_parts_text_and_attachments() {
        let r = parse(serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "here"}, {"type": "file", "file": {"file_data": "https://x.example/a.pdf", "filename": "a.pdf"}}]}]}))
        .unwrap();
        assert_eq!(r.messages[0].text, "look\nhere");
        assert_eq!(r.messages[0].attachments.len(), 2);
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
    fn malformed_json_and_non_objects() {
        for body in ["{", "", "[1]", "\"x\""] {
            let e = ChatRequest::parse(body.as_bytes()).unwrap_err();
            assert_eq!(e.status(), 400);
        }
    }
}
