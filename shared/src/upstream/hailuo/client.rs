//! The HTTP client for the Hailuo web backend.

use std::sync::Arc;

use async_trait::async_trait;
use eventsource_stream::Eventsource;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

use super::config::HailuoConfig;
use super::device_query::{unix_now_rounded, DeviceQuery};
use super::stream::StreamDecoder;
use crate::upstream::browser::{
    self, failure_text, put, read_capped, registered_device, send_json, MAX_ENVELOPE_BYTES,
};
use crate::upstream::device::{DeviceCache, DeviceIdentity};
use crate::upstream::envelope::{clip, open_envelope};
use crate::upstream::signing::{yy_chat_form, yy_json};
use crate::upstream::{
    text_turn, user_info_verdict, Capabilities, ChatTurn, EventStream, Turn, Upstream,
    UpstreamError, Voice,
};

const SENTRY_RELEASE: &str = "CI7N-1MjJnx5pru-bzzhR";
const SENTRY_PUBLIC_KEY: &str = "6cf106db5c7b7262eae7cc6b411c776a";

pub struct HailuoClient {
    pub(super) http: browser::Connections,
    pub(super) config: Arc<HailuoConfig>,
    devices: DeviceCache,
}

impl HailuoClient {
    pub fn new(config: HailuoConfig) -> Result<Self, crate::upstream::browser::BoxError> {
        Ok(Self {
            http: browser::Connections::new(config.streams_per_connection)?,
            config: Arc::new(config),
            devices: DeviceCache::default(),
        })
    }

    pub(super) fn headers(
        &self,
        token: &str,
        yy: &str,
        referer: &str,
        accept: &'static str,
    ) -> Result<HeaderMap, UpstreamError> {
        let mut h = browser::headers(token, &self.config.browser.at(referer), accept)?;
        let trace_id = uuid::Uuid::new_v4().simple().to_string();
        let span_id = &uuid::Uuid::new_v4().simple().to_string()[16..];
        put(&mut h, "yy", yy);
        put(
            &mut h,
            "baggage",
            &format!(
                "sentry-environment=production,sentry-release={SENTRY_RELEASE},sentry-public_key={SENTRY_PUBLIC_KEY},sentry-trace_id={trace_id},sentry-sample_rate=1,sentry-sampled=true"
            ),
        );
        put(&mut h, "sentry-trace", &format!("{trace_id}-{span_id}-1"));
        Ok(h)
    }

    pub(super) fn referer(&self, chat_id: Option<&str>) -> String {
        match chat_id {
            Some(id) => format!("{}/?chat={id}", self.config.browser.origin),
            None => format!("{}/", self.config.browser.origin),
        }
    }

    pub(super) async fn device(&self, token: &str) -> Result<DeviceIdentity, UpstreamError> {
        self.devices
            .get_or_register(token, || self.register(token))
            .await
    }

    async fn register(&self, token: &str) -> Result<DeviceIdentity, UpstreamError> {
        let uuid = uuid::Uuid::new_v4().simple().to_string();
        let body = serde_json::json!({ "uuid": uuid }).to_string();
        let path = "/v1/api/user/device/register";
        let answer = self
            .send_json(token, Method::POST, path, Some(&body), &uuid, None)
            .await;
        let (device_id, _) = registered_device(answer, token)?;
        Ok(DeviceIdentity { uuid, device_id })
    }

    /// A signed JSON call with the token's device; returns the envelope's `data`.
    pub(super) async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> Result<Value, UpstreamError> {
        let device = self.device(token).await?;
        self.send_json(
            token,
            method,
            path,
            body,
            &device.uuid,
            Some(&device.device_id),
        )
        .await
    }

    async fn send_json(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&str>,
        uuid: &str,
        device_id: Option<&str>,
    ) -> Result<Value, UpstreamError> {
        let unix = unix_now_rounded();
        let full_uri =
            DeviceQuery::new(&self.config.device, uuid, device_id, &unix).append_to(path);
        let yy = yy_json(&full_uri, body.unwrap_or("{}"), &unix);
        let headers = self.headers(token, &yy, &self.referer(None), "*/*")?;
        let (http, _in_flight) = self.http.take();
        let request = http.request(method, self.url(&full_uri)).headers(headers);
        send_json(request, self.config.json_timeout, body).await
    }

    /// The turn's files uploaded (concurrently) and the chat's `form`
    /// field: one entry per file, then the text (section 6); `None` without
    /// files. One failed upload fails the turn before any chat starts.
    async fn upload_all(
        &self,
        token: &str,
        turn: &ChatTurn,
    ) -> Result<Option<String>, UpstreamError> {
        if turn.files.is_empty() {
            return Ok(None);
        }
        // Register the device once, before the uploads race to do it.
        self.device(token).await?;
        let uploads = turn.files.iter().map(|f| self.upload(token, f));
        let mut entries = futures_util::future::try_join_all(uploads).await?;
        entries.push(serde_json::json!({"name": "", "formType": 1, "content": turn.prompt}));
        Ok(Some(Value::Array(entries).to_string()))
    }

    pub(super) fn url(&self, full_uri: &str) -> String {
        format!("{}{full_uri}", self.config.base_url)
    }
}

/// A streaming call's answer, if it is an event stream; else the failure
/// it is: a failing status, or the envelope error the service answers
/// streaming calls with (`what` names the call).
pub(super) async fn event_stream(
    response: reqwest::Response,
    what: &str,
) -> Result<reqwest::Response, UpstreamError> {
    let status = response.status();
    let is_sse = crate::upstream::is_event_stream(&response);
    if status.is_success() && is_sse {
        return Ok(response);
    }
    Err(if status.is_success() {
        let text = read_capped(response, MAX_ENVELOPE_BYTES).await?;
        match open_envelope(&text) {
            Err(e) => e,
            Ok(_) => UpstreamError::Protocol(format!(
                "the {what} answered without an event stream: {}",
                clip(&text)
            )),
        }
    } else {
        UpstreamError::from_status(status.as_u16(), failure_text(response).await)
    })
}

#[async_trait]
impl Upstream for HailuoClient {
    fn name(&self) -> &'static str {
        "Hailuo"
    }

    fn id(&self) -> &'static str {
        "hailuo"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            images: true,
            documents: true,
            conversations_to_delete: true,
            ..Capabilities::default()
        }
    }

    fn login_hint(&self) -> &'static str {
        "Log in to hailuoai.com again and send the new `_token` from the browser's localStorage."
    }

    async fn chat(&self, token: &str, turn: &Turn<'_>) -> Result<EventStream, UpstreamError> {
        let turn = text_turn(turn)?;
        let device = self.device(token).await?;
        let chat_id = turn.conversation_id.as_deref().unwrap_or("0");
        let unix = unix_now_rounded();
        let path = "/v4/api/chat/msg";
        let full_uri = DeviceQuery::new(
            &self.config.device,
            &device.uuid,
            Some(&device.device_id),
            &unix,
        )
        .append_to(path);
        let files = self.upload_all(token, turn).await?;
        let yy = yy_chat_form(
            &full_uri,
            "1",
            &turn.prompt,
            chat_id,
            files.as_deref(),
            &unix,
        );
        // Fields with an empty value are left out of the form.
        let mut form = reqwest::multipart::Form::new().text("characterID", "1");
        if !turn.prompt.is_empty() {
            form = form.text("msgContent", turn.prompt.clone());
        }
        form = form
            .text("chatID", chat_id.to_string())
            .text("searchMode", "0");
        if let Some(files) = files {
            form = form.text("form", files);
        }
        let (http, in_flight) = self.http.take();
        let response = http
            .post(self.url(&full_uri))
            .headers(self.headers(
                token,
                &yy,
                &self.referer(turn.conversation_id.as_deref()),
                "text/event-stream",
            )?)
            .multipart(form)
            .send()
            .await?;
        let response = match event_stream(response, "chat").await {
            Ok(response) => response,
            Err(error) => {
                drop(in_flight);
                return Err(self.explain_failure(token, error).await);
            }
        };
        Ok(crate::upstream::sse::decode(
            in_flight.hold(response.bytes_stream()).eventsource(),
            StreamDecoder::default(),
        ))
    }

    async fn delete_conversation(&self, token: &str, chat_id: &str) -> Result<(), UpstreamError> {
        self.call(
            token,
            Method::DELETE,
            &format!("/v1/api/chat/history/{chat_id}"),
            None,
        )
        .await?;
        Ok(())
    }

    async fn is_live(&self, token: &str) -> Result<bool, UpstreamError> {
        let answer = self
            .call(token, Method::GET, "/v1/api/user/info", None)
            .await;
        user_info_verdict(answer, &self.devices, token).await
    }
}

#[async_trait]
impl Voice for HailuoClient {
    async fn synthesize(
        &self,
        token: &str,
        message_id: &str,
        voice: &str,
    ) -> Result<Vec<String>, UpstreamError> {
        self.set_voice_and_poll(token, message_id, voice).await
    }

    async fn download_part(&self, url: &str) -> Result<bytes::Bytes, UpstreamError> {
        self.fetch_part(url).await
    }

    async fn transcribe(&self, token: &str, mp3: bytes::Bytes) -> Result<String, UpstreamError> {
        let mut chat_id = None;
        let limit = self.config.speech.asr_timeout;
        let heard =
            match tokio::time::timeout(limit, self.voice_call(token, mp3, &mut chat_id)).await {
                Ok(heard) => heard,
                Err(_) => Err(UpstreamError::Timeout(format!(
                    "no transcript within {} s (HAILUO_ASR_TIMEOUT_MS)",
                    limit.as_secs_f32()
                ))),
            };
        // The voice call started a conversation: it goes, whatever was heard.
        if let Some(chat_id) = chat_id {
            match self.delete_conversation(token, &chat_id).await {
                Ok(()) => {
                    tracing::info!(token = %crate::redact::fingerprint(token), chat_id, "deleted the voice call's conversation")
                }
                Err(e) => {
                    tracing::warn!(token = %crate::redact::fingerprint(token), chat_id, error = %e, "could not delete the voice call's conversation")
                }
            }
        }
        match heard {
            Ok(text) => Ok(text),
            Err(e) => Err(self.explain_failure(token, e).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamEvent;
    use futures_util::StreamExt;

    fn sse(body: &'static str) -> EventStream {
        let bytes = futures_util::stream::iter(
            body.as_bytes()
                .chunks(7)
                .map(|c| Ok::<_, reqwest::Error>(bytes::Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        crate::upstream::sse::decode(bytes.eventsource(), StreamDecoder::default())
    }

    const EVENT: &str = "event: message_result\ndata: {\"type\":2,\"statusInfo\":{\"code\":0},\"data\":{\"messageResult\":{\"chatID\":\"1\",\"isEnd\":1,\"content\":\"半个\"}}}\n\n";

    #[tokio::test]
    async fn a_stream_closed_before_its_end_is_an_error_not_an_answer() {
        let events: Vec<_> = sse(EVENT).collect().await;
        assert!(
            matches!(events.last(), Some(Err(UpstreamError::Transport(m))) if m.contains("before its end")),
            "{events:?}"
        );
        assert!(events
            .iter()
            .any(|e| e == &Ok(UpstreamEvent::Delta("半个".into()))));
        assert!(!events.contains(&Ok(UpstreamEvent::End)));
    }

    #[tokio::test]
    async fn the_end_marker_alone_ends_an_answer() {
        let body = "event: message_result\ndata: {\"type\":2,\"statusInfo\":{\"code\":0},\"data\":{\"messageResult\":{\"chatID\":\"1\",\"isEnd\":1,\"content\":\"全\"}}}\n\nevent: close\ndata: {\"type\":8}\n\n";
        let events: Vec<_> = sse(body).collect().await;
        assert_eq!(events.last(), Some(&Ok(UpstreamEvent::End)));
        assert!(events.iter().all(Result::is_ok));
    }
}
