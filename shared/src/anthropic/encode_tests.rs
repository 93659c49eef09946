use serde_json::{json, Value};

use super::*;

/// The events of a stream, checked against the order the anthropic SDK
/// keeps (front-doors.md 1.6), and the message they build, as the SDK's
/// `messages.stream()` builds it.
fn replay(stream: &str) -> Value {
    let mut message: Option<Value> = None;
    let mut open: Option<usize> = None;
    let mut next = 0;
    let mut stopped = false;
    let mut partial = String::new();
    for frame in stream.split("\n\n").filter(|f| !f.is_empty()) {
        let (name, data) = frame
            .strip_prefix("event: ")
            .and_then(|f| f.split_once("\ndata: "))
            .unwrap_or_else(|| panic!("not an event: {frame:?}"));
        let data: Value = serde_json::from_str(data).unwrap();
        assert_eq!(data["type"], name, "the event's name is its payload's type");
        assert!(!stopped, "nothing after message_stop");
        if name != "message_start" {
            assert!(message.is_some(), "{name} before message_start");
        }
        let m = message.get_or_insert(json!(null));
        match name {
            "message_start" => {
                assert!(m.is_null(), "one message_start");
                assert_eq!(data["message"]["content"], json!([]));
                assert!(data["message"]["usage"]["input_tokens"].as_u64().unwrap() > 0);
                *m = data["message"].clone();
            }
            "ping" => {}
            "content_block_start" => {
                assert_eq!(open, None, "one block open at a time");
                assert_eq!(data["index"], next, "indexes go up by one");
                let block = data["content_block"].clone();
                match block["type"].as_str().unwrap() {
                    "text" => assert_eq!(block["text"], ""),
                    "thinking" => assert_eq!(block["thinking"], ""),
                    "tool_use" => assert_eq!(block["input"], json!({})),
                    other => panic!("block type {other}"),
                }
                m["content"].as_array_mut().unwrap().push(block);
                open = Some(next);
                next += 1;
                partial.clear();
            }
            "content_block_delta" => {
                let i = open.expect("a delta inside an open block");
                assert_eq!(data["index"], i);
                let block = &mut m["content"][i];
                let d = &data["delta"];
                match (block["type"].as_str().unwrap(), d["type"].as_str().unwrap()) {
                    ("text", "text_delta") => {
                        block["text"] = json!(format!(
                            "{}{}",
                            block["text"].as_str().unwrap(),
                            d["text"].as_str().unwrap()
                        ))
                    }
                    ("thinking", "thinking_delta") => {
                        block["thinking"] = json!(format!(
                            "{}{}",
                            block["thinking"].as_str().unwrap(),
                            d["thinking"].as_str().unwrap()
                        ))
                    }
                    ("thinking", "signature_delta") => {
                        block["signature"] = json!(format!(
                            "{}{}",
                            block["signature"].as_str().unwrap(),
                            d["signature"].as_str().unwrap()
                        ))
                    }
                    ("tool_use", "input_json_delta") => {
                        partial.push_str(d["partial_json"].as_str().unwrap())
                    }
                    (b, d) => panic!("a {d} in a {b} block"),
                }
            }
            "content_block_stop" => {
                let i = open.take().expect("a stop for an open block");
                assert_eq!(data["index"], i);
                if m["content"][i]["type"] == "tool_use" {
                    let input: Value = if partial.is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&partial).unwrap()
                    };
                    assert!(input.is_object());
                    m["content"][i]["input"] = input;
                }
            }
            "message_delta" => {
                assert_eq!(open, None, "every block stopped before message_delta");
                m["stop_reason"] = data["delta"]["stop_reason"].clone();
                assert!(data["usage"]["output_tokens"].is_u64());
                m["usage"] = data["usage"].clone();
            }
            "message_stop" => stopped = true,
            other => panic!("event {other}"),
        }
    }
    assert!(stopped, "the stream ends with message_stop");
    message.unwrap()
}

fn call(i: usize, id: &str) -> Piece {
    Piece::ToolCallStart {
        index: i,
        id: id.into(),
        name: "Read".into(),
    }
}

fn args(i: usize, s: &str) -> Piece {
    Piece::ToolCallArguments {
        index: i,
        json: s.into(),
    }
}

fn done(stop: StopReason) -> Piece {
    Piece::Done {
        text: String::new(),
        calls: vec![],
        stop,
    }
}

/// Streamed and collected, one sequence of pieces gives the same message.
fn both(pieces: Vec<Piece>) -> Value {
    let usage = TokenUsage {
        input: 30,
        output: 7,
        cache_read: 10,
        ..TokenUsage::default()
    };
    let mut events = Events::new("msg_1".into(), "claude-x".into());
    let mut stream = String::from_utf8(events.start(42).to_vec()).unwrap();
    let mut collector = Collector::default();
    for p in pieces {
        let copy = match &p {
            Piece::Content(t) => Piece::Content(t.clone()),
            Piece::Reasoning(t) => Piece::Reasoning(t.clone()),
            Piece::ReasoningSignature(t) => Piece::ReasoningSignature(t.clone()),
            Piece::ToolCallStart { index, id, name } => Piece::ToolCallStart {
                index: *index,
                id: id.clone(),
                name: name.clone(),
            },
            Piece::ToolCallArguments { index, json } => Piece::ToolCallArguments {
                index: *index,
                json: json.clone(),
            },
            Piece::Done { text, calls, stop } => Piece::Done {
                text: text.clone(),
                calls: calls.clone(),
                stop: *stop,
            },
        };
        collector.add(copy);
        match p {
            Piece::Done { text, calls, stop } => {
                stream.push_str(
                    std::str::from_utf8(&events.end(&text, &calls, stop, usage)).unwrap(),
                );
                stream.push_str(std::str::from_utf8(&Events::stop()).unwrap());
            }
            p => stream.push_str(std::str::from_utf8(&events.piece(p)).unwrap()),
        }
    }
    let streamed = replay(&stream);
    let whole = collector.message("msg_1", "claude-x", usage);
    assert_eq!(streamed["content"], whole["content"], "{stream}");
    assert_eq!(streamed["stop_reason"], whole["stop_reason"]);
    assert_eq!(
        whole["usage"],
        json!({"input_tokens": 20, "output_tokens": 7,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 10})
    );
    whole
}

#[test]
fn thinking_then_text_then_a_tool_call_split_at_every_position() {
    let input = r#"{"file_path":"/tmp/notes.txt"}"#;
    for cut in 0..=input.len() {
        let m = both(vec![
            Piece::Reasoning("I should ".into()),
            Piece::Reasoning("read it.".into()),
            Piece::ReasoningSignature("sig".into()),
            Piece::Content("Reading.".into()),
            call(0, "toolu_1"),
            args(0, &input[..cut]),
            args(0, &input[cut..]),
            done(StopReason::ToolUse),
        ]);
        assert_eq!(
            m["content"],
            json!([
                {"type": "thinking", "thinking": "I should read it.", "signature": "sig"},
                {"type": "text", "text": "Reading."},
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/tmp/notes.txt"}}
            ])
        );
        assert_eq!(m["stop_reason"], "tool_use");
    }
}

#[test]
fn every_order_of_block_kinds_keeps_one_block_open_at_a_time() {
    let kinds = ["think", "sign", "text", "call"];
    // Every sequence of three kinds, each then ended.
    for a in kinds {
        for b in kinds {
            for c in kinds {
                let mut pieces = Vec::new();
                let mut calls = 0;
                for k in [a, b, c] {
                    pieces.push(match k {
                        "think" => Piece::Reasoning("hm".into()),
                        "sign" => Piece::ReasoningSignature("s".into()),
                        "text" => Piece::Content("t".into()),
                        _ => {
                            calls += 1;
                            call(calls - 1, &format!("toolu_{calls}"))
                        }
                    });
                }
                let m = both(
                    pieces
                        .into_iter()
                        .chain([done(StopReason::EndTurn)])
                        .collect(),
                );
                let expected = if calls > 0 { "tool_use" } else { "end_turn" };
                assert_eq!(m["stop_reason"], expected, "{a} {b} {c}");
            }
        }
    }
}

#[test]
fn emulated_calls_come_whole_at_the_end_with_their_input_as_an_object() {
    let m = both(vec![
        Piece::Content("Let me check.".into()),
        Piece::Done {
            text: " Done.".into(),
            calls: vec![
                ToolCall {
                    id: "call_a".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Paris"}"#.into(),
                },
                ToolCall {
                    id: "call_b".into(),
                    name: "now".into(),
                    arguments: String::new(),
                },
            ],
            stop: StopReason::ToolUse,
        },
    ]);
    assert_eq!(
        m["content"][0],
        json!({"type": "text", "text": "Let me check. Done."})
    );
    assert_eq!(m["content"][1]["input"], json!({"city": "Paris"}));
    assert_eq!(m["content"][2]["input"], json!({}));
    assert_eq!(m["stop_reason"], "tool_use");
}

#[test]
fn unsigned_reasoning_still_closes_with_a_signature_delta_and_limits_say_max_tokens() {
    let mut events = Events::new("msg_1".into(), "m".into());
    let mut s = String::from_utf8(events.start(5).to_vec()).unwrap();
    s.push_str(
        std::str::from_utf8(&events.piece(Piece::Reasoning("web chat thinks".into()))).unwrap(),
    );
    s.push_str(std::str::from_utf8(&events.piece(Piece::Content("answer".into()))).unwrap());
    s.push_str(
        std::str::from_utf8(&events.end("", &[], StopReason::MaxTokens, TokenUsage::default()))
            .unwrap(),
    );
    s.push_str(std::str::from_utf8(&Events::stop()).unwrap());
    assert!(
        s.contains(r#""delta":{"signature":"","type":"signature_delta"}"#),
        "{s}"
    );
    let m = replay(&s);
    assert_eq!(m["stop_reason"], "max_tokens");
    assert_eq!(m["content"][0]["signature"], "");
}

#[test]
fn a_failure_is_an_error_event_under_the_error_key() {
    let e = Events::error(&ApiError::PoolBusy {
        message: "all busy".into(),
        retry_after: 2,
    });
    let text = std::str::from_utf8(&e).unwrap();
    let data: Value =
        serde_json::from_str(text.strip_prefix("event: error\ndata: ").unwrap().trim()).unwrap();
    assert_eq!(
        data,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "all busy"}})
    );
}
