//! The four Secrets Manager calls the gateway makes (`GetSecretValue`,
//! `DescribeSecret`, `PutSecretValue`, `CreateSecret`), through
//! `aws-sdk-secretsmanager` with the process's SDK configuration (`aws.rs`:
//! its credentials, the SDK's standard retry, bounded calls).
//!
//! The client is built at the first call, so a function in header mode
//! never reads any AWS setting, and what is missing (a region, credentials)
//! is the error of the call that needed it.

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

use crate::aws::{Failure, Setup};
use crate::settings::Lookup;

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// Secrets Manager answered with an error (its code, without a namespace).
    #[error("{code}: {message} (HTTP {status})")]
    Service {
        code: String,
        message: String,
        status: u16,
    },
    #[error("Secrets Manager could not be reached: {0}")]
    Transport(String),
    /// What is missing from the environment to make a call at all.
    #[error("{0}")]
    Setup(String),
}

impl AwsError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Service { code, .. } if code == "ResourceNotFoundException")
    }
}

/// An SDK failure as one of ours: the service's answer by its code and
/// message (never its raw body), a call that could not be made (no region,
/// no credentials) as what to set, anything else as unreachable.
pub(crate) fn aws_error<E>(e: SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &e {
        SdkError::ServiceError(service) => AwsError::Service {
            code: service.err().code().unwrap_or("Unknown").to_string(),
            message: crate::text::clip(service.err().message().unwrap_or_default(), 300),
            status: service.raw().status().as_u16(),
        },
        _ => match crate::aws::failure(&e) {
            Failure::Setup(text) => AwsError::Setup(text),
            Failure::Transport(text) => AwsError::Transport(text),
        },
    }
}

/// A secret's current value.
#[derive(Debug)]
pub struct SecretValue {
    pub secret_string: Option<String>,
    pub version_id: Option<String>,
}

#[derive(Clone)]
pub struct SecretsManager {
    setup: Setup,
    app_name: String,
    client: std::sync::Arc<tokio::sync::OnceCell<aws_sdk_secretsmanager::Client>>,
}

impl SecretsManager {
    /// From the process environment and aws-config's default chain.
    pub fn from_env(app_name: &str) -> Self {
        Self::with(Setup::Env, app_name)
    }

    /// Explicit settings when the lookup names a region, keys and an
    /// endpoint; the process's default chain otherwise.
    pub fn from_lookup(env: &Lookup<'_>, app_name: &str) -> Self {
        Self::with(Setup::from_lookup(env), app_name)
    }

    fn with(setup: Setup, app_name: &str) -> Self {
        Self {
            setup,
            app_name: app_name.to_string(),
            client: Default::default(),
        }
    }

    async fn client(&self) -> &aws_sdk_secretsmanager::Client {
        self.client
            .get_or_init(|| async {
                aws_sdk_secretsmanager::Client::new(&self.setup.load(&self.app_name).await)
            })
            .await
    }

    pub async fn get_secret_value(&self, id: &str) -> Result<SecretValue, AwsError> {
        let out = self
            .client()
            .await
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(aws_error)?;
        Ok(SecretValue {
            secret_string: out.secret_string,
            version_id: out.version_id,
        })
    }

    /// The version labelled `AWSCURRENT`, without reading the value.
    pub async fn current_version(&self, id: &str) -> Result<Option<String>, AwsError> {
        let out = self
            .client()
            .await
            .describe_secret()
            .secret_id(id)
            .send()
            .await
            .map_err(aws_error)?;
        Ok(out.version_ids_to_stages.and_then(|versions| {
            versions
                .into_iter()
                .find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT"))
                .map(|(version, _)| version)
        }))
    }

    pub async fn put_secret_value(&self, id: &str, text: &str) -> Result<(), AwsError> {
        self.client()
            .await
            .put_secret_value()
            .secret_id(id)
            .secret_string(text)
            .client_request_token(uuid::Uuid::new_v4().to_string())
            .send()
            .await
            .map_err(aws_error)
            .map(drop)
    }

    pub async fn create_secret(
        &self,
        name: &str,
        description: &str,
        text: &str,
    ) -> Result<(), AwsError> {
        self.client()
            .await
            .create_secret()
            .name(name)
            .description(description)
            .secret_string(text)
            .client_request_token(uuid::Uuid::new_v4().to_string())
            .send()
            .await
            .map_err(aws_error)
            .map(drop)
    }
}
