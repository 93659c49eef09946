//! Decoding the Messages event stream (protocol section 4.6) into upstream
//! events. Sans I/O: one SSE frame's `data` in, events out.
//!
//! Block indexes come from the server and are used as given; a tool call's
//! position among this answer's calls (what OpenAI's `index` counts) is
//! ours. Usage is the upstream's own: input and cache counts from
//! `message_start`, output and thinking from the last `message_delta`. A
//! stream without `message_stop` is truncated: an error, never an answer.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::errors::{Classifier, ErrorObject};
use crate::conversation::{StopReason, TokenUsage};
use crate::upstream::{UpstreamError, UpstreamEvent};

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default, borrow)]
    message: Option<&'a RawValue>,
    #[serde(default, borrow)]
    content_block: Option<&'a RawValue>,
    #[serde(default, borrow)]
    delta: Option<&'a RawValue>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<ErrorObject>,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u32>,
    #[serde(default)]
    output_tokens: Option<u32>,
    #[serde(default)]
    cache_read_input_tokens: Option<u32>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u32>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Default, Deserialize)]
struct OutputDetails {
    #[serde(default)]
    thinking_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    thinking: String,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    thinking: String,
    #[serde(default)]
    signature: String,
    #[serde(default)]
    partial_json: String,
    #[serde(default)]
    stop_reason: Option<String>,
}

enum Open {
    Text,
    Thinking,
    /// A tool call: its position among this answer's calls, and whether any
    /// of its arguments were given.
    Tool {
        ordinal: usize,
        argued: bool,
    },
    Other,
}

/// State across the frames of one answer.
#[derive(Default)]
pub(crate) struct StreamDecoder {
    blocks: HashMap<usize, Open>,
    calls: usize,
    counts: Counts,
    stop: Option<StopReason>,
    ended: bool,
}

fn malformed(what: &str, e: serde_json::Error) -> UpstreamError {
    UpstreamError::Protocol(format!("the {what} event is not the expected JSON ({e})"))
}

impl StreamDecoder {
    pub(crate) fn is_ended(&self) -> bool {
        self.ended
    }

    /// Decode one frame's `data` into zero or more events.
    pub(crate) fn decode(
        &mut self,
        data: &str,
        classifier: &Classifier<'_>,
    ) -> Result<Vec<UpstreamEvent>, UpstreamError> {
        if self.ended {
            return Ok(vec![]);
        }
        let frame: Frame = serde_json::from_str(data).map_err(|e| malformed("stream", e))?;
        let mut out = Vec::new();
        match frame.kind {
            "message_start" => {
                if let Some(message) = frame.message {
                    let start: StartMessage = serde_json::from_str(message.get())
                        .map_err(|e| malformed("message_start", e))?;
                    if let Some(u) = start.usage {
                        self.count(&u);
                    }
                }
            }
            "content_block_start" => {
                let index = frame.index.unwrap_or(self.blocks.len());
                let block: Block = match frame.content_block {
                    Some(raw) => serde_json::from_str(raw.get())
                        .map_err(|e| malformed("content_block_start", e))?,
                    None => {
                        return Err(UpstreamError::Protocol(
                            "content_block_start without its block".into(),
                        ))
                    }
                };
                let open = match block.kind.as_str() {
                    "text" => {
                        if !block.text.is_empty() {
                            out.push(UpstreamEvent::Delta(block.text));
                        }
                        Open::Text
                    }
                    "thinking" => {
                        if !block.thinking.is_empty() {
                            out.push(UpstreamEvent::ReasoningDelta(block.thinking));
                        }
                        Open::Thinking
                    }
                    "tool_use" => {
                        if block.name.is_empty() {
                            return Err(UpstreamError::Protocol(
                                "a tool_use block without a name".into(),
                            ));
                        }
                        let ordinal = self.calls;
                        self.calls += 1;
                        out.push(UpstreamEvent::ToolCallStart {
                            index: ordinal,
                            id: block.id,
                            name: block.name,
                        });
                        Open::Tool {
                            ordinal,
                            argued: false,
                        }
                    }
                    // redacted thinking, server tools: nothing the caller reads.
                    _ => Open::Other,
                };
                self.blocks.insert(index, open);
            }
            "content_block_delta" => {
                let index = frame.index.unwrap_or_default();
                let delta: Delta = match frame.delta {
                    Some(raw) => serde_json::from_str(raw.get())
                        .map_err(|e| malformed("content_block_delta", e))?,
                    None => return Ok(out),
                };
                match (self.blocks.get_mut(&index), delta.kind.as_str()) {
                    (Some(Open::Text), "text_delta") if !delta.text.is_empty() => {
                        out.push(UpstreamEvent::Delta(delta.text))
                    }
                    (Some(Open::Thinking), "thinking_delta") if !delta.thinking.is_empty() => {
                        out.push(UpstreamEvent::ReasoningDelta(delta.thinking))
                    }
                    (Some(Open::Thinking), "signature_delta") if !delta.signature.is_empty() => {
                        out.push(UpstreamEvent::ReasoningSignature(delta.signature))
                    }
                    (Some(Open::Tool { ordinal, argued }), "input_json_delta")
                        if !delta.partial_json.is_empty() =>
                    {
                        *argued = true;
                        out.push(UpstreamEvent::ToolCallArguments {
                            index: *ordinal,
                            json: delta.partial_json,
                        })
                    }
                    (None, _) => {
                        return Err(UpstreamError::Protocol(format!(
                            "a delta for block {index}, which never started"
                        )))
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = frame.index.unwrap_or_default();
                // A call with no arguments has `{}` (as the protocol parses an empty one).
                if let Some(Open::Tool {
                    ordinal,
                    argued: false,
                }) = self.blocks.get(&index)
                {
                    out.push(UpstreamEvent::ToolCallArguments {
                        index: *ordinal,
                        json: "{}".into(),
                    });
                }
                self.blocks.remove(&index);
            }
            "message_delta" => {
                if let Some(raw) = frame.delta {
                    let delta: Delta = serde_json::from_str(raw.get())
                        .map_err(|e| malformed("message_delta", e))?;
                    if let Some(reason) = delta.stop_reason {
                        self.stop = Some(stop_reason(&reason));
                    }
                }
                if let Some(u) = &frame.usage {
                    self.count(u);
                }
            }
            "message_stop" => {
                self.ended = true;
                let stop = self.stop.unwrap_or(if self.calls > 0 {
                    StopReason::ToolUse
                } else {
                    StopReason::EndTurn
                });
                out.push(UpstreamEvent::Stop(stop));
                out.push(UpstreamEvent::Usage(self.usage()));
                out.push(UpstreamEvent::End);
            }
            "error" => {
                let error = frame.error.unwrap_or_default();
                return Err(classifier.classify_event(&error, data));
            }
            // Between thinking and text a model may be silent for long:
            // a `ping` keeps the answer's idle timer from running out.
            "ping" => out.push(UpstreamEvent::Alive),
            // Event types this adapter does not know.
            _ => {}
        }
        Ok(out)
    }

    /// Counts from `message_start` and `message_delta`: later ones win.
    fn count(&mut self, u: &WireUsage) {
        let c = &mut self.counts;
        c.uncached = u.input_tokens.or(c.uncached);
        c.cache_read = u.cache_read_input_tokens.or(c.cache_read);
        c.cache_creation = u.cache_creation_input_tokens.or(c.cache_creation);
        c.output = u.output_tokens.or(c.output);
        c.thinking = u
            .output_tokens_details
            .as_ref()
            .and_then(|d| d.thinking_tokens)
            .or(c.thinking);
    }

    /// The usage: the cache counts are part of the input, as OpenAI counts it.
    fn usage(&self) -> TokenUsage {
        let c = &self.counts;
        let (read, creation) = (c.cache_read.unwrap_or(0), c.cache_creation.unwrap_or(0));
        TokenUsage {
            input: c
                .uncached
                .unwrap_or(0)
                .saturating_add(read)
                .saturating_add(creation),
            output: c.output.unwrap_or(0),
            cache_read: read,
            cache_creation: creation,
            reasoning: c.thinking.unwrap_or(0),
        }
    }
}

/// What the upstream has counted so far.
#[derive(Default)]
struct Counts {
    uncached: Option<u32>,
    cache_read: Option<u32>,
    cache_creation: Option<u32>,
    output: Option<u32>,
    thinking: Option<u32>,
}

fn stop_reason(reason: &str) -> StopReason {
    match reason {
        "max_tokens" => StopReason::MaxTokens,
        "tool_use" => StopReason::ToolUse,
        "refusal" => StopReason::Refusal,
        // end_turn, stop_sequence, pause_turn
        _ => StopReason::EndTurn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Lookup;
    use crate::upstream::code::config::CodeConfig;

    /// The protocol's whole answer (section 4.6): thinking, text, a tool call.
    const ANSWER: &[&str] = &[
        r#"{"type":"message_start","message":{"id":"5b0e","type":"message","role":"assistant","model":"MiniMax-M2.7","content":[],"usage":{"input_tokens":41,"output_tokens":0,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}}}"#,
        r#"{"type":"ping"}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"The user wants the weather."}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig-1"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Let me check."}}"#,
        r#"{"type":"content_block_stop","index":1}"#,
        r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}"#,
        r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}"#,
        r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"\"北京\"}"}}"#,
        r#"{"type":"content_block_stop","index":2}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":85,"output_tokens_details":{"thinking_tokens":57}}}"#,
        r#"{"type":"message_stop"}"#,
    ];

    fn run(frames: &[&str]) -> Result<Vec<UpstreamEvent>, UpstreamError> {
        let get = |_: &str| None;
        let config = CodeConfig::from_lookup(&Lookup::new(&get));
        let classifier = Classifier {
            config: &config,
            fingerprint: "fp",
        };
        let mut d = StreamDecoder::default();
        let mut out = Vec::new();
        for f in frames {
            out.extend(d.decode(f, &classifier)?);
        }
        if !d.is_ended() {
            return Err(UpstreamError::Protocol("truncated".into()));
        }
        Ok(out)
    }

    #[test]
    fn the_protocols_answer_in_order() {
        use UpstreamEvent::*;
        assert_eq!(
            run(ANSWER).unwrap(),
            vec![
                Alive,
                ReasoningDelta("The user wants the weather.".into()),
                ReasoningSignature("sig-1".into()),
                Delta("Let me check.".into()),
                ToolCallStart {
                    index: 0,
                    id: "toolu_1".into(),
                    name: "get_weather".into()
                },
                ToolCallArguments {
                    index: 0,
                    json: "{\"city\":".into()
                },
                ToolCallArguments {
                    index: 0,
                    json: "\"北京\"}".into()
                },
                Stop(StopReason::ToolUse),
                Usage(TokenUsage {
                    input: 41,
                    output: 85,
                    reasoning: 57,
                    ..TokenUsage::default()
                }),
                End,
            ]
        );
    }

    #[test]
    fn a_call_without_arguments_is_an_empty_object_and_calls_count_from_zero() {
        let frames = [
            r#"{"type":"message_start","message":{"usage":{"input_tokens":5,"cache_read_input_tokens":128}}}"#,
            r#"{"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"a","name":"now"}}"#,
            r#"{"type":"content_block_stop","index":3}"#,
            r#"{"type":"content_block_start","index":4,"content_block":{"type":"tool_use","id":"b","name":"later"}}"#,
            r#"{"type":"content_block_delta","index":4,"delta":{"type":"input_json_delta","partial_json":""}}"#,
            r#"{"type":"content_block_stop","index":4}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":9}}"#,
            r#"{"type":"message_stop"}"#,
        ];
        let events = run(&frames).unwrap();
        let args: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                UpstreamEvent::ToolCallArguments { index, json } => Some((*index, json.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(args, [(0, "{}"), (1, "{}")]);
        assert!(events.contains(&UpstreamEvent::Stop(StopReason::MaxTokens)));
        assert!(events.contains(&UpstreamEvent::Usage(TokenUsage {
            input: 133,
            output: 9,
            cache_read: 128,
            ..TokenUsage::default()
        })));
    }

    #[test]
    fn errors_and_truncation_are_failures_never_answers() {
        let cut = &ANSWER[..8];
        assert!(run(cut).is_err());
        let throttled = [
            ANSWER[0],
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"rate limit exceeded (2045)"}}"#,
        ];
        assert!(matches!(
            run(&throttled),
            Err(UpstreamError::Cooling { .. })
        ));
        let overloaded = [
            r#"{"type":"error","error":{"type":"overloaded_error","message":"cluster overload"}}"#,
        ];
        assert!(matches!(
            run(&overloaded),
            Err(UpstreamError::Http { status: 529, .. })
        ));
        assert!(run(&["not json"]).is_err());
        assert!(run(&[
            r#"{"type":"content_block_delta","index":9,"delta":{"type":"text_delta","text":"x"}}"#
        ])
        .is_err());
    }

    #[test]
    fn unknown_events_and_pings_are_ignored() {
        let frames = [
            r#"{"type":"ping"}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"hi"}}"#,
            r#"{"type":"something_new","x":1}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"message_stop"}"#,
        ];
        let events = run(&frames).unwrap();
        assert_eq!(events[0], UpstreamEvent::Alive);
        assert_eq!(events[1], UpstreamEvent::Delta("hi".into()));
        assert!(events.contains(&UpstreamEvent::Stop(StopReason::EndTurn)));
    }
}
