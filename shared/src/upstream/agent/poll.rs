//! Turning successive `get_chat_detail` answers into stream events.

use serde_json::Value;

use crate::upstream::cumulative::CumulativeText;
use crate::upstream::envelope::id_of;
use crate::upstream::{UpstreamError, UpstreamEvent};

const AI: i64 = 2;
const FINISHED: i64 = 2;

fn number(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[derive(Debug, Default)]
pub struct PollDecoder {
    message_id: Option<String>,
    text: CumulativeText,
    thinking: CumulativeText,
}

impl PollDecoder {
    /// Decode one poll. The answer is the last AI message after the newest
    /// user message (earlier AI messages belong to earlier turns).
    pub fn decode(&mut self, detail: &Value) -> Result<Vec<UpstreamEvent>, UpstreamError> {
        let messages = detail
            .get("messages")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                UpstreamError::Protocol("get_chat_detail answered without `messages`".into())
            })?;
        let turn_start = messages
            .iter()
            .rposition(|m| number(m.get("msg_type")) != Some(AI))
            .map_or(0, |i| i + 1);
        let answer = messages[turn_start..]
            .iter()
            .rev()
            .find(|m| number(m.get("msg_type")) == Some(AI));
        let mut events = Vec::new();
        let mut has_content = false;
        if let Some(m) = answer {
            let id = id_of(m.get("msg_id"));
            if id != self.message_id {
                // A new AI message: its cumulative counters start over.
                self.message_id = id;
                self.text.reset();
                self.thinking.reset();
            }
            let thinking = m
                .pointer("/extra_info/thinking_content")
                .and_then(Value::as_str)
                .unwrap_or("");
            if let Some(delta) = self.thinking.advance(thinking) {
                events.push(UpstreamEvent::ReasoningDelta(delta));
            }
            let content = m.get("msg_content").and_then(Value::as_str).unwrap_or("");
            if let Some(delta) = self.text.advance(content) {
                events.push(UpstreamEvent::Delta(delta));
            }
            has_content = !content.trim().is_empty();
        }
        if number(detail.pointer("/chat/chat_status")) == Some(FINISHED) && has_content {
            events.push(UpstreamEvent::End);
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detail(status: i64, messages: Value) -> Value {
        json!({"chat": {"chat_status": status}, "messages": messages, "base_resp": {"status_code": 0}})
    }

    fn ai(id: &str, content: &str, thinking: &str) -> Value {
        json!({"msg_id": id, "msg_type": 2, "msg_content": content, "extra_info": {"thinking_content": thinking}})
    }

    fn user(text: &str) -> Value {
        json!({"msg_id": "u", "msg_type": 1, "msg_content": text})
    }

    #[test]
    fn thinking_then_text_then_end() {
        let mut d = PollDecoder::default();
        assert_eq!(d.decode(&detail(1, json!([user("hi")]))).unwrap(), vec![]);
        assert_eq!(
            d.decode(&detail(1, json!([user("hi"), ai("a1", "", "let me")])))
                .unwrap(),
            vec![UpstreamEvent::ReasoningDelta("let me".into())]
        );
        assert_eq!(
            d.decode(&detail(
                1,
                json!([user("hi"), ai("a1", "Hel", "let me think")])
            ))
            .unwrap(),
            vec![
                UpstreamEvent::ReasoningDelta(" think".into()),
                UpstreamEvent::Delta("Hel".into())
            ]
        );
        assert_eq!(
            d.decode(&detail(
                2,
                json!([user("hi"), ai("a1", "Hello", "let me think")])
            ))
            .unwrap(),
            vec![UpstreamEvent::Delta("lo".into()), UpstreamEvent::End]
        );
    }

    #[test]
    fn finished_without_content_is_not_the_end() {
        let mut d = PollDecoder::default();
        assert_eq!(
            d.decode(&detail(2, json!([user("hi"), ai("a1", "", "thinking")])))
                .unwrap(),
            vec![UpstreamEvent::ReasoningDelta("thinking".into())]
        );
    }

    #[test]
    fn earlier_turns_are_not_the_answer() {
        let mut d = PollDecoder::default();
        let msgs = json!([user("one"), ai("a1", "first answer", ""), user("two")]);
        assert_eq!(
            d.decode(&detail(2, msgs)).unwrap(),
            vec![],
            "the old answer is not replayed"
        );
        let msgs = json!([
            user("one"),
            ai("a1", "first answer", ""),
            user("two"),
            ai("a2", "second", "")
        ]);
        assert_eq!(
            d.decode(&detail(2, msgs)).unwrap(),
            vec![UpstreamEvent::Delta("second".into()), UpstreamEvent::End]
        );
    }

    #[test]
    fn a_new_message_id_restarts_the_counters() {
        let mut d = PollDecoder::default();
        d.decode(&detail(1, json!([user("x"), ai("a1", "draft", "")])))
            .unwrap();
        assert_eq!(
            d.decode(&detail(1, json!([user("x"), ai("a2", "final", "")])))
                .unwrap(),
            vec![UpstreamEvent::Delta("final".into())]
        );
    }

    #[test]
    fn string_numbers_and_missing_messages() {
        let mut d = PollDecoder::default();
        let v = json!({"chat": {"chat_status": "2"}, "messages": [{"msg_id": 9, "msg_type": "2", "msg_content": "ok"}]});
        assert_eq!(
            d.decode(&v).unwrap(),
            vec![UpstreamEvent::Delta("ok".into()), UpstreamEvent::End]
        );
        assert!(matches!(
            PollDecoder::default().decode(&json!({})),
            Err(UpstreamError::Protocol(_))
        ));
    }
}
