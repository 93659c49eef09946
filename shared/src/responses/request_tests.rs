use serde_json::json;

use super::*;

fn parse(v: serde_json::Value) -> Result<ResponsesRequest, ApiError> {
    ResponsesRequest::parse(v.to_string().as_bytes())
}

fn refused(v: serde_json::Value) -> (String, String, &'static str) {
    match parse(v) {
        Err(ApiError::BadRequest {
            message,
            param,
            code,
        }) => (param.unwrap_or_default(), message, code),
        other => panic!("expected a 400, got {other:?}"),
    }
}

#[test]
fn a_string_input_is_one_user_message_after_the_instructions() {
    let r =
        parse(json!({"model": "gw-main", "input": "Say hi", "instructions": "Be brief."})).unwrap();
    let m = &r.conversation.messages;
    assert_eq!((m[0].role, m[0].text.as_str()), (Role::System, "Be brief."));
    assert_eq!((m[1].role, m[1].text.as_str()), (Role::User, "Say hi"));
    assert!(!r.stream);
    assert_eq!(r.echo["instructions"], "Be brief.");
    assert_eq!(r.echo["tool_choice"], "auto");
}

/// What Codex 0.171 sends (agents-observed.md): no `instructions` but a
/// developer message, item ids, `store: false`, `include`, a namespace
/// tool and the hosted web search beside its functions, and on its second
/// turn our own items replayed, reasoning with its encrypted content.
#[test]
fn what_codex_sends_is_taken() {
    let r = parse(json!({
        "model": "gpt-5-codex", "stream": true, "store": false, "parallel_tool_calls": true,
        "include": ["reasoning.encrypted_content"], "tool_choice": "auto",
        "reasoning": {"summary": "auto"}, "prompt_cache_key": "session-1",
        "client_metadata": {"session_id": "s"},
        "input": [
            {"type": "message", "role": "developer", "id": "msg_1", "content": [{"type": "input_text", "text": "You are Codex."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>cwd</environment_context>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "cat notes.txt"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "I will run cat."}],
             "encrypted_content": "sig-1"},
            {"type": "function_call", "id": "fc_1", "status": "completed", "call_id": "call_1",
             "name": "exec_command", "arguments": "{\"cmd\":\"cat notes.txt\"}"},
            {"type": "function_call_output", "id": "fco_1", "call_id": "call_1", "output": "Output:\nstubword42\n"}
        ],
        "tools": [
            {"type": "function", "name": "exec_command", "description": "Runs a command", "strict": false,
             "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"],
                            "additionalProperties": false}},
            {"type": "namespace", "name": "multi_agent_v1", "tools": [{"type": "function", "name": "spawn_agent"}]},
            {"type": "web_search", "external_web_access": true}
        ]
    }))
    .unwrap();
    assert!(r.stream);
    let c = &r.conversation;
    assert_eq!(c.messages[0].role, Role::Developer);
    let names: Vec<_> = c.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["exec_command"],
        "the namespace and the hosted tool are left out"
    );
    let assistant = &c.messages[3];
    assert_eq!(assistant.role, Role::Assistant);
    assert_eq!(
        assistant.thinking,
        vec![Thinking {
            text: "I will run cat.".into(),
            signature: "sig-1".into()
        }]
    );
    assert_eq!(assistant.tool_calls[0].id, "call_1");
    assert_eq!(
        assistant.tool_calls[0].arguments,
        r#"{"cmd":"cat notes.txt"}"#
    );
    assert_eq!(c.messages[4].role, Role::Tool);
    assert_eq!(c.messages[4].tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(c.messages[4].text, "Output:\nstubword42\n");
    assert_eq!(c.thinking, ThinkingWanted::Default);
    assert_eq!(r.echo["prompt_cache_key"], "session-1");
}

#[test]
fn what_needs_a_store_is_a_400_that_says_to_resend() {
    let (param, message, code) =
        refused(json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}));
    assert_eq!(
        (param.as_str(), code),
        ("previous_response_id", "previous_response_not_found")
    );
    assert!(
        message.contains("resp_1") && message.contains("stateless"),
        "{message}"
    );
    for (field, value) in [
        ("conversation", json!("conv_1")),
        ("prompt", json!({"id": "p"})),
        ("background", json!(true)),
    ] {
        let mut body = json!({"model": "m", "input": "x"});
        body[field] = value;
        let (param, message, _) = refused(body);
        assert_eq!(param, field);
        assert!(message.contains("stateless"), "{message}");
    }
    // `store: true` is taken; nothing is stored, and the answer says so.
    assert!(parse(json!({"model": "m", "input": "x", "store": true})).is_ok());
    let (param, _, _) = refused(json!({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_image", "file_id": "file_1"}]}]}));
    assert_eq!(param, "input[0].content[0].file_id");
}

#[test]
fn tool_choice_forcing_a_hosted_tool_is_refused_and_allowed_tools_narrows() {
    let tools = json!([{"type": "function", "name": "a", "parameters": {"type": "object"}},
                       {"type": "function", "name": "b"}, {"type": "web_search"}]);
    let (param, message, _) = refused(json!({"model": "m", "input": "x", "tools": tools,
        "tool_choice": {"type": "web_search"}}));
    assert_eq!(param, "tool_choice");
    assert!(message.contains("web_search"), "{message}");
    let r = parse(json!({"model": "m", "input": "x", "tools": tools,
        "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]}}))
    .unwrap();
    assert_eq!(r.conversation.tool_choice, ToolChoice::Required);
    assert_eq!(r.conversation.tools.len(), 1);
    assert_eq!(r.conversation.tools[0].name, "b");
    let r = parse(json!({"model": "m", "input": "x", "tools": tools, "tool_choice": {"type": "function", "name": "a"}}))
        .unwrap();
    assert_eq!(r.conversation.tool_choice, ToolChoice::Function("a".into()));
    let (param, _, _) =
        refused(json!({"model": "m", "input": "x", "tools": tools, "tool_choice": "sometimes"}));
    assert_eq!(param, "tool_choice");
}

#[test]
fn custom_tools_are_functions_of_one_string_and_their_calls_come_back() {
    let r = parse(json!({"model": "m", "tools": [{"type": "custom", "name": "apply_patch", "description": "Patch files",
            "format": {"type": "grammar", "syntax": "lark", "definition": "start: \"*** Begin Patch\""}}],
        "input": [{"role": "user", "content": "fix it"},
                  {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch"},
                  {"type": "custom_tool_call_output", "call_id": "c1", "output": "Done!"}]}))
    .unwrap();
    assert!(r.custom_tools.contains("apply_patch"));
    let tool = &r.conversation.tools[0];
    assert!(
        tool.description.contains("*** Begin Patch"),
        "the grammar is in the description"
    );
    assert!(tool.parameters.as_deref().unwrap().contains("\"content\""));
    let call = &r.conversation.messages[1].tool_calls[0];
    assert_eq!(call.arguments, r#"{"content":"*** Begin Patch"}"#);
    assert_eq!(r.conversation.messages[2].text, "Done!");
}

#[test]
fn text_format_and_reasoning_map_to_the_conversation() {
    let r = parse(json!({"model": "m", "input": "x", "reasoning": {"effort": "high"},
        "text": {"format": {"type": "json_schema", "name": "final_output", "strict": true,
                            "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}}))
    .unwrap();
    assert_eq!(r.conversation.thinking, ThinkingWanted::On);
    match &r.conversation.response_format {
        ResponseFormat::JsonSchema {
            name,
            schema: Some(s),
        } => {
            assert_eq!(name, "final_output");
            assert!(s.contains("integer"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.echo["text"]["format"]["name"], "final_output");
    let off = parse(json!({"model": "m", "input": "x", "reasoning": {"effort": "none"}})).unwrap();
    assert_eq!(off.conversation.thinking, ThinkingWanted::Off);
    let (param, _, _) = refused(
        json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}),
    );
    assert_eq!(param, "text.format.schema");
    let (param, _, _) = refused(json!({"model": "m", "input": "x", "temperature": 3}));
    assert_eq!(param, "temperature");
    let (param, _, _) = refused(json!({"input": "x"}));
    assert_eq!(param, "model");
    let (param, _, _) = refused(
        json!({"model": "m", "input": [{"type": "message", "role": "user", "content": 5}]}),
    );
    assert_eq!(param, "input[0].content");
}

#[test]
fn images_and_files_take_the_file_path() {
    let r = parse(json!({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"},
        {"type": "input_file", "filename": "notes.txt", "file_data": "aGVsbG8="}]}]}))
    .unwrap();
    let m = &r.conversation.messages[0];
    assert_eq!(m.text, "what is this?");
    assert_eq!(
        m.attachments,
        vec![
            (
                1,
                Attachment::Image {
                    url: "data:image/png;base64,iVBORw0KGgo=".into()
                }
            ),
            (
                2,
                Attachment::File {
                    url: "data:text/plain;base64,aGVsbG8=".into(),
                    filename: Some("notes.txt".into())
                }
            ),
        ]
    );
}
