use super::*;
use crate::upstream::api::config::tests::config;

fn run(frames: &[&str]) -> Result<Vec<UpstreamEvent>, UpstreamError> {
    let c = config(&[]);
    let classifier = Classifier {
        config: &c,
        fingerprint: "fp",
    };
    let mut d = StreamDecoder::default();
    let mut all = Vec::new();
    for f in frames {
        all.extend(d.decode(f, &classifier)?);
    }
    if !d.is_ended() {
        match d.closed() {
            Some(events) => all.extend(events),
            None => return Err(UpstreamError::Transport("truncated".into())),
        }
    }
    Ok(all)
}

fn chunk(delta: &str, finish: Option<&str>) -> String {
    let finish = finish.map_or(String::new(), |f| format!(r#","finish_reason":"{f}""#));
    format!(
        r#"{{"id":"x","object":"chat.completion.chunk","choices":[{{"index":0,"delta":{delta}{finish}}}],"usage":{{"total_tokens":0,"total_characters":0}},"input_sensitive":false,"output_sensitive":false}}"#
    )
}

fn content(text: &str) -> String {
    chunk(
        &format!(
            r#"{{"role":"","content":{}}}"#,
            serde_json::to_string(text).unwrap()
        ),
        None,
    )
}

/// The text and the reasoning the events add up to.
fn texts(events: &[UpstreamEvent]) -> (String, String) {
    let (mut text, mut reasoning) = (String::new(), String::new());
    for e in events {
        match e {
            UpstreamEvent::Delta(t) => text.push_str(t),
            UpstreamEvent::ReasoningDelta(t) => reasoning.push_str(t),
            _ => {}
        }
    }
    (text, reasoning)
}

const FINAL: &str = r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"<think>\nGreet back.</think>\n\nHi there!"}}],"usage":{"prompt_tokens":9,"completion_tokens":14,"total_tokens":23,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":4}}}"#;

#[test]
fn the_documented_stream_becomes_reasoning_text_and_one_usage() {
    let events = run(&[
        &chunk(r#"{"role":"assistant","name":"MiniMax AI","audio_content":"","content":"<think>\nGreet"}"#, None),
        &content(" back.</think>\n\nHi"),
        &chunk(r#"{"role":"","content":" there!"}"#, Some("stop")),
        FINAL,
    ])
    .unwrap();
    assert_eq!(texts(&events), ("Hi there!".into(), "\nGreet back.".into()));
    let usage: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            UpstreamEvent::Usage(u) => Some(*u),
            _ => None,
        })
        .collect();
    assert_eq!(
        usage,
        vec![TokenUsage {
            input: 9,
            output: 14,
            cache_read: 4,
            cache_creation: 0,
            reasoning: 4
        }]
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, UpstreamEvent::Stop(StopReason::EndTurn)))
            .count(),
        1
    );
    assert_eq!(events.last(), Some(&UpstreamEvent::End));
}

#[test]
fn tags_split_anywhere_are_found_and_a_think_elsewhere_is_text() {
    let whole = "  <think>\nplan</think>\n\nanswer <think>not</think>";
    // Every split into 1..=8-byte chunks gives the same result.
    for size in 1..=8 {
        let chars: Vec<char> = whole.chars().collect();
        let pieces: Vec<String> = chars.chunks(size).map(|c| c.iter().collect()).collect();
        let mut frames: Vec<String> = pieces.iter().map(|p| content(p)).collect();
        frames.push(chunk(r#"{"content":""}"#, Some("stop")));
        let refs: Vec<&str> = frames.iter().map(String::as_str).collect();
        let events = run(&refs).unwrap();
        assert_eq!(
            texts(&events),
            ("answer <think>not</think>".into(), "\nplan".into()),
            "chunks of {size}"
        );
    }
    // No think block: the text as it is, leading whitespace included.
    let events = run(&[
        &content(" <b>hi"),
        &chunk(r#"{"content":"!"}"#, Some("stop")),
    ])
    .unwrap();
    assert_eq!(texts(&events).0, " <b>hi!");
    // A lone partial tag at the end is text; an unclosed block is reasoning.
    let events = run(&[&chunk(r#"{"content":"<thi"}"#, Some("stop"))]).unwrap();
    assert_eq!(texts(&events), ("<thi".into(), String::new()));
    let events = run(&[&chunk(
        r#"{"content":"<think>unfinished</th"}"#,
        Some("length"),
    )])
    .unwrap();
    assert_eq!(texts(&events), (String::new(), "unfinished</th".into()));
    assert!(events.contains(&UpstreamEvent::Stop(StopReason::MaxTokens)));
}

#[test]
fn split_reasoning_incremental_or_cumulative_and_never_both_fields() {
    let detail = |t: &str| {
        chunk(
            &format!(
                r#"{{"role":"","reasoning_details":[{{"type":"reasoning.text","id":"reasoning-text-1","format":"MiniMax-response-v1","index":0,"text":"{t}"}}],"reasoning_content":"{t}"}}"#
            ),
            None,
        )
    };
    let incremental = run(&[
        &detail("I think"),
        &detail(", so"),
        &content("Yes"),
        &chunk("null", Some("stop")),
    ])
    .unwrap();
    assert_eq!(texts(&incremental), ("Yes".into(), "I think, so".into()));
    let cumulative = run(&[
        &detail("I think"),
        &detail("I think, so"),
        &content("Yes"),
        &chunk("null", Some("stop")),
    ])
    .unwrap();
    assert_eq!(texts(&cumulative), ("Yes".into(), "I think, so".into()));
    // reasoning_content alone.
    let events = run(&[
        &chunk(r#"{"reasoning_content":"hm"}"#, None),
        &chunk(r#"{"content":"ok"}"#, Some("stop")),
    ])
    .unwrap();
    assert_eq!(texts(&events), ("ok".into(), "hm".into()));
}

#[test]
fn tool_calls_by_index_split_or_whole_and_the_final_frame_adds_nothing() {
    let call = |index: usize, id: &str, name: &str, args: &str| {
        chunk(
            &format!(
                r#"{{"tool_calls":[{{"index":{index},"id":"{id}","type":"function","function":{{"name":"{name}","arguments":{}}}}}]}}"#,
                serde_json::to_string(args).unwrap()
            ),
            None,
        )
    };
    let more = |index: usize, args: &str| {
        chunk(
            &format!(
                r#"{{"tool_calls":[{{"index":{index},"function":{{"arguments":{}}}}}]}}"#,
                serde_json::to_string(args).unwrap()
            ),
            None,
        )
    };
    let final_frame = r#"{"object":"chat.completion","choices":[{"finish_reason":"tool_calls","message":{"content":"","tool_calls":[{"id":"call_function_a_1","type":"function","function":{"name":"get_weather","arguments":"{}"}}]}}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#;
    let events = run(&[
        &content("<think>\nNeed tools.\n</think>\n\n"),
        &call(0, "call_function_a_1", "get_weather", "{\"city\": "),
        &more(0, "\"Paris\"}"),
        &call(1, "call_function_a_2", "get_time", "{}"),
        &chunk("null", Some("tool_calls")),
        final_frame,
    ])
    .unwrap();
    let starts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            UpstreamEvent::ToolCallStart { index, id, name } => {
                Some((*index, id.as_str(), name.as_str()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        starts,
        vec![
            (0, "call_function_a_1", "get_weather"),
            (1, "call_function_a_2", "get_time")
        ]
    );
    let args: String = events
        .iter()
        .filter_map(|e| match e {
            UpstreamEvent::ToolCallArguments { index: 0, json } => Some(json.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(args, "{\"city\": \"Paris\"}");
    assert!(events.contains(&UpstreamEvent::Stop(StopReason::ToolUse)));
    assert_eq!(texts(&events), (String::new(), "\nNeed tools.\n".into()));
    // The same index with a new id is a new call.
    let events = run(&[
        &call(0, "a", "f", "{}"),
        &call(0, "b", "g", "{}"),
        &chunk("null", Some("tool_calls")),
    ])
    .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, UpstreamEvent::ToolCallStart { .. }))
            .count(),
        2
    );
}

#[test]
fn usage_is_the_last_non_zero_one_and_the_end_is_whichever_comes_first() {
    let usage_chunk = r#"{"object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
    let events = run(&[
        &content("Hi"),
        &chunk(r#"{"content":""}"#, Some("stop")),
        usage_chunk,
        FINAL,
    ])
    .unwrap();
    let usage: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, UpstreamEvent::Usage(_)))
        .collect();
    assert_eq!(usage.len(), 1);
    assert!(matches!(usage[0], UpstreamEvent::Usage(u) if u.input == 9 && u.output == 14));
    // `[DONE]` ends it; a null usage is ignored; no usage means none is made up.
    let events = run(&[
        &content("Hi").replace(r#"{"total_tokens":0,"total_characters":0}"#, "null"),
        "[DONE]",
    ])
    .unwrap();
    assert!(!events.iter().any(|e| matches!(e, UpstreamEvent::Usage(_))));
    assert_eq!(texts(&events).0, "Hi");
    // Closed after a finish_reason: the end. Closed before one: cut.
    assert!(run(&[&content("Hi"), &chunk(r#"{"content":"!"}"#, Some("stop"))]).is_ok());
    assert!(run(&[&content("Hi")]).is_err());
    // Nothing after the end counts.
    let events = run(&[
        &chunk(r#"{"content":"a"}"#, Some("stop")),
        "[DONE]",
        &content("more"),
    ])
    .unwrap();
    assert_eq!(texts(&events).0, "a");
}

#[test]
fn failures_in_frames_are_classified() {
    let e = run(&[
        &content("Hi"),
        r#"{"choices":[],"base_resp":{"status_code":1002,"status_msg":"rate limit"}}"#,
    ])
    .unwrap_err();
    assert!(matches!(e, UpstreamError::Cooling { .. }), "{e:?}");
    let e = run(&[r#"{"error":{"message":"invalid params, x (2013)"}}"#]).unwrap_err();
    assert!(matches!(
        e,
        UpstreamError::InvalidRequest {
            code: "minimax_2013",
            ..
        }
    ));
    // Sensitive before any text: the caller's 400; after some: a refusal.
    let flagged = r#"{"object":"chat.completion.chunk","choices":[{"delta":{"content":""}}],"output_sensitive":true}"#;
    assert!(matches!(
        run(&[flagged]).unwrap_err(),
        UpstreamError::InvalidRequest {
            code: "content_filter",
            ..
        }
    ));
    let events = run(&[&content("Hi"), flagged]).unwrap();
    assert!(events.contains(&UpstreamEvent::Stop(StopReason::Refusal)));
    let e = run(&["not json"]).unwrap_err();
    assert!(matches!(e, UpstreamError::Protocol(_)));
}
