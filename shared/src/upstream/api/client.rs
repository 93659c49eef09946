//! The HTTP calls: chat completions (always streamed upstream; a door that
//! answers whole reads the stream to its end) and the key check.

use async_trait::async_trait;
use eventsource_stream::Eventsource;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};

use super::config::ApiConfig;
use super::errors::Classifier;
use super::stream::StreamDecoder;
use super::{models, request};
use crate::redact::fingerprint;
use crate::upstream::{Capabilities, EventStream, Turn, Upstream, UpstreamError, UpstreamEvent};

/// The most of an error body read: enough for any error object.
const MAX_ERROR_BODY: usize = 64 * 1024;

pub struct ApiClient {
    http: crate::upstream::browser::Connections,
    config: ApiConfig,
}

impl ApiClient {
    pub fn new(config: ApiConfig) -> Result<Self, crate::upstream::browser::BoxError> {
        config.check_hosts()?;
        let http = crate::upstream::browser::Connections::new(config.streams_per_connection)?;
        Ok(Self { http, config })
    }

    pub(crate) fn config(&self) -> &ApiConfig {
        &self.config
    }

    pub(crate) fn http(&self) -> &crate::upstream::browser::Connections {
        &self.http
    }

    fn classifier<'a>(&'a self, fingerprint: &'a str) -> Classifier<'a> {
        Classifier {
            config: &self.config,
            fingerprint,
        }
    }

    /// `Authorization: Bearer <key>`, and nothing else of the caller's:
    /// never `x-api-key`, never a `GroupId` (section 1.2).
    pub(crate) fn headers(
        &self,
        key: &str,
        accept: &'static str,
    ) -> Result<HeaderMap, UpstreamError> {
        let mut h = HeaderMap::new();
        let bearer = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            UpstreamError::InvalidToken {
                fingerprint: fingerprint(key),
                message: "it holds characters a header cannot carry".into(),
            }
        })?;
        h.insert(AUTHORIZATION, bearer);
        h.insert(ACCEPT, HeaderValue::from_static(accept));
        Ok(h)
    }

    /// The failure a non-2xx answer (or a 200 that is not the answer) is,
    /// logged with its `Trace-Id`, which MiniMax's support asks for.
    pub(crate) async fn failure(&self, key: &str, response: reqwest::Response) -> UpstreamError {
        let status = response.status().as_u16();
        let trace = response
            .headers()
            .get("trace-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = crate::upstream::read_capped(response, MAX_ERROR_BODY).await;
        let fp = fingerprint(key);
        let error = self.classifier(&fp).classify(status, &body);
        tracing::warn!(upstream = "minimax-api", key = %fp, status, trace_id = %trace, error = %error, "the platform refused a call");
        error
    }

    async fn open(&self, key: &str, body: Vec<u8>) -> Result<EventStream, UpstreamError> {
        let (http, in_flight) = self.http.take();
        let response = http
            .post(format!("{}/v1/chat/completions", self.config.base_url))
            .headers(self.headers(key, "text/event-stream")?)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(self.failure(key, response).await);
        }
        let is_sse = crate::upstream::is_event_stream(&response);
        if !is_sse {
            return Err(match self.failure(key, response).await {
                UpstreamError::Protocol(_) => UpstreamError::Protocol(
                    "the platform answered 200 without an event stream or a failure code".into(),
                ),
                other => other,
            });
        }
        Ok(crate::upstream::sse::decode(
            in_flight.hold(response.bytes_stream()).eventsource(),
            Frames {
                decoder: StreamDecoder::default(),
                config: self.config.clone(),
                fingerprint: fingerprint(key),
            },
        ))
    }
}

#[async_trait]
impl Upstream for ApiClient {
    fn name(&self) -> &'static str {
        "MiniMax API"
    }

    fn id(&self) -> &'static str {
        "minimax-api"
    }

    fn login_hint(&self) -> &'static str {
        "Check the platform key (platform.minimax.io, or platform.minimaxi.com with \
         MINIMAX_API_REGION=cn), its balance and its plan."
    }

    fn models(&self) -> Vec<String> {
        self.config.chat_models.clone()
    }

    /// A key is limited by its rate (RPM, TPM), not to one answer at a time.
    fn answers_concurrently(&self) -> bool {
        true
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NATIVE
    }

    /// One answer. Two refusals are answered here, once each, on the same
    /// key: `requires adaptive thinking` (sent again without `thinking`),
    /// and a model outside the key's plan (2061; sent again on the default
    /// model when another was asked).
    async fn chat(&self, key: &str, turn: &Turn<'_>) -> Result<EventStream, UpstreamError> {
        let (conversation, files) = crate::upstream::conversation_turn(turn, "MiniMax's platform")?;
        let images = files.iter().any(|f| f.image);
        let mut model = models::resolve(&self.config, &conversation.model, images);
        let mut thinking = true;
        loop {
            let body = request::body(
                conversation,
                files,
                model,
                self.config.reasoning_split,
                thinking,
            )?;
            let error = match self.open(key, body).await {
                Ok(stream) => return Ok(stream),
                Err(e) => e,
            };
            match &error {
                UpstreamError::InvalidRequest { message, .. }
                    if thinking && message.contains("requires adaptive thinking") =>
                {
                    thinking = false;
                }
                UpstreamError::InvalidRequest {
                    code: "minimax_2061",
                    ..
                } if model != self.config.chat_model => {
                    tracing::warn!(model, fallback = %self.config.chat_model, "the key's plan has no such model; using the default");
                    model = &self.config.chat_model;
                }
                _ => return Err(error),
            }
        }
    }

    async fn delete_conversation(&self, _key: &str, _chat_id: &str) -> Result<(), UpstreamError> {
        Ok(())
    }

    /// The official CLI's checks (section 1.2): balances for pay-as-you-go
    /// keys, plan remains for the others. Only the auth result is read.
    async fn is_live(&self, key: &str) -> Result<bool, UpstreamError> {
        let path = if key.starts_with("sk-api-") {
            "/account/query_balance"
        } else {
            "/v1/token_plan/remains"
        };
        let (http, _in_flight) = self.http.take();
        let response = http
            .get(format!("{}{path}", self.config.base_url))
            .headers(self.headers(key, "application/json")?)
            .send()
            .await?;
        let status = response.status().as_u16();
        let body = crate::upstream::read_capped(response, MAX_ERROR_BODY).await;
        let fp = fingerprint(key);
        let ok_body = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .is_some_and(|v| v["base_resp"]["status_code"].as_i64().unwrap_or(0) == 0);
        if (200..300).contains(&status) && ok_body {
            return Ok(true);
        }
        match self.classifier(&fp).classify(status, &body) {
            UpstreamError::TokenRejected { .. } => Ok(false),
            other => Err(other),
        }
    }

    /// The code table decides from the answer itself.
    async fn explain_failure(&self, _key: &str, error: UpstreamError) -> UpstreamError {
        error
    }
}

/// The frames of one answer, with what classifies a failure in one.
struct Frames {
    decoder: StreamDecoder,
    config: ApiConfig,
    fingerprint: String,
}

impl crate::upstream::sse::FrameDecoder for Frames {
    fn decode(&mut self, data: &str) -> Result<Vec<UpstreamEvent>, UpstreamError> {
        let classifier = Classifier {
            config: &self.config,
            fingerprint: &self.fingerprint,
        };
        self.decoder.decode(data, &classifier)
    }

    fn is_ended(&self) -> bool {
        self.decoder.is_ended()
    }

    fn truncated(&self) -> UpstreamError {
        UpstreamError::Transport("the answer ended before a finish_reason (truncated)".into())
    }

    fn closed(&mut self) -> Option<Vec<UpstreamEvent>> {
        self.decoder.closed()
    }
}
