//! Encoding an answer for the caller: a `chat.completion`, or `chat.completion.chunk`
//! SSE frames.

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};

use super::usage::Usage;
use crate::conversation::ToolCall;
use crate::error::ApiError;
use crate::upstream::Citation;

/// The completion id: it carries the upstream chat id, so a caller can pass it
/// (or the bare id) back as `conversation_id`.
pub fn completion_id(chat_id: Option<&str>) -> String {
    match chat_id {
        Some(id) => format!("chatcmpl-{id}"),
        None => format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
    }
}

pub fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// The "Sources" list appended to an answer when the upstream searched the web.
pub fn sources_block(citations: &[Citation]) -> String {
    if citations.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n\nSources:\n");
    for (i, c) in citations.iter().enumerate() {
        out.push_str(&format!(
            "{}. [{}]({})\n",
            i + 1,
            c.title.replace(['[', ']'], ""),
            c.url
        ));
    }
    out.truncate(out.trim_end().len());
    out
}

/// A whole non-streamed answer.
pub struct Completion<'a> {
    pub id: &'a str,
    pub model: &'a str,
    pub created: i64,
    pub content: &'a str,
    pub reasoning: &'a str,
    pub tool_calls: &'a [ToolCall],
    pub finish_reason: &'a str,
    pub usage: Usage,
    /// Set when the upstream conversation was kept and can be continued.
    pub conversation_id: Option<&'a str>,
}

impl Completion<'_> {
    pub fn to_json(&self) -> Value {
        // With tool calls and no text before them, `content` is null (as OpenAI's).
        let content = if self.content.is_empty() && !self.tool_calls.is_empty() {
            Value::Null
        } else {
            json!(self.content)
        };
        let mut message = json!({"role": "assistant", "content": content});
        if !self.reasoning.is_empty() {
            message["reasoning_content"] = json!(self.reasoning);
        }
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = self
                .tool_calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments}})
                })
                .collect();
        }
        let mut body = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": self.finish_reason}],
            "usage": self.usage,
        });
        if let Some(id) = self.conversation_id {
            body["conversation_id"] = json!(id);
        }
        body
    }
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation_id: Option<&'a str>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

/// One call's piece of a stream: the first names it, the next carries its arguments.
#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct UsageChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: [(); 0],
    usage: Usage,
}

/// SSE frames of one streamed answer.
pub struct ChunkEncoder {
    id: String,
    model: String,
    created: i64,
    conversation_id: Option<String>,
}

impl ChunkEncoder {
    pub fn new(id: String, model: String, conversation_id: Option<String>) -> Self {
        Self {
            id,
            model,
            created: unix_seconds(),
            conversation_id,
        }
    }

    fn frame(value: &impl Serialize) -> Bytes {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"data: ");
        // These types serialize to JSON without fail.
        serde_json::to_writer(&mut out, value).unwrap_or_default();
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }

    /// One chunk, serialized from borrowed parts: nothing is cloned or built
    /// as a JSON tree per chunk.
    fn chunk(&self, delta: Delta<'_>, finish_reason: Option<&'static str>) -> Bytes {
        Self::frame(&Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: [Choice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            conversation_id: self.conversation_id.as_deref(),
        })
    }

    pub fn role(&self) -> Bytes {
        self.chunk(
            Delta {
                role: Some("assistant"),
                content: Some(""),
                ..Delta::default()
            },
            None,
        )
    }

    pub fn content(&self, text: &str) -> Bytes {
        self.chunk(
            Delta {
                content: Some(text),
                ..Delta::default()
            },
            None,
        )
    }

    pub fn reasoning(&self, text: &str) -> Bytes {
        self.chunk(
            Delta {
                reasoning_content: Some(text),
                ..Delta::default()
            },
            None,
        )
    }

    /// The calls of an answer, two chunks per call: the head, then the
    /// arguments.
    pub fn tool_calls(&self, calls: &[ToolCall]) -> Vec<Bytes> {
        let mut frames = Vec::with_capacity(calls.len() * 2);
        for (index, call) in calls.iter().enumerate() {
            frames.push(self.tool_call_start(index, &call.id, &call.name));
            frames.push(self.tool_call_arguments(index, &call.arguments));
        }
        frames
    }

    /// A call's head: `index`, `id`, `type` and the name, with empty
    /// arguments (a new `id` starts a new call, for every client).
    pub fn tool_call_start(&self, index: usize, id: &str, name: &str) -> Bytes {
        self.tool_call_delta(ToolCallDelta {
            index,
            id: Some(id),
            kind: Some("function"),
            function: FunctionDelta {
                name: Some(name),
                arguments: "",
            },
        })
    }

    /// More of the arguments of the call at `index`.
    pub fn tool_call_arguments(&self, index: usize, json: &str) -> Bytes {
        self.tool_call_delta(ToolCallDelta {
            index,
            id: None,
            kind: None,
            function: FunctionDelta {
                name: None,
                arguments: json,
            },
        })
    }

    fn tool_call_delta(&self, delta: ToolCallDelta<'_>) -> Bytes {
        self.chunk(
            Delta {
                tool_calls: Some([delta]),
                ..Delta::default()
            },
            None,
        )
    }

    pub fn finish(&self, reason: &'static str) -> Bytes {
        self.chunk(Delta::default(), Some(reason))
    }

    pub fn usage(&self, usage: Usage) -> Bytes {
        Self::frame(&UsageChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: [],
            usage,
        })
    }

    /// A failure after the stream began: an error object the OpenAI SDKs raise.
    pub fn error(&self, error: &ApiError) -> Bytes {
        Self::frame(&error.body())
    }

    pub fn done() -> Bytes {
        Bytes::from_static(b"data: [DONE]\n\n")
    }

    /// An SSE comment: every SSE parser skips it, and it keeps the
    /// connection busy while the answer is silent.
    pub fn keepalive() -> Bytes {
        Bytes::from_static(b": keep-alive\n\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(frame: &Bytes) -> Value {
        let s = std::str::from_utf8(frame).unwrap();
        assert!(s.starts_with("data: ") && s.ends_with("\n\n"), "{s}");
        serde_json::from_str(&s[6..s.len() - 2]).unwrap()
    }

    #[test]
    fn chunks_have_openai_shape() {
        let e = ChunkEncoder::new(completion_id(Some("42")), "hailuo".into(), None);
        let role = parse(&e.role());
        assert_eq!(role["id"], "chatcmpl-42");
        assert_eq!(role["object"], "chat.completion.chunk");
        assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(
            parse(&e.content("hi"))["choices"][0]["delta"]["content"],
            "hi"
        );
        assert_eq!(
            parse(&e.reasoning("hm"))["choices"][0]["delta"]["reasoning_content"],
            "hm"
        );
        let finish = parse(&e.finish("stop"));
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert_eq!(finish["choices"][0]["delta"], json!({}));
        assert_eq!(finish["choices"][0]["logprobs"], Value::Null);
        assert!(finish.get("conversation_id").is_none());
        assert_eq!(role["choices"][0]["finish_reason"], Value::Null);
        let u = parse(&e.usage(Usage::from(crate::conversation::TokenUsage {
            input: 1,
            output: 1,
            ..Default::default()
        })));
        assert_eq!(u["choices"], json!([]));
        assert_eq!(u["usage"]["total_tokens"], 2);
        assert_eq!(&ChunkEncoder::done()[..], b"data: [DONE]\n\n");
        let err = parse(&e.error(&ApiError::BadGateway("upstream error 1: x".into())));
        assert_eq!(err["error"]["type"], "upstream_error");
    }

    #[test]
    fn conversation_id_is_carried_when_kept() {
        let e = ChunkEncoder::new(completion_id(Some("42")), "m".into(), Some("42".into()));
        assert_eq!(parse(&e.content("x"))["conversation_id"], "42");
    }

    #[test]
    fn completion_shape() {
        let c = Completion {
            id: "chatcmpl-1",
            model: "MiniMax-Text-01",
            created: 1,
            content: "hello",
            reasoning: "",
            tool_calls: &[],
            finish_reason: "stop",
            usage: Usage::from(crate::conversation::TokenUsage {
                input: 1,
                output: 2,
                ..Default::default()
            }),
            conversation_id: None,
        }
        .to_json();
        assert_eq!(c["object"], "chat.completion");
        assert_eq!(c["choices"][0]["message"]["content"], "hello");
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        assert!(c["choices"][0]["message"]
            .get("reasoning_content")
            .is_none());
        assert!(c.get("conversation_id").is_none());
    }

    #[test]
    fn tool_calls_in_both_shapes() {
        let calls = [
            ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into(),
            },
            ToolCall {
                id: "call_2".into(),
                name: "get_time".into(),
                arguments: "{}".into(),
            },
        ];
        let c = Completion {
            id: "chatcmpl-1",
            model: "m",
            created: 1,
            content: "",
            reasoning: "",
            tool_calls: &calls,
            finish_reason: "tool_calls",
            usage: Usage::default(),
            conversation_id: None,
        }
        .to_json();
        let message = &c["choices"][0]["message"];
        assert_eq!(message["content"], Value::Null);
        assert_eq!(
            message["tool_calls"][0],
            json!({"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}})
        );
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");

        let e = ChunkEncoder::new("chatcmpl-1".into(), "m".into(), None);
        let frames: Vec<Value> = e.tool_calls(&calls).iter().map(parse).collect();
        assert_eq!(frames.len(), 4);
        assert_eq!(
            frames[0]["choices"][0]["delta"]["tool_calls"],
            json!([{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}])
        );
        assert_eq!(
            frames[1]["choices"][0]["delta"]["tool_calls"],
            json!([{"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}}])
        );
        assert_eq!(
            frames[2]["choices"][0]["delta"]["tool_calls"][0]["index"],
            1
        );
        assert_eq!(
            parse(&e.finish("tool_calls"))["choices"][0]["finish_reason"],
            "tool_calls"
        );
    }

    #[test]
    fn sources_block_lists_titles_and_urls() {
        assert_eq!(sources_block(&[]), "");
        let s = sources_block(&[
            Citation {
                title: "A [x]".into(),
                url: "https://a.example".into(),
            },
            Citation {
                title: "B".into(),
                url: "https://b.example".into(),
            },
        ]);
        assert_eq!(
            s,
            "\n\nSources:\n1. [A x](https://a.example)\n2. [B](https://b.example)"
        );
    }
}
