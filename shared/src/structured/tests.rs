use super::*;
use crate::openai::chat::ChatRequest;

fn request(extra: Value) -> Conversation {
    let mut body =
        json!({"model": "m", "messages": [{"role": "user", "content": "weather in Paris?"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    ChatRequest::parse(body.to_string().as_bytes())
        .unwrap()
        .conversation
}

fn weather() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}])
}

fn plan(extra: Value) -> std::sync::Arc<Plan> {
    std::sync::Arc::new(Plan::new(&mut request(extra)).unwrap())
}

fn call(plan: &Plan, name: &str, arguments: Value) -> String {
    scan::tag(
        plan.nonce(),
        &json!({"name": name, "arguments": arguments}).to_string(),
    )
}

/// Feed `answer` in pieces of `size` bytes (at character boundaries); what was
/// shown, and how the turn ended.
fn read(reader: &mut Reader, answer: &str, size: usize) -> (String, Ending) {
    let mut shown = String::new();
    let mut rest = answer;
    while !rest.is_empty() {
        let mut cut = size.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        shown.push_str(&reader.text(&rest[..cut]));
        rest = &rest[cut..];
    }
    (shown, reader.end())
}

fn done(ending: Ending) -> Outcome {
    match ending {
        Ending::Done(o) => o,
        other => panic!("expected an outcome, got {other:?}"),
    }
}

fn correction(ending: Ending) -> String {
    match ending {
        Ending::Correct(prompt) => prompt,
        other => panic!("expected a correction, got {other:?}"),
    }
}

#[test]
fn plain_requests_pass_through() {
    let p = plan(json!({}));
    assert!(p.is_plain() && p.instruction().is_none());
    let mut r = p.reader();
    let (shown, end) = read(&mut r, "a <b> c <tool_call id=\"x\">", 3);
    assert_eq!(shown, "a <b> c <tool_call id=\"x\">");
    assert_eq!(done(end).finish, Finish::Stop);
}

#[test]
fn the_instruction_shows_the_tag_with_this_nonce_and_the_tools() {
    let p = plan(json!({"tools": weather()}));
    let text = p.instruction().unwrap();
    assert!(
        text.contains(&format!("<tool_call id=\"{}\">", p.nonce())),
        "{text}"
    );
    assert!(
        text.contains("\"get_weather\"") && text.contains("\"required\":[\"city\"]"),
        "{text}"
    );
    assert!(text.contains("answer normally"), "{text}");
    assert_ne!(
        p.nonce(),
        plan(json!({"tools": weather()})).nonce(),
        "fresh per request"
    );
    assert!(p.nonce().len() >= 8);

    let named = plan(
        json!({"tools": weather(), "tool_choice": {"type": "function", "function": {"name": "get_time"}}}),
    );
    let text = named.instruction().unwrap();
    assert!(
        text.contains("must call the tool \"get_time\"") && !text.contains("get_weather"),
        "{text}"
    );
    let required = plan(json!({"tools": weather(), "tool_choice": "required"}))
        .instruction()
        .unwrap();
    assert!(required.contains("must call a tool"), "{required}");
    let single = plan(json!({"tools": weather(), "parallel_tool_calls": false}))
        .instruction()
        .unwrap();
    assert!(single.contains("at most one call"), "{single}");
    let none = plan(json!({"tools": weather(), "tool_choice": "none"}));
    assert!(none.is_plain() && none.instruction().is_none());
}

#[test]
fn a_valid_call_after_text_at_any_split() {
    for size in [1, 2, 3, 5, 7, 13, 1000] {
        let p = plan(json!({"tools": weather()}));
        let answer = format!(
            "Let me check. {} and then some text",
            call(&p, "get_weather", json!({"city": "巴黎"}))
        );
        let mut r = p.reader();
        let (shown, end) = read(&mut r, &answer, size);
        assert_eq!(shown, "Let me check. ", "pieces of {size}");
        let o = done(end);
        assert_eq!(o.finish, Finish::ToolCalls);
        assert_eq!(o.text, "");
        assert_eq!(o.calls.len(), 1);
        assert_eq!(o.calls[0].name, "get_weather");
        assert_eq!(
            serde_json::from_str::<Value>(&o.calls[0].arguments).unwrap(),
            json!({"city": "巴黎"})
        );
        assert!(o.calls[0].id.starts_with("call_") && o.calls[0].id.len() == 29);
    }
}

#[test]
fn several_calls_or_only_the_first() {
    let p = plan(json!({"tools": weather()}));
    let answer = format!(
        "{}{}",
        call(&p, "get_weather", json!({"city": "Paris"})),
        call(&p, "get_time", json!({}))
    );
    let o = done(read(&mut p.reader(), &answer, 4).1);
    let names: Vec<_> = o.calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["get_weather", "get_time"]);
    assert_ne!(o.calls[0].id, o.calls[1].id);

    let single = plan(json!({"tools": weather(), "parallel_tool_calls": false}));
    let answer = format!(
        "{}{}",
        call(&single, "get_weather", json!({"city": "Paris"})),
        call(&single, "get_time", json!({}))
    );
    let o = done(read(&mut single.reader(), &answer, 4).1);
    assert_eq!(o.calls.len(), 1);
}

#[test]
fn a_foreign_nonce_is_text() {
    let p = plan(json!({"tools": weather()}));
    let answer = r#"It said <tool_call id="0123456789ab">{"name": "get_time", "arguments": {}}</tool_call>."#;
    let mut r = p.reader();
    let (shown, end) = read(&mut r, answer, 5);
    let o = done(end);
    assert_eq!(o.finish, Finish::Stop);
    assert_eq!(format!("{shown}{}", o.text), answer);
}

#[test]
fn an_invalid_call_is_corrected_once() {
    let p = plan(json!({"tools": weather()}));
    let mut r = p.reader();
    let bad = format!(
        "Sure. {}",
        call(&p, "get_weather", json!({"town": "Paris"}))
    );
    let (shown, end) = read(&mut r, &bad, 6);
    assert_eq!(shown, "Sure. ");
    let prompt = correction(end);
    assert!(
        prompt.contains("\"city\"") && prompt.contains("get_weather"),
        "{prompt}"
    );
    assert!(prompt.contains(&scan::open_tag(p.nonce())), "{prompt}");
    // The correction's text is never shown; its call is the answer.
    let good = format!(
        "Fixed: {}",
        call(&p, "get_weather", json!({"city": "Paris"}))
    );
    let (shown, end) = read(&mut r, &good, 6);
    assert_eq!(shown, "");
    let o = done(end);
    assert_eq!(o.finish, Finish::ToolCalls);
    assert_eq!(o.calls[0].arguments, r#"{"city":"Paris"}"#);
}

#[test]
fn an_invalid_call_twice_gives_the_first_answer_as_text() {
    let p = plan(json!({"tools": weather()}));
    let problems = [
        call(&p, "launch_rockets", json!({})),
        scan::tag(p.nonce(), "{not json"),
        scan::tag(p.nonce(), r#"{"name": "get_weather", "arguments": [1]}"#),
        format!("{}{{\"name\": \"get_time\"", scan::open_tag(p.nonce())),
    ];
    for bad in &problems {
        let mut r = p.reader();
        let first = format!("Hmm. {bad} after");
        let (shown, end) = read(&mut r, &first, 3);
        let prompt = correction(end);
        assert!(
            prompt.starts_with("Your last answer could not be used"),
            "{prompt}"
        );
        let (again, end) = read(&mut r, bad, 3);
        assert_eq!(again, "");
        let o = done(end);
        assert_eq!(o.finish, Finish::Stop);
        assert!(o.calls.is_empty());
        assert_eq!(
            format!("{shown}{}", o.text),
            first,
            "the first answer, verbatim"
        );
    }
    let unoffered = correction(read(&mut p.reader(), &problems[0], 100).1);
    assert!(
        unoffered.contains("no tool named \"launch_rockets\""),
        "{unoffered}"
    );
}

#[test]
fn the_named_tool_is_the_only_one_offered() {
    let p = plan(
        json!({"tools": weather(), "tool_choice": {"type": "function", "function": {"name": "get_time"}}}),
    );
    let answer = call(&p, "get_weather", json!({"city": "Paris"}));
    assert!(correction(read(&mut p.reader(), &answer, 100).1).contains("no tool named"));
}

#[test]
fn required_without_a_call_is_corrected_then_given_as_text() {
    let p = plan(json!({"tools": weather(), "tool_choice": "required"}));
    let mut r = p.reader();
    let (shown, end) = read(&mut r, "It is sunny.", 4);
    assert_eq!(shown, "It is sunny.");
    assert!(correction(end).contains("must call a tool"));
    let o = done(read(&mut r, "Still sunny.", 4).1);
    assert_eq!((o.finish, o.text.as_str()), (Finish::Stop, ""));
    // ... or the correction calls.
    let mut r = p.reader();
    correction(read(&mut r, "It is sunny.", 4).1);
    let o = done(read(&mut r, &call(&p, "get_time", json!({})), 4).1);
    assert_eq!(o.finish, Finish::ToolCalls);
}

#[test]
fn json_answers_are_taken_out_validated_and_corrected() {
    let schema = json!({"type": "json_schema", "json_schema": {"name": "city", "schema": {
        "type": "object", "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["name", "population"]}}});
    let p = plan(json!({"response_format": schema}));
    let instruction = p.instruction().unwrap();
    assert!(
        instruction.contains("JSON only") && instruction.contains("\"population\""),
        "{instruction}"
    );
    let mut r = p.reader();
    let (shown, end) = read(
        &mut r,
        "Here:\n```json\n{\"name\": \"Paris\", \"population\": 2100000}\n```",
        5,
    );
    assert_eq!(shown, "", "nothing shown before it is checked");
    let o = done(end);
    assert_eq!(o.text, "{\"name\": \"Paris\", \"population\": 2100000}");

    let mut r = p.reader();
    let prompt = correction(read(&mut r, "{\"name\": \"Paris\"}", 5).1);
    assert!(prompt.contains("population"), "{prompt}");
    let o = done(read(&mut r, "{\"name\": \"Paris\", \"population\": 1}", 5).1);
    assert_eq!(o.text, "{\"name\": \"Paris\", \"population\": 1}");

    let object = plan(json!({"response_format": {"type": "json_object"}}));
    let mut r = object.reader();
    correction(read(&mut r, "[1, 2]", 5).1);
    let o = done(read(&mut r, "no", 5).1);
    assert_eq!(o.text, "[1, 2]", "the first answer as text");
    let text = plan(json!({"response_format": {"type": "text"}}));
    assert!(text.is_plain());
}

#[test]
fn tools_and_json_together() {
    let p = plan(json!({"tools": weather(), "response_format": {"type": "json_object"}}));
    let o = done(read(&mut p.reader(), &call(&p, "get_time", json!({})), 3).1);
    assert_eq!(o.finish, Finish::ToolCalls);
    let mut r = p.reader();
    let (shown, end) = read(&mut r, "```json\n{\"a\": 1}\n```", 3);
    assert_eq!(shown, "");
    assert_eq!(done(end).text, "{\"a\": 1}");
}

#[test]
fn invalid_schemas_are_refused_with_their_field() {
    let bad = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]);
    let e = Plan::new(&mut request(json!({"tools": bad})))
        .err()
        .unwrap();
    assert_eq!(e.status(), 400);
    assert_eq!(e.body()["error"]["param"], "tools[0].function.parameters");
    let e = Plan::new(&mut request(
        json!({"response_format": {"type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "nope"}}}}),
    ))
    .err()
    .unwrap();
    assert_eq!(
        e.body()["error"]["param"],
        "response_format.json_schema.schema"
    );
}

#[test]
fn tool_history_without_tools_says_not_to_call() {
    let p = Plan::new(
        &mut ChatRequest::parse(
            json!({"model": "m", "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "42"}]})
            .to_string()
            .as_bytes(),
        )
        .unwrap()
        .conversation,
    )
    .unwrap();
    assert!(p.is_plain() && p.has_instruction());
    assert!(p.instruction().unwrap().contains("Do not call"));
}
