//! The HTTP client of the messages route.

use std::time::Duration;

use async_trait::async_trait;
use eventsource_stream::Eventsource;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};

use super::config::{ClientHeaders, CodeConfig};
use super::errors::Classifier;
use super::models::{Catalogue, Model};
use super::request;
use super::stream::StreamDecoder;
use crate::redact::fingerprint;
use crate::upstream::{Capabilities, EventStream, Turn, Upstream, UpstreamError, UpstreamEvent};

/// The most of an error body read: enough for any error object.
const MAX_ERROR_BODY: usize = 64 * 1024;

pub struct CodeClient {
    /// The web chats' connections (the same TLS roots, `SSL_CERT_FILE`
    /// included, and another connection past an HTTP/2 stream limit).
    pub(super) http: crate::upstream::browser::Connections,
    pub(super) config: CodeConfig,
    catalogue: Catalogue,
}

impl CodeClient {
    pub fn new(config: CodeConfig) -> Result<Self, crate::upstream::browser::BoxError> {
        config.check_hosts()?;
        let http = crate::upstream::browser::Connections::new(config.streams_per_connection)?;
        let catalogue = Catalogue::new(&config.models, &config.default_model);
        Ok(Self {
            http,
            config,
            catalogue,
        })
    }

    fn url(&self, route: &str) -> String {
        format!("{}{}/{route}", self.config.base_url, self.config.llm_path)
    }

    fn headers(&self, token: &str, stream: bool) -> Result<HeaderMap, UpstreamError> {
        let mut h = HeaderMap::new();
        let bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            UpstreamError::InvalidToken {
                fingerprint: fingerprint(token),
                message: "it holds characters a header cannot carry".into(),
            }
        })?;
        h.insert(AUTHORIZATION, bearer);
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(
            ACCEPT,
            HeaderValue::from_static(if stream {
                "text/event-stream"
            } else {
                "application/json"
            }),
        );
        if let Ok(v) = HeaderValue::from_str(&self.config.anthropic_version) {
            h.insert("anthropic-version", v);
        }
        if self.config.client_headers == ClientHeaders::Official {
            h.insert("user-agent", HeaderValue::from_static("MiniMaxAgent"));
            h.insert("x-mavis-agent-id", HeaderValue::from_static("main"));
            let session = format!("mvs_{}", uuid::Uuid::new_v4().simple());
            if let Ok(v) = HeaderValue::from_str(&session) {
                h.insert("x-mavis-session-id", v);
            }
            h.insert("x-mavis-timezone-offset", HeaderValue::from_static("0"));
        }
        Ok(h)
    }

    /// An access token, never a refresh token: rotating a caller's refresh
    /// token would spend it without handing back its successor.
    pub(super) fn check_token(token: &str) -> Result<(), UpstreamError> {
        if token.starts_with("mmort_") {
            return Err(UpstreamError::InvalidToken {
                fingerprint: fingerprint(token),
                message: "it is a refresh token (mmort_…), which a caller must not send: send an \
                          access token (mmoat_…), or run `gateway login` and serve from a tokens \
                          file or secret, where the gateway refreshes the account itself"
                    .into(),
            });
        }
        Ok(())
    }

    /// The failure a non-2xx answer is.
    async fn failure(&self, token: &str, response: reqwest::Response) -> UpstreamError {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = crate::upstream::read_capped(response, MAX_ERROR_BODY).await;
        let fp = fingerprint(token);
        Classifier {
            config: &self.config,
            fingerprint: &fp,
        }
        .classify(status, &body, retry_after)
    }

    /// The max_tokens to send: the caller's, within the model's output limit.
    fn max_tokens(&self, asked: Option<u32>, model: &Model) -> Result<u32, UpstreamError> {
        match asked {
            Some(n) if n > model.output => Err(UpstreamError::InvalidRequest {
                message: format!(
                    "`max_tokens` is {n}, above {}'s output limit of {} tokens: send at most {}",
                    model.id, model.output, model.output
                ),
                code: "invalid_value",
            }),
            Some(n) => Ok(n),
            None => Ok(self.config.default_max_tokens.min(model.output)),
        }
    }
}

#[async_trait]
impl Upstream for CodeClient {
    fn name(&self) -> &'static str {
        "MiniMax Code"
    }

    fn id(&self) -> &'static str {
        "minimax-code"
    }

    fn login_hint(&self) -> &'static str {
        "Its access tokens last an hour: send a fresh one (mmoat_…), or run `gateway login` and \
         let the gateway keep the account's tokens renewed."
    }

    /// The catalogue's ids, in its order.
    fn models(&self) -> Vec<String> {
        self.catalogue.ids().map(str::to_string).collect()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NATIVE
    }

    async fn chat(&self, token: &str, turn: &Turn<'_>) -> Result<EventStream, UpstreamError> {
        let (conversation, files) = crate::upstream::conversation_turn(turn, "MiniMax Code")?;
        Self::check_token(token)?;
        let model = self.catalogue.resolve(&conversation.model);
        let max_tokens = self.max_tokens(conversation.max_tokens, model)?;
        let body = request::body(conversation, files, model, max_tokens)?;
        let (http, in_flight) = self.http.take();
        let response = http
            .post(self.url("messages"))
            .headers(self.headers(token, true)?)
            .body(body)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(self.failure(token, response).await);
        }
        let is_sse = crate::upstream::is_event_stream(&response);
        if !is_sse {
            // A failure under HTTP 200 (`base_resp`), or an answer not streamed.
            return Err(self.failure_under_200(token, response).await);
        }
        Ok(crate::upstream::sse::decode(
            in_flight.hold(response.bytes_stream()).eventsource(),
            Frames {
                decoder: StreamDecoder::default(),
                config: self.config.clone(),
                fingerprint: fingerprint(token),
            },
        ))
    }

    async fn delete_conversation(&self, _token: &str, _chat_id: &str) -> Result<(), UpstreamError> {
        // The route is stateless: nothing is left upstream.
        Ok(())
    }

    /// A token counts as live when `count_tokens` takes it: no answer is
    /// generated, nothing is spent.
    async fn is_live(&self, token: &str) -> Result<bool, UpstreamError> {
        Self::check_token(token)?;
        let model = &self.catalogue.resolve("").id;
        let body = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": "ping"}],
            "stream": false,
        });
        let (http, _in_flight) = self.http.take();
        let response = http
            .post(self.url("messages/count_tokens"))
            .headers(self.headers(token, false)?)
            .json(&body)
            .send()
            .await?;
        if response.status().is_success() {
            return Ok(true);
        }
        match self.failure(token, response).await {
            UpstreamError::TokenRejected { .. } => Ok(false),
            other => Err(other),
        }
    }

    /// The section 6 classes are decided from the answer itself: no check
    /// call is needed to tell a dead token from anything else.
    async fn explain_failure(&self, _token: &str, error: UpstreamError) -> UpstreamError {
        error
    }
}

impl CodeClient {
    async fn failure_under_200(&self, token: &str, response: reqwest::Response) -> UpstreamError {
        let body = crate::upstream::read_capped(response, MAX_ERROR_BODY).await;
        let fp = fingerprint(token);
        match (Classifier {
            config: &self.config,
            fingerprint: &fp,
        })
        .classify(200, &body, None)
        {
            UpstreamError::Api { code: -1, .. } => UpstreamError::Protocol(
                "the messages route answered 200 without an event stream or a failure code".into(),
            ),
            other => other,
        }
    }
}

/// The frames of one answer, with what classifies a mid-stream `error`.
struct Frames {
    decoder: StreamDecoder,
    config: CodeConfig,
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
        UpstreamError::Transport("the answer ended before message_stop (truncated)".into())
    }
}
