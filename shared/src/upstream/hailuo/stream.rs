//! Decoding the chat stream (protocol section 6) into upstream events.

use serde::Deserialize;

use crate::upstream::cumulative::CumulativeText;
use crate::upstream::{Citation, UpstreamError, UpstreamEvent};

#[derive(Debug, Deserialize)]
struct StreamEvent {
    #[serde(rename = "type", default)]
    kind: i64,
    #[serde(rename = "statusInfo")]
    status_info: Option<StatusInfo>,
    data: Option<EventData>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct StatusInfo {
    #[serde(default)]
    pub code: i64,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Deserialize)]
struct EventData {
    #[serde(rename = "messageResult")]
    message_result: Option<MessageResult>,
}

#[derive(Debug, Deserialize)]
struct MessageResult {
    #[serde(rename = "chatID", default, deserialize_with = "id_string")]
    chat_id: Option<String>,
    #[serde(rename = "msgID", default, deserialize_with = "id_string")]
    msg_id: Option<String>,
    #[serde(rename = "isEnd")]
    is_end: Option<i64>,
    content: Option<String>,
    extra: Option<serde_json::Value>,
}

/// Ids arrive as strings; accept numbers too rather than fail a whole answer.
fn id_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// State carried across the events of one answer.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    text: CumulativeText,
    chat_id: Option<String>,
    citations: Vec<Citation>,
    ended: bool,
}

impl crate::upstream::sse::FrameDecoder for StreamDecoder {
    fn decode(&mut self, data: &str) -> Result<Vec<UpstreamEvent>, UpstreamError> {
        StreamDecoder::decode(self, data)
    }

    fn is_ended(&self) -> bool {
        self.ended
    }

    /// Closed with neither isEnd == 0 nor type 8: the answer was cut off
    /// (protocol §6), and must not pass for a whole one.
    fn truncated(&self) -> UpstreamError {
        UpstreamError::Transport(
            "the upstream closed the answer before its end (no isEnd == 0 event, no end marker)"
                .into(),
        )
    }
}

impl StreamDecoder {
    /// Decode one SSE `data` payload into zero or more events.
    pub fn decode(&mut self, data: &str) -> Result<Vec<UpstreamEvent>, UpstreamError> {
        if self.ended {
            return Ok(vec![]);
        }
        let event: StreamEvent = serde_json::from_str(data).map_err(|e| {
            UpstreamError::Protocol(format!("chat stream event is not the expected JSON ({e})"))
        })?;
        match event.kind {
            // Heartbeats and status notices: never fatal, no text.
            3 => return Ok(vec![]),
            // End-of-stream marker: no statusInfo, no text.
            8 => {
                self.ended = true;
                return Ok(vec![UpstreamEvent::End]);
            }
            _ => {}
        }
        if let Some(status) = &event.status_info {
            if status.code != 0 {
                return Err(UpstreamError::Api {
                    code: status.code,
                    message: status.message.clone(),
                });
            }
        }
        let mut out = Vec::new();
        let Some(result) = event.data.and_then(|d| d.message_result) else {
            return Ok(out);
        };
        if self.chat_id.is_none() {
            if let Some(chat_id) = result.chat_id.clone() {
                self.chat_id = Some(chat_id.clone());
                out.push(UpstreamEvent::Conversation {
                    chat_id,
                    message_id: result.msg_id.clone(),
                });
            }
        }
        if let Some(links) = result.extra.as_ref().and_then(link_details) {
            if links != self.citations {
                self.citations = links.clone();
                out.push(UpstreamEvent::Citations(links));
            }
        }
        if let Some(content) = &result.content {
            if let Some(delta) = self.text.advance(content) {
                out.push(UpstreamEvent::Delta(delta));
            }
        }
        if result.is_end == Some(0) {
            self.ended = true;
            out.push(UpstreamEvent::End);
        }
        Ok(out)
    }
}

/// `extra.netSearchStatus.linkDetail`: items with `url` and `detail` or `title`.
fn link_details(extra: &serde_json::Value) -> Option<Vec<Citation>> {
    let items = extra
        .get("netSearchStatus")?
        .get("linkDetail")?
        .as_array()?;
    let links: Vec<Citation> = items
        .iter()
        .filter_map(|item| {
            let url = item.get("url")?.as_str()?.trim();
            if url.is_empty() {
                return None;
            }
            let title = ["title", "detail"]
                .iter()
                .find_map(|k| {
                    item.get(*k)
                        .and_then(|v| v.as_str())
                        .filter(|s| !s.trim().is_empty())
                })
                .unwrap_or(url);
            Some(Citation {
                title: title.trim().to_string(),
                url: url.to_string(),
            })
        })
        .collect();
    (!links.is_empty()).then_some(links)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::sse::FrameDecoder;
    use serde_json::json;

    fn ev(kind: i64, content: &str, is_end: i64) -> String {
        json!({"type": kind, "statusInfo": {"code": 0, "message": "成功"},
               "data": {"messageResult": {"chatID": "242830597915504644", "msgID": "242830597915504645",
                                          "isEnd": is_end, "content": content}}})
        .to_string()
    }

    fn deltas(events: &[UpstreamEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                UpstreamEvent::Delta(d) => Some(d.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn cumulative_events_become_deltas_and_is_end_zero_finishes() {
        let mut d = StreamDecoder::default();
        let a = d.decode(&ev(2, "我是", 1)).unwrap();
        assert_eq!(
            a[0],
            UpstreamEvent::Conversation {
                chat_id: "242830597915504644".into(),
                message_id: Some("242830597915504645".into())
            }
        );
        assert_eq!(deltas(&a), "我是");
        let b = d.decode(&ev(2, "我是海螺", 1)).unwrap();
        assert_eq!(b, vec![UpstreamEvent::Delta("海螺".into())]);
        let c = d.decode(&ev(2, "我是海螺AI", 0)).unwrap();
        assert_eq!(
            c,
            vec![UpstreamEvent::Delta("AI".into()), UpstreamEvent::End]
        );
        assert!(d.is_ended());
        // A type 8 after the final event is ignored.
        assert!(d.decode(r#"{"type":8}"#).unwrap().is_empty());
    }

    #[test]
    fn replacement_character_is_held_back() {
        let mut d = StreamDecoder::default();
        let bytes = "海螺".as_bytes();
        let partial = String::from_utf8_lossy(&bytes[..4]).to_string();
        assert_eq!(deltas(&d.decode(&ev(2, &partial, 1)).unwrap()), "海");
        assert_eq!(deltas(&d.decode(&ev(2, "海螺", 1)).unwrap()), "螺");
    }

    #[test]
    fn heartbeat_with_error_code_is_not_fatal() {
        let mut d = StreamDecoder::default();
        let hb =
            json!({"type": 3, "statusInfo": {"code": 1200012, "message": "排队中"}}).to_string();
        assert!(d.decode(&hb).unwrap().is_empty());
        assert!(!d.is_ended());
    }

    #[test]
    fn type_8_ends_without_status() {
        let mut d = StreamDecoder::default();
        d.decode(&ev(2, "hi", 1)).unwrap();
        assert_eq!(d.decode(r#"{"type":8}"#).unwrap(), vec![UpstreamEvent::End]);
        assert!(d.is_ended());
    }

    #[test]
    fn error_status_is_an_api_error() {
        let mut d = StreamDecoder::default();
        let e = d
            .decode(
                &json!({"type": 2, "statusInfo": {"code": 1000003, "message": "服务繁忙"}})
                    .to_string(),
            )
            .unwrap_err();
        assert_eq!(
            e,
            UpstreamError::Api {
                code: 1000003,
                message: "服务繁忙".into()
            }
        );
    }

    #[test]
    fn malformed_json_is_a_protocol_error() {
        let mut d = StreamDecoder::default();
        assert!(matches!(
            d.decode("{not json").unwrap_err(),
            UpstreamError::Protocol(_)
        ));
    }

    #[test]
    fn link_details_become_citations_once() {
        let mut d = StreamDecoder::default();
        let e = json!({"type": 2, "statusInfo": {"code": 0, "message": ""},
            "data": {"messageResult": {"chatID": "1", "msgID": "2", "isEnd": 1, "content": "x",
                "extra": {"netSearchStatus": {"linkDetail": [
                    {"url": "https://a.example/1", "detail": "A page"},
                    {"url": "https://b.example/2", "title": "B page"},
                    {"url": "", "detail": "dropped"}]}}}}})
        .to_string();
        let out = d.decode(&e).unwrap();
        let cites: Vec<_> = out
            .iter()
            .filter(|e| matches!(e, UpstreamEvent::Citations(_)))
            .collect();
        assert_eq!(
            cites,
            vec![&UpstreamEvent::Citations(vec![
                Citation {
                    title: "A page".into(),
                    url: "https://a.example/1".into()
                },
                Citation {
                    title: "B page".into(),
                    url: "https://b.example/2".into()
                },
            ])]
        );
        let again = d.decode(&e).unwrap();
        assert!(again
            .iter()
            .all(|e| !matches!(e, UpstreamEvent::Citations(_))));
    }

    #[test]
    fn numeric_ids_are_accepted() {
        let mut d = StreamDecoder::default();
        let e = json!({"type": 2, "statusInfo": {"code": 0}, "data": {"messageResult": {"chatID": 5, "isEnd": 1, "content": ""}}});
        let out = d.decode(&e.to_string()).unwrap();
        assert_eq!(
            out,
            vec![UpstreamEvent::Conversation {
                chat_id: "5".into(),
                message_id: None
            }]
        );
    }
}
