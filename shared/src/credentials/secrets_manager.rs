//! The four Secrets Manager calls the gateway makes (`GetSecretValue`,
//! `DescribeSecret`, `PutSecretValue`, `CreateSecret`), as JSON over the
//! reqwest client the crate already links, signed by AWS's own SigV4 signer
//! (`aws-sigv4`, the one the SDK uses).
//!
//! Why not `aws-sdk-secretsmanager` with `aws-config`: they brought a second
//! HTTP stack into every bootstrap (hyper 1 with hyper-rustls on aws-lc-rs,
//! beside reqwest on ring; the caching crate added a third generation, hyper
//! 0.14 with rustls 0.21), and the STS, SSO and SSO-OIDC clients of a
//! credential chain a Lambda function never walks: Lambda puts the execution
//! role's credentials in the environment. Together that was most of each
//! bootstrap's 13–19 MB, a C build (aws-lc) and minutes of every CI run.
//!
//! What is kept of the SDK's behaviour: credentials, region and
//! `AWS_ENDPOINT_URL(_SECRETS_MANAGER)` from the environment, the standard
//! retry (three attempts on throttling, 5xx and transport errors, with
//! jittered back-off), bounded calls (1 s to connect, 3 s an attempt, 6 s in
//! all) and an app name in the user agent. What is not: shared config files
//! and profiles (export them into the environment to run locally:
//! `aws configure export-credentials --format env`), IMDS and SSO.

use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::settings::Lookup;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(6);
const ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// Secrets Manager answered with an error (`__type` without its namespace).
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

    fn is_retryable(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Service { code, status, .. } => {
                *status >= 500
                    || *status == 429
                    || matches!(
                        code.as_str(),
                        "ThrottlingException"
                            | "TooManyRequestsException"
                            | "RequestLimitExceeded"
                            | "InternalServiceError"
                    )
            }
            Self::Setup(_) => false,
        }
    }
}

/// A secret's current value.
#[derive(Debug, Deserialize)]
pub struct SecretValue {
    #[serde(rename = "SecretString", default)]
    pub secret_string: Option<String>,
    #[serde(rename = "VersionId", default)]
    pub version_id: Option<String>,
}

#[derive(Deserialize)]
struct Description {
    #[serde(rename = "VersionIdsToStages", default)]
    versions: std::collections::HashMap<String, Vec<String>>,
}

#[derive(Clone)]
struct Keys {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

/// Never shown, not even in a test's failure message.
impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// Where calls go and what signs them.
#[derive(Clone, Debug)]
struct Target {
    endpoint: String,
    region: String,
    keys: Keys,
}

#[derive(Clone)]
pub struct SecretsManager {
    http: reqwest::Client,
    /// `Err` says what the environment lacks; every call returns it.
    setup: Result<Target, String>,
}

impl SecretsManager {
    /// From the process environment.
    pub fn from_env(app_name: &str) -> Self {
        Self::from_lookup(&Lookup::env(), app_name)
    }

    /// Region from `AWS_REGION` (Lambda sets it) or `AWS_DEFAULT_REGION`; the
    /// endpoint from `AWS_ENDPOINT_URL_SECRETS_MANAGER`, `AWS_ENDPOINT_URL`
    /// or the region; keys from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
    /// and `AWS_SESSION_TOKEN`. What is missing is reported by the first call,
    /// so that a function in header mode never needs any of it.
    pub fn from_lookup(env: &Lookup<'_>, app_name: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(ATTEMPT_TIMEOUT)
            .user_agent(format!(
                "hailuo-gateway/{} app/{app_name}",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .unwrap_or_default();
        let region = env
            .value("AWS_REGION")
            .or_else(|| env.value("AWS_DEFAULT_REGION"));
        let keys = match (
            env.value("AWS_ACCESS_KEY_ID"),
            env.value("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(access_key_id), Some(secret_access_key)) => Some(Keys {
                access_key_id,
                secret_access_key,
                session_token: env.value("AWS_SESSION_TOKEN"),
            }),
            _ => None,
        };
        let setup = match (region, keys) {
            (None, _) => Err("no AWS region: set AWS_REGION".to_string()),
            (_, None) => Err(
                "no AWS credentials in the environment: set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY (Lambda sets them from the execution role)"
                    .to_string(),
            ),
            (Some(region), Some(keys)) => {
                let endpoint = env
                    .value("AWS_ENDPOINT_URL_SECRETS_MANAGER")
                    .or_else(|| env.value("AWS_ENDPOINT_URL"))
                    .unwrap_or_else(|| default_endpoint(&region));
                Ok(Target {
                    endpoint,
                    region,
                    keys,
                })
            }
        };
        Self { http, setup }
    }

    pub async fn get_secret_value(&self, id: &str) -> Result<SecretValue, AwsError> {
        self.call("GetSecretValue", json!({ "SecretId": id })).await
    }

    /// The version labelled `AWSCURRENT`, without reading the value.
    pub async fn current_version(&self, id: &str) -> Result<Option<String>, AwsError> {
        let d: Description = self
            .call("DescribeSecret", json!({ "SecretId": id }))
            .await?;
        Ok(d.versions
            .into_iter()
            .find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT"))
            .map(|(version, _)| version))
    }

    pub async fn put_secret_value(&self, id: &str, text: &str) -> Result<(), AwsError> {
        self.call::<Value>(
            "PutSecretValue",
            json!({ "SecretId": id, "SecretString": text,
                    "ClientRequestToken": uuid::Uuid::new_v4().to_string() }),
        )
        .await
        .map(drop)
    }

    pub async fn create_secret(
        &self,
        name: &str,
        description: &str,
        text: &str,
    ) -> Result<(), AwsError> {
        self.call::<Value>(
            "CreateSecret",
            json!({ "Name": name, "Description": description, "SecretString": text,
                    "ClientRequestToken": uuid::Uuid::new_v4().to_string() }),
        )
        .await
        .map(drop)
    }

    /// One operation: attempts with back-off, all within `OPERATION_TIMEOUT`.
    async fn call<T: DeserializeOwned>(
        &self,
        operation: &str,
        input: Value,
    ) -> Result<T, AwsError> {
        let target = self
            .setup
            .as_ref()
            .map_err(|e| AwsError::Setup(e.clone()))?;
        let body = input.to_string();
        let attempts = async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.attempt(target, operation, &body).await {
                    Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                        let ceiling = 100u64 << attempt;
                        let pause = rand::random_range(ceiling / 2..=ceiling);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                    done => return done,
                }
            }
        };
        let text = tokio::time::timeout(OPERATION_TIMEOUT, attempts)
            .await
            .map_err(|_| {
                AwsError::Transport(format!("{operation} took over {OPERATION_TIMEOUT:?}"))
            })??;
        serde_json::from_str(&text).map_err(|e| {
            AwsError::Transport(format!("{operation} answered with unexpected JSON: {e}"))
        })
    }

    async fn attempt(
        &self,
        target: &Target,
        operation: &str,
        body: &str,
    ) -> Result<String, AwsError> {
        let amz_target = format!("secretsmanager.{operation}");
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", amz_target.as_str()),
        ];
        let signed = sign(target, &headers, body.as_bytes())?;
        let mut request = self.http.post(&target.endpoint).body(body.to_string());
        for (name, value) in headers
            .iter()
            .copied()
            .chain(signed.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| AwsError::Transport(crate::text::clip(&e.to_string(), 300)))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| AwsError::Transport(crate::text::clip(&e.to_string(), 300)))?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        Err(service_error(status, &text))
    }
}

fn default_endpoint(region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://secretsmanager.{region}.{suffix}")
}

/// The SigV4 headers for one request (`authorization`, `x-amz-date`, and
/// `x-amz-security-token` with temporary credentials).
fn sign(
    target: &Target,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Vec<(String, String)>, AwsError> {
    let keys = &target.keys;
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let fail = |e: &dyn std::fmt::Display| {
        AwsError::Setup(format!("the request could not be signed: {e}"))
    };
    let identity = aws_credential_types::Credentials::new(
        &keys.access_key_id,
        &keys.secret_access_key,
        keys.session_token.clone(),
        None,
        "environment",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&target.region)
        .name("secretsmanager")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| fail(&e))?
        .into();
    let request = SignableRequest::new(
        "POST",
        &target.endpoint,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| fail(&e))?;
    let (instructions, _) = sign(request, &params).map_err(|e| fail(&e))?.into_parts();
    Ok(instructions
        .headers()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect())
}

/// An error answer: `{"__type": "…#Code", "message": "…"}` (either case of
/// `message`); anything else is named by its status only, never echoed.
fn service_error(status: u16, text: &str) -> AwsError {
    let v: Value = serde_json::from_str(text).unwrap_or_default();
    let code = v["__type"]
        .as_str()
        .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
        .unwrap_or_else(|| format!("HTTP{status}"));
    let message = v["message"]
        .as_str()
        .or(v["Message"].as_str())
        .map(|m| crate::text::clip(m, 300))
        .unwrap_or_default();
    AwsError::Service {
        code,
        message,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> SecretsManager {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = move |k: &str| map.get(k).cloned();
        SecretsManager::from_lookup(&Lookup::new(&get), "test")
    }

    #[test]
    fn endpoint_region_and_keys_come_from_the_environment() {
        let base = [
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "SECRET"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            env(&all).setup.map(|t| (t.endpoint, t.region))
        };
        assert_eq!(
            with(&[("AWS_REGION", "eu-west-1")]).unwrap(),
            (
                "https://secretsmanager.eu-west-1.amazonaws.com".into(),
                "eu-west-1".into()
            )
        );
        assert_eq!(
            with(&[("AWS_DEFAULT_REGION", "cn-north-1")]).unwrap().0,
            "https://secretsmanager.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            with(&[
                ("AWS_REGION", "us-east-1"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:5055")
            ])
            .unwrap()
            .0,
            "http://127.0.0.1:5055"
        );
        assert_eq!(
            with(&[
                ("AWS_REGION", "us-east-1"),
                ("AWS_ENDPOINT_URL", "http://a"),
                ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://b")
            ])
            .unwrap()
            .0,
            "http://b"
        );
        assert!(with(&[]).unwrap_err().contains("AWS_REGION"));
        let no_keys = env(&[("AWS_REGION", "us-east-1")]);
        assert!(no_keys.setup.unwrap_err().contains("AWS_ACCESS_KEY_ID"));
    }

    #[tokio::test]
    async fn a_missing_setting_is_the_error_of_every_call_and_nothing_is_sent() {
        let sm = env(&[("AWS_REGION", "us-east-1")]);
        let e = sm.get_secret_value("tokens").await.unwrap_err();
        assert!(matches!(e, AwsError::Setup(_)), "{e}");
    }

    #[test]
    fn requests_are_signed_with_the_session_token() {
        let target = Target {
            endpoint: "https://secretsmanager.us-east-1.amazonaws.com".into(),
            region: "us-east-1".into(),
            keys: Keys {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                session_token: Some("session".into()),
            },
        };
        let headers = [("x-amz-target", "secretsmanager.GetSecretValue")];
        let signed: std::collections::HashMap<_, _> = sign(&target, &headers, b"{}")
            .unwrap()
            .into_iter()
            .collect();
        let auth = &signed["authorization"];
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
                && auth.contains("/us-east-1/secretsmanager/aws4_request")
                && auth.contains("SignedHeaders=host;x-amz-date;x-amz-security-token;x-amz-target"),
            "{auth}"
        );
        assert_eq!(signed["x-amz-security-token"], "session");
        assert!(signed.contains_key("x-amz-date"));
        assert!(!auth.contains("wJalr"), "the secret key is never sent");
    }

    #[test]
    fn service_errors_are_read_without_their_namespace() {
        let e = service_error(
            400,
            r#"{"__type":"com.amazonaws.secretsmanager#ResourceNotFoundException","Message":"gone"}"#,
        );
        assert!(e.is_not_found(), "{e}");
        assert!(e.to_string().contains("gone"));
        let throttled = service_error(400, r#"{"__type":"ThrottlingException","message":"slow"}"#);
        assert!(throttled.is_retryable() && !throttled.is_not_found());
        let html = service_error(502, "<html>bad gateway</html>");
        assert!(html.is_retryable());
        assert!(!html.to_string().contains("html"), "{html}");
        assert!(!service_error(400, r#"{"__type":"AccessDeniedException"}"#).is_retryable());
    }
}
