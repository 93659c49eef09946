//! Speech over the Hailuo web protocol: synthesis (section 8: set the
//! account's voice, poll `msg_tts` until the parts are ready, download
//! them) and recognition (section 9: the `phone_msg` voice call, whose first
//! `asr_chunk` event is the transcript).
//!
//! The repeat turn that synthesis reads aloud is an ordinary chat, sent by
//! the caller; this module starts once its message exists.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::header::{REFERER, USER_AGENT};
use reqwest::Method;
use serde_json::Value;

use super::client::HailuoClient;
use super::device_query::{unix_now_rounded, DeviceQuery};
use crate::upstream::browser::failure_text;
use crate::upstream::envelope::clip;
use crate::upstream::signing::{encode_uri_component, yy_voice_form};
use crate::upstream::UpstreamError;

/// "No speech was recognized": an empty transcript, not an error.
const NO_SPEECH: i64 = 1_200_041;

/// The largest mp3 part read (a part is seconds of speech: tens of kB).
const MAX_PART_BYTES: usize = 32 << 20;

impl HailuoClient {
    pub(super) async fn set_voice_and_poll(
        &self,
        token: &str,
        message_id: &str,
        voice: &str,
    ) -> Result<Vec<String>, UpstreamError> {
        let body =
            serde_json::json!({"robotID": "1", "config": {"robotVoiceID": voice}}).to_string();
        self.call(
            token,
            Method::POST,
            "/v1/api/chat/update_robot_custom_config",
            Some(&body),
        )
        .await?;
        let path = format!(
            "/v1/api/chat/msg_tts?msgID={}&timbre={}",
            encode_uri_component(message_id),
            encode_uri_component(voice)
        );
        let config = &self.config.speech;
        let deadline = tokio::time::Instant::now() + config.tts_timeout;
        loop {
            let data = self.call(token, Method::GET, &path, None).await?;
            let status = data
                .get("requestStatus")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if status >= 2 {
                let parts: Vec<String> = data
                    .get("result")
                    .and_then(Value::as_array)
                    .map(|list| {
                        list.iter()
                            .filter_map(|u| u.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                if parts.is_empty() {
                    return Err(UpstreamError::Protocol(format!(
                        "the speech finished (requestStatus {status}) without any audio"
                    )));
                }
                return Ok(parts);
            }
            if tokio::time::Instant::now() + config.tts_poll_interval > deadline {
                return Err(UpstreamError::Timeout(format!(
                    "the speech was not ready after {} s (HAILUO_TTS_TIMEOUT_MS)",
                    config.tts_timeout.as_secs_f32()
                )));
            }
            tokio::time::sleep(config.tts_poll_interval).await;
        }
    }

    /// A part from the CDN: the browser's Referer and User-Agent, never the token.
    pub(super) async fn fetch_part(&self, url: &str) -> Result<bytes::Bytes, UpstreamError> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(UpstreamError::Protocol(format!(
                "a speech part's address is not a web address: {}",
                clip(url)
            )));
        }
        let (http, _in_flight) = self.http.take();
        let response = http
            .get(url)
            .header(REFERER, format!("{}/", self.config.browser.origin))
            .header(USER_AGENT, &self.config.browser.user_agent)
            .timeout(Duration::from_secs(60))
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            return Err(UpstreamError::Http {
                status: status.as_u16(),
                message: format!(
                    "a speech part could not be downloaded: {}",
                    failure_text(response).await
                ),
            });
        }
        let mut response = response;
        let mut body = Vec::with_capacity(
            response
                .content_length()
                .unwrap_or(0)
                .min(MAX_PART_BYTES as u64) as usize,
        );
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_PART_BYTES {
                return Err(UpstreamError::Protocol(format!(
                    "a speech part is larger than {} MB",
                    MAX_PART_BYTES >> 20
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.into())
    }

    pub(super) async fn voice_call(
        &self,
        token: &str,
        mp3: bytes::Bytes,
        chat_id: &mut Option<String>,
    ) -> Result<String, UpstreamError> {
        let device = self.device(token).await?;
        let unix = unix_now_rounded();
        let path = "/v1/api/chat/phone_msg";
        let full_uri = DeviceQuery::new(
            &self.config.device,
            &device.uuid,
            Some(&device.device_id),
            &unix,
        )
        .append_to(path);
        let yy = yy_voice_form(&full_uri, "1", "0", &mp3, &unix);
        let audio = reqwest::multipart::Part::stream_with_length(mp3.clone(), mp3.len() as u64)
            .file_name("audio.mp3")
            .mime_str("audio/mp3")
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let form = reqwest::multipart::Form::new()
            .text("chatID", "0")
            .part("voiceBytes", audio)
            .text("characterID", "1")
            .text("playSpeedLevel", "1");
        let (http, _in_flight) = self.http.take();
        let response = http
            .post(self.url(&full_uri))
            .headers(self.headers(token, &yy, &self.referer(None), "text/event-stream")?)
            .multipart(form)
            .send()
            .await?;
        let response = super::client::event_stream(response, "voice call").await?;
        // The transcript comes first; the spoken reply after it is not read
        // (dropping the stream closes the connection).
        let mut events = response.bytes_stream().eventsource();
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| match e {
                eventsource_stream::EventStreamError::Transport(e) => UpstreamError::from(e),
                other => UpstreamError::Protocol(other.to_string()),
            })?;
            if event.data.trim().is_empty() {
                continue;
            }
            if let Some(text) = read_voice_event(&event.event, &event.data, chat_id)? {
                return Ok(text);
            }
        }
        Err(UpstreamError::Transport(
            "the voice call ended before its transcript".into(),
        ))
    }
}

/// One event of the voice call: the transcript when it is the `asr_chunk`
/// (empty when no speech was heard), noting the conversation on the way.
fn read_voice_event(
    name: &str,
    data: &str,
    chat_id: &mut Option<String>,
) -> Result<Option<String>, UpstreamError> {
    let value: Value = serde_json::from_str(data).map_err(|e| {
        UpstreamError::Protocol(format!("a voice event is not JSON ({e}): {}", clip(data)))
    })?;
    if let Some(id) = crate::upstream::envelope::id_of(value.pointer("/data/chatID")) {
        chat_id.get_or_insert(id);
    }
    let code = value
        .get("status_code")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let is_asr =
        name == "asr_chunk" || value.get("type").and_then(Value::as_str) == Some("asr_chunk");
    if code == NO_SPEECH {
        return Ok(Some(String::new()));
    }
    if code != 0 {
        let message = value
            .get("err_message")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Err(UpstreamError::Api {
            code,
            message: message.to_string(),
        });
    }
    if !is_asr {
        return Ok(None);
    }
    Ok(Some(
        value
            .pointer("/data/text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voice_events() {
        let mut chat = None;
        let read =
            |name: &str, data: &str, chat: &mut Option<String>| read_voice_event(name, data, chat);
        assert_eq!(
            read(
                "message",
                r#"{"status_code":0,"data":{"chatID":"242"}}"#,
                &mut chat
            ),
            Ok(None)
        );
        assert_eq!(chat.as_deref(), Some("242"));
        assert_eq!(
            read(
                "asr_chunk",
                r#"{"status_code":0,"err_message":"","data":{"text":"你好"}}"#,
                &mut chat
            ),
            Ok(Some("你好".into()))
        );
        assert_eq!(
            read(
                "asr_chunk",
                r#"{"status_code":1200041,"err_message":"未识别到语音","data":{}}"#,
                &mut chat
            ),
            Ok(Some(String::new()))
        );
        assert!(matches!(
            read(
                "asr_chunk",
                r#"{"status_code":1000003,"err_message":"服务繁忙"}"#,
                &mut chat
            ),
            Err(UpstreamError::Api {
                code: 1_000_003,
                ..
            })
        ));
        assert!(matches!(
            read("asr_chunk", "<html>", &mut chat),
            Err(UpstreamError::Protocol(_))
        ));
    }
}
