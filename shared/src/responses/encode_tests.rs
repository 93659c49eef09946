use serde_json::{json, Map, Value};

use super::*;

/// A stream's events checked against what the openai SDK's
/// `responses.stream()` and Codex's parser rely on, and the final
/// response it ends with.
pub(crate) fn replay(stream: &str) -> Value {
    let mut seq = 0;
    let mut added: Vec<Value> = Vec::new();
    let mut done: Vec<Option<Value>> = Vec::new();
    let mut parts_open: Vec<bool> = Vec::new();
    let mut terminal = None;
    for frame in stream.split("\n\n").filter(|f| !f.is_empty()) {
        if frame.starts_with(':') {
            continue;
        }
        let (name, data) = frame
            .strip_prefix("event: ")
            .and_then(|f| f.split_once("\ndata: "))
            .unwrap_or_else(|| panic!("not an event: {frame:?}"));
        let data: Value = serde_json::from_str(data).unwrap();
        assert_eq!(data["type"], name);
        assert_eq!(
            data["sequence_number"], seq,
            "sequence numbers count from 0 by one"
        );
        seq += 1;
        assert!(terminal.is_none(), "nothing after the terminal event");
        if seq == 1 {
            assert_eq!(name, "response.created", "the first event");
        }
        let index = data["output_index"].as_u64().map(|i| i as usize);
        match name {
            "response.created" | "response.in_progress" => {
                assert_eq!(data["response"]["status"], "in_progress");
                assert!(data["response"]["id"]
                    .as_str()
                    .unwrap()
                    .starts_with("resp_"));
            }
            "response.output_item.added" => {
                assert_eq!(index, Some(added.len()), "items are added in order");
                added.push(data["item"].clone());
                done.push(None);
                parts_open.push(false);
            }
            "response.content_part.added" => parts_open[index.unwrap()] = true,
            "response.output_text.delta" => {
                assert!(
                    parts_open[index.unwrap()],
                    "a text delta after its content part"
                );
                assert_eq!(data["item_id"], added[index.unwrap()]["id"]);
            }
            "response.reasoning_summary_part.added"
            | "response.reasoning_summary_text.delta"
            | "response.reasoning_summary_text.done"
            | "response.reasoning_summary_part.done" => {
                assert_eq!(added[index.unwrap()]["type"], "reasoning");
                assert_eq!(data["summary_index"], 0);
            }
            "response.function_call_arguments.delta" | "response.function_call_arguments.done" => {
                assert_eq!(added[index.unwrap()]["type"], "function_call");
                assert!(done[index.unwrap()].is_none());
            }
            "response.output_text.done" | "response.content_part.done" => {}
            "response.output_item.done" => {
                let i = index.unwrap();
                assert!(done[i].is_none(), "one done per item");
                assert_eq!(data["item"]["id"], added[i]["id"]);
                done[i] = Some(data["item"].clone());
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                terminal = Some(data["response"].clone());
            }
            "error" => assert!(data["error"]["message"].is_string()),
            other => panic!("event {other}"),
        }
    }
    let terminal = terminal.expect("the stream ends with a terminal event");
    if terminal["status"] != "failed" {
        let items: Vec<Value> = done
            .into_iter()
            .map(|d| d.expect("every item is done"))
            .collect();
        assert_eq!(
            terminal["output"],
            Value::Array(items),
            "the output is every finished item"
        );
        let u = &terminal["usage"];
        assert_eq!(
            u["total_tokens"].as_u64().unwrap(),
            u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap()
        );
    }
    terminal
}

fn builder(custom: &[&str]) -> Builder {
    let mut echo = Map::new();
    echo.insert("tools".into(), json!([]));
    Builder::new(
        "gpt-5-codex".into(),
        echo,
        custom.iter().map(|s| s.to_string()).collect(),
    )
}

fn run(b: &mut Builder, pieces: Vec<Piece>) -> String {
    let mut s = b.start();
    for p in pieces {
        match p {
            Piece::Done { text, calls, stop } => {
                let u = TokenUsage {
                    input: 12,
                    output: 7,
                    reasoning: 3,
                    ..TokenUsage::default()
                };
                s.push_str(&b.end(&text, &calls, stop, u));
            }
            p => s.push_str(&b.piece(p)),
        }
    }
    s
}

#[test]
fn reasoning_text_and_a_split_call_make_three_items_in_order() {
    let input = r#"{"cmd":"cat notes.txt"}"#;
    for cut in 0..=input.len() {
        let mut b = builder(&[]);
        let s = run(
            &mut b,
            vec![
                Piece::Reasoning("I will ".into()),
                Piece::Reasoning("run cat.".into()),
                Piece::ReasoningSignature("sig-1".into()),
                Piece::Content("Running it.".into()),
                Piece::ToolCallStart {
                    index: 0,
                    id: "call_1".into(),
                    name: "exec_command".into(),
                },
                Piece::ToolCallArguments {
                    index: 0,
                    json: input[..cut].into(),
                },
                Piece::ToolCallArguments {
                    index: 0,
                    json: input[cut..].into(),
                },
                Piece::Done {
                    text: String::new(),
                    calls: vec![],
                    stop: StopReason::ToolUse,
                },
            ],
        );
        let r = replay(&s);
        assert_eq!(r["status"], "completed");
        let output = r["output"].as_array().unwrap();
        assert_eq!(output[0]["type"], "reasoning");
        assert_eq!(
            output[0]["summary"],
            json!([{"type": "summary_text", "text": "I will run cat."}])
        );
        assert_eq!(output[0]["encrypted_content"], "sig-1");
        assert_eq!(output[1]["content"][0]["text"], "Running it.");
        assert_eq!(output[2]["type"], "function_call");
        assert_eq!(
            (
                output[2]["call_id"].as_str(),
                output[2]["arguments"].as_str()
            ),
            (Some("call_1"), Some(input))
        );
        assert_eq!(r["usage"]["output_tokens_details"]["reasoning_tokens"], 3);
        assert_eq!(
            b.into_terminal().unwrap(),
            r,
            "the stream's last response is the whole one"
        );
    }
}

#[test]
fn emulated_calls_and_custom_tools_come_as_their_item_types() {
    let mut b = builder(&["apply_patch"]);
    let s = run(
        &mut b,
        vec![Piece::Done {
            text: "Patching.".into(),
            calls: vec![
                ToolCall {
                    id: "call_a".into(),
                    name: "apply_patch".into(),
                    arguments: r#"{"content":"*** Begin Patch"}"#.into(),
                },
                ToolCall {
                    id: "call_b".into(),
                    name: "get_time".into(),
                    arguments: String::new(),
                },
            ],
            stop: StopReason::ToolUse,
        }],
    );
    let r = replay(&s);
    let output = r["output"].as_array().unwrap();
    assert_eq!(output[0]["type"], "message");
    assert_eq!(
        output[1],
        json!({"id": output[1]["id"], "type": "custom_tool_call", "status": "completed",
               "call_id": "call_a", "name": "apply_patch", "input": "*** Begin Patch"})
    );
    assert_eq!(output[2]["arguments"], "{}");
}

#[test]
fn the_output_cap_and_a_refusal_are_incomplete_and_a_failure_is_error_then_failed() {
    for (stop, reason) in [
        (StopReason::MaxTokens, "max_output_tokens"),
        (StopReason::Refusal, "content_filter"),
    ] {
        let mut b = builder(&[]);
        let s = run(
            &mut b,
            vec![
                Piece::Content("cut".into()),
                Piece::Done {
                    text: String::new(),
                    calls: vec![],
                    stop,
                },
            ],
        );
        assert!(s.contains("event: response.incomplete\n"));
        let r = replay(&s);
        assert_eq!(
            (
                r["status"].as_str(),
                r["incomplete_details"]["reason"].as_str()
            ),
            (Some("incomplete"), Some(reason))
        );
    }
    let mut b = builder(&[]);
    let mut s = run(&mut b, vec![Piece::Content("half".into())]);
    s.push_str(&b.failed(&ApiError::GatewayTimeout("the upstream went silent".into())));
    let r = replay(&s);
    assert_eq!(r["status"], "failed");
    assert_eq!(r["error"]["code"], "upstream_timeout");
    assert!(s.contains("event: error\n"));
}

#[test]
fn the_response_object_has_every_key_the_schema_requires() {
    let mut b = builder(&[]);
    run(
        &mut b,
        vec![
            Piece::Content("hi".into()),
            Piece::Done {
                text: String::new(),
                calls: vec![],
                stop: StopReason::EndTurn,
            },
        ],
    );
    let r = b.into_terminal().unwrap();
    for key in [
        "id",
        "object",
        "created_at",
        "completed_at",
        "status",
        "incomplete_details",
        "model",
        "previous_response_id",
        "output",
        "error",
        "tools",
        "usage",
        "presence_penalty",
        "frequency_penalty",
        "store",
        "background",
    ] {
        assert!(r.get(key).is_some(), "{key} missing");
    }
    assert_eq!(r["object"], "response");
    assert_eq!(r["store"], false);
    assert!(r["completed_at"].is_i64());
}
