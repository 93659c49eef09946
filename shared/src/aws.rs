//! The AWS SDK's configuration, one per process, for every AWS call the
//! gateway makes: Secrets Manager (the tokens and their status) and DynamoDB
//! (the accounts table of a shared pool).
//!
//! Where the credentials come from depends on the binary (the
//! `credential-chain` feature). The self-hosted server, which runs anywhere,
//! takes aws-config's default chain: the environment, the shared config and
//! credentials files (profiles, SSO, `credential_process`), web identity,
//! the ECS container credentials endpoint and EC2's instance metadata
//! (IMDSv2), with the region and endpoints found the SDK's way too
//! (`AWS_REGION`, the profile's region, `AWS_ENDPOINT_URL` and the
//! per-service `AWS_ENDPOINT_URL_SECRETS_MANAGER` /
//! `AWS_ENDPOINT_URL_DYNAMODB`). A Lambda function reads the environment
//! alone, where Lambda puts the execution role's credentials and the
//! region: the rest of the chain is 1.2 MB of every bootstrap that Lambda
//! would never walk (`from_env`, below).
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
use aws_credential_types::provider::SharedCredentialsProvider;
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

    /// The SDK configuration. For `Env` it is made once per process (the
    /// credentials are resolved once, and their cache is shared).
    pub async fn load(&self, app_name: &str) -> SdkConfig {
        static FROM_ENV: tokio::sync::OnceCell<SdkConfig> = tokio::sync::OnceCell::const_new();
        match self {
            Self::Env => FROM_ENV.get_or_init(|| from_env(app_name)).await.clone(),
            Self::Explicit {
                region,
                endpoint,
                access_key_id,
                secret_access_key,
            } => assemble(
                app_name,
                Some(Region::new(region.clone())),
                endpoint.clone(),
                SharedCredentialsProvider::new(aws_credential_types::Credentials::new(
                    access_key_id,
                    secret_access_key,
                    None,
                    None,
                    "explicit",
                )),
            ),
        }
    }
}

/// The self-hosted server: aws-config's loader and its whole default chain
/// (environment, profiles with SSO and `credential_process`, web identity,
/// the ECS endpoint, IMDSv2), with the region and endpoints found the same
/// way.
#[cfg(feature = "credential-chain")]
async fn from_env(app_name: &str) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(Reqwest::client())
        .retry_config(retries())
        .timeout_config(timeouts());
    if let Some(app) = app(app_name) {
        loader = loader.app_name(app);
    }
    loader.load().await
}

/// A Lambda function: the environment alone. Lambda puts the execution
/// role's credentials there (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`) with `AWS_REGION`, and has no profile files, web
/// identity, container endpoint or instance metadata to walk; the loader and
/// those providers are 1.2 MB of code (the STS client among them) that a
/// bootstrap would carry for nothing. `AWS_ENDPOINT_URL` is read, as the
/// loader reads it (the per-service variants are the server's only).
#[cfg(not(feature = "credential-chain"))]
async fn from_env(app_name: &str) -> SdkConfig {
    let env = |key: &str| std::env::var(key).ok().filter(|v| !v.trim().is_empty());
    assemble(
        app_name,
        env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .map(Region::new),
        env("AWS_ENDPOINT_URL"),
        SharedCredentialsProvider::new(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        ),
    )
}

/// A configuration from parts, without the loader: what it would have set
/// (the behaviour version, a lazy identity cache, tokio's sleep for the
/// retries' back-off) and ours.
fn assemble(
    app_name: &str,
    region: Option<Region>,
    endpoint: Option<String>,
    credentials: SharedCredentialsProvider,
) -> SdkConfig {
    let mut config = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(Reqwest::client())
        .retry_config(retries())
        .timeout_config(timeouts())
        .credentials_provider(credentials)
        .identity_cache(aws_config::identity::IdentityCache::lazy().build());
    config.set_region(region);
    config.set_endpoint_url(endpoint);
    config.set_app_name(app(app_name));
    config.set_sleep_impl(aws_smithy_async::rt::sleep::default_async_sleep());
    config.build()
}

fn retries() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(ATTEMPTS)
}

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// `hailuo-gateway-<function>` in the SDK's user agent, in the characters
/// a user agent's token may hold.
fn app(app_name: &str) -> Option<AppName> {
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
    AppName::new(app).ok()
}

/// What an SDK failure that is not the service's own answer says.
pub(crate) enum Failure {
    /// The call could not be made: no credentials or no region (the text says
    /// what is missing and what to set, in one line), or a request the SDK
    /// could not build.
    Setup(String),
    /// Made, and it never got an answer (connect, timeout, a broken reply).
    Transport(String),
}

/// An SDK error that is not a service error, by what the caller can do.
/// A missing credential or region is named by itself and its innermost
/// cause (the chain's own sentence); the SDK's whole cause chain is for
/// transport failures only, and clipped.
pub(crate) fn failure<E, R>(e: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> Failure
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let mut credentials = false;
    let mut innermost = String::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(now) = cause {
        credentials |= now
            .downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
            .is_some();
        innermost = now.to_string();
        cause = now.source();
    }
    let whole = || crate::text::clip(&DisplayErrorContext(e).to_string(), 300);
    if credentials {
        Failure::Setup(format!(
            "no AWS credentials ({}): Lambda sets them from the execution role; \
             elsewhere set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, \
             or run with a container or instance role",
            crate::text::clip(&innermost, 120)
        ))
    } else if innermost.ends_with("Missing Region") {
        // The endpoint resolver's words when no region is configured.
        Failure::Setup("no AWS region: set AWS_REGION".into())
    } else if matches!(
        e,
        aws_smithy_runtime_api::client::result::SdkError::ConstructionFailure(_)
    ) {
        // The request could not be built: nothing was sent.
        Failure::Setup(whole())
    } else {
        Failure::Transport(whole())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::provider::{error::CredentialsError, future, ProvideCredentials};

    /// A source with nothing to give, as the environment is without keys.
    #[derive(Debug)]
    struct Nothing;

    impl ProvideCredentials for Nothing {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
                "no providers in chain provided credentials",
            )))
        }
    }

    /// A `GetSecretValue` that cannot succeed, and its error.
    async fn failed_call(
        config: &SdkConfig,
    ) -> aws_smithy_runtime_api::client::result::SdkError<
        aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError,
        HttpResponse,
    > {
        aws_sdk_secretsmanager::Client::new(config)
            .get_secret_value()
            .secret_id("s")
            .send()
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn missing_credentials_are_one_short_sentence_that_says_what_to_set() {
        let config = assemble(
            "unit-test",
            Some(Region::new("us-east-1")),
            // Never reached: the credentials fail first.
            Some("http://127.0.0.1:9".into()),
            SharedCredentialsProvider::new(Nothing),
        );
        let e = failed_call(&config).await;
        let Failure::Setup(text) = failure(&e) else {
            panic!("not a setup failure: {}", DisplayErrorContext(&e));
        };
        assert!(
            text.starts_with("no AWS credentials (no providers in chain provided credentials)"),
            "{text}"
        );
        assert!(text.contains("AWS_ACCESS_KEY_ID"), "{text}");
        // The SDK's own chain ("dispatch failure: other: ...") is not repeated.
        assert!(!text.contains("dispatch failure"), "{text}");
        assert!(text.len() < 300, "{text}");
    }

    #[tokio::test]
    async fn no_region_is_named_as_such_and_a_closed_port_is_a_transport_failure() {
        let keys = || {
            SharedCredentialsProvider::new(aws_credential_types::Credentials::new(
                "AKIDTEST", "secret", None, None, "test",
            ))
        };
        let e = failed_call(&assemble("unit-test", None, None, keys())).await;
        assert!(
            matches!(failure(&e), Failure::Setup(t) if t == "no AWS region: set AWS_REGION"),
            "{}",
            DisplayErrorContext(&e)
        );

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let config = assemble(
            "unit-test",
            Some(Region::new("us-east-1")),
            Some(endpoint),
            keys(),
        );
        let e = failed_call(&config).await;
        assert!(
            matches!(failure(&e), Failure::Transport(t) if t.len() <= 303),
            "{}",
            DisplayErrorContext(&e)
        );
    }
}
