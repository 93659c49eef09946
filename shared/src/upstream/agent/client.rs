//! The HTTP client for the MiniMax Agent web backend.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

use super::config::AgentConfig;
use super::credential::AgentCredential;
use super::device_query::agent_query;
use super::poll::PollDecoder;
use crate::upstream::browser::{self, put, registered_device, send_json, Connections};
use crate::upstream::device::{DeviceCache, DeviceIdentity};
use crate::upstream::envelope::id_of;
use crate::upstream::query_string::{append_query, unix_ms};
use crate::upstream::signing::{x_signature, yy_json};
use crate::upstream::{
    text_turn, user_info_verdict, EventStream, Turn, Upstream, UpstreamError, UpstreamEvent,
};

/// Polls that may fail in a row before the answer is given up.
const POLL_FAILURES: u32 = 3;

#[derive(Clone)]
pub struct AgentClient {
    http: Arc<Connections>,
    config: Arc<AgentConfig>,
    /// Per token: `uuid` holds the real user id, `device_id` the registered device.
    devices: DeviceCache,
}

impl AgentClient {
    pub fn new(config: AgentConfig) -> Result<Self, crate::upstream::browser::BoxError> {
        Ok(Self {
            http: Arc::new(Connections::new(config.streams_per_connection)?),
            config: Arc::new(config),
            devices: DeviceCache::default(),
        })
    }

    fn headers(
        &self,
        credential: &AgentCredential,
        yy: &str,
        signature: &str,
        timestamp: &str,
    ) -> Result<HeaderMap, UpstreamError> {
        let browser = &self.config.browser;
        let referer = format!("{}/", browser.origin);
        let mut h = browser::headers(
            &credential.jwt,
            &browser.at(&referer),
            "application/json, text/plain, */*",
        )?;
        put(&mut h, "yy", yy);
        put(&mut h, "x-signature", signature);
        put(&mut h, "x-timestamp", timestamp);
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(h)
    }

    async fn identity(
        &self,
        token: &str,
        credential: &AgentCredential,
    ) -> Result<DeviceIdentity, UpstreamError> {
        self.devices
            .get_or_register(token, || self.register(credential))
            .await
    }

    async fn register(
        &self,
        credential: &AgentCredential,
    ) -> Result<DeviceIdentity, UpstreamError> {
        let fresh = uuid::Uuid::new_v4().to_string();
        let body = serde_json::json!({ "uuid": fresh }).to_string();
        let path = "/v1/api/user/device/register";
        let answer = self
            .send(
                credential,
                Method::POST,
                path,
                Some(&body),
                &fresh,
                None,
                &credential.user_id,
            )
            .await;
        let (device_id, data) = registered_device(answer, &credential.jwt)?;
        let user_id = id_of(data.get("realUserID")).unwrap_or_else(|| credential.user_id.clone());
        Ok(DeviceIdentity {
            uuid: user_id,
            device_id,
        })
    }

    /// A signed call with the token's device.
    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> Result<Value, UpstreamError> {
        let credential = AgentCredential::parse(token)?;
        let device = self.identity(token, &credential).await?;
        self.send(
            &credential,
            method,
            path,
            body,
            &device.uuid,
            Some(&device.device_id),
            &device.uuid,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        credential: &AgentCredential,
        method: Method,
        path: &str,
        body: Option<&str>,
        uuid: &str,
        device_id: Option<&str>,
        user_id: &str,
    ) -> Result<Value, UpstreamError> {
        let now = unix_ms();
        let (unix, timestamp) = (now.to_string(), (now / 1000).to_string());
        let query = agent_query(
            &self.config.version_code,
            uuid,
            device_id,
            user_id,
            &unix,
            &credential.jwt,
        );
        let full_uri = append_query(path, &query);
        let body_json = body.unwrap_or("{}");
        let headers = self.headers(
            credential,
            &yy_json(&full_uri, body_json, &unix),
            &x_signature(&timestamp, &credential.jwt, body_json),
            &timestamp,
        )?;
        let url = format!("{}{full_uri}", self.config.base_url);
        let (http, _in_flight) = self.http.take();
        let request = http.request(method, url).headers(headers);
        send_json(request, self.config.json_timeout, body).await
    }

    /// The answer, polled: every poll that grows it becomes events.
    fn poll_answer(
        &self,
        token: String,
        chat_id: String,
        message_id: Option<String>,
    ) -> EventStream {
        struct Poll {
            client: AgentClient,
            token: String,
            body: String,
            decoder: PollDecoder,
            pending: VecDeque<Result<UpstreamEvent, UpstreamError>>,
            last_growth: Instant,
            failures: u32,
            done: bool,
        }
        let body = serde_json::json!({ "chat_id": chat_id }).to_string();
        let mut pending = VecDeque::new();
        pending.push_back(Ok(UpstreamEvent::Conversation {
            chat_id,
            message_id,
        }));
        let state = Poll {
            client: self.clone(),
            token,
            body,
            decoder: PollDecoder::default(),
            pending,
            last_growth: Instant::now(),
            failures: 0,
            done: false,
        };
        futures_util::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(event) = st.pending.pop_front() {
                    return Some((event, st));
                }
                if st.done {
                    return None;
                }
                let config = &st.client.config;
                if st.last_growth.elapsed() >= config.poll_timeout {
                    st.done = true;
                    let secs = config.poll_timeout.as_secs_f32();
                    st.pending.push_back(Err(UpstreamError::Timeout(format!(
                        "the answer did not grow for {secs} s of polling"
                    ))));
                    continue;
                }
                tokio::time::sleep(config.poll_interval).await;
                let detail = st
                    .client
                    .call(
                        &st.token,
                        Method::POST,
                        "/matrix/api/v1/chat/get_chat_detail",
                        Some(&st.body),
                    )
                    .await;
                let events = match detail.and_then(|d| st.decoder.decode(&d)) {
                    Ok(events) => events,
                    Err(e) if e.is_retryable() && st.failures + 1 < POLL_FAILURES => {
                        st.failures += 1;
                        tracing::warn!(error = %e, "poll failed; polling on");
                        continue;
                    }
                    Err(e) => {
                        st.done = true;
                        st.pending.push_back(Err(e));
                        continue;
                    }
                };
                st.failures = 0;
                if !events.is_empty() {
                    st.last_growth = Instant::now();
                }
                st.done = events.contains(&UpstreamEvent::End);
                st.pending.extend(events.into_iter().map(Ok));
            }
        })
        .boxed()
    }
}

/// `send_msg`'s body, keys in the web app's order (the signature covers the text).
fn send_body(prompt: &str, chat_id: Option<&str>) -> String {
    let text = serde_json::to_string(prompt).unwrap_or_else(|_| "\"\"".into());
    let tail = match chat_id {
        Some(id) => format!(
            ",\"chat_id\":{}",
            serde_json::to_string(id).unwrap_or_default()
        ),
        None => String::new(),
    };
    format!(
        "{{\"msg_type\":1,\"text\":{text},\"chat_type\":1,\"attachments\":[],\"selected_mcp_tools\":[],\"backend_config\":{{}},\"sub_agent_ids\":[]{tail}}}"
    )
}

/// `delete_chat`'s body: the id as a number.
fn delete_body(chat_id: &str) -> String {
    if !chat_id.is_empty() && chat_id.chars().all(|c| c.is_ascii_digit()) {
        format!("{{\"chat_id\":{chat_id}}}")
    } else {
        serde_json::json!({ "chat_id": chat_id }).to_string()
    }
}

#[async_trait]
impl Upstream for AgentClient {
    fn name(&self) -> &'static str {
        "MiniMax Agent"
    }

    fn id(&self) -> &'static str {
        "minimax-agent"
    }

    fn login_hint(&self) -> &'static str {
        "Log in to agent.minimaxi.com again and send the new JWT from the browser's localStorage \
         (as `REALUSERID+JWT` when the JWT carries no user id)."
    }

    fn watches_progress(&self) -> bool {
        true
    }

    async fn chat(&self, token: &str, turn: &Turn<'_>) -> Result<EventStream, UpstreamError> {
        let turn = text_turn(turn)?;
        if !turn.files.is_empty() {
            return Err(UpstreamError::Unsupported(
                "The MiniMax Agent upstream takes no files or images here; send text parts only."
                    .into(),
            ));
        }
        let body = send_body(&turn.prompt, turn.conversation_id.as_deref());
        let sent = match self
            .call(
                token,
                Method::POST,
                "/matrix/api/v1/chat/send_msg",
                Some(&body),
            )
            .await
        {
            Ok(sent) => sent,
            Err(e) => return Err(self.explain_failure(token, e).await),
        };
        let chat_id = id_of(sent.get("chat_id"))
            .or_else(|| turn.conversation_id.clone())
            .ok_or_else(|| UpstreamError::Protocol("send_msg answered without chat_id".into()))?;
        Ok(self.poll_answer(token.to_string(), chat_id, id_of(sent.get("msg_id"))))
    }

    async fn delete_conversation(&self, token: &str, chat_id: &str) -> Result<(), UpstreamError> {
        let body = delete_body(chat_id);
        let mut tries = 0;
        loop {
            tries += 1;
            match self
                .call(
                    token,
                    Method::POST,
                    "/matrix/api/v1/chat/delete_chat",
                    Some(&body),
                )
                .await
            {
                Err(UpstreamError::Api { message, .. })
                    if message.contains("chat is running") && tries < self.config.delete_tries =>
                {
                    tokio::time::sleep(self.config.delete_retry).await;
                }
                other => return other.map(|_| ()),
            }
        }
    }

    async fn is_live(&self, token: &str) -> Result<bool, UpstreamError> {
        let answer = self
            .call(token, Method::GET, "/v1/api/user/info", None)
            .await;
        user_info_verdict(answer, &self.devices, token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_match_the_signed_vectors() {
        let doc: Value =
            serde_json::from_str(include_str!("../../../testdata/agent-vectors.json")).unwrap();
        let v = &doc["vectors"];
        assert_eq!(
            send_body("system:be brief\nuser:你好 (hi) ~*'!\nassistant:", None),
            v[2]["body_json"].as_str().unwrap()
        );
        assert_eq!(
            send_body("user:继续", Some("358861733337088")),
            v[3]["body_json"].as_str().unwrap()
        );
        assert_eq!(
            delete_body("358861733337088"),
            v[5]["body_json"].as_str().unwrap()
        );
        assert_eq!(
            serde_json::json!({"chat_id": "358861733337088"}).to_string(),
            v[4]["body_json"].as_str().unwrap()
        );
        assert_eq!(delete_body("abc"), r#"{"chat_id":"abc"}"#);
    }
}
