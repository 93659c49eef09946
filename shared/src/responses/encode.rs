//! A reply's pieces as an OpenAI Responses object and its event stream
//! (front-doors.md 2.5 and 2.6).
//!
//! One builder serves both: it keeps the output items as they are made
//! (reasoning, message, function call, in the order the answer gave them),
//! and returns for each piece the events a stream sends, which a request
//! without `stream` drops. Every event has `sequence_number`, counted from
//! 0 across the whole stream; each item is announced (`output_item.added`)
//! before its content and finished (`output_item.done`) with all of it,
//! since Codex runs a tool call from the finished item. The stream ends
//! with exactly one of `response.completed`, `response.incomplete` (the
//! output cap, a refusal) or `error` then `response.failed`.
//!
//! A reasoning item carries the upstream's thinking signature as its
//! `encrypted_content`: Codex and the Agents SDK send their items back, and
//! a native upstream takes its thinking back only with its signature.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::request::CUSTOM_INPUT;
use crate::conversation::{StopReason, TokenUsage, ToolCall};
use crate::error::ApiError;
use crate::reply::Piece;

fn id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// The Responses usage object: every count an integer, the total the sum.
pub(crate) fn usage(u: TokenUsage) -> Value {
    json!({
        "input_tokens": u.input,
        "input_tokens_details": {"cached_tokens": u.cache_read},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": u.input + u.output,
    })
}

enum Open {
    Reasoning {
        id: String,
        text: String,
        signature: String,
    },
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        custom: bool,
    },
}

/// The response being built.
pub(crate) struct Builder {
    id: String,
    created_at: i64,
    model: String,
    echo: Map<String, Value>,
    custom_tools: HashSet<String>,
    seq: u64,
    items: Vec<Value>,
    open: Option<Open>,
    /// The response as it ended, once `end` has run.
    terminal: Option<Value>,
}

impl Builder {
    pub(crate) fn new(
        model: String,
        echo: Map<String, Value>,
        custom_tools: HashSet<String>,
    ) -> Self {
        Self {
            id: id("resp"),
            created_at: crate::openai::encode::unix_seconds(),
            model,
            echo,
            custom_tools,
            seq: 0,
            items: Vec::new(),
            open: None,
            terminal: None,
        }
    }

    /// The response object in a given state.
    fn response(&self, status: &str, u: Option<TokenUsage>) -> Value {
        let mut r = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "completed_at": null,
            "status": status,
            "incomplete_details": null,
            "model": self.model,
            "previous_response_id": null,
            "output": self.items,
            "error": null,
            "usage": u.map(usage),
            "presence_penalty": 0,
            "frequency_penalty": 0,
            "store": false,
            "background": false,
        });
        let object = r.as_object_mut().expect("an object");
        for (k, v) in &self.echo {
            object.insert(k.clone(), v.clone());
        }
        r
    }

    fn event(&mut self, out: &mut String, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.push_str(&format!("event: {kind}\ndata: {data}\n\n"));
    }

    /// `response.created` and `response.in_progress`.
    pub(crate) fn start(&mut self) -> String {
        let mut out = String::new();
        let r = self.response("in_progress", None);
        self.event(&mut out, "response.created", json!({"response": r}));
        self.event(&mut out, "response.in_progress", json!({"response": r}));
        out
    }

    fn index(&self) -> usize {
        self.items.len()
    }

    /// The events of one piece before the end (`Done` goes to `end`).
    pub(crate) fn piece(&mut self, piece: Piece) -> String {
        let mut out = String::new();
        match piece {
            Piece::Reasoning(t) => {
                if !matches!(self.open, Some(Open::Reasoning { ref signature, .. }) if signature.is_empty())
                {
                    self.close(&mut out);
                    let rs = id("rs");
                    self.event(
                        &mut out,
                        "response.output_item.added",
                        json!({"output_index": self.index(), "item": {"id": rs, "type": "reasoning", "summary": []}}),
                    );
                    self.event(
                        &mut out,
                        "response.reasoning_summary_part.added",
                        json!({"item_id": rs, "output_index": self.index(), "summary_index": 0,
                               "part": {"type": "summary_text", "text": ""}}),
                    );
                    self.open = Some(Open::Reasoning {
                        id: rs,
                        text: String::new(),
                        signature: String::new(),
                    });
                }
                let index = self.index();
                if let Some(Open::Reasoning { id, text, .. }) = &mut self.open {
                    text.push_str(&t);
                    let data = json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": t});
                    self.event(&mut out, "response.reasoning_summary_text.delta", data);
                }
            }
            Piece::ReasoningSignature(s) => {
                if let Some(Open::Reasoning { signature, .. }) = &mut self.open {
                    signature.push_str(&s);
                }
            }
            Piece::Content(t) => self.text(&mut out, &t),
            Piece::ToolCallStart {
                id: call_id, name, ..
            } => {
                self.close(&mut out);
                let custom = self.custom_tools.contains(&name);
                let item_id = id(if custom { "ctc" } else { "fc" });
                let item = if custom {
                    json!({"id": item_id, "type": "custom_tool_call", "status": "in_progress",
                           "call_id": call_id, "name": name, "input": ""})
                } else {
                    json!({"id": item_id, "type": "function_call", "status": "in_progress",
                           "call_id": call_id, "name": name, "arguments": ""})
                };
                self.event(
                    &mut out,
                    "response.output_item.added",
                    json!({"output_index": self.index(), "item": item}),
                );
                self.open = Some(Open::Call {
                    id: item_id,
                    call_id,
                    name,
                    arguments: String::new(),
                    custom,
                });
            }
            Piece::ToolCallArguments { json: more, .. } => {
                let index = self.index();
                if let Some(Open::Call {
                    id,
                    arguments,
                    custom,
                    ..
                }) = &mut self.open
                {
                    arguments.push_str(&more);
                    // A custom tool's input is the string inside the
                    // arguments: it is known once they are whole.
                    if !*custom && !more.is_empty() {
                        let data = json!({"item_id": id, "output_index": index, "delta": more});
                        self.event(&mut out, "response.function_call_arguments.delta", data);
                    }
                }
            }
            Piece::Done { .. } => unreachable!("the end of the answer goes to Builder::end"),
        }
        out
    }

    /// The last content and whole calls (the emulation's), every item
    /// finished, and the terminal event for how the answer ended.
    pub(crate) fn end(
        &mut self,
        text: &str,
        calls: &[ToolCall],
        stop: StopReason,
        u: TokenUsage,
    ) -> String {
        let mut out = String::new();
        self.text(&mut out, text);
        for call in calls {
            out.push_str(&self.piece(Piece::ToolCallStart {
                index: 0,
                id: call.id.clone(),
                name: call.name.clone(),
            }));
            out.push_str(&self.piece(Piece::ToolCallArguments {
                index: 0,
                json: call.arguments.clone(),
            }));
        }
        self.close(&mut out);
        let (status, reason) = match stop {
            StopReason::MaxTokens => ("incomplete", Some("max_output_tokens")),
            StopReason::Refusal => ("incomplete", Some("content_filter")),
            StopReason::EndTurn | StopReason::ToolUse => ("completed", None),
        };
        let mut r = self.response(status, Some(u));
        r["completed_at"] = json!(crate::openai::encode::unix_seconds());
        if let Some(reason) = reason {
            r["incomplete_details"] = json!({ "reason": reason });
        }
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.event(&mut out, kind, json!({"response": r}));
        self.terminal = Some(r);
        out
    }

    /// The whole response as it ended (what `end` sent last).
    pub(crate) fn into_terminal(self) -> Option<Value> {
        self.terminal
    }

    /// A failure after the first byte: `error`, then `response.failed`.
    pub(crate) fn failed(&mut self, e: &ApiError) -> String {
        let mut out = String::new();
        let body = e.body();
        let error = &body["error"];
        let code = error["code"].as_str().unwrap_or("server_error").to_string();
        self.event(
            &mut out,
            "error",
            json!({"error": {"type": error["type"], "code": code, "message": error["message"], "param": null},
                   "code": code, "message": error["message"], "param": null}),
        );
        let mut r = self.response("failed", None);
        r["error"] = json!({"code": code, "message": error["message"]});
        self.event(&mut out, "response.failed", json!({"response": r}));
        out
    }

    fn text(&mut self, out: &mut String, t: &str) {
        if t.is_empty() {
            return;
        }
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close(out);
            let msg = id("msg");
            self.event(
                out,
                "response.output_item.added",
                json!({"output_index": self.index(), "item": {"id": msg, "type": "message",
                       "status": "in_progress", "role": "assistant", "content": []}}),
            );
            self.event(
                out,
                "response.content_part.added",
                json!({"item_id": msg, "output_index": self.index(), "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": []}}),
            );
            self.open = Some(Open::Message {
                id: msg,
                text: String::new(),
            });
        }
        let index = self.index();
        if let Some(Open::Message { id, text }) = &mut self.open {
            text.push_str(t);
            let data = json!({"item_id": id, "output_index": index, "content_index": 0,
                              "delta": t, "logprobs": []});
            self.event(out, "response.output_text.delta", data);
        }
    }

    /// Finish the open item: its `.done` events and `output_item.done`.
    fn close(&mut self, out: &mut String) {
        let Some(open) = self.open.take() else {
            return;
        };
        let index = self.index();
        let item = match open {
            Open::Reasoning {
                id,
                text,
                signature,
            } => {
                let part = json!({"type": "summary_text", "text": text});
                self.event(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0, "text": text}),
                );
                self.event(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0, "part": part}),
                );
                let mut item = json!({"id": id, "type": "reasoning", "summary": [part]});
                if !signature.is_empty() {
                    item["encrypted_content"] = json!(signature);
                }
                item
            }
            Open::Message { id, text } => {
                let part =
                    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                self.event(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "text": text, "logprobs": []}),
                );
                self.event(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                );
                json!({"id": id, "type": "message", "status": "completed", "role": "assistant",
                       "content": [part]})
            }
            Open::Call {
                id,
                call_id,
                name,
                arguments,
                custom,
            } => {
                let arguments = if arguments.trim().is_empty() {
                    "{}".to_string()
                } else {
                    arguments
                };
                if custom {
                    let input = serde_json::from_str::<Value>(&arguments)
                        .ok()
                        .and_then(|v| v[CUSTOM_INPUT].as_str().map(str::to_string))
                        .unwrap_or(arguments);
                    json!({"id": id, "type": "custom_tool_call", "status": "completed",
                           "call_id": call_id, "name": name, "input": input})
                } else {
                    self.event(
                        out,
                        "response.function_call_arguments.done",
                        json!({"item_id": id, "output_index": index, "arguments": arguments}),
                    );
                    json!({"id": id, "type": "function_call", "status": "completed",
                           "call_id": call_id, "name": name, "arguments": arguments})
                }
            }
        };
        self.event(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        self.items.push(item);
    }
}

#[cfg(test)]
#[path = "encode_tests.rs"]
pub(crate) mod tests;
