//! Flattening OpenAI messages into the one text per turn the upstream takes
//! (protocol section 6).

use crate::openai::chat::{Message, Role};

/// Flatten `messages` for the upstream.
///
/// - A single message, or a continued upstream conversation: the plain text of
///   the messages, one per line. When continuing, the upstream already holds
///   the history, so only the messages after the last assistant turn are sent.
/// - Several messages: `role:text` lines joined by `\n`, ending with `assistant:`,
///   markdown image links stripped.
pub fn flatten(messages: &[Message], continuing: bool) -> String {
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
        return new
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
    }
    if messages.len() == 1 {
        return messages[0].text.clone();
    }
    let mut lines = Vec::with_capacity(messages.len() + 1);
    for m in messages {
        let role = match m.role {
            Role::Developer => "system",
            other => other.as_str(),
        };
        lines.push(format!("{role}:{}", strip_image_links(&m.text)));
    }
    lines.push("assistant:".to_string());
    lines.join("\n")
}

/// Remove markdown image links `![alt](url)`.
pub fn strip_image_links(text: &str) -> String {
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: Role, text: &str) -> Message {
        Message {
            role,
            text: text.into(),
            attachments: vec![],
        }
    }

    #[test]
    fn single_message_is_sent_as_is() {
        assert_eq!(flatten(&[m(Role::User, "你好")], false), "你好");
    }

    #[test]
    fn several_messages_become_role_lines_ending_with_assistant() {
        // The shape of the signed vector in yy-vectors.json.
        let got = flatten(
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
        let got = flatten(
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
        assert_eq!(flatten(&msgs, true), "second\nthird");
        assert_eq!(flatten(&[m(Role::User, "only")], true), "only");
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
        assert_eq!(flatten(&[m(Role::User, "")], false), "");
        assert_eq!(
            flatten(&[m(Role::Assistant, ""), m(Role::User, "x")], false),
            "assistant:\nuser:x\nassistant:"
        );
    }
}
