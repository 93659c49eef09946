use serde_json::json;

use super::*;

fn parse(v: serde_json::Value) -> Result<MessagesRequest, ApiError> {
    MessagesRequest::parse(v.to_string().as_bytes(), Route::Messages)
}

fn refused(v: serde_json::Value) -> (String, String) {
    match parse(v) {
        Err(ApiError::BadRequest { message, param, .. }) => (param.unwrap_or_default(), message),
        other => panic!("expected a 400, got {other:?}"),
    }
}

#[test]
fn a_plain_request_is_one_user_message() {
    let r = parse(
        json!({"model": "claude-sonnet-4-5", "max_tokens": 256, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .unwrap();
    assert!(r.stream);
    let c = r.conversation;
    assert_eq!(c.model, "claude-sonnet-4-5");
    assert_eq!(c.max_tokens, Some(256));
    assert_eq!(c.messages.len(), 1);
    assert_eq!(
        (c.messages[0].role, c.messages[0].text.as_str()),
        (Role::User, "hi")
    );
    assert_eq!(c.tool_choice, ToolChoice::None);
    assert_eq!(c.thinking, ThinkingWanted::Default);
}

#[test]
fn required_fields_are_named_in_anthropics_words() {
    let (param, message) =
        refused(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}));
    assert_eq!(param, "max_tokens");
    assert!(message.contains("Field required"), "{message}");
    let (param, _) =
        refused(json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}));
    assert_eq!(param, "model");
    let (param, _) = refused(json!({"model": "m", "max_tokens": 5}));
    assert_eq!(param, "messages");
    let (param, _) = refused(json!({"model": "m", "max_tokens": 5, "messages": []}));
    assert_eq!(param, "messages");
    let (param, _) = refused(
        json!({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(param, "max_tokens");
    // count_tokens takes the same fields without `max_tokens`.
    let counted = MessagesRequest::parse(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})
            .to_string()
            .as_bytes(),
        Route::CountTokens,
    )
    .unwrap();
    assert_eq!(counted.conversation.max_tokens, None);
}

#[test]
fn a_wrong_type_is_named_by_its_path() {
    let (param, message) = refused(json!({"model": "m", "max_tokens": 5,
        "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}));
    assert_eq!(param, "messages[0].content[0].text");
    assert!(message.contains("expected"), "{message}");
    let (param, _) = refused(json!({"model": "m", "max_tokens": "many",
        "messages": [{"role": "user", "content": "x"}]}));
    assert_eq!(param, "max_tokens");
    let (param, _) = refused(json!({"model": "m", "max_tokens": 5,
        "messages": [{"role": "user", "content": [{"type": "text"}]}]}));
    assert_eq!(param, "messages[0].content[0].text");
    let (param, _) = refused(json!({"model": "m", "max_tokens": 5, "temperature": 1.5,
        "messages": [{"role": "user", "content": "x"}]}));
    assert_eq!(param, "temperature");
    let (param, _) = refused(json!({"model": "m", "max_tokens": 5,
        "messages": [{"role": "robot", "content": "x"}]}));
    assert_eq!(param, "messages[0].role");
    match MessagesRequest::parse(b"{\"model\": ", Route::Messages) {
        Err(ApiError::BadRequest { code, .. }) => assert_eq!(code, "invalid_request_body"),
        other => panic!("{other:?}"),
    }
}

/// What Claude Code 2.1 sends for a model name that is not `claude-*`
/// (agents-observed.md): a system prompt opened by the billing line, a
/// `role: "system"` message inside `messages`, `thinking` with `display`,
/// `output_config`, `context_management`, `metadata.user_id` as a string,
/// a deferred tool, a draft 2020-12 schema. All of it is taken.
#[test]
fn what_claude_code_sends_is_taken() {
    let r = parse(json!({
        "model": "gw-main", "max_tokens": 32000, "stream": true,
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": "{\"device_id\":\"d\",\"session_id\":\"s\"}"},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "output_config": {"effort": "high"},
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332.109; cc_entrypoint=sdk-cli;"},
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be careful.", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Read notes.txt", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": [{"type": "text", "text": "<env>cwd: /tmp/x</env>", "cache_control": {"type": "ephemeral"}}]}
        ],
        "tools": [
            {"name": "Read", "description": "Reads a file", "input_schema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                "properties": {"file_path": {"type": "string"}}, "required": ["file_path"],
                "additionalProperties": false}},
            {"name": "DeferredToolPlaceholder", "description": "never call this tool", "defer_loading": true,
             "input_schema": {"type": "object", "properties": {}}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
        ]
    }))
    .unwrap();
    let c = r.conversation;
    assert_eq!(c.thinking, ThinkingWanted::On);
    assert_eq!(c.messages[0].role, Role::System);
    assert_eq!(
        c.messages[0].text, "You are Claude Code.\n\nBe careful.",
        "billing line dropped"
    );
    assert_eq!(
        (c.messages[1].role, c.messages[1].text.as_str()),
        (Role::User, "Read notes.txt")
    );
    assert_eq!(c.messages[2].role, Role::System, "in place");
    assert!(c.messages[2].text.contains("cwd: /tmp/x"));
    let names: Vec<_> = c.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["Read", "DeferredToolPlaceholder"],
        "the server tool is left out"
    );
    assert!(c.tools[0]
        .parameters
        .as_deref()
        .unwrap()
        .contains("draft/2020-12"));
    assert_eq!(c.tool_choice, ToolChoice::Auto);
}

#[test]
fn a_tool_loop_becomes_calls_and_results_in_order() {
    let r = parse(json!({"model": "m", "max_tokens": 100,
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "let me look", "signature": "sig-1"},
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}}]},
            {"role": "user", "content": [
                {"type": "text", "text": "here you go"},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                 "content": [{"type": "text", "text": "no station"}]}]}
        ]}))
    .unwrap();
    let c = r.conversation;
    assert_eq!(c.tool_choice, ToolChoice::Required);
    assert!(!c.parallel_tool_calls);
    let a = &c.messages[1];
    assert_eq!(a.role, Role::Assistant);
    assert_eq!(a.text, "Looking.");
    assert_eq!(
        a.thinking,
        vec![Thinking {
            text: "let me look".into(),
            signature: "sig-1".into()
        }]
    );
    assert_eq!(a.tool_calls.len(), 2);
    assert_eq!(a.tool_calls[0].arguments, r#"{"city":"Paris"}"#);
    // The results come first, then the user's text.
    assert_eq!(c.messages[2].role, Role::Tool);
    assert_eq!(c.messages[2].tool_call_id.as_deref(), Some("toolu_1"));
    assert!(!c.messages[2].tool_error);
    assert_eq!(c.messages[3].text, "no station");
    assert!(c.messages[3].tool_error);
    assert_eq!(
        (c.messages[4].role, c.messages[4].text.as_str()),
        (Role::User, "here you go")
    );
}

#[test]
fn images_and_documents_take_the_file_path_or_become_text() {
    let r = parse(json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain", "data": "line one"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
        {"type": "text", "text": "what is this?"}]}]}))
    .unwrap();
    let m = &r.conversation.messages[0];
    assert_eq!(m.text, "Notes\n\nline one\nwhat is this?");
    assert_eq!(
        m.attachments,
        vec![
            (
                0,
                Attachment::Image {
                    url: "data:image/png;base64,iVBORw0KGgo=".into()
                }
            ),
            (
                1,
                Attachment::Image {
                    url: "https://example.com/a.png".into()
                }
            ),
            (
                3,
                Attachment::File {
                    url: "data:application/pdf;base64,JVBERi0=".into(),
                    filename: None
                }
            ),
        ]
    );
    let (param, _) = refused(
        json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "data": "x"}}]}]}),
    );
    assert_eq!(param, "messages[0].content[0].source.media_type");
}

#[test]
fn tool_choice_is_checked_against_the_tools_offered() {
    let tools = json!([{"name": "f", "input_schema": {"type": "object"}},
                       {"type": "web_search_20250305", "name": "web_search"}]);
    let ok = parse(json!({"model": "m", "max_tokens": 5, "tools": tools,
        "tool_choice": {"type": "tool", "name": "f"}, "messages": [{"role": "user", "content": "x"}]}))
    .unwrap();
    assert_eq!(
        ok.conversation.tool_choice,
        ToolChoice::Function("f".into())
    );
    let (param, message) = refused(json!({"model": "m", "max_tokens": 5, "tools": tools,
        "tool_choice": {"type": "tool", "name": "web_search"}, "messages": [{"role": "user", "content": "x"}]}));
    assert_eq!(param, "tool_choice.name");
    assert!(message.contains("server tool"), "{message}");
    let (param, _) = refused(json!({"model": "m", "max_tokens": 5, "tools": tools,
        "tool_choice": {"type": "tool", "name": "g"}, "messages": [{"role": "user", "content": "x"}]}));
    assert_eq!(param, "tool_choice.name");
    let none = parse(json!({"model": "m", "max_tokens": 5, "tools": tools,
        "tool_choice": {"type": "none"}, "messages": [{"role": "user", "content": "x"}]}))
    .unwrap();
    assert_eq!(none.conversation.tool_choice, ToolChoice::None);
    let (param, _) = refused(
        json!({"model": "m", "max_tokens": 5, "tools": [{"name": "f"}],
        "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(param, "tools[0].input_schema");
}

#[test]
fn consecutive_turns_of_one_role_are_merged() {
    let r = parse(json!({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": "one"}, {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "three"}]}))
    .unwrap();
    let texts: Vec<_> = r
        .conversation
        .messages
        .iter()
        .map(|m| (m.role, m.text.as_str()))
        .collect();
    assert_eq!(
        texts,
        [(Role::User, "one\ntwo"), (Role::Assistant, "three")]
    );
}

#[test]
fn thinking_and_output_format_map_to_the_conversation() {
    let base = |extra: serde_json::Value| {
        let mut v = json!({"model": "m", "max_tokens": 2048, "messages": [{"role": "user", "content": "x"}]});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    assert_eq!(
        parse(base(
            json!({"thinking": {"type": "enabled", "budget_tokens": 1024}})
        ))
        .unwrap()
        .conversation
        .thinking,
        ThinkingWanted::On
    );
    assert_eq!(
        parse(base(json!({"thinking": {"type": "disabled"}})))
            .unwrap()
            .conversation
            .thinking,
        ThinkingWanted::Off
    );
    let (param, _) = refused(base(json!({"thinking": {"type": "sometimes"}})));
    assert_eq!(param, "thinking.type");
    let f = parse(base(
        json!({"output_config": {"format": {"type": "json_schema",
        "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}}),
    ))
    .unwrap();
    match f.conversation.response_format {
        ResponseFormat::JsonSchema {
            schema: Some(s), ..
        } => assert!(s.contains("integer")),
        other => panic!("{other:?}"),
    }
}

/// A body of nothing but empty blocks stops at the element budget, a 400
/// that says so, instead of building millions of structs.
#[test]
fn a_hostile_body_stops_at_the_element_budget() {
    let blocks = vec![json!({}); crate::wire::MAX_ELEMENTS + 10];
    let (param, message) = refused(json!({"model": "m", "max_tokens": 5,
        "messages": [{"role": "user", "content": blocks}]}));
    assert!(param.starts_with("messages[0].content"), "{param}");
    assert!(message.contains("send a shorter history"), "{message}");
    // Schemas count too, by their bytes.
    let big = json!({"type": "object", "description": "x".repeat(MAX_SCHEMA_BYTES)});
    let (param, _) = refused(
        json!({"model": "m", "max_tokens": 5, "tools": [{"name": "f", "input_schema": big}],
        "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(param, "tools");
}

/// What Node clients send: a lone surrogate half from a cut emoji, a byte
/// order mark; read as the chat door reads them.
#[test]
fn a_lone_surrogate_and_a_byte_order_mark_are_read_not_refused() {
    let mut body = b"\xef\xbb\xbf".to_vec();
    body.extend_from_slice(
        br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"cut \ud83d"}]}"#,
    );
    let r = MessagesRequest::parse(&body, Route::Messages).unwrap();
    assert_eq!(r.conversation.messages[0].text, "cut \u{fffd}");
}
