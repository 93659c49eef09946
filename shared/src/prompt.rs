//! Flattening OpenAI messages into the one text per turn the upstream takes
//! (protocol section 6), with the tool contract's instruction last.

use crate::conversation::{Message, Role};
use crate::structured::{scan, Plan};

/// Flatten `messages` for the upstream.
///
/// - A single message, or a continued upstream conversation: the plain text of
///   the messages, one per line. When continuing, the upstream already holds
///   the history, so only the messages after the last assistant turn are sent.
/// - Several messages: `role:text` lines joined by `\n`, ending with `assistant:`,
///   markdown image links stripped.
/// - With tools, a JSON answer format or tool history (`plan`): role lines
///   even for one message, earlier calls as tags with this request's nonce,
///   tool results naming their tool and call, and the instruction as the last
///   `system:` line before `assistant:` (continuing: after the new messages).
pub fn flatten(messages: &[Message], continuing: bool, plan: &Plan, with_files: bool) -> String {
    let instruction = plan.instruction();
    // One buffer, each message's text copied into it once: a message can be
    // megabytes (a 6 MB tool call's arguments), and each copy counts.
    let mut out = String::new();
    if continuing {
        let start = messages
            .iter()
            .rposition(|m| m.role == Role::Assistant)
            .map_or(0, |i| i + 1);
        let new = if start < messages.len() {
            &messages[start..]
        } else {
            messages
        };
        for (i, m) in new.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            push_text(&mut out, m, messages, plan);
        }
        if let Some(instruction) = instruction {
            out.push('\n');
            out.push_str(&instruction);
        }
        return out;
    }
    if messages.len() == 1 && !plan.has_instruction() && !with_files {
        return messages[0].text.clone();
    }
    let last = messages.len() - 1;
    for (i, m) in messages.iter().enumerate() {
        if with_files && i == last {
            // Protocol section 6: point the model at the newest files.
            out.push_str(FILES_NOTE);
            out.push('\n');
        }
        let role = match m.role {
            Role::Developer => "system",
            other => other.as_str(),
        };
        out.push_str(role);
        out.push(':');
        if m.tool_calls.is_empty() && m.tool_call_id.is_none() {
            out.push_str(&strip_image_links(&m.text));
        } else {
            push_text(&mut out, m, messages, plan);
        }
        out.push('\n');
    }
    if let Some(instruction) = instruction {
        out.push_str("system:");
        out.push_str(&instruction);
        out.push('\n');
    }
    out.push_str("assistant:");
    out
}

/// The line before a message that brings files.
const FILES_NOTE: &str =
    "system:The next message comes with files attached to it: read them, and answer that message.";

/// A message's text, with its tool calls or its tool result in the
/// contract's form, appended to `out`.
fn push_text(out: &mut String, m: &Message, all: &[Message], plan: &Plan) {
    if let Some(id) = &m.tool_call_id {
        // The tool's name is on the call this result answers.
        let name = all
            .iter()
            .flat_map(|m| &m.tool_calls)
            .find(|c| c.id == *id)
            .map_or("", |c| c.name.as_str());
        out.push_str(&format!(
            "<tool_result call_id={} name={}>",
            json_string(id),
            json_string(name)
        ));
        if m.tool_error {
            out.push_str("Error: ");
        }
        out.push_str(&m.text);
        out.push_str("</tool_result>");
        return;
    }
    out.push_str(&m.text);
    for call in &m.tool_calls {
        out.push_str(&scan::open_tag(plan.nonce()));
        out.push_str(&format!(
            "{{\"name\": {}, \"arguments\": ",
            json_string(&call.name)
        ));
        // Valid JSON goes in as written (no tree is built of it); anything
        // else as a JSON string.
        if serde_json::from_str::<serde::de::IgnoredAny>(&call.arguments).is_ok() {
            out.push_str(call.arguments.trim());
        } else {
            out.push_str(&json_string(&call.arguments));
        }
        out.push_str("}</tool_call>");
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Remove markdown image links `![alt](url)` (borrowed when there are none).
pub fn strip_image_links(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("![") {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("![") {
        let after = &rest[start + 2..];
        let Some(close) = after.find("](") else { break };
        let Some(end) = after[close + 2..].find(')') else {
            break;
        };
        if after[..close].contains('\n') {
            out.push_str(&rest[..start + 2]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..start]);
        rest = &after[close + 2 + end + 1..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::chat::ChatRequest;

    fn m(role: Role, text: &str) -> Message {
        Message {
            role,
            text: text.into(),
            ..Message::default()
        }
    }

    fn plain() -> Plan {
        Plan::new(
            &mut ChatRequest::parse(br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#)
                .unwrap()
                .conversation,
        )
        .unwrap()
    }

    fn flat(messages: &[Message], continuing: bool) -> String {
        flatten(messages, continuing, &plain(), false)
    }

    #[test]
    fn single_message_is_sent_as_is() {
        assert_eq!(flat(&[m(Role::User, "你好")], false), "你好");
    }

    #[test]
    fn several_messages_become_role_lines_ending_with_assistant() {
        // The shape of the signed vector in yy-vectors.json.
        let got = flat(
            &[
                m(Role::System, "你是谁"),
                m(Role::User, "Hello, world! (test) 'quote' ~*\r"),
            ],
            false,
        );
        assert_eq!(
            got,
            "system:你是谁\nuser:Hello, world! (test) 'quote' ~*\r\nassistant:"
        );
        let got = flat(
            &[
                m(Role::Developer, "be brief"),
                m(Role::User, "hi"),
                m(Role::Assistant, "hello"),
                m(Role::User, "more"),
            ],
            false,
        );
        assert_eq!(
            got,
            "system:be brief\nuser:hi\nassistant:hello\nuser:more\nassistant:"
        );
    }

    #[test]
    fn continuing_sends_only_the_new_turn_as_plain_text() {
        let msgs = [
            m(Role::User, "first"),
            m(Role::Assistant, "answer"),
            m(Role::User, "second"),
            m(Role::User, "third"),
        ];
        assert_eq!(flat(&msgs, true), "second\nthird");
        assert_eq!(flat(&[m(Role::User, "only")], true), "only");
    }

    #[test]
    fn tool_history_and_the_instruction() {
        let body = serde_json::json!({"model": "m", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": "sunny"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]});
        let mut request = ChatRequest::parse(body.to_string().as_bytes())
            .unwrap()
            .conversation;
        let plan = Plan::new(&mut request).unwrap();
        let got = flatten(&request.messages, false, &plan, false);
        let n = plan.nonce();
        let expected_start = format!(
            "user:weather?\nassistant:<tool_call id=\"{n}\">{{\"name\": \"get_weather\", \"arguments\": {{\"city\":\"Paris\"}}}}</tool_call>\n\
             tool:<tool_result call_id=\"call_a\" name=\"get_weather\">sunny</tool_result>\nsystem:You can call these tools"
        );
        assert!(got.starts_with(&expected_start), "{got}");
        assert!(got.ends_with("without any tag.\nassistant:"), "{got}");
        // One message with tools is written as role lines too.
        let mut one = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}"#,
        )
        .unwrap()
        .conversation;
        let plan_one = Plan::new(&mut one).unwrap();
        let got = flatten(&one.messages, false, &plan_one, false);
        assert!(
            got.starts_with("user:hi\nsystem:Answer with one JSON object only"),
            "{got}"
        );
        // Continuing: the new messages, then the instruction.
        let got = flatten(&request.messages, true, &plan, false);
        assert!(got.starts_with("<tool_result call_id=\"call_a\""), "{got}");
        // Files: a note before the message that brings them.
        let got = flatten(&[m(Role::User, "what is in it?")], false, &plain(), true);
        assert_eq!(
            got,
            format!("{FILES_NOTE}\nuser:what is in it?\nassistant:")
        );
        let got = flatten(&request.messages, true, &plan, false);
        assert!(got.starts_with("<tool_result call_id=\"call_a\""), "{got}");
        assert!(got.contains(&format!("<tool_call id=\"{n}\">")), "{got}");
    }

    #[test]
    fn image_links_are_stripped() {
        assert_eq!(
            strip_image_links("see ![cat](https://x/c.png) here"),
            "see  here"
        );
        assert_eq!(strip_image_links("a ![x](u) b ![y](v)"), "a  b ");
        assert_eq!(strip_image_links("not ![an image"), "not ![an image");
        assert_eq!(strip_image_links("[link](u)"), "[link](u)");
    }

    #[test]
    fn empty_and_null_content() {
        assert_eq!(flat(&[m(Role::User, "")], false), "");
        assert_eq!(
            flat(&[m(Role::Assistant, ""), m(Role::User, "x")], false),
            "assistant:\nuser:x\nassistant:"
        );
    }
}
