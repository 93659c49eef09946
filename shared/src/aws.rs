//! The AWS SDK's configuration, one per process, for every AWS call the
//! gateway makes: Secrets Manager (the tokens and their status) and DynamoDB
//! (the accounts table of a shared pool).
//!
//! Credentials come from aws-config's default chain: the environment (what
//! Lambda sets from the execution role), the shared config and credentials
//! files (profiles), web identity, the ECS container credentials endpoint
//! and EC2's instance metadata (IMDSv2). Region and endpoints come the
//! SDK's way too: `AWS_REGION`, the profile's region, `AWS_ENDPOINT_URL` and
//! the per-service `AWS_ENDPOINT_URL_SECRETS_MANAGER` /
//! `AWS_ENDPOINT_URL_DYNAMODB`.
//!
//! Why the SDK's requests go through reqwest (`Reqwest`, below): the SDK's
//! default HTTP client is a second hyper stack with rustls on aws-lc-rs (a C
//! build, and most of a bootstrap's size when this crate tried it). The SDK's
//! `HttpClient` trait is its supported way to bring one's own; with it the
//! tree keeps one hyper and one rustls with one crypto provider (ring), and
//! the credential providers (IMDS, the ECS endpoint, STS) use it too.
//!
//! Retries and timeouts are the SDK's (standard retry mode), set to what the
//! hand-written client they replace did: three attempts on throttling, 5xx and
//! transport errors with jittered back-off; 1 s to connect, 3 s an attempt,
//! 6 s in all.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{AppName, BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::settings::Lookup;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(6);
const ATTEMPTS: u32 = 3;
/// The largest answer read from an AWS service: a secret is at most 64 KiB,
/// a page of the accounts table at most 1 MB.
const MAX_RESPONSE_BYTES: usize = 2 * 1024 * 1024;

/// Where the SDK's settings come from.
#[derive(Clone)]
pub enum Setup {
    /// The process environment and aws-config's default chain.
    Env,
    /// Given values (tests, and tools that name their endpoint).
    Explicit {
        region: String,
        endpoint: Option<String>,
        access_key_id: String,
        secret_access_key: String,
    },
}

/// Never shows the keys.
impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env => f.write_str("Env"),
            Self::Explicit {
                region, endpoint, ..
            } => write!(f, "Explicit({region}, {endpoint:?}, ..)"),
        }
    }
}

impl Setup {
    /// Explicit settings when the lookup names keys, a region and an
    /// endpoint (the unit tests' fakes); the default chain otherwise.
    pub fn from_lookup(env: &Lookup<'_>) -> Self {
        let region = env
            .value("AWS_REGION")
            .or_else(|| env.value("AWS_DEFAULT_REGION"));
        match (
            region,
            env.value("AWS_ACCESS_KEY_ID"),
            env.value("AWS_SECRET_ACCESS_KEY"),
            env.value("AWS_ENDPOINT_URL"),
        ) {
            (Some(region), Some(access_key_id), Some(secret_access_key), Some(endpoint)) => {
                Self::Explicit {
                    region,
                    endpoint: Some(endpoint),
                    access_key_id,
                    secret_access_key,
                }
            }
            _ => Self::Env,
        }
    }

    /// The SDK configuration. For `Env` it is loaded once per process (the
    /// credential chain is walked once, and its cache is shared).
    pub async fn load(&self, app_name: &str) -> SdkConfig {
        static FROM_ENV: tokio::sync::OnceCell<SdkConfig> = tokio::sync::OnceCell::const_new();
        match self {
            Self::Env => FROM_ENV
                .get_or_init(|| async { base(app_name).load().await })
                .await
                .clone(),
            Self::Explicit {
                region,
                endpoint,
                access_key_id,
                secret_access_key,
            } => {
                let mut loader = base(app_name)
                    .region(Region::new(region.clone()))
                    .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                        access_key_id,
                        secret_access_key,
                        None,
                        None,
                        "explicit",
                    ));
                if let Some(endpoint) = endpoint {
                    loader = loader.endpoint_url(endpoint);
                }
                loader.load().await
            }
        }
    }
}

fn base(app_name: &str) -> aws_config::ConfigLoader {
    let app: String = format!("hailuo-gateway-{app_name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(Reqwest::client())
        .retry_config(RetryConfig::standard().with_max_attempts(ATTEMPTS))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        );
    if let Ok(app) = AppName::new(app) {
        loader = loader.app_name(app);
    }
    loader
}

/// An SDK error in a sentence: the service's code and message when it
/// answered, else what went wrong on the way (the whole cause chain).
pub(crate) fn describe<E, R>(e: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> String
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    crate::text::clip(&DisplayErrorContext(e).to_string(), 400)
}

/// The SDK's requests over reqwest (see the module comment).
#[derive(Clone, Debug)]
pub(crate) struct Reqwest(reqwest::Client);

impl Reqwest {
    fn client() -> SharedHttpClient {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        SharedHttpClient::new(Self(http))
    }
}

impl HttpClient for Reqwest {
    /// One connector for every setting: the connect timeout is the client's
    /// own, and the read side is bounded by the SDK's attempt timeout.
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for Reqwest {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let http = self.0.clone();
        HttpConnectorFuture::new(async move {
            let method = reqwest::Method::from_bytes(request.method().as_bytes())
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            let body = match request.body().bytes() {
                Some(bytes) => bytes::Bytes::copy_from_slice(bytes),
                None => {
                    return Err(ConnectorError::other(
                        "the SDK sent a streaming body, which this client does not take".into(),
                        None,
                    ))
                }
            };
            let mut out = http.request(method, request.uri()).body(body);
            for (name, value) in request.headers() {
                out = out.header(name, value);
            }
            let response = out.send().await.map_err(|e| {
                if e.is_timeout() {
                    ConnectorError::timeout(e.into())
                } else {
                    ConnectorError::io(e.into())
                }
            })?;
            let status = response.status();
            let headers = response.headers().clone();
            let mut body = Vec::new();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
                let chunk = chunk.map_err(|e| ConnectorError::io(e.into()))?;
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(ConnectorError::other(
                        format!("the answer is over {MAX_RESPONSE_BYTES} bytes").into(),
                        None,
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            let mut answer = http::Response::new(SdkBody::from(body));
            *answer.status_mut() = status;
            *answer.headers_mut() = headers;
            HttpResponse::try_from(answer).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}
