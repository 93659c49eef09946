//! One streamed chat completion decoded (protocol sections 2.4 and 2.6),
//! sans I/O: frames in, the answer's events out, every quirk absorbed so
//! the door's stream is exactly OpenAI's (one role, one `finish_reason`,
//! usage once).
//!
//! - `delta.role` is ignored (it is `""` after the first chunk, sometimes
//!   on the first too).
//! - Reasoning arrives split (`reasoning_details[].text`, else
//!   `reasoning_content`, never both), incremental or cumulative: a piece
//!   that starts with all the reasoning so far adds only its rest.
//! - The content is parsed too: a `<think>` at its very start, up to
//!   `</think>`, is reasoning (`Think`), even when a tag is split across
//!   chunks.
//! - Usage: the last one with a non-zero total wins, never a sum; zero
//!   placeholders and nulls are ignored.
//! - The end is whichever comes first of `[DONE]`, the final
//!   `chat.completion` frame (whose content and calls are never emitted
//!   again: only its usage and, if none came, its `finish_reason`), or the
//!   connection closing after a `finish_reason`.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::errors::{BaseResp, Classifier};
use crate::conversation::{StopReason, TokenUsage};
use crate::upstream::{UpstreamError, UpstreamEvent};

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(default, borrow)]
    object: Option<&'a str>,
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    base_resp: Option<BaseResp>,
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
    #[serde(default)]
    input_sensitive: bool,
    #[serde(default)]
    output_sensitive: bool,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning_details: Option<Vec<ReasoningDetail>>,
    #[serde(default)]
    tool_calls: Option<Vec<CallDelta>>,
}

#[derive(Deserialize)]
struct ReasoningDetail {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct CallDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    total_tokens: u32,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: u32,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: u32,
}

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Where the content is with respect to its leading think block.
#[derive(Debug, Default, PartialEq, Eq)]
enum Think {
    /// Nothing decided yet: only whitespace, or a possible `<think>`, held.
    #[default]
    Start,
    /// Inside the think block.
    Inside,
    /// Just after `</think>`: newlines are dropped.
    After,
    /// Answer text, as it comes.
    Text,
}

/// The content's think block split out of its text.
#[derive(Debug, Default)]
struct ThinkSplitter {
    state: Think,
    held: String,
}

impl ThinkSplitter {
    /// The (reasoning, text) a piece of content adds.
    fn push(&mut self, piece: &str) -> (String, String) {
        self.held.push_str(piece);
        let (mut reasoning, mut text) = (String::new(), String::new());
        loop {
            match self.state {
                Think::Start => {
                    let trimmed = self.held.trim_start();
                    if trimmed.is_empty()
                        || (OPEN.starts_with(trimmed) && trimmed.len() < OPEN.len())
                    {
                        return (reasoning, text);
                    }
                    if let Some(rest) = trimmed.strip_prefix(OPEN) {
                        self.held = rest.to_string();
                        self.state = Think::Inside;
                    } else {
                        text.push_str(&std::mem::take(&mut self.held));
                        self.state = Think::Text;
                    }
                }
                Think::Inside => match self.held.find(CLOSE) {
                    Some(at) => {
                        reasoning.push_str(&self.held[..at]);
                        self.held = self.held[at + CLOSE.len()..].to_string();
                        self.state = Think::After;
                    }
                    None => {
                        let keep = partial_suffix(&self.held, CLOSE);
                        let cut = self.held.len() - keep;
                        reasoning.push_str(&self.held[..cut]);
                        self.held.drain(..cut);
                        return (reasoning, text);
                    }
                },
                Think::After => {
                    let rest = self.held.trim_start_matches(['\n', '\r']);
                    if rest.is_empty() {
                        self.held.clear();
                        return (reasoning, text);
                    }
                    self.held = rest.to_string();
                    self.state = Think::Text;
                }
                Think::Text => {
                    text.push_str(&std::mem::take(&mut self.held));
                    return (reasoning, text);
                }
            }
        }
    }

    /// What is still held at the end: an unclosed think block's last bytes
    /// are reasoning; a lone `<thi` at the start is text.
    fn finish(&mut self) -> (String, String) {
        let held = std::mem::take(&mut self.held);
        match self.state {
            Think::Inside => (held, String::new()),
            Think::Start if held.trim().is_empty() => Default::default(),
            _ => (String::new(), held),
        }
    }
}

/// The longest end of `text` that is a proper start of `tag` (a tag
/// possibly split across chunks), in bytes.
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

/// A tool call of this answer: the upstream's index and id, and ours.
struct Call {
    upstream_index: usize,
    id: String,
    ours: usize,
    /// Arguments that came before the call's name (started once named).
    pending: Option<String>,
}

#[derive(Default)]
pub(crate) struct StreamDecoder {
    think: ThinkSplitter,
    /// All the split reasoning so far (for cumulative pieces).
    reasoning: String,
    calls: Vec<Call>,
    usage: Option<Usage>,
    finish: Option<String>,
    /// Whether anything of the answer was emitted.
    emitted: bool,
    ended: bool,
}

impl StreamDecoder {
    pub(crate) fn is_ended(&self) -> bool {
        self.ended
    }

    /// Whether the connection closing now ends the answer (a
    /// `finish_reason` came) rather than cutting it.
    pub(crate) fn may_close(&self) -> bool {
        self.finish.is_some()
    }

    pub(crate) fn decode(
        &mut self,
        data: &str,
        classifier: &Classifier,
    ) -> Result<Vec<UpstreamEvent>, UpstreamError> {
        if self.ended {
            return Ok(Vec::new());
        }
        if data.trim() == "[DONE]" {
            return Ok(self.end());
        }
        let frame: Frame = serde_json::from_str(data).map_err(|e| {
            UpstreamError::Protocol(format!("a chat frame is not the JSON expected: {e}"))
        })?;
        if let Some(base) = frame.base_resp.as_ref().filter(|b| b.status_code != 0) {
            let error = classifier.by_code(200, base.status_code, base.status_msg.clone());
            return self.failed(error);
        }
        if frame.error.is_some() && frame.choices.is_none() {
            return self.failed(classifier.classify(200, data));
        }
        if frame.input_sensitive || frame.output_sensitive {
            if !self.emitted {
                return Err(UpstreamError::InvalidRequest {
                    message: format!(
                        "the platform flagged the {} as sensitive and answered nothing",
                        if frame.input_sensitive {
                            "input"
                        } else {
                            "output"
                        }
                    ),
                    code: "content_filter",
                });
            }
            self.finish = Some("content_filter".into());
            return Ok(self.end());
        }
        if let Some(usage) = frame.usage.filter(|u| u.total_tokens > 0) {
            self.usage = Some(usage);
        }
        let choice = frame.choices.and_then(|c| c.into_iter().next());
        if frame.object == Some("chat.completion") {
            // The final aggregate: its usage and maybe its finish reason only.
            if let Some(reason) = choice.and_then(|c| c.finish_reason) {
                self.finish.get_or_insert(reason);
            }
            return Ok(self.end());
        }
        let mut events = Vec::new();
        let Some(choice) = choice else {
            return Ok(events);
        };
        let delta = choice.delta.unwrap_or_default();
        let split = match delta.reasoning_details {
            Some(details) if details.iter().any(|d| d.text.is_some()) => Some(
                details
                    .into_iter()
                    .filter_map(|d| d.text)
                    .collect::<String>(),
            ),
            _ => delta.reasoning_content,
        };
        if let Some(piece) = split {
            let new = match piece.strip_prefix(self.reasoning.as_str()) {
                Some(rest) if !self.reasoning.is_empty() => rest.to_string(),
                _ => piece,
            };
            if !new.is_empty() {
                self.reasoning.push_str(&new);
                events.push(UpstreamEvent::ReasoningDelta(new));
            }
        }
        if let Some(content) = delta.content.filter(|c| !c.is_empty()) {
            let (reasoning, text) = self.think.push(&content);
            if !reasoning.is_empty() {
                events.push(UpstreamEvent::ReasoningDelta(reasoning));
            }
            if !text.is_empty() {
                events.push(UpstreamEvent::Delta(text));
            }
        }
        for call in delta.tool_calls.into_iter().flatten() {
            self.call(call, &mut events);
        }
        if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
            self.finish.get_or_insert(reason);
        }
        self.emitted |= !events.is_empty();
        Ok(events)
    }

    /// A failure inside the stream: before anything was emitted it is the
    /// attempt's failure (the pool may try another key); after, the
    /// answer's error.
    fn failed(&mut self, error: UpstreamError) -> Result<Vec<UpstreamEvent>, UpstreamError> {
        self.ended = true;
        if self.emitted
            && matches!(
                &error,
                UpstreamError::InvalidRequest {
                    code: "content_filter",
                    ..
                }
            )
        {
            self.finish = Some("content_filter".into());
            self.ended = false;
            return Ok(self.end());
        }
        Err(error)
    }

    fn call(&mut self, delta: CallDelta, events: &mut Vec<UpstreamEvent>) {
        let index = delta.index.unwrap_or(0);
        let id = delta.id.filter(|id| !id.is_empty());
        let (name, arguments) = delta
            .function
            .map(|f| {
                (
                    f.name.filter(|n| !n.is_empty()),
                    f.arguments.unwrap_or_default(),
                )
            })
            .unwrap_or_default();
        let current = self.calls.iter().rposition(|c| c.upstream_index == index);
        let is_new = match (current, &id) {
            (None, _) => true,
            (Some(at), Some(id)) => self.calls[at].id != *id,
            (Some(_), None) => false,
        };
        let at = if is_new {
            let ours = self.calls.len();
            self.calls.push(Call {
                upstream_index: index,
                id: id.unwrap_or_else(|| format!("call_{}", uuid::Uuid::new_v4().simple())),
                ours,
                pending: Some(String::new()),
            });
            ours
        } else {
            current.unwrap_or_default()
        };
        let call = &mut self.calls[at];
        if let (Some(pending), Some(name)) = (&call.pending, name) {
            events.push(UpstreamEvent::ToolCallStart {
                index: call.ours,
                id: call.id.clone(),
                name,
            });
            if !pending.is_empty() {
                events.push(UpstreamEvent::ToolCallArguments {
                    index: call.ours,
                    json: pending.clone(),
                });
            }
            call.pending = None;
        }
        match &mut call.pending {
            Some(pending) => pending.push_str(&arguments),
            None if !arguments.is_empty() => events.push(UpstreamEvent::ToolCallArguments {
                index: call.ours,
                json: arguments,
            }),
            None => {}
        }
    }

    /// The end: what the think splitter still holds, the stop reason, the
    /// usage, `End`.
    fn end(&mut self) -> Vec<UpstreamEvent> {
        if self.ended {
            return Vec::new();
        }
        self.ended = true;
        let mut events = Vec::new();
        let (reasoning, text) = self.think.finish();
        if !reasoning.is_empty() {
            events.push(UpstreamEvent::ReasoningDelta(reasoning));
        }
        if !text.is_empty() {
            events.push(UpstreamEvent::Delta(text));
        }
        let named = self.calls.iter().filter(|c| c.pending.is_none()).count();
        let stop = match self.finish.as_deref() {
            Some("length") => StopReason::MaxTokens,
            Some("content_filter") => StopReason::Refusal,
            Some("tool_calls") if named > 0 => StopReason::ToolUse,
            _ if named > 0 => StopReason::ToolUse,
            _ => StopReason::EndTurn,
        };
        events.push(UpstreamEvent::Stop(stop));
        if let Some(u) = self.usage {
            let cached = u.prompt_tokens_details.map_or(0, |d| d.cached_tokens);
            events.push(UpstreamEvent::Usage(TokenUsage {
                input: u.prompt_tokens,
                output: u.completion_tokens,
                cache_read: cached,
                cache_creation: 0,
                reasoning: u
                    .completion_tokens_details
                    .map_or(0, |d| d.reasoning_tokens),
            }));
        }
        events.push(UpstreamEvent::End);
        events
    }

    /// The connection closed: the end if a `finish_reason` came.
    pub(crate) fn closed(&mut self) -> Option<Vec<UpstreamEvent>> {
        self.may_close().then(|| self.end())
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
