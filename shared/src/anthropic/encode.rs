//! A reply's pieces as Anthropic's message object (`Collector`) or its
//! event stream (`Events`), front-doors.md 1.4 to 1.6.
//!
//! The stream keeps the order the SDK's `messages.stream()` checks:
//! `message_start` (with `content: []` and the input estimate), `ping`,
//! then blocks one at a time, each `content_block_start`, deltas of its own
//! kind only, `content_block_stop`, indexes from 0 up by one; then
//! `message_delta` with the stop reason and usage, and `message_stop`.
//! A thinking block closes with its `signature_delta` (empty where the
//! upstream signs nothing: a web chat's reasoning). A tool call's input is
//! always an object: the emulation's calls come whole at the end, a native
//! upstream's stream in pieces.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::conversation::{StopReason, TokenUsage, ToolCall};
use crate::error::ApiError;
use crate::reply::Piece;

/// Anthropic's words for why an answer ended.
pub(crate) fn stop_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::EndTurn => "end_turn",
        StopReason::ToolUse => "tool_use",
        StopReason::MaxTokens => "max_tokens",
        StopReason::Refusal => "refusal",
    }
}

/// Anthropic's usage: `input_tokens` counts what was not read from or
/// written to the prompt cache (ours counts all input).
pub(crate) fn usage(u: TokenUsage) -> Value {
    let cached = u.cache_read.saturating_add(u.cache_creation);
    json!({
        "input_tokens": u.input.saturating_sub(cached),
        "output_tokens": u.output,
        "cache_creation_input_tokens": u.cache_creation,
        "cache_read_input_tokens": u.cache_read,
    })
}

pub(crate) fn message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// A tool call's input as the object Anthropic carries: the arguments the
/// upstream or the emulation gave, which are an object; anything else (a
/// native upstream's cut-off JSON) is logged and sent as `{}` rather than
/// as a block no client can read.
fn input_object(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            tracing::warn!(
                bytes = arguments.len(),
                "a tool call's arguments are not a JSON object; sent as {{}}"
            );
            json!({})
        }
    }
}

#[derive(Debug, PartialEq)]
enum Block {
    Thinking {
        text: String,
        signature: String,
    },
    Text(String),
    ToolUse {
        id: String,
        name: String,
        json: String,
    },
}

/// The whole answer, for a request without `stream`.
#[derive(Default)]
pub(crate) struct Collector {
    blocks: Vec<Block>,
    /// Native calls by their index among the answer's calls.
    calls: Vec<usize>,
    stop: Option<StopReason>,
}

impl Collector {
    pub(crate) fn add(&mut self, piece: Piece) {
        match piece {
            Piece::Reasoning(t) => match self.blocks.last_mut() {
                Some(Block::Thinking { text, signature }) if signature.is_empty() => {
                    text.push_str(&t)
                }
                _ => self.blocks.push(Block::Thinking {
                    text: t,
                    signature: String::new(),
                }),
            },
            Piece::ReasoningSignature(s) => match self.blocks.last_mut() {
                Some(Block::Thinking { signature, .. }) => signature.push_str(&s),
                _ => self.blocks.push(Block::Thinking {
                    text: String::new(),
                    signature: s,
                }),
            },
            Piece::Content(t) => self.text(t),
            Piece::ToolCallStart { index, id, name } => {
                if self.calls.len() <= index {
                    self.calls.resize(index + 1, usize::MAX);
                }
                self.calls[index] = self.blocks.len();
                self.blocks.push(Block::ToolUse {
                    id,
                    name,
                    json: String::new(),
                });
            }
            Piece::ToolCallArguments { index, json: more } => {
                if let Some(Block::ToolUse { json, .. }) = self
                    .calls
                    .get(index)
                    .and_then(|&at| self.blocks.get_mut(at))
                {
                    json.push_str(&more);
                }
            }
            Piece::Done { text, calls, stop } => {
                self.text(text);
                for ToolCall {
                    id,
                    name,
                    arguments,
                } in calls
                {
                    self.blocks.push(Block::ToolUse {
                        id,
                        name,
                        json: arguments,
                    });
                }
                self.stop = Some(stop);
            }
        }
    }

    fn text(&mut self, t: String) {
        if t.is_empty() {
            return;
        }
        match self.blocks.last_mut() {
            Some(Block::Text(text)) => text.push_str(&t),
            _ => self.blocks.push(Block::Text(t)),
        }
    }

    /// The message object.
    pub(crate) fn message(self, id: &str, model: &str, u: TokenUsage) -> Value {
        let has_calls = self
            .blocks
            .iter()
            .any(|b| matches!(b, Block::ToolUse { .. }));
        let stop = if has_calls {
            StopReason::ToolUse
        } else {
            self.stop.unwrap_or_default()
        };
        let content: Vec<Value> = self
            .blocks
            .into_iter()
            .map(|b| match b {
                Block::Thinking { text, signature } => {
                    json!({"type": "thinking", "thinking": text, "signature": signature})
                }
                Block::Text(text) => json!({"type": "text", "text": text}),
                Block::ToolUse { id, name, json } => {
                    json!({"type": "tool_use", "id": id, "name": name, "input": input_object(&json)})
                }
            })
            .collect();
        json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason(stop),
            "stop_sequence": null,
            "usage": usage(u),
        })
    }
}

/// One SSE event: its name, and the payload whose `type` it is.
fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Open {
    Text,
    Thinking { signed: bool },
    ToolUse,
}

/// The event stream's state: which block is open, the next index.
pub(crate) struct Events {
    id: String,
    model: String,
    open: Option<Open>,
    next: usize,
    calls: usize,
}

impl Events {
    pub(crate) fn new(id: String, model: String) -> Self {
        Self {
            id,
            model,
            open: None,
            next: 0,
            calls: 0,
        }
    }

    /// `message_start` and the first `ping`.
    pub(crate) fn start(&self, input_tokens: u32) -> Bytes {
        let message = json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": input_tokens.max(1), "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        });
        let mut out = event(
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
        out.push_str(&Self::ping_text());
        Bytes::from(out)
    }

    fn ping_text() -> String {
        event("ping", &json!({"type": "ping"}))
    }

    /// A keep-alive while nothing else is sent.
    pub(crate) fn ping() -> Bytes {
        Bytes::from(Self::ping_text())
    }

    /// The events of one piece before the end (`Done` goes to `end`).
    pub(crate) fn piece(&mut self, piece: Piece) -> Bytes {
        let mut out = String::new();
        match piece {
            Piece::Reasoning(t) => {
                if !matches!(self.open, Some(Open::Thinking { signed: false })) {
                    self.open_block(
                        &mut out,
                        Open::Thinking { signed: false },
                        json!({"type": "thinking", "thinking": "", "signature": ""}),
                    );
                }
                out.push_str(&self.delta(json!({"type": "thinking_delta", "thinking": t})));
            }
            Piece::ReasoningSignature(s) => {
                if !matches!(self.open, Some(Open::Thinking { .. })) {
                    self.open_block(
                        &mut out,
                        Open::Thinking { signed: false },
                        json!({"type": "thinking", "thinking": "", "signature": ""}),
                    );
                }
                out.push_str(&self.delta(json!({"type": "signature_delta", "signature": s})));
                self.open = Some(Open::Thinking { signed: true });
            }
            Piece::Content(t) => self.text(&mut out, &t),
            Piece::ToolCallStart { id, name, .. } => {
                self.open_block(
                    &mut out,
                    Open::ToolUse,
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                );
                self.calls += 1;
            }
            Piece::ToolCallArguments { json, .. } => {
                if self.open == Some(Open::ToolUse) && !json.is_empty() {
                    out.push_str(
                        &self.delta(json!({"type": "input_json_delta", "partial_json": json})),
                    );
                }
            }
            Piece::Done { .. } => {
                unreachable!("the end of the answer goes to Events::end")
            }
        }
        Bytes::from(out)
    }

    /// The last of the content (the emulation's text and whole calls), the
    /// open block closed, and `message_delta` with how the answer ended.
    /// `message_stop` follows once the answer is cleaned up (`stop`).
    pub(crate) fn end(
        &mut self,
        text: &str,
        calls: &[ToolCall],
        stop: StopReason,
        u: TokenUsage,
    ) -> Bytes {
        let mut out = String::new();
        self.text(&mut out, text);
        for call in calls {
            self.open_block(
                &mut out,
                Open::ToolUse,
                json!({"type": "tool_use", "id": call.id, "name": call.name, "input": {}}),
            );
            let input = input_object(&call.arguments).to_string();
            out.push_str(&self.delta(json!({"type": "input_json_delta", "partial_json": input})));
            self.calls += 1;
        }
        self.close(&mut out);
        let stop = if self.calls > 0 {
            StopReason::ToolUse
        } else {
            stop
        };
        let usage = usage(u);
        out.push_str(&event(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(stop), "stop_sequence": null},
                "usage": usage,
            }),
        ));
        Bytes::from(out)
    }

    pub(crate) fn stop() -> Bytes {
        Bytes::from(event("message_stop", &json!({"type": "message_stop"})))
    }

    /// A failure after the first byte: the `error` event, then the stream ends.
    pub(crate) fn error(e: &ApiError) -> Bytes {
        Bytes::from(event(
            "error",
            &json!({"type": "error", "error": super::error::error_object(e)}),
        ))
    }

    fn text(&mut self, out: &mut String, t: &str) {
        if t.is_empty() {
            return;
        }
        if self.open != Some(Open::Text) {
            self.open_block(out, Open::Text, json!({"type": "text", "text": ""}));
        }
        out.push_str(&self.delta(json!({"type": "text_delta", "text": t})));
    }

    fn delta(&self, delta: Value) -> String {
        event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": self.next - 1, "delta": delta}),
        )
    }

    fn open_block(&mut self, out: &mut String, kind: Open, block: Value) {
        self.close(out);
        out.push_str(&event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.next, "content_block": block}),
        ));
        self.next += 1;
        self.open = Some(kind);
    }

    fn close(&mut self, out: &mut String) {
        let Some(open) = self.open.take() else {
            return;
        };
        if open == (Open::Thinking { signed: false }) {
            out.push_str(&self.delta(json!({"type": "signature_delta", "signature": ""})));
        }
        out.push_str(&event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": self.next - 1}),
        ));
    }
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
